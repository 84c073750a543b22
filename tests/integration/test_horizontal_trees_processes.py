"""Horizontal trees across real processes on the FATE homo split: three lenders with the same 23
features train one boosted tree model (histograms summed under CKKS at the coordinator), each keeps it,
and scores its applicants locally with it."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from models.gbdt import GBDTModel
from models.metrics import auc
from scripts.fate_data import fate_data_dir, write_fate_federations
from scripts.localfed import LocalFederation

pytestmark = pytest.mark.slow
LENDERS = {"yixin": "guest", "meili": "host_1", "cango": "host_2"}


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("htrees")
    files = write_fate_federations(root / "fate")["homo"]
    f = LocalFederation(root / "fed", dict.fromkeys(LENDERS, "lender"))
    f.setup()
    for name, part in LENDERS.items():
        f.ingest(name, *files[part])
    f.start()
    f.wait_online(timeout=300)
    yield f
    f.stop()


def test_horizontal_trees_train_register_and_score_locally(fed):
    coord = ["--home", str(fed.coordinator_home)]
    out = fed.cli("coordinator", "train", "--kind", "horizontal", "--model", "gbdt", "--parties",
                  ",".join(LENDERS), "--n-trees", "20", "--depth", "3", "--bins", "32", *coord).stdout  # fmt: skip
    line = next(ln for ln in out.splitlines() if ln.startswith("model "))
    assert line.startswith("model horizontal-gbdt ")
    run_id = line.split("(run ", 1)[1].split(")")[0]
    val_auc = float(line.split("validation AUC ", 1)[1].split()[0])
    assert val_auc > 0.75
    docs = [json.loads((fed.party_home(x) / "models" / run_id / "gbdt.json").read_text()) for x in LENDERS]
    assert all(d["model"]["trees"] == docs[0]["model"]["trees"] for d in docs)  # one model, held by every lender
    assert all(d["model"]["tables"] == docs[0]["model"]["tables"] for d in docs)
    model = GBDTModel.from_dict(docs[0]["model"])
    with open(fate_data_dir() / "default_credit_homo_test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    cols = {f"x{j}": np.array([float(r[f"x{j}"]) for r in rows]) for j in range(23)}
    y = np.array([float(r["y"]) for r in rows])
    assert auc(y, model.predict_proba(cols)) > 0.77  # held-out homo_test
    report = fed.root / "report"
    fed.cli("coordinator", "report", run_id, "--out", str(report), "--no-contribution", *coord)
    assert (report / "report.html").is_file()
    summary = json.loads((report / "report.json").read_text())["summary"]  # each lender's own importance
    assert summary["importance"] == {x: pytest.approx(docs[0]["model"]["importance"]["lenders"]) for x in LENDERS}
    # `party evaluate` scores the tree model locally on the held-out file (features from the file)
    preds, holdout = fed.root / "preds.csv", fate_data_dir() / "default_credit_homo_test.csv"
    ev = json.loads(fed.cli("party", "evaluate", run_id, "--file", str(holdout),
                            "--out", str(preds), "--home", str(fed.party_home("meili"))).stdout.splitlines()[-1])
    with open(preds, newline="") as f:
        got = np.array([float(r["prob_default"]) for r in csv.DictReader(f)])
    assert ev["kind"] == "horizontal" and ev["n"] == len(y) == len(got)
    assert np.allclose(got, model.predict_proba(cols), atol=1e-12) and ev["auc"] == pytest.approx(auc(y, got))
    listed = fed.cli("coordinator", "models", *coord).stdout
    assert any(run_id in ln and "horizontal-gbdt" in ln for ln in listed.splitlines())
    # a lender scores one of its own applicants with the model, locally (no consortium part)
    fed.cli("coordinator", "distribute-key", *coord)
    with open(fate_data_dir() / "default_credit_homo_guest.csv", newline="") as f:
        first = next(csv.DictReader(f))
    r = json.loads(fed.cli("party", "score", "--id", first["id"], "--kind", "opaque", "--model", run_id,
                           "--home", str(fed.party_home("yixin"))).stdout)  # fmt: skip
    want = model.predict_proba({f"x{j}": np.array([float(first[f"x{j}"])]) for j in range(23)})[0]
    assert r["prob_default"] == pytest.approx(want, abs=1e-9)


def test_a_lender_killed_mid_tree_fails_the_run_naming_it(fed):
    """No silent shrink of a tree run: a lender lost while the trees grow fails the run, naming it."""
    params = {"parties": list(LENDERS), "model": "gbdt", "gbdt": {"n_trees": 30, "max_depth": 3, "max_bins": 32}}
    events = []
    try:
        with fed.admin() as admin:
            for ev in admin.start_run("train", params):
                events.append(ev)
                if ev.message.startswith("tree 3/") and not ev.done:
                    fed.kill("cango")
    finally:
        fed.start_party("cango")
    assert any(ev.message.startswith("tree 3/") for ev in events)
    last = events[-1]
    assert last.status == "failed" and "cango" in last.message, (last.status, last.message)
    fed.wait_online(timeout=300)
