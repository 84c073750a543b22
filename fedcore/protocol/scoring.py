"""Joint scoring, the consortium blacklist check and the multi-lending count, written against
:class:`~fedcore.protocol.channel.PartyChannel` (protocols 4 and 5 of the design).

Roles: the **requester** R (a lender's node, asked by its own loan system), the **coordinator** C, and
every other admitted party P (the contributors). The federation pseudonym key is held by every party and
never by C, so ``pseudonym = HMAC(key, kind || id)[:16]`` is the same person everywhere.

Flow of one request (every arrow through C; R <-> C is the ``Scoring/Score`` RPC, C <-> P the party link)::

    R -> C   model id + version, queries, pseudonyms (16 B each), CKKS public context fingerprint
             (+ the public context itself the first time C sees that fingerprint; C caches it)
    C -> P   task ``scoring.contribute``: a fresh request id, the same fields, the public context only
             if P has not had that fingerprint yet. P is NOT told who asked.
    P -> C   one EncryptedVector (CKKS, :data:`SCORING_CKKS`) of length n * len(queries): per query, per pseudonym,
             ``score``: P's partial logit ``w_P . (x_P - mean_P) / std_P``;
             ``blacklist``: 1.0 if the subject is on P's fraud list (and consented to ``blacklist``);
             ``loans``: 1.0 if P has an active loan with the subject.
             CKKS parameters: :data:`SCORING_CKKS` (N=4096, one data prime, no Galois keys) by default.
             A subject P does not know, or without consent, gets 0.0 (the neutral value: a standardized
             feature at its mean contributes 0); it is encrypted like any other value.
    C        sums the ciphertexts of all contributors (``fedcore.crypto.he.add``)
    C -> R   the summed EncryptedVector, the number of contributors, the names of missing parties
    R        decrypts; joint logit = intercept + own part + external sum; blacklist/loans as counts.

**What each side learns** (semi-honest; CKKS IND-CPA under RLWE at N=8192, 128-bit):

- *Coordinator*: who asked (it authenticates R), n, the queries, the model id, timing and the
  pseudonyms. Pseudonyms are keyed hashes: without the federation key C cannot link them to an id or
  test a guess, but the same person asked twice gives the same pseudonym (C can link repeated
  requests for one subject). C never sees a plaintext value and holds no secret key: it cannot decrypt a
  party's response nor the sum. Neutral values are encrypted zeros, indistinguishable from real ones.
- *Contributor P*: that *someone* asked about these pseudonyms (it can tell which of them it knows), the
  model id and the queries; not who asked, not the result. P sees no other party's contribution.
- *Requester R*: per applicant, the sum of the other parties' partial logits (so with exactly one other
  contributor, that party's partial logit: inherent in a joint linear score), the number of members that
  list the applicant as fraud and the number that hold an active loan with it, never which ones.
- *An observer of the links*: sizes and timing (mutual TLS).

Not covered: a malicious contributor can send wrong values (it could also lie about its data); R could
ask about arbitrary pseudonyms it computed from guessed ids (rate limits and the audit log at every
party are the control, plus the lender role check at C).

Key handling: R makes a fresh CKKS key pair (:class:`KeyRing`) and rotates it on a schedule; contexts
are cached by fingerprint at C and at each P (bounded LRU), so a steady stream of requests sends only
the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from fedcore.crypto.he import (
    SUMS,
    CkksParams,
    CkksPublicContext,
    CkksSecretContext,
    EncryptedVector,
    add,
    decrypt_vector,
    encrypt_vector,
)
from fedcore.errors import (
    ContextUnknown,
    DeadlineExceeded,
    FedcreditError,
    InvalidInput,
    NotFound,
    PartyTaskError,
    PartyUnavailable,
    PermissionDenied,
    ProtocolError,
)
from fedcore.protocol.channel import PartyChannel, TaskHandle
from fedcore.protocol.messages import JSONValue, Role, Task, TaskReply
from fedcore.protocol.tasks import HandlerRegistry, TaskContext

log = logging.getLogger(__name__)

CONTRIBUTE = "scoring.contribute"
QUERIES = ("score", "blacklist", "loans")
PSEUDONYM_BYTES = 16
DEFAULT_MAX_BATCH = 1 << 17  # pseudonyms per coordinator request (the requester chunks bigger files)
CONTEXT_CACHE = 16
# N=4096 with one 60-bit data prime and a 49-bit special prime (109 bits: the 128-bit bound for N=4096),
# scale 2^40: additions only, no Galois/relin keys. Half the ciphertext size (64 KiB per 2048 values) and
# half the encryption time of SUMS (N=8192); per value the cost is the same, per small request it halves.
SCORING_CKKS = CkksParams("scoring", 4096, (60, 49), 40)
ALLOWED_PARAMS = (SCORING_CKKS, SUMS)
_REQ_MAGIC = b"FCSQ"
_REQ_HEADER = struct.Struct(">4sBI")


class ModelVersionMismatch(InvalidInput):
    """A party holds another version of the model than the request names."""


# ---- model slices ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSlice:
    """One party's slice of a joint logistic model (``HOME/models/<model_id>/slice.json``)."""

    model_id: str
    version: str
    party: str
    dataset: str
    features: tuple[str, ...]
    weights: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    intercept: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, JSONValue], source: str = "<slice>") -> ModelSlice:
        try:
            if d.get("kind", "joint-logistic") != "joint-logistic":
                raise InvalidInput(f"{source}: model kind {d.get('kind')!r} is not joint-logistic")
            feats = tuple(str(f) for f in d["features"])
            w = np.asarray(d["weights"], dtype=np.float64)
            mean = np.asarray(d["scaler"]["mean"], dtype=np.float64)
            std = np.asarray(d["scaler"]["std"], dtype=np.float64)
            intercept = d.get("intercept")
            sl = cls(
                model_id=str(d["model_id"]),
                version=str(d["version"]),
                party=str(d.get("party", "")),
                dataset=str(d["dataset"]),
                features=feats,
                weights=w,
                mean=mean,
                std=np.where(std > 0, std, 1.0),
                intercept=None if intercept is None else float(intercept),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"{source}: not a valid model slice ({exc})") from None
        if not (len(feats) == w.shape[0] == mean.shape[0] == std.shape[0]) or w.ndim != 1:
            raise InvalidInput(f"{source}: features, weights and scaler differ in length")
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            raise InvalidInput(f"{source}: weights and scaler must be finite")
        return sl

    @classmethod
    def load(cls, models_dir: Path, model_id: str) -> ModelSlice:
        path = models_dir / model_id / "slice.json"
        if not path.is_file():
            raise NotFound(f"model {model_id!r} has no slice at this party ({path})")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{path}: cannot read model slice ({exc})") from None
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict[str, JSONValue]:
        d: dict[str, JSONValue] = {
            "model_id": self.model_id,
            "version": self.version,
            "party": self.party,
            "kind": "joint-logistic",
            "dataset": self.dataset,
            "features": list(self.features),
            "weights": self.weights.tolist(),
            "scaler": {"mean": self.mean.tolist(), "std": self.std.tolist()},
        }
        if self.intercept is not None:
            d["intercept"] = self.intercept
        return d

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per-feature logit contributions ``w * (x - mean) / std`` (rows: subjects)."""
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.std * self.weights

    def partial_logit(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.contributions(x).sum(axis=1), dtype=np.float64)


def pack_pseudonyms(pseudonyms: Sequence[bytes]) -> bytes:
    for i, p in enumerate(pseudonyms):
        if len(p) != PSEUDONYM_BYTES:
            raise InvalidInput(f"pseudonym {i} is {len(p)} bytes, expected {PSEUDONYM_BYTES}")
    return b"".join(pseudonyms)


def pseudonym_array(packed: bytes) -> np.ndarray:
    """Packed pseudonyms as a numpy ``S16`` array (no copy)."""
    if len(packed) % PSEUDONYM_BYTES:
        raise ProtocolError(f"pseudonym block of {len(packed)} bytes is not a multiple of {PSEUDONYM_BYTES}")
    return np.frombuffer(packed, dtype=f"S{PSEUDONYM_BYTES}")


def _digest(packed: bytes) -> str:
    return hashlib.sha256(packed).hexdigest()


def check_queries(queries: Sequence[str]) -> tuple[str, ...]:
    qs = tuple(str(q) for q in queries)
    if not qs or len(set(qs)) != len(qs) or any(q not in QUERIES for q in qs):
        raise InvalidInput(f"queries must be distinct values of {', '.join(QUERIES)}, got {list(qs)}")
    return qs


# ---- contributor side ---------------------------------------------------------------------------


class ContributionSource(Protocol):
    """A contributor's data as the protocol needs it. Every method returns one value per pseudonym,
    0.0 for subjects it does not know or that did not consent to the purpose."""

    def model_version(self, model_id: str) -> str: ...

    def partial_logits(self, model_id: str, pseudonyms: np.ndarray) -> np.ndarray: ...

    def fraud_flags(self, pseudonyms: np.ndarray) -> np.ndarray: ...

    def loan_flags(self, pseudonyms: np.ndarray) -> np.ndarray: ...


class AuditSink(Protocol):
    def append(self, event: str, fields: Mapping[str, JSONValue]) -> object: ...


def _prefix64(keys: np.ndarray) -> np.ndarray:
    """The first 8 bytes of ``S16`` pseudonyms as big-endian uint64 (sorts like the bytes)."""
    raw = np.ascontiguousarray(keys, dtype="S16").view(np.uint8).reshape(-1, PSEUDONYM_BYTES)[:, :8]
    return np.ascontiguousarray(raw).view(">u8").ravel().astype(np.uint64)


class SortedTable:
    """pseudonym -> value with vectorized lookups: ``searchsorted`` on the first 8 bytes as uint64, then
    a full 16-byte comparison (two pseudonyms sharing 64 bits, probability ~n^2/2^65, make the second one
    look unknown, i.e. neutral)."""

    def __init__(self, pseudonyms: Sequence[bytes] | np.ndarray, values: np.ndarray | None = None) -> None:
        keys = np.asarray(list(pseudonyms) if not isinstance(pseudonyms, np.ndarray) else pseudonyms, dtype="S16")
        vals = np.ones(len(keys)) if values is None else np.asarray(values, dtype=np.float64)
        if len(vals) != len(keys):
            raise InvalidInput(f"{len(keys)} pseudonyms but {len(vals)} values")
        prefix = _prefix64(keys) if len(keys) else np.zeros(0, dtype=np.uint64)
        order = np.argsort(prefix, kind="stable")
        self.keys = keys[order]
        self.prefix = prefix[order]
        self.values = vals[order]
        self._index = pd.Index(self.prefix)
        self._unique = bool(self._index.is_unique)

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, query: np.ndarray) -> np.ndarray:
        """One value per pseudonym of ``query`` (``S16``); 0.0 where the pseudonym is not in the table."""
        out = np.zeros(len(query), dtype=np.float64)
        if len(self.keys) == 0 or len(query) == 0:
            return out
        q = np.asarray(query, dtype="S16")
        qp = _prefix64(q)
        if self._unique:  # a hash table over the prefixes (pandas): ~4x faster than searchsorted at 1M
            pos = self._index.get_indexer(qp)
            found = pos >= 0
            pos = np.where(found, pos, 0)
        else:
            pos = np.minimum(np.searchsorted(self.prefix, qp), len(self.keys) - 1)
            found = np.ones(len(q), dtype=bool)
        hit = found & (self.keys[pos] == q)
        out[hit] = self.values[pos[hit]]
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


def pack_task_payload(pseudonyms: bytes, context: bytes | None) -> bytes:
    """``b"FCSQ" | u8 version=1 | u32 context length (0: cached) | context | pseudonyms (16 B each)``."""
    ctx = context or b""
    return _REQ_HEADER.pack(_REQ_MAGIC, 1, len(ctx)) + ctx + pseudonyms


def unpack_task_payload(data: bytes) -> tuple[bytes | None, bytes]:
    if len(data) < _REQ_HEADER.size:
        raise ProtocolError("scoring request payload is truncated")
    magic, version, ctx_len = _REQ_HEADER.unpack_from(data, 0)
    if magic != _REQ_MAGIC or version != 1:
        raise ProtocolError("not a fedcredit scoring request payload")
    start = _REQ_HEADER.size
    if start + ctx_len > len(data):
        raise ProtocolError("scoring request payload is truncated inside the context")
    ctx = data[start : start + ctx_len] if ctx_len else None
    return ctx, data[start + ctx_len :]


class ContextCache:
    """Bounded LRU of parsed public contexts by fingerprint (thread-safe)."""

    def __init__(self, size: int = CONTEXT_CACHE) -> None:
        self._size = size
        self._items: OrderedDict[str, CkksPublicContext] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, fingerprint: str) -> CkksPublicContext | None:
        with self._lock:
            ctx = self._items.get(fingerprint)
            if ctx is not None:
                self._items.move_to_end(fingerprint)
            return ctx

    def put(self, data: bytes, fingerprint: str | None = None) -> CkksPublicContext:
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

    def resolve(self, fingerprint: str, data: bytes | None) -> CkksPublicContext:
        if data:
            return self.get(fingerprint) or self.put(data, fingerprint)
        ctx = self.get(fingerprint)
        if ctx is None:
            raise ContextUnknown(fingerprint)
        return ctx


class ScoringParty:
    """The contributor's handler for :data:`CONTRIBUTE`. ``audit`` records every request."""

    def __init__(self, source: ContributionSource, audit: AuditSink | None = None) -> None:
        self._source = source
        self._audit = audit
        self._contexts = ContextCache()

    def register(self, registry: HandlerRegistry) -> None:
        registry.register(CONTRIBUTE, self._contribute)

    def _contribute(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        queries = check_queries(params.get("queries") or [])  # type: ignore[arg-type]
        model_id = str(params.get("model_id", ""))
        version = str(params.get("model_version", ""))
        fp = str(params.get("fingerprint", ""))
        n = int(params.get("n", -1))
        context, packed = unpack_task_payload(ctx.read_payload())
        pseudos = pseudonym_array(packed)
        if len(pseudos) != n:
            raise ProtocolError(f"request announced {n} pseudonyms, payload holds {len(pseudos)}")
        record: dict[str, JSONValue] = {
            "request_id": str(params.get("request_id", "")),
            "model_id": model_id,
            "model_version": version,
            "queries": list(queries),
            "n": n,
            "pseudonyms_sha256": _digest(packed),
        }
        try:
            pub = self._contexts.resolve(fp, context)
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
            values = np.concatenate(parts) if parts else np.zeros(0)
            enc = encrypt_vector(pub, values) if len(values) else None
        except FedcreditError as exc:
            self._log("score_contribution", {**record, "outcome": exc.code})
            raise
        self._log("score_contribution", {**record, "outcome": "ok"})
        data = enc.to_bytes() if enc is not None else b""
        return TaskReply({"n": n}, [data] if data else None)

    def _log(self, event: str, fields: Mapping[str, JSONValue]) -> None:
        if self._audit is not None:
            self._audit.append(event, fields)


# ---- coordinator side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class JointRequest:
    """What the requester sends the coordinator."""

    model_id: str
    model_version: str
    queries: tuple[str, ...]
    pseudonyms: bytes  # n x 16 bytes
    fingerprint: str
    public_context: bytes | None = None  # None: the coordinator should have it cached
    allow_partial: bool = False
    timeout_s: float = 30.0

    @property
    def n(self) -> int:
        return len(self.pseudonyms) // PSEUDONYM_BYTES


@dataclass(frozen=True)
class JointResponse:
    """What the coordinator returns: the sum of the contributors' ciphertexts (None if none answered)."""

    request_id: str
    n: int
    queries: tuple[str, ...]
    ciphertext: bytes | None
    contributors: int
    missing: tuple[str, ...] = ()


class ScoringCoordinator:
    """The coordinator's fan-out: validate, ask every other party, sum ciphertexts. Holds no key."""

    def __init__(
        self,
        channel: PartyChannel,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        requester_roles: frozenset[Role] = frozenset({Role.LENDER}),
    ) -> None:
        self._channel = channel
        self.max_batch = max_batch
        self.requester_roles = requester_roles
        self._contexts = ContextCache(64)
        self._sent: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def _role_of(self, name: str) -> Role | None:
        for p in self._channel.parties():
            if p.name == name:
                return p.role
        return None

    def score(self, requester: str, req: JointRequest) -> JointResponse:
        queries = check_queries(req.queries)
        if len(req.pseudonyms) % PSEUDONYM_BYTES:
            raise InvalidInput(f"pseudonyms must be {PSEUDONYM_BYTES} bytes each")
        n = req.n
        if n == 0:
            raise InvalidInput("a scoring request needs at least one pseudonym")
        if n > self.max_batch:
            raise InvalidInput(f"batch of {n} applicants is over the limit of {self.max_batch} per request")
        if not (0 < req.timeout_s <= 3600):
            raise InvalidInput("timeout_s must be in (0, 3600]")
        role = self._role_of(requester)
        if role not in self.requester_roles:
            raise PermissionDenied(f"{requester!r} ({role}) may not request joint scores")
        pub = self._contexts.resolve(req.fingerprint, req.public_context)
        request_id = secrets.token_hex(8)
        others = [p for p in self._channel.parties() if p.name != requester]
        missing = [p.name for p in others if not p.online]
        if missing and not req.allow_partial:
            raise PartyUnavailable(missing[0], "offline; the request did not allow a partial score")
        params: dict[str, JSONValue] = {
            "request_id": request_id,
            "model_id": req.model_id,
            "model_version": req.model_version,
            "queries": list(queries),
            "n": n,
            "fingerprint": pub.fingerprint(),
        }
        deadline = time.monotonic() + req.timeout_s
        handles: dict[str, TaskHandle] = {}
        for p in others:
            if p.online:
                try:
                    handles[p.name] = self._submit(p.name, params, req.pseudonyms, pub, deadline, resend=False)
                except PartyUnavailable:
                    if not req.allow_partial:
                        self._cancel(handles)
                        raise
                    missing.append(p.name)
        vectors: list[EncryptedVector] = []
        length = n * len(queries)
        try:
            for name, handle in handles.items():
                try:
                    data = self._result(name, handle, params, req.pseudonyms, pub, deadline)
                except (PartyUnavailable, DeadlineExceeded):
                    if not req.allow_partial:
                        raise
                    missing.append(name)
                    continue
                vec = EncryptedVector.from_bytes(pub, data, max_length=length)
                if vec.length != length:
                    raise ProtocolError(f"party {name!r} sent {vec.length} values, expected {length}")
                vectors.append(vec)
        except BaseException:
            self._cancel(handles)
            raise
        total = add(vectors).to_bytes() if vectors else None
        log.info(
            "scoring request %s from %s: n=%d queries=%s contributors=%d missing=%s",
            request_id,
            requester,
            n,
            ",".join(queries),
            len(vectors),
            ",".join(missing) or "-",
        )
        return JointResponse(request_id, n, queries, total, len(vectors), tuple(sorted(missing)))

    def _submit(
        self,
        party: str,
        params: Mapping[str, JSONValue],
        pseudonyms: bytes,
        pub: CkksPublicContext,
        deadline: float,
        *,
        resend: bool,
    ) -> TaskHandle:
        fp = pub.fingerprint()
        with self._lock:
            known = fp in self._sent.setdefault(party, set())
        send_ctx = resend or not known
        payload = pack_task_payload(pseudonyms, pub.serialize() if send_ctx else None)
        timeout = max(0.05, deadline - time.monotonic())
        handle = self._channel.submit(party, Task(CONTRIBUTE, dict(params), params["request_id"], timeout, [payload]))
        if send_ctx:
            with self._lock:
                self._sent[party].add(fp)
        return handle

    def _result(
        self,
        name: str,
        handle: TaskHandle,
        params: Mapping[str, JSONValue],
        pseudonyms: bytes,
        pub: CkksPublicContext,
        deadline: float,
    ) -> bytes:
        try:
            return handle.result(timeout=max(0.01, deadline - time.monotonic())).read_payload()
        except PartyTaskError as exc:
            if exc.kind != ContextUnknown.code:
                raise
        # the party lost its cached context (restarted): send it once more, with the context
        with self._lock:
            self._sent.get(name, set()).discard(pub.fingerprint())
        handle = self._submit(name, params, pseudonyms, pub, deadline, resend=True)
        return handle.result(timeout=max(0.01, deadline - time.monotonic())).read_payload()

    @staticmethod
    def _cancel(handles: Mapping[str, TaskHandle]) -> None:
        for h in handles.values():
            h.cancel("scoring request failed")


# ---- requester side -----------------------------------------------------------------------------


class Gateway(Protocol):
    """How a requester reaches the coordinator's fan-out (in process, or the ``Scoring/Score`` RPC)."""

    def joint(self, request: JointRequest) -> JointResponse: ...


@dataclass
class LocalGateway:
    """In-process gateway: the requester's name is given (over gRPC it comes from the mTLS cert)."""

    coordinator: ScoringCoordinator
    requester: str

    def joint(self, request: JointRequest) -> JointResponse:
        return self.coordinator.score(self.requester, request)


class KeyRing:
    """The requester's CKKS key pair, regenerated every ``rotate_s`` seconds (``clock`` injectable)."""

    def __init__(
        self,
        rotate_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        params: CkksParams = SCORING_CKKS,
    ) -> None:
        if params not in ALLOWED_PARAMS:
            raise InvalidInput(f"scoring keys use one of {[p.name for p in ALLOWED_PARAMS]}")
        self.params = params
        if rotate_s <= 0:
            raise InvalidInput("key rotation interval must be > 0 s")
        self.rotate_s = rotate_s
        self._clock = clock
        self._lock = threading.Lock()
        self._key: CkksSecretContext | None = None
        self._born = 0.0
        self.rotations = 0

    def current(self) -> CkksSecretContext:
        with self._lock:
            now = self._clock()
            if self._key is None or now - self._born >= self.rotate_s:
                self._key = CkksSecretContext.generate(self.params)
                self._born = now
                self.rotations += 1
            return self._key


@dataclass(frozen=True)
class JointOutcome:
    """Decrypted results for one request, one value per pseudonym (None for queries not asked)."""

    request_id: str
    external_logit: np.ndarray | None
    blacklist_hits: np.ndarray | None
    active_loans: np.ndarray | None
    contributors: int
    missing: tuple[str, ...] = ()
    model_version: str = ""
    extra: dict[str, JSONValue] = field(default_factory=dict)


class Requester:
    """The requester's side: encrypt nothing, send pseudonyms + public context, decrypt the sum."""

    def __init__(self, gateway: Gateway, keys: KeyRing | None = None) -> None:
        self._gateway = gateway
        self.keys = keys or KeyRing()
        self._announced: set[str] = set()
        self._lock = threading.Lock()

    def query(
        self,
        pseudonyms: Sequence[bytes] | bytes,
        *,
        model_id: str,
        model_version: str,
        queries: Sequence[str] = ("score",),
        allow_partial: bool = False,
        timeout_s: float = 30.0,
    ) -> JointOutcome:
        qs = check_queries(queries)
        packed = pseudonyms if isinstance(pseudonyms, bytes) else pack_pseudonyms(pseudonyms)
        key = self.keys.current()
        fp = key.fingerprint()
        with self._lock:
            first = fp not in self._announced
        req = JointRequest(
            model_id,
            model_version,
            qs,
            packed,
            fp,
            key.public_context().serialize() if first else None,
            allow_partial,
            timeout_s,
        )
        try:
            resp = self._gateway.joint(req)
        except ContextUnknown:
            resp = self._gateway.joint(
                JointRequest(
                    model_id, model_version, qs, packed, fp, key.public_context().serialize(), allow_partial, timeout_s
                )
            )
        with self._lock:
            self._announced.add(fp)
        n = len(packed) // PSEUDONYM_BYTES
        if resp.n != n or resp.queries != qs:
            raise ProtocolError("the coordinator's answer does not match the request")
        if resp.ciphertext is None:
            values = np.zeros(n * len(qs))
        else:
            vec = EncryptedVector.from_bytes(key, resp.ciphertext, max_length=n * len(qs))
            if vec.length != n * len(qs):
                raise ProtocolError("the coordinator's answer has the wrong length")
            values = decrypt_vector(key, vec)
        out: dict[str, np.ndarray] = {q: values[i * n : (i + 1) * n] for i, q in enumerate(qs)}

        def counts(q: str) -> np.ndarray | None:
            v = out.get(q)
            return None if v is None else np.clip(np.rint(v), 0, None).astype(np.int64)

        return JointOutcome(
            resp.request_id,
            out.get("score"),
            counts("blacklist"),
            counts("loans"),
            resp.contributors,
            resp.missing,
            model_version,
        )


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))


__all__ = [
    "CONTRIBUTE",
    "QUERIES",
    "ArrayContributions",
    "ContextUnknown",
    "Gateway",
    "JointOutcome",
    "JointRequest",
    "JointResponse",
    "KeyRing",
    "LocalGateway",
    "ModelSlice",
    "ModelVersionMismatch",
    "Requester",
    "ScoringCoordinator",
    "ScoringParty",
    "SortedTable",
    "sigmoid",
]
