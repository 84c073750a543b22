"""Row partitions: the seam between a party's protocol code and where its heavy passes run.

Protocol code that makes one pass over a party's rows (a tree node's gradient histograms) splits the
rows into partitions and hands one call per partition to a :class:`RowCompute`; it never imports the
engine that runs them. :data:`LOCAL` runs the calls in this process, one partition (the default);
``party_node.compute.RayRowCompute`` (``compute.backend = "ray"``) runs them as Ray tasks on the
party's own cluster. Only partial results that combine exactly are split this way (sums in
``Z_2^64``), so the outcome is bit for bit the same on every backend. Nothing here crosses to
another party: the calls and their results stay inside the party's machines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np


class RowCompute(Protocol):
    """Where a party's row partitions run."""

    @property
    def parts(self) -> int:
        """How many partitions a pass should make."""
        ...

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``[fn(*args) for args in calls]``, in order (module-level ``fn``; numpy arrays as arguments)."""
        ...


class LocalRowCompute:
    """In this process, one call after the other."""

    parts = 1

    def map(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> list[Any]:
        return [fn(*args) for args in calls]


LOCAL: RowCompute = LocalRowCompute()


def split_rows(rows: np.ndarray, parts: int) -> list[np.ndarray]:
    """At most ``parts`` non-empty, contiguous slices of ``rows`` (at least one, possibly empty)."""
    if parts <= 1 or len(rows) < 2 * parts:
        return [rows]
    return [p for p in np.array_split(rows, parts) if len(p)]


def node_histograms_part(
    bins: np.ndarray, rows: np.ndarray, feats: Sequence[int], slots: int, *weights: np.ndarray
) -> np.ndarray:
    """One partition: per weight vector, per feature, the per-bin sums over ``rows`` modulo 2^64
    (``bins``: features x all rows; ``weights``: uint64 over all rows). Shape (weights, feats, slots)."""
    from fedcore.protocol.trees.messages import bin_sums_u64

    if len(rows) == bins.shape[1]:  # every row (a root): no gather
        return bin_sums_u64(bins, feats, None, list(weights), slots)
    return bin_sums_u64(bins, feats, rows, [w[rows] for w in weights], slots)


def node_histograms_u64(
    bins: np.ndarray,
    weights: tuple[np.ndarray, ...],
    rows: np.ndarray,
    feats: Sequence[int],
    slots: int,
    compute: RowCompute = LOCAL,
) -> np.ndarray:
    """Gradient histograms of one tree node, (weights, feats, slots) uint64: the partitions' sums added
    modulo 2^64, equal to one pass over all ``rows`` whatever ``compute`` runs them."""
    parts = split_rows(np.asarray(rows), compute.parts)
    results = compute.map(node_histograms_part, [(bins, p, list(feats), slots, *weights) for p in parts])
    total = results[0].copy()
    for r in results[1:]:
        total += r  # uint64: wraps modulo 2^64
    return total
