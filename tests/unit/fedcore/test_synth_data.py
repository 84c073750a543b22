"""Synthetic federation: determinism, realism, platform lift, ingest as written; FATE federations."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from party_node.data_cli import app as data_app
from party_node.schema import normalize_ids
from party_node.store import Store
from scripts.fate_data import fate_data_dir, write_fate_federations
from scripts.synthesize import app as synth_app
from scripts.synthetic import LENDERS, PLATFORM, SynthConfig, generate, reference_models


@pytest.fixture(scope="module")
def fed20k():
    return generate(SynthConfig(people=20_000, seed=3))


def test_deterministic_by_seed() -> None:
    a = generate(SynthConfig(people=3000, seed=11))
    b = generate(SynthConfig(people=3000, seed=11))
    c = generate(SynthConfig(people=3000, seed=12))
    for party in (*LENDERS, PLATFORM):
        # pandas equality treats NaN == NaN (meili has missing incomes)
        assert a.parties[party].to_pandas().equals(b.parties[party].to_pandas()), party
    assert a.people.equals(b.people) and a.loans.equals(b.loans)
    assert not a.parties["yixin"].equals(c.parties["yixin"])


def test_realistic_shape(fed20k) -> None:
    fed = fed20k
    rate = fed.loans["defaulted"].mean()
    assert 0.03 <= rate <= 0.08
    assert 0.5 <= fed.people["on_platform"].mean() <= 0.7
    counts = fed.loans.groupby("person_id").size()
    assert (counts > 1).sum() > 0.05 * len(counts)  # some people borrow from several lenders
    # non-IID lenders: yixin is tier-1/2 new cars, cango tier-3/4
    y = fed.parties["yixin"].to_pandas()
    cg = fed.parties["cango"].to_pandas()
    assert y["city_tier"].isin(["tier1", "tier2"]).mean() > 0.9
    assert (y["vehicle_type"] == "new").mean() > 0.85
    assert cg["city_tier"].isin(["tier3", "tier4"]).mean() > 0.9
    assert (fed.parties["uxin"].to_pandas()["vehicle_type"] == "used").mean() > 0.9
    fraud_members = [ln for ln in LENDERS if pc.sum(fed.parties[ln]["fraud_flag"]).as_py() > 0]
    assert len(fraud_members) >= 3  # the consortium fraud list is spread over members
    consent = fed.parties["meili"]["consent_training"].to_numpy()
    assert 0.85 < consent.mean() < 0.99
    for party in (*LENDERS, PLATFORM):  # every id is a valid mobile number once normalized
        ids = fed.parties[party].column(0).to_pylist()
        assert None not in normalize_ids(ids, "phone"), party


def test_national_ids_have_valid_checksums() -> None:
    fed = generate(SynthConfig(people=2000, seed=1, id_kind="national_id"))
    ids = fed.parties["cango"].column("applicant_id").to_pylist()
    assert all(len(i) == 18 for i in ids)
    assert None not in normalize_ids(ids, "national_id")
    assert fed.people["national_id"].is_unique


def test_platform_features_add_lift(fed20k) -> None:
    r = reference_models(fed20k, seed=3)
    assert r["synthetic_auc_with_platform"] > r["synthetic_auc_lender_only"] + 0.05
    assert r["synthetic_bad_rate_with_platform"] < 0.85 * r["synthetic_bad_rate_lender_only"]


def test_written_files_ingest_as_they_are(tmp_path: Path) -> None:
    out = tmp_path / "fed"
    runner = CliRunner()
    r = runner.invoke(synth_app, ["--out", str(out), "--people", "1500", "--seed", "2", "--format", "parquet"])
    assert r.exit_code == 0, r.output
    manifest = tomllib.loads((out / "federation.toml").read_text())
    assert [p["name"] for p in manifest["party"]] == [*LENDERS, PLATFORM]
    assert (out / "ground_truth" / "people.parquet").is_file()
    for p in manifest["party"]:
        url = f"sqlite:///{tmp_path / (p['name'] + '.db')}"
        r = runner.invoke(
            data_app,
            ["ingest", str(out / p["file"]), "--schema", str(out / p["schema"]), "--store", url, "-q"],
        )
        assert r.exit_code == 0, r.output
        assert f"{p['rows']} inserted, 0 updated, 0 rejected" in r.output
    store = Store.open(f"sqlite:///{tmp_path / 'yixin.db'}")
    t = store.summary().tables[0]
    assert t.has_labels and t.label_rows == t.rows and len(t.features) == 12
    ids, x = store.feature_matrix("applications", purpose="training")
    assert len(ids) < t.rows and x.shape[1] == 12 and not np.isnan(x).any()
    store.close()


def test_fate_federations_ingest(tmp_path: Path) -> None:
    assert fate_data_dir().is_dir()
    written = write_fate_federations(tmp_path / "fate")
    assert set(written) == {"homo", "hetero"}
    runner = CliRunner()
    cases = [("homo", "guest", 8000, 23, True), ("hetero", "host", 30000, 10, False)]
    for layout, party, rows, nfeat, labelled in cases:
        csv, schema = written[layout][party]
        url = f"sqlite:///{tmp_path / f'{layout}_{party}.db'}"
        r = runner.invoke(data_app, ["ingest", str(csv), "--schema", str(schema), "--store", url, "-q"])
        assert r.exit_code == 0, r.output
        assert f"{rows} inserted" in r.output
        store = Store.open(url)
        t = store.summary().tables[0]
        assert (t.rows, len(t.features), t.has_labels) == (rows, nfeat, labelled)
        if labelled:
            _, y = store.labels(t.name)
            assert 0.2 < y.mean() < 0.25  # 22% defaulted
        assert store.row_ids_for(["25115"], "opaque")[0] > 0
        store.close()
