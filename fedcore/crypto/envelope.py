"""Sealed envelopes: secrets sent party-to-party through the coordinator.

A sealed envelope is an X25519 ephemeral-static ECDH + HKDF-SHA256 + ChaCha20-Poly1305 box (the shape
of HPKE's base and auth modes, with a fixed suite). Parties use it to hand each other secret material
(the shared CKKS secret context for horizontal training, PSI payloads, masks) over a coordinator that
must only relay.

Layout (version 1)
------------------
::

    offset  size  field
    0       1     version = 0x01 (suite: X25519, HKDF-SHA256, ChaCha20-Poly1305)
    1       1     mode    = 0x00 base (anonymous sender) | 0x01 auth (sender's static key in the ECDH)
    2       32    ephemeral X25519 public key (raw u-coordinate)
    34      n+16  ChaCha20-Poly1305 ciphertext of the n-byte plaintext, then its 16-byte tag

Overhead: 50 bytes. Key schedule::

    dh      = X25519(eph, R)                        (base)
            | X25519(eph, R) || X25519(S, R)         (auth; S = sender static key)
    okm     = HKDF-SHA256(ikm=dh, salt=b"", length=44,
                          info=b"fedcredit/envelope/v1" || header[0:34] || R_pub [|| S_pub in auth])
    key, nonce = okm[:32], okm[32:44]
    ad      = header[0:34] || encode(aad)
    encode(aad) = u16be(len) || utf8(sender) || u16be(len) || utf8(recipient) || u16be(len) || utf8(purpose)

``aad`` (:class:`EnvelopeAad`: sender name, recipient name, purpose / run id) is *not* transmitted; both
ends build it from their own context, so an envelope replayed to another recipient, attributed to
another sender or moved to another run does not open. The key and nonce are fresh for every envelope
(fresh ephemeral key), so the deterministic nonce is safe.

Sender authentication (chosen: the sender's static key in the ECDH)
-------------------------------------------------------------------
Base mode is anonymous: anyone holding the recipient's public key can seal to it, and the names in
``aad`` are only *claims*. In auth mode (``sender_key=`` on :func:`seal`, ``sender_pub=`` on
:func:`open_sealed`) the key schedule also mixes ``X25519(S, R)``, so only the holder of the sender's
static private key (or the recipient itself) can make an envelope that opens under ``sender_pub``.
This is HPKE's AuthEncap: no signature bytes, deniable to third parties, and - like every static-DH
scheme - not a defence if the recipient's own private key is stolen (key-compromise impersonation).
An opener that expects auth rejects base envelopes and vice versa. Envelope public keys must be
bound to a party's certificate (published through the coordinator's registry with the party's
signature, or compared by :meth:`EnvelopePublicKey.fingerprint` out of band); otherwise a malicious
coordinator could substitute its own key.

What each side learns
---------------------
* **Recipient**: the plaintext; in auth mode, that the holder of ``sender_pub`` made it.
* **Coordinator** (relays): the envelope size (plaintext size + 50), who sends to whom and when. The
  envelope carries no names, no key fingerprints, nothing about the plaintext; the ephemeral key is
  fresh and random-looking (an X25519 u-coordinate, not uniform bytes: the layout is recognizable).
* **Anyone else**: the same as the coordinator, at best.

Every failure to open - truncated, unknown version or mode, bad ephemeral key, flipped byte, wrong
``aad``, wrong recipient key, wrong or missing sender key - raises the one exception
:class:`InvalidEnvelope`, with one fixed message.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedcore.errors import InvalidInput, ProtocolError
from fedcore.secret import Secret, write_private_file

__all__ = [
    "OVERHEAD",
    "EnvelopeAad",
    "EnvelopePrivateKey",
    "EnvelopePublicKey",
    "InvalidEnvelope",
    "open_sealed",
    "seal",
]

VERSION = 0x01
MODE_BASE = 0x00
MODE_AUTH = 0x01
KEY_BYTES = 32
HEADER_BYTES = 2 + KEY_BYTES
TAG_BYTES = 16
OVERHEAD = HEADER_BYTES + TAG_BYTES
_INFO = b"fedcredit/envelope/v1"
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


@dataclass(frozen=True)
class EnvelopeAad:
    """What an envelope is bound to: who sent it, to whom, and for which purpose / run."""

    sender: str
    recipient: str
    purpose: str

    def encode(self) -> bytes:
        out = bytearray()
        fields = (("sender", self.sender), ("recipient", self.recipient), ("purpose", self.purpose))
        for name, value in fields:
            if not isinstance(value, str) or not value:
                raise InvalidInput(f"envelope aad field {name!r} must be a non-empty string")
            raw = value.encode("utf-8")
            if len(raw) > 0xFFFF:
                raise InvalidInput(f"envelope aad field {name!r} is longer than 65535 bytes")
            out += len(raw).to_bytes(2, "big") + raw
        return bytes(out)


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
        """The key object itself, for :mod:`fedcore.protocol.sealing`'s HPKE."""
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


def _derive(dh: bytes, header: bytes, recipient_raw: bytes, sender_raw: bytes | None) -> tuple[bytes, bytes]:
    info = _INFO + header + recipient_raw + (sender_raw or b"")
    okm = HKDF(algorithm=hashes.SHA256(), length=44, salt=None, info=info).derive(dh)
    return okm[:32], okm[32:]


def seal(
    recipient_pub: EnvelopePublicKey,
    plaintext: bytes,
    aad: EnvelopeAad,
    *,
    sender_key: EnvelopePrivateKey | None = None,
    randbytes: Callable[[int], bytes] | None = None,
) -> bytes:
    """Seal ``plaintext`` to ``recipient_pub``, bound to ``aad``; auth mode when ``sender_key`` is given.

    ``randbytes`` (default ``os.urandom``) supplies the 32 ephemeral-key bytes; inject it only in tests.
    """
    if not isinstance(recipient_pub, EnvelopePublicKey):
        raise InvalidInput("seal needs an EnvelopePublicKey")
    if not isinstance(plaintext, bytes | bytearray | memoryview):
        raise InvalidInput("envelope plaintext must be bytes")
    ad_tail = aad.encode()
    eph = X25519PrivateKey.from_private_bytes((randbytes or os.urandom)(KEY_BYTES))
    mode = MODE_BASE if sender_key is None else MODE_AUTH
    header = bytes((VERSION, mode)) + eph.public_key().public_bytes_raw()
    dh = eph.exchange(recipient_pub._key)
    sender_raw = None
    if sender_key is not None:
        dh += sender_key._key.exchange(recipient_pub._key)
        sender_raw = sender_key._key.public_key().public_bytes_raw()
    key, nonce = _derive(dh, header, recipient_pub.to_bytes(), sender_raw)
    return header + ChaCha20Poly1305(key).encrypt(nonce, bytes(plaintext), header + ad_tail)


def open_sealed(
    priv: EnvelopePrivateKey,
    envelope: bytes,
    aad: EnvelopeAad,
    *,
    sender_pub: EnvelopePublicKey | None = None,
) -> bytes:
    """Open an envelope sealed to ``priv``'s public key with the same ``aad``.

    With ``sender_pub``, the envelope must be in auth mode from that sender. Every failure raises
    :class:`InvalidEnvelope`.
    """
    ad_tail = aad.encode()  # a malformed aad is the caller's bug: InvalidInput, not InvalidEnvelope
    try:
        if not isinstance(envelope, bytes | bytearray | memoryview):
            raise InvalidEnvelope()
        envelope = bytes(envelope)
        if len(envelope) < OVERHEAD or envelope[0] != VERSION:
            raise InvalidEnvelope()
        mode = envelope[1]
        if mode != (MODE_BASE if sender_pub is None else MODE_AUTH):
            raise InvalidEnvelope()
        header = envelope[:HEADER_BYTES]
        eph_pub = X25519PublicKey.from_public_bytes(header[2:])
        dh = priv._key.exchange(eph_pub)
        sender_raw = None
        if sender_pub is not None:
            dh += priv._key.exchange(sender_pub._key)
            sender_raw = sender_pub.to_bytes()
        key, nonce = _derive(dh, header, priv._key.public_key().public_bytes_raw(), sender_raw)
        return ChaCha20Poly1305(key).decrypt(nonce, envelope[HEADER_BYTES:], header + ad_tail)
    except InvalidEnvelope:
        raise
    except (InvalidTag, ValueError, TypeError) as exc:
        raise InvalidEnvelope() from exc
