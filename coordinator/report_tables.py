"""The credit-committee tables of a model report, all from the pooled validation histogram (counts of
bads and goods per score bin; see :mod:`coordinator.report`): bootstrap confidence intervals of AUC,
Gini and KS; a calibration table by decile (predicted vs observed default rate, Hosmer-Lemeshow); the
score bands with the approval rate and bad rate at each cut-off, bands whose bad rate falls below the
previous (safer) band's flagged as non-monotone."""

from __future__ import annotations

from typing import Any

import numpy as np

from models import histograms as hm
from models.bands import non_monotone
from models.bootstrap import bootstrap_metrics
from models.calibration import calibration_table

__all__ = ["band_table", "calibration_by_decile", "confidence_intervals"]


def confidence_intervals(val: hm.Hist, n_boot: int = 500, seed: int = 0) -> dict[str, dict[str, float]]:
    """95% percentile intervals from stratified bootstrap replicates of the histogram."""
    return {k: v.to_dict() for k, v in bootstrap_metrics(val.bad, val.good, n_boot=n_boot, seed=seed).items()}


def _groups(total: np.ndarray, n_groups: int) -> np.ndarray:
    """Group of every score bin: about equal population, edges at bin resolution (as ``hm.bands``)."""
    cum = np.cumsum(total) / total.sum()
    return np.minimum((np.ceil(cum * n_groups - 1e-9) - 1).clip(0), n_groups - 1).astype(int)


def calibration_by_decile(val: hm.Hist) -> dict[str, Any]:
    """Predicted (mean PD, from the bin centres: within half a bin) vs observed default rate per decile
    of the validation population, lowest risk first, with the Hosmer-Lemeshow statistic."""
    total = val.total
    g = _groups(total, 10)
    centres = val.centers()
    n = np.bincount(g, weights=total, minlength=10)
    sum_p = np.bincount(g, weights=total * centres, minlength=10)
    ev = np.bincount(g, weights=val.bad, minlength=10)
    t = calibration_table(n, sum_p, ev)
    rows = [{"decile": i + 1, "n": float(a), "predicted": float(b), "observed": float(c)}
            for i, (a, b, c) in enumerate(zip(t.n, t.predicted, t.observed, strict=True))]
    return {"rows": rows, "hl_statistic": t.hl_statistic, "hl_df": t.hl_df, "hl_pvalue": t.hl_pvalue}


def band_table(val: hm.Hist, n_bands: int = 10) -> list[dict[str, Any]]:
    """``hm.bands`` with, at each band's upper cut-off (approve it and every safer band), the approval
    rate and the bad rate among the approved; ``non_monotone`` marks a band less risky than the one before."""
    rows = [dict(b) for b in hm.bands(val, n_bands)]
    total = sum(r["count"] for r in rows)
    flagged = set(non_monotone([r["bad_rate"] for r in rows]))
    approved = bads = 0.0
    for i, r in enumerate(rows):
        approved += r["count"]
        bads += r["bads"]
        r.update(approval_rate=approved / total, bad_rate_approved=bads / approved, non_monotone=i in flagged)
    return rows
