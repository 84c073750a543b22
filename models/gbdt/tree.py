"""Trees with opaque splits, and their evaluation centrally or split among the features' owners.

A :class:`Tree` node holds only ``(owner, ref)``: the party that owns the split's feature and an opaque
reference. The owner alone holds its :class:`SplitTable` (``ref -> feature, threshold or categories,
default direction``). Leaf values are the only numbers in a tree; no hessian or cover statistics.

Scoring, central or federated, goes through the same functions:

- :func:`owner_directions`: an owner evaluates its own rules on its own rows -> one bit per (row, ref),
  True = go left;
- :func:`combine_directions`: the bits of every owner -> each row's leaf in each tree (a party that
  sees all bits sees the whole path: use it centrally or where that is acceptable);
- :func:`reachable_leaves`: an owner marks, per row, the leaves consistent with its own splits; the AND
  of all owners' masks has exactly one leaf per tree (the hybrid scoring form), and
  :func:`margin_from_leaf_mask` turns it into the score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from fedcore.errors import InvalidInput
from models.gbdt.binning import FeatureBins, _categories, _numeric

if TYPE_CHECKING:
    from models.gbdt.split import SplitDecision


@dataclass(frozen=True)
class SplitRule:
    """One split in raw-value terms. Numeric: ``x <= threshold`` goes left. Categorical: a value in
    ``left`` goes left, in ``right`` goes right. Missing (and an unseen category) follows ``default_left``."""

    feature: str
    default_left: bool
    categorical: bool = False
    threshold: float = 0.0
    left: tuple[Any, ...] = ()
    right: tuple[Any, ...] = ()

    @classmethod
    def from_decision(cls, fb: FeatureBins, dec: SplitDecision) -> SplitRule:
        if dec.categorical:
            left = tuple(fb.categories[b] for b in dec.left_bins)
            right = tuple(c for b, c in enumerate(fb.categories) if b not in set(dec.left_bins))
            return cls(fb.name, dec.default_left, True, left=left, right=right)
        return cls(fb.name, dec.default_left, threshold=fb.upper[dec.threshold])

    def go_left(self, values: npt.ArrayLike) -> np.ndarray:
        if self.categorical:
            present, vals = _categories(values, self.feature)
            kind = vals.dtype if vals.dtype.kind == "f" else str
            is_left = present & np.isin(vals, np.asarray(self.left, dtype=kind))
            is_right = present & np.isin(vals, np.asarray(self.right, dtype=kind))
            return is_left | (~is_left & ~is_right & self.default_left)
        x = _numeric(values, self.feature)
        nan = np.isnan(x)
        return np.where(nan, self.default_left, x <= self.threshold)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"feature": self.feature, "default_left": self.default_left}
        if self.categorical:
            d.update(categorical=True, left=list(self.left), right=list(self.right))
        else:
            d.update(categorical=False, threshold=self.threshold)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SplitRule:
        if d["categorical"]:
            return cls(str(d["feature"]), bool(d["default_left"]), True, left=tuple(d["left"]), right=tuple(d["right"]))
        return cls(str(d["feature"]), bool(d["default_left"]), threshold=float(d["threshold"]))


@dataclass
class SplitTable:
    """One owner's split rules by opaque reference. Only the owner holds it."""

    owner: str
    rules: dict[int, SplitRule] = field(default_factory=dict)

    def add(self, rule: SplitRule) -> int:
        ref = len(self.rules)
        self.rules[ref] = rule
        return ref

    def features(self) -> list[str]:
        return sorted({r.feature for r in self.rules.values()})

    def to_dict(self) -> dict[str, Any]:
        return {"owner": self.owner, "rules": {str(k): r.to_dict() for k, r in self.rules.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SplitTable:
        return cls(str(d["owner"]), {int(k): SplitRule.from_dict(v) for k, v in d["rules"].items()})


@dataclass(frozen=True)
class DirectionBits:
    """An owner's decisions: ``bits[i, j]`` is True when row ``i`` goes left at the split ``refs[j]``."""

    refs: np.ndarray
    bits: np.ndarray

    def column(self, ref: int) -> np.ndarray:
        j = np.searchsorted(self.refs, ref)
        if j >= len(self.refs) or self.refs[j] != ref:
            raise InvalidInput(f"direction bits hold no split reference {ref}")
        return self.bits[:, j]


def owner_directions(table: SplitTable, columns: Mapping[str, npt.ArrayLike]) -> DirectionBits:
    """Evaluate every rule of ``table`` on the owner's rows (``columns``: feature name -> values)."""
    refs = np.array(sorted(table.rules), dtype=np.int64)
    missing = sorted({r.feature for r in table.rules.values()} - set(columns))
    if missing:
        raise InvalidInput(f"party {table.owner!r}: column(s) {missing} needed by its splits are missing")
    n = len(np.asarray(next(iter(columns.values())))) if columns else 0
    bits = np.empty((n, len(refs)), dtype=bool)
    numeric: dict[str, list[int]] = {}
    for j, ref in enumerate(refs):
        rule = table.rules[int(ref)]
        if rule.categorical:
            bits[:, j] = rule.go_left(columns[rule.feature])
        else:
            numeric.setdefault(rule.feature, []).append(j)
    for f, js in numeric.items():  # every threshold of a numeric feature in one comparison
        rules = [table.rules[int(refs[j])] for j in js]
        x = _numeric(columns[f], f)[:, None]
        thr = np.array([r.threshold for r in rules])
        dflt = np.array([r.default_left for r in rules])
        bits[:, js] = np.where(np.isnan(x), dflt[None, :], x <= thr[None, :])
    return DirectionBits(refs, bits)


@dataclass
class Tree:
    """Node arrays; node 0 is the root. ``left[i] == -1`` marks a leaf. ``owner[i]`` indexes the ensemble's
    owner list (-1 at leaves); ``value`` is the leaf's contribution to the margin (0 at internal nodes)."""

    left: np.ndarray
    right: np.ndarray
    owner: np.ndarray
    ref: np.ndarray
    value: np.ndarray

    @property
    def n_nodes(self) -> int:
        return len(self.left)

    def leaves(self) -> np.ndarray:
        return np.flatnonzero(self.left < 0)

    def depth(self) -> int:
        depth = np.zeros(self.n_nodes, dtype=np.int64)
        for i in range(self.n_nodes):
            if self.left[i] >= 0:
                depth[self.left[i]] = depth[self.right[i]] = depth[i] + 1
        return int(depth.max())

    def to_dict(self) -> dict[str, Any]:
        return {
            "left": self.left.tolist(),
            "right": self.right.tolist(),
            "owner": self.owner.tolist(),
            "ref": self.ref.tolist(),
            "value": self.value.tolist(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Tree:
        left, right, owner, ref = (np.asarray(d[k], dtype=np.int64) for k in ("left", "right", "owner", "ref"))
        return cls(left, right, owner, ref, np.asarray(d["value"], dtype=np.float64))


def _node_bits(tree: Tree, owners: Sequence[str], bits: Mapping[str, DirectionBits], n: int) -> np.ndarray:
    out = np.zeros((n, tree.n_nodes), dtype=bool)
    for i in np.flatnonzero(tree.left >= 0):
        owner = owners[tree.owner[i]]
        if owner not in bits:
            raise InvalidInput(f"no direction bits from party {owner!r}, which owns a split")
        out[:, i] = bits[owner].column(int(tree.ref[i]))
    return out


def _n_rows(bits: Mapping[str, DirectionBits]) -> int:
    sizes = {o: b.bits.shape[0] for o, b in bits.items()}
    if len(set(sizes.values())) > 1:
        raise InvalidInput(f"direction bits cover different numbers of rows: {sizes}")
    return next(iter(sizes.values()), 0)


def combine_directions(trees: Sequence[Tree], owners: Sequence[str], bits: Mapping[str, DirectionBits]) -> np.ndarray:
    """Leaf node id of every row in every tree, shape (n_rows, n_trees)."""
    n = _n_rows(bits)
    out = np.zeros((n, len(trees)), dtype=np.int64)
    rows = np.arange(n)
    for t, tree in enumerate(trees):
        node_bits = _node_bits(tree, owners, bits, n)
        pos = np.zeros(n, dtype=np.int64)
        while True:
            inner = tree.left[pos] >= 0
            if not inner.any():
                break
            r = rows[inner]
            p = pos[inner]
            pos[inner] = np.where(node_bits[r, p], tree.left[p], tree.right[p])
        out[:, t] = pos
    return out


def margin_from_leaves(trees: Sequence[Tree], leaves: np.ndarray, base_score: float) -> np.ndarray:
    margin = np.full(leaves.shape[0], base_score, dtype=np.float64)
    for t, tree in enumerate(trees):
        margin += tree.value[leaves[:, t]]
    return margin


def leaf_index(trees: Sequence[Tree]) -> list[tuple[int, int]]:
    """The column order of leaf masks: (tree index, leaf node id), trees in order, leaves by node id."""
    return [(t, int(i)) for t, tree in enumerate(trees) for i in tree.leaves()]


def reachable_leaves(trees: Sequence[Tree], owners: Sequence[str], owner: str, bits: DirectionBits) -> np.ndarray:
    """Per row, the leaves (columns in :func:`leaf_index` order) consistent with ``owner``'s own splits."""
    n = bits.bits.shape[0]
    me = owners.index(owner) if owner in owners else -1
    cols: list[np.ndarray] = []
    for tree in trees:
        reach: dict[int, np.ndarray] = {0: np.ones(n, dtype=bool)}
        for i in range(tree.n_nodes):
            if tree.left[i] < 0:
                continue
            here = reach[i]
            if tree.owner[i] == me:
                go = bits.column(int(tree.ref[i]))
                reach[int(tree.left[i])] = here & go
                reach[int(tree.right[i])] = here & ~go
            else:
                reach[int(tree.left[i])] = here
                reach[int(tree.right[i])] = here
        cols.extend(reach[int(i)] for i in tree.leaves())
    return np.stack(cols, axis=1) if cols else np.zeros((n, 0), dtype=bool)


def margin_from_leaf_mask(trees: Sequence[Tree], mask: np.ndarray, base_score: float) -> np.ndarray:
    """Score from the AND of all owners' leaf masks (exactly one leaf per tree must remain); adds the leaf
    values in the same order as :func:`margin_from_leaves`, so both forms give identical floats."""
    index = leaf_index(trees)
    tree_of = np.array([t for t, _ in index], dtype=np.int64)
    node_of = np.array([i for _, i in index], dtype=np.int64)
    leaves = np.zeros((mask.shape[0], len(trees)), dtype=np.int64)
    for t in range(len(trees)):
        cols = np.flatnonzero(tree_of == t)
        sub = mask[:, cols]
        if (sub.sum(axis=1) != 1).any():
            raise InvalidInput(f"leaf masks do not select exactly one leaf of tree {t}")
        leaves[:, t] = node_of[cols[np.argmax(sub, axis=1)]]
    return margin_from_leaves(trees, leaves, base_score)
