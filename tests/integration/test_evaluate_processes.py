"""``fedcredit party evaluate`` across real processes: a horizontal model trained by three lenders on the
FATE homo split is scored at one lender on FATE's held-out homo_test file (locally, nothing leaves the
node); its AUC equals scikit-learn's on the same predictions, and a model the lender does not hold is a
named error."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from scripts.fate_data import fate_data_dir, write_fate_federations
from scripts.localfed import LocalFederation

pytestmark = pytest.mark.slow

LENDERS = {"yixin": "guest", "meili": "host_1", "cango": "host_2"}


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    files = write_fate_federations(root / "fate")["homo"]
    f = LocalFederation(root / "fed", {name: "lender" for name in LENDERS}, heartbeat_s=0.5)
    f.setup()
    for name, split in LENDERS.items():
        f.ingest(name, *files[split])
    f.start()
    f.wait_online(timeout=300)
    f.root_dir = root
    yield f
    f.stop()


def test_party_evaluate_scores_a_horizontal_model_locally_on_a_holdout_file(fed):
    coord = ["--home", str(fed.coordinator_home)]
    out = fed.cli("coordinator", "train", "--parties", ",".join(LENDERS), "--model", "logistic", "--rounds", "3",
                  *coord).stdout
    run_id = out.split("(run ", 1)[1].split(")")[0]
    preds = fed.root_dir / "preds.csv"
    holdout = fate_data_dir() / "default_credit_homo_test.csv"
    res = json.loads(fed.cli("party", "evaluate", run_id, "--file", str(holdout), "--out", str(preds),
                             "--home", str(fed.party_home("yixin"))).stdout.strip().splitlines()[-1])
    assert res["kind"] == "horizontal" and res["n"] == 6000
    with open(preds, newline="") as f:
        rows = list(csv.DictReader(f))
    y = np.array([int(r["label"]) for r in rows])
    p = np.array([float(r["prob_default"]) for r in rows])
    assert abs(res["auc"] - roc_auc_score(y, p)) < 1e-9
    assert res["auc"] > 0.7 and abs(res["gini"] - (2 * res["auc"] - 1)) < 1e-12
    # every lender the model was trained for can use it
    other = json.loads(fed.cli("party", "evaluate", run_id, "--file", str(holdout), "--home",
                               str(fed.party_home("cango"))).stdout.strip().splitlines()[-1])
    assert abs(other["auc"] - res["auc"]) < 1e-9
    # `party score` with the horizontal model: locally, features given or looked up in the store
    with open(holdout, newline="") as f:
        first = next(csv.DictReader(f))
    feats = [a for k, v in first.items() if k.startswith("x") for a in ("--feature", f"{k}={v}")]
    home = str(fed.party_home("yixin"))
    given = json.loads(fed.cli("party", "score", "--id", first["id"], "--kind", "opaque", "--model", run_id, *feats,
                               "--home", home).stdout)
    assert given["status"] == "ok" and given["kind"] == "horizontal"
    # the horizontal model predicts in float32 (torch): a batch of 6,000 and a single row take different
    # kernels, so the same row agrees to float32 precision, not bit for bit
    assert abs(given["prob_default"] - float(rows[0]["prob_default"])) < 1e-6
    with open(fate_data_dir() / "default_credit_homo_guest.csv", newline="") as f:
        own_id = next(csv.DictReader(f))["id"]
    looked_up = json.loads(fed.cli("party", "score", "--id", own_id, "--kind", "opaque", "--model", run_id,
                                   "--home", home).stdout)
    assert looked_up["status"] == "ok" and 0 < looked_up["prob_default"] < 1
    # one KS: the model's registered validation KS is the pooled one the report shows
    folder = fed.root_dir / "report"
    fed.cli("coordinator", "report", run_id, "--out", str(folder), "--no-contribution", *coord)
    summary = json.loads((folder / "report.json").read_text())["summary"]
    from fedcore.wire.convert import params_from_struct

    with fed.admin() as admin:
        rec = params_from_struct(next(r for r in admin.list_runs() if r.run_id == run_id).result)
    assert rec["metrics_pooled"] and abs(rec["metrics"]["val_ks"] - summary["ks"]) < 1e-12
    assert abs(rec["metrics"]["val_auc"] - summary["auc"]) < 1e-12
    bad = fed.cli("party", "evaluate", "no-such-model", "--file", str(holdout), "--home",
                  str(fed.party_home("yixin")), check=False)
    assert bad.returncode != 0 and "no-such-model" in bad.stderr
