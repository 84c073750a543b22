"""Masked sums: how the contributors' values of a *small* joint scoring request reach the requester
summed, without CKKS.

A request of at most :data:`MASKED_MAX_VALUES` values (pseudonyms x queries: one applicant's score,
fraud hits and loan count, a pre-approval's viewer) is summed this way by default; bigger ones (batches,
monitoring) use CKKS, whose packing pays off from a few hundred values. The requester chooses per
request by the key it names (:class:`~fedcore.protocol.scoring.requester.KeyRing`); the coordinator and
the members follow the key.

Flow (replacing the CKKS steps of :mod:`fedcore.protocol.scoring`)::

    R        an X25519 key pair (:class:`MaskSecret`), rotated with its CKKS key; the public half
             (:class:`MaskKey`, 36 bytes, fingerprint ``mask:<sha256>``) goes where a CKKS public
             context goes: in the request the first time, then cached by fingerprint at C and each P
    P        values v (per query, per pseudonym, as for CKKS) in fixed point (2^32) in Z_2^64; a fresh
             32-byte seed s; answers  u = v + PRG(s)  and  seal(s), sealed to R's key with HPKE
             (:func:`~fedcore.protocol.sealing.seal_for`, info binding the request id and key)
    C        sums the u of all contributors (mod 2^64) and forwards the sum and the sealed seeds
    R        opens every seed, subtracts their masks, decodes: the sum of the v

Cost per contribution: one HPKE seal (about 0.13 ms) and 8 bytes a value plus 84, against about 1.3 ms
and 64 KiB for the smallest CKKS ciphertext; the sum is exact (CKKS adds noise around 2^-20).

**What each side learns** is what it learns with CKKS (:mod:`fedcore.protocol.scoring`):

- *Coordinator*: each ``u`` is ``v`` plus a mask from a seed only R can open, so uniform in Z_2^64 and
  independent of ``v``; the seeds are fresh per contribution, so no two ``u`` share a mask (subtracting
  two answers gives nothing). Sizes: the number of values, as with CKKS.
- *Contributor P*: nothing new: the same task with a 36-byte key instead of a CKKS context.
- *Requester R*: the sum and the number of contributors (one sealed seed each), as before; the seeds are
  random and carry no value, and the sealed seeds name no party.

The trust is the same as CKKS's, and so are its limits: R's key is not bound to R's certificate (that
would tell the members who asked), so a coordinator that substituted its own key could read the values,
as it could with a substituted CKKS context; a coordinator that handed R one contribution instead of the
sum would give R that member's values, as with CKKS. Both are outside the honest-but-curious model the
coordinator is trusted in (docs/threat_model.md).

Wire formats: contribution ``b"FCMC" | sealed seed (80 B) | k x u64 (little-endian)``; sum
``b"FCMS" | u16 contributors | their sealed seeds | k x u64``.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedcore.crypto.envelope import EnvelopePrivateKey, EnvelopePublicKey, InvalidEnvelope
from fedcore.crypto.masks import from_fixed, mask_u64, to_fixed
from fedcore.errors import InvalidInput, ProtocolError
from fedcore.protocol.sealing import open_for, seal_for
from fedcore.secret import Secret

MASKED_MAX_VALUES = 64  # requests of at most this many values (pseudonyms x queries) use masked sums
SEED_BYTES = 32
SEALED_BYTES = 80  # HPKE: 32-byte encapsulated key + the seed + a 16-byte tag
VALUE_BOUND = float(1 << 30)  # |v| below this: sums of up to 2^32 of them stay inside the 2^63 range
CONTRIBUTOR = "contributor"  # sealing names: the requester is not told who contributed, nor P who asked
REQUESTER = "requester"
_KEY_MAGIC = b"FCMK"
_CONTRIB_MAGIC = b"FCMC"
_SUM_MAGIC = b"FCMS"
_LABEL = "scoring-sum"


class MaskKey:
    """The requester's public key for masked sums; stands where a CKKS public context does."""

    __slots__ = ("key",)

    def __init__(self, key: EnvelopePublicKey) -> None:
        self.key = key

    @staticmethod
    def is_one(data: bytes) -> bool:
        return data[:4] == _KEY_MAGIC

    @classmethod
    def from_bytes(cls, data: bytes) -> MaskKey:
        if not cls.is_one(data):
            raise ProtocolError("not a masked-sum key")
        try:
            return cls(EnvelopePublicKey.from_bytes(bytes(data[4:])))
        except InvalidInput as exc:
            raise ProtocolError(f"masked-sum key: {exc}") from None

    def serialize(self) -> bytes:
        return _KEY_MAGIC + self.key.to_bytes()

    def fingerprint(self) -> str:
        return "mask:" + hashlib.sha256(self.key.to_bytes()).hexdigest()


class MaskSecret(Secret):
    """The requester's private key for masked sums (never pickled; lives in memory only)."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: EnvelopePrivateKey) -> None:
        self._key = key
        self._public = MaskKey(key.public_key())

    @classmethod
    def generate(cls) -> MaskSecret:
        return cls(EnvelopePrivateKey.generate())

    def public_context(self) -> MaskKey:
        return self._public

    def fingerprint(self) -> str:
        return self._public.fingerprint()

    def open_seed(self, sealed: bytes, purpose: str) -> bytes:
        return open_for(self._key, sealed, purpose, CONTRIBUTOR, REQUESTER)


def purpose(request_id: str, fingerprint: str) -> str:
    """What a sealed seed is for: one request under one key (a seed moved to another request does not open)."""
    return f"{_LABEL}/{request_id}/{fingerprint}"


def contribute(key: MaskKey, values: np.ndarray, request_id: str) -> bytes:
    """A contributor's answer: its ``values`` masked with a fresh seed sealed to ``key``."""
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)) or np.any(np.abs(v) >= VALUE_BOUND):
        raise InvalidInput(f"a masked sum takes finite values below 2^30 in magnitude, got up to {np.max(np.abs(v))}")
    seed = secrets.token_bytes(SEED_BYTES)
    sealed = seal_for(key.key, seed, purpose(request_id, key.fingerprint()), CONTRIBUTOR, REQUESTER)
    masked = to_fixed(v) + mask_u64(seed, _LABEL, len(v))  # wraps modulo 2^64
    return _CONTRIB_MAGIC + sealed + masked.astype("<u8").tobytes()


@dataclass(frozen=True)
class MaskedPart:
    """One contributor's parsed answer (at the coordinator)."""

    sealed: bytes
    values: np.ndarray  # uint64


def parse_contribution(data: bytes, length: int) -> MaskedPart:
    """A contributor's answer of ``length`` values; anything else is a :class:`ProtocolError`."""
    head = len(_CONTRIB_MAGIC) + SEALED_BYTES
    if data[:4] != _CONTRIB_MAGIC:
        raise ProtocolError("not a masked-sum contribution")
    if len(data) != head + 8 * length:
        raise ProtocolError(f"masked-sum contribution of {len(data)} bytes, expected {head + 8 * length}")
    return MaskedPart(bytes(data[4:head]), np.frombuffer(data, dtype="<u8", offset=head).astype(np.uint64))


def total(parts: Sequence[MaskedPart]) -> bytes:
    """The coordinator's sum of the contributors' answers, with their sealed seeds."""
    acc = np.zeros(len(parts[0].values), dtype=np.uint64)
    for p in parts:
        acc += p.values  # modulo 2^64
    return _SUM_MAGIC + struct.pack(">H", len(parts)) + b"".join(p.sealed for p in parts) + acc.astype("<u8").tobytes()


def open_sum(key: MaskSecret, data: bytes, length: int, request_id: str, contributors: int) -> np.ndarray:
    """The requester's decoding: the sum of the ``contributors``' ``length`` values of ``request_id``."""
    if data[:4] != _SUM_MAGIC or len(data) < 6:
        raise ProtocolError("the coordinator's answer is not a masked sum")
    (k,) = struct.unpack_from(">H", data, 4)
    head = 6 + k * SEALED_BYTES
    if k != contributors or len(data) != head + 8 * length:
        raise ProtocolError("the coordinator's masked sum does not match its contributors and length")
    acc = np.frombuffer(data, dtype="<u8", offset=head).astype(np.uint64)
    why = purpose(request_id, key.fingerprint())
    for i in range(k):
        try:
            seed = key.open_seed(bytes(data[6 + i * SEALED_BYTES : 6 + (i + 1) * SEALED_BYTES]), why)
        except InvalidEnvelope:
            raise ProtocolError("a contributor's mask seed in the coordinator's answer does not open") from None
        if len(seed) != SEED_BYTES:
            raise ProtocolError("a contributor's mask seed has the wrong size")
        acc -= mask_u64(seed, _LABEL, length)
    return from_fixed(acc)
