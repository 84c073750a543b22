"""Joint scoring at a party node: the contributor's handlers and the requester's scoring service.

Contributor side (every party): :func:`register_scoring_handlers` adds the ``scoring.contribute``
handler backed by the local store (:class:`StoreContributions`): partial logits of subjects with
``scoring`` consent under the party's model slice (``HOME/models/<model_id>/slice.json``), fraud flags of
subjects with ``blacklist`` consent, active-loan flags of subjects with ``scoring`` consent; 0 for
everyone else. Every request is written to the party's audit log (:mod:`party_node.audit`).

Requester side (a lender): :class:`ScoringService` takes raw applicant ids (and optionally the lender's
own application features), pseudonymizes them with the federation key, asks the coordinator through a
:class:`~fedcore.protocol.scoring.Gateway` (:class:`GrpcGateway` in production), decrypts the consortium's
sum and returns probability of default, scorecard points, reason codes, the model version, the blacklist
hit count, the multi-lending count and a decision from bands. Raw ids and the lender's features never
leave the node; what the others learn: :mod:`fedcore.protocol.scoring`. Tree models: :mod:`party_node.scoring_trees`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from fedcredit.v1 import scoring_pb2_grpc

from fedcore.coalesce import Coalescer
from fedcore.errors import FedcreditError, InvalidInput, NotFound
from fedcore.grpc_options import CLIENT_OPTIONS, secure_target_options
from fedcore.protocol.messages import JSONValue
from fedcore.protocol.scoring.messages import QUERIES, JointRequest, JointResponse, ModelSlice, check_queries
from fedcore.protocol.scoring.party import ScoringParty, SortedTable
from fedcore.protocol.scoring.requester import Gateway, JointOutcome, KeyRing, Requester, TreeRequester, sigmoid
from fedcore.protocol.sealing import PartyIdentity
from fedcore.protocol.tasks import HandlerRegistry
from fedcore.wire.errors import from_rpc_error
from fedcore.wire.scoring import request_to_proto, response_from_chunks
from models.scorecard import Scorecard, top_adverse
from party_node.scoring_batch import (
    COALESCE_MAX_APPLICANTS,
    COALESCE_MAX_MERGED,
    Applicant,
    ApplicantTable,
    Band,
    ScoredBatch,
    ScoringSettings,
    _cut_batch,
    check_features,
)

from .audit import AuditLog
from .categories import encode_raw
from .flag_tables import FlagTables
from .model_bands import model_bands, newest_joint_model
from .schema import IdKind, normalize_ids
from .scoring_trees import TreeModels, score_tree_chunk
from .served import record_served
from .store import Store

log = logging.getLogger(__name__)

JOINT_ALIAS = "joint"  # the default model name: the newest joint model this lender labels


# ---- contributor side ------------------------------------------------------------------------------


class StoreContributions:
    """A :class:`~fedcore.protocol.scoring.ContributionSource` over the party's store, cached in memory
    (sorted pseudonym tables) and refreshed every ``refresh_s`` seconds, when a slice file changes, or
    when the store's data version changes (an ingest, a re-derived dataset such as the platform's
    change features: :meth:`Store.data_version`, read at most every ``version_check_s`` seconds)."""

    def __init__(self, store: Store, models_dir: Path, refresh_s: float = 300.0, compute: Any = None,
                 version_check_s: float = 1.0) -> None:
        self._store = store
        self._version_check_s = version_check_s
        self._version: tuple[float, object] = (float("-inf"), None)  # (read at, data version)
        self._compute = compute  # ComputeSettings; backend "ray" computes partial scores on Ray tasks
        self._models_dir = models_dir
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._slices: dict[str, tuple[float, ModelSlice]] = {}
        # model -> (built, slice mtime, table, data version it was built from)
        self._scores: dict[str, tuple[float, float, SortedTable, object]] = {}
        self._flags = FlagTables(store, refresh_s)

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

    def partial_logits(self, model_id: str, pseudonyms: np.ndarray) -> np.ndarray:
        sl = self.slice(model_id)
        mtime = self._slices[model_id][0]
        now = time.monotonic()
        version = self._data_version(now)
        with self._lock:
            hit = self._scores.get(model_id)
        if hit is None or hit[1] != mtime or now - hit[0] > self._refresh_s or hit[3] != version:
            table = self._score_table(sl)
            hit = (now, mtime, table, version)
            with self._lock:
                self._scores[model_id] = hit
        return hit[2].lookup(pseudonyms)

    def _data_version(self, now: float) -> object:
        with self._lock:
            at, version = self._version
        if now - at < self._version_check_s:
            return version
        version = self._store.data_version()  # read before a build: a later change shows next time
        with self._lock:
            self._version = (now, version)
        return version

    def _score_table(self, sl: ModelSlice) -> SortedTable:
        if self._compute is not None and self._compute.backend == "ray":
            from .compute import ray_partial_scores, row_id_bounds, store_url

            keys_arr, vals = ray_partial_scores(
                self._compute.ray_address, store_url(self._store), sl, row_id_bounds(self._store, sl.dataset)
            )
            return SortedTable(keys_arr, vals)
        rids, ps = self._store.all_pseudonyms(purpose="scoring")
        xr, x = self._store.feature_matrix(sl.dataset, list(sl.features), purpose="scoring")
        pos = np.searchsorted(rids, xr)
        pos = np.minimum(pos, max(len(rids) - 1, 0))
        ok = (rids[pos] == xr) if len(rids) else np.zeros(len(xr), dtype=bool)
        keys = ps[pos[ok]]
        return SortedTable(keys, sl.partial_logit(x[ok]) if ok.any() else np.zeros(0))

    def fraud_flags(self, pseudonyms: np.ndarray) -> np.ndarray:
        return self._flags.table("fraud").lookup(pseudonyms)

    def loan_flags(self, pseudonyms: np.ndarray) -> np.ndarray:
        return self._flags.table("loans").lookup(pseudonyms)


def register_scoring_handlers(
    registry: HandlerRegistry, store: Store, home: Path, audit: AuditLog | None = None, compute: Any = None,
    identity: PartyIdentity | None = None,
) -> ScoringParty:  # fmt: skip
    """Add the contributor's ``scoring.contribute`` handler (audit log at ``HOME/audit/scoring.log``;
    ``identity`` opens tree scoring inputs sealed to this party)."""
    contributions = StoreContributions(store, home / "models", compute=compute)
    party = ScoringParty(contributions, audit or AuditLog.for_home(home), TreeModels(store, home / "models"), identity)
    party.register(registry)
    return party


# ---- requester side: gateway to the coordinator ------------------------------------------------------


class GrpcGateway:
    """Calls the coordinator's ``Scoring/Score`` with the party's mTLS certificate."""

    def __init__(self, address: str, server_name: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
        creds = grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem)
        options = [*CLIENT_OPTIONS, *secure_target_options(server_name)]
        self._channel, self.ca_pem = grpc.secure_channel(address, creds, options=options), ca_pem
        self._stub = scoring_pb2_grpc.ScoringStub(self._channel)

    def joint(self, request: JointRequest) -> JointResponse:
        try:
            chunks = self._stub.Score(request_to_proto(request), timeout=request.timeout_s + 5.0)
            return response_from_chunks(iter(chunks))
        except grpc.RpcError as err:
            raise from_rpc_error(err, "joint scoring request") from None

    def close(self) -> None:
        self._channel.close()


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
        keys = keys or KeyRing(self.settings.key_rotate_s, masked_max_values=self.settings.masked_max_values)
        self.requester = Requester(gateway, keys)
        self._coalescer: Coalescer[tuple[Any, ...], Applicant, ScoredBatch] | None = None
        if self.settings.coalesce:  # concurrent small calls with the same options leave as one chunk
            self._coalescer = Coalescer(self._score_coalesced, _cut_batch, max_merged=COALESCE_MAX_MERGED,
                                        inflight=self.settings.coalesce_inflight, name="score-coalesce")
        self.scorecard = Scorecard(self.settings.base_score, self.settings.base_odds, self.settings.pdo)
        self._own = StoreContributions(store, home / "models")
        self.trees = TreeModels(store, home / "models")
        self.tree_requester = TreeRequester(gateway)
        self._own_cache: dict[str, tuple[float, np.ndarray, np.ndarray]] = {}
        self._band_cache: dict[str, tuple[Band, ...]] = {}
        self._models_dir = home / "models"
        self._lock = threading.Lock()

    def model(self, model_id: str | None = None) -> ModelSlice:
        wanted = model_id or self.settings.model_id
        if wanted == JOINT_ALIAS and not (self.home / "models" / wanted / "slice.json").is_file():
            wanted = newest_joint_model(self._models_dir)
        sl = self._own.slice(wanted)
        if sl.intercept is None:
            raise InvalidInput(f"model {sl.model_id!r}: this party's slice has no intercept (not the label holder)")
        return sl

    def _bands(self, model_id: str) -> tuple[Band, ...]:
        """The configured bands, or (by default) the bands set from the model's validation scores."""
        st = self.settings
        if not st.bands_from_model:
            return st.bands
        with self._lock:
            hit = self._band_cache.get(model_id)
        if hit is None:
            derived = model_bands(self._models_dir, model_id, self.scorecard, st.band_targets, st.max_bad_rate)
            hit = derived if derived is not None else st.bands
            with self._lock:
                self._band_cache[model_id] = hit
        return hit

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
        x = np.tile(sl.neutral(), (n, 1))  # neutral: the population mean
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
        if (tree := self.trees.lender_model(model_id or self.settings.model_id)) is not None:  # no coalescing
            applicants = encode_raw(self.store, tree.dataset, applicants)  # category levels as text -> codes
            return self._score_chunk(applicants, model_id, model_version, queries, allow_partial, on_invalid, caller)
        applicants = encode_raw(self.store, self.model(model_id).dataset, applicants)
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

        model_id = kw.get("model_id")
        tree = self.trees.lender_model(model_id or self.settings.model_id)  # a tree model has no slice
        dataset = tree.dataset if tree is not None else self.model(model_id).dataset

        def chunks() -> Iterator[list[Applicant]]:
            buf: list[Applicant] = []
            done = 0
            for a in applicants:
                buf.append(a)
                if len(buf) >= self.settings.chunk:
                    yield encode_raw(self.store, dataset, buf, done)
                    done += len(buf)
                    buf = []
            if buf:
                yield encode_raw(self.store, dataset, buf, done)

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

    def pseudonymize(
        self, applicants: Sequence[Applicant] | ApplicantTable, on_invalid: str
    ) -> tuple[list[str], list[str], list[bytes | None], list[int], np.ndarray]:
        """(raw ids, id kinds, pseudonyms (None: malformed id), malformed positions, valid mask)."""
        st = self.settings
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
        return list(raw_ids), kinds, pseudos, bad, valid

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
        tree = self.trees.lender_model(model_id or st.model_id)
        if tree is not None:
            scored = score_tree_chunk(self, tree, applicants, model_version, qs, allow_partial, on_invalid, caller)
            record_served(self._models_dir / tree.model_id, scored.prob_default[scored.status == "ok"])  # reports
            return scored
        sl = self.model(model_id)
        if model_version and model_version != sl.version:
            raise InvalidInput(
                f"model {sl.model_id!r}: requested version {model_version!r}, this node holds {sl.version!r}"
            )
        raw_ids, kinds, pseudos, bad, valid = self.pseudonymize(applicants, on_invalid)
        n = len(applicants)
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
        record_served(self._models_dir / sl.model_id, prob[valid])  # for population stability in reports
        points = np.asarray(self.scorecard.points_from_logit(z))
        order, impact = top_adverse(contrib, st.reason_top_k)  # contributions are relative to the reference
        decision = np.full(n, "decline", dtype=object)
        tier = np.full(n, "-", dtype=object)
        for b in reversed(self._bands(sl.model_id)):
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
    except (TypeError, ValueError, KeyError, InvalidInput) as exc:  # the file is named, whatever was wrong
        raise InvalidInput(f"{path}: {exc}") from None


def build_service(config: Any, store: Store, settings: ScoringSettings | None = None) -> ScoringService:
    """A :class:`ScoringService` for a configured node (``config``: a ``PartyConfig``)."""
    tls, co = config.tls, config.coordinator
    gateway = GrpcGateway(co.address, co.server_name, tls.ca_cert.read_bytes(), tls.cert.read_bytes(),
                          tls.key.read_bytes())  # fmt: skip
    return ScoringService(store, config.home, gateway, settings or load_settings(config.home))
