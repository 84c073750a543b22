"""Serialize numpy's ``.npy`` header parsing across threads (CPython 3.11's AST recursion bug).

Python 3.11's AST constructor keeps one recursion counter per interpreter, so two threads parsing at once
can fail with ``SystemError: AST constructor recursion depth mismatch`` (python/cpython#106905, fixed in
later releases). ``np.load`` parses every ``.npy`` header with ``ast.literal_eval``, and Flower's
``Array.numpy()`` decodes with ``np.load``: a party's concurrent tasks, or several parties in one test
process, hit it. :func:`install` (idempotent, called where Flower arrays are decoded) puts numpy's
header reader behind one lock; nothing else changes.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()


def install() -> None:
    """Make numpy's ``.npy`` header parsing thread-safe in this process."""
    from numpy.lib import _format_impl

    read: Callable[..., Any] | None = getattr(_format_impl, "_read_array_header", None)
    if read is None or getattr(read, "_fedcredit_locked", False):
        return

    @functools.wraps(read)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            return read(*args, **kwargs)

    locked._fedcredit_locked = True  # type: ignore[attr-defined]
    setattr(_format_impl, "_read_array_header", locked)  # noqa: B010
