"""Dated snapshots: incremental loads keep history, the same date replaces, an older date is refused and
leaves the store as it was; change features compare the recent window with the prior one."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from fedcore.errors import InvalidInput
from party_node.snapshots import SnapshotOutOfOrder, Snapshots, change_features
from party_node.store import Store

IDS = ["13800000001", "13800000002", "13800000003"]


@pytest.fixture
def snaps(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    yield Snapshots(store)
    store.close()


def test_incremental_loads_keep_history_and_same_date_replaces(snaps):
    snaps.load("behaviour", "2024-01-07", IDS, "phone", {"spend": [10, 20, 30]})
    rep = snaps.load("behaviour", "2024-01-14", IDS, "phone", {"spend": [11, 21, 31]})
    assert not rep.replaced and rep.rows == 3
    again = snaps.load("behaviour", "2024-01-14", IDS[:2], "phone", {"spend": [12, 22]})
    assert again.replaced
    assert snaps.dates("behaviour") == [dt.date(2024, 1, 7), dt.date(2024, 1, 14)]
    hist = snaps.history("behaviour", "spend", dt.date(2024, 1, 1), dt.date(2024, 2, 1))
    assert hist[("phone", "13800000001")] == [(dt.date(2024, 1, 7), 10.0), (dt.date(2024, 1, 14), 12.0)]
    assert hist[("phone", "13800000003")] == [(dt.date(2024, 1, 7), 30.0)]  # the replaced date dropped it


def test_snapshot_older_than_the_latest_is_refused_and_changes_nothing(snaps):
    snaps.load("behaviour", "2024-03-01", IDS, "phone", {"spend": [1, 2, 3]})
    before = snaps.store.checksum()
    with pytest.raises(SnapshotOutOfOrder, match=r"2024-02-01.*older than the latest loaded \(2024-03-01\)"):
        snaps.load("behaviour", "2024-02-01", IDS, "phone", {"spend": [4, 5, 6]}, source="feb.csv")
    assert snaps.store.checksum() == before
    assert snaps.latest("behaviour") == dt.date(2024, 3, 1)
    snaps.load("other", "2024-01-01", IDS, "phone", {"spend": [1, 2, 3]})  # per dataset: another is fine


def test_bad_snapshot_values_name_row_and_column(snaps):
    with pytest.raises(InvalidInput, match=r"s.csv: row 2, column 'spend'"):
        snaps.load("behaviour", "2024-01-01", IDS, "phone", {"spend": [1, float("nan"), 3]}, source="s.csv")
    with pytest.raises(InvalidInput, match="not a date"):
        snaps.load("behaviour", "yesterday", IDS, "phone", {"spend": [1, 2, 3]})
    assert snaps.latest("behaviour") is None


def test_change_feature_30_days_against_prior_90(snaps):
    start = dt.date(2024, 1, 1)
    for week in range(18):  # weekly snapshots over ~4 months
        day = start + dt.timedelta(days=7 * week)
        recent = day > start + dt.timedelta(days=7 * 17 - 30)
        snaps.load("behaviour", day, IDS, "phone", {"spend": [100.0, 100.0 if not recent else 20.0, 50.0]})
    asof = start + dt.timedelta(days=7 * 17)
    ch = change_features(snaps, "behaviour", "spend", asof)
    assert ch[("phone", "13800000001")] == pytest.approx(1.0)
    assert ch[("phone", "13800000002")] == pytest.approx(0.2)  # spending collapsed in the last 30 days
    only_recent = change_features(snaps, "behaviour", "spend", start, recent_days=30, prior_days=90)
    assert math.isnan(only_recent[("phone", "13800000001")])  # no prior window yet
