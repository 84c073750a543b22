"""``party_node.vertical``: aligned tables from a real store + PSI alignment, and a run through the
handlers that ``register_vertical_handlers`` installs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedcore.errors import InvalidInput, NotFound
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role
from fedcore.protocol.sealing import make_identities
from fedcore.protocol.tasks import HandlerRegistry
from fedcore.protocol.vertical.coordinator import run_vertical
from party_node.alignment import StoreAlignment
from party_node.ingest import ingest_file
from party_node.schema import parse_schema
from party_node.store import Store
from party_node.vertical import StoreVerticalSource, register_vertical_handlers


def _store(tmp: Path, name: str, rows: list[tuple[str, ...]], cols: list[str], label: bool) -> Store:
    ds = {"name": "d", "id_column": "id", "id_kind": "opaque", "consent_all": ["training"],
          "federation_columns": cols}
    if label:
        ds["label_column"] = "y"
    schema = parse_schema({"dataset": ds, "numeric": {c: {"missing": "reject"} for c in cols}})
    header = ["id", *(["y"] if label else []), *cols]
    (tmp / f"{name}.csv").write_text("\n".join(",".join(r) for r in [tuple(header), *rows]) + "\n")
    store = Store.open(f"sqlite:///{tmp / (name + '.db')}")
    ingest_file(store, tmp / f"{name}.csv", schema)
    return store


def _align(store: Store, order: list[str], run: str) -> StoreAlignment:
    al = StoreAlignment(store)
    keys, ids = al.subjects_for_psi("training")
    by_id = {i.decode().split(":", 1)[1]: int(k) for k, i in zip(keys, ids, strict=True)}
    al.stage_alignment(run, np.array([by_id[s] for s in order], dtype=np.int64))
    al.commit_alignment(run)
    return al


def test_store_source_returns_rows_in_joint_order_and_trains(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    subj = [f"s{i:04d}" for i in range(n)]
    xl, xp = rng.normal(size=(n, 2)), rng.normal(size=(n, 3))
    y = (rng.random(n) < 1 / (1 + np.exp(-(xl[:, 0] - xp[:, 2])))).astype(int)
    ls = _store(tmp_path, "yixin", [(s, str(y[i]), *map(str, xl[i])) for i, s in enumerate(subj)], ["a", "b"], True)
    ps = _store(tmp_path, "tiange", [(s, *map(str, xp[i])) for i, s in enumerate(subj)] + [("extra", "1", "2", "3")],
                ["p", "q", "r"], False)
    order = [subj[i] for i in rng.permutation(n)]
    la, pa = _align(ls, order, "psi-1"), _align(ps, order, "psi-1")
    t = StoreVerticalSource(ls, la).vertical_table("psi-1", None, labels=True)
    first = subj.index(order[0])
    assert t.features == ["a", "b"] and t.y is not None
    assert t.X[0] == pytest.approx(xl[first]) and t.y[0] == y[first]
    tp = StoreVerticalSource(ps, pa).vertical_table("psi-1", None, labels=False)
    assert tp.X.shape == (n, 3) and tp.X[0] == pytest.approx(xp[first])
    with pytest.raises(NotFound, match="not in the store"):
        StoreVerticalSource(ps, pa).vertical_table("psi-1", "nope", labels=False)
    with pytest.raises(InvalidInput, match="no row with training consent"):
        _align(ls, order[:10], "psi-2")
        bad = StoreAlignment(ps)
        bad.stage_alignment("psi-2", np.array([999999], dtype=np.int64))
        bad.commit_alignment("psi-2")
        StoreVerticalSource(ps, bad).vertical_table("psi-2", None, labels=False)

    ch = InMemoryChannel()
    ids = make_identities(["yixin", "tiange"])
    for name, store, al in (("yixin", ls, la), ("tiange", ps, pa)):
        reg = HandlerRegistry()
        register_vertical_handlers(reg, store, al, tmp_path / name, name, ids[name])
        ch.add_party(name, Role.PLATFORM if name == "tiange" else Role.LENDER, reg)
    res = run_vertical(ch, "vt", ["yixin"], "tiange", {"yixin": "psi-1"}, workdir=tmp_path / "coord")
    assert res.metrics["yixin"]["auc"] > 0.6
    sl = json.loads((tmp_path / "tiange" / "models" / "vt" / "slice.json").read_text())
    assert sl["party"] == "tiange" and sl["dataset"] == "d" and sl["features"] == ["p", "q", "r"]
    assert sl["weights"][2] < 0 < json.loads((tmp_path / "yixin" / "models" / "vt" / "slice.json").read_text())[
        "weights"][0]
    ls.close()
    ps.close()
