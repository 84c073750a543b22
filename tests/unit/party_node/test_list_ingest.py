"""``party ingest --bulk`` (party_node.list_ingest): the same store content as the row-by-row ingest, on a
new list and on a re-load over stored subjects; a bad row anywhere is fatal and leaves the store as it was."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedcore.errors import InvalidInput
from party_node.ingest import ingest_file
from party_node.list_ingest import load_list
from party_node.pseudonym import PseudonymKey
from party_node.schema import DatasetSchema
from party_node.schema import parse_schema as _parse
from party_node.store import Store

KEY = PseudonymKey.from_raw(bytes(range(32)))
LIST = """
[dataset]
name = "flags"
id_column = "id"
id_kind = "opaque"
consent_all = ["blacklist"]

[consent]
scoring = "c_score"

[flags]
fraud = "fraud"
active_loan = "loan"
"""
FEATURES = """
[dataset]
name = "apps"
id_column = "id"
id_kind = "opaque"

[numeric]
age = {}

[consent]
scoring = "c_score"
"""


def parse_schema(text: str) -> DatasetSchema:
    return _parse(tomllib.loads(text))


def content(store: Store) -> dict[str, object]:
    """Everything the list touches, by pseudonym (row ids may differ between the two paths)."""
    rids, ps = store.all_pseudonyms()
    by_row = dict(zip(rids.tolist(), ps.tolist(), strict=True))

    def names(row_ids: np.ndarray) -> list[bytes]:
        return sorted(by_row[int(r)] for r in row_ids)

    return {
        "subjects": sorted(by_row.values()),
        "consent": {p: names(store.ids_with_consent(p)) for p in ("training", "scoring", "blacklist")},
        "fraud": sorted(store.flagged_pseudonyms("fraud", "blacklist").tolist()),
        "loans": sorted(store.flagged_pseudonyms("active_loan", "scoring").tolist()),
        "datasets": {d: store.summary().tables[i].rows for i, d in enumerate(store.datasets())},
    }


def stores(tmp_path: Path) -> tuple[Store, Store]:
    return (Store.open(f"sqlite:///{tmp_path / 'rows.db'}", pseudonym_key=KEY),
            Store.open(f"sqlite:///{tmp_path / 'bulk.db'}", pseudonym_key=KEY))


def write(tmp_path: Path, name: str, rows: list[str], header: str = "id,c_score,fraud,loan") -> Path:
    p = tmp_path / name
    p.write_text(header + "\n" + "\n".join(rows) + "\n")
    return p


def test_bulk_load_equals_row_ingest_new_and_over_stored_subjects(tmp_path: Path) -> None:
    schema, feats = parse_schema(LIST), parse_schema(FEATURES)
    apps = write(tmp_path, "apps.csv", ["a1,30,1", "a2,40,0", "a3,50,1"], header="id,age,c_score")
    first = [f"x{i},{i % 2},{int(i % 3 == 0)},{'yes' if i % 5 == 0 else ''}" for i in range(300)]
    first += [",1,1,0", "a1 ,0,1,1", "  ,1,0,0", "a2,,0,no"]  # a missing id, a stored subject (spaces), ...
    again = ["x0,1,0,0", "x1,0,1,1", "a3,1,1,1", "new1,1,1,"]  # flags replaced for x0/x1, a3 now listed
    rows_store, bulk_store = stores(tmp_path)
    reports = []
    for st, load in ((rows_store, ingest_file), (bulk_store, load_list)):
        ingest_file(st, apps, feats)
        r1 = load(st, write(tmp_path, "l1.csv", first), schema, block_size=1 << 12)  # several blocks
        r2 = load(st, write(tmp_path, "l2.csv", again), schema)
        reports.append([(r.rows_read, r.inserted, r.updated, r.rejected, [str(j) for j in r.rejects])
                        for r in (r1, r2)])
    assert reports[0] == reports[1]
    assert reports[1][0][:4] == (304, 302, 0, 2)
    assert reports[1][1][:4] == (4, 2, 2, 0)  # a3 is a stored subject but new to the list
    assert reports[1][0][4] == ["data row 301, column 'id': missing id", "data row 303, column 'id': missing id"]
    a, b = content(rows_store), content(bulk_store)
    assert a == b
    fraud = set(b["fraud"])  # type: ignore[arg-type]
    x0, x1, a3 = (p for p in KEY.pseudonymize(["x0", "x1", "a3"], "opaque"))
    assert x0.rstrip(b"\0") not in fraud and {x1.rstrip(b"\0"), a3.rstrip(b"\0")} <= fraud
    for st in (rows_store, bulk_store):
        st.close()


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ("x7,1,perhaps,0", "data row 251, column 'fraud': 'perhaps' is not a yes/no value"),
        ("x7,2,1,0", "data row 251, column 'c_score': '2' is not a yes/no value"),
        ("x3,1,1,0", "data row 251, column 'id': duplicate id (same normalized id as data row 4)"),
    ],
)
def test_bad_row_in_a_later_block_leaves_the_store_unchanged(tmp_path: Path, bad: str, needle: str) -> None:
    _, store = stores(tmp_path)
    ok = write(tmp_path, "ok.csv", ["y1,1,1,0", "y2,0,1,1"])
    load_list(store, ok, parse_schema(LIST))
    before = store.checksum()
    rows = [f"x{i},1,{i % 2},0" for i in range(250)] + [bad] + [f"z{i},1,1,1" for i in range(50)]
    with pytest.raises(InvalidInput, match=r"bad\.csv") as ei:
        load_list(store, write(tmp_path, "bad.csv", rows), parse_schema(LIST), block_size=1 << 11)
    assert needle in str(ei.value)
    assert store.checksum() == before
    assert load_list(store, ok, parse_schema(LIST)).updated == 2  # the store still works: a reload updates
    store.close()


def test_too_many_rejects_and_non_list_schema_are_refused(tmp_path: Path) -> None:
    _, store = stores(tmp_path)
    before = store.checksum()
    with pytest.raises(InvalidInput, match=r"more than 1 rejected rows .*data row 2, column 'id': missing id"):
        load_list(store, write(tmp_path, "r.csv", ["x1,1,1,0", ",1,1,0", " ,1,0,0"]), parse_schema(LIST),
                  max_rejects=1)
    with pytest.raises(InvalidInput, match="declares features or a label"):
        load_list(store, write(tmp_path, "f.csv", ["a1,30,1"], header="id,age,c_score"), parse_schema(FEATURES))
    assert store.checksum() == before
    store.close()


def test_bulk_load_on_postgres_matches_sqlite(pg_server, tmp_path: Path) -> None:
    """On PostgreSQL the staging table is filled with COPY; the content is the same as on SQLite, and a
    bad row leaves the store as it was."""
    schema = parse_schema(LIST)
    first = [f"x{i},{i % 2},{int(i % 3 == 0)},{'yes' if i % 5 == 0 else ''}" for i in range(300)] + [",1,1,0"]
    again = ["x0,1,0,0", "x1,0,1,1", "new1,1,1,"]
    lite = Store.open(f"sqlite:///{tmp_path / 'bulk.db'}", pseudonym_key=KEY)
    pg = Store.open(pg_server.create_database("store_bulk_list"), pseudonym_key=KEY)
    reports = []
    for st in (lite, pg):
        r1 = load_list(st, write(tmp_path, "l1.csv", first), schema, block_size=1 << 12)
        r2 = load_list(st, write(tmp_path, "l2.csv", again), schema)
        reports.append([(r.rows_read, r.inserted, r.updated, r.rejected) for r in (r1, r2)])
    assert reports[0] == reports[1] == [(301, 300, 0, 1), (3, 1, 2, 0)]
    assert content(lite) == content(pg)
    before = pg.checksum()
    with pytest.raises(InvalidInput, match="data row 3, column 'id': duplicate id"):
        load_list(pg, write(tmp_path, "bad.csv", ["n1,1,1,0", "n2,1,1,0", "n1,1,0,0"]), schema)
    with pytest.raises(InvalidInput, match="data row 2, column 'loan': 'sometimes'"):
        load_list(pg, write(tmp_path, "bad.csv", ["n1,1,1,0", "n2,1,1,sometimes"]), schema)
    assert pg.checksum() == before
    lite.close()
    pg.close()
