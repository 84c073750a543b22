"""Growing one tree level by level from a :class:`~models.gbdt.histogram.HistogramSource`.

Per level: find every frontier node's best split from its histogram, ask the source to apply the splits
(the owner keeps the rule and returns an opaque reference), then build the histogram of the smaller child
of each split (by hessian sum) and get its sibling by subtraction. Children at the last level need no
histogram: their gradient sums come with the split. Monotone bounds pass to the children XGBoost's way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.gbdt.histogram import FeatureLayout, Histogram, HistogramSource
from models.gbdt.params import GBDTParams
from models.gbdt.split import SplitDecision, child_bounds, find_best_split, leaf_weight
from models.gbdt.tree import Tree


@dataclass
class _Node:
    g: float
    h: float
    bounds: tuple[float, float]
    depth: int
    hist: Histogram | None = None
    only: str | None = None  # set below a split on a sticky owner's feature
    left: int = -1
    right: int = -1
    owner: int = -1
    ref: int = -1
    decision: SplitDecision | None = None


@dataclass
class GrownTree:
    """A tree plus what only the learner keeps while training: per node the split feature (-1 at leaves)
    and which histogram slots go left, for predicting on bin matrices, and the gain of each split."""

    tree: Tree
    feature: np.ndarray
    left_slots: np.ndarray
    gains: list[tuple[int, float]] = field(default_factory=list)

    def predict_bins(self, bins: np.ndarray) -> np.ndarray:
        """Leaf value of every row of a feature-major bin matrix."""
        n = bins.shape[1]
        rows = np.arange(n)
        pos = np.zeros(n, dtype=np.int64)
        left = self.tree.left
        while True:
            inner = left[pos] >= 0
            if not inner.any():
                break
            r = rows[inner]
            p = pos[inner]
            go = self.left_slots[p, bins[self.feature[p], r]]
            pos[inner] = np.where(go, left[p], self.tree.right[p])
        return self.tree.value[pos]


def grow_tree(
    source: HistogramSource, params: GBDTParams, features: Sequence[int] | np.ndarray, owners: Sequence[str]
) -> GrownTree:
    """Grow one tree on the gradients the source currently holds, splitting only on ``features``."""
    layout: FeatureLayout = source.layout
    feats = np.asarray(sorted(features), dtype=np.int64)
    lam = params.reg_lambda
    by_owner = {o: feats[[layout.features[f].owner == o for f in feats]] for o in params.sticky_owners}
    root_hist = source.build([0], feats)[0]
    nodes = [_Node(float(root_hist.g[feats[0]].sum()), float(root_hist.h[feats[0]].sum()), (-np.inf, np.inf), 0)]
    nodes[0].hist = root_hist
    frontier = [0]
    gains: list[tuple[int, float]] = []
    while frontier:
        splits: list[tuple[int, SplitDecision, int, int]] = []
        for i in frontier:
            node = nodes[i]
            if node.depth >= params.max_depth or node.hist is None:
                continue
            node_feats = feats if node.only is None else by_owner[node.only]
            dec = find_best_split(node.hist, node.g, node.h, layout, node_feats, params, node.bounds)
            if dec is None:
                continue
            spec = layout.features[dec.feature]
            lb, rb = child_bounds(dec, spec.monotone, lam, *node.bounds)
            only = spec.owner if spec.owner in params.sticky_owners else node.only
            node.left, node.right, node.decision = len(nodes), len(nodes) + 1, dec
            nodes.append(_Node(dec.g_left, dec.h_left, lb, node.depth + 1, only=only))
            nodes.append(_Node(dec.g_right, dec.h_right, rb, node.depth + 1, only=only))
            splits.append((i, dec, node.left, node.right))
            gains.append((dec.feature, dec.gain))
        if not splits:
            break
        for (i, _, _, _), (owner, ref) in zip(splits, source.split(splits), strict=True):
            nodes[i].owner, nodes[i].ref = list(owners).index(owner), ref
        grow = [(i, dec) for i, dec, _, _ in splits if nodes[i].depth + 1 < params.max_depth]
        small = [nodes[i].left if dec.h_left <= dec.h_right else nodes[i].right for i, dec in grow]
        built = source.build(small, feats) if small else []
        for (i, _), s, hist in zip(grow, small, built, strict=True):
            parent = nodes[i]
            sibling = parent.right if s == parent.left else parent.left
            assert parent.hist is not None
            nodes[s].hist = hist
            nodes[sibling].hist = parent.hist - hist
            parent.hist = None
        frontier = [j for i, _, _, _ in splits for j in (nodes[i].left, nodes[i].right)]
    n = len(nodes)
    value = np.zeros(n)
    left_slots = np.zeros((n, layout.n_slots), dtype=bool)
    feature = np.full(n, -1, dtype=np.int64)
    for i, node in enumerate(nodes):
        if node.decision is None:
            value[i] = params.learning_rate * float(leaf_weight(node.g, node.h, lam, *node.bounds))
        else:
            feature[i] = node.decision.feature
            left_slots[i] = node.decision.left_table(layout.n_slots)
    tree = Tree(
        np.array([nd.left for nd in nodes], dtype=np.int64),
        np.array([nd.right for nd in nodes], dtype=np.int64),
        np.array([nd.owner for nd in nodes], dtype=np.int64),
        np.array([nd.ref for nd in nodes], dtype=np.int64),
        value,
    )
    return GrownTree(tree, feature, left_slots, gains)
