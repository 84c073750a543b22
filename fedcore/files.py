"""Files that are whole or absent, and stores checked for writability before work starts."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from fedcore.errors import InvalidInput


def check_writable(path: Path, what: str) -> None:
    """Raise InvalidInput naming ``path`` unless SQLite can write it: the file, its folder (journal),
    and any ``-wal``/``-shm`` files beside it. A file with no write bit counts as read-only even for
    root, who could write it anyway: it says the operator meant it to be read-only."""
    for p in (path, path.parent, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.exists() and (not os.access(p, os.W_OK) or not p.stat().st_mode & 0o222):
            raise InvalidInput(f"{what} {path} is not writable ({p} is read-only): fix its permissions")


@contextlib.contextmanager
def replacing(path: Path, encoding: str = "utf-8") -> Iterator[TextIO]:
    """A text file written beside ``path`` and renamed onto it only when the block completes: an error
    or Ctrl-C part-way leaves no half-written file under the final name (and any old one intact)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
