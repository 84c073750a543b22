"""Population stability of served scores: joint scoring keeps a histogram of the scores it served,
the lender's report reply carries it, and the report compares it with the validation scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from coordinator.report import render_report, summarize
from fedcore.protocol.vertical.party import VALIDATION_HIST
from models import histograms as hm
from party_node.reporting import _joint_reply
from party_node.served import SERVED_HIST, record_served, served_hist


def _joint_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / "v-run"
    folder.mkdir(parents=True)
    (folder / "slice.json").write_text("{}")
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.1).astype(int)
    p = np.clip(rng.beta(2, 12, 2000) + 0.1 * y, 0, 1)
    (folder / VALIDATION_HIST).write_text(json.dumps({"val": hm.histogram(y, p).to_params(), "n_val": 2000}))
    return folder


def test_served_scores_accumulate_and_missing_folder_records_nothing(tmp_path: Path) -> None:
    folder = _joint_folder(tmp_path)
    record_served(folder, np.array([0.05, 0.05, 0.5]))
    record_served(folder, np.array([0.5, np.nan]))
    h = served_hist(folder)
    assert h is not None and h.n == 4
    assert h.total[hm.histogram(None, [0.5]).total.argmax()] == 2
    record_served(tmp_path / "nowhere", np.array([0.1]))
    assert not (tmp_path / "nowhere").exists()


def test_report_shows_stability_of_served_scores_against_validation(tmp_path: Path) -> None:
    folder = _joint_folder(tmp_path)
    assert _joint_reply(folder, "v-run", 20).params["scoring"] is None  # nothing served yet
    rng = np.random.default_rng(1)
    same = np.clip(rng.beta(2, 12, 3000), 0, 1)
    record_served(folder, same)
    reply = _joint_reply(folder, "v-run", 20)
    stable = summarize({"per_party": {"bank": reply.params}})
    assert stable["scoring_rows"] == 3000 and stable["stability_val_vs_scoring"] < 0.1
    (folder / SERVED_HIST).unlink()
    record_served(folder, np.clip(rng.beta(6, 6, 3000), 0, 1))  # a shifted population
    shifted = summarize({"per_party": {"bank": _joint_reply(folder, "v-run", 20).params}})
    assert shifted["stability_val_vs_scoring"] > 0.25
    result = {"per_party": {"bank": _joint_reply(folder, "v-run", 20).params}, "model_run": "v-run", "version": "1",
              "bins": hm.DEFAULT_BINS}
    page = render_report(result, tmp_path / "r")
    html = page.read_text()
    assert "scores served with this model (3000 scores)" in html
    assert f"{shifted['stability_val_vs_scoring']:.4f}" in html


def test_the_joint_reply_coarsens_the_validation_histogram_like_every_histogram_that_leaves(tmp_path: Path) -> None:
    folder = _joint_folder(tmp_path)
    stored = hm.Hist.from_params(json.loads((folder / VALIDATION_HIST).read_text())["val"])
    assert 0 < stored.total[stored.total > 0].min() < hm.MIN_BIN_COUNT  # thin bins in the kept histogram
    sent = hm.Hist.from_params(_joint_reply(folder, "v-run", 20).params["val"])
    assert sent.n == stored.n and sent.n_bad == stored.n_bad
    assert sent.total[sent.total > 0].min() >= hm.MIN_BIN_COUNT
