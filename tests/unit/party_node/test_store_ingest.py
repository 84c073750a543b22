"""Party store and ingest: bad inputs (store unchanged), upserts, vocabularies, consent, summary privacy."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcore.errors import ConfigError, InvalidInput, NotFound, PermissionDenied
from party_node.ingest import ingest_file
from party_node.schema import UNSEEN, load_schema, parse_schema
from party_node.store import Store

SCHEMA = """
[dataset]
name = "apps"
id_column = "phone"
id_kind = "phone"
label_column = "y"
federation_columns = ["age", "tier"]

[numeric]
age = { missing = "reject" }
income = { missing = "mean" }
ratio = { missing = "fill", fill = 0.25 }

[categorical]
tier = { missing = "category" }

[consent]
training = "c_train"
scoring = "c_score"

[flags]
active_loan = "active"
fraud = "fraud"
"""

HEADER = "phone,y,age,income,ratio,tier,c_train,c_score,active,fraud\n"
GOOD = [
    "13800138000,1,30,5000.5,0.3,t1,1,1,0,0",
    "+86 139-0013-9000,0,41,,,t2,0,1,1,1",
    "13700137000,,22,3000,0.1,,yes,no,no,no",
]


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture()
def env(tmp_path: Path) -> tuple[Store, Path, Path]:
    schema = write(tmp_path, "apps.toml", SCHEMA)
    store = Store.open(f"sqlite:///{tmp_path / 'store.db'}")
    good = write(tmp_path, "good.csv", HEADER + "\n".join(GOOD) + "\n")
    ingest_file(store, good, load_schema(schema))
    yield store, schema, tmp_path
    store.close()


def test_first_ingest_content(env: tuple[Store, Path, Path]) -> None:
    store, _, _ = env
    ids, x = store.feature_matrix("apps", ["age", "income", "ratio", "tier"], allow_local=True)
    assert list(ids) == [1, 2, 3]
    assert x[:, 0].tolist() == [30, 41, 22]
    assert x[1, 1] == pytest.approx((5000.5 + 3000) / 2)  # mean imputed
    assert x[1, 2] == 0.25  # filled
    vocab = store.dataset_info("apps").vocabularies["tier"]
    assert vocab[0] == UNSEEN and vocab[int(x[0, 3])] == "t1" and vocab[int(x[2, 3])] == "__missing__"
    lid, y = store.labels("apps")
    assert list(lid) == [1, 2] and list(y) == [1, 0]  # empty label: unlabelled
    assert list(store.ids_with_consent("training")) == [1, 3]
    assert list(store.ids_with_consent("scoring")) == [1, 2]
    assert list(store.ids_with_consent("blacklist")) == []
    assert list(store.active_loan_ids()) == [2]
    assert list(store.fraud_ids()) == [2]
    assert list(store.row_ids_for(["8613900139000", "13800138000", "13000000000", "x"], "phone")) == [
        2,
        1,
        -1,
        -1,
    ]


def test_consent_filtering_of_reads(env: tuple[Store, Path, Path]) -> None:
    store, _, _ = env
    ids, x = store.feature_matrix("apps", purpose="training")
    assert list(ids) == [1, 3] and x.shape == (2, 2)
    lid, _ = store.labels("apps", purpose="scoring")
    assert list(lid) == [1, 2]
    ids, _ = store.feature_matrix("apps", row_ids=[3, 99])
    assert list(ids) == [3]
    with pytest.raises(InvalidInput, match="purpose"):
        store.ids_with_consent("marketing")


def test_whitelist_enforced(env: tuple[Store, Path, Path]) -> None:
    store, _, _ = env
    with pytest.raises(PermissionDenied, match="income"):
        store.feature_matrix("apps", ["age", "income"])
    store.set_whitelist("apps", ["income"])
    _, x = store.feature_matrix("apps")
    assert x.shape == (3, 1)
    assert [f.name for f in store.summary().tables[0].features] == ["income"]


def test_upsert_counts(env: tuple[Store, Path, Path]) -> None:
    store, schema, tmp = env
    again = write(
        tmp,
        "again.csv",
        HEADER + "13800138000,0,31,5100,0.3,t9,0,0,1,0\n15000150000,1,50,1,0.5,t1,1,1,1,0\n",
    )
    r = ingest_file(store, again, load_schema(schema))
    assert (r.inserted, r.updated, r.rejected, r.rows_read) == (1, 1, 0, 2)
    ids, x = store.feature_matrix("apps", ["age"], allow_local=True)
    assert dict(zip(ids.tolist(), x[:, 0].tolist(), strict=True)) == {1: 31, 2: 41, 3: 22, 4: 50}
    lid, y = store.labels("apps")
    assert dict(zip(lid.tolist(), y.tolist(), strict=True)) == {1: 0, 2: 0, 4: 1}
    assert list(store.ids_with_consent("training")) == [3, 4]  # row 1 withdrew training consent
    assert list(store.active_loan_ids()) == [1, 2, 4]
    assert "t9" in store.dataset_info("apps").vocabularies["tier"]


def test_rejects_counted_and_limit(env: tuple[Store, Path, Path]) -> None:
    store, schema, tmp = env
    bad = write(
        tmp,
        "rej.csv",
        HEADER + "12345,0,30,1,1,t1,1,1,0,0\n13300133000,0,,1,1,t1,1,1,0,0\n13300133001,2,30,1,1,t_new,1,1,0,0\n"
        "13300133002,0,30,1,1,t1,1,1,0,0\n",
    )
    r = ingest_file(store, bad, load_schema(schema))
    assert (r.inserted, r.updated, r.rejected) == (1, 0, 3)
    assert [(j.row, j.column) for j in r.rejects] == [(1, "phone"), (2, "age"), (3, "y")]
    assert "Chinese mobile" in r.rejects[0].reason
    assert "t_new" not in store.dataset_info("apps").vocabularies["tier"]  # only kept rows extend vocabularies
    before = store.checksum()
    with pytest.raises(InvalidInput, match=r"more than 2 rejected rows.*data row 1, column 'phone'"):
        ingest_file(store, bad, load_schema(schema), max_rejects=2)
    assert store.checksum() == before


BAD_CASES = [
    (
        "wrong_delimiter.csv",
        HEADER.replace(",", ";") + GOOD[0].replace(",", ";") + "\n",
        r"wrong delimiter: line 1 has no ',' but looks ';'-separated",
    ),
    ("missing_id.csv", HEADER.replace("phone", "mobile") + GOOD[0] + "\n", r"missing id column 'phone'"),
    (
        "dup.csv",
        HEADER + GOOD[0] + "\n" + GOOD[1] + "\n" + "8613800138000,0,1,1,1,t1,1,1,1,1\n",
        r"data row 3, column 'phone': duplicate id \(same normalized id as data row 1\)",
    ),
    (
        "text.csv",
        HEADER + GOOD[0] + "\n" + GOOD[1].replace(",41,", ",forty-one,") + "\n",
        r"data row 2, column 'age': 'forty-one' is not a number",
    ),
    ("empty.csv", "", r"empty.csv: file is empty"),
    ("header_only.csv", HEADER, r"header but no data rows"),
    (
        "cut.csv",
        HEADER + GOOD[0] + "\n" + GOOD[1] + "\n" + GOOD[2][:12],
        r"cut off in the middle of data row 3",
    ),
    (
        "short_row.csv",
        HEADER + GOOD[0] + "\n13300133000,0,1\n" + GOOD[2] + "\n",
        r"data row 2 has 3 fields, the header has 10",
    ),
    (
        "bad_flag.csv",
        HEADER + GOOD[0] + "\n" + GOOD[1].replace(",0,1,1,1", ",maybe,1,1,1") + "\n",
        r"data row 2, column 'c_train': 'maybe' is not a yes/no value",
    ),
]


@pytest.mark.parametrize(("name", "text", "pattern"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_fatal_and_store_unchanged(env: tuple[Store, Path, Path], name: str, text: str, pattern: str) -> None:
    store, schema, tmp = env
    before = store.checksum()
    # a valid new row first in most files: it must not survive the failure
    path = write(tmp, name, text)
    with pytest.raises(InvalidInput, match=pattern) as info:
        ingest_file(store, path, load_schema(schema))
    assert name in str(info.value)
    assert store.checksum() == before


def test_failure_after_a_committed_chunk_rolls_back_everything(env: tuple[Store, Path, Path]) -> None:
    store, schema, tmp = env
    rows = [f"133{i:08d},0,30,1,1,t{i % 3},1,1,0,0" for i in range(3000)]
    rows[2500] = rows[2500].replace(",30,", ",abc,")
    path = write(tmp, "big.csv", HEADER + "\n".join(rows) + "\n")
    before = store.checksum()
    with pytest.raises(InvalidInput, match="data row 2501, column 'age'"):
        ingest_file(store, path, load_schema(schema), block_size=4096)  # many blocks before the bad one
    assert store.checksum() == before
    assert store.feature_matrix("apps")[0].tolist() == [1, 2, 3]


def test_schema_naming_unknown_column(env: tuple[Store, Path, Path]) -> None:
    store, _, tmp = env
    schema = write(
        tmp,
        "s2.toml",
        SCHEMA.replace(
            'ratio = { missing = "fill", fill = 0.25 }',
            'ratio = { missing = "fill", fill = 0.25 }\nscore = {}',
        ),
    )
    path = write(tmp, "ok.csv", HEADER + GOOD[0] + "\n")
    before = store.checksum()
    with pytest.raises(InvalidInput, match=r"s2.toml: numeric.score names column 'score', which .*ok.csv does not"):
        ingest_file(store, path, load_schema(schema))
    assert store.checksum() == before


def test_schema_validation_names_file_and_key(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.toml", SCHEMA.replace('id_kind = "phone"', 'id_kind = "email"'))
    with pytest.raises(ConfigError, match=r"bad.toml: dataset.id_kind: 'email'"):
        load_schema(bad)
    bad2 = write(
        tmp_path,
        "bad2.toml",
        SCHEMA.replace('income = { missing = "mean" }', 'income = { missing = "zero" }'),
    )
    with pytest.raises(ConfigError, match=r"bad2.toml: numeric.income.missing"):
        load_schema(bad2)
    bad3 = write(tmp_path, "bad3.toml", SCHEMA.replace('["age", "tier"]', '["age", "salary"]'))
    with pytest.raises(ConfigError, match=r"dataset.federation_columns: 'salary' is not a declared feature"):
        load_schema(bad3)
    with pytest.raises(NotFound):
        load_schema(tmp_path / "nope.toml")


def test_reingest_with_different_features_is_fatal(env: tuple[Store, Path, Path]) -> None:
    store, _, tmp = env
    schema = write(tmp, "s3.toml", SCHEMA.replace('ratio = { missing = "fill", fill = 0.25 }\n', ""))
    path = write(tmp, "ok.csv", HEADER + GOOD[0] + "\n")
    before = store.checksum()
    with pytest.raises(InvalidInput, match="already exists with a different"):
        ingest_file(store, path, load_schema(schema))
    assert store.checksum() == before


def test_fixed_vocabulary_and_unseen(tmp_path: Path) -> None:
    schema = parse_schema(
        {
            "dataset": {"name": "v", "id_column": "id", "id_kind": "opaque"},
            "categorical": {"term": {"missing": "reject", "vocabulary": ["12", "24", "36"]}},
        }
    )
    store = Store.open(f"sqlite:///{tmp_path / 'v.db'}")
    path = write(tmp_path, "v.csv", "id,term\na,12\nb,36\nc,48\n")
    ingest_file(store, path, schema)
    _, x = store.feature_matrix("v", ["term"], allow_local=True)
    assert x[:, 0].tolist() == [1, 3, 0]  # 48 was never in the vocabulary -> __unseen__ (0)
    assert store.dataset_info("v").vocabularies["term"] == [UNSEEN, "12", "24", "36"]
    assert store.encode_categories("v", "term", ["24", "60", None]).tolist() == [2, 0, 0]
    store.close()


def test_parquet_ingest(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "id": [101, 102, 103],
            "y": [0, 1, 0],
            "x": [1.5, None, 3.0],
            "k": ["a", "b", None],
            "ok": [True, False, True],
        }
    )
    path = tmp_path / "d.parquet"
    df.to_parquet(path)
    schema = parse_schema(
        {
            "dataset": {
                "name": "p",
                "id_column": "id",
                "id_kind": "opaque",
                "label_column": "y",
                "federation_columns": ["x", "k"],
            },
            "numeric": {"x": {"missing": "mean"}},
            "categorical": {"k": {}},
            "consent": {"training": "ok"},
        }
    )
    store = Store.open(f"sqlite:///{tmp_path / 'p.db'}")
    r = ingest_file(store, path, schema)
    assert (r.inserted, r.rejected) == (3, 0)
    ids, x = store.feature_matrix("p", purpose="training")
    assert list(ids) == [1, 3] and x[:, 0].tolist() == [1.5, 3.0]
    assert store.row_ids_for(["102"], "opaque").tolist() == [2]
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(path.read_bytes()[:-20])
    before = store.checksum()
    with pytest.raises(InvalidInput, match=r"cut\.parquet: not a valid Parquet file"):
        ingest_file(store, cut, schema)
    assert store.checksum() == before
    store.close()


def test_summary_contains_no_ids_or_values(env: tuple[Store, Path, Path]) -> None:
    store, _, _ = env
    s = store.summary()
    text = repr(s) + json.dumps(dataclasses.asdict(s))
    assert "apps" in text and "age" in text  # names are there
    for raw in ["13800138000", "13900139000", "13700137000", "0013"]:
        assert raw not in text
    for value in ["5000.5", "4000.25", "0.25", "t1", "t2", "30", "41", "22"]:
        assert value not in text
    t = s.tables[0]
    assert (t.rows, t.has_labels, t.label_rows) == (3, True, 2)
    assert {f.name: f.dtype for f in t.features} == {"age": "numeric", "tier": "categorical"}


def test_store_checksum_detects_change(env: tuple[Store, Path, Path]) -> None:
    store, _, _ = env
    a = store.checksum()
    assert a == store.checksum()
    store.set_whitelist("apps", ["age"])
    assert store.checksum() != a


def test_data_cli_ingest_and_summary(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from party_node.data_cli import app

    schema = write(tmp_path, "apps.toml", SCHEMA)
    good = write(tmp_path, "good.csv", HEADER + "\n".join(GOOD) + "\n")
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    r = runner.invoke(app, ["ingest", str(good), "--schema", str(schema), "--store", url, "--quiet"])
    assert r.exit_code == 0, r.output
    assert "3 inserted, 0 updated, 0 rejected" in r.output
    r = runner.invoke(app, ["data", "summary", "--store", url, "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["tables"][0]["rows"] == 3
    empty = write(tmp_path, "empty.csv", "")
    r = runner.invoke(app, ["ingest", str(empty), "--schema", str(schema), "--store", url])
    assert r.exit_code == 1
    assert "error:" in r.output and "file is empty" in r.output
    home = tmp_path / "home"
    home.mkdir()
    (home / "party.toml").write_text('[party]\nname = "yixin"\n[store]\nurl = "sqlite:///data/store.db"\n')
    (home / "data").mkdir()
    r = runner.invoke(app, ["ingest", str(good), "--schema", str(schema), "--home", str(home), "-q"])
    assert r.exit_code == 0, r.output
    assert (home / "data" / "store.db").is_file()
    r = runner.invoke(app, ["data", "whitelist", "apps", "--add", "income", "--home", str(home)])
    assert r.exit_code == 0 and "age, tier, income" in r.output


def test_feature_matrix_types(env: tuple[Store, Path, Path]) -> None:
    store, _, _ = env
    ids, x = store.feature_matrix("apps")
    assert ids.dtype == np.int64 and x.dtype == np.float64 and x.flags.c_contiguous


def test_registration_message_contains_no_ids_or_values(env: tuple[Store, Path, Path]) -> None:
    """The summary as it crosses the wire (protobuf, as the link sends it) carries names and counts only."""
    from fedcore.wire.convert import summary_from_proto, summary_to_proto

    store, _, _ = env
    store.set_whitelist("apps", ["age", "income", "ratio", "tier"])
    msg = summary_to_proto(store.summary())
    wire = msg.SerializeToString()
    text = str(msg)
    for raw in ["13800138000", "13900139000", "13700137000"]:
        assert raw.encode() not in wire and raw not in text
    for value in ["5000.5", "4000.25", "0.25", "0.3", "t1", "t2", "__missing__", "41", "22"]:
        assert value.encode() not in wire and value not in text
    assert summary_from_proto(msg) == store.summary()
