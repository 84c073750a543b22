"""The synthetic time dimension: borrowers who default show falling spend months before, others mostly
do not; deterministic given the seed; snapshot files load with the snapshot CLI's format."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scripts.synthetic import SynthConfig, generate
from scripts.synthetic_time import TimeConfig, generate_time, write_time


def test_deterioration_precedes_default(tmp_path):
    fed = generate(SynthConfig(people=4000, seed=2))
    ts = generate_time(fed, TimeConfig(weeks=40, seed=3))
    again = generate_time(fed, TimeConfig(weeks=40, seed=3))
    pd.testing.assert_frame_equal(ts.snapshots, again.snapshots)
    spend = ts.snapshots.pivot(index="person_id", columns="week", values="spend")
    dw = ts.default_week[spend.index.to_numpy()]
    drops = []
    for pid, d in zip(spend.index, dw, strict=True):
        if 30 <= d < 40:  # defaults late in the horizon: 4 weeks before vs 20 weeks before
            drops.append(spend.loc[pid, d - 4:d - 1].mean() / spend.loc[pid, d - 24:d - 16].mean())
    stable = (spend.loc[dw < 0, 36:39].mean(axis=1) / spend.loc[dw < 0, 16:24].mean(axis=1)).to_numpy()
    assert len(drops) >= 10
    assert np.median(drops) < 0.5 and np.mean(np.array(drops) < 0.5) > 0.5  # most collapse before
    assert np.median(stable) > 0.8 and np.mean(stable < 0.5) < 0.1  # few false dips
    files = write_time(ts, fed, tmp_path)
    assert len(files) == 40 and files[0].name == "2024-01-07.csv"
    head = pd.read_csv(files[0], dtype={"user_id": str})
    assert list(head.columns) == ["user_id", "spend", "active_days"] and head["user_id"].str.len().min() >= 11
