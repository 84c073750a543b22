"""Envelope keys: the X25519 keys a party receives sealed secrets with.

A party's envelope key (long-lived in ``HOME/keys/envelope.key``, or fresh per run or session) is
announced signed by its TLS key, and peers seal secrets to it with HPKE; both steps live in
:mod:`fedcore.protocol.sealing`, the one way secrets travel between parties. This module holds only the
key types: :class:`EnvelopePrivateKey` (a :class:`~fedcore.secret.Secret`: never pickled, saved 0600)
and :class:`EnvelopePublicKey` (32 raw bytes; small-order points refused), and :class:`InvalidEnvelope`,
the one error for a sealed payload that does not open (it says nothing about why).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedcore.errors import InvalidInput, ProtocolError
from fedcore.secret import Secret, write_private_file

__all__ = [
    "EnvelopePrivateKey",
    "EnvelopePublicKey",
    "InvalidEnvelope",
]

KEY_BYTES = 32
# Small-order X25519 u-coordinates (see fedcore.crypto.psi): never valid public keys.
_SMALL_ORDER_U = (
    0,
    1,
    2**255 - 20,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
)


class InvalidEnvelope(ProtocolError):
    """An envelope did not open. Deliberately says nothing about why."""

    def __init__(self, message: str = "sealed envelope could not be opened") -> None:
        super().__init__(message)


class EnvelopePublicKey:
    """A party's envelope public key (a raw 32-byte X25519 u-coordinate)."""

    __slots__ = ("_key", "_raw")

    def __init__(self, key: X25519PublicKey) -> None:
        self._key = key
        self._raw = key.public_bytes_raw()

    @classmethod
    def from_bytes(cls, data: bytes) -> EnvelopePublicKey:
        """Parse 32 raw bytes; a wrong length or a small-order point is ``InvalidInput``."""
        if not isinstance(data, bytes | bytearray) or len(data) != KEY_BYTES:
            raise InvalidInput(f"an envelope public key is {KEY_BYTES} bytes")
        u = int.from_bytes(data, "little") & ((1 << 255) - 1)
        if u % (2**255 - 19) in _SMALL_ORDER_U:
            raise InvalidInput("envelope public key is a small-order point")
        return cls(X25519PublicKey.from_public_bytes(bytes(data)))

    def to_bytes(self) -> bytes:
        return self._raw

    def raw_x25519(self) -> X25519PublicKey:
        """The key object itself, for key agreement (masked scoring sums)."""
        return self._key

    def fingerprint(self) -> str:
        """``sha256:`` + hex SHA-256 of the raw key, for logs, registries and out-of-band checks."""
        return "sha256:" + hashlib.sha256(self._raw).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnvelopePublicKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"EnvelopePublicKey({self.fingerprint()[:23]}...)"


class EnvelopePrivateKey(Secret):
    """A party's static envelope private key. Never leaves the party; saved only to a 0600 file."""

    __slots__ = ("_key",)

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls, randbytes: Callable[[int], bytes] | None = None) -> EnvelopePrivateKey:
        """A new key; ``randbytes`` (default ``os.urandom``) is injectable for known-answer tests."""
        return cls(X25519PrivateKey.from_private_bytes((randbytes or os.urandom)(KEY_BYTES)))

    def public_key(self) -> EnvelopePublicKey:
        return EnvelopePublicKey(self._key.public_key())

    def raw_x25519(self) -> X25519PrivateKey:
        """The key object itself, for :mod:`fedcore.protocol.sealing`'s HPKE and masked sums' key agreement."""
        return self._key

    def save(self, path: Path) -> None:
        """Write the key (PKCS#8 PEM, unencrypted) to ``path``, readable by the owner only."""
        pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_private_file(Path(path), pem)

    @classmethod
    def load(cls, path: Path) -> EnvelopePrivateKey:
        """Read a key written by :meth:`save`; refuses a file readable by group or others."""
        path = Path(path)
        try:
            mode = path.stat().st_mode
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read envelope key {path}: {exc.strerror}") from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InvalidInput(f"envelope key {path} is accessible by group or others; chmod 600 it")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"{path} is not a PEM private key") from exc
        if not isinstance(key, X25519PrivateKey):
            raise InvalidInput(f"{path} holds a {type(key).__name__}, not an X25519 envelope key")
        return cls(key)
