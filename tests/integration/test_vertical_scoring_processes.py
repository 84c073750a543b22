"""Vertical training and joint scoring across real processes on the FATE hetero split: the lender
(labels + 13 features) and the platform (10 features) align by PSI, train the joint model, and the
lender scores applicants with the platform's encrypted contribution."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from models.gbdt import GBDTModel
from models.gbdt.tree import SplitTable, combine_directions, margin_from_leaves, owner_directions
from scripts.fate_data import fate_data_dir, write_fate_federations
from scripts.localfed import LocalFederation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("vertical")
    files = write_fate_federations(root / "fate")["hetero"]
    f = LocalFederation(root / "fed", {"yixin": "lender", "tiange": "platform"}, heartbeat_s=0.5)
    f.setup()
    f.ingest("yixin", *files["guest"])
    f.ingest("tiange", *files["host"])
    f.start()
    f.wait_online(timeout=300)
    f.root_dir = root
    yield f
    f.stop()


def test_psi_vertical_training_and_joint_scoring(fed):
    coord = ["--home", str(fed.coordinator_home)]
    fed.cli("coordinator", "distribute-key", *coord)
    out = fed.cli(
        "coordinator", "train", "--kind", "vertical", "--parties", "yixin,tiange", "--rounds", "4", *coord
    ).stdout
    assert "epoch 1/4" in out
    model_line = next(ln for ln in out.splitlines() if ln.startswith("model "))
    run_id = model_line.split("(run ", 1)[1].split(")")[0]
    auc = float(model_line.split("validation AUC ", 1)[1].split()[0])
    assert auc > 0.70
    for party in ("yixin", "tiange"):
        slice_ = json.loads((fed.party_home(party) / "models" / run_id / "slice.json").read_text())
        assert slice_["party"] == party and slice_["model_id"] == run_id
        assert ("intercept" in slice_) == (party == "yixin")
        assert len(slice_["weights"]) == len(slice_["features"]) == (13 if party == "yixin" else 10)

    with open(fate_data_dir() / "default_credit_hetero_guest.csv", newline="") as f:
        ids = [row["id"] for _, row in zip(range(3), csv.DictReader(f), strict=False)]
    home = str(fed.party_home("yixin"))
    rows = [
        json.loads(fed.cli("party", "score", "--id", i, "--kind", "opaque", "--model", run_id, "--home", home).stdout)
        for i in ids
    ]
    for r in rows:
        assert 0.0 < r["prob_default"] < 1.0 and r["model_version"]
        assert r["decision"] in ("approve", "review", "decline")
        assert "prob_default_own_only" not in r  # dropped: it was no model of the lender's own
        impacts = [x["logit_impact"] for x in r["reasons"]]
        assert impacts == sorted(impacts, reverse=True)  # by impact; the consortium line placed by its size
        assert sum(x["feature"] == "consortium_data" for x in r["reasons"]) == 1
    for party in ("yixin", "tiange"):
        assert fed.cli("party", "audit", "verify", "--home", str(fed.party_home(party))).returncode == 0


def test_party_keeps_serving_its_local_api_with_the_default_model(fed):
    # The quick start's `--serve` path (scripts/localfed.py serve_scoring): after a joint model exists,
    # the lender's node restarts with scoring.json and serves; the default model name `joint` resolves
    # to that model without knowing its run id. Clients: HTTP with the bearer token, and a Node.js
    # gRPC client built from the protos (tests/node/score.js).
    import shutil
    import subprocess
    import urllib.error
    import urllib.request
    from pathlib import Path

    models = fed.party_home("yixin") / "models"
    assert any(models.glob("*/slice.json")), "needs the joint model of the previous test"
    grpc_addr, url, token_file = fed.serve_scoring("yixin")
    token = token_file.read_text().strip()
    assert token_file.stat().st_mode & 0o077 == 0
    with open(fate_data_dir() / "default_credit_hetero_guest.csv", newline="") as f:
        ids = [row["id"] for _, row in zip(range(2), csv.DictReader(f), strict=False)]
    body = json.dumps({"applicants": [{"id": i, "id_kind": "opaque"} for i in ids]}).encode()
    req = urllib.request.Request(f"{url}/v1/score", body, {"Authorization": f"Bearer {token}"})  # noqa: S310 (loopback)
    with urllib.request.urlopen(req, timeout=120) as r:  # noqa: S310 (loopback)
        scores = json.loads(r.read())["scores"]
    assert [s["status"] for s in scores] == ["ok", "ok"]
    assert scores[0]["model_id"] in {p.parent.name for p in models.glob("*/slice.json")}
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(f"{url}/v1/score", body), timeout=60)  # noqa: S310
    assert err.value.code == 401

    node_dir = Path(__file__).resolve().parents[1] / "node"
    assert shutil.which("node") and (node_dir / "node_modules" / "@grpc" / "grpc-js").is_dir(), \
        "run scripts/test.sh (installs nodejs and tests/node's npm packages)"
    protos = Path(__file__).resolve().parents[2] / "protos"
    run = subprocess.run(["node", str(node_dir / "score.js"), str(protos), grpc_addr, str(token_file), "opaque", *ids],
                         capture_output=True, text=True, timeout=180, cwd=node_dir)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)["scores"]
    assert [s["status"] for s in out] == ["ok", "ok"]
    assert abs(out[0]["prob_default"] - scores[0]["prob_default"]) < 1e-6
    denied = subprocess.run(["node", str(node_dir / "score.js"), str(protos), grpc_addr, "-", "opaque", ids[0]],
                            capture_output=True, text=True, timeout=180, cwd=node_dir)
    assert denied.returncode == 2 and "UNAUTHENTICATED" in denied.stderr


def test_hybrid_trees_train_from_a_run_config_and_beat_vertical_lr(fed):
    """`coordinator train --kind vertical --model gbdt` over the same processes, PSI alignment and
    validation rows as the logistic model: the tree model registers with its metrics and wins."""
    coord = ["--home", str(fed.coordinator_home)]
    lr_out = fed.cli(
        "coordinator", "train", "--kind", "vertical", "--parties", "yixin,tiange", "--rounds", "4", *coord
    ).stdout
    lr_auc = float(
        next(ln for ln in lr_out.splitlines() if ln.startswith("model ")).split("validation AUC ")[1].split()[0]
    )
    config = fed.root_dir / "trees.toml"
    config.write_text(
        'parties = ["yixin", "tiange"]\nkind = "vertical"\nmodel = "gbdt"\n'
        "[gbdt]\nn_trees = 40\nmax_depth = 3\nlearning_rate = 0.3\nmax_bins = 32\n"
        "early_stopping_rounds = 5\nreg_lambda = 1.0\nmin_child_weight = 1.0\n"
    )
    out = fed.cli("coordinator", "train", "--run-config", str(config), "--n-trees", "30", *coord).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("model "))
    assert line.startswith("model hybrid-gbdt ")
    run_id = line.split("(run ", 1)[1].split(")")[0]
    tree_auc = float(line.split("validation AUC ", 1)[1].split()[0])
    assert tree_auc > lr_auc + 0.02, (tree_auc, lr_auc)
    lender = json.loads((fed.party_home("yixin") / "models" / run_id / "gbdt.json").read_text())
    platform = json.loads((fed.party_home("tiange") / "models" / run_id / "gbdt.json").read_text())
    assert lender["role"] == "lender" and set(lender["model"]["tables"]) == {"lenders"}
    assert 1 <= len(lender["model"]["trees"]) <= 30  # --n-trees on the command line beat the file's 40
    assert lender["metrics"]["auc"] == pytest.approx(tree_auc, abs=1e-4)
    assert platform["role"] == "platform" and "model" not in platform  # the platform keeps its rules only
    rules = list(platform["table"]["rules"].values())
    assert rules and all(r["feature"] in platform["features"] for r in rules)
    listed = fed.cli("coordinator", "models", *coord).stdout
    assert any(run_id in ln and "hybrid-gbdt" in ln and f"{tree_auc:.4f}" in ln for ln in listed.splitlines())
    # joint scoring with the tree model: the lender's node asks, the platform adds its splits under the
    # lender's key; the score equals the model evaluated centrally on both parties' rows
    fed.cli("coordinator", "distribute-key", *coord)
    with open(fate_data_dir() / "default_credit_hetero_guest.csv", newline="") as f:
        guest = {row["id"]: row for _, row in zip(range(4), csv.DictReader(f), strict=False)}
    with open(fate_data_dir() / "default_credit_hetero_host.csv", newline="") as f:
        host = {row["id"]: row for row in csv.DictReader(f) if row["id"] in guest}
    model = GBDTModel.from_dict(lender["model"])
    ptable = SplitTable.from_dict(platform["table"])
    home = str(fed.party_home("yixin"))
    scored = fed.tree_scored = {}  # for the report test below
    fed.tree_run = (run_id, lender, platform, tree_auc)
    # one CLI process for the four applicants (one each cost ~10-25 s on the loaded 2-core machine)
    out = fed.cli("party", "score", *[a for i in guest for a in ("--id", i)], "--kind", "opaque", "--model", run_id,
                  "--home", home).stdout  # fmt: skip
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["id"] for r in rows] == list(guest)
    for i, r in zip(guest, rows, strict=True):
        scored[i] = r
        bits = {
            "lenders": owner_directions(model.tables["lenders"], {f"x{j}": np.array([float(guest[i][f"x{j}"])])
                                                                 for j in range(13)}),
            "tiange": owner_directions(ptable, {f"x{j}": np.array([float(host[i][f"x{j}"])]) for j in range(10)}),
        }  # fmt: skip
        leaves = combine_directions(model.trees, model.owners, bits)
        central = 1 / (1 + np.exp(-margin_from_leaves(model.trees, leaves, model.base_score)[0]))
        assert r["prob_default"] == pytest.approx(central, abs=1e-5)
        impacts = [x["logit_impact"] for x in r["reasons"]]
        assert r["model_version"] and impacts == sorted(impacts, reverse=True)  # most adverse first
        line = [x for x in r["reasons"] if x["feature"] == "consortium_data"]  # placed by its size
        assert len(line) == 1 and line[0]["logit_impact"] == pytest.approx(r["external_logit"], abs=1e-5)
        assert all(x["feature"].startswith("x") for x in r["reasons"] if x["feature"] != "consortium_data")
    # a wrong model/kind combination is refused, naming both
    bad = fed.cli(
        "coordinator", "train", "--kind", "vertical", "--model", "mlp", "--parties", "yixin", *coord, check=False
    )
    assert bad.returncode != 0 and "'mlp'" in bad.stderr and "'vertical'" in bad.stderr


def test_hybrid_tree_model_report_and_evaluation(fed):
    """The tree model trained above: `party evaluate` at its lender and `coordinator report`/`evaluate`."""
    run_id, lender, platform, tree_auc = fed.tree_run
    scored = fed.tree_scored
    coord = ["--home", str(fed.coordinator_home)]
    home = str(fed.party_home("yixin"))
    guest = list(scored)
    # `party evaluate` at the lender: its labelled file, scored jointly like `party score`
    with open(fate_data_dir() / "default_credit_hetero_guest.csv", newline="") as f:
        labelled = [(row["id"], row["y"]) for _, row in zip(range(200), csv.DictReader(f), strict=False)]
    holdout, preds = fed.root_dir / "tree_holdout.csv", fed.root_dir / "tree_preds.csv"
    holdout.write_text("id,y\n" + "".join(f"{i},{y}\n" for i, y in labelled))
    ev = json.loads(fed.cli("party", "evaluate", run_id, "--file", str(holdout), "--out", str(preds), "--home", home)
                    .stdout.strip().splitlines()[-1])  # fmt: skip
    assert ev["kind"] == "joint" and ev["n"] == 200 and ev["auc"] > 0.6
    with open(preds, newline="") as f:
        got = {row["id"]: float(row["prob_default"]) for row in csv.DictReader(f)}
    assert all(got[i] == pytest.approx(scored[i]["prob_default"], abs=1e-6) for i in guest)
    # `coordinator report` / `evaluate`: the lender's kept validation scores as counts per bin, and the
    # lender's gain importance of its own features; the platform's importance and thresholds stay with it
    folder = fed.root_dir / "tree_report"
    fed.cli("coordinator", "report", run_id, "--out", str(folder), "--no-contribution", *coord)
    assert (folder / "report.html").is_file() and "Feature importance" in (folder / "report.html").read_text()
    summary = json.loads((folder / "report.json").read_text())["summary"]
    assert summary["n_val"] == lender["metrics"]["n"] and summary["auc"] == pytest.approx(tree_auc, abs=5e-3)
    assert summary["importance"] == {"yixin": pytest.approx(lender["model"]["importance"]["lenders"])}
    assert set(platform["importance"]) and not set(summary["parties"]) - {"yixin"}
    assert summary["scoring_rows"] >= 200 and summary["stability_val_vs_scoring"] is not None  # served scores
    evaluated = json.loads(fed.cli("coordinator", "evaluate", run_id, "--json", *coord).stdout.strip().splitlines()[-1])
    assert evaluated["auc"] == pytest.approx(summary["auc"], abs=1e-12)
