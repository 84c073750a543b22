"""models.metrics against scikit-learn / scipy references, plus edge cases and errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from fedcore.errors import InvalidInput
from models import metrics as M


def _data(seed: int, n: int = 500, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    p = rng.normal(size=n) + 0.8 * y
    if ties:
        p = np.round(p, 1)  # many exact ties
    return y, p


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_auc_matches_sklearn(seed: int, ties: bool) -> None:
    y, p = _data(seed, ties=ties)
    assert M.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_auc_all_tied_scores_is_half_and_perfect_is_one() -> None:
    y = np.array([0, 1, 0, 1, 1])
    assert M.auc(y, np.full(5, 0.3)) == 0.5
    assert M.auc(y, y.astype(float)) == 1.0
    assert M.auc(y, -y.astype(float)) == 0.0


def test_auc_accepts_lists_and_bool_labels() -> None:
    assert M.auc([False, True, True], [0.1, 0.9, 0.5]) == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_roc_curve_matches_sklearn_without_dropping_points(seed: int) -> None:
    y, p = _data(seed, n=300, ties=True)
    fpr, tpr, thr = M.roc_curve(y, p)
    sfpr, stpr, sthr = sk_roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sfpr)
    np.testing.assert_allclose(tpr, stpr)
    assert np.isinf(thr[0])
    np.testing.assert_allclose(thr[1:], sthr[1:])
    assert np.trapezoid(tpr, fpr) == pytest.approx(M.auc(y, p), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_ks_matches_scipy_two_sample_statistic(seed: int, ties: bool) -> None:
    y, p = _data(seed, ties=ties)
    expected = ks_2samp(p[y == 1], p[y == 0]).statistic
    assert M.ks(y, p) == pytest.approx(expected, abs=1e-12)


def test_ks_curve_shape_and_extremes() -> None:
    y, p = _data(1, n=200)
    c = M.ks_curve(y, p)
    assert c.bad_cum[-1] == 1.0 and c.good_cum[-1] == 1.0 and c.population[-1] == 1.0
    assert np.all(np.diff(c.thresholds) < 0)
    assert c.ks == pytest.approx(np.max(np.abs(c.bad_cum - c.good_cum)))
    i = int(np.argmax(np.abs(c.bad_cum - c.good_cum)))
    assert c.ks_threshold == c.thresholds[i]
    perfect = M.ks_curve(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))
    assert perfect.ks == 1.0 and perfect.ks_threshold == 0.8


def test_bad_rate_at_approval_without_ties() -> None:
    # Scores 0..9, approve the 8 lowest: rows 0..7; bads among them: rows 1 and 7.
    p = np.arange(10, dtype=float)
    y = np.array([0, 1, 0, 0, 0, 0, 0, 1, 1, 1])
    assert M.bad_rate_at_approval(y, p, 0.8) == pytest.approx(2 / 8)
    assert M.bad_rate_at_approval(y, p, 1.0) == pytest.approx(4 / 10)
    assert M.bad_rate_at_approval(y, p, 0.1) == 0.0


def test_bad_rate_at_approval_shares_ties_pro_rata_and_ignores_row_order() -> None:
    # k = 3 approved: score 0.1 (good) plus 2 of the 4 rows tied at 0.5 (2 of them bad).
    p = np.array([0.1, 0.5, 0.5, 0.5, 0.5, 0.9])
    y = np.array([0, 1, 0, 1, 0, 1])
    expected = (0 + 2 * (2 / 4)) / 3
    assert M.bad_rate_at_approval(y, p, 0.5) == pytest.approx(expected)
    perm = np.array([5, 3, 1, 0, 4, 2])
    assert M.bad_rate_at_approval(y[perm], p[perm], 0.5) == pytest.approx(expected)


def test_bad_rate_at_approval_validates_rate_and_allows_one_class() -> None:
    assert M.bad_rate_at_approval(np.zeros(5, int), np.arange(5.0)) == 0.0
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(InvalidInput, match="approval_rate"):
            M.bad_rate_at_approval(np.array([0, 1]), np.array([0.1, 0.2]), bad)


def test_psi_identical_is_about_zero_and_shift_is_large() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=20_000)
    same = rng.normal(size=20_000)
    assert M.population_stability(ref, ref) == pytest.approx(0.0, abs=1e-12)
    assert M.population_stability(ref, same) < 0.01
    shifted = rng.normal(loc=0.5, size=20_000)
    assert M.population_stability(ref, shifted) > 0.1
    assert M.population_stability(ref, shifted + 1.0) > M.population_stability(ref, shifted)


def test_psi_handles_ties_empty_bins_and_out_of_range_values() -> None:
    ref = np.concatenate([np.zeros(500), np.linspace(1, 2, 500)])  # half the mass at one value
    stability = M.population_stability(ref, np.full(100, 10.0))  # all beyond the top edge
    assert np.isfinite(stability) and stability > 1.0
    assert M.population_stability(ref, ref.copy()) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        ([], [], "empty"),
        ([0, 1], [0.1], "entries"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "only 0 and 1"),
        (["a", "b"], [0.1, 0.2], "only 0 and 1"),
        ([0, 1], [0.1, float("nan")], "NaN"),
        ([[0, 1]], [[0.1, 0.2]], "one-dimensional"),
        ([1, 1, 1], [0.1, 0.2, 0.3], "single class"),
        ([0, 0], [0.1, 0.2], "single class"),
    ],
)
def test_auc_ks_evaluate_errors(y: list, p: list, match: str) -> None:
    for fn in (M.auc, M.ks, M.evaluate, M.roc_curve):
        with pytest.raises(InvalidInput, match=match):
            fn(np.asarray(y), np.asarray(p))


@pytest.mark.parametrize(
    ("expected", "actual", "bins", "match"),
    [
        ([], [1.0], 10, "expected_scores is empty"),
        ([1.0], [], 10, "actual_scores is empty"),
        ([1.0, 2.0], [1.0], 1, "bins"),
        ([1.0, float("inf")], [1.0], 10, "expected_scores contains NaN"),
        ([[1.0]], [1.0], 10, "one-dimensional"),
    ],
)
def test_psi_errors(expected: list, actual: list, bins: int, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        M.population_stability(np.asarray(expected), np.asarray(actual), bins=bins)


def test_evaluate_keys_and_values() -> None:
    y, p = _data(3)
    r = M.evaluate(y, p)
    assert set(r) >= {"auc", "ks", "bad_rate_at_80"}
    assert r["auc"] == pytest.approx(roc_auc_score(y, p))
    assert r["bad_rate_at_80"] == pytest.approx(M.bad_rate_at_approval(y, p, 0.8))
    # A useful score approves fewer bads than the base rate.
    assert r["bad_rate_at_80"] < r["default_rate"]
