"""The central learner: missing values, monotone constraints, categories, early stopping, federated
evaluation forms and the JSON model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedcore.errors import InvalidInput
from models.gbdt import (
    GBDTModel,
    GBDTParams,
    combine_directions,
    leaf_index,
    margin_from_leaf_mask,
    owner_directions,
    reachable_leaves,
    train,
)
from models.gbdt.tree import margin_from_leaves
from models.metrics import auc


def _credit(n=3000, seed=0):
    """Defaults rise with arrears, fall with income; a category and missing values carry signal."""
    rng = np.random.default_rng(seed)
    arrears = rng.poisson(1.0, n).astype(float)
    income = rng.lognormal(8, 0.5, n)
    util = rng.uniform(0, 1, n)
    city = rng.integers(1, 7, n).astype(float)
    z = -1.5 + 0.8 * arrears - 0.0002 * income + 1.5 * np.sin(6 * util) + np.isin(city, [2, 5]) * 1.0
    income[rng.random(n) < 0.15] = np.nan
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    cols = {"arrears": arrears, "income": income, "util": util, "city": city}
    return cols, y


def _split(cols, y, k):
    return {c: v[:k] for c, v in cols.items()}, y[:k], {c: v[k:] for c, v in cols.items()}, y[k:]


def test_learns_and_raw_value_scoring_matches_training_bins():
    cols, y = _credit()
    tr, ytr, te, yte = _split(cols, y, 2000)
    model = train(tr, ytr, GBDTParams(n_trees=20, categorical=("city",)))
    assert auc(yte, model.predict_proba(te)) > 0.7
    assert model.base_score == pytest.approx(np.log(ytr.mean() / (1 - ytr.mean())))


def _stump_rule(model):
    (table,) = model.tables.values()
    (rule,) = table.rules.values()
    return rule


@pytest.mark.parametrize("missing_like_high", [True, False])
def test_missing_values_learn_their_direction(missing_like_high):
    rng = np.random.default_rng(1)
    x = rng.normal(size=4000)
    y = (x > 0).astype(float)
    miss = rng.random(4000) < 0.3
    y[miss] = 1.0 if missing_like_high else 0.0
    x[miss] = np.nan
    model = train({"x": x}, y, GBDTParams(n_trees=1, max_depth=1))
    rule = _stump_rule(model)
    # rows with x <= threshold go left; the learned default sends missing rows with their look-alikes
    assert rule.default_left is (not missing_like_high)
    p = model.predict_proba({"x": np.array([np.nan, 5.0, -5.0])})
    assert p[0] == (p[1] if missing_like_high else p[2])


def _grid_predictions(model, cols, feature, grid, rows):
    out = []
    for r in rows:
        probe = {c: np.full(len(grid), v[r]) for c, v in cols.items()}
        probe[feature] = grid
        out.append(model.predict_proba(probe))
    return np.array(out)


def test_monotone_constraint_holds_on_a_grid():
    cols, y = _credit(seed=2)
    grid = np.linspace(0, 1, 101)
    rows = range(0, 3000, 150)
    free = train(cols, y, GBDTParams(n_trees=30, max_depth=4, categorical=("city",)))
    steps = np.diff(_grid_predictions(free, cols, "util", grid, rows), axis=1)
    assert (steps < -1e-9).any() and (steps > 1e-9).any()  # sin(): unconstrained trees go both ways
    for sign in (1, -1):
        params = GBDTParams(n_trees=30, max_depth=4, categorical=("city",), monotone={"util": sign, "arrears": 1})
        model = train(cols, y, params)
        steps = np.diff(_grid_predictions(model, cols, "util", grid, rows), axis=1)
        assert (sign * steps >= -1e-12).all()
        arrears = np.diff(_grid_predictions(model, cols, "arrears", np.arange(0.0, 8.0), rows), axis=1)
        assert (arrears >= -1e-12).all()


def test_categorical_split_groups_the_risky_categories_and_unseen_follows_missing():
    rng = np.random.default_rng(3)
    city = rng.integers(1, 7, 5000).astype(float)
    y = (rng.random(5000) < np.where(np.isin(city, [2, 5]), 0.6, 0.1)).astype(float)
    model = train({"city": city}, y, GBDTParams(n_trees=1, max_depth=1, categorical=("city",)))
    rule = _stump_rule(model)
    assert rule.categorical
    assert {frozenset(rule.left), frozenset(rule.right)} == {frozenset({2.0, 5.0}), frozenset({1.0, 3.0, 4.0, 6.0})}
    p = model.predict_proba({"city": np.array([2.0, 5.0, 1.0, 99.0, np.nan])})
    assert p[0] == p[1] > p[2]
    assert p[3] == p[4]  # an unseen category takes the default direction, like a missing value


def test_string_categories():
    rng = np.random.default_rng(4)
    kind = rng.choice(np.array(["new", "used", "lease"], dtype=object), 3000)
    y = (rng.random(3000) < np.where(kind == "used", 0.5, 0.1)).astype(float)
    model = train({"kind": kind}, y, GBDTParams(n_trees=2, max_depth=1, categorical=("kind",)))
    p = model.predict_proba({"kind": np.array(["used", "new", "lease", None, "boat"], dtype=object)})
    assert p[0] > p[1] == p[2]
    assert p[3] == p[4]
    back = GBDTModel.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_array_equal(back.predict_proba({"kind": np.array(["used", "new"], dtype=object)}), p[:2])


def test_early_stopping_keeps_the_best_iteration():
    cols, y = _credit(n=1500, seed=5)
    tr, ytr, va, yva = _split(cols, y, 1000)
    params = GBDTParams(n_trees=200, max_depth=6, learning_rate=0.5, early_stopping_rounds=5, categorical=("city",))
    model = train(tr, ytr, params, valid=(va, yva))
    best = model.best_iteration
    assert len(model.trees) == best + 1
    assert len(model.history) == best + 1 + 5 < 200  # stopped 5 rounds after the best
    assert model.history[best] == min(model.history)
    m = model.margin(va)
    assert float(np.mean(np.logaddexp(0, m) - yva * m)) == pytest.approx(model.history[best], rel=1e-9)
    auc_model = train(tr, ytr, GBDTParams(**{**params.to_dict(), "eval_metric": "auc"}), valid=(va, yva))
    assert auc_model.history[auc_model.best_iteration] == max(auc_model.history)


def test_subsampling_changes_trees_and_is_seeded():
    cols, y = _credit(n=1500, seed=6)
    params = GBDTParams(n_trees=5, subsample=0.5, colsample_bytree=0.5, categorical=("city",))
    a = train(cols, y, params).predict_proba(cols)
    b = train(cols, y, params).predict_proba(cols)
    c = train(cols, y, GBDTParams(**{**params.to_dict(), "seed": 7})).predict_proba(cols)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


OWNERS = {"arrears": "lender", "income": "lender", "util": "platform", "city": "platform"}


def test_federated_forms_equal_central_prediction_exactly():
    cols, y = _credit(seed=7)
    model = train(cols, y, GBDTParams(n_trees=25, max_depth=4, categorical=("city",)), owners=OWNERS)
    assert set(model.owners) == {"lender", "platform"}
    central = model.margin(cols)
    own = {o: {c: v for c, v in cols.items() if OWNERS[c] == o} for o in model.owners}
    bits = {o: owner_directions(model.tables[o], own[o]) for o in model.owners}
    leaves = combine_directions(model.trees, model.owners, bits)
    np.testing.assert_array_equal(margin_from_leaves(model.trees, leaves, model.base_score), central)
    masks = {o: reachable_leaves(model.trees, model.owners, o, bits[o]) for o in model.owners}
    both = masks["lender"] & masks["platform"]
    np.testing.assert_array_equal(margin_from_leaf_mask(model.trees, both, model.base_score), central)
    n_trees = len(model.trees)
    for o in model.owners:  # one owner alone does not pin down the leaf
        assert (masks[o].sum(axis=1) > n_trees).mean() > 0.5
    assert both.shape[1] == len(leaf_index(model.trees))
    with pytest.raises(InvalidInput, match="exactly one leaf"):
        margin_from_leaf_mask(model.trees, masks["lender"], model.base_score)


def test_each_owner_gets_only_its_own_table_and_importance():
    cols, y = _credit(seed=8)
    model = train(cols, y, GBDTParams(n_trees=10, categorical=("city",)), owners=OWNERS)
    for o in model.owners:
        text = json.dumps(model.to_dict(owners=[o]))
        others = [c for c, owner in OWNERS.items() if owner != o]
        assert not any(f'"{c}"' in text for c in others)
        assert set(model.importance_of(o)) <= {c for c, owner in OWNERS.items() if owner == o}
        assert sum(model.importance_of(o).values()) > 0
    public = json.dumps(model.to_dict(owners=[]))
    assert not any(f'"{c}"' in public for c in OWNERS)
    with pytest.raises(InvalidInput, match="no split table"):
        GBDTModel.from_dict(model.to_dict(owners=["lender"])).margin(cols)


def test_json_roundtrip_predicts_identically_and_stores_no_hessians():
    cols, y = _credit(seed=9)
    model = train(cols, y, GBDTParams(n_trees=10, categorical=("city",)), owners=OWNERS)
    text = json.dumps(model.to_dict())
    assert not any(w in text.lower() for w in ("hess", "cover", "h_left", "sum_h"))
    back = GBDTModel.from_dict(json.loads(text))
    np.testing.assert_array_equal(back.margin(cols), model.margin(cols))
    with pytest.raises(InvalidInput, match="format"):
        GBDTModel.from_dict({**model.to_dict(), "format": "other"})


def test_all_missing_and_constant_features_are_never_split_on():
    cols, y = _credit(seed=10)
    cols = {**cols, "empty": np.full(3000, np.nan), "const": np.ones(3000)}
    model = train(cols, y, GBDTParams(n_trees=10, categorical=("city",)))
    used = model.tables["local"].features()
    assert "empty" not in used and "const" not in used and "arrears" in used


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"y": np.array([0, 1, 2] * 10, dtype=float)}, "row 2 has label"),
        ({"params": GBDTParams(monotone={"nope": 1})}, "nope"),
        ({"owners": {"a": "p"}}, "no owner"),
    ],
)
def test_bad_input_is_a_typed_error(kwargs, match):
    cols = {"a": np.arange(30.0), "b": np.arange(30.0)}
    args = {"y": np.array([0.0, 1.0] * 15), **kwargs}
    with pytest.raises(InvalidInput, match=match):
        train(cols, **args)


def test_bad_parameters_are_typed_errors():
    with pytest.raises(InvalidInput, match="categorical"):
        GBDTParams(monotone={"c": 1}, categorical=("c",))
    with pytest.raises(InvalidInput, match="max_bins"):
        GBDTParams(max_bins=300)
    with pytest.raises(InvalidInput, match="unknown"):
        GBDTParams.from_dict({"trees": 3})
    with pytest.raises(InvalidInput, match="infinite value at row 1"):
        train({"a": np.array([0.0, np.inf] * 5)}, np.array([0.0, 1.0] * 5))


def test_layered_trees_keep_a_sticky_owners_subtree_to_its_own_features():
    cols, y = _credit(seed=11)
    params = GBDTParams(
        n_trees=15, max_depth=4, categorical=("city",), sticky_owners=("platform",), first_tree_owners=("lender",)
    )
    model = train(cols, y, params, owners=OWNERS)
    platform = model.owners.index("platform")
    for t, tree in enumerate(model.trees):
        owner_of = tree.owner
        for i in np.flatnonzero(tree.left >= 0):
            if owner_of[i] == platform:
                for child in (tree.left[i], tree.right[i]):
                    assert owner_of[child] in (-1, platform)
        if t == 0:
            assert set(owner_of[tree.left >= 0]) == {model.owners.index("lender")}
    assert any((tree.owner == platform).any() for tree in model.trees)
