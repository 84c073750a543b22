"""Optimal monotone binning: exact against brute force, equal IV to optbinning on the FATE data."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fedcore.errors import InvalidInput
from models.binning import CategoricalBinning
from models.optimal_binning import is_monotone, optimal_binning, optimal_partition
from models.prebinning import numeric_prebinning
from models.woe import ZERO_COUNT, bin_counts


def _brute(ev, ne, min_count, max_bins, trend):
    n = len(ev)
    E, N = ev.sum(), ne.sum()
    best = -np.inf
    for k in range(n):
        for cuts in itertools.combinations(range(1, n), k):
            if max_bins is not None and k + 1 > max_bins:
                continue
            b = [0, *cuts, n]
            se = np.array([ev[a:c].sum() for a, c in itertools.pairwise(b)])
            sn = np.array([ne[a:c].sum() for a, c in itertools.pairwise(b)])
            if np.any(se + sn < min_count):
                continue
            rate = se / (se + sn)
            if trend == "ascending" and np.any(np.diff(rate) < -1e-12):
                continue
            if trend == "descending" and np.any(np.diff(rate) > 1e-12):
                continue
            pe = np.where(se > 0, se, ZERO_COUNT) / E
            pn = np.where(sn > 0, sn, ZERO_COUNT) / N
            best = max(best, float(np.sum((pe - pn) * np.log(pe / pn))))
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("trend", ["ascending", "descending", "none"])
def test_dynamic_programme_is_exact(seed, trend):
    rng = np.random.default_rng(seed)
    n = 9
    ev = rng.integers(0, 40, n).astype(float)
    ne = rng.integers(20, 200, n).astype(float)
    min_count = 0.08 * (ev.sum() + ne.sum())
    max_bins = [None, 3, 4, 5, 2, None][seed]
    starts, iv = optimal_partition(ev, ne, min_count=min_count, max_bins=max_bins, trend=trend)
    assert iv == pytest.approx(_brute(ev, ne, min_count, max_bins, trend), abs=1e-12)
    b = [*starts, n]
    se = np.array([ev[a:c].sum() for a, c in itertools.pairwise(b)])
    sn = np.array([ne[a:c].sum() for a, c in itertools.pairwise(b)])
    assert np.all(se + sn >= min_count)
    assert max_bins is None or len(starts) <= max_bins
    if trend != "none":
        assert is_monotone(se / (se + sn), trend)


@pytest.mark.parametrize(
    ("party", "col"), [("guest", "x0"), ("guest", "x4"), ("guest", "x7"), ("host", "x0"), ("host", "x5")]
)
def test_same_iv_and_splits_as_optbinning(hetero, party, col):
    from optbinning import OptimalBinning

    g, h = hetero
    x = (g if party == "guest" else h)[col].to_numpy()
    y = g["y"].to_numpy()
    fine = numeric_prebinning(col, x, n_bins=20)
    ours = optimal_binning(fine, *bin_counts(fine.assign(x), y, fine.n_bins), max_bins=6, min_bin_size=0.05)
    ob = OptimalBinning(name=col, user_splits=list(fine.cuts), monotonic_trend=ours.trend,
                        min_bin_size=0.05, max_n_bins=6, solver="cp")
    ob.fit(x, y)
    assert ob.status == "OPTIMAL"
    assert ours.table.iv == pytest.approx(float(ob.binning_table.build().loc["Totals", "IV"]), abs=1e-6)
    assert np.allclose(ours.binning.cuts, ob.splits)
    rates = ours.table.event_rate[:-1]
    assert is_monotone(rates, ours.trend)
    other = "ascending" if ours.trend == "descending" else "descending"
    ob2 = OptimalBinning(name=col, user_splits=list(fine.cuts), monotonic_trend=other,
                         min_bin_size=0.05, max_n_bins=6, solver="cp").fit(x, y)
    assert ours.table.iv >= float(ob2.binning_table.build().loc["Totals", "IV"]) - 1e-9  # auto kept the better


def test_constraints_on_fate(hetero):
    g, h = hetero
    x = h["x4"].to_numpy()  # AGE: weak, not monotone
    y = g["y"].to_numpy()
    fine = numeric_prebinning("x4", x, n_bins=20)
    ev, ne = bin_counts(fine.assign(x), y, fine.n_bins)
    for trend in ("ascending", "descending"):
        r = optimal_binning(fine, ev, ne, max_bins=4, min_bin_size=0.1, trend=trend)
        counts = r.table.counts[:-1]
        assert len(counts) <= 4 and np.all(counts >= 0.1 * len(x)) and r.trend == trend
        assert is_monotone(r.table.event_rate[:-1], trend)
    with pytest.raises(InvalidInput, match="trend"):
        optimal_binning(fine, ev, ne, trend="peak")


def test_categorical_groups_follow_event_rate_order():
    b = CategoricalBinning("c", (("a",), ("b",), ("c",), ("d",)), fallback=3)
    ev = np.array([50, 5, 48, 6, 0])
    ne = np.array([450, 495, 452, 494, 0])
    assert optimal_binning(b, ev, ne, min_bin_size=0.05).binning.groups == (("b",), ("d",), ("c",), ("a",))
    r = optimal_binning(b, ev, ne, min_bin_size=0.05, max_bins=2)
    assert r.binning.groups == (("b", "d"), ("c", "a"))
    assert r.binning.fallback == next(i for i, g in enumerate(r.binning.groups) if "d" in g)
    assert r.table.iv > 0.3
