"""Gradient histograms and where they come from.

Split finding reads nothing but histograms: per (feature, bin) sums of the gradient ``g`` and hessian
``h`` of the rows in a node. A :class:`HistogramSource` supplies them and applies the chosen splits; the
learner never touches rows. :class:`LocalHistogramSource` computes them with numpy from a bin matrix;
a federated source supplies the same sums added up across lenders, or aggregated by the platform over
masked gradients, and asks the feature's owner to apply a split (the owner alone keeps the threshold).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from models.gbdt.binning import BinMapper
from models.gbdt.split import SplitDecision
from models.gbdt.tree import SplitRule, SplitTable

# g and h are rounded to multiples of 2^-32: float64 sums of such values (below 2^21 in magnitude) are
# exact, so histograms do not depend on summation order, subtraction leaves exact zeros in empty bins,
# and the federated protocols (fixed point with this quantum) reproduce the central histograms bit for bit.
GRADIENT_FRAC_BITS = 32


def quantize(x: np.ndarray) -> np.ndarray:
    scale = float(1 << GRADIENT_FRAC_BITS)
    return np.round(np.asarray(x, dtype=np.float64) * scale) / scale


@dataclass(frozen=True)
class FeatureSpec:
    """What the learner knows of a feature: its owner, bin count, kind and monotone sign (no edges)."""

    name: str
    owner: str
    n_bins: int
    categorical: bool = False
    monotone: int = 0


@dataclass(frozen=True)
class FeatureLayout:
    """All features the learner may split on. Histograms have ``max_bins + 1`` slots per feature; the last
    slot is the missing bin."""

    features: tuple[FeatureSpec, ...]
    max_bins: int

    @property
    def n_slots(self) -> int:
        return self.max_bins + 1

    @property
    def missing_slot(self) -> int:
        return self.max_bins

    def __len__(self) -> int:
        return len(self.features)

    @property
    def owners(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.owner for f in self.features))


@dataclass
class Histogram:
    """Sums of ``g`` and ``h`` per (feature, slot), each of shape (n_features, n_slots). Features not
    requested when it was built hold zeros."""

    g: np.ndarray
    h: np.ndarray

    def __sub__(self, other: Histogram) -> Histogram:
        return Histogram(self.g - other.g, self.h - other.h)

    @classmethod
    def zeros(cls, n_features: int, n_slots: int) -> Histogram:
        return cls(np.zeros((n_features, n_slots)), np.zeros((n_features, n_slots)))


class HistogramSource(Protocol):
    """Where a tree's histograms come from. Node 0 is the root and holds every (sampled) row of this tree;
    the learner names child nodes when it splits."""

    layout: FeatureLayout

    def build(self, nodes: Sequence[int], features: np.ndarray) -> list[Histogram]:
        """Histograms of ``nodes`` over the feature indices ``features`` (one per node, same order)."""
        ...

    def split(self, splits: Sequence[tuple[int, SplitDecision, int, int]]) -> list[tuple[str, int]]:
        """Apply ``(node, decision, left_id, right_id)`` splits; return each split's (owner, opaque ref)."""
        ...


class LocalHistogramSource:
    """Histograms from a feature-major ``uint8`` bin matrix in this process (the central learner).

    ``begin_tree`` loads the gradients of one tree and the rows it samples. Split rules go into one
    :class:`SplitTable` per owner, built from ``mappers`` (each owner's bin edges).
    """

    def __init__(self, bins: np.ndarray, layout: FeatureLayout, mappers: dict[str, BinMapper]) -> None:
        self.bins = bins
        self.layout = layout
        self.tables: dict[str, SplitTable] = {o: SplitTable(o) for o in layout.owners}
        self._bins_of: dict[str, tuple[int, ...]] = {}
        by_name = {fb.name: fb for m in mappers.values() for fb in m.features}
        self._feature_bins = [by_name[f.name] for f in layout.features]
        self._rows: dict[int, np.ndarray] = {}
        self._g = np.zeros(0)
        self._h = np.zeros(0)

    def begin_tree(self, g: np.ndarray, h: np.ndarray, rows: np.ndarray | None = None) -> None:
        self._g = quantize(g)
        self._h = quantize(h)
        n = self.bins.shape[1]
        self._rows = {0: np.arange(n) if rows is None else np.asarray(rows)}

    def build(self, nodes: Sequence[int], features: np.ndarray) -> list[Histogram]:
        out = []
        slots = self.layout.n_slots
        n = self.bins.shape[1]
        for node in nodes:
            rows = self._rows[node]
            hist = Histogram.zeros(len(self.layout), slots)
            whole = len(rows) == n  # the root without row sampling: no gather needed
            g = self._g if whole else self._g[rows]
            h = self._h if whole else self._h[rows]
            for f in features:
                b = self.bins[f] if whole else self.bins[f, rows]
                hist.g[f] = np.bincount(b, weights=g, minlength=slots)
                hist.h[f] = np.bincount(b, weights=h, minlength=slots)
            out.append(hist)
        return out

    def leaf_rows(self) -> dict[int, np.ndarray]:
        """The rows of every leaf of the tree just grown (sampled rows only)."""
        return dict(self._rows)

    def split(self, splits: Sequence[tuple[int, SplitDecision, int, int]]) -> list[tuple[str, int]]:
        out = []
        for node, dec, left, right in splits:
            rows = self._rows.pop(node)
            go_left = dec.left_table(self.layout.n_slots)[self.bins[dec.feature, rows]]
            self._rows[left] = rows[go_left]
            self._rows[right] = rows[~go_left]
            spec = self.layout.features[dec.feature]
            rule = SplitRule.from_decision(self._feature_bins[dec.feature], dec)
            out.append((spec.owner, self.tables[spec.owner].add(rule)))
        return out
