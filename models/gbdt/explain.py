"""Reason codes for tree models: path attribution (Saabas) over one owner's own splits, the rest as one line.

Released models hold no cover (hessian or row-count) statistics, so a node's expected value is the
unweighted mean of its two children's (leaves: their value). Along a row's path each split moves the
expected value from the node's to the taken child's; that step is credited to the split's feature. The
owner walks its own splits from the root until it reaches a leaf or a node another owner splits (in the
hybrid protocol's layered trees: a platform subtree). Everything below that node, i.e. the leaf value
minus that node's expected value, is not the owner's to explain: it is returned as one ``other`` total,
computed from the joint margin the owner was given, so the owner never needs the other party's path.

``margin = bias + sum(own contributions) + other`` holds exactly, with ``bias`` the sum of the trees'
root expected values plus the base score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.gbdt.tree import DirectionBits, SplitTable, Tree


def expected_values(tree: Tree) -> np.ndarray:
    """Per node: leaf value, or the mean of its children's expected values."""
    out = np.array(tree.value, dtype=np.float64)
    for i in range(tree.n_nodes - 1, -1, -1):  # children have larger ids than their parent
        if tree.left[i] >= 0:
            out[i] = 0.5 * (out[tree.left[i]] + out[tree.right[i]])
    return out


@dataclass(frozen=True)
class Attribution:
    bias: np.ndarray  # per row: base score + the trees' root expected values
    own: dict[str, np.ndarray]  # feature of this owner -> per-row contribution to the margin
    other: np.ndarray  # per row: what the other owners' splits added


def path_attribution(
    trees: Sequence[Tree], owners: Sequence[str], base_score: float, table: SplitTable, bits: DirectionBits,
    margin: np.ndarray,
) -> Attribution:  # fmt: skip
    """Attribute ``margin`` (the joint model's, one per row) to ``table.owner``'s features plus one line."""
    me = list(owners).index(table.owner)
    n = bits.bits.shape[0]
    rows = np.arange(n)
    bias = np.full(n, float(base_score))
    own: dict[str, np.ndarray] = {}
    explained = np.zeros(n)
    for tree in trees:
        ev = expected_values(tree)
        bias += ev[0]
        pos = np.zeros(n, dtype=np.int64)
        active = tree.left[pos] >= 0
        active &= tree.owner[pos] == me
        while active.any():
            r, p = rows[active], pos[active]
            nxt = np.empty_like(p)
            for ref in np.unique(tree.ref[p]):
                at = tree.ref[p] == ref
                go = bits.column(int(ref))[r[at]]
                nxt[at] = np.where(go, tree.left[p[at]], tree.right[p[at]])
            step = ev[nxt] - ev[p]
            for ref in np.unique(tree.ref[p]):
                feat = table.rules[int(ref)].feature
                at = tree.ref[p] == ref
                own.setdefault(feat, np.zeros(n))[r[at]] += step[at]
            explained[r] += step
            pos[active] = nxt
            active = (tree.left[pos] >= 0) & (tree.owner[pos] == me)
    return Attribution(bias, own, np.asarray(margin, dtype=np.float64) - bias - explained)
