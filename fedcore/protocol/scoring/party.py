"""The handler a contributing party runs in joint scoring: partial logits and flags under the requester's key
(CKKS, or a masked sum for small requests: :mod:`fedcore.protocol.scoring.masked`)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

from fedcore.crypto.envelope import EnvelopePublicKey, InvalidEnvelope
from fedcore.crypto.he import CkksPublicContext
from fedcore.crypto.zero_pool import ZeroPool
from fedcore.errors import (
    ContextUnknown,
    FedcreditError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ProtocolError,
)
from fedcore.protocol.messages import JSONValue, TaskReply
from fedcore.protocol.scoring.masked import MaskContributor, MaskKey
from fedcore.protocol.scoring.messages import (
    ALLOWED_PARAMS,
    CONTEXT_CACHE,
    CONTRIBUTE,
    CONTRIBUTE_GROUP,
    GROUP_MAX_N,
    GROUP_MAX_PARTS,
    PSEUDONYM_BYTES,
    TREE_QUERY,
    ModelSlice,
    ModelVersionMismatch,
    _digest,
    check_queries,
    pack_group_reply,
    pseudonym_array,
    unpack_group_payload,
    unpack_task_payload_full,
)
from fedcore.protocol.sealing import PartyIdentity, open_for, seal_for
from fedcore.protocol.tasks import HandlerRegistry, TaskContext

if TYPE_CHECKING:
    from fedcore.protocol.scoring.trees import TreeLayout

log = logging.getLogger(__name__)


# ---- contributor side ---------------------------------------------------------------------------


class ContributionSource(Protocol):
    """A contributor's data as the protocol needs it. Every method returns one value per pseudonym,
    0.0 for subjects it does not know or that did not consent to the purpose."""

    def model_version(self, model_id: str) -> str: ...

    def partial_logits(self, model_id: str, pseudonyms: np.ndarray) -> np.ndarray: ...

    def fraud_flags(self, pseudonyms: np.ndarray) -> np.ndarray: ...

    def loan_flags(self, pseudonyms: np.ndarray) -> np.ndarray: ...


class TreeContributionSource(Protocol):
    """A party's side of tree scores (:mod:`fedcore.protocol.scoring.trees`)."""

    def tree_model_version(self, model_id: str) -> str: ...

    def tree_picks(self, model_id: str, pseudonyms: np.ndarray) -> tuple[TreeLayout, np.ndarray] | None:
        """The model's regions and, per applicant, the leaf this party's splits select in each (index
        within the region); None if this party holds no region of the model."""
        ...


class AuditSink(Protocol):
    def append(self, event: str, fields: Mapping[str, JSONValue]) -> object: ...

    def append_many(self, event: str, many: Sequence[Mapping[str, JSONValue]]) -> object: ...


def _prefix64(keys: np.ndarray) -> np.ndarray:
    """The first 8 bytes of ``S16`` pseudonyms as big-endian uint64 (sorts like the bytes)."""
    raw = np.ascontiguousarray(keys, dtype="S16").view(np.uint8).reshape(-1, PSEUDONYM_BYTES)[:, :8]
    out = raw.copy().view(">u8").ravel()  # a copy always (one key's slice would be a view of the caller's)
    if sys.byteorder == "little":
        out = out.byteswap(inplace=True).view(np.uint64)  # the same values in native order, no second copy
    return out.astype(np.uint64, copy=False)


HASH_MIN_QUERY = 4096  # a batch at least this large builds (once) and uses a hash index over the prefixes


class SortedTable:
    """pseudonym -> value with vectorized lookups: ``searchsorted`` on the first 8 bytes as uint64, then
    a full 16-byte comparison (two pseudonyms sharing 64 bits, probability ~n^2/2^65, make the second one
    look unknown, i.e. neutral).

    Memory is 24 bytes per entry for a flag table (``values`` None: presence only, e.g. the 51-million
    entry blacklist) and 32 with values. One applicant's lookup is a binary search (microseconds at 50M);
    the first batch of ``HASH_MIN_QUERY`` or more builds a hash index over the prefixes (pandas, ~4x
    faster than searchsorted on large batches, about 2x the prefix array in memory).
    """

    def __init__(self, pseudonyms: Sequence[bytes] | np.ndarray, values: np.ndarray | None = None) -> None:
        keys = np.asarray(list(pseudonyms) if not isinstance(pseudonyms, np.ndarray) else pseudonyms, dtype="S16")
        vals = None if values is None else np.asarray(values, dtype=np.float64)
        if vals is not None and len(vals) != len(keys):
            raise InvalidInput(f"{len(keys)} pseudonyms but {len(vals)} values")
        prefix = _prefix64(keys) if len(keys) else np.zeros(0, dtype=np.uint64)
        order = np.argsort(prefix, kind="stable")
        self.keys = keys[order]
        self.prefix = prefix[order]
        del prefix
        self.values = None if vals is None else vals[order]
        self._ready()

    @classmethod
    def owning(cls, keys: np.ndarray) -> SortedTable:
        """A presence table (no values) over ``keys`` (``S16``), sorted **in place**: the caller gives the
        array up. A 50M-entry list then needs its 16 B a key plus the 8 B prefixes, with no sorted copy
        beside the original (and a byte sort is faster than argsort + gather)."""
        table = cls.__new__(cls)
        table.keys = np.asarray(keys, dtype="S16")
        table.keys.sort()
        table.prefix = _prefix64(table.keys) if len(table.keys) else np.zeros(0, dtype=np.uint64)
        table.values = None
        table._ready()
        return table

    def _ready(self) -> None:
        self._unique = bool(len(self.prefix) < 2 or np.all(self.prefix[1:] != self.prefix[:-1]))
        self._index: pd.Index | None = None
        self._index_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.keys)

    def _hash_index(self) -> pd.Index:
        with self._index_lock:
            if self._index is None:
                self._index = pd.Index(self.prefix)
            return self._index

    def lookup(self, query: np.ndarray) -> np.ndarray:
        """One value per pseudonym of ``query`` (``S16``); 0.0 where the pseudonym is not in the table
        (1.0 where it is, for a table without values)."""
        out = np.zeros(len(query), dtype=np.float64)
        if len(self.keys) == 0 or len(query) == 0:
            return out
        q = np.asarray(query, dtype="S16")
        qp = _prefix64(q)
        if self._unique and len(q) >= HASH_MIN_QUERY:
            pos = self._hash_index().get_indexer(qp)
            found = pos >= 0
            pos = np.where(found, pos, 0)
        else:
            pos = np.minimum(np.searchsorted(self.prefix, qp), len(self.keys) - 1)
            found = np.ones(len(q), dtype=bool)
        hit = found & (self.keys[pos] == q)
        out[hit] = 1.0 if self.values is None else self.values[pos[hit]]
        return out


@dataclass
class ArrayContributions:
    """A :class:`ContributionSource` over in-memory arrays (tests; the store-backed source builds one)."""

    slices: dict[str, ModelSlice]
    scores: dict[str, SortedTable]  # model id -> partial logit per consenting subject
    fraud: SortedTable
    loans: SortedTable

    @classmethod
    def build(
        cls,
        slices: Sequence[ModelSlice],
        features: Mapping[str, tuple[Sequence[bytes], np.ndarray]],  # model id -> (pseudonyms, X)
        fraud: Sequence[bytes] = (),
        loans: Sequence[bytes] = (),
    ) -> ArrayContributions:
        scores = {}
        for sl in slices:
            ps, x = features.get(sl.model_id, ((), np.zeros((0, len(sl.features)))))
            scores[sl.model_id] = SortedTable(ps, sl.partial_logit(x) if len(ps) else np.zeros(0))
        return cls({s.model_id: s for s in slices}, scores, SortedTable(fraud), SortedTable(loans))

    def model_version(self, model_id: str) -> str:
        sl = self.slices.get(model_id)
        if sl is None:
            raise NotFound(f"model {model_id!r} has no slice at this party")
        return sl.version

    def partial_logits(self, model_id: str, pseudonyms: np.ndarray) -> np.ndarray:
        return self.scores[model_id].lookup(pseudonyms)

    def fraud_flags(self, pseudonyms: np.ndarray) -> np.ndarray:
        return self.fraud.lookup(pseudonyms)

    def loan_flags(self, pseudonyms: np.ndarray) -> np.ndarray:
        return self.loans.lookup(pseudonyms)


ScoringKey = CkksPublicContext | MaskKey  # a requester's public key: CKKS, or masked sums for small requests


class ContextCache:
    """Bounded LRU of parsed public keys (CKKS contexts, masked-sum keys) by fingerprint (thread-safe)."""

    def __init__(self, size: int = CONTEXT_CACHE) -> None:
        self._size = size
        self._items: OrderedDict[str, ScoringKey] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, fingerprint: str) -> ScoringKey | None:
        with self._lock:
            ctx = self._items.get(fingerprint)
            if ctx is not None:
                self._items.move_to_end(fingerprint)
            return ctx

    def put(self, data: bytes, fingerprint: str | None = None) -> ScoringKey:
        ctx: ScoringKey
        if MaskKey.is_one(data):
            ctx = MaskKey.from_bytes(data)
        else:
            ctx = CkksPublicContext.from_bytes(data)  # rejects garbage and contexts holding a secret key
            shape = (ctx.params.poly_modulus_degree, ctx.params.coeff_mod_bit_sizes, ctx.params.scale_bits)
            allowed = [(p.poly_modulus_degree, p.coeff_mod_bit_sizes, p.scale_bits) for p in ALLOWED_PARAMS]
            if shape not in allowed or ctx.has_galois_keys:
                raise ProtocolError("scoring contexts must use the scoring or SUMS parameters without Galois keys")
        if fingerprint is not None and ctx.fingerprint() != fingerprint:
            raise ProtocolError("public context does not match its fingerprint")
        with self._lock:
            self._items[ctx.fingerprint()] = ctx
            self._items.move_to_end(ctx.fingerprint())
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return ctx

    def resolve(self, fingerprint: str, data: bytes | None) -> ScoringKey:
        if data:
            return self.get(fingerprint) or self.put(data, fingerprint)
        ctx = self.get(fingerprint)
        if ctx is None:
            raise ContextUnknown(fingerprint)
        return ctx


RECENT_MAX_N = 16  # requests of at most this many pseudonyms have their plaintext values remembered
RECENT_TTL_S = 2.0
RECENT_ENTRIES = 256


class RecentValues:
    """The plaintext values of small requests answered in the last ``ttl_s`` seconds, by (model id,
    version, queries, pseudonyms). A pre-approval makes each member answer one request per asked lender
    for the same viewer, each under that lender's key: the partial logit and flags are looked up once
    and only the encryption is per key. The party's own data, in its own memory; values are at most
    ``ttl_s`` older than a fresh lookup (the tables behind them refresh on a far longer period)."""

    def __init__(self, ttl_s: float = RECENT_TTL_S, size: int = RECENT_ENTRIES) -> None:
        self._ttl = ttl_s
        self._size = size
        self._items: OrderedDict[tuple[str, str, tuple[str, ...], bytes], tuple[float, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, tuple[str, ...], bytes]) -> np.ndarray | None:
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(key)
            if hit is None or now - hit[0] > self._ttl:
                return None
            return hit[1]

    def put(self, key: tuple[str, str, tuple[str, ...], bytes], values: np.ndarray) -> None:
        with self._lock:
            self._items[key] = (time.monotonic(), values)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


class ScoringParty:
    """The contributor's handler for :data:`CONTRIBUTE`. ``audit`` records every request (a repeated
    one too: :class:`RecentValues` only saves the lookups)."""

    def __init__(
        self, source: ContributionSource, audit: AuditSink | None = None, trees: TreeContributionSource | None = None,
        identity: PartyIdentity | None = None,
    ) -> None:  # fmt: skip
        self._source = source
        self._trees = trees
        self._identity = identity  # opens the requester's sealed tree inputs
        self._audit = audit
        self._contexts = ContextCache()
        self._recent = RecentValues()
        self._zeros = ZeroPool()  # small CKKS answers: a pooled encryption of zero plus the values
        self._masker = MaskContributor()  # masked sums (fedcore.protocol.scoring.masked)

    def register(self, registry: HandlerRegistry) -> None:
        registry.register(CONTRIBUTE, self._contribute)
        registry.register(CONTRIBUTE_GROUP, self._contribute_group)

    def _contribute(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        n = int(params.get("n", -1))
        context, tree_input, packed = unpack_task_payload_full(ctx.read_payload())
        pseudos = pseudonym_array(packed)
        if len(pseudos) != n:
            raise ProtocolError(f"request announced {n} pseudonyms, payload holds {len(pseudos)}")
        if check_queries(params.get("queries") or []) == (TREE_QUERY,):  # type: ignore[arg-type]
            record = self._record(params, packed)
            try:
                reply = self._tree(params, pseudos, packed, tree_input)
            except FedcreditError as exc:
                self._log("score_contribution", {**record, "outcome": exc.code})
                raise
            self._log("score_contribution", {**record, "outcome": "ok"})
            return reply
        records: list[dict[str, JSONValue]] = []
        try:
            data = self._encrypted(ctx, params, pseudos, packed, context, records)
        finally:
            self._log_many("score_contribution", records)
        return TaskReply({"n": n}, [data] if data else None)

    def _contribute_group(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        """One task for the parts of a pre-approval (:mod:`fedcore.protocol.scoring.groups`): per part,
        the same values under that part's key, audited as its own request; a part that fails is
        answered with its error code and an empty ciphertext, the others still count."""
        parts = params.get("parts")
        if not isinstance(parts, list) or not 0 < len(parts) <= GROUP_MAX_PARTS:
            raise ProtocolError(f"a grouped scoring task needs 1..{GROUP_MAX_PARTS} parts")
        n = int(params.get("n", -1))  # type: ignore[arg-type]
        if n > GROUP_MAX_N:
            raise ProtocolError(f"a grouped scoring task holds at most {GROUP_MAX_N} pseudonyms")
        contexts, packed = unpack_group_payload(ctx.read_payload(), len(parts))
        pseudos = pseudonym_array(packed)
        if len(pseudos) != n:
            raise ProtocolError(f"request announced {n} pseudonyms, payload holds {len(pseudos)}")
        outcomes: list[JSONValue] = []
        blobs: list[bytes] = []
        records: list[dict[str, JSONValue]] = []  # one per part, written together (one write, not one per part)
        try:
            for part, context in zip(parts, contexts, strict=True):
                try:
                    if not isinstance(part, Mapping) or int(part.get("n", -1)) != n:  # type: ignore[arg-type]
                        raise ProtocolError("a grouped scoring part must be an object with the task's n")
                    if check_queries(part.get("queries") or []) == (TREE_QUERY,):  # type: ignore[arg-type]
                        raise ProtocolError("tree scores are not grouped")
                    blobs.append(self._encrypted(ctx, part, pseudos, packed, context, records))
                    outcomes.append("ok")
                except FedcreditError as exc:
                    outcomes.append(exc.code)
                    blobs.append(b"")
        finally:
            self._log_many("score_contribution", records)
        return TaskReply({"n": n, "outcomes": outcomes}, [pack_group_reply(blobs)])

    def _record(self, params: Mapping[str, JSONValue], packed: bytes) -> dict[str, JSONValue]:
        return {
            "request_id": str(params.get("request_id", "")),
            "model_id": str(params.get("model_id", "")),
            "model_version": str(params.get("model_version", "")),
            "queries": list(check_queries(params.get("queries") or [])),  # type: ignore[arg-type]
            "n": int(params.get("n", -1)),  # type: ignore[arg-type]
            "pseudonyms_sha256": _digest(packed),
        }

    def _encrypted(self, ctx: TaskContext, params: Mapping[str, JSONValue], pseudos: np.ndarray, packed: bytes,
                   context: bytes | None, records: list[dict[str, JSONValue]]) -> bytes:
        """One request's values under its key (empty for no pseudonyms); its ``score_contribution`` audit
        record goes to ``records``, which the caller writes before it answers."""
        queries = check_queries(params.get("queries") or [])  # type: ignore[arg-type]
        model_id = str(params.get("model_id", ""))
        version = str(params.get("model_version", ""))
        record = self._record(params, packed)
        try:
            pub = self._contexts.resolve(str(params.get("fingerprint", "")), context)
            key = (model_id, version, queries, packed) if len(pseudos) <= RECENT_MAX_N else None
            values = self._recent.get(key) if key is not None else None
            if values is None:
                values = self._values(ctx, queries, model_id, version, pseudos)
                if key is not None:
                    self._recent.put(key, values)
            if not len(values):
                data = b""
            elif isinstance(pub, MaskKey):
                data = self._masker.contribute(pub, values, str(params.get("request_id", "")))
            else:
                data = self._zeros.encrypt(pub, values).to_bytes()
        except FedcreditError as exc:
            records.append({**record, "outcome": exc.code})
            raise
        records.append({**record, "outcome": "ok"})
        return data

    def _values(self, ctx: TaskContext, queries: tuple[str, ...], model_id: str, version: str,
                pseudos: np.ndarray) -> np.ndarray:
        """The plaintext values of one request: per query, one value per pseudonym."""
        parts: list[np.ndarray] = []
        for q in queries:
            ctx.check_cancelled()
            if q == "score":
                have = self._source.model_version(model_id)
                if have != version:
                    raise ModelVersionMismatch(
                        f"model {model_id!r}: request names version {version!r}, this party holds {have!r}"
                    )
                parts.append(self._source.partial_logits(model_id, pseudos))
            elif q == "blacklist":
                parts.append(self._source.fraud_flags(pseudos))
            else:
                parts.append(self._source.loan_flags(pseudos))
        return np.concatenate(parts) if parts else np.zeros(0)

    def _tree(
        self, params: Mapping[str, JSONValue], pseudos: np.ndarray, packed: bytes, sealed: bytes | None
    ) -> TaskReply:
        """The platform's step of a tree score (:mod:`fedcore.protocol.scoring.trees`)."""
        from fedcore.protocol.scoring import trees as tp

        if self._trees is None:
            return TaskReply({"n": len(pseudos)})
        if self._identity is None:
            raise PermissionDenied("this party has no envelope key to take part in tree scores")
        if params.get("step") == "announce":
            return TaskReply({"announcement": self._identity.announcement()})  # type: ignore[dict-item]
        model_id, version = str(params.get("model_id", "")), str(params.get("model_version", ""))
        have = self._trees.tree_model_version(model_id)
        if have != version:
            raise ModelVersionMismatch(
                f"model {model_id!r}: request names version {version!r}, this party holds {have!r}"
            )
        got = self._trees.tree_picks(model_id, pseudos)
        if got is None:
            return TaskReply({"n": len(pseudos)})
        layout, picks = got
        if layout.digest() != params.get("layout"):
            raise InvalidInput(f"model {model_id!r}: the request's tree regions differ from this party's model")
        purpose = tp.sealing_purpose(model_id, version, _digest(packed))
        try:
            opened = open_for(self._identity.envelope_key, sealed or b"", purpose, tp.REQUESTER, self._identity.name)
        except InvalidEnvelope:
            raise PermissionDenied("the sealed tree input does not open with this party's envelope key") from None
        if len(opened) != tp.SEED_BYTES + 32:
            raise ProtocolError("the sealed tree input has the wrong size")
        s = tp.prg(bytes.fromhex(str(params.get("seed_s", ""))), "s", len(pseudos))
        chat, y = tp.platform_reply(layout.sizes, picks, opened[: tp.SEED_BYTES], s)
        reply_key = EnvelopePublicKey.from_bytes(opened[tp.SEED_BYTES :])
        sealed_y = seal_for(reply_key, y.tobytes(), purpose + "/reply", self._identity.name, tp.REQUESTER)
        data = tp.pack_sealed_and(sealed_y, chat.astype(tp.picks_dtype(layout.sizes)).tobytes())
        return TaskReply({"n": len(pseudos), "layout": layout.digest()}, [data])

    def _log(self, event: str, fields: Mapping[str, JSONValue]) -> None:
        if self._audit is not None:
            self._audit.append(event, fields)

    def _log_many(self, event: str, many: Sequence[Mapping[str, JSONValue]]) -> None:
        if self._audit is not None and many:
            self._audit.append_many(event, many)
