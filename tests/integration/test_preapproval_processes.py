"""Pre-approval across real processes: a coordinator, the platform (tiange) and three lenders, each a
separate node on 127.0.0.1 with the synthetic federation's data. The platform's application calls its
node (HTTP and gRPC); the lenders score jointly, price with their own policy and answer; the platform
gets offers only. A viewer without consent is refused; a lender that goes offline is left out."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
import pandas as pd
import pytest
from fedcredit.v1 import preapproval_pb2, preapproval_pb2_grpc

from scripts.localfed import LocalFederation, free_port
from scripts.synthetic import (
    LENDER_CATEGORICAL,
    LENDER_DATASET,
    LENDER_LEVELS,
    LENDER_NUMERIC,
    PLATFORM_DATASET,
    PLATFORM_NUMERIC,
)

pytestmark = pytest.mark.slow
LENDERS = ("yixin", "meili", "cango")
PRICING = """
[policy]
decline_if_blacklisted = true
model_id = "pre"

[products.car_loan]
min_amount = 10000
[[products.car_loan.bands]]
max_pd = 0.04
rate = 0.05
max_amount = 300000
[[products.car_loan.bands]]
max_pd = 0.20
rate = 0.07
max_amount = 120000
"""
W_LENDER = [0.0, -0.4, 0.2, -0.3, 0.0, 0.0, 0.0, -0.3, 0.5]
W_PLATFORM = [0.3, 0.2, -0.3, 0.1, -0.5, -0.2, -0.2]


def write_slice(home, party, dataset, feats, weights, frame, intercept=None):
    x = frame[list(feats)].astype(float)
    d = {"model_id": "pre", "version": "1", "party": party, "kind": "joint-logistic", "dataset": dataset,
         "features": list(feats), "weights": weights,
         "scaler": {"mean": x.mean().fillna(0).tolist(), "std": x.std().fillna(1).tolist()}}
    if intercept is not None:
        d["intercept"] = intercept
    (home / "models" / "pre").mkdir(parents=True, exist_ok=True)
    (home / "models" / "pre" / "slice.json").write_text(json.dumps(d))


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("preapproval")
    f = LocalFederation(root / "fed", {"tiange": "platform", **{n: "lender" for n in LENDERS}}, heartbeat_s=0.5)
    f.setup()
    data = f.synth(3000, seed=5)
    f.ingest_synthetic(data)
    behaviour = pd.read_csv(data / "tiange" / f"{PLATFORM_DATASET}.csv", dtype={"user_id": str})
    write_slice(f.party_home("tiange"), "tiange", PLATFORM_DATASET, PLATFORM_NUMERIC, W_PLATFORM, behaviour)
    for n in LENDERS:
        apps = pd.read_csv(data / n / f"{LENDER_DATASET}.csv", dtype={"applicant_id": str})
        write_slice(f.party_home(n), n, LENDER_DATASET, LENDER_NUMERIC, W_LENDER, apps, intercept=-3.0)
        (f.party_home(n) / "pricing.toml").write_text(PRICING)
    f.http_port, f.grpc_port = free_port(), free_port()
    (f.party_home("tiange") / "preapproval.json").write_text(json.dumps(
        {"http_listen": f"127.0.0.1:{f.http_port}", "grpc_listen": f"127.0.0.1:{f.grpc_port}",
         "budget_ms": 15000}))
    f.start()
    f.wait_online(timeout=300)
    f.cli("coordinator", "distribute-key", "--home", str(f.coordinator_home))
    f.behaviour = behaviour
    yield f
    f.stop()


def post(fed, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{fed.http_port}/v1/preapprove", json.dumps(body).encode(),
                                 {"Content-Type": "application/json", "Authorization": f"Bearer {token(fed)}"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:  # noqa: S310 (loopback test)
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def token(fed) -> str:
    return (fed.party_home("tiange") / "preapproval_api.token").read_text().strip()


def viewers(fed, consent: int, n: int) -> list[str]:
    b = fed.behaviour
    return list(b.loc[b["consent_preapproval"] == consent, "user_id"].head(n))


def audit(fed, party) -> list[dict]:
    p = fed.party_home(party) / "audit" / "scoring.log"
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


def test_preapproval_offers_only_over_real_processes(fed):
    car = {"kind": "car_loan", "amount": 150000, "term_months": 36}
    multi = 0
    for vid in viewers(fed, 1, 12):
        code, body = post(fed, {"viewer_id": vid, "product": car, "lenders": list(LENDERS)})
        assert code == 200, body
        assert set(body) == {"request_id", "offers"}
        for o in body["offers"]:
            assert set(o) == {"lender", "product", "amount", "rate", "term_months", "valid_s"}
            assert o["lender"] in LENDERS and o["rate"] in (0.05, 0.07)
            assert o["amount"] == (150000 if o["rate"] == 0.05 else 120000)
        multi += len(body["offers"]) >= 2
    assert multi >= 1  # several lenders answered with offers for at least one viewer
    for n in LENDERS:
        ev = audit(fed, n)
        assert sum(e["event"] == "preapproval_offer" for e in ev) == 12
        scored = [e for e in ev if e["event"] == "score_request" and e.get("caller", "").startswith("preapproval")]
        # the first viewer's score is the lender's own call; later ones the coordinator prefetched for it
        assert scored and not scored[0].get("prefetched") and any(e.get("prefetched") for e in scored[1:])
        assert all(e["outcome"] == "ok" for e in scored)
    plat = [e for e in audit(fed, "tiange") if e["event"] == "preapproval_request"]
    assert len(plat) == 12 and all(e["outcome"] == "ok" for e in plat)
    assert not any(vid in json.dumps(plat) for vid in viewers(fed, 1, 12))  # raw ids are not logged
    # gRPC, the same answer shape
    with grpc.insecure_channel(f"127.0.0.1:{fed.grpc_port}") as ch:
        stub = preapproval_pb2_grpc.LocalPreapprovalStub(ch)
        reply = stub.Preapprove(preapproval_pb2.LocalPreapprovalRequest(
            viewer_id=viewers(fed, 1, 1)[0], product=preapproval_pb2.ProductMsg(kind="car_loan", amount=150000),
            lenders=list(LENDERS)), timeout=120, metadata=(("authorization", f"Bearer {token(fed)}"),))
        assert reply.request_id and {o.lender for o in reply.offers} <= set(LENDERS)
    for party in ("tiange", *LENDERS):
        assert fed.cli("party", "audit", "verify", "--home", str(fed.party_home(party))).returncode == 0


def test_viewer_without_consent_and_bad_bodies_are_refused(fed):
    car = {"kind": "car_loan", "amount": 150000}
    code, body = post(fed, {"viewer_id": viewers(fed, 0, 1)[0], "product": car, "lenders": ["yixin"]})
    assert code == 403 and body["error"] == "permission_denied" and "preapproval" in body["message"]
    code, body = post(fed, {"viewer_id": viewers(fed, 1, 1)[0], "product": {"kind": "car_loan", "amount": -1},
                            "lenders": ["yixin"]})
    assert code == 400 and "product.amount" in body["message"]
    code, body = post(fed, {"viewer_id": viewers(fed, 1, 1)[0], "product": car, "lenders": ["nobody"]})
    assert code == 400 and "nobody" in body["message"]


def test_only_the_platform_may_ask_for_preapprovals(fed):
    from fedcore.errors import PermissionDenied
    from fedcore.protocol.preapproval.messages import PreapprovalRequest, Product
    from party_node.config import load_party_config
    from party_node.preapproval import GrpcPreapprovalGateway

    cfg = load_party_config(fed.party_home("yixin"))
    gw = GrpcPreapprovalGateway(cfg.coordinator.address, cfg.coordinator.server_name, cfg.tls.ca_cert.read_bytes(),
                                cfg.tls.cert.read_bytes(), cfg.tls.key.read_bytes())
    try:
        with pytest.raises(PermissionDenied):
            gw.preapprove(PreapprovalRequest(b"p" * 16, Product("car_loan", 1000.0), ("meili",)))
    finally:
        gw.close()


def test_monitoring_pass_from_the_cli_keeps_alerts_at_the_lender(fed):
    home = fed.party_home("yixin")
    (home / "monitoring.toml").write_text('model_id = "pre"\npd_threshold = 0.05\n')
    out = fed.cli("party", "monitor", "register", "--home", str(home)).stdout
    assert int(out.split("book: ")[1].split()[0]) > 0
    report = json.loads(fed.cli("party", "monitor", "run", "--home", str(home)).stdout)
    assert report["book"] > 0 and report["alerts"] == report["by_kind"].get("pd_above", 0) > 0
    rows = [json.loads(x) for x in fed.cli("party", "monitor", "alerts", "--home", str(home), "--limit", "3")
            .stdout.splitlines()]
    assert len(rows) == 3 and all(r["kind"] == "pd_above" for r in rows)
    for other in ("tiange", "meili", "cango"):  # the others saw scoring requests, nothing about alerts
        text = (fed.party_home(other) / "audit" / "scoring.log").read_text()
        assert "alert" not in text and "monitor" not in text
    unregistered = json.loads(fed.cli("party", "monitor", "run", "--home", str(fed.party_home("meili"))).stdout)
    assert unregistered["book"] == 0 and unregistered["alerts"] == 0  # no book registered: nothing scored
    (home / "monitoring.toml").write_text("pd_threshold = 7\n")
    bad = fed.cli("party", "monitor", "run", "--home", str(home), check=False)
    assert bad.returncode == 1 and "pd_threshold" in bad.stderr


def test_a_new_platform_snapshot_starts_a_monitoring_pass_at_the_lender(fed, tmp_path):
    import time

    home = fed.party_home("yixin")
    (home / "monitoring.toml").write_text('model_id = "pre"\n')
    fed.cli("party", "monitor", "register", "--home", str(home))
    snap = tmp_path / "week.csv"
    fed.behaviour[["user_id"]].assign(spend=1.0).to_csv(snap, index=False)
    out = fed.cli("party", "snapshot", "load", str(snap), "--dataset", "behaviour", "--as-of", "2024-02-04",
                  "--id-column", "user_id", "--announce", "--home", str(fed.party_home("tiange"))).stdout
    assert "announced to 3 lenders" in out
    deadline = time.monotonic() + 600  # the pass runs in the lender's node; wait for its audit record
    passes: list[dict] = []
    while not passes and time.monotonic() < deadline:
        passes = [e for e in audit(fed, "yixin") if e["event"] == "monitoring_pass"
                  and e.get("trigger") == "snapshot 2024-02-04"]
        time.sleep(0.2)
    assert passes and passes[0]["book"] > 0
    for n in LENDERS:  # every lender heard the date, and only the date
        heard = [e for e in audit(fed, n) if e["event"] == "snapshot_announced"]
        assert [e["as_of"] for e in heard] == ["2024-02-04"]
    assert [e["lenders"] for e in audit(fed, "tiange") if e["event"] == "snapshot_announce"] == [3]
    assert not any(e.get("trigger") for n in ("meili", "cango") for e in audit(fed, n))  # they do not monitor
    lender = fed.cli("party", "snapshot", "load", str(snap), "--dataset", "behaviour", "--as-of", "2024-02-11",
                     "--id-column", "user_id", "--announce", "--home", str(home), check=False)
    assert lender.returncode == 1 and "may not call" in lender.stderr  # only the platform announces


def test_hybrid_trees_split_on_text_categories_and_score_raw_and_unseen_levels(fed):
    """Hybrid trees on the synthetic federation's text categorical columns: the lenders' declared levels
    become category-set splits (not thresholds on store codes), and a lender scores with a level given as
    text (the same score as its stored level) or an unseen one (the learned default direction)."""
    coord = ["--home", str(fed.coordinator_home)]
    out = fed.cli("coordinator", "train", "--kind", "vertical", "--model", "gbdt", "--parties",
                  "yixin,meili,cango,tiange", "--n-trees", "8", "--depth", "3", "--bins", "16", *coord).stdout
    run_id = next(ln for ln in out.splitlines() if ln.startswith("model ")).split("(run ", 1)[1].split(")")[0]
    doc = json.loads((fed.party_home("yixin") / "models" / run_id / "gbdt.json").read_text())
    rules = doc["model"]["tables"]["lenders"]["rules"]
    used = [r for r in rules.values() if r["feature"] in LENDER_CATEGORICAL]
    assert used and all(r["categorical"] for r in used)
    fed.tree_run_id = run_id
    # each party prints its own gain importance of the model (the platform too), never another's
    shown = {x: json.loads(fed.cli("party", "importance", run_id, "--json", "--home", str(fed.party_home(x))).stdout)
             for x in ("yixin", "tiange")}  # fmt: skip
    platform_doc = json.loads((fed.party_home("tiange") / "models" / run_id / "gbdt.json").read_text())
    assert shown["yixin"]["importance"] == pytest.approx(doc["model"]["importance"]["lenders"])
    assert shown["tiange"]["role"] == "platform" and shown["tiange"]["importance"]
    assert shown["tiange"]["importance"] == pytest.approx(platform_doc["importance"])
    assert set(shown["tiange"]["importance"]) <= set(platform_doc["features"])
    assert not set(shown["yixin"]["importance"]) & set(platform_doc["features"])
    # a monotone constraint on a categorical feature is refused before any PSI run, naming the feature
    with fed.admin() as admin:
        runs_before = len(admin.list_runs())
    bad = fed.cli("coordinator", "train", "--kind", "vertical", "--model", "gbdt", "--parties",
                  "yixin,meili,cango,tiange", "--monotone", "employment_type=1", *coord, check=False)  # fmt: skip
    assert bad.returncode != 0 and "feature 'employment_type' is categorical" in bad.stderr, bad.stderr
    with fed.admin() as admin:
        assert len(admin.list_runs()) == runs_before + 1  # the refused run itself; no PSI run was started
    root = rules[str(doc["model"]["trees"][0]["ref"][0])]  # the first tree splits on lender features only
    apps = pd.read_csv(fed.root / "data" / "yixin" / f"{LENDER_DATASET}.csv", dtype=str)
    home = str(fed.party_home("yixin"))

    def score(person, **feats):
        extra = [a for k, v in feats.items() for a in ("--feature", f"{k}={v}")]
        r = json.loads(fed.cli("party", "score", "--id", person["applicant_id"], "--kind", "phone", "--model",
                               run_id, *extra, "--home", home).stdout)  # fmt: skip
        assert r["status"] == "ok"
        return r["prob_default"]

    def scores(rows):
        """One ``party score --file`` call for many (applicant, features given as text) rows, an empty cell
        taking the stored value: each CLI process cost ~25 s on the loaded 2-core machine, one per score."""
        cols = sorted({k for _, feats in rows for k in feats})
        path = fed.root / "tree-scores.csv"
        pd.DataFrame([{"id": p["applicant_id"], **{c: feats.get(c, "") for c in cols}} for p, feats in rows]
                     ).to_csv(path, index=False)  # fmt: skip
        out = fed.cli("party", "score", "--file", str(path), "--kind", "phone", "--model", run_id,
                      "--home", home).stdout  # fmt: skip
        got = [json.loads(x) for x in out.splitlines()]
        assert [(r["id"], r["status"]) for r in got] == [(p["applicant_id"], "ok") for p, _ in rows], got
        return [r["prob_default"] for r in got]

    f = "employment_type"
    person = apps[apps[f].notna()].iloc[0]
    # A category-set split changes scores: the root when it is categorical (levels on its two sides
    # differ), else the levels of a split categorical feature move some applicant's score. (Which lender
    # feature wins the root depends on the validation rows, which follow the PSI output's order.)
    if root["categorical"]:
        levels = ["__unseen__", *LENDER_LEVELS[root["feature"]]]
        sides = [(person, {root["feature"]: levels[int(root[side][0])]}) for side in ("left", "right")]
    else:
        feature = used[0]["feature"]
        sides = [(apps.iloc[i], {feature: lv}) for i in range(6) for lv in LENDER_LEVELS[feature]]
    got = scores([(person, {}), (person, {f: person[f]}), (person, {f: "astronaut"}), (person, {f: "pilot"}), *sides])
    stored, as_text, unseen, unseen2, moved = got[0], got[1], got[2], got[3], got[4:]
    assert as_text == pytest.approx(stored, abs=1e-6)  # text = its stored code
    assert score(person, **{f: person[f]}) == pytest.approx(stored, abs=1e-6)  # also given on the command line
    assert unseen == pytest.approx(unseen2, abs=1e-6)  # any unseen level: the learned default direction
    if root["categorical"]:
        assert moved[0] != pytest.approx(moved[1])
    else:
        k = len(LENDER_LEVELS[feature])
        assert any(v != pytest.approx(moved[i]) for i in range(0, len(moved), k) for v in moved[i + 1:i + k])


def test_a_tree_run_resumes_after_the_coordinator_is_killed(fed):
    """`coordinator resume` of a hybrid tree run killed mid-run (SIGKILL of the coordinator): it goes on
    from the last finished tree and every party ends with the model of an uninterrupted run."""
    import threading

    run0 = fed.tree_run_id  # reuse its PSI alignments: both runs below see the same rows
    params = {"parties": [*LENDERS, "tiange"], "kind": "vertical", "model": "gbdt", "seed": 2,
              "gbdt": {"n_trees": 14, "max_depth": 2, "max_bins": 16, "subsample": 0.8, "colsample_bytree": 0.8},
              "psi_runs": {x: f"{run0}-psi-{x}" for x in LENDERS}}  # fmt: skip

    def model_files(run_id):
        docs = {x: json.loads((fed.party_home(x) / "models" / run_id / "gbdt.json").read_text())
                for x in [*LENDERS, "tiange"]}  # fmt: skip
        return {x: d["model"] if x != "tiange" else {"table": d["table"], "importance": d["importance"]}
                for x, d in docs.items()}  # fmt: skip

    with fed.admin() as admin:
        events = list(admin.start_run("vertical", params))
    assert events[-1].status == "succeeded", events[-1].message
    clean = model_files(events[0].run_id)
    state: dict[str, object] = {}

    def run_and_die() -> None:
        try:
            with fed.admin() as admin:
                for ev in admin.start_run("vertical", params):
                    state["run_id"] = ev.run_id
                    if ev.message.startswith("tree 4/"):
                        fed.kill("coordinator")
        except Exception as exc:  # the stream dies with the coordinator
            state["error"] = exc

    t = threading.Thread(target=run_and_die)
    t.start()
    t.join(timeout=300)
    assert "error" in state and state.get("run_id"), state
    fed.start_coordinator()
    fed.wait_online(timeout=300)
    run_id = str(state["run_id"])
    with fed.admin() as admin:
        assert {r.run_id: r.status for r in admin.list_runs()}[run_id] == "interrupted"
    out = fed.cli("coordinator", "resume", run_id, "--home", str(fed.coordinator_home)).stdout
    done = int(out.split("resuming after tree ", 1)[1].split(":", 1)[0])  # 3, or more if the kill lagged
    assert 3 <= done < 14 and f"tree {done + 1}/14" in out and "tree 1/14" not in out, out
    assert model_files(run_id) == clean


def test_offline_lender_is_left_out(fed):
    fed.kill("cango")
    car = {"kind": "car_loan", "amount": 150000}
    answered = set()
    for vid in viewers(fed, 1, 6):
        code, body = post(fed, {"viewer_id": vid, "product": car, "lenders": list(LENDERS), "budget_ms": 8000})
        assert code == 200, body
        answered |= {o["lender"] for o in body["offers"]}
    assert "cango" not in answered and answered  # the others still made offers
