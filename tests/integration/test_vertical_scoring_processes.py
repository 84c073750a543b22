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
