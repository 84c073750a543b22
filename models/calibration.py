"""Calibration from group counts: decile table, Hosmer-Lemeshow test, and Platt recalibration.

A calibration table needs, per group of predicted PD, three sums: rows ``n``, predicted defaults
``sum_p`` and observed defaults ``events``. Parties can add these up for groups with shared PD edges, so
the same functions serve one party and a pooled federation.

Hosmer-Lemeshow::

    HL = sum_g (O_g - E_g)^2 / (E_g * (1 - E_g / n_g)),   df = G - 2,   p = P(chi2_df > HL)

(groups with ``n_g = 0`` or ``E_g`` in {0, n_g} are skipped). A small p-value means the predicted PDs
do not match the observed default rates.

:func:`platt_from_counts` fits ``PD' = sigmoid(a + b * logit(PD))`` by Newton's method on grouped
counts (one representative logit per group): the recalibration that turns a score with the right
ranking but the wrong level (say, trained on a balanced sample) into PDs that match the portfolio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedcore.errors import InvalidInput

__all__ = [
    "CalibrationTable",
    "Platt",
    "calibration_counts",
    "calibration_table",
    "chi2_sf",
    "pd_edges",
    "platt_from_counts",
]


def chi2_sf(x: float, df: int) -> float:
    """Survival function of the chi-square distribution for an integer ``df >= 1`` (closed forms)."""
    if df < 1:
        raise InvalidInput(f"df must be >= 1, got {df}")
    if x <= 0:
        return 1.0
    h = x / 2.0
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for i in range(1, df // 2):
            term *= h / i
            total += term
        return math.exp(-h) * total
    total = math.erfc(math.sqrt(h))
    term = math.sqrt(h) * math.exp(-h) / math.gamma(1.5)
    k = 1.5
    for _ in range((df - 1) // 2):
        total += term
        term *= h / k
        k += 1.0
    return min(1.0, total)


def pd_edges(p: npt.ArrayLike, n_groups: int = 10) -> np.ndarray:
    """Inner edges of ``n_groups`` equal-frequency groups of predicted PD (deciles by default)."""
    pp = np.asarray(p, dtype=np.float64)
    if pp.size == 0 or not np.all(np.isfinite(pp)) or n_groups < 2:
        raise InvalidInput("need finite predictions and n_groups >= 2")
    return np.unique(np.quantile(pp, np.arange(1, n_groups) / n_groups))


def calibration_counts(
    y: npt.ArrayLike, p: npt.ArrayLike, edges: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group (``p < edges[0]``, ..., ``p >= edges[-1]``): rows, sum of predicted PD, events."""
    yy = np.asarray(y, dtype=np.float64)
    pp = np.asarray(p, dtype=np.float64)
    if yy.shape != pp.shape or yy.ndim != 1:
        raise InvalidInput("y and p must be 1-D of equal length")
    if np.any((pp < 0) | (pp > 1)) or not np.all(np.isfinite(pp)):
        raise InvalidInput("p must be probabilities in [0, 1]")
    e = np.asarray(edges, dtype=np.float64)
    g = np.searchsorted(e, pp, side="right")
    m = len(e) + 1
    return (
        np.bincount(g, minlength=m).astype(np.float64),
        np.bincount(g, weights=pp, minlength=m),
        np.bincount(g, weights=yy, minlength=m),
    )


@dataclass(frozen=True)
class CalibrationTable:
    n: np.ndarray
    predicted: np.ndarray
    observed: np.ndarray
    hl_statistic: float
    hl_df: int
    hl_pvalue: float

    def records(self) -> list[dict[str, float]]:
        return [
            {"group": i + 1, "n": float(n), "predicted_pd": float(p), "observed_default_rate": float(o)}
            for i, (n, p, o) in enumerate(zip(self.n, self.predicted, self.observed, strict=True))
        ]


def calibration_table(n: npt.ArrayLike, sum_p: npt.ArrayLike, events: npt.ArrayLike) -> CalibrationTable:
    """Predicted vs observed default rate per group, with the Hosmer-Lemeshow test."""
    nn = np.asarray(n, dtype=np.float64)
    sp = np.asarray(sum_p, dtype=np.float64)
    ev = np.asarray(events, dtype=np.float64)
    if not (nn.shape == sp.shape == ev.shape) or nn.ndim != 1:
        raise InvalidInput("n, sum_p and events must be 1-D of equal length")
    if np.any(nn < 0) or np.any(ev < 0) or np.any(ev > nn):
        raise InvalidInput("counts must satisfy 0 <= events <= n")
    keep = nn > 0
    pred = np.divide(sp, nn, out=np.zeros_like(sp), where=keep)
    obs = np.divide(ev, nn, out=np.zeros_like(ev), where=keep)
    var = sp * (1 - pred)
    ok = keep & (var > 0)
    hl = float(np.sum((ev[ok] - sp[ok]) ** 2 / var[ok]))
    df = max(int(ok.sum()) - 2, 1)
    return CalibrationTable(nn[keep], pred[keep], obs[keep], hl, df, chi2_sf(hl, df))


@dataclass(frozen=True)
class Platt:
    """``PD' = sigmoid(a + b * logit(PD))``."""

    a: float
    b: float

    def __call__(self, p: npt.ArrayLike) -> np.ndarray:
        pp = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
        z = self.a + self.b * (np.log(pp) - np.log1p(-pp))
        return np.asarray(np.exp(-np.logaddexp(0.0, -z)))


def platt_from_counts(
    logits: npt.ArrayLike, n: npt.ArrayLike, events: npt.ArrayLike, *, max_iter: int = 100
) -> Platt:
    """Maximum-likelihood ``a, b`` from grouped data (group logit, rows, events) by Newton's method."""
    x = np.asarray(logits, dtype=np.float64)
    nn = np.asarray(n, dtype=np.float64)
    ev = np.asarray(events, dtype=np.float64)
    if not (x.shape == nn.shape == ev.shape) or x.ndim != 1 or not np.all(np.isfinite(x)):
        raise InvalidInput("logits, n and events must be finite 1-D arrays of equal length")
    if ev.sum() <= 0 or ev.sum() >= nn.sum():
        raise InvalidInput("recalibration needs both events and non-events")
    X = np.column_stack([np.ones_like(x), x])
    w = np.array([math.log(ev.sum() / (nn.sum() - ev.sum())), 1.0])
    for _ in range(max_iter):
        mu = np.exp(-np.logaddexp(0.0, -(X @ w)))
        grad = X.T @ (ev - nn * mu)
        hess = (X * (nn * mu * (1 - mu))[:, None]).T @ X + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w = w + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return Platt(float(w[0]), float(w[1]))
