"""Vertical LR on the quick start's synthetic federation (five lenders + the platform, in memory):
the per-epoch validation loss is the exact log-loss (never negative; equal to the log-loss of the
best model's slices), margins do not run away at a large learning rate, and the model is as good and
as well calibrated as scikit-learn's logistic regression on the pooled rows; the monitoring threshold
derived from the model leaves about the riskiest 5% of validation applicants above it."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcore.protocol.vertical.coordinator import VerticalConfig, VerticalResult, run_vertical
from fedcore.protocol.vertical.numerics import _standardize, score_slices, split_rows
from fedcore.protocol.vertical.session import Table
from tests.unit.protocol.test_vertical_training import MemorySource, federation


@lru_cache(maxsize=1)
def synthetic() -> tuple[list[str], dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per lender (the quick start's five): its PSI-aligned rows' lender features, labels, platform features."""
    from scripts.synthetic import (
        LENDER_CATEGORICAL,
        LENDER_LEVELS,
        LENDER_NUMERIC,
        LENDERS,
        PLATFORM,
        PLATFORM_CATEGORICAL,
        PLATFORM_NUMERIC,
        SynthConfig,
        generate,
    )

    fed = generate(SynthConfig(people=20_000, seed=7))
    apps = pd.concat([fed.parties[n].to_pandas().assign(_lender=n) for n in LENDERS], ignore_index=True)
    beh = fed.parties[PLATFORM].to_pandas().set_index("user_id")
    apps = apps[apps["applicant_id"].isin(beh.index)].reset_index(drop=True)  # each lender's PSI with tiange
    beh = beh.loc[apps["applicant_id"]].reset_index(drop=True)
    apps["monthly_income"] = apps["monthly_income"].fillna(apps["monthly_income"].mean())
    xl = [apps[c].to_numpy(float) for c in LENDER_NUMERIC]
    xl += [(apps[c] == v).to_numpy(float) for c in LENDER_CATEGORICAL for v in LENDER_LEVELS[c][1:]]
    cat = beh[PLATFORM_CATEGORICAL[0]]
    xp = [beh[c].to_numpy(float) for c in PLATFORM_NUMERIC] + [(cat == v).to_numpy(float)
                                                              for v in sorted(set(cat))[1:]]
    XL, XP, y = np.column_stack(xl), np.column_stack(xp), apps["defaulted"].to_numpy(np.int8)
    who = apps["_lender"].to_numpy()
    return (list(LENDERS), {n: XL[who == n] for n in LENDERS}, {n: y[who == n] for n in LENDERS},
            {n: XP[who == n] for n in LENDERS})


def train(tmp: Path, run_id: str, cfg: VerticalConfig) -> tuple[VerticalResult, dict[str, np.ndarray]]:
    """Train; returns the result and, per lender, (validation z of the best model, validation y)."""
    lenders, XL, y, XP = synthetic()
    srcs = {n: MemorySource({f"psi-{n}": Table(XL[n], [f"l{j}" for j in range(XL[n].shape[1])], "loans", y[n])})
            for n in lenders}
    srcs["tiange"] = MemorySource({f"psi-{n}": Table(XP[n], [f"p{j}" for j in range(XP[n].shape[1])], "beh")
                                   for n in lenders})
    ch, _ = federation(srcs, "tiange", tmp)
    res = run_vertical(ch, run_id, lenders, "tiange", {n: f"psi-{n}" for n in lenders}, cfg, workdir=tmp / "coord")
    plat = json.loads((tmp / "tiange" / "models" / run_id / "slice.json").read_text())
    out = {}
    for i, n in enumerate(lenders):
        sl = json.loads((tmp / n / "models" / run_id / "slice.json").read_text())
        _, val = split_rows(len(y[n]), cfg.val_fraction, cfg.seed, i)
        out[n] = np.stack([score_slices([sl, plat], [XL[n][val], XP[n][val]]), y[n][val].astype(float)])
    return res, out


def log_loss(z: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


# The quick start trains 12 epochs with patience 3 (batch 512, lr 0.05); on this data it stops after epoch 7
# and keeps epoch 4. Its first six epochs keep the same model, and the last epoch is still not the best one,
# so the slices the parties hold must be the best epoch's, not the last's (asserted below).
QUICKSTART = VerticalConfig(epochs=6, batch_size=512, lr=0.05, val_fraction=0.2, patience=3)


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, VerticalResult, dict[str, np.ndarray]]:
    tmp = tmp_path_factory.mktemp("vq")
    res, val = train(tmp, "vq", QUICKSTART)
    return tmp, res, val


def test_the_validation_loss_is_the_exact_log_loss(quickstart_run):
    _tmp, res, val = quickstart_run
    losses = [h["val_loss"] for h in res.history]
    assert all(v > 0 for v in losses), losses
    zy = np.concatenate(list(val.values()), axis=1)
    assert res.best_epoch < res.history[-1]["epoch"], res.history  # kept: not the last epoch's model
    best = next(h for h in res.history if h["epoch"] == res.best_epoch)
    assert best["val_loss"] == pytest.approx(log_loss(zy[0], zy[1]), abs=1e-4)  # of the slices the run kept


def test_quality_and_calibration_match_scikit_learn_on_the_pooled_rows(quickstart_run):
    from sklearn.linear_model import LogisticRegression

    from models.metrics import auc

    _tmp, _res, val = quickstart_run
    lenders, XL, y, XP = synthetic()
    tr = [split_rows(len(y[n]), QUICKSTART.val_fraction, QUICKSTART.seed, i) for i, n in enumerate(lenders)]
    X = {n: np.hstack([XL[n], XP[n]]) for n in lenders}
    xtr = np.vstack([X[n][t] for n, (t, _) in zip(lenders, tr, strict=True)])
    ytr = np.concatenate([y[n][t] for n, (t, _) in zip(lenders, tr, strict=True)])
    xva = np.vstack([X[n][v] for n, (_, v) in zip(lenders, tr, strict=True)])
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-12
    sk = LogisticRegression(max_iter=5000).fit(_standardize(xtr, mu, sd), ytr)
    z_sk = sk.decision_function(_standardize(xva, mu, sd))
    zy = np.concatenate([val[n] for n in lenders], axis=1)
    z, yv = zy
    assert log_loss(z, yv) <= log_loss(z_sk, yv) + 0.01, (log_loss(z, yv), log_loss(z_sk, yv))
    assert auc(yv, z) >= auc(yv, z_sk) - 0.01
    pd_ = 1 / (1 + np.exp(-z))
    assert abs(pd_.mean() - yv.mean()) < 0.015, (pd_.mean(), yv.mean())  # calibrated in the mean
    assert np.abs(z).max() < 3 * np.abs(z_sk).max()  # no runaway margins (scikit-learn's are the yardstick)


def test_monitoring_threshold_from_the_model_leaves_the_riskiest_share_above_it(quickstart_run):
    from party_node.monitoring import threshold_from_model

    tmp, _res, val = quickstart_run
    lenders = synthetic()[0]
    z, _ = val[lenders[0]]
    pd_ = 1 / (1 + np.exp(-z))
    t, src = threshold_from_model(tmp / lenders[0] / "models" / "vq", 0.05)
    assert src == "validation_hist.json"
    assert 0.05 < t < 0.9, t  # the quick start printed "PD > 0.999" for a runaway model
    assert np.mean(pd_ > t) == pytest.approx(0.05, abs=0.02)


def test_a_large_learning_rate_does_not_run_away(tmp_path):
    """The quick start used to train at lr 0.5: the uncapped u^2 term of the residual pushed margins to
    hundreds (validation PDs of 0 and 1) while the second-order loss went negative and was taken as best."""
    res, val = train(tmp_path, "hot", VerticalConfig(epochs=6, batch_size=512, lr=0.5, val_fraction=0.2,
                                                     patience=6))
    assert all(h["val_loss"] > 0 for h in res.history)
    zy = np.concatenate(list(val.values()), axis=1)
    assert np.abs(zy[0]).max() < 40
    assert log_loss(zy[0], zy[1]) < 0.3
