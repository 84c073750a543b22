"""Federated binning across real processes on the FATE hetero split dealt to two lenders (labels and 13
features each) and the platform (10 features): the coordinator gets IV per feature per party, each
party keeps the bins, counts and WOE of its own features only, and the IVs equal the central ones."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

from models.binning import binning_from_dict
from models.woe import bin_counts, woe_iv
from scripts.fate_data import fate_data_dir, write_fate_federations
from scripts.localfed import LocalFederation

pytestmark = pytest.mark.slow

LENDER_ROWS = {"yixin": (0, 1500), "meili": (1500, 3000)}


def _write_rows(src, dst, start: int, stop: int) -> None:
    with open(src, newline="") as f, open(dst, "w", newline="") as out:
        reader = csv.reader(f)
        w = csv.writer(out)
        w.writerow(next(reader))
        for i, row in enumerate(reader):
            if start <= i < stop:
                w.writerow(row)


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("binning")
    files = write_fate_federations(root / "fate")["hetero"]
    f = LocalFederation(root / "fed", {"yixin": "lender", "meili": "lender", "tiange": "platform"},
                        heartbeat_s=0.5)
    f.setup()
    for name, (a, b) in LENDER_ROWS.items():
        part = root / f"{name}.csv"
        _write_rows(files["guest"][0], part, a, b)
        f.ingest(name, part, files["guest"][1])
    host = root / "tiange.csv"
    _write_rows(files["host"][0], host, 0, 4000)
    f.ingest("tiange", host, files["host"][1])
    f.start()
    f.wait_online(timeout=300)
    yield f
    f.stop()


def _central_iv(binning: dict, values: np.ndarray, y: np.ndarray) -> float:
    b = binning_from_dict(binning)
    ev, ne = bin_counts(b.assign(values), y, b.n_bins)
    return woe_iv(ev, ne).iv


def test_binning_over_the_links_gives_the_iv_table_and_keeps_detail_at_owners(fed):
    coord = ["--home", str(fed.coordinator_home)]
    fed.cli("coordinator", "distribute-key", *coord)
    out = fed.cli("coordinator", "binning", "--parties", "yixin,meili,tiange", "--method", "quantile",
                  "--bins", "10", *coord).stdout
    run_id = out.strip().splitlines()[-1].split("binning run ", 1)[1].split(":")[0]
    with fed.admin() as admin:
        result = next(r for r in admin.list_runs() if r.run_id == run_id)
    from fedcore.wire.convert import params_from_struct

    res = params_from_struct(result.result)
    table = {(r["party"], r["feature"]): r for r in res["table"]}
    assert {p for p, _ in table} == {"lenders", "tiange"}
    assert len(table) == 13 + 10
    # The coordinator's result holds IVs and bin counts, never cut points, counts or WOE.
    assert not {"events", "woe", "cuts", "bins"} & {k for r in res["table"] for k in r}
    assert all(r["n_bins"] <= 12 for r in res["table"])  # 10 quantile bins (+ missing), merged if sparse

    guest = pd.read_csv(fate_data_dir() / "default_credit_hetero_guest.csv").iloc[:3000]
    host = pd.read_csv(fate_data_dir() / "default_credit_hetero_host.csv").set_index("id").loc[guest["id"]]
    y = guest["y"].to_numpy()
    details = {}
    for party in ("yixin", "meili", "tiange"):
        details[party] = json.loads(fed.cli("party", "binning", "show", run_id, "--json", "--home",
                                            str(fed.party_home(party))).stdout)
    # Each party holds its own features only: lenders the shared lender features, the platform its own.
    assert set(details["yixin"]["features"]) == set(details["meili"]["features"]) == {f"x{i}" for i in range(13)}
    assert set(details["tiange"]["features"]) == {f"x{i}" for i in range(10)}
    assert details["yixin"]["features"] == details["meili"]["features"]  # the pooled counts, the same at both
    for f, d in details["yixin"]["features"].items():
        central = _central_iv(d["quantile"]["binning"], guest[f].to_numpy(), y)
        assert abs(central - table[("lenders", f)]["iv"]) < 1e-9
        assert sum(b["events"] for b in d["quantile"]["bins"]) == int(y.sum())
    for f, d in details["tiange"]["features"].items():
        central = _central_iv(d["quantile"]["binning"], host[f].to_numpy(), y)
        assert abs(central - table[("tiange", f)]["iv"]) < 1e-9
    # The human view at a party: its features with bad rates and WOE.
    shown = fed.cli("party", "binning", "show", "--method", "quantile", "--home",
                    str(fed.party_home("tiange"))).stdout
    assert f"binning run {run_id} at tiange (platform)" in shown and "WOE" in shown and "x0 (numeric)" in shown


def test_binning_with_one_lender_and_the_platform_is_refused_naming_the_reason(fed):
    proc = fed.cli("coordinator", "binning", "--parties", "yixin,tiange", "--home", str(fed.coordinator_home),
                   check=False)
    assert proc.returncode != 0
    assert "at least 2 lenders" in proc.stdout + proc.stderr


def test_report_of_a_vertical_model_has_intervals_calibration_and_bands(fed, tmp_path):
    coord = ["--home", str(fed.coordinator_home)]
    out = fed.cli("coordinator", "train", "--kind", "vertical", "--parties", "yixin,meili,tiange", "--rounds", "3",
                  *coord).stdout
    run_id = out.split("(run ", 1)[1].split(")")[0]
    folder = tmp_path / "report"
    fed.cli("coordinator", "report", run_id, "--out", str(folder), *coord)
    data = json.loads((folder / "report.json").read_text())["summary"]
    assert data["n_val"] > 0 and 0.6 < data["auc"] < 1
    ci = data["ci"]["auc"]
    assert ci["low"] < data["auc"] < ci["high"] and abs(ci["estimate"] - data["auc"]) < 1e-9
    assert abs(data["ci"]["ks"]["estimate"] - data["ks"]) < 1e-9  # one KS: the pooled one
    rows = data["calibration"]["rows"]
    assert len(rows) == 10 and abs(sum(r["n"] for r in rows) - data["n_val"]) < 1e-6
    bands = data["bands"]
    assert bands[-1]["approval_rate"] == 1.0 and all(isinstance(b["non_monotone"], bool) for b in bands)
    html = (folder / "report.html").read_text()
    assert "Calibration" in html and "calibration.png" in html and "approval rate" in html and run_id in html
    assert (folder / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from fedcore.wire.convert import params_from_struct

    with fed.admin() as admin:
        rec = params_from_struct(next(r for r in admin.list_runs() if r.run_id == run_id).result)
    assert abs(rec["summary_metrics"]["val_ks"] - data["ks"]) < 1e-12  # the CLI's KS is the report's


@pytest.mark.timeout(600)  # a binning run, a training run and six CLI processes on a shared 2-core machine
def test_a_woe_encoded_joint_model_over_the_links_scores_and_exports_the_classic_scorecard(fed, tmp_path):
    """``train --encoding woe``: each party encodes its own columns with its bins' WOE from the newest
    binning run; the record names the encoding and the run; joint scoring over gRPC applies the WOE at
    every party, and each party's points table is exact."""
    coord = ["--home", str(fed.coordinator_home)]
    fed.cli("coordinator", "distribute-key", *coord)
    out = fed.cli("coordinator", "binning", "--parties", "yixin,meili,tiange", *coord).stdout
    bin_run = out.strip().splitlines()[-1].split("binning run ", 1)[1].split(":")[0]
    out = fed.cli("coordinator", "train", "--kind", "vertical", "--parties", "yixin,meili,tiange", "--rounds", "3",
                  "--encoding", "woe", *coord).stdout
    run_id = out.split("(run ", 1)[1].split(")")[0]
    assert f"WOE of binning run {bin_run}" in out
    from fedcore.wire.convert import params_from_struct

    with fed.admin() as admin:
        rec = params_from_struct(next(r for r in admin.list_runs() if r.run_id == run_id).result)
    assert rec["encoding"] == {"kind": "woe", "binning_run": bin_run} and rec["summary_metrics"]["val_auc"] > 0.65
    listed = fed.cli("coordinator", "models", *coord).stdout
    assert any(run_id in ln and f"joint-logistic on WOE of {bin_run}" in ln for ln in listed.splitlines())
    cards = {}
    for party in ("yixin", "tiange"):
        sl = json.loads((fed.party_home(party) / "models" / run_id / "slice.json").read_text())
        detail = json.loads(fed.cli("party", "binning", "show", bin_run, "--json", "--home",
                                    str(fed.party_home(party))).stdout)["features"]
        assert sl["encoding"]["binning_run"] == bin_run
        for f in sl["encoding"]["encoder"]["features"]:  # the party's own bins and WOE, as the run left them
            opt = detail[f["binning"]["feature"]]["optimal"]
            assert f["binning"] == opt["binning"] and f["woe"] == [b["woe"] for b in opt["bins"]]
        cards[party] = json.loads(fed.cli("party", "scorecard", run_id, "--format", "json", "--home",
                                          str(fed.party_home(party))).stdout)
        assert all(r["exact"] for r in cards[party]["rows"]) and cards[party]["binning_run"] == bin_run
    assert cards["yixin"]["basepoints"] is not None and cards["tiange"]["basepoints"] is None
    # joint scoring over gRPC = the two slices' WOE logits (the lender's given features, the platform's row)
    from fedcore.protocol.scoring.messages import ModelSlice

    guest = pd.read_csv(fate_data_dir() / "default_credit_hetero_guest.csv").iloc[:1500]
    host = pd.read_csv(fate_data_dir() / "default_credit_hetero_host.csv").iloc[:4000].set_index("id")
    row = guest[guest["id"].isin(host.index)].iloc[0]
    subject = int(row["id"])  # the row is float64 (ids, labels and features together)
    feats = [a for i in range(13) for a in ("--feature", f"x{i}={row[f'x{i}']}")]
    scored = json.loads(fed.cli("party", "score", "--id", str(subject), "--kind", "opaque", "--model", run_id,
                                *feats, "--home", str(fed.party_home("yixin"))).stdout)
    lsl = ModelSlice.load(fed.party_home("yixin") / "models", run_id)
    psl = ModelSlice.load(fed.party_home("tiange") / "models", run_id)
    z = (lsl.intercept + lsl.partial_logit(row[list(lsl.features)].to_numpy(float)[None, :])[0]
         + psl.partial_logit(host.loc[subject, list(psl.features)].to_numpy(float)[None, :])[0])
    assert scored["status"] == "ok" and abs(scored["prob_default"] - 1 / (1 + np.exp(-z))) < 1e-5
