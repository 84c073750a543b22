"""WOE / one-hot encoders and the scorecard points table, against scorecardpy's scorecard()."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedcore.errors import InvalidInput
from models.binning import CategoricalBinning, NumericBinning
from models.encoding import OneHotEncoder, WoeEncoder
from models.optimal_binning import optimal_binning
from models.points import points_table
from models.prebinning import numeric_prebinning
from models.scorecard import Scorecard
from models.woe import bin_counts


def _encoder():
    num = NumericBinning("income", (1000.0, 5000.0))
    cat = CategoricalBinning("car", (("new",), ("used", "import")), fallback=1)
    return WoeEncoder((num, cat), ((0.4, -0.1, -0.6, 0.0), (-0.3, 0.5, 0.2)))


def test_woe_encoder_takes_raw_values_and_round_trips_json():
    enc = _encoder()
    data = {"income": ["500", 2500, None, "7000.5"], "car": ["used", "new", "spaceship", None]}
    expected = np.array([[0.4, 0.5], [-0.1, -0.3], [0.0, 0.5], [-0.6, 0.2]])
    assert np.allclose(enc.transform(data), expected)
    back = WoeEncoder.from_json(enc.to_json())
    assert back == enc and np.allclose(back.transform(pd.DataFrame(data)), expected)
    with pytest.raises(InvalidInput, match="column 'car' is missing"):
        enc.transform({"income": [1]})
    with pytest.raises(InvalidInput, match="not a WOE encoder"):
        WoeEncoder.from_json(json.dumps({"encoding": "onehot"}))
    with pytest.raises(InvalidInput, match="4 bins but 2 WOE"):
        WoeEncoder((NumericBinning("x", (1.0, 2.0)),), ((0.1, 0.2),))


def test_one_hot_encoder():
    enc = _encoder()
    oh = OneHotEncoder(enc.binnings)
    assert oh.column_names() == ["income=[1000, 5000)", "income=[5000, inf)", "income=missing",
                                 "car=used,import", "car=missing"]
    m = oh.transform({"income": [10, 6000, None], "car": ["new", "import", "zzz"]})
    assert m.tolist() == [[0, 0, 0, 0, 0], [0, 1, 0, 1, 0], [0, 0, 1, 1, 0]]
    full = OneHotEncoder(enc.binnings, drop_first=False)
    assert full.transform({"income": [10], "car": [None]}).sum() == 2
    assert OneHotEncoder.from_json(full.to_json()) == full


@pytest.fixture(scope="module")
def fitted(hetero):
    from sklearn.linear_model import LogisticRegression

    g, h = hetero
    cols = {"g_x0": g["x0"], "g_x7": g["x7"], "h_x0": h["x0"], "h_x5": h["x5"]}
    data = pd.DataFrame(cols)
    y = g["y"].to_numpy()
    binnings, woes, counts, rates = [], [], [], []
    for name, x in cols.items():
        fine = numeric_prebinning(name, x.to_numpy(), n_bins=20)
        r = optimal_binning(fine, *bin_counts(fine.assign(x.to_numpy()), y, fine.n_bins), max_bins=6, min_bin_size=0.05)
        binnings.append(r.binning)
        woes.append(tuple(r.table.woe))
        counts.append(r.table.counts.tolist())
        rates.append(r.table.event_rate.tolist())
    enc = WoeEncoder(tuple(binnings), tuple(woes))
    X = enc.transform(data)
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(X, y)
    return enc, lr, data, X, counts, rates


def test_points_table_matches_scorecardpy(fitted, scorecardpy):
    enc, lr, _, _, _, _ = fitted
    assert np.all(lr.coef_[0] > 0)  # positive WOE = riskier, so positive coefficients
    bins = {b.feature: pd.DataFrame({"variable": b.feature, "bin": b.labels(), "woe": list(w)})
            for b, w in zip(enc.binnings, enc.woe, strict=True)}
    xcols = [f"{f}_woe" for f in enc.features]
    for eq0 in (False, True):
        card = scorecardpy.scorecard(bins, lr, xcols, points0=600, odds0=1 / 19, pdo=50, basepoints_eq0=eq0)
        ours = points_table(enc, lr.coef_[0], float(lr.intercept_[0]), Scorecard(600, 19, 50),
                            basepoints_eq0=eq0, digits=0)
        assert ours.basepoints == pytest.approx(float(card["basepoints"]["points"].iloc[0]))
        for f in enc.features:
            assert [r.points for r in ours.rows if r.variable == f] == card[f]["points"].astype(float).tolist()
            assert [r.bin for r in ours.rows if r.variable == f] == card[f]["bin"].tolist()


def test_points_sum_to_the_model_score(fitted):
    enc, lr, data, X, counts, rates = fitted
    sc = Scorecard(600, 50, 20)
    table = points_table(enc, lr.coef_[0], float(lr.intercept_[0]), sc, counts=counts, event_rates=rates)
    logit = X @ lr.coef_[0] + lr.intercept_[0]
    assert np.allclose(table.score(data), sc.points_from_logit(logit))
    own = table.for_features(["g_x0", "g_x7"])
    assert {r.variable for r in own} == {"g_x0", "g_x7"}
    recs = table.records()
    assert recs[0]["variable"] == "basepoints" and recs[1]["count"] == counts[0][0]
    csv_lines = table.to_csv().splitlines()
    assert csv_lines[0] == "variable,bin,woe,points,count,event_rate" and len(csv_lines) == len(recs) + 1
    assert json.loads(table.to_json())["scaling"] == {"base_score": 600.0, "base_odds": 50.0, "pdo": 20.0}
    with pytest.raises(InvalidInput, match="3 coefficients for 4 features"):
        points_table(enc, [1, 2, 3], 0.0)
