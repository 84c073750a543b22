"""Joint scoring with hybrid tree models at a party node (protocol: :mod:`fedcore.protocol.scoring.trees`).

:class:`TreeModels` reads the tree models this party keeps (``HOME/models/<model_id>/gbdt.json``, written
by :mod:`party_node.trees`): at the lender the released model (trees, leaf values, the lender rules), at
the platform its rules and the trees' shapes. It is the platform's contribution source (its features of
subjects with ``scoring`` consent; anyone else counts as all-missing) and tells the lender's
:class:`~party_node.scoring.ScoringService` that a model id is a tree model, which then scores through
:func:`score_tree_chunk`: the lender's own features (given, else its store, else missing), its reachable
rotated masked leaf tables (a lookup at the platform's index, the coordinator helping), the joint margin
back; reason codes by path attribution over the
lender's own features plus the consortium's contribution as one line (:mod:`models.gbdt.explain`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedcore.errors import FedcreditError, InvalidInput, NotFound
from fedcore.protocol.messages import JSONValue
from fedcore.protocol.scoring.messages import ModelSlice
from fedcore.protocol.scoring.requester import sigmoid
from fedcore.protocol.scoring.trees import ArrayTreeContributions, TreeLayout, TreePlan
from fedcore.protocol.trees.messages import LENDERS_OWNER
from models.gbdt.booster import GBDTModel
from models.gbdt.explain import path_attribution
from models.gbdt.tree import (
    DirectionBits,
    SplitTable,
    Tree,
    margin_from_leaf_mask,
    owner_directions,
    reachable_leaves,
)
from models.scorecard import top_adverse

from .scoring_batch import Applicant, ApplicantTable, ScoredBatch
from .store import Store

if TYPE_CHECKING:
    from .scoring import ScoringService

MODEL_FILE = "gbdt.json"


@dataclass(frozen=True)
class LenderTreeModel:
    model_id: str
    version: str
    dataset: str
    features: tuple[str, ...]
    model: GBDTModel


class TreeModels:
    """The tree models under ``models_dir``, re-read when a file changes."""

    def __init__(self, store: Store, models_dir: Path, refresh_s: float = 300.0) -> None:
        self._store = store
        self._dir = Path(models_dir)
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._docs: dict[str, tuple[float, dict[str, Any]]] = {}
        self._platform: dict[str, tuple[float, float, ArrayTreeContributions]] = {}
        self._plans: dict[tuple[str, str], TreePlan] = {}  # the lender's plans (their split code tables)

    def _doc(self, model_id: str) -> tuple[float, dict[str, Any]] | None:
        path = self._dir / model_id / MODEL_FILE
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        with self._lock:
            hit = self._docs.get(model_id)
        if hit is None or hit[0] != mtime:
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InvalidInput(f"{path}: cannot read the tree model ({exc})") from None
            hit = (mtime, doc)
            with self._lock:
                self._docs[model_id] = hit
        return hit

    def lender_model(self, model_id: str) -> LenderTreeModel | None:
        """The released model if this party is a lender of tree model ``model_id``, else None."""
        hit = self._doc(model_id) if model_id else None
        if hit is None or hit[1].get("role") != "lender":
            return None
        d = hit[1]
        return LenderTreeModel(model_id, str(d["version"]), str(d["dataset"]), tuple(d["features"]),
                               GBDTModel.from_dict(d["model"]))  # fmt: skip

    def plan(self, tm: LenderTreeModel) -> TreePlan:
        """The requester's :class:`TreePlan` of a released model, kept per model id and version."""
        key = (tm.model_id, tm.version)
        with self._lock:
            hit = self._plans.get(key)
        if hit is None:
            m = tm.model
            hit = TreePlan.of(m.trees, m.owners, m.tables[LENDERS_OWNER], m.base_score)
            with self._lock:
                self._plans = {k: v for k, v in self._plans.items() if k[0] != tm.model_id} | {key: hit}
        return hit

    # -- the contributor's side (TreeContributionSource)

    def tree_model_version(self, model_id: str) -> str:
        hit = self._doc(model_id)
        if hit is None:
            raise NotFound(f"tree model {model_id!r} is not held at this party")
        return str(hit[1]["version"])

    def tree_picks(self, model_id: str, pseudonyms: np.ndarray) -> tuple[TreeLayout, np.ndarray] | None:
        hit = self._doc(model_id)
        if hit is None:
            raise NotFound(f"tree model {model_id!r} is not held at this party")
        if hit[1].get("role") != "platform":
            return None  # lenders hold the same lender rules as the requester: nothing to add
        return self._platform_source(model_id, hit).tree_picks(model_id, pseudonyms)

    def _platform_source(self, model_id: str, hit: tuple[float, dict[str, Any]]) -> ArrayTreeContributions:
        mtime, d = hit
        now = time.monotonic()
        with self._lock:
            cached = self._platform.get(model_id)
        if cached is None or cached[1] != mtime or now - cached[0] > self._refresh_s:
            table = SplitTable.from_dict(d["table"])
            feats = sorted({r.feature for r in table.rules.values()})
            rids, ps = self._store.all_pseudonyms(purpose="scoring")
            xr, x = self._store.feature_matrix(str(d["dataset"]), feats, purpose="scoring")
            pos = np.minimum(np.searchsorted(rids, xr), max(len(rids) - 1, 0))
            ok = (rids[pos] == xr) if len(rids) else np.zeros(len(xr), dtype=bool)
            src = ArrayTreeContributions.build(
                model_id, str(d["version"]), [Tree.from_dict(t) for t in d["shapes"]], tuple(d["owners"]), table,
                ps[pos[ok]], {f: x[ok, j] for j, f in enumerate(feats)},
            )  # fmt: skip
            cached = (now, mtime, src)
            with self._lock:
                self._platform[model_id] = cached
        return cached[2]


def _own_features(
    service: ScoringService, tm: LenderTreeModel, applicants: Sequence[Applicant] | ApplicantTable,
    kinds: list[str], valid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    n, k = len(applicants), len(tm.features)
    if isinstance(applicants, ApplicantTable) and applicants.x is not None:
        x = np.asarray(applicants.x, dtype=np.float64)
        if x.shape != (n, k):
            raise InvalidInput(f"feature matrix must be {n} x {k} numbers ({', '.join(tm.features)})")
        return x, np.ones(n, dtype=bool)
    apps = [Applicant(i, applicants.id_kind) for i in applicants.ids] if isinstance(applicants, ApplicantTable) \
        else list(applicants)  # fmt: skip
    # the store lookup of the linear path, with "missing" (NaN) as the neutral value trees understand
    view = ModelSlice(tm.model_id, tm.version, "", tm.dataset, tm.features, np.zeros(k), np.full(k, np.nan),
                      np.ones(k))  # fmt: skip
    return service._features(view, apps, kinds, valid)


def score_tree_chunk(
    service: ScoringService, tm: LenderTreeModel, applicants: Sequence[Applicant] | ApplicantTable,
    model_version: str | None, queries: tuple[str, ...], allow_partial: bool | None, on_invalid: str, caller: str,
) -> ScoredBatch:  # fmt: skip
    """One chunk of :meth:`ScoringService.score` for a tree model (``score`` plus optional flags)."""
    st = service.settings
    if model_version and model_version != tm.version:
        raise InvalidInput(
            f"model {tm.model_id!r}: requested version {model_version!r}, this node holds {tm.version!r}"
        )
    raw_ids, kinds, pseudos, bad, valid = service.pseudonymize(applicants, on_invalid)
    n = len(raw_ids)
    x, have = _own_features(service, tm, applicants, kinds, valid)
    model = tm.model
    table = model.tables[LENDERS_OWNER]
    bits = owner_directions(table, {f: x[:, j] for j, f in enumerate(tm.features) if f in table.features()})
    plan = service.trees.plan(tm)
    own_cols = {f: x[:, j] for j, f in enumerate(tm.features) if f in table.features()}
    vidx = np.flatnonzero(valid)
    z = np.full(n, np.nan)
    partial = st.allow_partial if allow_partial is None else allow_partial
    record: dict[str, JSONValue] = {"caller": caller, "model_id": tm.model_id, "model_version": tm.version,
                                    "queries": list(queries), "n": len(vidx), "invalid": len(bad)}  # fmt: skip
    request_ids: list[str] = []
    missing: set[str] = set()
    bl = np.full(n, -1, dtype=np.int64)
    loans = np.full(n, -1, dtype=np.int64)
    per = plan.max_applicants()  # coordinator requests of at most MAX_TABLE_BYTES of tables
    try:
        for a in range(0, len(vidx), per):
            rows = vidx[a : a + per]
            packed = b"".join(pseudos[i] for i in rows)  # type: ignore[misc]
            if "score" in queries and not plan.layout.n_regions:  # horizontal, or no platform split: local
                sub = DirectionBits(bits.refs, bits.bits[rows])
                mask = reachable_leaves(model.trees, model.owners, LENDERS_OWNER, sub)
                z[rows] = margin_from_leaf_mask(model.trees, mask, model.base_score)
            elif "score" in queries:
                z[rows], resp = service.tree_requester.query(
                    packed, plan, {f: v[rows] for f, v in own_cols.items()}, model_id=tm.model_id,
                    model_version=tm.version, allow_partial=partial, timeout_s=st.timeout_s,
                )  # fmt: skip
                request_ids.append(resp.request_id)
                missing |= set(resp.missing)
            flags = tuple(q for q in queries if q in ("blacklist", "loans"))
            if flags:
                out = service.requester.query(packed, model_id=tm.model_id, model_version=tm.version, queries=flags,
                                              allow_partial=partial, timeout_s=st.timeout_s)  # fmt: skip
                request_ids.append(out.request_id)
                missing |= set(out.missing)
                if out.blacklist_hits is not None:
                    bl[rows] = out.blacklist_hits
                if out.active_loans is not None:
                    loans[rows] = out.active_loans
    except FedcreditError as exc:
        service.audit.append("score_request", {**record, "outcome": exc.code})
        raise
    service.audit.append("score_request", {**record, "outcome": "ok", "request_ids": list(request_ids),
                                           "missing": sorted(missing)})  # fmt: skip
    att = path_attribution(model.trees, model.owners, model.base_score, table, bits, np.nan_to_num(z))
    own = np.stack([att.own.get(f, np.zeros(n)) for f in tm.features], axis=1)
    own_only = att.bias + own.sum(axis=1)
    z = np.where(np.isnan(z), own_only, z)  # invalid ids: no consortium part
    other = np.where(valid, att.other, 0.0)
    points = np.asarray(service.scorecard.points_from_logit(z))
    order, impact = top_adverse(own, st.reason_top_k)
    decision = np.full(n, "decline", dtype=object)
    tier = np.full(n, "-", dtype=object)
    for b in reversed(st.bands):
        sel = points >= b.min_points
        decision[sel], tier[sel] = b.decision, b.rate_tier
    if st.decline_if_blacklisted:
        decision[bl > 0], tier[bl > 0] = "decline", "-"
    return ScoredBatch(
        ids=list(raw_ids), status=np.where(valid, "ok", "invalid_id"), prob_default=sigmoid(z), points=points,
        external_logit=other, own_data=have, reason_index=order,
        reason_impact=impact, decision=decision, rate_tier=tier, blacklist_hits=bl, active_loans=loans,
        features=tm.features, model_id=tm.model_id, model_version=tm.version, request_ids=request_ids,
        missing=tuple(sorted(missing)),
    )  # fmt: skip
