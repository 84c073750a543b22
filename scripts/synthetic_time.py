"""The synthetic federation's time dimension (``scripts/synthetic.py`` gives the people and loans).

Weekly platform snapshots (``spend`` per week, ``active_days`` per week) for every person on the
platform over ``weeks`` weeks, and a default date for every loan that defaults. A share
(``deteriorate_share``) of the borrowers who default show it in their behaviour first: from
``lead_weeks`` (uniform in ``lead_range``) before the default their spending collapses and their
activity stops, gradually. A small share of everyone else (``false_dip_share``) has a temporary dip
(a holiday, a new job) that recovers: the alerts' false positives. Deterministic given the seed.

Ground truth (for measuring only): ``default_week`` per person (-1: no default in the horizon) and
``onset_week`` (-1: behaviour does not deteriorate before the default).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scripts.synthetic import PLATFORM, Federation

START = dt.date(2024, 1, 7)


@dataclass(frozen=True)
class TimeConfig:
    weeks: int = 60
    seed: int = 1
    deteriorate_share: float = 0.75
    lead_range: tuple[int, int] = (6, 20)  # weeks of deterioration before the default
    false_dip_share: float = 0.03
    first_default_week: int = 20  # defaults happen in [first_default_week, weeks + 26)


@dataclass
class TimeSeries:
    snapshots: pd.DataFrame  # week, as_of, person_id, spend, active_days (platform users only)
    default_week: np.ndarray  # per person: the week of the first default, -1 if none
    config: TimeConfig
    onset_week: np.ndarray | None = None  # per person: the week deterioration starts, -1 if none

    def as_of(self, week: int) -> dt.date:
        return START + dt.timedelta(days=7 * week)


def generate_time(fed: Federation, config: TimeConfig | None = None) -> TimeSeries:
    cfg = config or TimeConfig()
    rng = np.random.default_rng(cfg.seed)
    people = fed.people
    n = len(people)
    default_week = np.full(n, -1, dtype=np.int64)
    bad = fed.loans.loc[fed.loans["defaulted"] == 1, "person_id"].unique()
    default_week[bad] = rng.integers(cfg.first_default_week, cfg.weeks + 26, len(bad))
    on = np.flatnonzero(people["on_platform"].to_numpy())
    k = len(on)
    base_spend = np.exp(5.5 + 0.3 * rng.normal(0, 1, k))
    base_active = np.clip(rng.normal(5.0, 1.2, k), 1, 7)
    dw = default_week[on]
    deteriorates = (dw >= 0) & (rng.random(k) < cfg.deteriorate_share)
    lead = rng.integers(cfg.lead_range[0], cfg.lead_range[1] + 1, k)
    onset = np.where(deteriorates, dw - lead, 10**6)
    dip = ~deteriorates & (rng.random(k) < cfg.false_dip_share)
    dip_start = np.where(dip, rng.integers(8, cfg.weeks, k), 10**6)
    frames = []
    for w in range(cfg.weeks):
        # deterioration: a ramp from 1 down to 0.15 over 6 weeks after onset
        ramp = np.clip((w - onset) / 6.0, 0.0, 1.0)
        factor = 1.0 - 0.85 * ramp
        in_dip = (w >= dip_start) & (w < dip_start + 6)
        factor = np.where(in_dip, 0.35, factor)
        spend = base_spend * factor * np.exp(rng.normal(0, 0.25, k))
        active = np.clip(np.round(base_active * factor + rng.normal(0, 0.7, k)), 0, 7)
        frames.append(pd.DataFrame({"week": w, "person_id": on, "spend": spend.round(2), "active_days": active}))
    snaps = pd.concat(frames, ignore_index=True)
    snaps["as_of"] = [START + dt.timedelta(days=7 * int(w)) for w in snaps["week"]]
    onset_week = np.full(n, -1, dtype=np.int64)
    onset_week[on[deteriorates]] = onset[deteriorates]
    return TimeSeries(snaps, default_week, cfg, onset_week)


def platform_ids(fed: Federation, person_ids: np.ndarray) -> list[str]:
    """The ids the platform knows these people by (the same id kind as its data file)."""
    col = "national_id" if fed.config.id_kind == "national_id" else "phone"
    return [str(v) for v in fed.people[col].to_numpy()[person_ids]]




def write_time(ts: TimeSeries, fed: Federation, out: Path) -> list[Path]:
    """Weekly platform snapshot CSVs (``tiange/snapshots/YYYY-MM-DD.csv``: user_id, spend, active_days;
    load each with ``fedcredit party snapshot load FILE --dataset behaviour --as-of DATE --id-column
    user_id``) and ``ground_truth/default_week.csv`` (measuring only)."""
    folder = out / PLATFORM / "snapshots"
    folder.mkdir(parents=True, exist_ok=True)
    ids = np.array(platform_ids(fed, np.arange(len(fed.people))), dtype=object)
    written = []
    for week, frame in ts.snapshots.groupby("week", sort=True):
        path = folder / f"{ts.as_of(int(week)).isoformat()}.csv"
        pd.DataFrame({"user_id": ids[frame["person_id"].to_numpy()], "spend": frame["spend"].to_numpy(),
                      "active_days": frame["active_days"].to_numpy()}).to_csv(path, index=False)
        written.append(path)
    gt = out / "ground_truth"
    gt.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"person_id": np.arange(len(ts.default_week)), "default_week": ts.default_week}).to_csv(
        gt / "default_week.csv", index=False)
    return written


__all__ = ["PLATFORM", "START", "TimeConfig", "TimeSeries", "generate_time", "platform_ids", "write_time"]
