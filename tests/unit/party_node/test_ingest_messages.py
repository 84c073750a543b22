"""Ingest errors name the file, the data row and the column, numbered the same way for CSV and
Parquet (data rows from 1, the header not counted), including the errors pyarrow raises itself."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedcore.errors import InvalidInput
from party_node.ingest import ingest_file
from party_node.schema import load_schema
from party_node.store import Store

SCHEMA = """
[dataset]
name = "apps"
id_column = "id"
id_kind = "opaque"

[numeric]
age = {}

[categorical]
city = {}
"""


@pytest.fixture()
def schema(tmp_path: Path):
    p = tmp_path / "apps.toml"
    p.write_text(SCHEMA)
    return load_schema(p)


def ingest(path: Path, schema, **kw) -> None:
    with Store.open("sqlite://") as store:
        before = store.checksum()
        try:
            ingest_file(store, path, schema, **kw)
        finally:
            assert store.checksum() == before


def test_over_long_cell_names_row_and_column(tmp_path: Path, schema) -> None:
    rows = ["id,age,city", *(f"a{i},{i},x" for i in range(1, 3000))]
    rows[2500] = "a2500,5,\"" + "y" * (3 << 20) + "\""
    path = tmp_path / "long.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(InvalidInput, match=r"long\.csv: data row 2500, column 'city': a cell of 3145728 bytes"):
        ingest(path, schema, block_size=1 << 20)


def test_pyarrow_row_numbers_become_data_rows(tmp_path: Path, schema) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"id,age,city\na1,1,x\na2,2,\xff\xfe\na3,3,x\n")
    with pytest.raises(InvalidInput) as err:
        ingest(path, schema)
    msg = str(err.value)
    assert "bad.csv: data row 2, column 'city'" in msg and "Row #" not in msg


def test_csv_and_parquet_number_rows_alike(tmp_path: Path, schema) -> None:
    table = pa.table({"id": ["a1", "a2", "a3"], "age": ["1", "2", "old"], "city": ["x", "y", "z"]})
    pq.write_table(table, tmp_path / "d.parquet")
    (tmp_path / "d.csv").write_text("id,age,city\na1,1,x\na2,2,y\na3,old,z\n")
    messages = []
    for name in ("d.csv", "d.parquet"):
        with pytest.raises(InvalidInput) as err:
            ingest(tmp_path / name, schema)
        messages.append(str(err.value).split(": ", 1)[1])
    assert messages == ["data row 3, column 'age': 'old' is not a number"] * 2


def test_read_only_or_corrupt_store_is_named(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    Store.open(f"sqlite:///{path}").close()
    path.chmod(0o444)
    try:
        with pytest.raises(InvalidInput, match=r"store .*store\.db is not writable"):
            Store.open(f"sqlite:///{path}")
    finally:
        path.chmod(0o644)
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database" * 300)
    with pytest.raises(InvalidInput, match=r"cannot open store .*bad\.db.*not a database"):
        Store.open(f"sqlite:///{bad}")
