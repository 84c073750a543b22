"""The party store and the coordinator registry on a real PostgreSQL server: the same code as on SQLite
gives the same content (ingest through COPY, upserts, a failed ingest leaving the store unchanged)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from coordinator.state import StateStore
from fedcore.errors import AlreadyExists, InvalidInput, NotFound
from fedcore.protocol.messages import Role
from party_node.ingest import ingest_file
from party_node.pseudonym import PseudonymKey
from party_node.schema import load_schema
from party_node.store import Store
from tests.unit.party_node.test_store_ingest import GOOD, HEADER, SCHEMA, write

KEY = PseudonymKey.from_raw(bytes(range(32)))


def content(store: Store) -> dict[str, object]:
    ids, x = store.feature_matrix("apps", ["age", "income", "ratio", "tier"], allow_local=True)
    rids, ps = store.all_pseudonyms()
    return {
        "x": (ids.tolist(), np.round(x, 9).tolist()),
        "labels": [a.tolist() for a in store.labels("apps")],
        "consent": {p: store.ids_with_consent(p).tolist() for p in ("training", "scoring", "blacklist")},
        "loans": store.active_loan_ids().tolist(),
        "fraud": store.fraud_ids().tolist(),
        "fraud_pseudonyms": sorted(store.flagged_pseudonyms("fraud", "blacklist").tolist()),
        "loan_pseudonyms": sorted(store.flagged_pseudonyms("active_loan", "scoring").tolist()),
        "pseudonyms": (rids.tolist(), ps.tolist()),
        "vocab": store.dataset_info("apps").vocabularies,
        "summary": store.summary(),
        "row_ids": store.row_ids_for(["13800138000", "nope", "+86 139-0013-9000"], "phone").tolist(),
    }


def fill(store: Store, tmp: Path) -> None:
    schema = load_schema(write(tmp, "apps.toml", SCHEMA))
    ingest_file(store, write(tmp, "good.csv", HEADER + "\n".join(GOOD) + "\n"), schema)
    upsert = ["13800138000,0,31,6000,0.5,t3,1,1,1,0", "13600136000,1,50,7000,0.2,t1,1,1,0,1"]
    ingest_file(store, write(tmp, "more.csv", HEADER + "\n".join(upsert) + "\n"), schema)


def test_store_on_postgres_matches_sqlite(pg_server, tmp_path: Path) -> None:
    lite = Store.open(f"sqlite:///{tmp_path / 'store.db'}", pseudonym_key=KEY)
    pg = Store.open(pg_server.create_database("store_same"), pseudonym_key=KEY)
    assert pg.engine.dialect.name == "postgresql"
    fill(lite, tmp_path)
    fill(pg, tmp_path)
    a, b = content(lite), content(pg)
    assert a == b
    assert len(b["pseudonyms"][1]) == 4 and all(len(p) == 16 for p in b["pseudonyms"][1])
    lite.close()
    pg.close()


def test_failed_ingest_on_postgres_leaves_the_store_unchanged(pg_server, tmp_path: Path) -> None:
    pg = Store.open(pg_server.create_database("store_fail"), pseudonym_key=KEY)
    fill(pg, tmp_path)
    before = content(pg)
    schema = load_schema(write(tmp_path, "apps.toml", SCHEMA))
    bad = write(tmp_path, "bad.csv", HEADER + GOOD[0] + "\n" + "13900000001,1,abc,1,0.1,t1,1,1,0,0\n")
    with pytest.raises(InvalidInput, match="data row 2, column 'age'"):
        ingest_file(pg, bad, schema)
    assert content(pg) == before
    pg.close()


def test_registry_on_postgres(pg_server) -> None:
    url = pg_server.create_database("registry_unit")
    with pytest.raises(NotFound, match="no registry tables"):
        StateStore(url, create=False)
    s = StateStore(url)
    s.admit("yixin", Role.LENDER, serial="a1", fingerprint="fa1", not_before=0, not_after=1e10, actor="admin")
    with pytest.raises(AlreadyExists):
        s.admit("yixin", Role.LENDER, serial="a2", fingerprint="fa2", not_before=0, not_after=1e10, actor="admin")
    s.add_certificate("yixin", serial="a3", fingerprint="fa3", not_before=0, not_after=1e10, actor="admin")
    assert s.revoke("yixin", reason="left", actor="admin") == ["a1", "a3"]
    s.create_run("run-1", "psi", {"parties": ["yixin"]}, actor="admin")
    s.update_run("run-1", "done", {"size": 10})
    s.close()
    s2 = StateStore(url, create=False)
    assert s2.revoked_serials() == {"a1", "a3"}
    assert s2.certificate_owner("a1") == ("yixin", True)
    assert s2.principal("yixin").status == "revoked"
    assert s2.run("run-1").result == {"size": 10}
    assert s2.run("run-1").created_at == pytest.approx(s2.run("run-1").updated_at, abs=60)
    assert [e.action for e in s2.audit_log()] == ["admit", "issue_certificate", "revoke", "start_run"]
    with pytest.raises(NotFound):
        s2.update_run("run-2", "done", {})
    s2.close()


def test_alignment_tables_on_postgres(pg_server) -> None:
    from party_node.alignment import StoreAlignment

    al = StoreAlignment(Store.open(pg_server.create_database("store_align")))
    keys = np.arange(45_000, dtype=np.int64)[::-1] * 3  # more than one insert block
    al.stage_alignment("r1", keys)
    assert al.runs() == {}  # staged tables are invisible
    al.commit_alignment("r1")
    assert al.aligned_row_ids("r1").tolist() == keys.tolist()
    al.store.close()
