"""Evaluation from counts: AUC/KS with bootstrap intervals, calibration and Hosmer-Lemeshow, bands."""

from __future__ import annotations

import numpy as np
import pytest

from fedcore.errors import InvalidInput
from models.bands import cutoff_for_approval, cutoff_for_bad_rate, cutoff_table, decision_bands, non_monotone
from models.bootstrap import auc_from_counts, bootstrap_metrics, ks_from_counts, score_counts
from models.calibration import calibration_counts, calibration_table, chi2_sf, pd_edges, platt_from_counts
from models.metrics import ks


def _portfolio(n=20_000, rate=0.06, seed=0):
    """Scores with real lift and a true PD; default rate about ``rate``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=n)
    logit = np.log(rate / (1 - rate)) - 0.5 + 1.2 * z
    pd_true = 1 / (1 + np.exp(-logit))
    y = (rng.random(n) < pd_true).astype(int)
    return y, pd_true, z


def test_auc_ks_from_counts_equal_row_level():
    from sklearn.metrics import roc_auc_score

    y, p, _ = _portfolio(5000)
    p = np.round(p, 3)  # ties
    _, ev, ne = score_counts(y, p)
    assert auc_from_counts(ev, ne) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert ks_from_counts(ev, ne) == pytest.approx(ks(y, p), abs=1e-12)


def test_bootstrap_interval_covers_and_shrinks():
    y, p, _ = _portfolio(20_000)
    _, ev, ne = score_counts(y, np.round(p, 4))
    big = bootstrap_metrics(ev, ne, n_boot=300, seed=1)
    assert big["auc"].low < big["auc"].estimate < big["auc"].high
    assert big["gini"].estimate == pytest.approx(2 * big["auc"].estimate - 1)
    assert big["ks"].low < big["ks"].estimate < big["ks"].high
    _, ev2, ne2 = score_counts(y[:2000], np.round(p[:2000], 4))
    small = bootstrap_metrics(ev2, ne2, n_boot=300, seed=1)
    assert (small["auc"].high - small["auc"].low) > 2 * (big["auc"].high - big["auc"].low)
    # Percentile interval width matches the textbook standard error of the AUC (Hanley-McNeil)
    a, E, N = big["auc"].estimate, ev.sum(), ne.sum()
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = np.sqrt((a * (1 - a) + (E - 1) * (q1 - a * a) + (N - 1) * (q2 - a * a)) / (E * N))
    assert (big["auc"].high - big["auc"].low) == pytest.approx(2 * 1.96 * se, rel=0.25)
    with pytest.raises(InvalidInput, match="n_boot"):
        bootstrap_metrics(ev, ne, n_boot=1)


def test_chi2_sf_matches_scipy():
    from scipy.stats import chi2

    for df in (1, 2, 3, 5, 8, 11):
        for x in (0.1, 1.0, 4.2, 15.5, 40.0):
            assert chi2_sf(x, df) == pytest.approx(chi2.sf(x, df), rel=1e-9, abs=1e-15)


def test_calibration_table_and_hosmer_lemeshow():
    y, p, _ = _portfolio(20_000, seed=3)
    edges = pd_edges(p, 10)
    good = calibration_table(*calibration_counts(y, p, edges))
    assert len(good.n) == 10 and good.n.sum() == 20_000
    assert np.allclose(good.predicted, good.observed, atol=0.03)
    assert good.hl_df == 8 and good.hl_pvalue > 0.01
    # by hand for the first group
    n0, s0, e0 = calibration_counts(y, p, edges)
    hl = np.sum((e0 - s0) ** 2 / (s0 * (1 - s0 / n0)))
    assert good.hl_statistic == pytest.approx(hl)
    bad = calibration_table(*calibration_counts(y, np.clip(p * 3, 0, 1), edges))
    assert bad.hl_pvalue < 1e-6
    assert good.records()[0]["group"] == 1


def test_platt_restores_the_portfolio_level():
    y, p, _ = _portfolio(40_000, seed=4)
    logit = np.log(p / (1 - p))
    skewed = 1 / (1 + np.exp(-(logit + 2.0)))  # right ranking, PD level far too high
    groups = np.round(np.log(skewed / (1 - skewed)), 2)
    u, ev, ne = score_counts(y, groups)
    cal = platt_from_counts(u, ev + ne, ev)
    assert cal.a == pytest.approx(-2.0, abs=0.15) and cal.b == pytest.approx(1.0, abs=0.08)
    assert cal(skewed).mean() == pytest.approx(y.mean(), rel=0.02)


def test_bands_follow_the_distribution_on_a_six_percent_portfolio():
    y, p, _ = _portfolio(30_000, rate=0.06, seed=5)
    assert 0.04 < y.mean() < 0.08
    s, ev, ne = score_counts(y, np.round(p, 4))  # safest first
    n = ev + ne
    k = cutoff_for_approval(n, 0.9)
    table = cutoff_table(n, ev, expected=s * n)
    assert abs(table[k].approval_rate - 0.9) < 0.01
    assert table[k].bad_rate_approved < y.mean() < table[k].bad_rate_declined
    kb = cutoff_for_bad_rate(n, ev, 0.04)
    assert table[kb].bad_rate_approved <= 0.04 and (kb == len(n) or table[kb + 1].bad_rate_approved > 0.04)
    ke = cutoff_for_bad_rate(n, ev, 0.04, expected=s * n, use_expected=True)
    assert abs(table[ke].approval_rate - table[kb].approval_rate) < 0.05
    bands = decision_bands(n, ev, (0.2, 0.5, 0.8, 0.9), expected=s * n)
    assert [b.name for b in bands] == ["A", "B", "C", "D", "E"]
    assert sum(b.share for b in bands) == pytest.approx(1.0)
    assert bands[3].cumulative_approval == pytest.approx(0.9, abs=0.01)
    assert all(b.monotone for b in bands)
    assert bands[-1].bad_rate > 3 * bands[0].bad_rate


def test_non_monotone_bands_are_flagged():
    bands = decision_bands([100, 100, 100], [5, 2, 20], (0.3, 0.6))
    assert [b.monotone for b in bands] == [True, False, True]
    assert non_monotone([0.01, 0.03, 0.02, 0.1]) == [2]
    with pytest.raises(InvalidInput, match="increase"):
        decision_bands([1, 2], [0, 1], (0.5, 0.4))
