"""Pseudonym key (file mode, secrecy), pseudonyms, and store lookups by pseudonym."""

from __future__ import annotations

import hashlib
import hmac
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from fedcore.errors import InvalidInput, NotFound
from fedcore.secret import SecretLeakError
from party_node.ingest import ingest_file
from party_node.pseudonym import PseudonymKey, default_key_path, load_or_create
from party_node.schema import load_schema, parse_schema
from party_node.store import Store

SCHEMA = {"dataset": {"name": "a", "id_column": "phone", "id_kind": "phone"}, "numeric": {"x": {}}}


def test_key_file_roundtrip_and_mode(tmp_path: Path) -> None:
    path = default_key_path(tmp_path)
    key = load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = PseudonymKey.load(path)
    assert again.fingerprint() == key.fingerprint()
    assert key.export_raw() not in repr(key).encode() and "secret" in repr(key)
    with pytest.raises(SecretLeakError):
        pickle.dumps(key)
    path.chmod(0o644)
    with pytest.raises(InvalidInput, match="owner only"):
        PseudonymKey.load(path)
    with pytest.raises(InvalidInput):
        PseudonymKey(b"short")


def test_pseudonyms_are_keyed_hmac_and_deterministic() -> None:
    k = PseudonymKey(bytes(range(32)))
    ps = k.pseudonymize(["13800138000", "13900139000"], "phone")
    expect = hmac.new(bytes(range(32)), b"phone\x0013800138000", hashlib.sha256).digest()[:16]
    assert ps[0] == expect and len(ps[1]) == 16 and ps[0] != ps[1]
    assert PseudonymKey(bytes(range(32))).pseudonymize(["13800138000"], "phone") == ps[:1]
    assert PseudonymKey(bytes(32)).pseudonymize(["13800138000"], "phone") != ps[:1]  # other key
    assert k.pseudonymize(["13800138000"], "opaque") != ps[:1]  # kinds never collide


def test_store_pseudonym_index(tmp_path: Path) -> None:
    csv = tmp_path / "a.csv"
    csv.write_text("phone,x\n13800138000,1\n13900139000,2\n")
    store = Store.open(f"sqlite:///{tmp_path / 's.db'}")
    ingest_file(store, csv, parse_schema(SCHEMA))
    with pytest.raises(NotFound, match="no pseudonym key"):
        store.row_ids_for_pseudonyms([b"x" * 16])
    key = PseudonymKey.generate()
    assert store.install_pseudonym_key(key) == 2
    assert store.install_pseudonym_key(key) == 0  # same key: nothing to do
    ps = key.pseudonymize(["13900139000", "13800138000", "13000000000"], "phone")
    assert store.row_ids_for_pseudonyms(ps).tolist() == [2, 1, -1]
    assert store.pseudonyms([1, 2]) == [ps[1], ps[0]]
    # new subjects ingested later get their pseudonym at ingest time
    csv2 = tmp_path / "b.csv"
    csv2.write_text("phone,x\n13000000000,3\n")
    store2 = Store.open(f"sqlite:///{tmp_path / 's.db'}", pseudonym_key=key)
    ingest_file(store2, csv2, parse_schema(SCHEMA))
    assert store2.row_ids_for_pseudonyms(ps).tolist() == [2, 1, 3]
    # an ingest without the installed key is refused (pseudonyms would be missing)
    store3 = Store.open(f"sqlite:///{tmp_path / 's.db'}")
    before = store3.checksum()
    with pytest.raises(InvalidInput, match="pseudonym key installed"):
        ingest_file(store3, csv2, parse_schema(SCHEMA))
    assert store3.checksum() == before
    # a new key re-pseudonymizes everything
    k2 = PseudonymKey.generate()
    assert store3.install_pseudonym_key(k2) == 3
    assert store3.row_ids_for_pseudonyms(ps).tolist() == [-1, -1, -1]
    assert store3.row_ids_for_pseudonyms(k2.pseudonymize(["13000000000"], "phone")).tolist() == [3]
    assert store3.row_ids_for_pseudonyms(ps[:1]).tolist() == [-1]  # one pseudonym: its own statement
    for s in (store, store2, store3):
        s.close()


def test_docs_state_the_wire_formula() -> None:
    """docs/protocols.md says what goes into a pseudonym and a key fingerprint; the code computes that."""
    key = PseudonymKey(bytes(range(32)))
    raw = bytes(range(32))
    assert key.pseudonymize(["13800138000"], "phone") == [
        hmac.new(raw, b"phone" + b"\x00" + b"13800138000", hashlib.sha256).digest()[:16]
    ]
    label = b"fedcredit pseudonym key fingerprint v1"
    assert key.fingerprint() == hmac.new(raw, label, hashlib.sha256).hexdigest()[:16]
    docs = (Path(__file__).resolve().parents[3] / "docs" / "protocols.md").read_text()
    assert "`HMAC-SHA256(key, kind || 0x00 || normalized id)`" in docs
    assert '`HMAC-SHA256(key, "fedcredit pseudonym key fingerprint v1")`, first 16 hex characters' in docs
    assert "HMAC-SHA256 of `kind:normalized id`" not in docs and "(SHA-256 of\n  the key)" not in docs


def test_key_install_in_blocks_rebuilds_the_index_and_a_failure_keeps_the_old_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key install reads and rewrites subjects a block at a time (mixed id kinds in a block), with the
    pseudonym index dropped and rebuilt; all_pseudonyms fills arrays; an error mid-way changes nothing."""
    from party_node import store_pseudonyms

    monkeypatch.setattr(store_pseudonyms, "BLOCK", 7)
    monkeypatch.setattr(store_pseudonyms, "REINDEX_MIN", 10)
    phones = [f"1380013{i:04d}" for i in range(20)]
    store = Store.open(f"sqlite:///{tmp_path / 's.db'}")
    (tmp_path / "p.csv").write_text("phone,x\n" + "".join(f"{p},{i}\n" for i, p in enumerate(phones)))
    ingest_file(store, tmp_path / "p.csv", parse_schema(SCHEMA))
    (tmp_path / "o.toml").write_text(
        '[dataset]\nname = "o"\nid_column = "id"\nid_kind = "opaque"\n[numeric]\nx = {}\n')
    (tmp_path / "o.csv").write_text("id,x\n" + "".join(f"o{i},{i}\n" for i in range(5)))
    ingest_file(store, tmp_path / "o.csv", load_schema(tmp_path / "o.toml"))
    k1 = PseudonymKey.generate()
    assert store.install_pseudonym_key(k1) == 25
    rids, ps = store.all_pseudonyms()
    assert ps.dtype == np.dtype("S16") and rids.tolist() == list(range(1, 26))
    want = k1.pseudonymize(phones, "phone") + k1.pseudonymize([f"o{i}" for i in range(5)], "opaque")
    assert ps.tobytes() == b"".join(want)  # whole 16 bytes, trailing NULs included
    assert store.row_ids_for_pseudonyms(want[::6]).tolist() == list(range(1, 26))[::6]
    assert "ix_subjects_pseudonym" in {i["name"] for i in sa.inspect(store.engine).get_indexes("subjects")}
    before = store.checksum()
    k2 = PseudonymKey.generate()
    calls = []

    def failing(self: PseudonymKey, ids: list[str], kind: str) -> list[bytes]:
        calls.append(len(ids))
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return [b"\x01" * 16 for _ in ids]

    monkeypatch.setattr(PseudonymKey, "pseudonymize", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        store.install_pseudonym_key(k2)
    assert store.checksum() == before and store.key_fingerprint() == k1.fingerprint()
    store.close()
