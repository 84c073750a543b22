"""``snapshot derive``: change features written as an ordinary dataset. Values equal
:func:`change_features`, a subject without history gets 1.0, consent stays the subjects' own (a derived
row is used only for the purposes its subject granted), a later date replaces every value, bad input
names the field and leaves the store unchanged."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from fedcore.errors import InvalidInput, NotFound
from party_node.ingest import ingest_file
from party_node.schema import parse_schema
from party_node.snapshot_derive import derive_changes
from party_node.snapshots import Snapshots, change_features
from party_node.store import Store
from party_node.vertical import StoreVerticalSource

IDS = [f"1380000000{i}" for i in range(6)]
START = dt.date(2024, 1, 7)


@pytest.fixture
def store(tmp_path):
    # subjects 0-3 consent to training, 4-5 do not; 0-4 consent to scoring; 5 to nothing but preapproval
    rows = ["phone,tenure,app,c_train,c_score,c_pre"]
    for i, p in enumerate(IDS):
        rows.append(f"{p},{10 + i},{'game' if i % 2 else 'news'},{int(i < 4)},{int(i < 5)},1")
    (tmp_path / "b.csv").write_text("\n".join(rows) + "\n")
    schema = parse_schema({"dataset": {"name": "behaviour", "id_column": "phone", "id_kind": "phone",
                                       "federation_columns": ["tenure", "app"]},
                           "numeric": {"tenure": {"missing": "reject"}}, "categorical": {"app": {}},
                           "consent": {"training": "c_train", "scoring": "c_score", "preapproval": "c_pre"}})
    st = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    ingest_file(st, tmp_path / "b.csv", schema)
    snaps = Snapshots(st)
    # 20 weeks; subject 1's spend collapses in the last 4 weeks, subject 3 has no history at all,
    # "13900000009" is not a subject of this store
    snap_ids = [IDS[0], IDS[1], IDS[2], IDS[4], IDS[5], "13900000009"]
    for w in range(20):
        late = w >= 16
        spend = [100.0, 20.0 if late else 100.0, 50.0 + w, 80.0, 30.0, 5.0]
        snaps.load("weekly", START + dt.timedelta(days=7 * w), snap_ids, "phone",
                   {"spend": spend, "active": [5.0, 1.0 if late else 5.0, 4.0, 3.0, 2.0, 1.0]})
    yield st
    st.close()


def _by_phone(store: Store, dataset: str, column: str, purpose: str | None = None) -> dict[str, float]:
    ids, x = store.feature_matrix(dataset, [column], purpose=purpose)
    rid = store.row_ids_for(IDS, "phone").tolist()
    return {IDS[rid.index(int(r))]: float(v) for r, v in zip(ids, x[:, 0], strict=True)}


def test_derived_values_equal_change_features_and_missing_is_no_change(store):
    day = START + dt.timedelta(days=7 * 19)
    rep = derive_changes(store, "weekly", ["spend", "active"], day, "weekly_changes")
    assert rep.rows == 6 and rep.with_change == 5 and rep.unknown == 1 and not rep.replaced
    assert rep.columns == ("spend_change", "active_change")
    info = store.dataset_info("weekly_changes")
    assert info.federation_columns == ["spend_change", "active_change"] and not info.has_labels
    want = change_features(Snapshots(store), "weekly", "spend", day)
    got = _by_phone(store, "weekly_changes", "spend_change")
    for p in (IDS[0], IDS[1], IDS[2], IDS[4], IDS[5]):
        assert got[p] == pytest.approx(want[("phone", p)])
    assert got[IDS[1]] < 0.4 < 0.9 < got[IDS[0]]
    assert got[IDS[3]] == 1.0  # no history: "no change"
    assert store.row_ids_for(["13900000009"], "phone")[0] == -1  # a snapshot-only id never becomes a subject


def test_consent_follows_the_subjects_and_is_never_widened(store):
    consent_before = _consent_rows(store)
    derive_changes(store, "weekly", ["spend"], START + dt.timedelta(days=7 * 19), "weekly_changes")
    assert _consent_rows(store) == consent_before  # a derivation writes no consent
    for purpose, allowed in (("training", IDS[:4]), ("scoring", IDS[:5]), ("monitoring", [])):
        assert sorted(_by_phone(store, "weekly_changes", "spend_change", purpose)) == sorted(allowed)
        assert sorted(_by_phone(store, "weekly_changes", "spend_change", purpose)) == sorted(
            _by_phone(store, "behaviour", "tenure", purpose))


def _consent_rows(store: Store) -> list[tuple[object, ...]]:
    c = store.t["consent"]
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(c.select().order_by(c.c.purpose, c.c.row_id))]


def test_rederive_replaces_values_and_keeps_the_whitelist(store):
    early, late = START + dt.timedelta(days=7 * 15), START + dt.timedelta(days=7 * 19)
    derive_changes(store, "weekly", ["spend", "active"], early, "weekly_changes")
    assert _by_phone(store, "weekly_changes", "spend_change")[IDS[1]] == pytest.approx(1.0)
    _, _, n0 = store.data_version()
    v0 = store.data_version()
    store.set_whitelist("weekly_changes", ["spend_change"])
    rep = derive_changes(store, "weekly", ["spend", "active"], late, "weekly_changes")
    assert rep.replaced and store.data_version() != v0 and store.data_version()[2] == n0
    assert _by_phone(store, "weekly_changes", "spend_change")[IDS[1]] < 0.4
    assert store.dataset_info("weekly_changes").federation_columns == ["spend_change"]
    assert store.dataset_info("weekly_changes").schema["derived"]["as_of"] == late.isoformat()


def test_with_base_copies_its_columns_and_stands_in_for_it(store):
    day = START + dt.timedelta(days=7 * 19)
    rep = derive_changes(store, "weekly", ["spend"], day, "behaviour_now", with_dataset="behaviour")
    assert rep.columns == ("tenure", "app", "spend_change") and rep.rows == 6
    ids, x = store.feature_matrix("behaviour_now", ["tenure", "app", "spend_change"])
    bids, bx = store.feature_matrix("behaviour")
    assert np.array_equal(ids, bids) and np.array_equal(x[:, :2], bx)
    vocab = store.dataset_info("behaviour").vocabularies["app"]
    assert store.dataset_info("behaviour_now").vocabularies["app"] == vocab
    # the platform's default training dataset is now the derived one (its base is included in it)
    assert StoreVerticalSource(store, None)._dataset(None, labels=False) == "behaviour_now"  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"dataset": "nope"}, NotFound, "--dataset: no snapshots of 'nope'"),
    ({"features": ["spend", "sleep"]}, NotFound, "--feature: .*no feature 'sleep'"),
    ({"as_of": "2024-13-01"}, InvalidInput, "--as-of: '2024-13-01' is not a date"),
    ({"as_of": "2023-01-01"}, InvalidInput, "--as-of: no snapshot of 'weekly' in the 120 days up to 2023-01-01"),
    ({"into": "Bad-Name"}, InvalidInput, "--into: 'Bad-Name' is not a dataset name"),
    ({"into": "behaviour"}, InvalidInput, "--into: dataset 'behaviour' is an ingested dataset"),
    ({"features": ["active"]}, InvalidInput, "--feature: dataset 'weekly_changes' was derived with columns"),
    ({"with_dataset": "nope"}, NotFound, "--with: dataset 'nope' is not in the store"),
    ({"recent_days": 0}, InvalidInput, "--recent-days and --prior-days must be positive"),
])
def test_bad_input_names_the_field_and_changes_nothing(store, kwargs, error, match):
    derive_changes(store, "weekly", ["spend"], START + dt.timedelta(days=7 * 19), "weekly_changes")
    before = store.checksum()
    args = {"dataset": "weekly", "features": ["spend"], "as_of": START + dt.timedelta(days=7 * 19),
            "into": "weekly_changes", **kwargs}
    with pytest.raises(error, match=match):
        derive_changes(store, args.pop("dataset"), args.pop("features"), args.pop("as_of"), args.pop("into"),
                       **args)
    assert store.checksum() == before


def test_joint_scoring_contributions_follow_a_rederive(store, tmp_path):
    """The platform's contribution table is rebuilt when the store's data version moves, so a lender's
    pass right after a re-derive (and its announcement) scores with the new change features."""
    from fedcore.protocol.scoring.messages import ModelSlice
    from party_node.pseudonym import PseudonymKey
    from party_node.scoring import StoreContributions

    key = PseudonymKey(b"d" * 32)
    store.install_pseudonym_key(key)
    derive_changes(store, "weekly", ["spend"], START + dt.timedelta(days=7 * 15), "weekly_changes")
    sl = ModelSlice("m", "1", "p", "weekly_changes", ("spend_change",), np.array([1.0]), np.zeros(1), np.ones(1))
    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "models" / "m" / "slice.json").write_text(json.dumps(sl.to_dict()))
    contrib = StoreContributions(store, tmp_path / "models", version_check_s=0.0)
    who = np.array(key.pseudonymize([IDS[1]], "phone"), dtype="S16")
    assert contrib.partial_logits("m", who)[0] == pytest.approx(1.0)  # before the collapse
    derive_changes(store, "weekly", ["spend"], START + dt.timedelta(days=7 * 19), "weekly_changes")
    assert contrib.partial_logits("m", who)[0] < 0.4  # at once, not after the 5-minute refresh
