"""Fine pre-binning: equal-frequency numeric bins from a mergeable quantile sketch, and categorical
levels with rare ones merged.

Several lenders holding the same feature can pool their distributions without pooling rows: each
builds a :class:`QuantileSketch` of its values, the sketches are merged (:meth:`QuantileSketch.merge`)
and the equal-frequency cut points are read from the merged sketch. A sketch keeps at most ``size``
weighted points; each compression moves a point's rank by less than ``total / size``, so cut points
from a merged sketch are within a few ``1/size`` rank fractions of the pooled data's exact quantiles
(exact while a sketch holds no more than ``size`` distinct values). A sketch does reveal an
approximate distribution of its owner's values: pool sketches through a party trusted with that, or
pool per-level counts with masks instead (see :mod:`fedcore.protocol.binning`).

Categorical levels: :class:`LevelCounts` add up across parties; :func:`categorical_prebinning` keeps a
level as its own bin when it holds at least ``min_fraction`` of the non-missing rows, merges the others
into one "rare" bin, and declares where an unseen level goes (the rare bin if there is one, else the
missing bin).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedcore.errors import InvalidInput
from models.binning import CategoricalBinning, NumericBinning, _level_key, is_missing

__all__ = [
    "LevelCounts",
    "QuantileSketch",
    "categorical_prebinning",
    "equal_frequency_cuts",
    "numeric_prebinning",
]

DEFAULT_SKETCH_SIZE = 4096


@dataclass
class QuantileSketch:
    """Weighted, sorted sample points summarising a distribution; mergeable by concatenation."""

    values: np.ndarray = field(default_factory=lambda: np.empty(0))
    weights: np.ndarray = field(default_factory=lambda: np.empty(0))
    size: int = DEFAULT_SKETCH_SIZE

    @classmethod
    def of(cls, x: npt.ArrayLike, size: int = DEFAULT_SKETCH_SIZE) -> QuantileSketch:
        """Sketch of the finite values of ``x`` (NaN, the missing marker, is ignored)."""
        arr = np.asarray(x, dtype=np.float64).ravel()
        arr = arr[~np.isnan(arr)]
        if np.isinf(arr).any():
            raise InvalidInput("a quantile sketch takes finite values only")
        vals, counts = np.unique(arr, return_counts=True)
        return cls(vals, counts.astype(np.float64), size)._compress()

    @property
    def total(self) -> float:
        return float(self.weights.sum())

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        v = np.concatenate([self.values, other.values])
        w = np.concatenate([self.weights, other.weights])
        order = np.argsort(v, kind="stable")
        return QuantileSketch(v[order], w[order], max(self.size, other.size))._compress()

    def _compress(self) -> QuantileSketch:
        if len(self.values) <= self.size:
            return self
        cum = np.cumsum(self.weights)
        # Group consecutive points into `size` buckets of about equal weight; keep the weighted median
        # point of each bucket, carrying the bucket's whole weight.
        bucket = np.minimum(((cum - self.weights / 2) / cum[-1] * self.size).astype(np.int64), self.size - 1)
        starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        w = np.add.reduceat(self.weights, starts)
        ends = np.r_[starts[1:], len(self.values)]
        mid = cum[starts] - self.weights[starts] + w / 2
        pick = np.clip(np.searchsorted(cum, mid), starts, ends - 1)
        return QuantileSketch(self.values[pick], w, self.size)

    def quantiles(self, qs: npt.ArrayLike) -> np.ndarray:
        """Lower quantiles: the smallest sketched value whose cumulative share reaches each ``q``."""
        if self.total <= 0:
            raise InvalidInput("quantiles of an empty sketch")
        q = np.asarray(qs, dtype=np.float64)
        cum = np.cumsum(self.weights) / self.total
        idx = np.clip(np.searchsorted(cum, q - 1e-12, side="left"), 0, len(self.values) - 1)
        return np.asarray(self.values[idx])

    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values.tolist(), "weights": self.weights.tolist(), "size": self.size}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> QuantileSketch:
        try:
            v = np.asarray(d["values"], dtype=np.float64)
            w = np.asarray(d["weights"], dtype=np.float64)
            size = int(d["size"])
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInput(f"quantile sketch: bad field {e}") from e
        if v.shape != w.shape or v.ndim != 1 or size < 2 or np.any(np.diff(v) < 0) or np.any(w < 0):
            raise InvalidInput("quantile sketch: values must be sorted, weights non-negative, size >= 2")
        if not (np.all(np.isfinite(v)) and np.all(np.isfinite(w))):
            raise InvalidInput("quantile sketch: values and weights must be finite")
        return cls(v, w, size)


def equal_frequency_cuts(sketch: QuantileSketch, n_bins: int) -> tuple[float, ...]:
    """Cut points for about ``n_bins`` equal-frequency bins (fewer when values repeat).

    A cut at a value puts that value in the upper bin (left-closed bins), so a cut equal to the
    minimum would leave an empty first bin and is dropped."""
    if n_bins < 1:
        raise InvalidInput(f"n_bins must be >= 1, got {n_bins!r}")
    if sketch.total <= 0:
        return ()
    q = sketch.quantiles(np.arange(1, n_bins) / n_bins)
    lo = float(sketch.values[0])
    return tuple(float(c) for c in np.unique(q) if c > lo)


def numeric_prebinning(
    feature: str, values: Sequence[object] | np.ndarray | None = None, n_bins: int = 20,
    sketch: QuantileSketch | None = None,
) -> NumericBinning:
    """Equal-frequency fine binning of one numeric feature from its values or a (merged) sketch."""
    if sketch is None:
        if values is None:
            raise InvalidInput(f"feature {feature!r}: give values or a sketch")
        sketch = QuantileSketch.of(NumericBinning(feature, ()).to_numbers(values))
    return NumericBinning(feature, equal_frequency_cuts(sketch, n_bins))


@dataclass
class LevelCounts:
    """Rows per categorical level (missing values are not counted); adds up across parties."""

    counts: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, values: Iterable[object]) -> LevelCounts:
        return cls(Counter(_level_key(v) for v in values if not is_missing(v)))

    def __add__(self, other: LevelCounts) -> LevelCounts:
        return LevelCounts(self.counts + other.counts)


def categorical_prebinning(
    feature: str,
    values: Iterable[object] | None = None,
    *,
    level_counts: LevelCounts | None = None,
    min_fraction: float = 0.01,
    max_levels: int | None = None,
    unseen: str = "rare",
) -> CategoricalBinning:
    """Fine bins of a categorical feature: one per frequent level (most frequent first), rare ones merged.

    ``unseen`` declares where a level never seen here goes at transform time: ``"rare"`` (the rare
    bin, or the missing bin when no level was rare), ``"missing"``, or ``"error"``."""
    if level_counts is None:
        if values is None:
            raise InvalidInput(f"feature {feature!r}: give values or level counts")
        level_counts = LevelCounts.of(values)
    if not 0 <= min_fraction < 1:
        raise InvalidInput(f"min_fraction must be in [0, 1), got {min_fraction!r}")
    if unseen not in ("rare", "missing", "error"):
        raise InvalidInput(f"feature {feature!r}: unseen must be rare, missing or error, got {unseen!r}")
    items = sorted(level_counts.counts.items(), key=lambda kv: (-kv[1], kv[0]))
    total = sum(c for _, c in items)
    frequent = [lv for lv, c in items if total and c >= min_fraction * total]
    if max_levels is not None:
        frequent = frequent[:max_levels]
    rare = tuple(lv for lv, _ in items if lv not in set(frequent))
    groups: list[tuple[str, ...]] = [(lv,) for lv in frequent]
    if rare:
        groups.append(rare)
    missing_bin = len(groups)
    fallback: int | None
    if unseen == "error":
        fallback = None
    elif unseen == "missing" or not rare:
        fallback = missing_bin
    else:
        fallback = len(groups) - 1
    return CategoricalBinning(feature, tuple(groups), fallback)
