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
    P        an X25519 key pair of its own (:class:`MaskContributor`, rotated hourly); with R's key it
             agrees K = HKDF(X25519(P, R)) once per key pair (cached on both sides). Per request: a
             16-byte nonce never used before with P's key (a random prefix and a counter);
             seed || tag = HMAC-SHA512(K, request id, R's fingerprint, nonce); values v (per query,
             per pseudonym, as for CKKS) in fixed point (2^32) in Z_2^64; answers u = v + PRG(seed)
             (SHAKE-256; ChaCha20 past 256 values), with its public key, the nonce and the 16-byte tag
    C        sums the u of all contributors (mod 2^64), forwards the sum and each (key, nonce, tag)
    R        derives each contributor's seed and checks its tag (a contribution made for another
             request or key fails), subtracts the masks, decodes: the sum of the v

Cost per contribution: an HMAC and a SHAKE-256 output (microseconds; one X25519 agreement per new key pair)
and 8 bytes a value plus 68, against about 1.3 ms and 64 KiB for the smallest CKKS ciphertext; the sum
is exact (CKKS adds noise around 2^-20).

**What each side learns** is what it learns with CKKS (:mod:`fedcore.protocol.scoring`):

- *Coordinator*: each ``u`` is ``v`` plus a mask from a seed that needs K, which only P and R can
  compute, so uniform in Z_2^64 and independent of ``v``; a nonce is never reused with a key, so no two
  ``u`` share a mask (subtracting two answers gives nothing). Sizes: the number of values, as with CKKS.
- *Contributor P*: nothing new: the same task with a 36-byte key instead of a CKKS context.
- *Requester R*: the sum and, per contributor, a public key, nonce and tag that carry no value. The
  public keys are stable for an hour, so R can tell the same contributor across its requests; it can
  already tell who contributed (every member but the ``missing`` ones).

The trust is the same as CKKS's, and so are its limits: R's key is not bound to R's certificate (that
would tell the members who asked), so a coordinator that substituted its own key could read the values,
as it could with a substituted CKKS context; a coordinator that handed R one contribution instead of the
sum would give R that member's values, as with CKKS. Both are outside the honest-but-curious model the
coordinator is trusted in (docs/threat_model.md). No secret travels: K is agreed, not sent, so
:mod:`fedcore.protocol.sealing` (which relays secrets) is not involved.

Wire formats: contribution ``b"FCMC" | P's key (32 B) | nonce (16 B) | tag (16 B) | k x u64
(little-endian)``; sum ``b"FCMS" | u16 contributors | their (key, nonce, tag) | k x u64``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedcore.crypto.envelope import EnvelopePrivateKey, EnvelopePublicKey
from fedcore.crypto.masks import from_fixed, mask_u64, to_fixed
from fedcore.errors import InvalidInput, ProtocolError
from fedcore.secret import Secret

MASKED_MAX_VALUES = 64  # requests of at most this many values (pseudonyms x queries) use masked sums
KEY_BYTES, NONCE_BYTES, TAG_BYTES = 32, 16, 16
SEAL_BYTES = KEY_BYTES + NONCE_BYTES + TAG_BYTES  # what a contributor adds besides its values
VALUE_BOUND = float(1 << 30)  # |v| below this: sums of up to 2^32 of them stay inside the 2^63 range
CONTRIBUTOR_ROTATE_S = 3600.0
AGREED_CACHE = 256
_KEY_MAGIC = b"FCMK"
_CONTRIB_MAGIC = b"FCMC"
_SUM_MAGIC = b"FCMS"
_LABEL = "scoring-sum"


class MaskKey:
    """The requester's public key for masked sums; stands where a CKKS public context does."""

    __slots__ = ("_fingerprint", "key")

    def __init__(self, key: EnvelopePublicKey) -> None:
        self.key = key
        self._fingerprint = "mask:" + hashlib.sha256(key.to_bytes()).hexdigest()

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
        return self._fingerprint


class _Agreement(Secret):
    """One side's X25519 key and the keys K it agreed with peers' keys (bounded LRU, thread-safe)."""

    __slots__ = ("_cache", "_count", "_key", "_lock", "_prefix", "public")

    def __init__(self, key: EnvelopePrivateKey) -> None:
        self._key = key
        self.public = key.public_key().to_bytes()
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._prefix = secrets.token_bytes(NONCE_BYTES - 8)
        self._count = itertools.count()

    def nonce(self) -> bytes:
        """A nonce never used with this key: a random prefix and a counter (no system call per request)."""
        return self._prefix + next(self._count).to_bytes(8, "big")

    def agreed(self, peer: bytes, contributor: bytes, requester: bytes) -> bytes:
        """K for this key and ``peer``'s (``contributor``'s and ``requester``'s public keys in the KDF)."""
        with self._lock:
            k = self._cache.get(peer)
            if k is not None:
                self._cache.move_to_end(peer)
                return k
        try:
            shared = self._key.raw_x25519().exchange(EnvelopePublicKey.from_bytes(peer).raw_x25519())
        except (InvalidInput, ValueError) as exc:
            raise ProtocolError(f"masked sum: unusable peer key ({exc})") from None
        info = b"fedcredit/" + _LABEL.encode() + contributor + requester
        k = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
        with self._lock:
            self._cache[peer] = k
            while len(self._cache) > AGREED_CACHE:
                self._cache.popitem(last=False)
        return k


def _mask(seed: bytes, n: int) -> np.ndarray:
    """``n`` pseudo-random uint64 from a seed: SHAKE-256 for the few values of a request (a keystream
    cipher's set-up costs more than the values), the ChaCha20 keystream for more."""
    if n <= 256:
        return np.frombuffer(hashlib.shake_256(seed).digest(8 * n), dtype="<u8").astype(np.uint64)
    return mask_u64(seed, _LABEL, n)


def _seed_and_tag(k: bytes, request_id: str, fingerprint: str, nonce: bytes) -> tuple[bytes, bytes]:
    """The mask seed (secret) and the check tag (public) of one contribution."""
    out = hmac.new(k, f"{_LABEL}/{request_id}/{fingerprint}/".encode() + nonce, hashlib.sha512).digest()
    return out[:32], out[32 : 32 + TAG_BYTES]


class MaskSecret(Secret):
    """The requester's private key for masked sums (never pickled; lives in memory only)."""

    __slots__ = ("_agreement", "_public")

    def __init__(self, key: EnvelopePrivateKey) -> None:
        self._agreement = _Agreement(key)
        self._public = MaskKey(key.public_key())

    @classmethod
    def generate(cls) -> MaskSecret:
        return cls(EnvelopePrivateKey.generate())

    def public_context(self) -> MaskKey:
        return self._public

    def fingerprint(self) -> str:
        return self._public.fingerprint()

    def seed(self, contributor: bytes, nonce: bytes, tag: bytes, request_id: str) -> bytes:
        """A contributor's mask seed for ``request_id``; a tag that does not check is a ProtocolError."""
        k = self._agreement.agreed(contributor, contributor, self._agreement.public)
        seed, want = _seed_and_tag(k, request_id, self.fingerprint(), nonce)
        if not hmac.compare_digest(want, tag):
            raise ProtocolError("a contribution in the coordinator's masked sum was not made for this request")
        return seed


class MaskContributor(Secret):
    """A contributor's X25519 key for masked sums, regenerated every ``rotate_s`` seconds."""

    __slots__ = ("_agreement", "_born", "_clock", "_lock", "rotate_s")

    def __init__(self, rotate_s: float = CONTRIBUTOR_ROTATE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.rotate_s = rotate_s
        self._clock = clock
        self._lock = threading.Lock()
        self._agreement = _Agreement(EnvelopePrivateKey.generate())
        self._born = clock()

    def contribute(self, key: MaskKey, values: np.ndarray, request_id: str) -> bytes:
        """This party's answer to ``request_id``: its ``values`` masked under a seed agreed with ``key``."""
        v = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(v)) or np.any(np.abs(v) >= VALUE_BOUND):
            raise InvalidInput(f"a masked sum takes finite values below 2^30 in magnitude, got {np.max(np.abs(v))}")
        with self._lock:
            if self._clock() - self._born >= self.rotate_s:
                self._agreement = _Agreement(EnvelopePrivateKey.generate())
                self._born = self._clock()
            agreement = self._agreement
        requester = key.key.to_bytes()
        k = agreement.agreed(requester, agreement.public, requester)
        nonce = agreement.nonce()
        seed, tag = _seed_and_tag(k, request_id, key.fingerprint(), nonce)
        masked = to_fixed(v) + _mask(seed, len(v))  # wraps modulo 2^64
        return _CONTRIB_MAGIC + agreement.public + nonce + tag + masked.astype("<u8").tobytes()


@dataclass(frozen=True)
class MaskedPart:
    """One contributor's parsed answer (at the coordinator): its key, nonce and tag, and masked values."""

    head: bytes
    values: np.ndarray  # uint64


def parse_contribution(data: bytes, length: int) -> MaskedPart:
    """A contributor's answer of ``length`` values; anything else is a :class:`ProtocolError`."""
    head = len(_CONTRIB_MAGIC) + SEAL_BYTES
    if data[:4] != _CONTRIB_MAGIC:
        raise ProtocolError("not a masked-sum contribution")
    if len(data) != head + 8 * length:
        raise ProtocolError(f"masked-sum contribution of {len(data)} bytes, expected {head + 8 * length}")
    return MaskedPart(bytes(data[4:head]), np.frombuffer(data, dtype="<u8", offset=head).astype(np.uint64))


def total(parts: Sequence[MaskedPart]) -> bytes:
    """The coordinator's sum of the contributors' answers, with their keys, nonces and tags."""
    acc = np.zeros(len(parts[0].values), dtype=np.uint64)
    for p in parts:
        acc += p.values  # modulo 2^64
    return _SUM_MAGIC + struct.pack(">H", len(parts)) + b"".join(p.head for p in parts) + acc.astype("<u8").tobytes()


def open_sum(key: MaskSecret, data: bytes, length: int, request_id: str, contributors: int) -> np.ndarray:
    """The requester's decoding: the sum of the ``contributors``' ``length`` values of ``request_id``."""
    if data[:4] != _SUM_MAGIC or len(data) < 6:
        raise ProtocolError("the coordinator's answer is not a masked sum")
    (k,) = struct.unpack_from(">H", data, 4)
    head = 6 + k * SEAL_BYTES
    if k != contributors or len(data) != head + 8 * length:
        raise ProtocolError("the coordinator's masked sum does not match its contributors and length")
    acc = np.frombuffer(data, dtype="<u8", offset=head).astype(np.uint64)
    for i in range(k):
        at = 6 + i * SEAL_BYTES
        pub, nonce = data[at : at + KEY_BYTES], data[at + KEY_BYTES : at + KEY_BYTES + NONCE_BYTES]
        seed = key.seed(bytes(pub), bytes(nonce), bytes(data[at + KEY_BYTES + NONCE_BYTES : at + SEAL_BYTES]),
                        request_id)
        acc -= _mask(seed, length)
    return from_fixed(acc)
