"""Split finding from histograms: second-order gain with L2, min-child-weight, gamma, a learned default
direction for missing values, categorical splits, and XGBoost-style monotone constraints.

The gain of a split is ``0.5 * (s(GL, HL) + s(GR, HR) - s(G, H))`` where ``s(G, H) = -(2 G w + (H + λ) w²)``
at the node's weight ``w = clip(-G / (H + λ), lo, hi)`` (equal to ``G² / (H + λ)`` when the bounds do
not bind). ``[lo, hi]`` are the node's monotone bounds. Numeric features try every threshold with the
missing bin sent right, then left; categorical features sort their categories by ``G / (H + cat_smooth)``
and try every prefix as the left set (LightGBM's method), missing right then left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from models.gbdt.histogram import FeatureLayout, Histogram
    from models.gbdt.params import GBDTParams

_EPS = 1e-12


@dataclass(frozen=True)
class SplitDecision:
    """A chosen split in bin terms. Numeric: rows with ``bin <= threshold`` go left; categorical: rows whose
    bin is in ``left_bins`` go left. The missing slot goes left iff ``default_left``."""

    feature: int
    gain: float
    default_left: bool
    threshold: int = -1
    left_bins: tuple[int, ...] = ()
    categorical: bool = False
    g_left: float = 0.0
    h_left: float = 0.0
    g_right: float = 0.0
    h_right: float = 0.0

    def left_table(self, n_slots: int) -> np.ndarray:
        """Boolean per slot: does a row in that slot go left."""
        table = np.zeros(n_slots, dtype=bool)
        if self.categorical:
            table[list(self.left_bins)] = True
        else:
            table[: self.threshold + 1] = True
        table[n_slots - 1] = self.default_left
        return table


def leaf_weight(g: np.ndarray | float, h: np.ndarray | float, lam: float, lo: float, hi: float) -> np.ndarray:
    return np.clip(-np.asarray(g) / (np.asarray(h) + lam), lo, hi)


def node_score(g: np.ndarray | float, h: np.ndarray | float, lam: float, lo: float, hi: float) -> np.ndarray:
    w = leaf_weight(g, h, lam, lo, hi)
    return -(2.0 * np.asarray(g) * w + (np.asarray(h) + lam) * w * w)


def child_bounds(dec: SplitDecision, sign: int, lam: float, lo: float, hi: float) -> tuple[tuple[float, float], ...]:
    """Monotone bounds of (left, right) children: split the parent's range at the children's mid weight."""
    if sign == 0:
        return (lo, hi), (lo, hi)
    wl = float(leaf_weight(dec.g_left, dec.h_left, lam, lo, hi))
    wr = float(leaf_weight(dec.g_right, dec.h_right, lam, lo, hi))
    mid = (wl + wr) / 2.0
    return ((lo, mid), (mid, hi)) if sign > 0 else ((mid, hi), (lo, mid))


def _valid(hl: np.ndarray, hr: np.ndarray, mcw: float) -> np.ndarray:
    floor = max(mcw, _EPS)
    return (hl >= floor) & (hr >= floor)


def _monotone_ok(
    gl: np.ndarray, hl: np.ndarray, gr: np.ndarray, hr: np.ndarray, sign: np.ndarray, lam: float, lo: float, hi: float
) -> np.ndarray:
    wl = leaf_weight(gl, hl, lam, lo, hi)
    wr = leaf_weight(gr, hr, lam, lo, hi)
    return sign * (wl - wr) <= 0.0


def find_best_split(
    hist: Histogram,
    g_total: float,
    h_total: float,
    layout: FeatureLayout,
    features: Sequence[int] | np.ndarray,
    params: GBDTParams,
    bounds: tuple[float, float] = (-np.inf, np.inf),
) -> SplitDecision | None:
    """The best split of a node over ``features``, or None when no split gains more than ``gamma``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _find_best_split(hist, g_total, h_total, layout, features, params, bounds)


def _find_best_split(
    hist: Histogram,
    g_total: float,
    h_total: float,
    layout: FeatureLayout,
    features: Sequence[int] | np.ndarray,
    params: GBDTParams,
    bounds: tuple[float, float],
) -> SplitDecision | None:
    lam, mcw = params.reg_lambda, params.min_child_weight
    lo, hi = bounds
    parent = float(node_score(g_total, h_total, lam, lo, hi))
    best: SplitDecision | None = None
    best_gain = max(params.gamma, _EPS)
    miss = layout.missing_slot
    numeric = [f for f in features if not layout.features[f].categorical and layout.features[f].n_bins > 1]
    if numeric:
        idx = np.asarray(numeric)
        cg = np.cumsum(hist.g[idx, :miss], axis=1)
        ch = np.cumsum(hist.h[idx, :miss], axis=1)
        gm = hist.g[idx, miss][:, None]
        hm = hist.h[idx, miss][:, None]
        nb = np.array([layout.features[f].n_bins for f in numeric])
        in_range = np.arange(miss)[None, :] < (nb - 1)[:, None]
        sign = np.array([layout.features[f].monotone for f in numeric])[:, None]
        for default_left in (False, True):
            gl = cg + gm if default_left else cg
            hl = ch + hm if default_left else ch
            gr, hr = g_total - gl, h_total - hl
            gain = 0.5 * (node_score(gl, hl, lam, lo, hi) + node_score(gr, hr, lam, lo, hi) - parent)
            ok = in_range & _valid(hl, hr, mcw) & _monotone_ok(gl, hl, gr, hr, sign, lam, lo, hi)
            gain = np.where(ok, gain, -np.inf)
            k = int(np.argmax(gain))
            i, t = divmod(k, miss)
            if gain[i, t] > best_gain:
                best_gain = float(gain[i, t])
                best = SplitDecision(
                    numeric[i], best_gain, default_left, threshold=t,
                    g_left=float(gl[i, t]), h_left=float(hl[i, t]),
                    g_right=float(gr[i, t]), h_right=float(hr[i, t]),
                )  # fmt: skip
    for f in features:
        spec = layout.features[f]
        if not spec.categorical or spec.n_bins < 2:
            continue
        g = hist.g[f, : spec.n_bins]
        h = hist.h[f, : spec.n_bins]
        used = np.flatnonzero(h > 0)
        if used.size < 2:
            continue
        order = used[np.argsort(g[used] / (h[used] + params.cat_smooth), kind="stable")]
        cg = np.cumsum(g[order])[:-1]
        ch = np.cumsum(h[order])[:-1]
        gm, hm = hist.g[f, miss], hist.h[f, miss]
        for default_left in (False, True):
            gl = cg + gm if default_left else cg
            hl = ch + hm if default_left else ch
            gr, hr = g_total - gl, h_total - hl
            gain = 0.5 * (node_score(gl, hl, lam, lo, hi) + node_score(gr, hr, lam, lo, hi) - parent)
            gain = np.where(_valid(hl, hr, mcw), gain, -np.inf)
            k = int(np.argmax(gain))
            if gain[k] > best_gain:
                best_gain = float(gain[k])
                best = SplitDecision(
                    f, best_gain, default_left, left_bins=tuple(sorted(int(b) for b in order[: k + 1])),
                    categorical=True, g_left=float(gl[k]), h_left=float(hl[k]),
                    g_right=float(gr[k]), h_right=float(hr[k]),
                )  # fmt: skip
    return best
