"""AUC, KS and Gini from score-bin counts, with stratified bootstrap confidence intervals.

The input is a score histogram per class: ``events[b]`` and ``nonevents[b]`` rows in score bin ``b``,
bins ordered by increasing risk (higher score = riskier). With one bin per distinct score the AUC and KS
are exact (equal to scikit-learn's ``roc_auc_score`` and :func:`models.metrics.ks`); with coarser bins
rows in the same bin count as ties. Histograms from several parties add up, so pooled metrics and their
intervals need only summed counts.

Bootstrap: stratified, as pROC's default: each replicate draws the events from
``Multinomial(E, events / E)`` and the non-events from ``Multinomial(N, nonevents / N)`` (resampling
rows with replacement within each class, expressed on counts), and the interval is the percentile
interval of the replicates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedcore.errors import InvalidInput

__all__ = ["MetricCI", "auc_from_counts", "bootstrap_metrics", "ks_from_counts", "score_counts"]


def score_counts(y: npt.ArrayLike, score: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores (ascending) with the events and non-events at each: the exact histogram."""
    yy = np.asarray(y)
    s = np.asarray(score, dtype=np.float64)
    if yy.shape != s.shape or yy.ndim != 1 or yy.size == 0:
        raise InvalidInput("y and score must be non-empty 1-D arrays of equal length")
    if not np.all((yy == 0) | (yy == 1)):
        raise InvalidInput("y must contain only 0 and 1 (1 = default)")
    if not np.all(np.isfinite(s)):
        raise InvalidInput("score contains NaN or infinite values")
    u, inv = np.unique(s, return_inverse=True)
    ev = np.bincount(inv, weights=yy.astype(np.float64), minlength=len(u))
    tot = np.bincount(inv, minlength=len(u))
    return u, ev, tot - ev


def _as_counts(events: npt.ArrayLike, nonevents: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    ev = np.asarray(events, dtype=np.float64)
    ne = np.asarray(nonevents, dtype=np.float64)
    if ev.shape != ne.shape or ev.shape[-1] == 0:
        raise InvalidInput(f"events and nonevents must have the same non-empty shape, got {ev.shape}, {ne.shape}")
    if np.any(ev < 0) or np.any(ne < 0):
        raise InvalidInput("counts must be non-negative")
    return ev, ne


def auc_from_counts(events: npt.ArrayLike, nonevents: npt.ArrayLike) -> np.ndarray | float:
    """AUC = P(event scores higher) + P(tie) / 2; works on the last axis (replicates x bins too)."""
    ev, ne = _as_counts(events, nonevents)
    E = ev.sum(axis=-1)
    N = ne.sum(axis=-1)
    if np.any(E <= 0) or np.any(N <= 0):
        raise InvalidInput("AUC needs both events and non-events")
    below = np.cumsum(ne, axis=-1) - ne
    a = ((ev * below).sum(axis=-1) + 0.5 * (ev * ne).sum(axis=-1)) / (E * N)
    return float(a) if np.ndim(a) == 0 else a


def ks_from_counts(events: npt.ArrayLike, nonevents: npt.ArrayLike) -> np.ndarray | float:
    """KS = max over cut-offs of |cumulative share of events - cumulative share of non-events|."""
    ev, ne = _as_counts(events, nonevents)
    E = ev.sum(axis=-1, keepdims=True)
    N = ne.sum(axis=-1, keepdims=True)
    if np.any(E <= 0) or np.any(N <= 0):
        raise InvalidInput("KS needs both events and non-events")
    k = np.abs(np.cumsum(ev, axis=-1) / E - np.cumsum(ne, axis=-1) / N).max(axis=-1)
    return float(k) if np.ndim(k) == 0 else k


@dataclass(frozen=True)
class MetricCI:
    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def bootstrap_metrics(
    events: npt.ArrayLike,
    nonevents: npt.ArrayLike,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | None = 0,
) -> dict[str, MetricCI]:
    """AUC, Gini (2 AUC - 1) and KS with percentile intervals from ``n_boot`` stratified replicates."""
    ev, ne = _as_counts(events, nonevents)
    if ev.ndim != 1:
        raise InvalidInput("bootstrap takes one histogram (1-D counts)")
    if n_boot < 10:
        raise InvalidInput(f"n_boot must be >= 10, got {n_boot!r}")
    if not 0 < level < 1:
        raise InvalidInput(f"level must be in (0, 1), got {level!r}")
    E, N = round(ev.sum()), round(ne.sum())
    if E <= 0 or N <= 0:
        raise InvalidInput("bootstrap needs both events and non-events")
    rng = np.random.default_rng(seed)
    be = rng.multinomial(E, ev / ev.sum(), size=n_boot).astype(np.float64)
    bn = rng.multinomial(N, ne / ne.sum(), size=n_boot).astype(np.float64)
    aucs = np.asarray(auc_from_counts(be, bn))
    kss = np.asarray(ks_from_counts(be, bn))
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    auc = float(auc_from_counts(ev, ne))
    ks = float(ks_from_counts(ev, ne))

    def ci(est: float, reps: np.ndarray) -> MetricCI:
        lo, hi = np.quantile(reps, [lo_q, hi_q])
        return MetricCI(est, float(lo), float(hi))

    return {"auc": ci(auc, aucs), "gini": ci(2 * auc - 1, 2 * aucs - 1), "ks": ci(ks, kss)}
