"""models.scorecard: scaling known values, round trips, validation, reason codes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedcore.errors import InvalidInput
from models.scorecard import Scorecard, linear_contributions, reason_codes


def test_base_score_at_base_odds_and_pdo_per_doubling() -> None:
    sc = Scorecard(base_score=600, base_odds=50, pdo=20)
    p_base = 1 / 51  # good:bad = 50:1
    assert sc.points(p_base) == pytest.approx(600.0)
    p_double = 1 / 101  # odds 100:1
    assert sc.points(p_double) == pytest.approx(620.0)
    assert sc.points(1 / 26) == pytest.approx(580.0)  # odds halved
    assert sc.factor == pytest.approx(20 / math.log(2))
    assert sc.offset == pytest.approx(600 - 20 / math.log(2) * math.log(50))
    assert sc.points(0.5) == pytest.approx(sc.offset)


def test_other_scaling_known_value() -> None:
    # 650 at 30:1, 40 points to double: odds 120:1 (two doublings) is 730.
    sc = Scorecard(base_score=650, base_odds=30, pdo=40)
    assert sc.points(1 / 121) == pytest.approx(730.0)


def test_vectorised_round_trip_and_types() -> None:
    sc = Scorecard()
    p = np.array([1e-6, 0.01, 0.1, 0.5, 0.9, 0.999])
    pts = sc.points(p)
    assert isinstance(pts, np.ndarray) and pts.shape == p.shape
    assert np.all(np.diff(pts) < 0)  # riskier -> fewer points
    np.testing.assert_allclose(sc.prob_from_points(pts), p, rtol=1e-9)
    assert isinstance(sc.points(0.1), float)
    assert isinstance(sc.prob_from_points(600.0), float)
    assert sc.prob_from_points(600.0) == pytest.approx(1 / 51)
    logits = np.log(p / (1 - p))
    np.testing.assert_allclose(sc.points_from_logit(logits), pts, rtol=1e-9)


def test_extreme_probabilities_stay_finite() -> None:
    sc = Scorecard()
    pts = sc.points([0.0, 1.0])
    assert np.all(np.isfinite(pts)) and pts[0] > pts[1]
    assert 0.0 <= sc.prob_from_points(1e6) < 1e-300
    assert sc.prob_from_points(-1e6) == 1.0


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"pdo": 0}, "pdo"),
        ({"pdo": -5}, "pdo"),
        ({"base_odds": 0}, "base_odds"),
        ({"base_odds": float("inf")}, "base_odds"),
        ({"base_score": float("nan")}, "base_score"),
        ({"base_score": "600"}, "base_score"),
    ],
)
def test_validation_names_the_field(kw: dict, field: str) -> None:
    with pytest.raises(InvalidInput, match=field):
        Scorecard(**kw)


def test_points_rejects_invalid_probabilities() -> None:
    sc = Scorecard()
    with pytest.raises(InvalidInput, match="prob_default"):
        sc.points([0.5, 1.2])
    with pytest.raises(InvalidInput, match="prob_default"):
        sc.points(float("nan"))
    with pytest.raises(InvalidInput, match="points"):
        sc.prob_from_points([np.inf])


def test_reason_codes_pick_most_adverse_features() -> None:
    coef = np.array([0.5, -1.0, 2.0, 0.1])
    x = np.array([1.0, -2.0, 0.1, 3.0])
    contrib = linear_contributions(coef, x)  # [0.5, 2.0, 0.2, 0.3]
    reference = np.array([0.0, 0.0, 0.5, 0.0])
    names = ["utilisation", "months_on_book", "income", "late_payments"]
    codes = reason_codes(contrib, reference, names, top_k=3, scorecard=Scorecard(pdo=20))
    assert [c.feature for c in codes] == ["months_on_book", "utilisation", "late_payments"]
    assert [c.index for c in codes] == [1, 0, 3]
    assert codes[0].logit_impact == pytest.approx(2.0)
    assert codes[0].points_lost == pytest.approx(2.0 * 20 / math.log(2))
    # Only adverse features: 'income' is below its reference and never appears.
    all_codes = reason_codes(contrib, reference, names, top_k=10)
    assert "income" not in [c.feature for c in all_codes] and len(all_codes) == 3
    assert all_codes[0].points_lost is None


def test_reason_codes_validation() -> None:
    c = np.zeros(3)
    with pytest.raises(InvalidInput, match="feature_names"):
        reason_codes(c, c, ["a", "b"])
    with pytest.raises(InvalidInput, match="reference"):
        reason_codes(c, np.zeros(2), ["a", "b", "c"])
    with pytest.raises(InvalidInput, match="top_k"):
        reason_codes(c, c, ["a", "b", "c"], top_k=0)
    with pytest.raises(InvalidInput, match="coef"):
        linear_contributions(np.ones(3), np.ones(4))
    assert reason_codes(c, c, ["a", "b", "c"]) == []
