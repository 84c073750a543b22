"""Credit-risk evaluation metrics in plain numpy (no scikit-learn at runtime).

This module owns how fedcredit measures a scoring model. Every function takes ``y`` (0/1 labels,
1 = default / "bad") and ``p`` (a risk score where higher means riskier, typically the probability of
default) as 1-D arrays of equal, non-zero length:

- :func:`auc`: ROC AUC from average ranks (Mann-Whitney U); tied scores count one half, which is
  exactly what ``sklearn.metrics.roc_auc_score`` computes.
- :func:`roc_curve`: one point per distinct score, plus the origin.
- :func:`ks` / :func:`ks_curve`: Kolmogorov-Smirnov statistic, the largest gap between the cumulative
  share of bads and of goods when cutting at any score (equal to ``max |tpr - fpr|``).
- :func:`bad_rate_at_approval`: the default rate among the approved when the lowest-risk fraction is
  approved. Ties at the cut-off are shared pro rata (see its docstring), so the result never depends
  on row order.
- :func:`population_stability`: drift of a score distribution against a reference.
- :func:`evaluate`: the standard report (auc, ks, bad_rate_at_80).

Invalid input (empty, mismatched lengths, non-finite scores, labels other than 0/1, a single class
where both are needed) raises :class:`fedcore.errors.InvalidInput`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from fedcore.errors import InvalidInput

__all__ = [
    "KSCurve",
    "auc",
    "bad_rate_at_approval",
    "evaluate",
    "ks",
    "ks_curve",
    "population_stability",
    "roc_curve",
    "stability_of_shares",
]

STABILITY_EPSILON = 1e-4
"""Share given to a bin that holds no rows, so the population stability stays finite."""


def _check(y: npt.ArrayLike, p: npt.ArrayLike, *, need_both_classes: bool) -> tuple[np.ndarray, np.ndarray]:
    yy = np.asarray(y)
    pp = np.asarray(p)
    if yy.ndim != 1 or pp.ndim != 1:
        raise InvalidInput(f"y and p must be one-dimensional, got shapes {yy.shape} and {pp.shape}")
    if yy.shape[0] != pp.shape[0]:
        raise InvalidInput(f"y has {yy.shape[0]} entries but p has {pp.shape[0]}")
    if yy.shape[0] == 0:
        raise InvalidInput("y and p are empty")
    if not (np.issubdtype(pp.dtype, np.number) or np.issubdtype(pp.dtype, np.bool_)):
        raise InvalidInput(f"p must be numeric, got dtype {pp.dtype}")
    pp = pp.astype(np.float64, copy=False)
    if not np.all(np.isfinite(pp)):
        raise InvalidInput("p contains NaN or infinite values")
    try:
        is_binary = bool(np.all((yy == 0) | (yy == 1)))
    except (TypeError, ValueError):
        is_binary = False
    if not is_binary:
        raise InvalidInput("y must contain only 0 and 1 (1 = default)")
    yb = yy.astype(np.int64)
    if need_both_classes:
        n_pos = int(yb.sum())
        if n_pos == 0 or n_pos == yb.shape[0]:
            only = "1 (all defaults)" if n_pos else "0 (no defaults)"
            raise InvalidInput(f"y holds a single class, {only}; this metric needs both classes")
    return yb, pp


def _average_ranks(p: np.ndarray) -> np.ndarray:
    """1-based ranks of ``p`` with ties given their average rank."""
    order = np.argsort(p, kind="mergesort")
    sp = p[order]
    n = sp.shape[0]
    # start index of each run of equal values
    boundaries = np.flatnonzero(np.diff(sp)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [n]))  # exclusive
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    run_len = ends - starts
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(avg, run_len)
    return ranks


def auc(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Area under the ROC curve; ties in ``p`` count one half. Needs both classes in ``y``."""
    yb, pp = _check(y, p, need_both_classes=True)
    n_pos = int(yb.sum())
    n_neg = yb.shape[0] - n_pos
    ranks = _average_ranks(pp)
    u = float(ranks[yb == 1].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def _cumulative_counts(yb: np.ndarray, pp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds (descending) and the counts of bads and goods with score >= each."""
    order = np.argsort(-pp, kind="mergesort")
    sp = pp[order]
    sy = yb[order]
    last_of_run = np.concatenate((np.flatnonzero(np.diff(sp)), [sp.shape[0] - 1]))
    cum_bad = np.cumsum(sy)[last_of_run]
    cum_good = (last_of_run + 1) - cum_bad
    return sp[last_of_run], cum_bad.astype(np.float64), cum_good.astype(np.float64)


def roc_curve(y: npt.ArrayLike, p: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` with one point per distinct score (descending) plus ``(0, 0)`` at
    threshold ``+inf``; a row is flagged when ``p >= threshold``. Matches
    ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``. Needs both classes."""
    yb, pp = _check(y, p, need_both_classes=True)
    thr, cb, cg = _cumulative_counts(yb, pp)
    tpr = np.concatenate(([0.0], cb / cb[-1]))
    fpr = np.concatenate(([0.0], cg / cg[-1]))
    return fpr, tpr, np.concatenate(([np.inf], thr))


class KSCurve(NamedTuple):
    """Cumulative distributions behind the KS statistic, cutting from the riskiest score down.

    ``population[i]`` is the share of all rows with ``p >= thresholds[i]``; ``bad_cum`` and ``good_cum``
    the shares of bads and goods among them; ``ks`` is ``max |bad_cum - good_cum|``, reached at
    ``ks_threshold``.
    """

    thresholds: np.ndarray
    population: np.ndarray
    bad_cum: np.ndarray
    good_cum: np.ndarray
    ks: float
    ks_threshold: float


def ks_curve(y: npt.ArrayLike, p: npt.ArrayLike) -> KSCurve:
    """The KS curve (see :class:`KSCurve`). Needs both classes."""
    yb, pp = _check(y, p, need_both_classes=True)
    thr, cb, cg = _cumulative_counts(yb, pp)
    bad = cb / cb[-1]
    good = cg / cg[-1]
    diff = np.abs(bad - good)
    i = int(np.argmax(diff))
    pop = (cb + cg) / yb.shape[0]
    return KSCurve(thr, pop, bad, good, float(diff[i]), float(thr[i]))


def ks(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Kolmogorov-Smirnov statistic between the score distributions of bads and goods, in [0, 1]."""
    return ks_curve(y, p).ks


def bad_rate_at_approval(y: npt.ArrayLike, p: npt.ArrayLike, approval_rate: float = 0.8) -> float:
    """Default rate among approved applicants when the lowest-risk ``approval_rate`` share is approved.

    ``k = approval_rate * n`` rounded half up (at least 1) applicants are approved. Tie handling: if the k-th
    lowest score is shared by ``t`` rows of which only ``m`` fit in the approved set, each tied row is
    approved with weight ``m / t`` (the expected result of breaking ties at random), so the answer
    depends only on the scores, never on row order. Works with a single class.
    """
    yb, pp = _check(y, p, need_both_classes=False)
    rate = float(approval_rate)
    if not (0.0 < rate <= 1.0):
        raise InvalidInput(f"approval_rate must be in (0, 1], got {approval_rate!r}")
    n = yb.shape[0]
    k = max(1, math.floor(rate * n + 0.5))
    cut = np.partition(pp, k - 1)[k - 1]
    below = pp < cut
    tied = pp == cut
    n_below = int(below.sum())
    n_tied = int(tied.sum())
    m = k - n_below
    bads = float(yb[below].sum()) + m * float(yb[tied].sum()) / n_tied
    return bads / k


def _quantile_edges(expected: np.ndarray, bins: int) -> np.ndarray:
    qs = np.quantile(expected, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    return np.unique(qs)


def population_stability(
    expected_scores: npt.ArrayLike, actual_scores: npt.ArrayLike, bins: int = 10
) -> float:
    """Population stability = sum over bins of ``(a - e) * ln(a / e)``; ``e``, ``a`` are the shares of
    expected and actual scores per bin.

    Bins are quantiles of ``expected_scores`` (``bins`` of them; fewer if ties merge edges), open at
    both ends so every actual score lands in a bin; a bin is ``(edge[i-1], edge[i]]``. Empty bins get
    share :data:`STABILITY_EPSILON`. Rule of thumb: < 0.1 stable, 0.1-0.25 some shift, > 0.25 major shift.
    """
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 2:
        raise InvalidInput(f"bins must be an integer >= 2, got {bins!r}")
    arrays = []
    for name, s in (("expected_scores", expected_scores), ("actual_scores", actual_scores)):
        a = np.asarray(s)
        if a.ndim != 1:
            raise InvalidInput(f"{name} must be one-dimensional, got shape {a.shape}")
        if a.shape[0] == 0:
            raise InvalidInput(f"{name} is empty")
        if not np.issubdtype(a.dtype, np.number):
            raise InvalidInput(f"{name} must be numeric, got dtype {a.dtype}")
        a = a.astype(np.float64, copy=False)
        if not np.all(np.isfinite(a)):
            raise InvalidInput(f"{name} contains NaN or infinite values")
        arrays.append(a)
    exp, act = arrays
    edges = _quantile_edges(exp, bins)
    n_bins = edges.shape[0] + 1
    e = np.bincount(np.searchsorted(edges, exp, side="left"), minlength=n_bins) / exp.shape[0]
    a = np.bincount(np.searchsorted(edges, act, side="left"), minlength=n_bins) / act.shape[0]
    return stability_of_shares(e, a)


def stability_of_shares(e: np.ndarray, a: np.ndarray) -> float:
    """``sum((a - e) * ln(a / e))`` over bins; shares below :data:`STABILITY_EPSILON` count as that."""
    e = np.maximum(np.asarray(e, dtype=np.float64), STABILITY_EPSILON)
    a = np.maximum(np.asarray(a, dtype=np.float64), STABILITY_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def evaluate(y: npt.ArrayLike, p: npt.ArrayLike) -> dict[str, float]:
    """The standard report: ``auc``, ``ks``, ``bad_rate_at_80`` (approve the safest 80%), plus ``n`` and
    ``default_rate`` for context. Needs both classes."""
    yb, pp = _check(y, p, need_both_classes=True)
    return {
        "auc": auc(yb, pp),
        "ks": ks(yb, pp),
        "bad_rate_at_80": bad_rate_at_approval(yb, pp, 0.8),
        "n": float(yb.shape[0]),
        "default_rate": float(yb.mean()),
    }
