"""Per-feature binning: quantile edges for numbers, one bin per category, and a missing bin.

Every feature owns up to ``max_bins`` value bins ``0..n_bins-1`` and the shared missing slot
``max_bins`` (so a bin matrix is ``uint8``). A numeric value ``x`` falls in bin ``b`` when
``upper[b-1] < x <= upper[b]`` (``upper`` has ``n_bins - 1`` entries; the last bin is open), so the
binned split "bin <= t" is exactly the raw split "x <= upper[t]". NaN is missing.

A categorical feature keeps its ``max_bins`` most frequent categories (ties by value); a rarer or unseen
category, like ``None``/NaN/empty string, lands in the missing slot and follows the split's default
direction. Values are numbers or strings, one kind per feature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedcore.errors import InvalidInput

Columns = Mapping[str, npt.ArrayLike]


def columns_from_matrix(x: npt.ArrayLike, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Split a 2-D array into named columns."""
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != len(names):
        raise InvalidInput(f"expected a 2-D array with {len(names)} columns, got shape {arr.shape}")
    return {name: arr[:, j] for j, name in enumerate(names)}


def _numeric(values: npt.ArrayLike, name: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"feature {name!r}: numeric feature holds a non-number ({exc})") from None


def _categories(values: npt.ArrayLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(present mask, values as float or str array) of a categorical column."""
    arr = np.asarray(values)
    if arr.dtype.kind in "biuf":
        f = arr.astype(np.float64)
        return ~np.isnan(f), f
    obj = arr.astype(object)
    present = np.array([v is not None and v == v and v != "" for v in obj], dtype=bool)
    kinds = {type(v) for v in obj[present]}
    if kinds - {str}:
        raise InvalidInput(f"feature {name!r}: categories must be all numbers or all strings, got {kinds}")
    out = np.full(obj.shape, "", dtype=object)
    out[present] = obj[present]
    return present, out.astype(str)


@dataclass(frozen=True)
class FeatureBins:
    """How one feature maps to bins. Numeric: ``upper`` edges; categorical: ``categories`` (bin = index)."""

    name: str
    categorical: bool
    upper: tuple[float, ...] = ()
    categories: tuple[Any, ...] = ()

    @property
    def n_bins(self) -> int:
        return len(self.categories) if self.categorical else len(self.upper) + 1

    def transform(self, values: npt.ArrayLike, missing_bin: int) -> np.ndarray:
        if self.categorical:
            present, vals = _categories(values, self.name)
            out = np.full(vals.shape, missing_bin, dtype=np.uint8)
            if not self.categories:
                return out
            cats = np.asarray(self.categories, dtype=vals.dtype if vals.dtype.kind == "f" else str)
            order = np.argsort(cats, kind="stable")
            sorted_cats = cats[order]
            pos = np.searchsorted(sorted_cats, vals[present])
            pos = np.minimum(pos, len(sorted_cats) - 1)
            hit = sorted_cats[pos] == vals[present]
            idx = np.flatnonzero(present)
            out[idx[hit]] = order[pos[hit]].astype(np.uint8)
            return out
        x = _numeric(values, self.name)
        upper = np.asarray(self.upper, dtype=np.float64)
        if len(upper) <= 64:  # bin = number of edges below the value: a few vector compares beat searchsorted
            out = np.zeros(x.shape, dtype=np.uint8)
            for u in upper:
                out += x > u
        else:
            out = np.searchsorted(upper, x, side="left").astype(np.uint8)
        out[np.isnan(x)] = missing_bin
        return out

    def to_dict(self) -> dict[str, Any]:
        if self.categorical:
            return {"name": self.name, "categorical": True, "categories": list(self.categories)}
        return {"name": self.name, "categorical": False, "upper": list(self.upper)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureBins:
        if d.get("categorical"):
            return cls(str(d["name"]), True, categories=tuple(d["categories"]))
        return cls(str(d["name"]), False, upper=tuple(float(u) for u in d["upper"]))


def fit_feature(name: str, values: npt.ArrayLike, max_bins: int, categorical: bool) -> FeatureBins:
    """Bin edges of one feature from its training values."""
    if categorical:
        present, vals = _categories(values, name)
        uniq, counts = np.unique(vals[present], return_counts=True)
        order = np.lexsort((uniq, -counts))[:max_bins]
        cats = tuple(v.item() if hasattr(v, "item") else v for v in uniq[order])
        return FeatureBins(name, True, categories=cats)
    x = _numeric(values, name)
    if np.isinf(x).any():
        raise InvalidInput(f"feature {name!r}: infinite value at row {int(np.flatnonzero(np.isinf(x))[0])}")
    x = np.sort(x[~np.isnan(x)])  # sorted once: the distinct values and the quantiles come from it
    if x.size == 0:
        return FeatureBins(name, False, upper=())
    distinct = x[np.concatenate(([True], x[1:] != x[:-1]))]
    if distinct.size <= max_bins:
        upper = (distinct[:-1] + distinct[1:]) / 2.0
    else:
        qs = np.quantile(x, np.linspace(0.0, 1.0, max_bins + 1)[1:-1], method="inverted_cdf")
        upper = np.unique(qs)
        upper = upper[upper < distinct[-1]]
    return FeatureBins(name, False, upper=tuple(float(u) for u in upper))


@dataclass(frozen=True)
class BinMapper:
    """The bins of a set of features (one party's, or all of them in the central learner)."""

    features: tuple[FeatureBins, ...]
    max_bins: int

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def missing_bin(self) -> int:
        return self.max_bins

    @classmethod
    def fit(
        cls, columns: Columns, max_bins: int = 32, categorical: Sequence[str] = (), names: Sequence[str] | None = None
    ) -> BinMapper:
        names = list(columns) if names is None else list(names)
        unknown = sorted(set(categorical) - set(names))
        if unknown:
            raise InvalidInput(f"categorical feature(s) {unknown} are not among the columns")
        missing = [n for n in names if n not in columns]
        if missing:
            raise InvalidInput(f"column(s) {missing} are missing")
        cats = set(categorical)
        return cls(tuple(fit_feature(n, columns[n], max_bins, n in cats) for n in names), max_bins)

    def transform(self, columns: Columns) -> np.ndarray:
        """Bin matrix of shape (n_features, n_rows), ``uint8``, feature-major (one row per feature)."""
        missing = [f.name for f in self.features if f.name not in columns]
        if missing:
            raise InvalidInput(f"column(s) {missing} are missing")
        lengths = {f.name: len(np.asarray(columns[f.name])) for f in self.features}
        if len(set(lengths.values())) > 1:
            raise InvalidInput(f"columns have different lengths: {lengths}")
        n = next(iter(lengths.values()), 0)
        out = np.empty((len(self.features), n), dtype=np.uint8)
        for j, feat in enumerate(self.features):
            out[j] = feat.transform(columns[feat.name], self.missing_bin)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"max_bins": self.max_bins, "features": [f.to_dict() for f in self.features]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BinMapper:
        return cls(tuple(FeatureBins.from_dict(f) for f in d["features"]), int(d["max_bins"]))
