"""Split finding from histograms against brute force over every partition of the bins."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from models.gbdt import FeatureLayout, FeatureSpec, GBDTParams, Histogram, LocalHistogramSource, find_best_split
from models.gbdt.binning import BinMapper
from models.gbdt.grower import grow_tree
from models.gbdt.split import node_score


def _gain(gl, hl, g, h, lam, mcw):
    gr, hr = g - gl, h - hl
    if hl < max(mcw, 1e-12) or hr < max(mcw, 1e-12):
        return -np.inf
    s = node_score(gl, hl, lam, -np.inf, np.inf) + node_score(gr, hr, lam, -np.inf, np.inf)
    return float(0.5 * (s - node_score(g, h, lam, -np.inf, np.inf)))


def _brute(bins, g, h, layout, lam, mcw, sign=None):
    """Best gain over every left set of value bins (numeric: prefixes) x missing left/right."""
    best = -np.inf
    miss = layout.missing_slot
    G, H = g.sum(), h.sum()
    for f, spec in enumerate(layout.features):
        b = bins[f]
        if spec.categorical:
            sets = [s for k in range(1, spec.n_bins) for s in itertools.combinations(range(spec.n_bins), k)]
        else:
            sets = [tuple(range(t + 1)) for t in range(spec.n_bins - 1)]
        for left in sets:
            for miss_left in (False, True):
                go = np.isin(b, left) | ((b == miss) & miss_left)
                gl, hl = g[go].sum(), h[go].sum()
                if sign is not None and sign[f]:
                    wl, wr = -gl / (hl + lam), -(G - gl) / (H - hl + lam)
                    if sign[f] * (wl - wr) > 0:
                        continue
                best = max(best, _gain(gl, hl, G, H, lam, mcw))
    return best


def _data(seed, n=80, categorical=False, missing=True):
    rng = np.random.default_rng(seed)
    cols = {f"x{j}": rng.normal(size=n).round(1) for j in range(3)}
    if missing:
        cols["x0"][rng.random(n) < 0.2] = np.nan
    if categorical:
        cols["c"] = rng.integers(0, 5, size=n).astype(float)
    mapper = BinMapper.fit(cols, max_bins=6, categorical=["c"] if categorical else [])
    bins = mapper.transform(cols)
    layout = FeatureLayout(
        tuple(FeatureSpec(fb.name, "p", fb.n_bins, fb.categorical) for fb in mapper.features), mapper.max_bins
    )
    g = rng.normal(size=n)
    h = rng.uniform(0.05, 0.25, size=n)
    return bins, g, h, layout, mapper


def _root_hist(bins, g, h, layout):
    hist = Histogram.zeros(len(layout), layout.n_slots)
    for f in range(len(layout)):
        hist.g[f] = np.bincount(bins[f], weights=g, minlength=layout.n_slots)
        hist.h[f] = np.bincount(bins[f], weights=h, minlength=layout.n_slots)
    return hist


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("lam,mcw", [(1.0, 0.0), (0.0, 1.0), (5.0, 2.0)])
def test_numeric_split_matches_brute_force(seed, lam, mcw):
    bins, g, h, layout, _ = _data(seed)
    params = GBDTParams(reg_lambda=lam, min_child_weight=mcw)
    dec = find_best_split(_root_hist(bins, g, h, layout), g.sum(), h.sum(), layout, range(len(layout)), params)
    want = _brute(bins, g, h, layout, lam, mcw)
    assert dec is not None
    assert dec.gain == pytest.approx(want, rel=1e-9)
    # The decision's own statistics are those of the rows it sends left.
    go = dec.left_table(layout.n_slots)[bins[dec.feature]]
    assert dec.g_left == pytest.approx(g[go].sum()) and dec.h_left == pytest.approx(h[go].sum())


@pytest.mark.parametrize("seed", range(5))
def test_categorical_split_matches_brute_force_over_all_subsets(seed):
    # Without missing values and cat_smooth=0, the best subset is a prefix of the G/H order (Fisher 1958).
    bins, g, h, layout, _ = _data(seed, categorical=True, missing=False)
    params = GBDTParams(cat_smooth=0.0, min_child_weight=0.0)
    dec = find_best_split(_root_hist(bins, g, h, layout), g.sum(), h.sum(), layout, range(len(layout)), params)
    assert dec is not None
    assert dec.gain == pytest.approx(_brute(bins, g, h, layout, 1.0, 0.0), rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_monotone_split_matches_brute_force_among_ordered_splits(seed):
    bins, g, h, layout, _ = _data(seed, missing=False)
    signs = [1, -1, 0]
    layout = FeatureLayout(
        tuple(
            FeatureSpec(s.name, s.owner, s.n_bins, s.categorical, sign)
            for s, sign in zip(layout.features, signs, strict=True)
        ),
        layout.max_bins,
    )
    params = GBDTParams(min_child_weight=0.0)
    dec = find_best_split(_root_hist(bins, g, h, layout), g.sum(), h.sum(), layout, range(3), params)
    want = _brute(bins, g, h, layout, 1.0, 0.0, sign=signs)
    assert dec is not None and dec.gain == pytest.approx(want, rel=1e-9)
    sign = signs[dec.feature]
    wl = -dec.g_left / (dec.h_left + 1.0)
    wr = -dec.g_right / (dec.h_right + 1.0)
    assert sign * (wl - wr) <= 0


def test_gamma_blocks_weak_splits():
    bins, g, h, layout, _ = _data(0)
    hist = _root_hist(bins, g, h, layout)
    dec = find_best_split(hist, g.sum(), h.sum(), layout, range(3), GBDTParams())
    assert dec is not None
    assert find_best_split(hist, g.sum(), h.sum(), layout, range(3), GBDTParams(gamma=dec.gain + 1e-9)) is None


class _Recording(LocalHistogramSource):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.built: list[list[int]] = []
        self.rows_of: dict[int, int] = {}

    def build(self, nodes, features):
        self.built.append(list(nodes))
        return super().build(nodes, features)


def test_grower_builds_the_smaller_child_and_subtracts_for_its_sibling():
    bins, g, h, layout, mapper = _data(3, n=400)
    src = _Recording(bins, layout, {"p": mapper})
    src.begin_tree(g, h)
    params = GBDTParams(max_depth=3, min_child_weight=0.0)
    gt = grow_tree(src, params, range(3), ["p"])
    tree = gt.tree
    depth = np.zeros(tree.n_nodes, dtype=int)
    for i in range(tree.n_nodes):
        if tree.left[i] >= 0:
            depth[tree.left[i]] = depth[tree.right[i]] = depth[i] + 1
    built = [n for level in src.built for n in level]
    assert built[0] == 0 and len(built) == len(set(built))
    inner = np.flatnonzero(tree.left >= 0)
    assert len(inner) >= 3
    for i in inner:
        kids = {int(tree.left[i]), int(tree.right[i])}
        # a split above the last level builds exactly one child; children at max depth need none
        assert len(kids & set(built)) == (1 if depth[i] + 1 < params.max_depth else 0)
    # subtraction gives the same histogram as building the sibling directly
    src2 = LocalHistogramSource(bins, layout, {"p": mapper})
    src2.begin_tree(g, h)
    root = src2.build([0], np.arange(3))[0]
    dec = find_best_split(root, g.sum(), h.sum(), layout, range(3), params)
    src2.split([(0, dec, 1, 2)])
    left, right = src2.build([1, 2], np.arange(3))
    sub = root - left
    np.testing.assert_allclose(sub.g, right.g, atol=1e-9)
    np.testing.assert_allclose(sub.h, right.h, atol=1e-9)
