"""The blacklist and multi-lending tables' source: the pseudonyms of flagged, consenting subjects read
from the store as one ``S16`` array (the same on SQLite and PostgreSQL), and the contributor's fraud flags
built from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedcore.errors import InvalidInput
from party_node.ingest import ingest_file
from party_node.pseudonym import PseudonymKey
from party_node.schema import load_schema
from party_node.scoring import StoreContributions
from party_node.store import Store

KEY = PseudonymKey.from_raw(bytes(range(32)))
SCHEMA = """
[dataset]
name = "list"
id_column = "id"
id_kind = "opaque"

[consent]
blacklist = "c_black"
scoring = "c_score"

[flags]
fraud = "fraud"
active_loan = "loan"
"""
N = 300


def _rows() -> list[tuple[str, bool, bool, bool, bool]]:
    return [(f"s{i:05d}", i % 3 != 0, i % 4 != 0, i % 2 == 0, i % 5 == 0) for i in range(N)]


def _fill(store: Store, tmp: Path) -> None:
    (tmp / "list.toml").write_text(SCHEMA)
    lines = ["id,c_black,c_score,fraud,loan"] + [
        ",".join([i, *("yes" if v else "no" for v in flags)]) for i, *flags in _rows()
    ]
    (tmp / "list.csv").write_text("\n".join(lines) + "\n")
    ingest_file(store, tmp / "list.csv", load_schema(tmp / "list.toml"))


def _expected(which: int, consent: int) -> list[bytes]:
    ids = [r[0] for r in _rows() if r[which] and r[consent]]
    return sorted(np.array(KEY.pseudonymize(ids, "opaque"), dtype="S16").tolist())


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path: Path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("pg_server").create_database(f"flags_{tmp_path.name[-12:]}".lower())
    s = Store.open(url, pseudonym_key=KEY)
    _fill(s, tmp_path)
    yield s
    s.close()


def test_flagged_pseudonyms_are_the_consenting_flagged_subjects(store: Store) -> None:
    fraud = store.flagged_pseudonyms("fraud", "blacklist")
    loans = store.flagged_pseudonyms("active_loan", "scoring")
    assert fraud.dtype == np.dtype("S16") and loans.dtype == np.dtype("S16")
    assert sorted(fraud.tolist()) == _expected(3, 1)
    assert sorted(loans.tolist()) == _expected(4, 2)
    assert 0 < len(fraud) < N // 2  # flagged without consent are left out
    with pytest.raises(InvalidInput):
        store.flagged_pseudonyms("vip", "blacklist")


def test_fraud_flags_come_from_the_store(store: Store, tmp_path: Path) -> None:
    source = StoreContributions(store, tmp_path / "models")
    rows = _rows()
    query = np.array(KEY.pseudonymize([r[0] for r in rows], "opaque"), dtype="S16")
    flags = source.fraud_flags(query)
    assert flags.tolist() == [1.0 if r[3] and r[1] else 0.0 for r in rows]
    loans = source.loan_flags(query)
    assert loans.tolist() == [1.0 if r[4] and r[2] else 0.0 for r in rows]
