"""Ingest's id index: sorted numpy runs (no dict of Python strings), same answers as a dict."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from fedcore.errors import InvalidInput
from party_node.id_index import MISSING, IdIndex, encode_ids
from party_node.ingest import ingest_file
from party_node.schema import load_schema
from party_node.store import Store

SCHEMA = '[dataset]\nname = "ids"\nid_column = "id"\nid_kind = "opaque"\nconsent_all = ["training"]\n'


def test_index_matches_a_dict_and_holds_few_sorted_arrays() -> None:
    rng = random.Random(3)
    ref: dict[str, int] = {}
    idx = IdIndex()
    ids = list({f"{rng.getrandbits(40):x}é"[: rng.randint(2, 12)] for _ in range(5000)})
    for start in range(0, len(ids), 97):  # batches, as ingest adds them
        batch = ids[start : start + 97]
        vals = np.arange(start, start + len(batch), dtype=np.int64)
        idx.add(encode_ids(batch), vals)
        ref.update(zip(batch, vals.tolist(), strict=True))
    probe = [*ids[::7], "absent", "zz", "0"]
    got = idx.get(encode_ids(probe))
    assert got.tolist() == [ref.get(k, MISSING) for k in probe]
    assert len(idx) == len(ref)
    runs = idx._runs
    assert len(runs) <= 2 * np.log2(len(ids)) + 1  # merged, not one run per batch
    for keys, vals in runs:
        assert isinstance(keys, np.ndarray) and keys.dtype.kind == "S" and vals.dtype == np.int64
        assert np.all(keys[:-1] < keys[1:])


def _ingest(tmp: Path, store: Store, name: str, ids: list[str], batch_rows: int = 3) -> object:
    (tmp / "ids.toml").write_text(SCHEMA)
    (tmp / name).write_text("id\n" + "\n".join(ids) + "\n")
    return ingest_file(store, tmp / name, load_schema(tmp / "ids.toml"), batch_rows=batch_rows)


def _row_ids(store: Store) -> dict[str, int]:
    s = store.t["subjects"]
    with store.engine.connect() as conn:
        return {str(k): int(r) for k, r in conn.execute(sa.select(s.c.id_norm, s.c.row_id))}


def test_duplicates_across_and_within_batches_name_both_rows(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 's.db'}")
    ids = [f"u{i}" for i in range(10)]
    with pytest.raises(InvalidInput, match=r"data row 8, column 'id': duplicate id .*data row 2\)"):
        _ingest(tmp_path, store, "a.csv", [*ids[:7], "u1", *ids[7:]])  # row 8 repeats row 2, next batch
    with pytest.raises(InvalidInput, match=r"data row 6, column 'id': duplicate id .*data row 5\)"):
        _ingest(tmp_path, store, "b.csv", [*ids[:5], "u4", *ids[5:]], batch_rows=100)  # same batch
    assert _row_ids(store) == {}  # nothing written by a failed ingest


def test_reingest_keeps_row_ids_and_adds_new_subjects_after_them(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 's.db'}")
    _ingest(tmp_path, store, "a.csv", [f"u{i}" for i in range(8)])
    first = _row_ids(store)
    _ingest(tmp_path, store, "b.csv", [f"u{i}" for i in range(12)][::-1])
    second = _row_ids(store)
    assert {k: second[k] for k in first} == first
    top = max(first.values())
    assert sorted(second[f"u{i}"] for i in range(8, 12)) == list(range(top + 1, top + 5))
