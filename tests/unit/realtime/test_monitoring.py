"""Monitoring at a lender with real stores and real joint scoring: the book, passes, alert rules,
alerts kept at the lender (store, webhook, Prometheus), and what the other members see (a scoring
request like any other, never an alert)."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from fedcore import telemetry
from fedcore.errors import ConfigError
from fedcore.protocol.scoring.messages import CONTRIBUTE
from party_node.monitoring import KINDS, Monitor, MonitorSettings, evaluate
from party_node.scoring_batch import Applicant


def alerts_counter(kind: str) -> float:
    return telemetry.ALERTS.labels(kind)._value.get()


@pytest.fixture
def monitor(fed):
    return Monitor(fed.services["lender_a"], MonitorSettings(model_id="m1", pd_threshold=0.3, pd_factor=1.5,
                                                             contribution_delta=0.5))


def make_riskier(fed) -> None:
    """The platform's behaviour data turns: its slice now weighs the viewers' features much more."""
    p = fed.platform
    path = p.home / "models" / "m1" / "slice.json"
    d = json.loads(path.read_text())
    d["weights"] = [abs(w) * 4 + 1.0 for w in d["weights"]]
    path.write_text(json.dumps(d))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new mtime: the cache reloads


def test_book_is_active_borrowers_with_monitoring_consent(fed, monitor):
    n = monitor.register_book()
    want = [i for i in range(0, 200, 2) if i % 5 != 0]
    assert n == len(want)
    rows, pseudos = monitor.book()
    assert len(rows) == n and all(len(p) == 16 for p in pseudos)


def test_passes_raise_alerts_kept_at_the_lender_and_delivered_to_the_webhook(fed, monitor):
    received: list[dict] = []
    got = threading.Event()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()
            got.set()

        def log_message(self, *a) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mon = Monitor(monitor.service, MonitorSettings(**{**monitor.settings.__dict__,
                                                          "webhook": f"http://127.0.0.1:{server.server_port}/h"}))
        mon.register_book()
        first = mon.run()
        assert first.book == mon.register_book() and first.psi is None  # the first pass is the reference
        above_first = {a.row_id for a in first.alerts if a.kind == "pd_above"}
        before = alerts_counter("pd_up")
        make_riskier(fed)
        second = mon.run()
        kinds = {a.kind for a in second.alerts}
        assert {"pd_up", "contribution"} <= kinds
        # pd_above only for borrowers newly above the threshold
        assert not above_first & {a.row_id for a in second.alerts if a.kind == "pd_above"}
        assert "score_drift" in kinds and second.psi > 0.25
        assert alerts_counter("pd_up") - before == sum(a.kind == "pd_up" for a in second.alerts)
        assert got.wait(30) and second.delivered is True
        stored = mon.alerts(kind="pd_up")
        assert len(stored) == sum(a.kind == "pd_up" for a in second.alerts)
        assert all(s["delivered"] and s["borrower"].startswith("139") for s in stored)
        hooked = [a for body in received for a in body["alerts"]]
        assert {a["id"] for a in hooked} >= {s["id"] for s in stored}
    finally:
        server.shutdown()
        server.server_close()


def test_no_member_sees_a_monitoring_alert_and_requests_look_like_scoring(fed, monitor):
    monitor.register_book()
    monitor.run()
    make_riskier(fed)
    n_before = len(fed.channel.wire_log)
    report = monitor.run()
    assert report.alerts
    monitoring_msgs = fed.channel.wire_log[n_before:]
    n_ref = len(fed.channel.wire_log)
    fed.services["lender_a"].score([Applicant("13900000002", "phone")], model_id="m1")
    ordinary = fed.channel.wire_log[n_ref:]
    assert {r.kind for r in monitoring_msgs} == {CONTRIBUTE} == {r.kind for r in ordinary}
    to_party = [r for r in monitoring_msgs if r.direction == "to_party"]
    ref_keys = {k for r in ordinary if r.direction == "to_party" for k in r.params}
    assert to_party and all(set(r.params) == ref_keys for r in to_party)
    for r in monitoring_msgs:
        text = json.dumps(r.params).lower()
        assert not any(k in text for k in (*KINDS, "alert", "monitor"))
    for p in (fed.platform, fed.lenders["lender_b"], fed.lenders["lender_c"]):
        log = (p.home / "audit" / "scoring.log").read_text()
        assert "alert" not in log and "monitor" not in log  # the others' audit shows scoring only


def test_rules_for_multilending_and_fraud_hits():
    st = MonitorSettings()
    prev = {"pd": 0.05, "loans": 0, "blacklist": 0, "external": 0.1}
    cur = {**prev, "loans": 2, "blacklist": 1}
    assert {a.kind for a in evaluate(prev, cur, st, 7)} == {"loans_up", "fraud_hit"}
    assert evaluate(prev, dict(prev), st, 7) == []
    assert {a.kind for a in evaluate(None, {**prev, "pd": 0.5, "blacklist": 1}, st, 7)} == {"pd_above", "fraud_hit"}
    assert {a.kind for a in evaluate(prev, {**prev, "pd": 0.11}, st, 7)} == {"pd_up"}


def test_validation_scores_set_the_drift_reference(fed, monitor):
    ref = fed.lenders["lender_a"].home / "models" / "m1" / "validation_scores.json"
    ref.write_text(json.dumps(list(np.linspace(0.001, 0.002, 200))))
    monitor.register_book()
    report = monitor.run()
    assert report.psi is not None and report.psi > 0.25
    assert [a.kind for a in report.alerts if a.row_id is None] == ["score_drift"]


@pytest.mark.parametrize(("text", "field"), [("pd_threshold = 2.0", "pd_threshold"), ("pd_factor = 0.5", "pd_factor"),
                                             ('webhook = "ftp://x"', "webhook"), ("thresh = 1", "thresh"),
                                             ('chunk = "big"', "chunk")])
def test_bad_monitoring_settings_name_the_field(tmp_path, text, field):
    (tmp_path / "monitoring.toml").write_text(text + "\n")
    with pytest.raises(ConfigError, match=field):
        MonitorSettings.load(tmp_path)


def test_alerts_api_lists_stored_alerts(fed, monitor):
    import urllib.error
    import urllib.request

    from party_node.monitoring_cli import make_alerts_server

    monitor.register_book()
    monitor.run()
    make_riskier(fed)
    monitor.run()
    token = "alerts-test-token-0123456789abcdef"
    server = make_alerts_server(monitor, token)
    base = f"http://127.0.0.1:{server.port}/v1/alerts"
    auth = {"Authorization": f"Bearer {token}"}
    try:
        req = urllib.request.Request(base + "?kind=pd_up&limit=5", headers=auth)  # noqa: S310
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
            body = json.loads(r.read())
        assert 0 < len(body["alerts"]) <= 5 and {a["kind"] for a in body["alerts"]} == {"pd_up"}
        assert body["alerts"] == monitor.alerts(kind="pd_up", limit=5)
        for url, headers, code in ((base + "?kind=nonsense", auth, 400), (base + "?limit=0", auth, 400),
                                   (base, {}, 401), (base, {"Authorization": "Bearer wrong"}, 401)):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30)  # noqa: S310
            assert err.value.code == code
    finally:
        server.stop()


def test_pass_wide_rules_match_the_per_borrower_rules():
    from party_node.monitoring import evaluate_arrays

    rng = np.random.default_rng(4)
    n = 400
    st = MonitorSettings(pd_threshold=0.3, pd_factor=1.8, contribution_delta=0.7)

    def draw() -> dict[str, np.ndarray]:
        return {"pd": rng.random(n) * 0.6, "loans": rng.integers(0, 3, n).astype(float),
                "blacklist": (rng.random(n) < 0.1).astype(float), "external": rng.normal(0, 1, n)}

    prev, cur = draw(), draw()
    known = rng.random(n) < 0.8
    rows = np.arange(n) * 3
    fast = evaluate_arrays(prev, known, cur, st, rows)
    slow = [a for i in range(n) for a in evaluate(
        {k: float(v[i]) for k, v in prev.items()} if known[i] else None,
        {k: float(v[i]) for k, v in cur.items()}, st, int(rows[i]))]
    key = lambda a: (a.row_id, a.kind)  # noqa: E731
    assert sorted(((a.row_id, a.kind, a.value) for a in fast), key=lambda t: t[:2]) == \
        sorted(((a.row_id, a.kind, a.value) for a in slow), key=lambda t: t[:2])
    assert len(fast) > 50 and key(fast[0])


def test_book_scores_with_a_one_hot_slice_as_with_the_plain_one(fed, monitor):
    """A slice with one-hot columns is wider than the store's rows: the book is scored on store columns
    and encoded by the slice (the quick start's categoricals broke this once)."""
    monitor.register_book()
    rows, pseudos = monitor.book()
    before = monitor.score_book(rows, pseudos)["pd"]
    path = fed.lenders["lender_a"].home / "models" / "m1" / "slice.json"
    d = json.loads(path.read_text())
    k = len(d["features"])
    d["columns"] = [[j, None] for j in range(k)] + [[k - 1, 1.0]]  # an extra indicator with zero weight
    d["weights"] = [*d["weights"], 0.0]
    d["scaler"] = {"mean": [*d["scaler"]["mean"], 0.0], "std": [*d["scaler"]["std"], 1.0]}
    path.write_text(json.dumps(d))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fed.services["lender_a"]._own_cache.clear()
    after = monitor.score_book(rows, pseudos)["pd"]
    assert np.allclose(after, before, atol=1e-4)


def test_default_threshold_comes_from_the_models_validation_distribution(fed, tmp_path):
    from models import histograms as hm
    from party_node.monitoring import FALLBACK_THRESHOLD, threshold_from_model

    assert threshold_from_model(tmp_path, 0.05) == (FALLBACK_THRESHOLD, "default")
    rng = np.random.default_rng(0)
    p = rng.beta(1.2, 12.0, 20_000)  # a validation distribution, mostly low PDs
    (tmp_path / "validation_scores.json").write_text(json.dumps(p.tolist()))
    t_scores, src = threshold_from_model(tmp_path, 0.05)
    assert src == "validation_scores.json" and np.mean(p > t_scores) == pytest.approx(0.05, abs=0.002)
    y = (rng.random(len(p)) < p).astype(int)
    (tmp_path / "validation_hist.json").write_text(json.dumps({"val": hm.histogram(y, p).to_params()}))
    t_hist, src = threshold_from_model(tmp_path, 0.05)
    assert src == "validation_hist.json" and abs(t_hist - t_scores) <= 0.002  # one 1/1000 bin, edge up
    assert threshold_from_model(tmp_path, 0.2)[0] < t_hist  # a larger share alerted: a lower threshold
    # a monitor without a threshold of its own uses the model's
    home = fed.services["lender_a"].home
    (home / "models" / "m1" / "validation_scores.json").write_text(json.dumps(p.tolist()))
    mon = Monitor(fed.services["lender_a"], MonitorSettings(model_id="m1"))
    mon.register_book()
    assert mon.threshold() == (pytest.approx(t_scores), "validation_scores.json")
    assert mon.run().pd_threshold == pytest.approx(t_scores)


def test_an_over_confident_models_threshold_is_flagged(tmp_path, caplog):
    """A runaway joint model (validation PDs of 0 and 1) put 12% of its validation applicants in the top
    bin: the threshold read 0.999 and a pass alerted on 12% of the book. The threshold still comes out at
    the top bin, and the log says why."""
    from models import histograms as hm
    from party_node.monitoring import threshold_from_model

    rng = np.random.default_rng(0)
    p = np.where(rng.random(5000) < 0.12, 1.0, rng.beta(1.2, 12.0, 5000))
    y = (rng.random(len(p)) < p).astype(int)
    (tmp_path / "validation_hist.json").write_text(json.dumps({"val": hm.histogram(y, p).to_params()}))
    with caplog.at_level("WARNING"):
        t, _ = threshold_from_model(tmp_path, 0.05)
    assert t == 0.999 and "over-confident" in caplog.text
