"""One definition of a model's validation metrics everywhere (CLI, dashboard, report): AUC, KS and bad
rate at 80% approval of the POOLED validation scores, from the score histograms by label that every
party that trained the model sends for the report (:func:`coordinator.contribution.collect_histograms`;
counts per score bin, no subject's data). Not a mean of per-party values."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fedcore.errors import FedcreditError
from fedcore.protocol.channel import PartyChannel
from models import histograms as hm

from .contribution import collect_histograms

log = logging.getLogger(__name__)

__all__ = ["pooled_validation_metrics", "with_pooled_metrics"]


def pooled_validation_metrics(channel: PartyChannel, parties: Sequence[str], model_run: str, version: str,
                              run_id: str = "") -> dict[str, float]:
    full = collect_histograms(channel, parties, model_run, version, run_id=run_id)
    val = hm.merge(h.val for h in full.values())
    _, _, _, ks, _ = hm.ks_curve(val)
    return {"val_auc": hm.auc(val), "val_ks": ks, "val_bad_rate_at_80": hm.bad_rate_at_approval(val, 0.8),
            "val_rows": float(val.n)}


def with_pooled_metrics(result: dict[str, Any], channel: PartyChannel, parties: Sequence[str], run_id: str,
                        key: str = "metrics") -> dict[str, Any]:
    """``result`` with ``result[key]``'s validation AUC/KS replaced by the pooled ones (the per-party
    mean kept as ``val_ks_mean_of_parties``); unchanged, with a warning, if a party cannot answer."""
    try:
        pooled = pooled_validation_metrics(channel, parties, run_id, str(result.get("version", "1")), run_id)
    except FedcreditError as exc:
        log.warning("model %s: pooled validation metrics unavailable (%s); keeping the per-party mean", run_id, exc)
        return result
    metrics = dict(result.get(key) or {})
    if "val_ks" in metrics:
        metrics["val_ks_mean_of_parties"] = metrics["val_ks"]
    metrics.update(pooled)
    return {**result, key: metrics, "metrics_pooled": True}
