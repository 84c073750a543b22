"""Cut-off tables and decision bands set from a model's score distribution, not from fixed numbers.

Input: a score histogram ordered from the safest bin to the riskiest (``n[b]`` rows, ``events[b]``
observed defaults and, optionally, ``expected[b]`` the sum of calibrated PDs in the bin). Approving the
first ``k`` bins gives an approval rate and a bad rate among the approved; :func:`cutoff_table` lists
these for every ``k``. Cut-offs come from a target:

- :func:`cutoff_for_approval`: the smallest ``k`` whose approval rate reaches the target,
- :func:`cutoff_for_bad_rate`: the largest ``k`` whose bad rate among the approved stays at or below the
  target (measured on observed defaults, or on calibrated PD when ``use_expected``).

:func:`decision_bands` cuts the distribution into bands at target cumulative approval rates (e.g.
``(0.2, 0.5, 0.8, 0.9)`` gives bands A to E) and flags a band whose bad rate is below the one before it
(a non-monotone band). Since the bands follow the score distribution, a portfolio with a 6% default rate
and a 90% approval target declines about 10%, whatever the score's scale.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedcore.errors import InvalidInput

__all__ = ["Band", "CutoffRow", "cutoff_for_approval", "cutoff_for_bad_rate", "cutoff_table", "decision_bands",
           "non_monotone"]


@dataclass(frozen=True)
class CutoffRow:
    bins_approved: int
    approval_rate: float
    bad_rate_approved: float
    bad_rate_declined: float
    expected_bad_rate_approved: float | None


def _hist(n: npt.ArrayLike, events: npt.ArrayLike, expected: npt.ArrayLike | None) -> tuple[np.ndarray, ...]:
    nn = np.asarray(n, dtype=np.float64)
    ev = np.asarray(events, dtype=np.float64)
    ex = None if expected is None else np.asarray(expected, dtype=np.float64)
    if nn.ndim != 1 or nn.shape != ev.shape or (ex is not None and ex.shape != nn.shape):
        raise InvalidInput("n, events (and expected) must be 1-D of equal length")
    if nn.sum() <= 0 or np.any(nn < 0) or np.any(ev < 0) or np.any(ev > nn):
        raise InvalidInput("counts must satisfy 0 <= events <= n with some rows")
    return nn, ev, (ex if ex is not None else np.full_like(nn, np.nan))


def cutoff_table(n: npt.ArrayLike, events: npt.ArrayLike, expected: npt.ArrayLike | None = None) -> list[CutoffRow]:
    """One row per cut-off ``k = 0 .. len(n)`` (approve the ``k`` safest bins)."""
    nn, ev, ex = _hist(n, events, expected)
    cn = np.r_[0.0, np.cumsum(nn)]
    ce = np.r_[0.0, np.cumsum(ev)]
    cx = np.r_[0.0, np.cumsum(ex)]
    total, bad = cn[-1], ce[-1]
    rows = []
    for k in range(len(nn) + 1):
        appr = cn[k]
        dec = total - appr
        rows.append(
            CutoffRow(
                bins_approved=k,
                approval_rate=float(appr / total),
                bad_rate_approved=float(ce[k] / appr) if appr > 0 else 0.0,
                bad_rate_declined=float((bad - ce[k]) / dec) if dec > 0 else 0.0,
                expected_bad_rate_approved=(
                    float(cx[k] / appr) if expected is not None and appr > 0 else None
                ),
            )
        )
    return rows


def cutoff_for_approval(n: npt.ArrayLike, target: float) -> int:
    """Smallest number of safest bins whose share of rows reaches ``target`` (in (0, 1])."""
    if not 0 < target <= 1:
        raise InvalidInput(f"target approval rate must be in (0, 1], got {target!r}")
    nn = np.asarray(n, dtype=np.float64)
    share = np.cumsum(nn) / nn.sum()
    return int(np.searchsorted(share, target - 1e-12, side="left")) + 1


def cutoff_for_bad_rate(
    n: npt.ArrayLike, events: npt.ArrayLike, target: float, expected: npt.ArrayLike | None = None,
    *, use_expected: bool = False,
) -> int:
    """Largest number of safest bins whose bad rate among the approved is at most ``target``."""
    if not 0 < target < 1:
        raise InvalidInput(f"target bad rate must be in (0, 1), got {target!r}")
    if use_expected and expected is None:
        raise InvalidInput("use_expected needs the expected defaults (sum of calibrated PD) per bin")
    rows = cutoff_table(n, events, expected)
    ok = [r.bins_approved for r in rows[1:]
          if ((r.expected_bad_rate_approved or 0.0) if use_expected else r.bad_rate_approved) <= target]
    return max(ok, default=0)


@dataclass(frozen=True)
class Band:
    name: str
    first_bin: int
    end_bin: int
    share: float
    cumulative_approval: float
    bad_rate: float
    expected_bad_rate: float | None
    monotone: bool


def decision_bands(
    n: npt.ArrayLike,
    events: npt.ArrayLike,
    approval_targets: Sequence[float] = (0.2, 0.5, 0.8, 0.9),
    expected: npt.ArrayLike | None = None,
    names: Sequence[str] | None = None,
) -> list[Band]:
    """Bands cut at the target cumulative approval rates (increasing, in (0, 1)); the last band is
    the rest. A band whose bad rate is lower than the previous band's is flagged ``monotone=False``."""
    t = list(approval_targets)
    if any(not 0 < x < 1 for x in t) or any(b <= a for a, b in itertools.pairwise(t)):
        raise InvalidInput(f"approval targets must increase within (0, 1), got {t}")
    nn, ev, ex = _hist(n, events, expected)
    labels = list(names) if names is not None else [chr(ord("A") + i) for i in range(len(t) + 1)]
    if len(labels) != len(t) + 1:
        raise InvalidInput(f"{len(labels)} band names for {len(t) + 1} bands")
    cuts = [cutoff_for_approval(nn, x) for x in t]
    bounds = [0, *cuts, len(nn)]
    bands: list[Band] = []
    prev_rate = -1.0
    total = nn.sum()
    for name, a, b in zip(labels, bounds, bounds[1:], strict=False):
        cnt = nn[a:b].sum()
        rate = float(ev[a:b].sum() / cnt) if cnt > 0 else 0.0
        exp = float(ex[a:b].sum() / cnt) if expected is not None and cnt > 0 else None
        mono = cnt == 0 or rate >= prev_rate
        if cnt > 0:
            prev_rate = rate
        bands.append(Band(name, a, b, float(cnt / total), float(nn[:b].sum() / total), rate, exp, bool(mono)))
    return bands


def non_monotone(bad_rates: npt.ArrayLike) -> list[int]:
    """Indices of bands (ordered safest first) whose bad rate falls below the previous band's."""
    r = np.asarray(bad_rates, dtype=np.float64)
    return [int(i) + 1 for i in np.flatnonzero(np.diff(r) < 0)]
