"""Boosting for binary default prediction (logistic loss), and the released model.

:func:`train` is the central learner: bins each owner's features, then per round computes
``g = p - y``, ``h = p (1 - p)`` and grows a tree (row and column subsampling, shrinkage), tracks a
validation metric and keeps the best iteration. The base score is the log-odds of the default rate.

:class:`GBDTModel` is JSON (``to_dict``/``from_dict``, no pickle). Its trees hold opaque ``(owner, ref)``
splits and leaf values only; each owner's :class:`~models.gbdt.tree.SplitTable` and gain importance are
separate entries, so ``to_dict(owners=[x])`` is what party ``x`` may receive. No hessian sums are stored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fedcore.errors import InvalidInput
from models.gbdt.binning import BinMapper, Columns
from models.gbdt.grower import GrownTree, grow_tree
from models.gbdt.histogram import FeatureLayout, FeatureSpec, LocalHistogramSource
from models.gbdt.params import GBDTParams
from models.gbdt.tree import SplitTable, Tree, combine_directions, margin_from_leaves, owner_directions
from models.metrics import auc

FORMAT = "fedcredit-gbdt/1"


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def logloss(y: np.ndarray, margin: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, margin) - y * margin))


def base_score_of(y: np.ndarray) -> float:
    p = float(np.clip(np.mean(y), 1e-6, 1 - 1e-6))
    return math.log(p / (1 - p))


def check_labels(y: npt.ArrayLike, n: int, what: str = "labels") -> np.ndarray:
    arr = np.asarray(y, dtype=np.float64).ravel()
    if arr.shape[0] != n:
        raise InvalidInput(f"{what}: {arr.shape[0]} labels for {n} rows")
    bad = np.flatnonzero((arr != 0) & (arr != 1))
    if bad.size:
        raise InvalidInput(f"{what}: row {int(bad[0])} has label {arr[bad[0]]!r}, expected 0 or 1")
    return arr


@dataclass
class GBDTModel:
    owners: tuple[str, ...]
    trees: list[Tree]
    base_score: float
    tables: dict[str, SplitTable]
    importance: dict[str, dict[str, float]] = field(default_factory=dict)
    best_iteration: int = -1
    history: list[float] = field(default_factory=list)

    def margin(self, columns: Columns) -> np.ndarray:
        """Raw score (log-odds) of rows given all owners' columns (central use)."""
        missing = [o for o in self.owners if o not in self.tables]
        if missing:
            raise InvalidInput(f"this copy of the model holds no split table of {missing}")
        bits = {o: owner_directions(self.tables[o], columns) for o in self.owners}
        if not bits:
            n = len(np.asarray(next(iter(columns.values()))))
            return np.full(n, self.base_score)
        return margin_from_leaves(self.trees, combine_directions(self.trees, self.owners, bits), self.base_score)

    def predict_proba(self, columns: Columns) -> np.ndarray:
        return sigmoid(self.margin(columns))

    def importance_of(self, owner: str) -> dict[str, float]:
        """Total split gain per feature of ``owner`` (only that owner's features)."""
        return dict(self.importance.get(owner, {}))

    def to_dict(self, owners: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON form. ``owners`` limits the split tables and importances included (default: all)."""
        keep = list(self.owners) if owners is None else list(owners)
        return {
            "format": FORMAT,
            "base_score": self.base_score,
            "owners": list(self.owners),
            "best_iteration": self.best_iteration,
            "history": list(self.history),
            "trees": [t.to_dict() for t in self.trees],
            "tables": {o: self.tables[o].to_dict() for o in keep if o in self.tables},
            "importance": {o: dict(self.importance[o]) for o in keep if o in self.importance},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GBDTModel:
        if d.get("format") != FORMAT:
            raise InvalidInput(f"model format {d.get('format')!r} is not {FORMAT!r}")
        return cls(
            tuple(d["owners"]),
            [Tree.from_dict(t) for t in d["trees"]],
            float(d["base_score"]),
            {o: SplitTable.from_dict(t) for o, t in d["tables"].items()},
            {o: {k: float(v) for k, v in imp.items()} for o, imp in d.get("importance", {}).items()},
            int(d.get("best_iteration", -1)),
            [float(v) for v in d.get("history", [])],
        )


def _metric(name: str, y: np.ndarray, margin: np.ndarray) -> float:
    """Lower is better."""
    return logloss(y, margin) if name == "logloss" else -auc(y, margin)


def _prune_tables(tables: dict[str, SplitTable], trees: Sequence[Tree], owners: Sequence[str]) -> dict[str, SplitTable]:
    used: dict[str, set[int]] = {o: set() for o in owners}
    for tree in trees:
        for i in np.flatnonzero(tree.left >= 0):
            used[owners[tree.owner[i]]].add(int(tree.ref[i]))
    return {o: SplitTable(o, {r: t.rules[r] for r in sorted(used[o])}) for o, t in tables.items()}


def train(
    columns: Columns,
    y: npt.ArrayLike,
    params: GBDTParams | None = None,
    owners: Mapping[str, str] | None = None,
    valid: tuple[Columns, npt.ArrayLike] | None = None,
    names: Sequence[str] | None = None,
    mappers: Mapping[str, BinMapper] | None = None,
) -> GBDTModel:
    """Train centrally. ``owners`` maps feature name -> owning party (default: every feature ``local``);
    ``mappers`` gives an owner's bins instead of fitting them on ``columns`` (e.g. bins agreed by lenders)."""
    params = params or GBDTParams()
    names = list(columns) if names is None else list(names)
    if not names:
        raise InvalidInput("no feature columns to train on")
    owner_of = {n: "local" for n in names} if owners is None else dict(owners)
    unowned = [n for n in names if n not in owner_of]
    if unowned:
        raise InvalidInput(f"feature(s) {unowned} have no owner")
    unknown = sorted((set(params.monotone) | set(params.categorical)) - set(names))
    if unknown:
        raise InvalidInput(f"gbdt parameters name feature(s) {unknown} that are not among the columns")
    party_names = list(dict.fromkeys(owner_of[n] for n in names))
    given = dict(mappers or {})
    fitted = {
        o: BinMapper.fit(columns, params.max_bins, [c for c in params.categorical if owner_of[c] == o],
                         names=[n for n in names if owner_of[n] == o])
        for o in party_names if o not in given
    }  # fmt: skip
    mappers = {**fitted, **given}
    by_name = {fb.name: fb for m in mappers.values() for fb in m.features}
    unbinned = [n for n in names if n not in by_name or by_name[n].n_bins > params.max_bins]
    if unbinned:
        raise InvalidInput(f"feature(s) {unbinned} have no bins, or more than max_bins, in the given mappers")
    layout = FeatureLayout(
        tuple(FeatureSpec(n, owner_of[n], by_name[n].n_bins, by_name[n].categorical, params.monotone.get(n, 0))
              for n in names),
        params.max_bins,
    )  # fmt: skip
    full = BinMapper(tuple(by_name[n] for n in names), params.max_bins)
    bins = full.transform(columns)
    n = bins.shape[1]
    yy = check_labels(y, n)
    if valid is not None:
        vbins = full.transform(valid[0])
        vy = check_labels(valid[1], vbins.shape[1], "validation labels")
    base = base_score_of(yy)
    margin = np.full(n, base)
    vmargin = np.full(vbins.shape[1], base) if valid is not None else np.zeros(0)
    source = LocalHistogramSource(bins, layout, mappers)
    rng = np.random.default_rng(params.seed)
    grown: list[GrownTree] = []
    history: list[float] = []
    best, best_it = math.inf, -1
    for it in range(params.n_trees):
        p = sigmoid(margin)
        g = p - yy
        h = np.maximum(p * (1.0 - p), 2.0**-32)  # never 0 after quantization
        rows = None
        if params.subsample < 1.0:
            rows = np.sort(rng.choice(n, size=max(1, round(n * params.subsample)), replace=False))
        feats = np.arange(len(names))
        if it == 0 and params.first_tree_owners:
            feats = np.array(
                [j for j, n in enumerate(names) if owner_of[n] in params.first_tree_owners], dtype=np.int64
            )
        if params.colsample_bytree < 1.0:
            k = max(1, round(len(names) * params.colsample_bytree))
            feats = np.sort(rng.choice(feats, size=min(k, len(feats)), replace=False))
        source.begin_tree(g, h, rows)
        gt = grow_tree(source, params, feats, party_names)
        grown.append(gt)
        if rows is None:
            for leaf, leaf_rows in source.leaf_rows().items():
                margin[leaf_rows] += gt.tree.value[leaf]
        else:
            margin += gt.predict_bins(bins)
        if valid is not None:
            vmargin += gt.predict_bins(vbins)
            score = _metric(params.eval_metric, vy, vmargin)
            history.append(score if params.eval_metric == "logloss" else -score)
            if score < best - 1e-12:
                best, best_it = score, it
            elif params.early_stopping_rounds is not None and it - best_it >= params.early_stopping_rounds:
                break
    keep = grown if valid is None else grown[: best_it + 1]
    trees = [gt.tree for gt in keep]
    importance: dict[str, dict[str, float]] = {o: {} for o in party_names}
    for gt in keep:
        for f, gain in gt.gains:
            spec = layout.features[f]
            importance[spec.owner][spec.name] = importance[spec.owner].get(spec.name, 0.0) + gain
    return GBDTModel(
        tuple(party_names),
        trees,
        base,
        _prune_tables(source.tables, trees, party_names),
        importance,
        best_it if valid is not None else len(trees) - 1,
        history,
    )
