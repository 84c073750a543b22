"""Scorecard scaling and reason codes.

This module owns how a probability of default becomes the points a loan officer sees, and which
features are reported as the reasons for a low score.

Scaling (odds are good:bad, ``odds = (1 - p) / p``)::

    points = offset + factor * ln(odds),   factor = pdo / ln 2,   offset = base_score - factor * ln(base_odds)

so an applicant at ``base_odds`` scores ``base_score`` and every doubling of the odds adds ``pdo``
points. Since ``ln(odds) = -logit``, :meth:`Scorecard.points_from_logit` maps a (jointly computed)
logit straight to points without going through a probability.

Reason codes (:func:`reason_codes`): given an applicant's per-feature contributions to the logit
(for a linear model, ``coef[j] * x[j]``) and a reference (usually the population mean contribution),
the adverse features are those whose contribution exceeds the reference, i.e. that push the risk up;
the top ``k`` by excess are returned with names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

from fedcore.errors import InvalidInput

__all__ = ["ReasonCode", "Scorecard", "linear_contributions", "reason_codes"]

PROB_CLIP = 1e-12
"""Probabilities of exactly 0 or 1 are clipped to ``[PROB_CLIP, 1 - PROB_CLIP]`` so points stay finite."""


def _finite_number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidInput(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise InvalidInput(f"{name} must be finite, got {value!r}")
    return v


def _as_float_array(values: object, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"{name} must be numeric") from e
    if not np.all(np.isfinite(arr)):
        raise InvalidInput(f"{name} contains NaN or infinite values")
    return arr


@dataclass(frozen=True)
class Scorecard:
    """Points scaling. ``base_score`` points at good:bad odds ``base_odds``; ``pdo`` points to double
    the odds. All three are validated on construction (errors name the field)."""

    base_score: float = 600.0
    base_odds: float = 50.0
    pdo: float = 20.0

    def __post_init__(self) -> None:
        base_score = _finite_number(self.base_score, "base_score")
        base_odds = _finite_number(self.base_odds, "base_odds")
        pdo = _finite_number(self.pdo, "pdo")
        if base_odds <= 0:
            raise InvalidInput(f"base_odds must be > 0 (good:bad odds), got {self.base_odds!r}")
        if pdo <= 0:
            raise InvalidInput(f"pdo must be > 0 (points to double the odds), got {self.pdo!r}")
        object.__setattr__(self, "base_score", base_score)
        object.__setattr__(self, "base_odds", base_odds)
        object.__setattr__(self, "pdo", pdo)

    @property
    def factor(self) -> float:
        """Points per unit of log-odds: ``pdo / ln 2``."""
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        """Points at odds 1:1: ``base_score - factor * ln(base_odds)``."""
        return self.base_score - self.factor * math.log(self.base_odds)

    @overload
    def points(self, prob_default: float) -> float: ...
    @overload
    def points(self, prob_default: np.ndarray | Sequence[float]) -> np.ndarray: ...

    def points(self, prob_default: float | np.ndarray | Sequence[float]) -> float | np.ndarray:
        """Points for probabilities of default in ``[0, 1]`` (scalar in, float out; array in, array out)."""
        p = _as_float_array(prob_default, "prob_default")
        if np.any((p < 0) | (p > 1)):
            raise InvalidInput("prob_default must be in [0, 1]")
        p = np.clip(p, PROB_CLIP, 1.0 - PROB_CLIP)
        pts = self.offset + self.factor * (np.log1p(-p) - np.log(p))
        return float(pts) if pts.ndim == 0 else pts

    @overload
    def points_from_logit(self, logit: float) -> float: ...
    @overload
    def points_from_logit(self, logit: np.ndarray | Sequence[float]) -> np.ndarray: ...

    def points_from_logit(self, logit: float | np.ndarray | Sequence[float]) -> float | np.ndarray:
        """Points for a logit of default (``ln(p / (1 - p))``): ``offset - factor * logit``."""
        z = _as_float_array(logit, "logit")
        pts = self.offset - self.factor * z
        return float(pts) if pts.ndim == 0 else pts

    @overload
    def prob_from_points(self, points: float) -> float: ...
    @overload
    def prob_from_points(self, points: np.ndarray | Sequence[float]) -> np.ndarray: ...

    def prob_from_points(self, points: float | np.ndarray | Sequence[float]) -> float | np.ndarray:
        """Inverse of :meth:`points`: probability of default for a number of points."""
        s = _as_float_array(points, "points")
        z = (self.offset - s) / self.factor  # logit of default
        p = np.exp(-np.logaddexp(0.0, -z))  # sigmoid(z), stable for large |z|
        return float(p) if p.ndim == 0 else p

    def to_dict(self) -> dict[str, float]:
        return {"base_score": self.base_score, "base_odds": self.base_odds, "pdo": self.pdo}


@dataclass(frozen=True)
class ReasonCode:
    """One adverse feature: its name and index, how much it raises the logit above the reference, and
    (when a scorecard was given) how many points it costs."""

    feature: str
    index: int
    logit_impact: float
    points_lost: float | None = None


def linear_contributions(coef: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per-feature logit contributions ``coef * x`` of a linear model, for one row or many (rows x cols)."""
    c = _as_float_array(coef, "coef").reshape(-1)
    xx = _as_float_array(x, "x")
    if xx.shape[-1] != c.shape[0]:
        raise InvalidInput(f"x has {xx.shape[-1]} features but coef has {c.shape[0]}")
    return xx * c


def reason_codes(
    contributions: np.ndarray,
    reference: np.ndarray,
    feature_names: Sequence[str],
    top_k: int = 4,
    scorecard: Scorecard | None = None,
) -> list[ReasonCode]:
    """Top ``top_k`` adverse features of one applicant, most adverse first.

    ``contributions`` and ``reference`` are per-feature logit contributions (higher = riskier) of the
    applicant and of the reference (e.g. the population mean of the contributions). Only features whose
    contribution exceeds the reference are adverse, so fewer than ``top_k`` codes may be returned.
    Ties are broken by feature order.
    """
    c = _as_float_array(contributions, "contributions")
    r = _as_float_array(reference, "reference")
    if c.ndim != 1:
        raise InvalidInput(f"contributions must be one applicant's 1-D vector, got shape {c.shape}")
    if r.shape != c.shape:
        raise InvalidInput(f"reference has shape {r.shape}, contributions have {c.shape}")
    names = list(feature_names)
    if len(names) != c.shape[0]:
        raise InvalidInput(f"feature_names has {len(names)} names for {c.shape[0]} contributions")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise InvalidInput(f"top_k must be a positive integer, got {top_k!r}")
    index, impact = top_adverse((c - r)[None, :], top_k)
    out: list[ReasonCode] = []
    for j, v in zip(index[0], impact[0], strict=True):
        if j < 0:
            break
        pts = scorecard.factor * float(v) if scorecard is not None else None
        out.append(ReasonCode(feature=names[j], index=int(j), logit_impact=float(v), points_lost=pts))
    return out


def top_adverse(excess: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """The reason-code ranking for many applicants at once: per row of ``excess`` (logit contribution
    above the reference, applicants x features) the indices of the ``top_k`` most adverse features, most
    adverse first (-1 where a feature is not adverse), and their excess. Ties are broken by feature order."""
    e = np.asarray(excess, dtype=np.float64)
    k = min(top_k, e.shape[1])
    order = np.argsort(-e, axis=1, kind="stable")[:, :k]
    impact = np.take_along_axis(e, order, axis=1)
    return np.where(impact > 0, order, -1), impact
