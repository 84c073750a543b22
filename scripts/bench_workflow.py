#!/usr/bin/env python
"""Credit-risk workflow benchmark (issue 14), each figure against a baseline computed in the same run.

Writes ``benchmarks/results/workflow.json``:

- ``evaluate_auc_abs_err``: ``party evaluate``'s horizontal path (:func:`party_node.evaluate.
  horizontal_probabilities` and :func:`models.metrics.evaluate`) on FATE's held-out ``homo_test`` for a
  model trained by the three FATE homo lenders (in-process channel, HE, logistic), minus scikit-learn's
  ``roc_auc_score`` on the same predictions;
- ``default_bands_approval_rate_abs_err``: the quick start's synthetic federation; bands set by
  :func:`party_node.model_bands.bands_from_histogram` (default targets: 80% approved) from validation
  scores, applied to held-out applicants; |approval rate - 0.8|. The baseline is the old fixed bands
  (``fixed_bands_approval_rate``). The scores come from a central logistic regression on the same
  features as the joint model (a stand-in for it: the bands only see the score distribution);
- ``woe_iv_abs_err``: copied from ``benchmarks/results/binning.json`` (``scripts/bench_binning.py``:
  federated IV vs the central IV on FATE's hetero split);
- ``synthetic_categorical_auc``: the joint model (vertical logistic under CKKS, in-process) on the
  synthetic federation's lender and platform features, categorical text columns one-hot encoded as a
  node encodes them for the joint model (:func:`party_node.vertical.onehot_table`), on its validation
  rows; ``synthetic_categorical_central_onehot_auc``: scikit-learn's logistic regression on the same
  rows with those columns one-hot (the baseline); ``synthetic_categorical_central_codes_auc``:
  scikit-learn with the codes, which separates the encoding's cost from the federation's;
- ``synthetic_categorical_woe_auc``: the same joint model with ``--encoding woe``: every party's columns
  as the WOE of its optimal bins from the federated binning protocol (in-process, the five synthetic
  lenders and the platform, on the joint run's training rows only); ``synthetic_categorical_woe_gap``:
  the one-hot baseline minus it; ``synthetic_categorical_central_woe_auc``: scikit-learn on the same WOE columns.

Usage: ``scripts/bench_workflow.py``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

RESULTS = ROOT / "benchmarks" / "results"
FEATURES = [f"x{i}" for i in range(23)]


def evaluate_abs_err() -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    from fedcore.protocol.horizontal.coordinator import HorizontalJob
    from fedcore.protocol.horizontal.env import csv_data_provider
    from fedcore.protocol.horizontal.party import register_training_handlers
    from fedcore.protocol.inmemory import InMemoryChannel
    from fedcore.protocol.messages import Role
    from fedcore.protocol.sealing import make_identities
    from fedcore.protocol.tasks import HandlerRegistry
    from models.metrics import evaluate
    from party_node.evaluate import horizontal_probabilities
    from party_node.scoring_batch import Applicant
    from party_node.store import Store
    from scripts.fate_data import fate_data_dir

    data = fate_data_dir()
    files = {"guest": "homo_guest", "host1": "homo_host_1", "host2": "homo_host_2"}
    with tempfile.TemporaryDirectory() as tmp:
        ch = InMemoryChannel()
        ids = make_identities(list(files))
        for name, f in files.items():
            reg = HandlerRegistry()
            register_training_handlers(reg, csv_data_provider(data / f"default_credit_{f}.csv"), party=name,
                                       identity=ids[name], model_dir=Path(tmp) / name)
            ch.add_party(name, Role.LENDER, reg)
        job = HorizontalJob(ch, Path(tmp) / "coord", list(files), model="logistic", rounds=4, secure="he")
        rec = job.run()
        test = pd.read_csv(data / "default_credit_homo_test.csv")
        apps = [Applicant(str(i), "opaque", dict(zip(FEATURES, row, strict=True)))
                for i, row in zip(test["id"], test[FEATURES].to_numpy().tolist(), strict=True)]
        with Store.open(f"sqlite:///{tmp}/s.db") as store:
            p = horizontal_probabilities(store, Path(tmp) / "guest", job.run_id, None, apps)
        y = test["y"].to_numpy()
        ours = evaluate(y, p)["auc"]
        ref = float(roc_auc_score(y, p))
        ch.close()
    return {"evaluate_auc": round(ours, 6), "evaluate_auc_sklearn": round(ref, 6),
            "evaluate_auc_abs_err": abs(ours - ref), "evaluate_rows": len(y),
            "horizontal_best_round": rec.best_round or 0}


def bands_error(people: int = 60_000, target: float = 0.8) -> dict[str, float]:
    from models import histograms as hm
    from models.scorecard import Scorecard
    from party_node.model_bands import bands_from_histogram
    from party_node.scoring_batch import DEFAULT_BANDS
    from scripts.synthetic import SynthConfig, _design, _sigmoid, fit_logistic, generate

    fed = generate(SynthConfig(people=people, seed=7))
    x, y, person = _design(fed, True)
    rng = np.random.default_rng(3)
    part = rng.integers(0, 3, len(fed.people))[person]  # by person: train / validation / held-out
    w = fit_logistic(x[part == 0], y[part == 0])
    p = _sigmoid(w[0] + x @ w[1:])
    sc = Scorecard()
    bands = bands_from_histogram(hm.histogram(y[part == 1], p[part == 1]), sc)
    pts = sc.points(p[part == 2])

    def approval(bs: tuple) -> float:
        approve = [b.min_points for b in bs if b.decision == "approve"]
        return float((pts >= min(approve)).mean())

    ours = approval(bands)
    fixed = approval(DEFAULT_BANDS)
    return {"default_bands_approval_rate": round(ours, 5), "default_bands_approval_target": target,
            "default_bands_approval_rate_abs_err": round(abs(ours - target), 5),
            "fixed_bands_approval_rate": round(fixed, 5),
            "fixed_bands_approval_rate_abs_err": round(abs(fixed - target), 5),
            "synthetic_default_rate": round(float(y.mean()), 5), "synthetic_heldout_loans": int((part == 2).sum())}


class _Source:
    def __init__(self, tables: dict) -> None:
        self.tables = tables

    def vertical_table(self, psi_run: str, dataset: str | None, *, labels: bool) -> object:
        return self.tables[psi_run]


def _codes(values: np.ndarray) -> np.ndarray:
    """Vocabulary codes as ingest stores them: levels in order of first appearance, from 1."""
    _, first, inv = np.unique(values, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return (rank[inv] + 1).astype(np.float64)


def _federated_woe(apps: pd.DataFrame, beh: pd.DataFrame, y: np.ndarray, lcols: list[str], pcols: list[str],
                   train: np.ndarray) -> tuple[Any, Any]:
    """WOE encoders of the lenders' and the platform's features from an in-process federated binning run
    on the ``train`` rows only, so the validation AUC is out of sample for the WOE too (lenders split as
    the synthetic federation deals them; optimal monotone bins, the default)."""
    keep = np.zeros(len(y), dtype=bool)
    keep[train] = True
    apps, beh, y = apps[keep].reset_index(drop=True), beh[keep].reset_index(drop=True), y[keep]
    from fedcore.protocol.binning.coordinator import BinningSettings, run_binning
    from fedcore.protocol.binning.party import LenderBinning, LenderData, PlatformBinning, PlatformData
    from fedcore.protocol.inmemory import InMemoryChannel
    from fedcore.protocol.messages import Role
    from fedcore.protocol.sealing import make_identities
    from fedcore.protocol.tasks import HandlerRegistry
    from models.encoding import WoeEncoder
    from scripts.synthetic import LENDER_CATEGORICAL, PLATFORM_CATEGORICAL

    lenders = sorted(apps["_lender"].unique())
    lkinds = {c: "categorical" if c in LENDER_CATEGORICAL else "numeric" for c in lcols}
    pkinds = {c: "categorical" if c in PLATFORM_CATEGORICAL else "numeric" for c in pcols}
    ids = make_identities([*lenders, "tiange"])
    ch = InMemoryChannel()
    nodes: dict[str, LenderBinning | PlatformBinning] = {}
    for n in lenders:
        rows = (apps["_lender"] == n).to_numpy()
        nodes[n] = LenderBinning(n, LenderData(apps.loc[rows, lcols].reset_index(drop=True), y[rows].astype(np.int64),
                                               lkinds), ids[n])
    nodes["tiange"] = PlatformBinning("tiange", PlatformData(
        {n: beh.loc[(apps["_lender"] == n).to_numpy(), pcols].reset_index(drop=True) for n in lenders}, pkinds),
        ids["tiange"])
    for n, party in nodes.items():
        reg = HandlerRegistry()
        party.register(reg)
        ch.add_party(n, Role.PLATFORM if n == "tiange" else Role.LENDER, reg)
    run_binning(ch, lenders, "tiange", BinningSettings(), run_id="woe")
    ch.close()

    def encoder(party: str, cols: list[str]) -> WoeEncoder:
        detail = nodes[party].detail("woe")
        return WoeEncoder(tuple(detail[c].optimal.binning for c in cols),
                          tuple(tuple(float(w) for w in detail[c].optimal.table.woe) for c in cols))

    return encoder(lenders[0], lcols), encoder("tiange", pcols)


def categorical_gap(people: int = 60_000, epochs: int = 12) -> dict[str, float]:
    """The joint model (vertical logistic under CKKS, in-process) on the synthetic federation's features
    with its categorical text columns as the store's codes, against scikit-learn's logistic regression
    on the same rows with those columns one-hot encoded, both scored on the joint run's validation rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from fedcore.crypto.pki import CertificateAuthority
    from fedcore.protocol.inmemory import InMemoryChannel
    from fedcore.protocol.messages import Role
    from fedcore.protocol.sealing import make_identities
    from fedcore.protocol.tasks import HandlerRegistry
    from fedcore.protocol.vertical.coordinator import VerticalConfig, run_vertical
    from fedcore.protocol.vertical.numerics import split_rows
    from fedcore.protocol.vertical.party import VerticalParty
    from fedcore.protocol.vertical.session import Table
    from models.metrics import evaluate
    from party_node.vertical import onehot_levels
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

    fed = generate(SynthConfig(people=people, seed=11))
    apps = pd.concat([fed.parties[n].to_pandas().assign(_lender=n) for n in LENDERS], ignore_index=True)
    beh = fed.parties[PLATFORM].to_pandas().set_index("user_id")
    apps = apps[apps["applicant_id"].isin(beh.index)].reset_index(drop=True)  # the PSI intersection
    beh = beh.loc[apps["applicant_id"]].reset_index(drop=True)
    apps["monthly_income"] = apps["monthly_income"].fillna(apps["monthly_income"].mean())
    y = apps["defaulted"].to_numpy(np.int8)
    # lenders declare their vocabularies (a fixed vocabulary is stored in declared order, from code 1)
    xl = np.column_stack([apps[c].to_numpy(float) for c in LENDER_NUMERIC]
                         + [apps[c].map({v: i + 1.0 for i, v in enumerate(LENDER_LEVELS[c])}).to_numpy(float)
                            for c in LENDER_CATEGORICAL])
    xp = np.column_stack([beh[c].to_numpy(float) for c in PLATFORM_NUMERIC]
                         + [_codes(beh[c].to_numpy()) for c in PLATFORM_CATEGORICAL])
    lcols, pcols = [*LENDER_NUMERIC, *LENDER_CATEGORICAL], [*PLATFORM_NUMERIC, *PLATFORM_CATEGORICAL]

    def encoded(x: np.ndarray, names: list[str], n_cat: int, y_: np.ndarray | None) -> Table:
        # as party_node.vertical.onehot_table does at a node (levels from the whole column)
        cols: list[np.ndarray] = []
        out: list[str] = []
        spec: list[tuple[int, float | None]] = []
        for j, c in enumerate(names):
            if j < len(names) - n_cat:
                cols.append(x[:, j])
                out.append(c)
                spec.append((j, None))
                continue
            # a lender: every declared level but the first; the platform: levels from its data
            levels = ([float(k) for k in range(2, len(LENDER_LEVELS[c]) + 1)] if y_ is not None
                      else onehot_levels(x[:, j]))
            for code in levels:
                cols.append((x[:, j] == code).astype(float))
                out.append(f"{c}={code:g}")
                spec.append((j, code))
        return Table(np.column_stack(cols), out, "d", y_, base_features=names, columns=spec)

    cfg = VerticalConfig(epochs=epochs, batch_size=2048, lr=0.05, val_fraction=0.3, patience=epochs)

    def joint_auc(lender: Table, plat: Table) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            ca = CertificateAuthority.create()
            ch = InMemoryChannel()
            for name, src in {"bank": _Source({"psi": lender}), "tiange": _Source({"psi": plat})}.items():
                reg = HandlerRegistry()
                VerticalParty(name, src, Path(tmp) / name / "v", Path(tmp) / name / "m", metrics=evaluate,  # type: ignore[arg-type]
                              identity=make_identities([name], ca)[name]).register(reg)
                ch.add_party(name, Role.PLATFORM if name == "tiange" else Role.LENDER, reg)
            res = run_vertical(ch, "cat", ["bank"], "tiange", {"bank": "psi"}, cfg, workdir=Path(tmp) / "c")
            ch.close()
        return float(res.metrics["bank"]["auc"])

    joint = joint_auc(encoded(xl, lcols, len(LENDER_CATEGORICAL), y),
                      encoded(xp, pcols, len(PLATFORM_CATEGORICAL), None))
    # WOE: every party's columns as the WOE of its optimal bins from the federated binning protocol, run
    # in-process across the five lenders (their pooled WOE) and the platform (its bins' WOE from counts
    # pooled over the lenders), as `coordinator binning` and `train --encoding woe` do at nodes; binned on
    # the joint run's training rows only
    train, val = split_rows(len(y), cfg.val_fraction, cfg.seed, 0)  # the joint run's split
    enc_l, enc_p = _federated_woe(apps, beh, y, lcols, pcols, train)
    woe_joint = joint_auc(Table(enc_l.transform(apps[lcols]), lcols, "d", y),
                          Table(enc_p.transform(beh[pcols]), pcols, "d"))
    num = np.column_stack([apps[c].to_numpy(float) for c in LENDER_NUMERIC]
                          + [beh[c].to_numpy(float) for c in PLATFORM_NUMERIC])
    num = (num - num[train].mean(axis=0)) / (num[train].std(axis=0) + 1e-12)
    onehot = pd.get_dummies(pd.concat([apps[list(LENDER_CATEGORICAL)], beh[list(PLATFORM_CATEGORICAL)]], axis=1),
                            drop_first=True).to_numpy(float)
    xc = np.column_stack([num, onehot])
    lr = LogisticRegression(max_iter=2000).fit(xc[train], y[train])
    central = float(roc_auc_score(y[val], lr.predict_proba(xc[val])[:, 1]))
    codes = np.column_stack([num, (xl[:, -len(LENDER_CATEGORICAL):]), xp[:, -1:]])
    lr2 = LogisticRegression(max_iter=2000).fit(codes[train], y[train])
    central_codes = float(roc_auc_score(y[val], lr2.predict_proba(codes[val])[:, 1]))
    xw = np.column_stack([enc_l.transform(apps[lcols]), enc_p.transform(beh[pcols])])
    lr3 = LogisticRegression(max_iter=2000).fit(xw[train], y[train])
    central_woe = float(roc_auc_score(y[val], lr3.predict_proba(xw[val])[:, 1]))
    return {"synthetic_categorical_auc": round(joint, 5), "synthetic_categorical_woe_auc": round(woe_joint, 5),
            "synthetic_categorical_woe_gap": round(central - woe_joint, 5),
            "synthetic_categorical_central_woe_auc": round(central_woe, 5),
            "synthetic_categorical_central_onehot_auc": round(central, 5),
            "synthetic_categorical_gap": round(central - joint, 5),
            "synthetic_categorical_central_codes_auc": round(central_codes, 5),
            "synthetic_categorical_rows": len(y), "synthetic_categorical_val_rows": len(val)}


def main() -> None:
    out: dict[str, object] = {}
    binning = RESULTS / "binning.json"
    if binning.is_file():
        out["woe_iv_abs_err"] = json.loads(binning.read_text())["woe_iv_abs_err"]
        out["woe_iv_source"] = "benchmarks/results/binning.json (scripts/bench_binning.py)"
    out.update(bands_error())
    out.update(evaluate_abs_err())
    out.update(categorical_gap())
    out["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out["machine"] = f"{platform.machine()} cores={os.cpu_count()}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "workflow.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(json.dumps(out, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
