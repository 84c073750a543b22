"""A type for secret material that cannot leave the process by accident.

Private keys, CKKS secret contexts, PSI blinding scalars and pseudonym keys are wrapped in a
:class:`Secret` subclass. It refuses pickling and copying through ``__reduce__``, hides its value in
``repr`` and has no ``__bytes__``; the only way out is an explicit, named method such as
``export_to_file`` on the concrete type, which a reviewer can grep for.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn


class SecretLeakError(TypeError):
    """Raised when code tries to serialize secret material implicitly."""


class Secret:
    """Base class of every secret-material type."""

    __slots__ = ()

    def __reduce__(self) -> NoReturn:
        raise SecretLeakError(f"{type(self).__name__} holds secret material and cannot be pickled")

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise SecretLeakError(f"{type(self).__name__} holds secret material and cannot be pickled")

    def __getstate__(self) -> NoReturn:
        raise SecretLeakError(f"{type(self).__name__} holds secret material and cannot be serialized")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} (secret)>"

    __str__ = __repr__


def write_private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only (0600), creating parent folders.

    The file is created with its final mode, so it is never readable by others, even briefly.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_token(path: Path, what: str = "token") -> str:
    """The bearer token at ``path``, made (random, 0600) if it does not exist yet; ``what`` names it in
    errors. A token shorter than 16 characters is refused, naming the file."""
    import secrets

    if not path.is_file():
        write_private_file(path, (secrets.token_urlsafe(32) + "\n").encode())
    token = path.read_text().strip()
    if len(token) < 16:
        from fedcore.errors import InvalidInput

        raise InvalidInput(f"the {what} in {path} is too short (16 characters at least)")
    return token
