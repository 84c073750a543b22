"""Hybrid tree training: ``fedcredit coordinator train --kind vertical --model gbdt`` (protocol and what
each side learns in :mod:`fedcore.protocol.trees`).

Same data plane as vertical logistic regression: ``lenders`` and ``platform`` (or ``parties``), PSI
alignments (``psi_runs``; missing ones are run here), consent (the parties read training-consented rows
only), the registry. Parameters: ``gbdt`` (a :class:`~models.gbdt.params.GBDTParams` dict: ``n_trees``,
``max_depth``, ``learning_rate``, ``max_bins``, ``min_child_weight``, ``reg_lambda``, ``monotone``,
``early_stopping_rounds``, ...), ``val_fraction``, ``seed``, ``dataset``, ``timeout_s``. The lender features
are the whitelisted columns of the lenders' dataset as registered (names only), identical at every
lender. The result registers one model version with each lender's validation metrics. The run keeps a
checkpoint in ``runs/<run>/trees.json`` after each tree; ``coordinator resume`` continues it from there
(:mod:`fedcore.protocol.trees.checkpoint`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fedcore.errors import InvalidInput
from fedcore.protocol.horizontal_trees.coordinator import HorizontalTreesConfig, run_horizontal_trees
from fedcore.protocol.messages import JSONValue, PartyInfo
from fedcore.protocol.trees.coordinator import (
    HybridTreesConfig,
    HybridTreesResult,
    resume_hybrid_trees,
    run_hybrid_trees,
)
from fedcore.protocol.trees.messages import LENDERS_OWNER
from models.gbdt.params import GBDTParams, check_monotone

from ..runs import RunContext

MODEL_KIND = "hybrid-gbdt"
CHECKPOINT = "trees.json"
INT_FIELDS = ("n_trees", "max_depth", "max_bins", "early_stopping_rounds", "seed")


def _lender_features(known: dict[str, PartyInfo], lenders: list[str], dataset: str | None) -> tuple[str, ...]:
    """The shared lender schema from the registered summaries (names only)."""
    schemas: dict[str, tuple[str, ...]] = {}
    for x in lenders:
        tables = [t for t in known[x].summary.tables if (t.name == dataset if dataset else t.has_labels)]
        if len(tables) != 1:
            what = f"dataset {dataset!r}" if dataset else "one labelled dataset"
            raise InvalidInput(f"gbdt: lender {x!r} has no single {what} registered ({len(tables)} found)")
        schemas[x] = tuple(f.name for f in tables[0].features)
    first = schemas[lenders[0]]
    for x, names in schemas.items():
        if names != first:
            raise InvalidInput(
                f"gbdt: lender {x!r} has features {list(names)}, {lenders[0]!r} has {list(first)}:"
                " hybrid trees need one lender schema"
            )
    if not first:
        raise InvalidInput(f"gbdt: lender {lenders[0]!r} whitelisted no feature for the federation")
    return first


def gbdt_precheck(rc: RunContext, lenders: list[str], platform: str) -> None:
    """Refuse bad tree parameters before any PSI run or party work: the parameters themselves, and a
    monotone constraint on a feature the registered summaries declare categorical (or that no party of
    the run has). The protocol checks the same again at setup, on the features the parties bring."""
    params = gbdt_params(rc.params.get("gbdt"))
    if not any(params.monotone.values()):
        return
    known = {x.name: x for x in rc.channel.parties()}
    dataset = str(rc.params["dataset"]) if rc.params.get("dataset") else None
    lender_tables = [t for t in known[lenders[0]].summary.tables if (t.name == dataset if dataset else t.has_labels)]
    kinds: dict[str, bool] = {}
    for t in known[platform].summary.tables:
        for f in t.features:
            kinds[f.name] = kinds.get(f.name, False) or f.dtype == "categorical"
    if len(lender_tables) == 1:
        kinds.update({f.name: f.dtype == "categorical" for f in lender_tables[0].features})
    if not known[platform].summary.tables or len(lender_tables) != 1:  # offline: kinds unknown, setup checks
        kinds = {f: kinds.get(f, False) for f in params.monotone}
    check_monotone(params.monotone, kinds, "the registered data summaries")


def gbdt_params(raw: Any) -> GBDTParams:
    if raw is None:
        return GBDTParams(n_trees=30, max_depth=3, learning_rate=0.3, max_bins=32)
    if not isinstance(raw, dict):
        raise InvalidInput("gbdt: 'gbdt' must be a table of tree parameters")
    kw = {"n_trees": 30, **raw}
    for name in INT_FIELDS:  # numbers cross the admin API as JSON (Struct) numbers
        if kw.get(name) is not None:
            value = float(kw[name])
            if value != int(value):
                raise InvalidInput(f"gbdt parameter {name!r}: must be a whole number, got {kw[name]}")
            kw[name] = int(value)
    return GBDTParams.from_dict(kw)


def _result(
    rc: RunContext,
    res: HybridTreesResult,
    lenders: list[str],
    platform: str,
    features: tuple[str, ...],
    params: GBDTParams,
    version: str,
    seconds: float,
) -> dict[str, Any]:
    parties: dict[str, dict[str, Any]] = {x: {"role": "lender", "features": list(features)} for x in lenders}
    parties[platform] = {"role": "platform", "features": [s.name for s in res.layout.features if s.owner == platform]}
    out: dict[str, Any] = {
        "run_id": rc.run_id, "model_id": rc.run_id, "version": version, "kind": MODEL_KIND, "model": MODEL_KIND,
        "trees": len(res.trees), "val_loss": res.val_loss, "metrics": res.metrics, "parties": parties,
        "params": {k: v for k, v in params.to_dict().items() if k not in ("sticky_owners", "first_tree_owners")},
        "importance": {LENDERS_OWNER: res.importance.get(LENDERS_OWNER, {})}, "seconds": round(seconds, 3),
        "setup_s": round(res.setup_s, 3), "tree_s": [round(t, 3) for t in res.tree_s],
    }  # fmt: skip
    per = [m for m in res.metrics.values() if "auc" in m]
    total = sum(float(m.get("n", 1)) for m in per)
    if per and total > 0:
        out["summary_metrics"] = {
            f"val_{k}": sum(float(m.get(k, 0.0)) * float(m.get("n", 1)) for m in per) / total
            for k in ("auc", "ks", "bad_rate_at_80")
        }
    return out


def gbdt_job(
    rc: RunContext, lenders: list[str], platform: str, psi_runs: dict[str, str], version: str
) -> dict[str, Any]:
    p = rc.params
    params = gbdt_params(p.get("gbdt"))
    known = {x.name: x for x in rc.channel.parties()}
    dataset = str(p["dataset"]) if p.get("dataset") else None
    features = _lender_features(known, lenders, dataset)
    data: dict[str, JSONValue] = {"psi_runs": dict(psi_runs), "val_fraction": float(p.get("val_fraction", 0.2)),
                                  "seed": int(p.get("seed", 0))}  # fmt: skip
    if not 0.0 < float(data["val_fraction"]) < 0.9:  # type: ignore[arg-type]
        raise InvalidInput(f"gbdt: val_fraction must be in (0, 0.9), got {data['val_fraction']}")
    if dataset:
        data["dataset"] = dataset
    data["version"] = version
    cfg = HybridTreesConfig(rc.run_id, tuple(lenders), platform, features, params,
                            timeout_s=float(p.get("timeout_s", 600.0)), data=data)  # fmt: skip
    rc.progress(
        f"hybrid trees: {len(lenders)} lenders x {len(features)} features + {platform}, "
        f"up to {params.n_trees} trees of depth {params.max_depth}"
    )
    t0 = time.perf_counter()
    res = run_hybrid_trees(rc.channel, cfg, rc.progress, checkpoint=checkpoint_path(rc))
    return _finished(rc, res, cfg, t0)


def checkpoint_path(rc: RunContext) -> Path:
    """Where the coordinator keeps a hybrid tree run to resume it (:mod:`fedcore.protocol.trees.checkpoint`)."""
    return Path(rc.workdir) / rc.run_id / CHECKPOINT


def _finished(rc: RunContext, res: HybridTreesResult, cfg: HybridTreesConfig, t0: float) -> dict[str, Any]:
    rc.progress(
        f"kept {len(res.trees)} trees; validation log-loss {res.val_loss[len(res.trees)]:.5f}"
        if len(res.val_loss) > len(res.trees)
        else f"kept {len(res.trees)} trees"
    )
    version = str(cfg.data.get("version", "1"))
    out = _result(rc, res, list(cfg.lenders), cfg.platform, cfg.lender_features, cfg.params, version,
                  time.perf_counter() - t0)  # fmt: skip
    if res.resumed_after:
        out["resumed_after_tree"] = res.resumed_after
    return out


def gbdt_resume(rc: RunContext) -> dict[str, Any]:
    """``coordinator resume`` of a hybrid tree run: from its checkpoint, after the last finished tree."""
    t0 = time.perf_counter()
    cfg, res = resume_hybrid_trees(rc.channel, checkpoint_path(rc), rc.progress)
    return _finished(rc, res, cfg, t0)


def horizontal_gbdt_job(rc: RunContext, lenders: list[str], version: str) -> dict[str, Any]:
    """``train --kind horizontal --model gbdt``: :mod:`fedcore.protocol.horizontal_trees` across ``lenders``."""
    p = rc.params
    params = gbdt_params(p.get("gbdt"))
    known = {x.name: x for x in rc.channel.parties()}
    dataset = str(p["dataset"]) if p.get("dataset") else None
    features = _lender_features(known, lenders, dataset)
    data: dict[str, JSONValue] = {"val_fraction": float(p.get("val_fraction", 0.2)), "seed": int(p.get("seed", 0)),
                                  "version": version, **({"dataset": dataset} if dataset else {})}  # fmt: skip
    cfg = HorizontalTreesConfig(rc.run_id, tuple(lenders), features, params,
                                timeout_s=float(p.get("timeout_s", 600.0)), data=data)  # fmt: skip
    rc.progress(f"horizontal trees: {len(lenders)} lenders x {len(features)} features, {params.n_trees} trees of "
                f"depth {params.max_depth}; histograms summed under CKKS")  # fmt: skip
    t0 = time.perf_counter()
    res = run_horizontal_trees(rc.channel, cfg, rc.progress)
    out: dict[str, Any] = {
        "run_id": rc.run_id, "model_id": rc.run_id, "version": version, "kind": "horizontal-gbdt",
        "model": "horizontal-gbdt", "trees": len(res.trees), "metrics": res.metrics, "secure": "he",
        "parties": {x: {"role": "lender", "features": list(features)} for x in lenders},
        "bytes_per_lender_per_tree": round(res.bytes_per_lender), "seconds": round(time.perf_counter() - t0, 3),
        "params": {k: v for k, v in params.to_dict().items() if k not in ("sticky_owners", "first_tree_owners")},
    }  # fmt: skip
    per = [m for m in res.metrics.values() if "auc" in m]
    total = sum(float(m.get("n", 1)) for m in per)
    if per and total > 0:
        out["summary_metrics"] = {
            f"val_{k}": sum(float(m.get(k, 0.0)) * float(m.get("n", 1)) for m in per) / total
            for k in ("auc", "ks", "bad_rate_at_80")
        }
    return out
