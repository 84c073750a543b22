"""Pseudonyms: a keyed hash of a normalized id under the federation pseudonym key.

``pseudonym = HMAC-SHA256(key, kind || 0x00 || normalized_id)[:16]``. Every party holds the same
key (distributed party to party in sealed envelopes; the coordinator never holds it), so the same
person gets the same 16-byte pseudonym at every party, while anyone without the key cannot link a
pseudonym to an id or test a guessed phone number. The id kind is hashed in so that a phone number
and an opaque id with the same characters never collide.

The key is a :class:`~fedcore.secret.Secret`: no pickling, no ``repr`` of the value; it lives at
the party in a 0600 file (``HOME/keys/pseudonym.key``, 64 hex characters and a newline) and leaves
memory only through the named methods :meth:`PseudonymKey.export_to_file` and
:meth:`PseudonymKey.export_raw` (for sealing into an envelope).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from fedcore.errors import InvalidInput, NotFound
from fedcore.secret import Secret, write_private_file

KEY_BYTES = 32
PSEUDONYM_BYTES = 16
KEY_FILE = Path("keys") / "pseudonym.key"


def default_key_path(home: Path) -> Path:
    """Where a party keeps its pseudonym key."""
    return home / KEY_FILE


class PseudonymKey(Secret):
    """The federation pseudonym key (32 random bytes)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
            raise InvalidInput(f"a pseudonym key is {KEY_BYTES} bytes")
        self._key = bytes(key)

    @classmethod
    def generate(cls) -> PseudonymKey:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_raw(cls, key: bytes) -> PseudonymKey:
        """Wrap key bytes received in a sealed envelope."""
        return cls(key)

    def export_raw(self) -> bytes:
        """The key bytes, for sealing into an envelope to another party. Never log or send in clear."""
        return self._key

    def export_to_file(self, path: Path) -> None:
        """Write the key to ``path`` with mode 0600."""
        write_private_file(path, self._key.hex().encode("ascii") + b"\n")

    @classmethod
    def load(cls, path: Path) -> PseudonymKey:
        """Read a key file; refuses a file that group or others can read."""
        if not path.is_file():
            raise NotFound(f"pseudonym key file {path} does not exist")
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise InvalidInput(f"{path}: pseudonym key file must be readable by its owner only (mode {mode:o})")
        text = path.read_text(encoding="ascii").strip()
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise InvalidInput(f"{path}: not a hex-encoded pseudonym key") from None
        if len(raw) != KEY_BYTES:
            raise InvalidInput(f"{path}: a pseudonym key is {KEY_BYTES} bytes, found {len(raw)}")
        return cls(raw)

    def fingerprint(self) -> str:
        """A public identifier of the key (to check two parties hold the same one); reveals nothing."""
        return hmac.new(self._key, b"fedcredit pseudonym key fingerprint v1", hashlib.sha256).hexdigest()[:16]

    def pseudonymize(self, ids: Iterable[str], kind: str) -> list[bytes]:
        """Pseudonyms of normalized ids of one kind (16 bytes each), in order.

        HMAC-SHA256 written out over two SHA-256 states with the key pads (and the kind) absorbed once:
        the same bytes as :mod:`hmac`, at about half its per-id cost (a 50M-entry list hashes every id).
        """
        block = 64  # SHA-256's block size; the 32-byte key is zero-padded to it
        key = self._key.ljust(block, b"\x00")
        inner = hashlib.sha256(bytes(b ^ 0x36 for b in key) + kind.encode("utf-8") + b"\x00")
        outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        out: list[bytes] = []
        append = out.append
        icopy, ocopy = inner.copy, outer.copy
        for i in ids:
            h = icopy()
            h.update(i.encode("utf-8"))
            o = ocopy()
            o.update(h.digest())
            append(o.digest()[:PSEUDONYM_BYTES])
        return out


def pseudonymize(key: PseudonymKey, ids: Iterable[str], kind: str) -> list[bytes]:
    """Module-level alias of :meth:`PseudonymKey.pseudonymize`."""
    return key.pseudonymize(ids, kind)


def load_or_create(path: Path) -> PseudonymKey:
    """Load the key at ``path``, or generate and save one (mode 0600) if there is none."""
    if path.exists():
        return PseudonymKey.load(path)
    key = PseudonymKey.generate()
    key.export_to_file(path)
    os.chmod(path, 0o600)
    return key
