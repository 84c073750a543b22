"""Decision bands set from the model's validation scores: the target approval rates hold on fresh
applicants from the same distribution (a 6%-default portfolio is not 40% declined), a bad-rate cap
tightens the approve tiers, and fixed bands in scoring.json still win."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedcore.errors import InvalidInput
from models import histograms as hm
from models.scorecard import Scorecard
from party_node.model_bands import bands_from_histogram, model_bands
from party_node.scoring_batch import ScoringSettings


def portfolio(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(0.8, 12.0, n)  # mean about 6%
    return (rng.random(n) < p).astype(int), p


def decide(bands, points: np.ndarray) -> np.ndarray:
    out = np.full(len(points), "decline", dtype=object)
    for b in reversed(bands):
        out[points >= b.min_points] = b.decision + b.rate_tier
    return out


def test_bands_from_validation_scores_approve_the_target_share_of_new_applicants() -> None:
    y, p = portfolio(20_000, 1)
    assert 0.04 < y.mean() < 0.08
    sc = Scorecard()
    bands = bands_from_histogram(hm.histogram(y, p), sc)
    _, fresh = portfolio(20_000, 2)
    d = decide(bands, sc.points(fresh))
    approved = np.isin(d, ["approveA", "approveB"]).mean()
    assert abs(approved - 0.8) < 0.02 and abs((d == "approveA").mean() - 0.5) < 0.02
    assert abs((d == "decline-").mean() - 0.1) < 0.02
    capped = bands_from_histogram(hm.histogram(y, p), sc, max_bad_rate=0.03)
    d2 = decide(capped, sc.points(p))
    ok = np.isin(d2, ["approveA", "approveB"])
    assert y[ok].mean() <= 0.031 and ok.mean() < approved
    with pytest.raises(InvalidInput, match="increase"):
        bands_from_histogram(hm.histogram(y, p), sc, ((0.8, "approve", "A"), (0.5, "approve", "B")))


def test_model_bands_read_the_kept_histogram_and_fixed_bands_win(tmp_path: Path) -> None:
    y, p = portfolio(5000, 3)
    (tmp_path / "m1").mkdir()
    (tmp_path / "m1" / "validation_hist.json").write_text(json.dumps({"val": hm.histogram(y, p).to_params(),
                                                                      "n_val": 5000}))
    got = model_bands(tmp_path, "m1", Scorecard())
    assert got is not None and [b.rate_tier for b in got] == ["A", "B", "C", "-"]
    assert model_bands(tmp_path, "m2", Scorecard()) is None
    fixed = ScoringSettings.from_mapping({"bands": [{"min_points": 600, "decision": "approve"}]})
    assert fixed.bands_from_model is False
    assert ScoringSettings.from_mapping({"pdo": 30}).bands_from_model is True
