"""Benchmark the real-time scenarios (issue 15) on the synthetic federation.

Latency (``--transport processes``, the default): a coordinator, the platform and five lenders, each
its own node process on 127.0.0.1 with mutual TLS (:class:`scripts.localfed.LocalFederation`), the
joint model as slices at each. Everything else (and ``--transport inprocess``): the six parties as real
stores on the in-memory channel (no network; CKKS and everything else real); the in-process latency
is kept under ``in_process`` with the CPU time of each kind of request. Measured in the same run:

- ``preapproval_p50_ms`` / ``preapproval_p99_ms``: one viewer, five lenders answering (each scores
  jointly and prices; over processes the platform application's ``POST /v1/preapprove``);
  ``single_score_p99_ms``: one applicant scored jointly at one lender (over processes its loan
  system's ``POST /v1/score``); the two interleaved request by request, so both see the same load;
  ``processes_cpu_ms``: the CPU each process (coordinator, platform, mean lender) used per request of
  each kind, read from ``/proc`` around each request; ``load_1m``: the machine's 1-minute load average
  at the start and end of the timed loop (the machine is shared);
- ``monitoring_s`` / ``batch_s``: a monitoring pass over a lender's book against the same lender's
  batch scoring of the same number of applicants (``book_n``); ``monitoring_1m_s`` / ``batch_1m_s``:
  the same at ``--book`` borrowers (a lender store of that size, five array-backed contributors);
- ``alert_recall`` / ``alert_precision`` on the synthetic time series (weekly passes; recall: share of
  borrowers who default within 6 months of a pass that were alerted at least 30 days before the
  default; precision: share of alerted borrowers who default within 6 months of the alert), beside
  ``lender_only_alert_recall`` / ``lender_only_alert_precision`` with the lender's own data alone. The
  joint PD in the series is the loan's application PD (the lender's part) plus the platform's
  change features (30-day spend and activity against the prior 90 days) through the product's alert
  rules (:func:`party_node.monitoring.evaluate`);
- ``alert_recall_trained`` / ``alert_precision_trained``: the same passes and rules with the joint PD of
  a model *trained* with the change features (:func:`alerts_trained`: ``snapshot derive`` at the
  platform, a vertical run, the platform re-deriving each week; details under ``trained_model``).

Usage: ``python scripts/bench_realtime.py [--people 20000] [--requests 100] [--transport processes]
[--book 1000000] [--out FILE] [--alerts-only]``. Keys already in ``FILE`` that this run does not
measure are kept (``--alerts-only``: only the alert figures run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from fedcore.protocol.inmemory import InMemoryChannel  # noqa: E402
from fedcore.protocol.messages import Role  # noqa: E402
from fedcore.protocol.preapproval.coordinator import LocalPreapprovalGateway, PreapprovalCoordinator  # noqa: E402
from fedcore.protocol.preapproval.messages import Product  # noqa: E402
from fedcore.protocol.preapproval.party import PreapprovalLender  # noqa: E402
from fedcore.protocol.scoring.coordinator import ScoringCoordinator  # noqa: E402
from fedcore.protocol.scoring.groups import ScoreGroups  # noqa: E402
from fedcore.protocol.scoring.requester import LocalGateway  # noqa: E402
from fedcore.protocol.tasks import HandlerRegistry  # noqa: E402
from party_node.ingest import ingest_file  # noqa: E402
from party_node.monitoring import Monitor, MonitorSettings, evaluate  # noqa: E402
from party_node.preapproval import JointOfferSource, PreapprovalService  # noqa: E402
from party_node.pricing import parse_policy  # noqa: E402
from party_node.pseudonym import PseudonymKey  # noqa: E402
from party_node.schema import load_schema  # noqa: E402
from party_node.scoring import ScoringService, register_scoring_handlers  # noqa: E402
from party_node.scoring_batch import Applicant, ApplicantTable, ScoringSettings  # noqa: E402
from party_node.store import Store  # noqa: E402
from scripts.synthetic import (  # noqa: E402
    LENDER_NUMERIC,
    LENDERS,
    PLATFORM,
    PLATFORM_NUMERIC,
    SynthConfig,
    generate,
    write_federation,
)
from scripts.synthetic_time import TimeConfig, generate_time  # noqa: E402

KEY = PseudonymKey(b"bench realtime pseudonym key 32b")
W_LENDER = [0.0, -0.4, 0.2, -0.3, 0.0, 0.0, 0.0, -0.3, 0.5]
W_PLATFORM = [0.3, 0.2, -0.3, 0.1, -0.5, -0.2, -0.2]
POLICY = {"policy": {"model_id": "rt"}, "products": {"car_loan": {"min_amount": 10000, "bands": [
    {"max_pd": 0.04, "rate": 0.05, "max_amount": 300000}, {"max_pd": 0.2, "rate": 0.07, "max_amount": 120000}]}}}


def _slice(home: Path, party: str, dataset: str, feats: tuple[str, ...], w: list[float], frame: pd.DataFrame,
           intercept: float | None) -> None:
    x = frame[list(feats)].astype(float)
    d: dict[str, Any] = {"model_id": "rt", "version": "1", "party": party, "kind": "joint-logistic",
                         "dataset": dataset, "features": list(feats), "weights": w,
                         "scaler": {"mean": x.mean().fillna(0).tolist(), "std": x.std().fillna(1).tolist()}}
    if intercept is not None:
        d["intercept"] = intercept
    (home / "models" / "rt").mkdir(parents=True, exist_ok=True)
    (home / "models" / "rt" / "slice.json").write_text(json.dumps(d))


def build(root: Path, people: int) -> dict[str, Any]:
    fed = generate(SynthConfig(people=people, seed=3))
    files = write_federation(fed, root / "data")
    ch = InMemoryChannel()
    groups = ScoreGroups()
    scoring = ScoringCoordinator(ch, groups=groups)
    services: dict[str, ScoringService] = {}
    stores: dict[str, Store] = {}
    for name, (data, schema_path) in files.items():
        home = root / name
        home.mkdir()
        store = Store.open(f"sqlite:///{home / 'store.db'}")
        schema = load_schema(schema_path)
        ingest_file(store, data, schema)
        store.install_pseudonym_key(KEY)
        stores[name] = store
        frame = fed.parties[name].to_pandas()
        if name == PLATFORM:
            _slice(home, name, schema.name, PLATFORM_NUMERIC, W_PLATFORM, frame, None)
        else:
            _slice(home, name, schema.name, LENDER_NUMERIC, W_LENDER, frame, -3.0)
        reg = HandlerRegistry()
        register_scoring_handlers(reg, store, home)
        if name != PLATFORM:
            svc = ScoringService(store, home, LocalGateway(scoring, name),
                                 ScoringSettings(model_id="rt", allow_partial=True, timeout_s=60.0))
            services[name] = svc
            PreapprovalLender(JointOfferSource(svc, parse_policy(POLICY))).register(reg)
        ch.add_party(name, Role.PLATFORM if name == PLATFORM else Role.LENDER, reg)
    fanout = PreapprovalCoordinator(ch, groups=groups, scores=scoring)  # prefetches through scoring's fan-out
    pre = PreapprovalService(stores[PLATFORM], root / PLATFORM, LocalPreapprovalGateway(fanout, PLATFORM))
    return {"fed": fed, "channel": ch, "services": services, "stores": stores, "pre": pre, "root": root}


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(xs) * 1000.0, q)), 2)


def latency(env: dict[str, Any], requests: int, gap_ms: float = 0.0) -> dict[str, Any]:
    fed = env["fed"]
    plat = fed.parties[PLATFORM].to_pandas()
    viewers = list(plat.loc[plat["consent_preapproval"] == 1, "user_id"].head(requests))
    car = Product("car_loan", 150000.0, 36)
    for v in viewers[:3]:  # warm: every party's key ring, context caches and contribution tables
        env["pre"].preapprove(v, car, list(LENDERS), budget_ms=30_000)
    svc = env["services"][LENDERS[0]]
    svc.score([Applicant(viewers[0], "phone")])
    # interleaved, so that both see the same load on a shared machine
    pre_t: list[float] = []
    one_t: list[float] = []
    pre_cpu = one_cpu = 0.0
    offers = 0
    for v in viewers:
        time.sleep(gap_ms / 1000.0)  # arrivals spaced as over processes (in process the CPU includes refills)
        t0, c0 = time.perf_counter(), time.process_time()
        r = env["pre"].preapprove(v, car, list(LENDERS), budget_ms=30_000)
        pre_t.append(time.perf_counter() - t0)
        pre_cpu += time.process_time() - c0
        offers += len(r.offers)
        t0, c0 = time.perf_counter(), time.process_time()
        svc.score([Applicant(v, "phone")])
        one_t.append(time.perf_counter() - t0)
        one_cpu += time.process_time() - c0
        time.sleep(gap_ms / 1000.0)
    out = {"requests": len(viewers), "lenders": len(LENDERS), "offers_per_request": round(offers / len(viewers), 2),
           "load_1m": round(os.getloadavg()[0], 1),
           "preapproval_p50_ms": pct(pre_t, 50), "preapproval_p99_ms": pct(pre_t, 99),
           "single_score_p50_ms": pct(one_t, 50), "single_score_p99_ms": pct(one_t, 99),
           "preapproval_cpu_ms": round(1000 * pre_cpu / len(viewers), 1),
           "single_score_cpu_ms": round(1000 * one_cpu / len(viewers), 1)}
    out["ratio_preapproval_p99_to_single_p99"] = round(out["preapproval_p99_ms"] / out["single_score_p99_ms"], 2)
    return out


def _post(url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    import urllib.request

    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    req = urllib.request.Request(url, json.dumps(body).encode(), headers)  # noqa: S310 (loopback)
    with urllib.request.urlopen(req, timeout=120) as r:  # noqa: S310 (loopback)
        out: dict[str, Any] = json.loads(r.read())
        return out


def _proc_cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) each process has used so far, from ``/proc/PID/stat``."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for k, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out[k] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _cpu_summary(total: dict[str, float], n: int) -> dict[str, float]:
    """Per request: the coordinator's, the platform's and the mean lender's CPU ms, and the sum."""
    per = {k: 1000.0 * v / max(1, n) for k, v in total.items()}
    lenders = [per[k] for k in LENDERS if k in per]
    return {"coordinator": round(per.get("coordinator", 0.0), 1), "platform": round(per.get(PLATFORM, 0.0), 1),
            "lender_mean": round(sum(lenders) / max(1, len(lenders)), 1), "total": round(sum(per.values()), 1)}


def latency_processes(root: Path, people: int, requests: int, gap_ms: float = 0.0) -> dict[str, Any]:
    """The same comparison over real processes: a coordinator, the platform and five lenders, each its
    own node on 127.0.0.1 with mutual TLS. A pre-approval is the platform application's
    ``POST /v1/preapprove`` on its node (five lenders, offers sealed to the platform); a single score is
    the first lender's loan system's ``POST /v1/score`` for one applicant on its node. Interleaved."""
    from scripts.localfed import LocalFederation, free_port
    from scripts.synthetic import LENDER_DATASET, PLATFORM_DATASET

    fed = LocalFederation(root / "procs", {PLATFORM: "platform", **{n: "lender" for n in LENDERS}}, heartbeat_s=2.0)
    t0 = time.perf_counter()
    fed.setup()
    data = fed.synth(people, seed=3)
    fed.ingest_synthetic(data)
    behaviour = pd.read_csv(data / PLATFORM / f"{PLATFORM_DATASET}.csv", dtype={"user_id": str})
    _slice(fed.party_home(PLATFORM), PLATFORM, PLATFORM_DATASET, PLATFORM_NUMERIC, W_PLATFORM, behaviour, None)
    pricing = ('[policy]\nmodel_id = "rt"\n[products.car_loan]\nmin_amount = 10000\n'
               '[[products.car_loan.bands]]\nmax_pd = 0.04\nrate = 0.05\nmax_amount = 300000\n'
               '[[products.car_loan.bands]]\nmax_pd = 0.2\nrate = 0.07\nmax_amount = 120000\n')
    for n in LENDERS:
        apps = pd.read_csv(data / n / f"{LENDER_DATASET}.csv", dtype={"applicant_id": str})
        _slice(fed.party_home(n), n, LENDER_DATASET, LENDER_NUMERIC, W_LENDER, apps, -3.0)
        (fed.party_home(n) / "pricing.toml").write_text(pricing)
    pre_port, score_port = free_port(), free_port()
    (fed.party_home(PLATFORM) / "preapproval.json").write_text(
        json.dumps({"http_listen": f"127.0.0.1:{pre_port}", "budget_ms": 30_000}))
    (fed.party_home(LENDERS[0]) / "scoring.json").write_text(
        json.dumps({"http_listen": f"127.0.0.1:{score_port}", "model_id": "rt", "allow_partial": True}))
    try:
        fed.start()
        fed.wait_online(timeout=120)
        fed.cli("coordinator", "distribute-key", "--home", str(fed.coordinator_home))
        setup_s = time.perf_counter() - t0
        pre_token = (fed.party_home(PLATFORM) / "preapproval_api.token").read_text().strip()
        score_token = (fed.party_home(LENDERS[0]) / "scoring_api.token").read_text().strip()
        viewers = list(behaviour.loc[behaviour["consent_preapproval"] == 1, "user_id"].head(requests + 3))
        car = {"kind": "car_loan", "amount": 150000, "term_months": 36}

        def pre(v: str) -> int:
            body = {"viewer_id": v, "product": car, "lenders": list(LENDERS), "budget_ms": 30_000}
            return len(_post(f"http://127.0.0.1:{pre_port}/v1/preapprove", pre_token, body)["offers"])

        def one(v: str) -> None:
            _post(f"http://127.0.0.1:{score_port}/v1/score", score_token, {"id": v, "id_kind": "phone"})

        for v in viewers[:3]:  # warm: connections, key rings, contexts cached at every member
            pre(v)
            one(v)
        pre_t: list[float] = []
        one_t: list[float] = []
        offers = 0
        pids = {k: p.pid for k, p in fed.procs.items()}
        pre_cpu = dict.fromkeys(pids, 0.0)
        one_cpu = dict.fromkeys(pids, 0.0)
        load0 = os.getloadavg()[0]
        loop_c0, loop_t0 = _proc_cpu(pids), time.perf_counter()
        for v in viewers[3:]:
            time.sleep(gap_ms / 1000.0)  # a viewer's tap arrives after a pause (members use it to precompute)
            c0, t = _proc_cpu(pids), time.perf_counter()
            offers += pre(v)
            pre_t.append(time.perf_counter() - t)
            time.sleep(gap_ms / 1000.0)
            c1, t = _proc_cpu(pids), time.perf_counter()
            one(v)
            one_t.append(time.perf_counter() - t)
            c2 = _proc_cpu(pids)
            for k in pids:
                pre_cpu[k] += c1[k] - c0[k]
                one_cpu[k] += c2[k] - c1[k]
        load1 = os.getloadavg()[0]
        loop_c1, loop_s = _proc_cpu(pids), time.perf_counter() - loop_t0
    finally:
        fed.stop()
    loop_cpu = {k: loop_c1[k] - loop_c0[k] for k in pids}
    out: dict[str, Any] = {"processes_setup_s": round(setup_s, 1), "requests": len(pre_t), "lenders": len(LENDERS),
           "offers_per_request": round(offers / max(1, len(pre_t)), 2),
           "preapproval_p50_ms": pct(pre_t, 50), "preapproval_p99_ms": pct(pre_t, 99),
           "single_score_p50_ms": pct(one_t, 50), "single_score_p99_ms": pct(one_t, 99),
           "load_1m": [round(load0, 1), round(load1, 1)],
           "processes_cpu_ms": {"preapproval": _cpu_summary(pre_cpu, len(pre_t)),
                                "single_score": _cpu_summary(one_cpu, len(one_t)),
                                "whole_loop_per_pair": _cpu_summary(loop_cpu, len(pre_t))},
           "gap_ms": gap_ms, "loop_s": round(loop_s, 1)}
    out["ratio_preapproval_p99_to_single_p99"] = round(out["preapproval_p99_ms"] / out["single_score_p99_ms"], 2)
    out["ratio_preapproval_p50_to_single_p50"] = round(out["preapproval_p50_ms"] / out["single_score_p50_ms"], 2)
    return out


def monitoring_vs_batch(env: dict[str, Any]) -> dict[str, Any]:
    lender = LENDERS[1]
    svc = env["services"][lender]
    mon = Monitor(svc, MonitorSettings(model_id="rt"))
    n = mon.register_book()
    mon.run()  # warm (the first pass also writes the drift reference)
    t0 = time.perf_counter()
    mon.run()
    mon_s = time.perf_counter() - t0
    ids = list(env["fed"].parties[lender].to_pandas()["applicant_id"].astype(str).head(n))
    t0 = time.perf_counter()
    for _ in svc.score_table(ApplicantTable(ids, "phone")):
        pass
    batch_s = time.perf_counter() - t0
    return {"book_n": n, "monitoring_s": round(mon_s, 3), "batch_s": round(batch_s, 3),
            "ratio_monitoring_to_batch": round(mon_s / batch_s, 2)}


def monitoring_at_scale(root: Path, n: int) -> dict[str, Any]:
    """A lender store with ``n`` active borrowers (monitoring consent) and five contributors holding a
    partial logit for each (arrays, as in ``bench_scoring``); a monitoring pass against ``score_table``
    over the same ``n`` ids, in the same process."""
    from fedcore.protocol.scoring.messages import ModelSlice
    from fedcore.protocol.scoring.party import ArrayContributions, ScoringParty
    from party_node.schema import parse_schema

    rng = np.random.default_rng(9)
    home = root / "scale_lender"
    home.mkdir()
    ids = np.array([f"139{i:08d}" for i in range(n)])
    feats = ["income", "ltv", "history"]
    x = rng.normal(0, 1, (n, len(feats)))
    frame = pd.DataFrame({"phone": ids, **{f: x[:, j].round(5) for j, f in enumerate(feats)},
                          "c_scoring": 1, "c_monitoring": 1, "loan": 1})
    frame.to_csv(home / "book.csv", index=False)
    schema = parse_schema({"dataset": {"name": "book", "id_column": "phone", "id_kind": "phone",
                                       "federation_columns": feats},
                           "numeric": {f: {"missing": "reject"} for f in feats},
                           "consent": {"scoring": "c_scoring", "monitoring": "c_monitoring"},
                           "flags": {"active_loan": "loan"}})
    store = Store.open(f"sqlite:///{home / 'store.db'}")
    t0 = time.perf_counter()
    ingest_file(store, home / "book.csv", schema)
    store.install_pseudonym_key(KEY)
    setup = time.perf_counter() - t0
    sl = ModelSlice("rt", "1", "scale_lender", "book", tuple(feats), np.array([0.4, -0.3, 0.2]), np.zeros(3),
                    np.ones(3), -3.0)
    (home / "models" / "rt").mkdir(parents=True)
    (home / "models" / "rt" / "slice.json").write_text(json.dumps(sl.to_dict()))
    pseudos = KEY.pseudonymize(list(ids), "phone")
    ch = InMemoryChannel()
    for j in range(5):
        other = ModelSlice("rt", "1", f"c{j}", "d", ("f",), np.array([0.5]), np.zeros(1), np.ones(1))
        src = ArrayContributions.build([other], {"rt": (pseudos, rng.normal(0, 1, (n, 1)))})
        reg = HandlerRegistry()
        ScoringParty(src).register(reg)
        ch.add_party(f"c{j}", Role.PLATFORM if j == 0 else Role.LENDER, reg)
    ch.add_party("scale_lender", Role.LENDER, HandlerRegistry())
    svc = ScoringService(store, home, LocalGateway(ScoringCoordinator(ch), "scale_lender"),
                         ScoringSettings(model_id="rt", timeout_s=600.0, coalesce=False))
    mon = Monitor(svc, MonitorSettings(model_id="rt", chunk=svc.settings.chunk, timeout_s=600.0))
    booked = mon.register_book()
    t0 = time.perf_counter()
    for _ in svc.score_table(ApplicantTable(list(ids), "phone")):
        pass
    batch = time.perf_counter() - t0
    mon.run()  # the first pass writes the reference; the timed one compares with it
    t0 = time.perf_counter()
    rep = mon.run()
    mon_s = time.perf_counter() - t0
    store.close()
    ch.close()
    key = "1m" if n == 1_000_000 else f"{n}"
    return {"scale_book_n": booked, "scale_setup_s": round(setup, 1), f"monitoring_{key}_s": round(mon_s, 2),
            f"batch_{key}_s": round(batch, 2), "ratio_monitoring_to_batch_at_scale": round(mon_s / batch, 2),
            "scale_alerts": len(rep.alerts)}


def _alert_quality(person: np.ndarray, pd_at: Any, ext_at: Any, st: MonitorSettings, first_pass: int, weeks: int,
                   default_week: np.ndarray, kinds: tuple[str, ...] = ("pd_above", "pd_up"),
                   ) -> tuple[float, float, int, int]:
    """Weekly passes of the alert rules over the book; ``pd_at(w)``/``ext_at(w)``: the PD and the
    consortium's part per loan at week ``w``; an alert of one of ``kinds`` counts. Returns (recall,
    precision, alerted loans, defaults)."""
    prev: dict[int, dict[str, float]] = {}
    alerts: dict[int, list[int]] = {}  # loan -> weeks with an alert
    for w in range(first_pass, weeks):
        pd_, ext = pd_at(w), ext_at(w)
        for i, p in enumerate(person):
            cur = {"pd": float(pd_[i]), "loans": 0.0, "blacklist": 0.0, "external": float(ext[i])}
            if any(a.kind in kinds for a in evaluate(prev.get(i), cur, st, int(p))):
                alerts.setdefault(i, []).append(w)
            prev[i] = cur
    dw = default_week[person]
    # defaults while the book was monitored (each within 6 months of a pass)
    window = (dw >= first_pass + 5) & (dw < weeks)
    early = [i for i in np.flatnonzero(window).tolist()
             if any(dw[i] - 26 <= a <= dw[i] - 5 for a in alerts.get(int(i), []))]
    recall = len(early) / max(1, int(window.sum()))
    events = [(i, a) for i, ws in alerts.items() for a in ws]
    hits = sum(1 for i, a in events if a < dw[i] <= a + 26)
    precision = hits / max(1, len(events))
    return round(recall, 3), round(precision, 3), len(alerts), int(window.sum())


def alerts_quality(env: dict[str, Any], seed: int) -> dict[str, Any]:
    fed = env["fed"]
    ts = generate_time(fed, TimeConfig(seed=seed))
    weeks = ts.config.weeks
    loans = fed.loans
    person = loans["person_id"].to_numpy()
    logit_own = np.log(loans["pd_true"].to_numpy() / (1 - loans["pd_true"].to_numpy()))
    spend = ts.snapshots.pivot(index="person_id", columns="week", values="spend")
    active = ts.snapshots.pivot(index="person_id", columns="week", values="active_days")
    st = MonitorSettings(pd_threshold=0.25, pd_factor=2.5)
    first_pass = 17

    def ext_joint(w: int) -> np.ndarray:
        rec_s, pri_s = spend.loc[:, w - 3 : w].mean(axis=1), spend.loc[:, w - 16 : w - 4].mean(axis=1)
        rec_a, pri_a = active.loc[:, w - 3 : w].mean(axis=1), active.loc[:, w - 16 : w - 4].mean(axis=1)
        change = pd.DataFrame({"s": np.log(rec_s / pri_s), "a": np.log((rec_a + 0.5) / (pri_a + 0.5))})
        return np.asarray(-(1.6 * change["s"] + 0.8 * change["a"]).reindex(person).fillna(0.0).to_numpy())

    res = {}
    for name, ext_at in (("joint", ext_joint), ("lender_only", lambda _w: np.zeros(len(person)))):
        res[name] = _alert_quality(person, lambda w, f=ext_at: 1 / (1 + np.exp(-(logit_own + f(w)))), ext_at, st,
                                   first_pass, weeks, ts.default_week)
    return {"alert_recall": res["joint"][0], "alert_precision": res["joint"][1],
            "lender_only_alert_recall": res["lender_only"][0], "lender_only_alert_precision": res["lender_only"][1],
            "alerted_joint": res["joint"][2], "alerted_lender_only": res["lender_only"][2],
            "defaults_in_window": res["joint"][3], "loans": len(person)}


TRAIN_WEEK = 30


def alerts_trained(fed: Any, root: Path, seed: int, l2: float = 0.01) -> dict[str, Any]:
    """The same passes with the joint PD of a model *trained* with the change features: the platform
    derives them into a dataset (``snapshot derive --with behaviour``) and a vertical run trains the
    joint logistic model (lender: the application PD's logit; label: a default within 26 weeks of the
    training date; L2 penalty ``l2``: without it the weights of the two collinear change features grow
    apart and weekly noise sets off ``pd_up``) on an independent draw of the time series (seed + 100,
    week 30); the passes then score the measured series, the platform re-deriving its change features
    from its store each week.
    The PD threshold comes from the model, as in the product: the PD above which the riskiest 5% of its
    training book lie (``pd_factor`` as above)."""
    from models.metrics import auc
    from scripts.change_model import book, derive, joint_logit, platform_store, train_change_model

    t0 = time.perf_counter()
    train_ts = generate_time(fed, TimeConfig(seed=seed + 100))
    m = train_change_model(root / "train", fed, train_ts, TRAIN_WEEK, with_changes=True, horizon_weeks=26, l2=l2)
    b = book(fed, train_ts, TRAIN_WEEK, 26)
    z_train = joint_logit(m, fed, b["person"].to_numpy(), b["app_logit"].to_numpy())
    threshold = float(np.quantile(1 / (1 + np.exp(-z_train)), 0.95))
    train_s = time.perf_counter() - t0
    ts = generate_time(fed, TimeConfig(seed=seed))
    weeks, first_pass = ts.config.weeks, 17
    t0 = time.perf_counter()
    ps = platform_store(root / "passes", fed, ts, range(weeks))
    load_s = time.perf_counter() - t0
    loans = fed.loans
    person = loans["person_id"].to_numpy()
    logit_own = np.log(loans["pd_true"].to_numpy() / (1 - loans["pd_true"].to_numpy()))
    own = m.lender.partial_logit(logit_own[:, None]) + (m.lender.intercept or 0.0)  # the lender's part
    cache: dict[int, np.ndarray] = {}
    derive_s = [0.0]

    def logit_at(w: int) -> np.ndarray:
        if w not in cache:
            t = time.perf_counter()
            derive(ps, ts, w)  # the weekly re-derive; the scoring tables refresh from the store
            derive_s[0] += time.perf_counter() - t
            cache[w] = joint_logit(m, fed, person, logit_own, ps)
        return cache[w]

    st = MonitorSettings(pd_threshold=threshold, pd_factor=2.5)
    rec, prec, alerted, n = _alert_quality(person, lambda w: 1 / (1 + np.exp(-logit_at(w))),
                                           lambda w: logit_at(w) - own, st, first_pass, weeks, ts.default_week)
    above = _alert_quality(person, lambda w: 1 / (1 + np.exp(-logit_at(w))), lambda w: logit_at(w) - own, st,
                           first_pass, weeks, ts.default_week, kinds=("pd_above",))
    ps.close()
    m.close()
    return {"alert_recall_trained": rec, "alert_precision_trained": prec, "alerted_trained": alerted,
            "trained_model": {"train_week": TRAIN_WEEK, "train_series_seed": seed + 100, "l2": l2,
                              "platform_features": list(m.platform.features),
                              "validation_auc": round(m.result.metrics["book"]["auc"], 3),
                              "train_book_auc": round(auc(b["label"].to_numpy(), z_train), 3),
                              "pd_threshold": round(threshold, 4), "train_s": round(train_s, 1),
                              "pd_above_only": {"recall": above[0], "precision": above[1], "alerted": above[2]},
                              "snapshot_load_s": round(load_s, 1),
                              "derive_s_per_pass": round(derive_s[0] / max(1, weeks - first_pass), 2)},
            "defaults_in_window_trained": n}


def alerts_all(fed: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return {**alerts_quality({"fed": fed}, seed=1), **alerts_trained(fed, Path(tmp), seed=1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=20_000)
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--gap-ms", type=float, default=0.0,
                    help="pause before each request over processes (arrivals spaced as in a live stream)")
    ap.add_argument("--book", type=int, default=1_000_000, help="monitoring-at-scale book size (0: skip)")
    ap.add_argument("--transport", choices=("processes", "inprocess"), default="processes",
                    help="latency over real node processes with mTLS, or on the in-memory channel only")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "realtime.json")
    ap.add_argument("--no-alerts", action="store_true", help="skip the alert figures (their keys in --out are kept)")
    ap.add_argument("--alerts-only", action="store_true",
                    help="only the alert figures (no latency or monitoring runs); other keys in --out are kept")
    args = ap.parse_args()
    if args.alerts_only:
        q = alerts_all(generate(SynthConfig(people=args.people, seed=3)))
        _merge(args.out, q)
        print(json.dumps(q, indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        env = build(Path(tmp), args.people)
        setup_s = time.perf_counter() - t0
        inproc = latency(env, args.requests, args.gap_ms)
        if args.transport == "processes":
            lat = latency_processes(Path(tmp), args.people, args.requests, args.gap_ms)
            lat["in_process"] = inproc
            transport = ("real processes: coordinator, platform and five lender nodes on 127.0.0.1, gRPC with "
                         "mutual TLS, each request through the calling application's local HTTP API; "
                         "monitoring and alert figures in process")
        else:
            lat = inproc
            transport = "in-process channel (no network); CKKS, stores, pricing and alert rules real"
        mb = monitoring_vs_batch(env)
        if args.book:
            mb.update(monitoring_at_scale(Path(tmp), args.book))
        for s in env["stores"].values():
            s.close()
        env["channel"].close()
    q = {} if args.no_alerts else alerts_all(env["fed"])
    out = {"machine": {"cores": os.cpu_count(), "python": platform.python_version()}, "people": args.people,
           "transport": transport, "setup_s": round(setup_s, 1), **lat, **mb, **q}
    _merge(args.out, out)
    print(json.dumps(out, indent=2))


def _merge(path: Path, out: dict[str, Any]) -> None:
    """Write ``out`` into ``path``; keys this run did not measure (e.g. the 1M monitoring figures with
    --book 0, or everything but the alerts with --alerts-only) stay."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**old, **out}, indent=2) + "\n")


if __name__ == "__main__":
    main()
