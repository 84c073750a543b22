"""Create a folder's content all at once: build it beside the target, then rename into place."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fedcore.errors import AlreadyExists


@contextmanager
def building(target: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes ``target`` (which must be absent or empty).

    On any failure the temporary folder is removed and ``target`` is left as it was.
    """
    target = target.resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise AlreadyExists(f"{target} exists and is not empty")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            target.rmdir()
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
