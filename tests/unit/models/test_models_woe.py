"""WOE and IV from counts, against scorecardpy and toad on the FATE credit data."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from fedcore.errors import InvalidInput
from models.prebinning import numeric_prebinning
from models.woe import bin_counts, iv_strength, pool_counts, select_by_iv, woe_iv


def test_woe_sign_and_values_by_hand():
    t = woe_iv([10, 30], [90, 70])
    assert t.woe[0] == pytest.approx(np.log((10 / 40) / (90 / 160)))
    assert t.woe[1] > 0  # riskier than average: positive WOE
    by_hand = sum((e / 40 - n / 160) * np.log((e / 40) / (n / 160)) for e, n in [(10, 90), (30, 70)])
    assert t.iv == pytest.approx(by_hand)


def test_zero_counts_are_smoothed_and_empty_bins_neutral():
    t = woe_iv([0, 5, 5, 0], [10, 10, 0, 0])
    assert np.all(np.isfinite(t.woe))
    assert t.woe[3] == 0.0 and t.iv_bins[3] == 0.0
    # scorecardpy's rule: 0 -> 0.9 before the shares (empty bins excluded)
    e, n = np.array([0.9, 5, 5]), np.array([10, 10, 0.9])
    assert t.woe[:3] == pytest.approx(np.log((e / e.sum()) / (n / n.sum())))
    with pytest.raises(InvalidInput, match="both events and non-events"):
        woe_iv([0, 0], [3, 4])


def test_matches_scorecardpy_woebin_on_fate(hetero, scorecardpy):
    wb = importlib.import_module("scorecardpy.woebin")  # woebin2 bins with given breaks
    g, _ = hetero
    import pandas as pd

    x = g["x7"].to_numpy().copy()
    x[::37] = np.nan
    fb = numeric_prebinning("x7", x, n_bins=8)
    ours = woe_iv(*bin_counts(fb.assign(x), g["y"].to_numpy(), fb.n_bins))
    theirs = wb.woebin2(pd.DataFrame({"y": g["y"], "variable": "x7", "value": x}), breaks=list(fb.cuts))
    # scorecardpy lists the missing bin first; ours is last
    theirs = pd.concat([theirs.iloc[1:], theirs.iloc[:1]])
    assert theirs["bin"].iloc[-1] == "missing"
    assert np.array_equal(theirs["bad"].to_numpy(), ours.events)
    assert np.allclose(theirs["woe"].to_numpy(), ours.woe, atol=1e-12)
    assert np.allclose(theirs["bin_iv"].to_numpy(), ours.iv_bins, atol=1e-12)
    assert ours.iv == pytest.approx(float(theirs["total_iv"].iloc[0]), abs=1e-12)


def test_matches_toad_iv(hetero):
    from toad.stats import IV

    g, h = hetero
    x = h["x5"].to_numpy()
    fb = numeric_prebinning("x5", x, n_bins=10)
    idx = fb.assign(x)
    ours = woe_iv(*bin_counts(idx, g["y"].to_numpy(), fb.n_bins))
    assert ours.iv == pytest.approx(float(IV(idx, g["y"].to_numpy())), rel=1e-9)


def test_bin_counts_and_pooling():
    ev, ne = bin_counts([0, 1, 1, 2], [1, 0, 1, 0], 4)
    assert ev.tolist() == [1, 1, 0, 0] and ne.tolist() == [0, 1, 1, 0]
    pe, pn = pool_counts([(ev, ne), ([2, 0, 0, 1], [1, 1, 1, 1])])
    assert pe.tolist() == [3, 1, 0, 1] and pn.tolist() == [1, 2, 2, 1]
    with pytest.raises(InvalidInput, match="out of range"):
        bin_counts([0, 5], [0, 1], 3)


def test_select_by_iv():
    ivs = {"a": 0.01, "b": 0.3, "c": 0.05, "d": 0.9}
    assert select_by_iv(ivs) == ["d", "b", "c"]
    assert select_by_iv(ivs, max_iv=0.5) == ["b", "c"]
    assert select_by_iv(ivs, max_features=1) == ["d"]
    labels = [iv_strength(v) for v in (0.01, 0.05, 0.2, 0.4, 0.6)]
    assert labels == ["useless", "weak", "medium", "strong", "suspicious"]
