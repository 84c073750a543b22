"""ECDH private-set-intersection primitives over X25519 (``cryptography``'s OpenSSL backend).

This module holds the *primitives* of Diffie-Hellman PSI; the two-party protocol over ``PartyChannel``
is built on top of them (issue 4). Everything here runs inside one party's machine.

Group and hash
--------------
An id (``bytes``; normalization - trimming, case, Unicode NFC, phone formats - happens upstream) is
mapped to an X25519 u-coordinate by::

    H(id) = SHA-256(HASH_DOMAIN || id), with bit 255 (top bit of the last byte) cleared

``HASH_DOMAIN`` (``b"fedcredit/psi/x25519/v1\\x00"``) separates this use of SHA-256 from every other.
The 255-bit little-endian value is a u-coordinate exactly as RFC 7748 X25519 reads it (X25519 masks
the top bit itself; we clear it so the bytes on the page are the bytes that are used). About half of
all u-coordinates lie on Curve25519 and half on its quadratic twist; both are fine:

* **Blinding** is ``X25519(k, u)`` = ``X25519PrivateKey.from_private_bytes(k).exchange(
  X25519PublicKey.from_public_bytes(u))``: the u-coordinate of ``[clamp(k)] P`` where ``P`` is a point
  with u-coordinate ``u`` on the curve *or* on the twist. The Montgomery ladder uses only ``u`` and
  the curve constant ``A``; the same formulas compute scalar multiplication on the twist, so
  ``X25519(a, X25519(b, u)) == u([ca][cb]P) == u([cb][ca]P) == X25519(b, X25519(a, u))`` in both
  groups (``ca``, ``cb`` are the clamped scalars; clamping is deterministic, so the same scalar
  is used every time). ``tests/unit/crypto/test_crypto_psi.py`` checks this on random ids and
  explicitly on ids whose hash lands on the twist.
* Clamping makes every scalar a multiple of 8, which kills the small-order component on the curve
  (cofactor 8) and on the twist (cofactor 4). So the output always lies in the prime-order subgroup
  (curve order 8 * l, twist order 4 * l', l and l' 253-bit primes: Curve25519 is twist-secure),
  and any small-order input maps to the all-zero output, which ``cryptography`` rejects with ``ValueError``.
  Points a peer sends are additionally checked against the explicit list of small-order
  u-coordinates (:data:`SMALL_ORDER_POINTS`, all encodings) and must be canonical (``u < p``, top
  bit clear), which every honest ``exchange`` output is.

Wire format
-----------
A blinded id is its 32-byte u-coordinate. Batches travel *packed*: the concatenation of 32-byte points,
no header (:func:`pack_points` / :func:`unpack_points`; length must be a multiple of 32). Streaming
sends chunks of ``DEFAULT_CHUNK_IDS`` points; order inside a batch is significant when a peer
returns re-blinded points (position ``i`` of the reply answers position ``i`` of the request).

Intended protocol (semi-honest parties, relaying coordinator)
-------------------------------------------------------------
A holds X, B holds Y; each makes a fresh :class:`PsiSecret` (``a``, ``b``) *per run*.

1. A -> B: ``a*H(x)`` for x in X, in A's order.
2. B -> A: ``b*(a*H(x))`` in the same order, and ``b*H(y)`` for y in Y in a random order (B keeps
   the permutation).
3. A computes ``a*(b*H(y))`` and compares with ``ab*H(x)``: A learns X ∩ Y. A -> B: the positions (in
   B's shuffled order) that matched, so B learns X ∩ Y too (omit this step for a one-sided result;
   send only the count for a cardinality-only run).

Bytes: 32 per id per message, 96 per pair of equal-size sets (48 per id per direction) plus 4 per
matched position. Every payload should be sealed party-to-party with :mod:`fedcore.crypto.envelope`
so that the coordinator sees only ciphertext sizes.

What each side learns (the leakage statement)
---------------------------------------------
* **A** learns X ∩ Y and |Y|. **B** learns |X| and, if A sends step 3's positions, X ∩ Y.
  Under the decisional Diffie-Hellman assumption (and SHA-256 as a random oracle) the blinded values
  of non-matching ids look random to the other party.
* **The coordinator** relays sealed payloads and learns |X|, |Y| (from sizes), timing, and who runs
  PSI with whom. Even without sealing it would see only ``a*H(x)``, ``ab*H(x)`` and ``b*H(y)``, none of
  which it can link to an id or to ``ab*H(y)``; sealing is still required because step 3's positions
  (and an unsealed ``ab*H(y)``, if a variant ever sent it) would reveal the intersection size.
* **An observer** of the mTLS link learns only traffic sizes and timing.
* **Across runs**: scalars are fresh per run, so nothing relayed in one run links to another run.
  Re-using a :class:`PsiSecret` across runs would make blinded ids linkable: don't.
* Not covered: a malicious party can blind ids it does not hold (it learns whether they are in the
  other set; inherent to PSI) or lie in step 3. Duplicates are not hidden: equal ids give equal points.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedcore.errors import InvalidInput, ProtocolError
from fedcore.secret import Secret

__all__ = [
    "DEFAULT_CHUNK_IDS",
    "HASH_DOMAIN",
    "POINT_BYTES",
    "SMALL_ORDER_POINTS",
    "ParallelBlinder",
    "PsiSecret",
    "blind_ids",
    "blind_point",
    "check_point",
    "hash_ids",
    "hash_to_point",
    "intersect_indices",
    "iter_chunks",
    "pack_points",
    "reblind",
    "unpack_points",
]

HASH_DOMAIN = b"fedcredit/psi/x25519/v1\x00"
POINT_BYTES = 32
SCALAR_BYTES = 32
DEFAULT_CHUNK_IDS = 4096
_P = 2**255 - 19

# u-coordinates of the points of small order on Curve25519 and its twist: 0 (order 2), 1 and p-1
# (order 4, one on the curve, one on the twist), and the two order-8 points of the curve. Every
# encoding of each (u and u+p where that fits in 255 bits, with and without the top bit) is listed.
_SMALL_ORDER_U = (
    0,
    1,
    _P - 1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
)


def _small_order_encodings() -> frozenset[bytes]:
    out: set[bytes] = set()
    for u in _SMALL_ORDER_U:
        for v in (u, u + _P):
            if v < 2**255:
                out.add(v.to_bytes(32, "little"))
                out.add((v + 2**255).to_bytes(32, "little"))
    return frozenset(out)


SMALL_ORDER_POINTS: frozenset[bytes] = _small_order_encodings()

_HASHER = hashlib.sha256(HASH_DOMAIN)


class PsiSecret(Secret):
    """A party's blinding scalar for one PSI run. Refuses pickling and ``repr``.

    Make a fresh one per run with :meth:`generate`. The scalar is used exactly as X25519 uses a
    private key (clamped by X25519 on every use).
    """

    __slots__ = ("_key",)

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls, randbytes: Callable[[int], bytes] | None = None) -> PsiSecret:
        """A new random scalar; ``randbytes`` (default ``os.urandom``) is injectable for tests."""
        return cls.from_scalar_bytes((randbytes or os.urandom)(SCALAR_BYTES))

    @classmethod
    def from_scalar_bytes(cls, scalar: bytes) -> PsiSecret:
        """Wrap a 32-byte scalar (known-answer tests; process-pool workers)."""
        if not isinstance(scalar, bytes | bytearray) or len(scalar) != SCALAR_BYTES:
            raise InvalidInput(f"a PSI scalar is {SCALAR_BYTES} bytes")
        return cls(X25519PrivateKey.from_private_bytes(bytes(scalar)))

    def export_scalar_for_local_workers(self) -> bytes:
        """The raw scalar, for worker processes on this party's own machine only. Never send it."""
        return self._key.private_bytes_raw()

    @property
    def _exchange(self) -> Callable[[X25519PublicKey], bytes]:
        return self._key.exchange


def hash_to_point(id_: bytes) -> bytes:
    """``SHA-256(HASH_DOMAIN || id)`` with the top bit cleared: a 32-byte X25519 u-coordinate."""
    h = _HASHER.copy()
    h.update(id_)
    d = h.digest()
    return d[:31] + bytes((d[31] & 0x7F,))


def hash_ids(ids: Iterable[bytes]) -> list[bytes]:
    """:func:`hash_to_point` over a batch."""
    return [hash_to_point(i) for i in ids]


def check_point(point: bytes) -> None:
    """Raise :class:`ProtocolError` unless ``point`` is a canonical, not small-order u-coordinate."""
    if not isinstance(point, bytes) or len(point) != POINT_BYTES:
        raise ProtocolError(f"a PSI point must be {POINT_BYTES} bytes")
    if point[31] & 0x80 or (point[31] == 0x7F and int.from_bytes(point, "little") >= _P):
        raise ProtocolError("PSI point is not a canonical X25519 u-coordinate")
    if point in SMALL_ORDER_POINTS:
        raise ProtocolError("PSI point has small order")


def blind_point(secret: PsiSecret, point: bytes) -> bytes:
    """``X25519(secret, point)`` for one point received from a peer (validated)."""
    check_point(point)
    try:
        return secret._exchange(X25519PublicKey.from_public_bytes(point))
    except ValueError as exc:  # all-zero output: small-order input
        raise ProtocolError("PSI point has small order") from exc


def _blind_hashed(exchange: Callable[[X25519PublicKey], bytes], ids: Iterable[bytes]) -> list[bytes]:
    copy = _HASHER.copy
    from_bytes = X25519PublicKey.from_public_bytes
    out: list[bytes] = []
    append = out.append
    for x in ids:
        h = copy()
        h.update(x)
        d = h.digest()
        append(exchange(from_bytes(d[:31] + bytes((d[31] & 0x7F,)))))
    return out


def blind_ids(secret: PsiSecret, ids: Iterable[bytes]) -> list[bytes]:
    """Hash each id to a point and blind it with ``secret``: ``[secret * H(id) for id in ids]``.

    A hash landing on a small-order point (probability 5 * 2^-254 per id) raises ``InvalidInput``.
    """
    try:
        return _blind_hashed(secret._exchange, ids)
    except ValueError as exc:
        raise InvalidInput("an id hashes to a small-order point; it cannot take part in PSI") from exc
    except TypeError as exc:
        raise InvalidInput("PSI ids must be bytes") from exc


def _reblind_points(exchange: Callable[[X25519PublicKey], bytes], points: Iterable[bytes]) -> list[bytes]:
    from_bytes = X25519PublicKey.from_public_bytes
    small = SMALL_ORDER_POINTS
    out: list[bytes] = []
    append = out.append
    for i, p in enumerate(points):
        if len(p) != POINT_BYTES or p[31] >= 0x7F or p in small:
            check_point(p)  # raises with the precise reason, or accepts a canonical 0x7f.. point
        try:
            append(exchange(from_bytes(p)))
        except ValueError as exc:
            raise ProtocolError(f"PSI point {i} has small order") from exc
    return out


def reblind(secret: PsiSecret, points: Iterable[bytes]) -> list[bytes]:
    """Blind points received from a peer with ``secret``, in order. Bad points raise ``ProtocolError``."""
    try:
        return _reblind_points(secret._exchange, points)
    except TypeError as exc:
        raise ProtocolError("PSI points must be bytes") from exc


# --- packed layout ---------------------------------------------------------------------------------


def pack_points(points: Iterable[bytes]) -> bytes:
    """Concatenate 32-byte points (the wire layout of a batch or chunk)."""
    data = b"".join(points)
    if len(data) % POINT_BYTES:
        raise InvalidInput(f"PSI points must be {POINT_BYTES} bytes each")
    return data


def _pack_peer_points(points: list[bytes]) -> bytes:
    try:
        data = b"".join(points)
    except TypeError as exc:
        raise ProtocolError("PSI points must be bytes") from exc
    if len(data) != POINT_BYTES * len(points):
        raise ProtocolError(f"a PSI point must be {POINT_BYTES} bytes")
    return data


def unpack_points(data: bytes) -> list[bytes]:
    """Split a packed batch into 32-byte points; a length that is not a multiple of 32 is a ``ProtocolError``.

    Points are not validated here; :func:`reblind` validates what it multiplies.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError("packed PSI points must be bytes")
    data = bytes(data)
    if len(data) % POINT_BYTES:
        raise ProtocolError(f"packed PSI points: length {len(data)} is not a multiple of {POINT_BYTES}")
    return [data[i : i + POINT_BYTES] for i in range(0, len(data), POINT_BYTES)]


def iter_chunks(items: Iterable[bytes], chunk_size: int = DEFAULT_CHUNK_IDS) -> Iterator[list[bytes]]:
    """Lists of at most ``chunk_size`` consecutive items, for streaming in bounded memory."""
    if chunk_size <= 0:
        raise InvalidInput("chunk_size must be positive")
    chunk: list[bytes] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == chunk_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def intersect_indices(own: Sequence[bytes], peer: Iterable[bytes]) -> list[int]:
    """Positions ``i`` (ascending) with ``own[i]`` among ``peer``; both lists doubly blinded."""
    peer_set = set(peer)
    return [i for i, p in enumerate(own) if p in peer_set]


# --- process pool ----------------------------------------------------------------------------------

_WORKER_EXCHANGE: Callable[[X25519PublicKey], bytes] | None = None


def _init_worker(scalar: bytes, owner_pid: int | None = None) -> None:
    global _WORKER_EXCHANGE
    if owner_pid is not None:
        from fedcore.lifeline import die_with

        die_with(owner_pid)  # a killed node must not leave workers holding its scalar
    _WORKER_EXCHANGE = X25519PrivateKey.from_private_bytes(scalar).exchange


def _worker_blind_ids(ids: list[bytes]) -> bytes:
    assert _WORKER_EXCHANGE is not None
    try:
        return b"".join(_blind_hashed(_WORKER_EXCHANGE, ids))
    except ValueError as exc:
        raise InvalidInput("an id hashes to a small-order point; it cannot take part in PSI") from exc
    except TypeError as exc:
        raise InvalidInput("PSI ids must be bytes") from exc


def _worker_reblind(packed: bytes) -> bytes:
    assert _WORKER_EXCHANGE is not None
    return b"".join(_reblind_points(_WORKER_EXCHANGE, unpack_points(packed)))


def _default_start_method() -> str:
    # fork is unsafe in a process that runs gRPC threads; forkserver is Linux's safe choice.
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


class ParallelBlinder:
    """Blinding across ``n_workers`` processes on this party's machine.

    The workers receive the raw scalar once, through the pool initializer (local inter-process
    transfer on the same host; it never leaves the machine). Use as a context manager; each call
    splits its input into chunks of ``chunk_ids`` ids and keeps at most ``2 * n_workers`` chunks in
    flight, so the ``*_stream`` methods run in bounded memory on inputs of any size.
    """

    def __init__(
        self,
        secret: PsiSecret,
        n_workers: int | None = None,
        chunk_ids: int = DEFAULT_CHUNK_IDS,
        start_method: str | None = None,
    ) -> None:
        if chunk_ids <= 0:
            raise InvalidInput("chunk_ids must be positive")
        self.n_workers = n_workers or os.cpu_count() or 1
        if self.n_workers <= 0:
            raise InvalidInput("n_workers must be positive")
        self.chunk_ids = chunk_ids
        ctx = multiprocessing.get_context(start_method or _default_start_method())
        self._pool: ProcessPoolExecutor | None = ProcessPoolExecutor(
            max_workers=self.n_workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(secret.export_scalar_for_local_workers(), os.getpid()),
        )

    def __enter__(self) -> ParallelBlinder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _run(self, fn: Callable[[Any], bytes], tasks: Iterable[Any]) -> Iterator[bytes]:
        if self._pool is None:
            raise InvalidInput("ParallelBlinder is closed")
        pending: deque[Future[bytes]] = deque()
        limit = 2 * self.n_workers
        for task in tasks:
            pending.append(self._pool.submit(fn, task))
            if len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def blind_ids_stream(self, ids: Iterable[bytes]) -> Iterator[bytes]:
        """Packed chunks (concatenated 32-byte points) of ``secret * H(id)``, in input order."""
        return self._run(_worker_blind_ids, iter_chunks(ids, self.chunk_ids))

    def reblind_stream(self, packed_chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Re-blind packed chunks received from a peer; yields packed chunks in the same order."""
        return self._run(_worker_reblind, packed_chunks)

    def blind_ids(self, ids: Iterable[bytes]) -> list[bytes]:
        """Like :func:`blind_ids`, across the pool."""
        out: list[bytes] = []
        for packed in self.blind_ids_stream(ids):
            out.extend(unpack_points(packed))
        return out

    def reblind(self, points: Iterable[bytes]) -> list[bytes]:
        """Like :func:`reblind`, across the pool."""
        chunks = (_pack_peer_points(c) for c in iter_chunks(points, self.chunk_ids))
        out: list[bytes] = []
        for packed in self.reblind_stream(chunks):
            out.extend(unpack_points(packed))
        return out
