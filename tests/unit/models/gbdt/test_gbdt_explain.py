"""Path attribution (Saabas, cover-free) over one owner's splits plus one line for the other owners."""

from __future__ import annotations

import numpy as np
import pytest

from models.gbdt import GBDTParams, train
from models.gbdt.explain import expected_values, path_attribution
from models.gbdt.tree import owner_directions


def _data(n: int = 1500, seed: int = 0):
    rng = np.random.default_rng(seed)
    cols = {
        "arrears": rng.poisson(1.0, n).astype(float),
        "income": rng.lognormal(8, 0.4, n),
        "spend": rng.gamma(2.0, 1.0, n),
        "active": rng.integers(0, 30, n).astype(float),
    }
    z = -1.0 + 0.8 * cols["arrears"] - 0.06 * cols["active"] + 0.3 * cols["spend"]
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    return cols, y


OWNERS = {"arrears": "lenders", "income": "lenders", "spend": "tiange", "active": "tiange"}


@pytest.mark.parametrize("layered", [True, False])
def test_contributions_add_up_to_the_margin_and_the_rest_is_one_line(layered):
    cols, y = _data()
    params = GBDTParams(
        n_trees=8,
        max_depth=3,
        max_bins=16,
        sticky_owners=("tiange",) if layered else (),
        first_tree_owners=("lenders",),
    )
    model = train(cols, y, params, owners=OWNERS, names=list(OWNERS))
    margin = model.margin(cols)
    table = model.tables["lenders"]
    bits = owner_directions(table, {f: cols[f] for f in ("arrears", "income")})
    a = path_attribution(model.trees, model.owners, model.base_score, table, bits, margin)
    assert set(a.own) <= {"arrears", "income"} and "arrears" in a.own
    total = a.bias + sum(a.own.values()) + a.other
    np.testing.assert_allclose(total, margin, atol=1e-10)
    # the other owner's splits move the score: its line is not identically zero
    assert np.abs(a.other).max() > 1e-3
    # more arrears never lowers the arrears contribution on average (it drives defaults here)
    hi, lo = cols["arrears"] >= 3, cols["arrears"] == 0
    assert a.own["arrears"][hi].mean() > a.own["arrears"][lo].mean()


def test_a_model_of_one_owner_leaves_nothing_to_the_consortium_line():
    cols, y = _data(seed=1)
    lender_cols = {f: cols[f] for f in ("arrears", "income")}
    model = train(
        lender_cols,
        y,
        GBDTParams(n_trees=5, max_depth=2, max_bins=16),
        owners=dict.fromkeys(lender_cols, "lenders"),
        names=list(lender_cols),
    )
    table = model.tables["lenders"]
    margin = model.margin(lender_cols)
    a = path_attribution(
        model.trees, model.owners, model.base_score, table, owner_directions(table, lender_cols), margin
    )
    np.testing.assert_allclose(a.other, 0.0, atol=1e-10)
    # one split: the step is the taken leaf's value minus the mean of both leaves
    stump = model.trees[0]
    ev = expected_values(stump)
    assert ev[0] == pytest.approx(np.mean([ev[stump.left[0]], ev[stump.right[0]]]))
