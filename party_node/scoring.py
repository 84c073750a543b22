"""Joint scoring at a party node: the contributor's handlers, the requester's scoring service and the
local scoring API (gRPC ``LocalScoring`` and JSON over HTTP) for the lender's loan-origination system.

Contributor side (every party): :func:`register_scoring_handlers` adds the ``scoring.contribute``
handler backed by the local store (:class:`StoreContributions`): partial logits of subjects with
``scoring`` consent under the party's model slice (``HOME/models/<model_id>/slice.json``), fraud flags of
subjects with ``blacklist`` consent, active-loan flags of subjects with ``scoring`` consent; 0 for
everyone else. Every request is written to the party's audit log (:mod:`party_node.audit`).

Requester side (a lender): :class:`ScoringService` takes raw applicant ids (and optionally the lender's
own application features), pseudonymizes them with the federation key, asks the coordinator through a
:class:`~fedcore.protocol.scoring.Gateway` (:class:`GrpcGateway` in production), decrypts the consortium's
sum and returns probability of default, scorecard points, reason codes, the model version, the blacklist
hit count, the multi-lending count and a pre-approval decision from configurable bands. Raw ids and the
lender's features never leave the node; what the others learn is in :mod:`fedcore.protocol.scoring`.

The local API listens on loopback by default (it takes raw personal ids: never expose it beyond the
lender's own network without TLS in front).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from fedcredit.v1 import scoring_pb2, scoring_pb2_grpc

from fedcore.coalesce import Coalescer
from fedcore.errors import FedcreditError, InvalidInput, NotFound
from fedcore.grpc_options import CLIENT_OPTIONS, SERVER_OPTIONS, secure_target_options
from fedcore.protocol.messages import JSONValue
from fedcore.protocol.scoring import (
    QUERIES,
    Gateway,
    JointOutcome,
    JointRequest,
    JointResponse,
    KeyRing,
    ModelSlice,
    Requester,
    ScoringParty,
    SortedTable,
    check_queries,
    sigmoid,
)
from fedcore.protocol.tasks import HandlerRegistry
from fedcore.wire.errors import abort, from_rpc_error
from fedcore.wire.scoring import request_to_proto, response_from_chunks
from models.scorecard import Scorecard

from .audit import AuditLog
from .schema import IdKind, normalize_ids
from .store import Store

log = logging.getLogger(__name__)

EXTERNAL_REASON = "consortium_data"  # the one reason line for the other members' combined contribution


# ---- contributor side ------------------------------------------------------------------------------


class StoreContributions:
    """A :class:`~fedcore.protocol.scoring.ContributionSource` over the party's store, cached in memory
    (sorted pseudonym tables) and refreshed every ``refresh_s`` seconds or when a slice file changes."""

    def __init__(self, store: Store, models_dir: Path, refresh_s: float = 300.0) -> None:
        self._store = store
        self._models_dir = models_dir
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._slices: dict[str, tuple[float, ModelSlice]] = {}
        self._scores: dict[str, tuple[float, float, SortedTable]] = {}  # model -> (built, slice mtime, table)
        self._flags: dict[str, tuple[float, SortedTable]] = {}

    def slice(self, model_id: str) -> ModelSlice:
        path = self._models_dir / model_id / "slice.json"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            raise NotFound(f"model {model_id!r} has no slice at this party") from None
        with self._lock:
            hit = self._slices.get(model_id)
            if hit is not None and hit[0] == mtime:
                return hit[1]
        sl = ModelSlice.load(self._models_dir, model_id)
        with self._lock:
            self._slices[model_id] = (mtime, sl)
        return sl

    def model_version(self, model_id: str) -> str:
        return self.slice(model_id).version

    def _pseudonym_table(self, row_ids: np.ndarray, values: np.ndarray | None = None) -> SortedTable:
        ps = self._store.pseudonyms(row_ids)
        keep = np.array([p is not None for p in ps], dtype=bool)
        keys = [p for p in ps if p is not None]
        return SortedTable(keys, None if values is None else values[keep])

    def partial_logits(self, model_id: str, pseudonyms: np.ndarray) -> np.ndarray:
        sl = self.slice(model_id)
        mtime = self._slices[model_id][0]
        now = time.monotonic()
        with self._lock:
            hit = self._scores.get(model_id)
        if hit is None or hit[1] != mtime or now - hit[0] > self._refresh_s:
            rids, ps = self._store.all_pseudonyms(purpose="scoring")
            xr, x = self._store.feature_matrix(sl.dataset, list(sl.features), purpose="scoring")
            pos = np.searchsorted(rids, xr)
            pos = np.minimum(pos, max(len(rids) - 1, 0))
            ok = (rids[pos] == xr) if len(rids) else np.zeros(len(xr), dtype=bool)
            keys = [ps[i] for i in pos[ok]]
            table = SortedTable(keys, sl.partial_logit(x[ok]) if ok.any() else np.zeros(0))
            hit = (now, mtime, table)
            with self._lock:
                self._scores[model_id] = hit
        return hit[2].lookup(pseudonyms)

    def _flag_table(self, name: str) -> SortedTable:
        now = time.monotonic()
        with self._lock:
            hit = self._flags.get(name)
        if hit is None or now - hit[0] > self._refresh_s:
            if name == "fraud":
                rows = np.intersect1d(self._store.fraud_ids(), self._store.ids_with_consent("blacklist"))
            else:
                rows = self._store.active_loan_ids(purpose="scoring")
            hit = (now, self._pseudonym_table(rows))
            with self._lock:
                self._flags[name] = hit
        return hit[1]

    def fraud_flags(self, pseudonyms: np.ndarray) -> np.ndarray:
        return self._flag_table("fraud").lookup(pseudonyms)

    def loan_flags(self, pseudonyms: np.ndarray) -> np.ndarray:
        return self._flag_table("loans").lookup(pseudonyms)


def register_scoring_handlers(
    registry: HandlerRegistry, store: Store, home: Path, audit: AuditLog | None = None
) -> ScoringParty:
    """Add the contributor's ``scoring.contribute`` handler (audit log at ``HOME/audit/scoring.log``)."""
    party = ScoringParty(StoreContributions(store, home / "models"), audit or AuditLog.for_home(home))
    party.register(registry)
    return party


# ---- requester side: gateway to the coordinator ------------------------------------------------------


class GrpcGateway:
    """Calls the coordinator's ``Scoring/Score`` with the party's mTLS certificate."""

    def __init__(self, address: str, server_name: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
        creds = grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem)
        options = [*CLIENT_OPTIONS, *secure_target_options(server_name)]
        self._channel = grpc.secure_channel(address, creds, options=options)
        self._stub = scoring_pb2_grpc.ScoringStub(self._channel)

    def joint(self, request: JointRequest) -> JointResponse:
        try:
            chunks = self._stub.Score(request_to_proto(request), timeout=request.timeout_s + 5.0)
            return response_from_chunks(iter(chunks))
        except grpc.RpcError as err:
            raise from_rpc_error(err, "joint scoring request") from None

    def close(self) -> None:
        self._channel.close()


# ---- requester side: the scoring service --------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """Scores of at least ``min_points`` get ``decision`` at ``rate_tier`` (bands checked high to low)."""

    min_points: float
    decision: str  # approve | review | decline
    rate_tier: str


DEFAULT_BANDS = (
    Band(680.0, "approve", "A"),
    Band(640.0, "approve", "B"),
    Band(600.0, "review", "C"),
    Band(-math.inf, "decline", "-"),
)


@dataclass
class ScoringSettings:
    """The requester's knobs (configurable per node)."""

    model_id: str = "joint"
    id_kind: str = IdKind.PHONE.value
    base_score: float = 600.0
    base_odds: float = 50.0
    pdo: float = 20.0
    bands: tuple[Band, ...] = DEFAULT_BANDS
    decline_if_blacklisted: bool = True
    max_request: int = 10_000  # applicants per API call (the batch file path chunks without limit)
    chunk: int = 16_384  # applicants per coordinator request in a batch
    batch_parallel: int = 2  # coordinator requests in flight during a batch
    coalesce: bool = True  # merge concurrent small API requests into one coordinator request
    # Coordinator requests in flight from coalesced API calls. One is fastest here: while it runs, the
    # next calls pile up into one bigger request (measured on 2 cores: 240 req/s with 1, 176 with 2).
    coalesce_inflight: int = 1
    timeout_s: float = 30.0
    allow_partial: bool = False
    reason_top_k: int = 4
    key_rotate_s: float = 3600.0
    grpc_listen: str = "127.0.0.1:7601"  # the local API (empty: off)
    http_listen: str = "127.0.0.1:7602"  # JSON over HTTP (empty: off)

    def __post_init__(self) -> None:
        decisions = {"approve", "review", "decline"}
        if not self.bands or any(b.decision not in decisions for b in self.bands):
            raise InvalidInput(f"score bands need decisions among {sorted(decisions)}")
        self.bands = tuple(sorted(self.bands, key=lambda b: -b.min_points))
        if self.bands[-1].min_points != -math.inf:
            self.bands = (*self.bands, Band(-math.inf, "decline", "-"))
        if self.max_request < 1 or self.chunk < 1 or self.coalesce_inflight < 1:
            raise InvalidInput("max_request, chunk and coalesce_inflight must be positive")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> ScoringSettings:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = set(d) - set(known)
        if unknown:
            raise InvalidInput(f"unknown scoring settings {sorted(unknown)}")
        if "bands" in known:
            known["bands"] = tuple(
                Band(float(b.get("min_points", -math.inf)), str(b["decision"]), str(b.get("rate_tier", "-")))
                for b in known["bands"]
            )
        return cls(**known)


@dataclass(frozen=True)
class Applicant:
    id: str
    id_kind: str = ""
    features: Mapping[str, float] | None = None


@dataclass(frozen=True)
class ApplicantTable:
    """Applicants column-wise (batch files): one id kind, the lender's features as a matrix in the model
    slice's feature order (``None``: look every applicant up in the store)."""

    ids: list[str]
    id_kind: str = ""
    x: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def chunks(self, size: int) -> Iterator[ApplicantTable]:
        for i in range(0, len(self.ids), size):
            yield ApplicantTable(self.ids[i : i + size], self.id_kind, None if self.x is None else self.x[i : i + size])


@dataclass
class ScoredBatch:
    """Results of a batch, column-wise (cheap for millions); :meth:`row` gives one applicant as a dict."""

    ids: list[str]
    status: np.ndarray  # "ok" | "invalid_id"
    prob_default: np.ndarray
    points: np.ndarray
    prob_default_own_only: np.ndarray
    external_logit: np.ndarray
    own_data: np.ndarray
    reason_index: np.ndarray  # n x k indices into features (-1: none)
    reason_impact: np.ndarray  # n x k
    decision: np.ndarray
    rate_tier: np.ndarray
    blacklist_hits: np.ndarray  # -1 when not asked
    active_loans: np.ndarray  # -1 when not asked
    features: tuple[str, ...]
    model_id: str
    model_version: str
    request_ids: list[str] = field(default_factory=list)
    missing: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, i: int) -> dict[str, JSONValue]:
        ok = self.status[i] == "ok"
        reasons: list[dict[str, JSONValue]] = []
        if ok:
            for j, v in zip(self.reason_index[i], self.reason_impact[i], strict=True):
                if j >= 0:
                    reasons.append({"feature": self.features[int(j)], "logit_impact": round(float(v), 6)})
            reasons.append({"feature": EXTERNAL_REASON, "logit_impact": round(float(self.external_logit[i]), 6)})
        return {
            "id": self.ids[i],
            "status": str(self.status[i]),
            "prob_default": float(self.prob_default[i]) if ok else None,
            "points": round(float(self.points[i]), 2) if ok else None,
            "prob_default_own_only": float(self.prob_default_own_only[i]) if ok else None,
            "external_logit": float(self.external_logit[i]) if ok else None,
            "own_data": bool(self.own_data[i]),
            "reasons": reasons,
            "decision": str(self.decision[i]) if ok else None,
            "rate_tier": str(self.rate_tier[i]) if ok else None,
            "blacklist_hits": int(self.blacklist_hits[i]),
            "active_loans_elsewhere": int(self.active_loans[i]),
            "partial": bool(self.missing),
            "missing_parties": list(self.missing),
            "model_id": self.model_id,
            "model_version": self.model_version,
            "request_id": ",".join(self.request_ids),
        }

    def rows(self) -> Iterator[dict[str, JSONValue]]:
        return (self.row(i) for i in range(len(self)))

    def slice(self, a: int, b: int) -> ScoredBatch:
        """Applicants ``a:b`` (a caller's share of a coalesced request)."""
        return ScoredBatch(
            self.ids[a:b],
            self.status[a:b],
            self.prob_default[a:b],
            self.points[a:b],
            self.prob_default_own_only[a:b],
            self.external_logit[a:b],
            self.own_data[a:b],
            self.reason_index[a:b],
            self.reason_impact[a:b],
            self.decision[a:b],
            self.rate_tier[a:b],
            self.blacklist_hits[a:b],
            self.active_loans[a:b],
            self.features,
            self.model_id,
            self.model_version,
            list(self.request_ids),
            self.missing,
        )


def check_features(sl: ModelSlice, apps: Sequence[Applicant]) -> None:
    """Reject unknown feature names and non-finite values, naming the applicant (0-based) and feature."""
    names = set(sl.features)
    for i, a in enumerate(apps):
        if not a.features:
            continue
        unknown = set(a.features) - names
        if unknown:
            raise InvalidInput(f"applicant {i}: unknown features {sorted(unknown)} for model {sl.model_id!r}")
        for f, v in a.features.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
                raise InvalidInput(f"applicant {i}: feature {f!r} is not a finite number")


COALESCE_MAX_APPLICANTS = 64  # API calls up to this size may be merged with concurrent ones
COALESCE_MAX_MERGED = 4096


def _cut_batch(res: ScoredBatch, start: int, stop: int) -> ScoredBatch:
    """One caller's part of a coalesced batch; a malformed id fails only its own caller."""
    part = res.slice(start, stop)
    bad = [i for i, st in enumerate(part.status) if st != "ok"]
    if bad:
        shown = ", ".join(f"#{i}" for i in bad[:5])
        raise InvalidInput(f"{len(bad)} malformed applicant id(s): {shown}")
    return part


class ScoringService:
    """The lender's scoring entry point (used by the local gRPC/HTTP API and the CLI)."""

    def __init__(
        self,
        store: Store,
        home: Path,
        gateway: Gateway,
        settings: ScoringSettings | None = None,
        audit: AuditLog | None = None,
        keys: KeyRing | None = None,
    ) -> None:
        self.store = store
        self.home = home
        self.settings = settings or ScoringSettings()
        self.audit = audit or AuditLog.for_home(home)
        base = Requester(gateway, keys or KeyRing(self.settings.key_rotate_s))
        self.requester = base
        self._coalescer: Coalescer[tuple[Any, ...], Applicant, ScoredBatch] | None = None
        if self.settings.coalesce:  # concurrent small calls with the same options leave as one chunk
            self._coalescer = Coalescer(self._score_coalesced, _cut_batch, max_merged=COALESCE_MAX_MERGED,
                                        inflight=self.settings.coalesce_inflight, name="score-coalesce")
        self.scorecard = Scorecard(self.settings.base_score, self.settings.base_odds, self.settings.pdo)
        self._own = StoreContributions(store, home / "models")
        self._own_cache: dict[str, tuple[float, np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def model(self, model_id: str | None = None) -> ModelSlice:
        sl = self._own.slice(model_id or self.settings.model_id)
        if sl.intercept is None:
            raise InvalidInput(f"model {sl.model_id!r}: this party's slice has no intercept (not the label holder)")
        return sl

    # -- own features

    def _own_matrix(self, sl: ModelSlice) -> tuple[np.ndarray, np.ndarray]:
        now = time.monotonic()
        with self._lock:
            hit = self._own_cache.get(sl.model_id)
        if hit is None or now - hit[0] > 300:
            rids, x = self.store.feature_matrix(sl.dataset, list(sl.features), allow_local=True)
            hit = (now, rids, x)
            with self._lock:
                self._own_cache[sl.model_id] = hit
        return hit[1], hit[2]

    def _features(
        self, sl: ModelSlice, apps: Sequence[Applicant], kinds: Sequence[str], valid: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Own features per applicant: given ones, else the store's row, else the mean (``have`` False).
        Applicants not ``valid`` (malformed ids) are not looked up."""
        n, k = len(apps), len(sl.features)
        x = np.tile(sl.mean, (n, 1))  # neutral: the population mean
        have = np.zeros(n, dtype=bool)
        need: list[int] = []
        check_features(sl, apps)
        for i, a in enumerate(apps):
            if a.features:
                for j, f in enumerate(sl.features):
                    if f in a.features:
                        x[i, j] = float(a.features[f])
                have[i] = len(a.features) == k
                if not have[i] and (valid is None or valid[i]):
                    need.append(i)
            elif valid is None or valid[i]:
                need.append(i)
        if need:
            rids, mat = self._own_matrix(sl)
            by_kind: dict[str, list[int]] = {}
            for i in need:
                by_kind.setdefault(kinds[i], []).append(i)
            for kind, idx in by_kind.items():
                found = self.store.row_ids_for([apps[i].id for i in idx], kind)
                if len(rids) == 0:
                    continue
                pos = np.minimum(np.searchsorted(rids, found), len(rids) - 1)
                hit = (found >= 0) & (rids[pos] == found)
                for i, ok, p in zip(idx, hit, pos, strict=True):
                    if ok:
                        given = apps[i].features or {}
                        for j, f in enumerate(sl.features):
                            if f not in given:
                                x[i, j] = mat[p, j]
                        have[i] = True
        return x, have

    # -- scoring

    def score(
        self,
        applicants: Sequence[Applicant],
        *,
        model_id: str | None = None,
        model_version: str | None = None,
        queries: Sequence[str] = QUERIES,
        allow_partial: bool | None = None,
        on_invalid: str = "raise",
        caller: str = "local-api",
    ) -> ScoredBatch:
        """Score up to ``settings.max_request`` applicants in one coordinator request."""
        if not applicants:
            raise InvalidInput("no applicants to score")
        if len(applicants) > self.settings.max_request:
            raise InvalidInput(
                f"{len(applicants)} applicants is over the limit of {self.settings.max_request} per request"
                " (use batch scoring for files)"
            )
        if self._coalescer is not None and on_invalid == "raise" and len(applicants) <= COALESCE_MAX_APPLICANTS:
            sl = self.model(model_id)
            if model_version and model_version != sl.version:
                raise InvalidInput(
                    f"model {sl.model_id!r}: requested version {model_version!r}, this node holds {sl.version!r}"
                )
            check_features(sl, applicants)
            key = (model_id, model_version, check_queries(queries), allow_partial, caller)
            return self._coalescer.submit(applicants, key, self.settings.timeout_s + 30.0)
        return self._score_chunk(applicants, model_id, model_version, queries, allow_partial, on_invalid, caller)

    def _score_coalesced(self, key: tuple[Any, ...], merged: list[Applicant], callers: int) -> ScoredBatch:
        model_id, model_version, queries, allow_partial, caller = key
        label = caller if callers == 1 else f"{caller} (x{callers} coalesced)"
        return self._score_chunk(merged, model_id, model_version, queries, allow_partial, "skip", label)

    def score_stream(
        self,
        applicants: Iterable[Applicant],
        *,
        total: int | None = None,
        progress: Callable[[int, int | None], None] | None = None,
        **kw: Any,
    ) -> Iterator[ScoredBatch]:
        """Score any number of applicants in chunks of ``settings.chunk`` (``settings.batch_parallel``
        requests in flight); yields one :class:`ScoredBatch` per chunk, in input order."""

        def chunks() -> Iterator[list[Applicant]]:
            buf: list[Applicant] = []
            for a in applicants:
                buf.append(a)
                if len(buf) >= self.settings.chunk:
                    yield buf
                    buf = []
            if buf:
                yield buf

        return self._pipeline(chunks(), total, progress, kw)

    def score_table(
        self,
        table: ApplicantTable,
        *,
        progress: Callable[[int, int | None], None] | None = None,
        **kw: Any,
    ) -> Iterator[ScoredBatch]:
        """Score a column-wise batch (no per-applicant objects: the fast path for files of millions)."""
        return self._pipeline(table.chunks(self.settings.chunk), len(table), progress, kw)

    def _pipeline(
        self,
        chunks: Iterable[Sequence[Applicant] | ApplicantTable],
        total: int | None,
        progress: Callable[[int, int | None], None] | None,
        kw: dict[str, Any],
    ) -> Iterator[ScoredBatch]:
        kw.setdefault("on_invalid", "skip")
        kw.setdefault("caller", "batch")
        done = 0
        inflight: deque[futures.Future[ScoredBatch]] = deque()
        par = max(1, self.settings.batch_parallel)
        with futures.ThreadPoolExecutor(max_workers=par, thread_name_prefix="score-batch") as pool:
            try:
                for chunk in chunks:
                    inflight.append(pool.submit(self._score_chunk, chunk, **kw))
                    while len(inflight) >= par:
                        batch = inflight.popleft().result()
                        done += len(batch)
                        if progress:
                            progress(done, total)
                        yield batch
                while inflight:
                    batch = inflight.popleft().result()
                    done += len(batch)
                    if progress:
                        progress(done, total)
                    yield batch
            finally:
                for f in inflight:
                    f.cancel()

    def _score_chunk(
        self,
        applicants: Sequence[Applicant] | ApplicantTable,
        model_id: str | None = None,
        model_version: str | None = None,
        queries: Sequence[str] = QUERIES,
        allow_partial: bool | None = None,
        on_invalid: str = "raise",
        caller: str = "local-api",
    ) -> ScoredBatch:
        st = self.settings
        qs = check_queries(queries)
        sl = self.model(model_id)
        if model_version and model_version != sl.version:
            raise InvalidInput(
                f"model {sl.model_id!r}: requested version {model_version!r}, this node holds {sl.version!r}"
            )
        n = len(applicants)
        if isinstance(applicants, ApplicantTable):
            raw_ids = applicants.ids
            kinds = [applicants.id_kind or st.id_kind] * n
        else:
            raw_ids = [a.id for a in applicants]
            kinds = [a.id_kind or st.id_kind for a in applicants]
        norm: list[str | None] = [None] * n
        by_kind: dict[str, list[int]] = {}
        for i, kd in enumerate(kinds):
            by_kind.setdefault(kd, []).append(i)
        key = self.store.pseudonym_key
        if key is None:
            raise NotFound("no pseudonym key is installed at this node (run the key distribution first)")
        pseudos: list[bytes | None] = [None] * n
        for kd, idx in by_kind.items():
            try:
                IdKind(kd)
            except ValueError:
                raise InvalidInput(f"unknown id kind {kd!r} (phone, national_id or opaque)") from None
            vals = normalize_ids([raw_ids[i] for i in idx], kd)
            good = [(i, v) for i, v in zip(idx, vals, strict=True) if v is not None]
            for i, v in zip(idx, vals, strict=True):
                norm[i] = v
            for (i, _), p in zip(good, key.pseudonymize([v for _, v in good], kd), strict=True):
                pseudos[i] = p
        bad = [i for i in range(n) if norm[i] is None]
        if bad and on_invalid == "raise":
            shown = ", ".join(f"#{i} ({kinds[i]})" for i in bad[:5])
            raise InvalidInput(f"{len(bad)} malformed applicant id(s): {shown}")
        valid = np.array([norm[i] is not None for i in range(n)], dtype=bool)
        if isinstance(applicants, ApplicantTable) and applicants.x is not None:
            x = np.asarray(applicants.x, dtype=np.float64)
            if x.shape != (n, len(sl.features)) or not np.all(np.isfinite(x)):
                raise InvalidInput(f"feature matrix must be {n} x {len(sl.features)} finite numbers")
            have = np.ones(n, dtype=bool)
        else:
            apps = (
                [Applicant(i, applicants.id_kind) for i in applicants.ids]
                if isinstance(applicants, ApplicantTable)
                else applicants
            )
            x, have = self._features(sl, apps, kinds, valid)
        contrib = sl.contributions(x)
        own_logit = float(sl.intercept or 0.0) + contrib.sum(axis=1)
        ext = np.zeros(n)
        bl = np.full(n, -1, dtype=np.int64)
        loans = np.full(n, -1, dtype=np.int64)
        request_id = ""
        missing: tuple[str, ...] = ()
        vidx = np.flatnonzero(valid)
        record: dict[str, JSONValue] = {
            "caller": caller,
            "model_id": sl.model_id,
            "model_version": sl.version,
            "queries": list(qs),
            "n": len(vidx),
            "invalid": len(bad),
        }
        if len(vidx):
            packed = b"".join(pseudos[i] for i in vidx)  # type: ignore[misc]
            import hashlib

            record["pseudonyms_sha256"] = hashlib.sha256(packed).hexdigest()
            try:
                out: JointOutcome = self.requester.query(
                    packed,
                    model_id=sl.model_id,
                    model_version=sl.version,
                    queries=qs,
                    allow_partial=st.allow_partial if allow_partial is None else allow_partial,
                    timeout_s=st.timeout_s,
                )
            except FedcreditError as exc:
                self.audit.append("score_request", {**record, "outcome": exc.code})
                raise
            self.audit.append(
                "score_request",
                {
                    **record,
                    "outcome": "ok",
                    "request_id": out.request_id,
                    "contributors": out.contributors,
                    "missing": list(out.missing),
                },
            )
            request_id, missing = out.request_id, out.missing
            if out.external_logit is not None:
                ext[vidx] = out.external_logit
            if out.blacklist_hits is not None:
                bl[vidx] = out.blacklist_hits
            if out.active_loans is not None:
                loans[vidx] = out.active_loans
        z = own_logit + ext
        prob = sigmoid(z)
        points = np.asarray(self.scorecard.points_from_logit(z))
        k = min(st.reason_top_k, contrib.shape[1])
        order = np.argsort(-contrib, axis=1, kind="stable")[:, :k]
        impact = np.take_along_axis(contrib, order, axis=1)
        order = np.where(impact > 0, order, -1)
        decision = np.full(n, "decline", dtype=object)
        tier = np.full(n, "-", dtype=object)
        for b in reversed(st.bands):
            sel = points >= b.min_points
            decision[sel] = b.decision
            tier[sel] = b.rate_tier
        if st.decline_if_blacklisted:
            decision[bl > 0] = "decline"
            tier[bl > 0] = "-"
        status = np.where(valid, "ok", "invalid_id")
        return ScoredBatch(
            ids=list(raw_ids),
            status=status,
            prob_default=prob,
            points=points,
            prob_default_own_only=sigmoid(own_logit),
            external_logit=ext,
            own_data=have,
            reason_index=order,
            reason_impact=impact,
            decision=decision,
            rate_tier=tier,
            blacklist_hits=bl,
            active_loans=loans,
            features=sl.features,
            model_id=sl.model_id,
            model_version=sl.version,
            request_ids=[request_id] if request_id else [],
            missing=tuple(missing),
        )


# ---- local API: gRPC ---------------------------------------------------------------------------------


def _applicants(msg: scoring_pb2.LocalScoreRequest) -> list[Applicant]:
    return [Applicant(a.id, a.id_kind, dict(a.features) if a.features else None) for a in msg.applicants]


def _score_msg(row: Mapping[str, JSONValue]) -> scoring_pb2.ApplicantScore:
    ok = row["status"] == "ok"
    return scoring_pb2.ApplicantScore(
        id=str(row["id"]),
        status=str(row["status"]),
        prob_default=float(row["prob_default"] or 0.0) if ok else 0.0,
        points=float(row["points"] or 0.0) if ok else 0.0,
        prob_default_own_only=float(row["prob_default_own_only"] or 0.0) if ok else 0.0,
        reasons=[
            scoring_pb2.ReasonCodeMsg(feature=r["feature"], logit_impact=r["logit_impact"]) for r in row["reasons"]
        ],  # type: ignore[union-attr]
        decision=str(row["decision"] or ""),
        rate_tier=str(row["rate_tier"] or ""),
        blacklist_hits=int(row["blacklist_hits"]),
        active_loans_elsewhere=int(row["active_loans_elsewhere"]),
        partial=bool(row["partial"]),
        missing_parties=list(row["missing_parties"]),  # type: ignore[arg-type]
        model_id=str(row["model_id"]),
        model_version=str(row["model_version"]),
        request_id=str(row["request_id"]),
        own_data=bool(row["own_data"]),
        external_logit=float(row["external_logit"] or 0.0) if ok else 0.0,
    )


class LocalScoringServicer(scoring_pb2_grpc.LocalScoringServicer):
    def __init__(self, service: ScoringService) -> None:
        self.service = service

    def _kw(self, request: scoring_pb2.LocalScoreRequest) -> dict[str, Any]:
        return {
            "model_id": request.model_id or None,
            "model_version": request.model_version or None,
            "queries": tuple(request.queries) or QUERIES,
            "allow_partial": request.allow_partial or None,
        }

    def Score(
        self, request: scoring_pb2.LocalScoreRequest, context: grpc.ServicerContext
    ) -> scoring_pb2.LocalScoreResponse:
        try:
            batch = self.service.score(_applicants(request), **self._kw(request))
            return scoring_pb2.LocalScoreResponse(scores=[_score_msg(r) for r in batch.rows()])
        except Exception as exc:
            abort(context, exc)
            raise  # pragma: no cover

    def ScoreBatch(
        self, request: scoring_pb2.LocalScoreRequest, context: grpc.ServicerContext
    ) -> Iterator[scoring_pb2.LocalScoreProgress]:
        apps = _applicants(request)
        try:
            done = 0
            for batch in self.service.score_stream(apps, total=len(apps), **self._kw(request)):
                done += len(batch)
                yield scoring_pb2.LocalScoreProgress(
                    done=done, total=len(apps), scores=[_score_msg(r) for r in batch.rows()]
                )
        except Exception as exc:
            abort(context, exc)


def serve_local_grpc(
    service: ScoringService, address: str = "127.0.0.1:0", workers: int = 16
) -> tuple[grpc.Server, int]:
    """Start the local gRPC API (plaintext on loopback; put TLS in front for anything wider)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="local-score"), options=SERVER_OPTIONS
    )
    scoring_pb2_grpc.add_LocalScoringServicer_to_server(LocalScoringServicer(service), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise InvalidInput(f"cannot listen on {address} for the local scoring API")
    server.start()
    return server, port


# ---- local API: JSON over HTTP ----------------------------------------------------------------------

_HTTP_STATUS = {
    "invalid_input": 400,
    "invalid_config": 400,
    "not_found": 404,
    "permission_denied": 403,
    "unauthenticated": 401,
    "unavailable": 503,
    "deadline_exceeded": 504,
}
MAX_HTTP_BODY = 64 << 20


def parse_json_request(body: Mapping[str, Any]) -> tuple[list[Applicant], dict[str, Any]]:
    """``{"applicants": [{"id": ..., "id_kind": ..., "features": {...}}], "model_id"?, "queries"?, ...}``."""
    apps_in = body.get("applicants")
    if apps_in is None and "id" in body:
        apps_in = [body]
    if not isinstance(apps_in, list) or not apps_in:
        raise InvalidInput("body needs a non-empty 'applicants' list (or a single 'id')")
    apps: list[Applicant] = []
    for i, a in enumerate(apps_in):
        if not isinstance(a, dict) or not isinstance(a.get("id"), str):
            raise InvalidInput(f"applicants[{i}] needs a string 'id'")
        feats = a.get("features")
        if feats is not None and (
            not isinstance(feats, dict)
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in feats.values())
        ):
            raise InvalidInput(f"applicants[{i}].features must map names to numbers")
        apps.append(Applicant(a["id"], str(a.get("id_kind") or ""), feats))
    kw: dict[str, Any] = {}
    for k in ("model_id", "model_version"):
        if body.get(k):
            kw[k] = str(body[k])
    if body.get("queries"):
        kw["queries"] = tuple(body["queries"])
    if "allow_partial" in body:
        kw["allow_partial"] = bool(body["allow_partial"])
    return apps, kw


def make_http_server(service: ScoringService, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """``POST /v1/score`` (JSON in, JSON out), ``GET /healthz``. Call ``serve_forever()`` on a thread."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("local http: " + fmt, *args)

        def _send(self, code: int, obj: Mapping[str, Any]) -> None:
            data = json.dumps(obj).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, {"status": "ok"})
            else:
                self._send(404, {"error": "not_found", "message": f"no route {self.path}"})

        def do_POST(self) -> None:
            if self.path != "/v1/score":
                self._send(404, {"error": "not_found", "message": f"no route {self.path}"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 < length <= MAX_HTTP_BODY:
                    raise InvalidInput(f"request body must be 1..{MAX_HTTP_BODY} bytes")
                try:
                    body = json.loads(self.rfile.read(length))
                except ValueError:
                    raise InvalidInput("request body is not valid JSON") from None
                if not isinstance(body, dict):
                    raise InvalidInput("request body must be a JSON object")
                apps, kw = parse_json_request(body)
                batch = service.score(apps, **kw)
                self._send(200, {"scores": list(batch.rows())})
            except FedcreditError as exc:
                self._send(_HTTP_STATUS.get(exc.code, 500), {"error": exc.code, "message": str(exc)})
            except Exception:
                log.exception("local scoring API crashed")
                self._send(500, {"error": "internal", "message": "internal error (see the node's log)"})

    return ThreadingHTTPServer((host, port), Handler)


# ---- node wiring ---------------------------------------------------------------------------------------

SETTINGS_FILE = "scoring.json"


def load_settings(home: Path) -> ScoringSettings:
    """``HOME/scoring.json`` (optional): any :class:`ScoringSettings` field, e.g. ``{"pdo": 40, "bands": [...]}``."""
    path = home / SETTINGS_FILE
    if not path.is_file():
        return ScoringSettings()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InvalidInput(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: must hold a JSON object")
    try:
        return ScoringSettings.from_mapping(data)
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidInput(f"{path}: {exc}") from None


def build_service(config: Any, store: Store, settings: ScoringSettings | None = None) -> ScoringService:
    """A :class:`ScoringService` for a configured node (``config``: a ``PartyConfig``)."""
    tls = config.tls
    gateway = GrpcGateway(
        config.coordinator.address,
        config.coordinator.server_name,
        tls.ca_cert.read_bytes(),
        tls.cert.read_bytes(),
        tls.key.read_bytes(),
    )
    return ScoringService(store, config.home, gateway, settings or load_settings(config.home))


def _split(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise InvalidInput(f"listen address {listen!r} must be host:port") from None


@dataclass
class LocalApi:
    """The running local scoring API (gRPC and/or HTTP); :meth:`stop` shuts both down."""

    grpc_server: grpc.Server | None = None
    grpc_port: int = 0
    http_server: ThreadingHTTPServer | None = None
    http_port: int = 0

    def stop(self) -> None:
        if self.grpc_server is not None:
            self.grpc_server.stop(1.0)
        if self.http_server is not None:
            self.http_server.shutdown()
            self.http_server.server_close()


def start_local_api(service: ScoringService) -> LocalApi:
    """Start the local API on ``settings.grpc_listen`` / ``settings.http_listen`` (loopback by default)."""
    api = LocalApi()
    st = service.settings
    if st.grpc_listen:
        api.grpc_server, api.grpc_port = serve_local_grpc(service, st.grpc_listen)
    if st.http_listen:
        host, port = _split(st.http_listen)
        api.http_server = make_http_server(service, host, port)
        api.http_port = api.http_server.server_address[1]
        threading.Thread(target=api.http_server.serve_forever, name="local-score-http", daemon=True).start()
    log.info("local scoring API: grpc port %s, http port %s", api.grpc_port or "-", api.http_port or "-")
    return api
