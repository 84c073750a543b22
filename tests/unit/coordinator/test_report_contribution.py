"""Evaluation report and contribution accounting over the in-memory channel (three synthetic lenders,
HE-secured horizontal logistic regression): histogram metrics agree with row-level ones, the PNGs and
HTML are written, and leave-one-party-out lifts agree with a centralized reference within 0.01 AUC."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

from coordinator.contribution import horizontal_job_kwargs
from coordinator.report import evaluation_text, render_report, report_job, summarize
from coordinator.runs import RunContext
from coordinator.state import StateStore
from fedcore.protocol.horizontal.coordinator import HorizontalJob
from fedcore.protocol.horizontal.env import stratified_split
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role
from models import histograms as hm
from models import metrics as rowm
from party_node.reporting import score_splits
from scripts.synthetic import fit_logistic
from tests.unit.coordinator.dashboard_fed import LENDERS3, lender_arrays, party_registry, provider

TRAIN = {"kind": "horizontal", "parties": list(LENDERS3), "model": "logistic", "rounds": 15, "secure": "he",
         "local_epochs": 3, "lr": 0.02, "batch_size": 256, "min_parties": 2}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("report")
    data = lender_arrays()
    ch = InMemoryChannel()
    for name in LENDERS3:
        ch.add_party(name, Role.LENDER, party_registry(name, *data[name], root / name))
    state = StateStore(root / "state.db")
    run_id = "train-test-0001"
    state.create_run(run_id, "train", TRAIN, actor="admin")
    kw = horizontal_job_kwargs(TRAIN)
    record = HorizontalJob(ch, root / "runs", list(LENDERS3), run_id=run_id, min_parties=2, **kw).run()
    state.update_run(run_id, "succeeded", record.to_dict())
    rc = RunContext(ch, "report-test-0001", {"model_run": run_id, "contribution": True}, lambda m: None,
                    root / "runs", state)
    result = report_job(rc)
    return {"root": root, "data": data, "result": result, "run_id": run_id}


def test_histogram_metrics_match_row_level(setup: dict[str, Any]) -> None:
    root, data, run_id = setup["root"], setup["data"], setup["run_id"]
    ys, ps = [], []
    for name in LENDERS3:
        _, _, pva, yva = score_splits(root / name / "models", provider(*data[name]), run_id, "1")
        ys.append(yva)
        ps.append(pva)
    y, p = np.concatenate(ys), np.concatenate(ps)
    s = summarize(setup["result"])
    assert s["n_val"] == len(y)
    assert abs(s["auc"] - rowm.auc(y, p)) < 2e-3
    assert abs(s["ks"] - rowm.ks(y, p)) < 1e-2
    assert abs(s["bad_rate_at_80"] - rowm.bad_rate_at_approval(y, p, 0.8)) < 2e-3
    assert s["stability_train_vs_scoring"] is None  # no scoring traffic yet: the report says so
    assert s["auc"] > 0.6


def test_report_files(setup: dict[str, Any]) -> None:
    out = setup["root"] / "out"
    page = render_report(setup["result"], out)
    text = page.read_text()
    for png in ("roc.png", "ks.png", "score_distribution.png", "bad_rate_by_band.png", "contribution.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, png
        assert png in text
    assert "No scoring traffic" in text
    assert all(name in text for name in LENDERS3)


def _central_auc_br(data: dict[str, Any], train_on: list[str], eval_on: list[str]) -> tuple[float, float]:
    """Centralized reference: pool the coalition's training splits, fit logistic regression to
    convergence (Newton-Raphson), evaluate on the pooled validation splits of ``eval_on``."""
    split = {n: stratified_split(data[n][1], 0.2, 0) for n in data}
    Xtr = np.concatenate([data[n][0][split[n][0]] for n in train_on])
    ytr = np.concatenate([data[n][1][split[n][0]] for n in train_on])
    Xva = np.concatenate([data[n][0][split[n][1]] for n in eval_on])
    yva = np.concatenate([data[n][1][split[n][1]] for n in eval_on])
    w = fit_logistic(Xtr, ytr.astype(np.float64))
    p = 1.0 / (1.0 + np.exp(-(w[0] + Xva @ w[1:])))
    return rowm.auc(yva, p), rowm.bad_rate_at_approval(yva, p, 0.8)


def test_contribution_agrees_with_centralized_reference(setup: dict[str, Any]) -> None:
    contrib = {c["party"]: c for c in setup["result"]["contribution"]}
    assert set(contrib) == set(LENDERS3)
    for party in LENDERS3:
        others = [n for n in LENDERS3 if n != party]
        a_full, b_full = _central_auc_br(setup["data"], list(LENDERS3), others)
        a_loo, b_loo = _central_auc_br(setup["data"], others, others)
        c = contrib[party]
        assert abs(c["auc_lift"] - (a_full - a_loo)) < 0.01, (party, c, a_full - a_loo)
        assert abs(c["bad_rate_lift"] - (b_loo - b_full)) < 0.02, (party, c, b_loo - b_full)


def test_histogram_auc_exact_on_binned_scores() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = (np.floor(np.clip(rng.normal(0.3 + 0.2 * y, 0.15), 0, 0.999) * 100) + 0.5) / 100  # bin centres
    h = hm.histogram(y, p, 100)
    assert abs(hm.auc(h) - rowm.auc(y, p)) < 1e-9
    assert abs(hm.bad_rate_at_approval(h, 0.8) - rowm.bad_rate_at_approval(y, p, 0.8)) < 1e-9
    merged = hm.merge([hm.histogram(y[:200], p[:200], 100), hm.histogram(y[200:], p[200:], 100)])
    assert np.array_equal(merged.bad, h.bad)
    assert hm.population_stability(h.total, h.total) == pytest.approx(0.0)
    assert sum(b["count"] for b in hm.bands(h, 10)) == 500


def test_report_job_refuses_non_training_run(tmp_path: Path) -> None:
    from fedcore.errors import InvalidInput

    state = StateStore(tmp_path / "s.db")
    state.create_run("psi-1", "psi", {}, actor="admin")
    rc = RunContext(InMemoryChannel(), "r", {"model_run": "psi-1"}, lambda m: None, tmp_path, state)
    with pytest.raises(InvalidInput):
        report_job(rc)


def test_no_reported_bin_isolates_fewer_than_ten_subjects(setup: dict[str, Any]) -> None:
    # What leaves a party for the report: 1,000-bin histograms whose sparse bins were merged at the party.
    from fedcore.protocol.messages import Task

    root, data, run_id = setup["root"], setup["data"], setup["run_id"]
    name = LENDERS3[0]
    ch = InMemoryChannel()
    ch.add_party(name, Role.LENDER, party_registry(name, *data[name], root / name))
    reply = ch.run(name, Task(hm.REPORT_TASK, {"model_run": run_id, "version": "1"})).params
    for split in ("val", "train"):
        h = hm.Hist.from_params(reply[split])
        assert h.bins == hm.DEFAULT_BINS and h.n == reply[f"n_{split}"]
        nonempty = h.total[h.total > 0]
        assert nonempty.min() >= hm.MIN_BIN_COUNT, split
        # a lone defaulter never has a bin to itself
        assert not np.any((h.bad > 0) & (h.total < hm.MIN_BIN_COUNT))


def test_coarsen_keeps_totals_and_order() -> None:
    rng = np.random.default_rng(3)
    p = rng.beta(1, 8, 500)
    y = (rng.random(500) < p).astype(int)
    raw = hm.histogram(y, p, 1000)
    assert (raw.total[raw.total > 0] < hm.MIN_BIN_COUNT).any()  # the raw one has sparse bins
    h = hm.coarsen(raw)
    assert h.n_bad == raw.n_bad and h.n_good == raw.n_good
    assert h.total[h.total > 0].min() >= hm.MIN_BIN_COUNT
    assert abs(hm.auc(h) - hm.auc(raw)) < 0.03
    tiny = hm.coarsen(hm.histogram([1, 0, 0], [0.1, 0.5, 0.9], 1000))
    assert np.count_nonzero(tiny.total) == 1 and tiny.n == 3


def test_evaluate_prints_the_pooled_held_out_metrics_of_the_report(setup: dict[str, Any]) -> None:
    s = summarize(setup["result"])
    text = evaluation_text(setup["result"])
    assert f"held-out rows {int(s['n_val'])}" in text
    assert f"AUC   {s['ci']['auc']['estimate']:.4f}" in text
    assert f"{s['ci']['auc']['estimate']:.4f}" == f"{s['auc']:.4f}"  # one AUC: the pooled one
    assert all(f"  {name}: AUC" in text for name in LENDERS3)
