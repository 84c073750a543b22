"""Horizontal training across real processes on the FATE homo split: a party killed mid-run, and the
coordinator killed mid-run then resumed."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fedcore.wire.convert import params_from_struct
from scripts.fate_data import write_fate_federations
from scripts.localfed import LocalFederation

pytestmark = pytest.mark.slow

LENDERS = {"yixin": "guest", "meili": "host_1", "cango": "host_2"}


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    files = write_fate_federations(root / "fate")["homo"]
    f = LocalFederation(root / "fed", {name: "lender" for name in LENDERS}, heartbeat_s=0.5)
    f.setup()
    for name, split in LENDERS.items():
        csv, schema = files[split]
        f.ingest(name, csv, schema)
    f.start()
    try:  # a federation that never came up is stopped too
        f.wait_online(timeout=300)
        yield f
    finally:
        f.stop()


def run_training(fed: LocalFederation, params: dict, on_message=None) -> tuple[str, object]:
    events = []
    with fed.admin() as admin:
        for ev in admin.start_run("train", params):
            events.append(ev)
            if on_message is not None and not ev.done:
                on_message(ev.message)
    return events[0].run_id, events[-1]


def test_party_killed_mid_run_and_the_run_completes_with_the_rest(fed):
    killed = threading.Event()
    seen: list[str] = []

    def on_message(msg: str) -> None:
        seen.append(msg)
        if msg.startswith("round 3/") and not killed.is_set():
            fed.kill("cango")
            killed.set()

    params = {"parties": list(LENDERS), "model": "mlp", "rounds": 8, "secure": "he", "min_parties": 2,
              "local_epochs": 1}
    try:
        _, last = run_training(fed, params, on_message)
    finally:
        fed.start_party("cango")
    assert killed.is_set(), f"no round 3 seen; run ended {last.status}: {last.message}; messages {seen}"
    assert last.status == "succeeded", last.message
    result = params_from_struct(last.result)
    assert result["parties"] == ["meili", "yixin"]
    assert [len(h["parties"]) for h in result["history"]][:2] == [3, 3]
    assert all(len(h["parties"]) == 2 for h in result["history"][4:])
    assert result["metrics"]["val_auc"] > 0.7
    # the run record (and so `coordinator runs` and the dashboard) says who dropped out, in which round
    (gone,) = result["dropped"]
    assert gone["party"] == "cango" and gone["round"] in (3, 4) and gone["at"] > 0
    out = fed.cli("coordinator", "runs", "--home", str(fed.coordinator_home)).stdout
    assert f"cango (round {int(gone['round'])}, " in out
    fed.wait_online(timeout=300)


def test_coordinator_killed_mid_run_then_resumed_matches_an_uninterrupted_run(fed):
    fed.wait_online(timeout=300)
    params = {"parties": list(LENDERS), "model": "logistic", "rounds": 8, "secure": "he", "seed": 3}
    _, clean = run_training(fed, params)
    assert clean.status == "succeeded", clean.message
    auc_clean = params_from_struct(clean.result)["metrics"]["val_auc"]

    state: dict[str, object] = {}

    def run_and_die() -> None:
        try:
            with fed.admin() as admin:
                for ev in admin.start_run("train", params):
                    state["run_id"] = ev.run_id
                    if ev.message.startswith("round 4/"):
                        fed.kill("coordinator")
        except Exception as exc:  # the stream dies with the coordinator
            state["error"] = exc

    t = threading.Thread(target=run_and_die)
    t.start()
    t.join(timeout=120)
    assert "error" in state and state.get("run_id")
    fed.start_coordinator()
    fed.wait_online(timeout=300)
    runs = {r.run_id: r.status for r in fed.admin().list_runs()}
    assert runs[state["run_id"]] == "interrupted"
    out = fed.cli("coordinator", "resume", str(state["run_id"]), "--home", str(fed.coordinator_home)).stdout
    assert "round 5/8" in out and "round 1/8" not in out
    with fed.admin() as admin:
        info = {r.run_id: r for r in admin.list_runs()}[state["run_id"]]
    assert info.status == "succeeded"
    auc_resumed = params_from_struct(info.result)["metrics"]["val_auc"]
    assert abs(auc_resumed - auc_clean) <= 0.002, (auc_resumed, auc_clean)
    assert Path(fed.party_home("yixin") / "models" / str(state["run_id"])).exists()


def test_models_lists_registered_versions_with_data_hashes(fed):
    out = fed.cli("coordinator", "models", "--home", str(fed.coordinator_home)).stdout
    lines = [ln for ln in out.splitlines()[1:] if ln.strip()]
    assert len(lines) >= 2  # the successful runs above
    assert all("train" in ln and "yixin:" in ln for ln in lines)
    versions = [ln.split()[0] for ln in lines]
    assert versions == sorted(versions, key=int) and len(set(versions)) == len(versions)


def test_report_of_a_trained_model_writes_non_empty_pngs_and_html(fed, tmp_path):
    fed.wait_online(timeout=300)
    run_id, last = run_training(fed, {"parties": list(LENDERS), "model": "logistic", "rounds": 3, "secure": "he"})
    assert last.status == "succeeded", last.message
    out = tmp_path / "report"
    fed.cli("coordinator", "report", run_id, "--out", str(out), "--no-contribution",
            "--home", str(fed.coordinator_home))
    pngs = sorted(out.glob("*.png"))
    assert {p.stem for p in pngs} >= {"roc", "ks", "score_distribution", "bad_rate_by_band"}
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    html = (out / "report.html").read_text()
    assert "roc.png" in html and run_id in html
