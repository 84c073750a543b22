"""Vertical training and joint scoring across real processes on the FATE hetero split: the lender
(labels + 13 features) and the platform (10 features) align by PSI, train the joint model, and the
lender scores applicants with the platform's encrypted contribution."""

from __future__ import annotations

import csv
import json

import pytest

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
    f.wait_online(timeout=30)
    f.root_dir = root
    yield f
    f.stop()


def test_psi_vertical_training_and_joint_scoring(fed):
    coord = ["--home", str(fed.coordinator_home)]
    fed.cli("coordinator", "distribute-key", *coord)
    out = fed.cli("coordinator", "train", "--kind", "vertical", "--parties", "yixin,tiange", "--rounds", "4",
                  *coord).stdout
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
    rows = [json.loads(fed.cli("party", "score", "--id", i, "--kind", "opaque", "--model", run_id,
                               "--home", home).stdout) for i in ids]
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
