"""The handlers a party runs in PSI: blinding, re-blinding, matching, staging and committing the alignment."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from fedcore.crypto.psi import POINT_BYTES, ParallelBlinder, PsiSecret, blind_ids, iter_chunks, reblind
from fedcore.errors import InvalidInput, NotFound, ProtocolError
from fedcore.protocol.messages import JSONValue, TaskReply
from fedcore.protocol.psi.messages import (
    ABORT,
    BLIND,
    COMMIT,
    FINALIZE,
    KEY_BYTES,
    LEARN,
    MATCH,
    POSITIONS,
    PURPOSES,
    REBLIND,
    STAGE,
    START,
    VERIFY,
    alignment_digest,
)
from fedcore.protocol.tasks import HandlerRegistry, TaskContext

log = logging.getLogger(__name__)


SESSION_TTL_S = 6 * 3600
POOL_MIN_IDS = 50_000  # below this, blinding in-process beats starting worker processes

# ---- the party's data, as the protocol needs it ----------------------------------------------------


class SubjectSource(Protocol):
    """The party's subjects that consented to ``purpose``: (subject keys, normalized ids as bytes)."""

    def subjects_for_psi(self, purpose: str) -> tuple[np.ndarray, Sequence[bytes] | np.ndarray]: ...


class AlignmentSink(Protocol):
    """Where alignment tables go: staged (invisible), then committed or dropped."""

    def stage_alignment(self, run_id: str, subject_keys: np.ndarray) -> None: ...

    def commit_alignment(self, run_id: str) -> None: ...

    def drop_alignment(self, run_id: str) -> None: ...


# ---- party side ------------------------------------------------------------------------------------


@dataclass
class _Pair:
    secret: PsiSecret
    own_keys: np.ndarray | None = None  # sorted 16-byte prefixes of b*(a*H(x)), leader only
    own_index: np.ndarray | None = None  # own position of each sorted key
    # matched own positions (ascending) and the peer position of each: arrays, not a dict of ints
    match_own: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    match_peer: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    matched_count: int = 0
    pool: ParallelBlinder | None = None  # worker processes holding this pair's scalar, reused across steps

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None


@dataclass
class _Session:
    run_id: str
    purpose: str
    keys: np.ndarray  # subject keys in this run's random order
    ids: np.ndarray  # normalized ids in the same order (fixed-width bytes, see id_array)
    pairs: dict[str, _Pair] = field(default_factory=dict)
    alignment: dict[str, np.ndarray] = field(default_factory=dict)  # peer -> own positions, final order
    created: float = field(default_factory=time.monotonic)


def _prefixes(packed: bytes) -> np.ndarray:
    if len(packed) % POINT_BYTES:
        raise ProtocolError(f"PSI payload length {len(packed)} is not a multiple of {POINT_BYTES}")
    arr = np.frombuffer(packed, dtype=np.uint8).reshape(-1, POINT_BYTES)[:, :KEY_BYTES]
    return np.ascontiguousarray(arr).view(f"S{KEY_BYTES}").ravel()


def _split(packed: bytes) -> list[bytes]:
    return [packed[i : i + POINT_BYTES] for i in range(0, len(packed), POINT_BYTES)]


def point_array(chunks: Iterable[bytes], expected: int = 0) -> np.ndarray:
    """Packed point chunks as one contiguous ``N x 32`` uint8 array, filled chunk by chunk (grown by
    doubling if ``expected`` is short), never a list of per-point ``bytes``."""
    out = np.empty((max(expected, 0), POINT_BYTES), dtype=np.uint8)
    n = 0
    for chunk in chunks:
        if len(chunk) % POINT_BYTES:
            raise ProtocolError(f"PSI payload length {len(chunk)} is not a multiple of {POINT_BYTES}")
        pts = np.frombuffer(chunk, dtype=np.uint8).reshape(-1, POINT_BYTES)
        if n + len(pts) > len(out):
            grown = np.empty((max(2 * len(out), n + len(pts)), POINT_BYTES), dtype=np.uint8)
            grown[:n] = out[:n]
            out = grown
        out[n : n + len(pts)] = pts
        n += len(pts)
    return out[:n]


def _array_chunks(points: np.ndarray, per_chunk: int = 4096) -> Iterator[bytes]:
    for i in range(0, len(points), per_chunk):
        yield points[i : i + per_chunk].tobytes()


def id_array(ids: Sequence[bytes] | np.ndarray) -> np.ndarray:
    """Ids as one fixed-width bytes array (``S<longest>``): ~one byte per id character instead of a
    Python object per id (~60 B more each). Numpy drops trailing NUL bytes, which normalized ids
    (text) never have."""
    if isinstance(ids, np.ndarray) and ids.dtype.kind == "S":
        return ids
    if len(ids) == 0:
        return np.zeros(0, dtype="S1")
    try:
        return np.array(ids, dtype=bytes)
    except (TypeError, UnicodeEncodeError) as exc:
        raise InvalidInput("PSI ids must be bytes") from exc


def iter_ids(arr: np.ndarray, block: int = 65_536) -> Iterator[bytes]:
    """Plain ``bytes`` ids from an id array, converting one block at a time (bounded memory)."""
    for i in range(0, len(arr), block):
        yield from arr[i : i + block].tolist()


def aligned_points(chunks: Iterable[bytes], size: int = POINT_BYTES * 4096) -> Iterator[bytes]:
    """Re-cut a byte stream into chunks that hold whole points (chunk boundaries may split one)."""
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        if len(buf) >= size:
            cut = len(buf) - len(buf) % POINT_BYTES
            yield bytes(buf[:cut])
            del buf[:cut]
    if len(buf) % POINT_BYTES:
        raise ProtocolError(f"PSI stream ended inside a point ({len(buf)} trailing bytes)")
    if buf:
        yield bytes(buf)


class PsiParty:
    """The party-side steps of PSI, as task handlers. Holds per-run state in memory only."""

    def __init__(
        self,
        source: SubjectSource,
        sink: AlignmentSink,
        workers: int | None = None,
        blinder: Callable[[PsiSecret], ParallelBlinder] | None = None,
    ) -> None:
        """``workers``: processes for blinding (None: one per core; 0: always in this process).
        ``blinder``: builds the pool for a run's scalar instead of a local :class:`ParallelBlinder`
        (the party's Ray cluster: ``party_node.compute.RayBlinder``; then every size is pooled)."""
        self._source = source
        self._sink = sink
        self._workers = workers
        self._blinder = blinder
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    def register(self, registry: HandlerRegistry) -> None:
        for kind, fn in (
            (START, self._start), (BLIND, self._blind), (REBLIND, self._reblind), (LEARN, self._learn),
            (MATCH, self._match), (FINALIZE, self._finalize), (POSITIONS, self._positions),
            (STAGE, self._stage), (VERIFY, self._verify), (COMMIT, self._commit), (ABORT, self._abort),
        ):
            registry.register(kind, fn)

    def _session(self, ctx: TaskContext) -> _Session:
        with self._lock:
            s = self._sessions.get(ctx.run_id)
        if s is None:
            raise NotFound(f"no PSI run {ctx.run_id!r} at this party (was it restarted?)")
        return s

    def _pair(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> tuple[_Session, _Pair]:
        s = self._session(ctx)
        peer = str(params.get("peer", ""))
        if peer not in s.pairs:
            raise InvalidInput(f"PSI run {ctx.run_id!r} has no peer {peer!r}")
        return s, s.pairs[peer]

    def _start(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        purpose = str(params.get("purpose", "training"))
        if purpose not in PURPOSES:
            raise InvalidInput(f"PSI purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}")
        peers = params.get("peers")
        if not isinstance(peers, list) or not peers:
            raise InvalidInput("psi.start needs a non-empty list of peers")
        keys, ids = self._source.subjects_for_psi(purpose)
        if len(keys) != len(ids):
            raise ProtocolError("subject keys and ids differ in length")
        arr = id_array(ids)
        del ids
        # One entry per distinct id (equal ids would give equal points and leak multiplicity).
        keep = np.unique(arr, return_index=True)[1]
        order = keep[np.random.default_rng(secrets.randbits(128)).permutation(len(keep))]
        s = _Session(
            run_id=ctx.run_id,
            purpose=purpose,
            keys=np.asarray(keys, dtype=np.int64)[order],
            ids=arr[order],
            pairs={str(p): _Pair(PsiSecret.generate()) for p in peers},
        )
        with self._lock:
            self._expire()
            self._sessions[ctx.run_id] = s
        return TaskReply({"count": len(s.ids)})

    def _expire(self) -> None:
        now = time.monotonic()
        for run_id in [r for r, s in self._sessions.items() if now - s.created > SESSION_TTL_S]:
            self._end(run_id)

    def _end(self, run_id: str) -> None:
        s = self._sessions.pop(run_id, None)
        if s is not None:
            for pair in s.pairs.values():
                pair.close()

    def _pooled(self, n: int) -> bool:
        return self._blinder is not None or (self._workers != 0 and n >= POOL_MIN_IDS)

    def _pool(self, pair: _Pair) -> ParallelBlinder:
        if pair.pool is None:
            make = self._blinder or (lambda sec: ParallelBlinder(sec, self._workers))
            pair.pool = make(pair.secret)
        return pair.pool

    def _blind_stream(self, ctx: TaskContext, pair: _Pair, ids: np.ndarray) -> Iterator[bytes]:
        if self._pooled(len(ids)):
            for packed in self._pool(pair).blind_ids_stream(iter_ids(ids)):
                ctx.check_cancelled()
                yield packed
        else:
            for chunk in iter_chunks(iter_ids(ids)):
                ctx.check_cancelled()
                yield b"".join(blind_ids(pair.secret, chunk))

    def _reblind_stream(self, ctx: TaskContext, pair: _Pair, n: int) -> Iterator[bytes]:
        chunks = aligned_points(ctx.payload)
        if self._pooled(n):
            for packed in self._pool(pair).reblind_stream(chunks):
                ctx.check_cancelled()
                yield packed
        else:
            for packed in chunks:
                ctx.check_cancelled()
                yield b"".join(reblind(pair.secret, _split(packed)))

    def _blind(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s, pair = self._pair(ctx, params)
        return TaskReply({"count": len(s.ids)}, self._blind_stream(ctx, pair, s.ids))

    def _reblind(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        _, pair = self._pair(ctx, params)
        shuffle = bool(params.get("shuffle", False))
        stream = self._reblind_stream(ctx, pair, int(params.get("n", 0)))
        if not shuffle:
            return TaskReply({}, stream)
        data = point_array(stream, int(params.get("n", 0)))
        perm = np.random.default_rng(secrets.randbits(128)).permutation(len(data))
        return TaskReply({}, _array_chunks(data[perm]))

    def _learn(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s, pair = self._pair(ctx, params)
        # filled in place, one chunk at a time: no list of chunks, no second copy of the whole set
        keys = np.empty(len(s.ids), dtype=f"S{KEY_BYTES}")
        at = 0
        for chunk in aligned_points(ctx.payload):
            pk = _prefixes(chunk)
            if at + len(pk) > len(keys):
                raise ProtocolError(f"expected {len(s.ids)} re-blinded values, got more")
            keys[at : at + len(pk)] = pk
            at += len(pk)
        if at != len(keys):
            raise ProtocolError(f"expected {len(s.ids)} re-blinded values, got {at}")
        order = np.argsort(keys, kind="stable")
        pair.own_keys, pair.own_index = keys[order], order
        return TaskReply({"count": len(keys)})

    def _match(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        _, pair = self._pair(ctx, params)
        if pair.own_keys is None or pair.own_index is None:
            raise ProtocolError("psi.match before psi.learn_own")
        own_keys, own_index = pair.own_keys, pair.own_index
        peer_pos = 0
        owns: list[np.ndarray] = []
        peers: list[np.ndarray] = []
        for packed in self._reblind_stream(ctx, pair, int(params.get("n", 0))):
            pk = _prefixes(packed)
            if len(own_keys):
                at = np.searchsorted(own_keys, pk)
                at[at == len(own_keys)] = 0
                hit = np.nonzero(own_keys[at] == pk)[0]
                owns.append(own_index[at[hit]].astype(np.int64))
                peers.append(hit.astype(np.int64) + peer_pos)
            peer_pos += len(pk)
        own = np.concatenate(owns) if owns else np.zeros(0, dtype=np.int64)
        peer = np.concatenate(peers) if peers else np.zeros(0, dtype=np.int64)
        # one peer position per own position (the last, as a dict would keep), own positions ascending
        last = len(own) - 1 - np.unique(own[::-1], return_index=True)[1]
        pair.match_own, pair.match_peer = own[last], peer[last]
        pair.matched_count = len(pair.match_own)
        pair.own_keys = pair.own_index = None
        return TaskReply({"matched": pair.matched_count, "peer_count": peer_pos})

    def _finalize(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx)
        common: np.ndarray | None = None
        for pair in s.pairs.values():
            common = pair.match_own if common is None else np.intersect1d(common, pair.match_own, assume_unique=True)
        final = np.zeros(0, dtype=np.int64) if common is None else np.asarray(common, dtype=np.int64)
        final = final[np.random.default_rng(secrets.randbits(128)).permutation(len(final))]
        if bool(params.get("cardinality_only", False)):
            return TaskReply({"intersection": len(final)})
        for peer, pair in s.pairs.items():  # match_own is ascending: each final position found by bisection
            s.alignment[peer] = pair.match_peer[np.searchsorted(pair.match_own, final)].astype(np.uint32)
        self._sink.stage_alignment(ctx.run_id, s.keys[final])
        return TaskReply({"intersection": len(final)})

    def _positions(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s, _ = self._pair(ctx, params)
        pos = s.alignment.get(str(params["peer"]))
        if pos is None:
            raise ProtocolError("psi.positions before psi.finalize")
        digest = alignment_digest(ctx.run_id, pos)
        return TaskReply({"count": len(pos), "digest": digest}, [pos.astype("<u4").tobytes()])

    def _stage(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx)
        data = ctx.read_payload()
        if len(data) % 4:
            raise ProtocolError("psi.stage: positions payload is not a whole number of uint32")
        pos = np.frombuffer(data, dtype="<u4").astype(np.int64)
        if len(pos) and (pos.max() >= len(s.keys) or len(np.unique(pos)) != len(pos)):
            raise ProtocolError("psi.stage: positions out of range or repeated")
        digest = alignment_digest(ctx.run_id, pos)
        if params.get("count") != len(pos) or params.get("digest") != digest:
            raise ProtocolError(
                f"psi.stage: received {len(pos)} positions that do not match the leader's count "
                f"({params.get('count')}) and digest; nothing staged"
            )
        self._sink.stage_alignment(ctx.run_id, s.keys[pos])
        return TaskReply({"staged": len(pos), "digest": digest})

    def _verify(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        """The leader's check of what a follower staged, before anyone commits."""
        s, _ = self._pair(ctx, params)
        pos = s.alignment.get(str(params["peer"]))
        if pos is None:
            raise ProtocolError("psi.verify before psi.finalize")
        if params.get("count") != len(pos) or params.get("digest") != alignment_digest(ctx.run_id, pos):
            raise ProtocolError(
                f"psi.verify: {params['peer']!r} staged {params.get('count')} positions that do not match "
                f"the {len(pos)} sent (count or digest differs)"
            )
        return TaskReply({"verified": len(pos)})

    def _commit(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        self._sink.commit_alignment(ctx.run_id)
        with self._lock:
            self._end(ctx.run_id)
        return TaskReply({})

    def _abort(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        self._sink.drop_alignment(ctx.run_id)
        with self._lock:
            self._end(ctx.run_id)
        return TaskReply({})


# ---- coordinator side ------------------------------------------------------------------------------

