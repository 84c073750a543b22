"""Credit-risk metrics from score histograms (counts per score bin, by label): what the coordinator
computes for evaluation reports and contribution accounting without ever seeing a per-subject score.

A party answers the :data:`REPORT_TASK` task with, for one model and one of its data splits, the number
of bads and goods whose predicted probability of default falls in each of ``bins`` equal-width bins of
``[0, 1]`` (:func:`histogram`). Histograms from several parties add up (:func:`merge`), and every
metric here is computed on the merged counts. Within a bin, scores count as tied (the same convention
as :mod:`models.metrics`), so with 1000 bins AUC and KS agree with the row-level metrics to about 1e-3.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedcore.errors import InvalidInput
from models.metrics import stability_of_shares

__all__ = [
    "DEFAULT_BINS",
    "REPORT_TASK",
    "Hist",
    "auc",
    "bad_rate_at_approval",
    "bands",
    "coarsen",
    "histogram",
    "ks_curve",
    "merge",
    "population_stability",
    "roc_curve",
]

REPORT_TASK = "report.histograms"
"""Task kind: score histograms by label of one model on a party's own data split."""

DEFAULT_BINS = 1000
MAX_BINS = 10_000
MIN_BIN_COUNT = 10
"""Fewest subjects a reported bin may hold: a party merges sparser neighbouring bins (:func:`coarsen`)
before a histogram leaves it, so no bin describes a single subject (a lone defaulter, say)."""


@dataclass(frozen=True)
class Hist:
    """Counts of bads and goods per score bin (bin ``i`` covers ``[i/n, (i+1)/n)``; the last includes 1)."""

    bad: np.ndarray
    good: np.ndarray

    def __post_init__(self) -> None:
        if self.bad.shape != self.good.shape or self.bad.ndim != 1 or self.bad.shape[0] < 2:
            raise InvalidInput("a score histogram needs two equal 1-D count vectors of at least 2 bins")
        if np.any(self.bad < 0) or np.any(self.good < 0):
            raise InvalidInput("score histogram counts must be >= 0")

    @property
    def bins(self) -> int:
        return int(self.bad.shape[0])

    @property
    def total(self) -> np.ndarray:
        return self.bad + self.good

    @property
    def n_bad(self) -> float:
        return float(self.bad.sum())

    @property
    def n_good(self) -> float:
        return float(self.good.sum())

    @property
    def n(self) -> float:
        return self.n_bad + self.n_good

    def centers(self) -> np.ndarray:
        return (np.arange(self.bins) + 0.5) / self.bins

    def to_params(self) -> dict[str, list[int]]:
        return {"bad": [int(v) for v in self.bad], "good": [int(v) for v in self.good]}

    @classmethod
    def from_params(cls, d: object) -> Hist:
        if not isinstance(d, dict) or "bad" not in d or "good" not in d:
            raise InvalidInput("score histogram must be a map with 'bad' and 'good' count lists")
        return cls(np.asarray(d["bad"], dtype=np.float64), np.asarray(d["good"], dtype=np.float64))


def _bin_index(p: np.ndarray, bins: int) -> np.ndarray:
    return np.clip(np.floor(p * bins).astype(np.int64), 0, bins - 1)


def histogram(y: npt.ArrayLike | None, p: npt.ArrayLike, bins: int = DEFAULT_BINS) -> Hist:
    """Counts per bin of probabilities ``p`` in [0, 1]; ``y`` (0/1, 1 = bad) splits them by label.
    Without labels (``y=None``), every row counts as good (use ``.total`` only)."""
    if not isinstance(bins, int) or not 2 <= bins <= MAX_BINS:
        raise InvalidInput(f"bins must be an integer in [2, {MAX_BINS}], got {bins!r}")
    pp = np.asarray(p, dtype=np.float64)
    if pp.ndim != 1 or not np.all(np.isfinite(pp)):
        raise InvalidInput("scores must be a 1-D array of finite values")
    idx = _bin_index(np.clip(pp, 0.0, 1.0), bins)
    if y is None:
        return Hist(np.zeros(bins), np.bincount(idx, minlength=bins).astype(np.float64))
    yy = np.asarray(y)
    if yy.shape != pp.shape or not np.all((yy == 0) | (yy == 1)):
        raise InvalidInput("labels must be 0/1 and as many as the scores")
    bad = np.bincount(idx[yy == 1], minlength=bins).astype(np.float64)
    good = np.bincount(idx[yy == 0], minlength=bins).astype(np.float64)
    return Hist(bad, good)


def coarsen(h: Hist, min_count: int = MIN_BIN_COUNT) -> Hist:
    """Merge runs of neighbouring bins until every non-empty bin holds at least ``min_count`` subjects
    (bads + goods), keeping the bin layout: a group's counts go to the bin at its count-weighted mean
    position, the rest of the group reads zero. Totals are kept; ranks move by less than a group's width.
    A last group short of ``min_count`` joins the one before it. Fewer than ``min_count`` subjects in all
    give one bin."""
    if min_count <= 1 or h.n == 0:
        return h
    total = h.total
    groups: list[list[int]] = []
    current: list[int] = []
    count = 0.0
    for i in range(h.bins):
        if total[i] == 0:
            continue
        current.append(i)
        count += float(total[i])
        if count >= min_count:
            groups.append(current)
            current, count = [], 0.0
    if current:
        if groups:
            groups[-1].extend(current)
        else:
            groups.append(current)
    bad, good = np.zeros(h.bins), np.zeros(h.bins)
    for g in groups:
        idx = np.asarray(g)
        at = round(float(np.average(idx, weights=total[idx])))
        bad[at] += h.bad[idx].sum()
        good[at] += h.good[idx].sum()
    return Hist(bad, good)


def merge(hists: Iterable[Hist]) -> Hist:
    """The sum of histograms with the same bins."""
    items = list(hists)
    if not items:
        raise InvalidInput("no histograms to merge")
    if len({h.bins for h in items}) != 1:
        raise InvalidInput("histograms have different bins")
    zero = np.zeros(items[0].bins)
    return Hist(sum((h.bad for h in items), zero), sum((h.good for h in items), zero))


def _need_both(h: Hist) -> None:
    if h.n_bad == 0 or h.n_good == 0:
        raise InvalidInput("this metric needs both bads and goods in the histogram")


def roc_curve(h: Hist) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` cutting from the riskiest bin down, starting at (0, 0)."""
    _need_both(h)
    cb = np.concatenate(([0.0], np.cumsum(h.bad[::-1]))) / h.n_bad
    cg = np.concatenate(([0.0], np.cumsum(h.good[::-1]))) / h.n_good
    return cg, cb


def auc(h: Hist) -> float:
    """P(a bad scores above a good), ties within a bin counting one half."""
    _need_both(h)
    bad_above = np.concatenate(([0.0], np.cumsum(h.bad[::-1])[:-1]))[::-1]  # bads in strictly higher bins
    return float(np.sum(h.good * (bad_above + 0.5 * h.bad)) / (h.n_bad * h.n_good))


def ks_curve(h: Hist) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """``(thresholds, bad_cum, good_cum, ks, ks_threshold)`` cutting from the riskiest bin down:
    ``bad_cum[i]`` is the share of bads scoring at least ``thresholds[i]`` (a bin's lower edge)."""
    _need_both(h)
    thr = np.arange(h.bins - 1, -1, -1) / h.bins
    cb = np.cumsum(h.bad[::-1]) / h.n_bad
    cg = np.cumsum(h.good[::-1]) / h.n_good
    diff = np.abs(cb - cg)
    i = int(np.argmax(diff))
    return thr, cb, cg, float(diff[i]), float(thr[i])


def bad_rate_at_approval(h: Hist, approval_rate: float = 0.8) -> float:
    """Default rate among the approved when the lowest-risk ``approval_rate`` share is approved; the
    bin at the cut-off is approved pro rata (ties broken at random, in expectation)."""
    if not 0.0 < approval_rate <= 1.0:
        raise InvalidInput(f"approval_rate must be in (0, 1], got {approval_rate!r}")
    if h.n <= 0:
        raise InvalidInput("the histogram is empty")
    k = max(1.0, math.floor(approval_rate * h.n + 0.5))
    total = h.total
    cum = np.cumsum(total)
    j = int(np.searchsorted(cum, k, side="left"))
    before = float(cum[j - 1]) if j > 0 else 0.0
    bads = float(h.bad[:j].sum())
    if total[j] > 0:
        bads += (k - before) * float(h.bad[j]) / float(total[j])
    return bads / k


def bands(h: Hist, n_bands: int = 10) -> list[dict[str, float]]:
    """Score bands of about equal population (edges at bin resolution), lowest risk first, with their
    count, bads and bad rate."""
    total = h.total
    if total.sum() <= 0:
        raise InvalidInput("the histogram is empty")
    cum = np.cumsum(total) / total.sum()
    band_of = np.minimum((np.ceil(cum * n_bands - 1e-9) - 1).clip(0), n_bands - 1).astype(int)
    out = []
    for b in range(n_bands):
        sel = band_of == b
        if not sel.any() or total[sel].sum() == 0:
            continue
        idx = np.flatnonzero(sel)
        n, bad = float(total[sel].sum()), float(h.bad[sel].sum())
        out.append({"band": b + 1, "score_from": idx[0] / h.bins, "score_to": (idx[-1] + 1) / h.bins,
                    "count": n, "bads": bad, "bad_rate": bad / n})
    return out


def population_stability(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray,
                         n_bands: int = 10) -> float:
    """Population stability index of ``actual`` counts against ``expected`` counts (same bins), over
    bands that hold about equal shares of the expected population."""
    e, a = np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.sum() <= 0 or a.sum() <= 0:
        raise InvalidInput("population stability needs two non-empty histograms with the same bins")
    cum = np.cumsum(e) / e.sum()
    band_of = np.minimum((np.ceil(cum * n_bands - 1e-9) - 1).clip(0), n_bands - 1).astype(int)
    es = np.bincount(band_of, weights=e, minlength=n_bands) / e.sum()
    as_ = np.bincount(band_of, weights=a, minlength=n_bands) / a.sum()
    keep = (es > 0) | (as_ > 0)
    return stability_of_shares(es[keep], as_[keep])
