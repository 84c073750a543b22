"""Centralized, local-only and scikit-learn baselines on the FATE homo split of the UCI credit data.

Trains on default_credit_homo_{guest,host_1,host_2}.csv (24,000 rows, 23 features), tests on
default_credit_homo_test.csv (6,000 rows), and writes benchmarks/results/baselines.json:

- ``central_logistic_auc`` / ``central_mlp_auc``: the fedcredit trainer (:mod:`models.train`) on all
  training rows (mean over seeds; per-seed values and full metrics alongside);
- ``local_only_auc``: each lender training on its own file only (its own scaler too);
- ``fedavg_sim_logistic_auc`` / ``fedavg_sim_mlp_auc``: plain (unencrypted, in-process) FedAvg over
  the three files with the same trainer: the configuration the federated issue should start from;
- ``sklearn_lr_auc`` / ``sklearn_hgb_auc``: scikit-learn defaults for reference (dev dependency, used
  only here).

Usage: ``python scripts/baselines.py [--data DIR] [--out FILE] [--seeds N]``. About 30 s on one core.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.metrics import evaluate  # noqa: E402
from models.nets import build_model, get_weights, set_weights  # noqa: E402
from models.train import Scaler, fit_scaler, predict_proba, train_local  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fate"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "baselines.json"
TRAIN_FILES = ("homo_guest", "homo_host_1", "homo_host_2")
TEST_FILE = "homo_test"
FEATURES = [f"x{i}" for i in range(23)]

# Standardise on the training rows, then clip to +-5 std (amount columns reach 50-70 std).
SCALER_CLIP = 5.0

CONFIGS: dict[str, dict[str, Any]] = {
    "logistic": {
        "model": "logistic",
        "model_kw": {},
        "optimizer": "adam",
        "lr": 1e-2,
        "batch_size": 256,
        "epochs": 10,
    },
    # (64, 32) on 23 features has 3,649 weights: one CKKS ciphertext at N=8192 (4,096 slots).
    "mlp": {
        "model": "mlp",
        "model_kw": {"hidden": [64, 32], "dropout": 0.1},
        "optimizer": "adam",
        "lr": 3e-3,
        "batch_size": 256,
        "epochs": 10,
    },
}

# FedAvg simulation: weighted average of the three lenders' weights after `local_epochs` each round.
FEDAVG: dict[str, dict[str, Any]] = {
    "logistic": {"rounds": 10, "local_epochs": 1},
    "mlp": {"rounds": 10, "local_epochs": 2},
}


def load(data_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    df = pd.read_csv(data_dir / f"default_credit_{name}.csv")
    return df[FEATURES].to_numpy(dtype=np.float64), df["y"].to_numpy(dtype=np.int64)


def make_model(cfg: dict[str, Any], seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    kw = dict(cfg["model_kw"])
    if "hidden" in kw:
        kw["hidden"] = tuple(kw["hidden"])
    return build_model(cfg["model"], len(FEATURES), **kw)


def fit_eval(
    cfg: dict[str, Any], X: np.ndarray, y: np.ndarray, Xte: np.ndarray, yte: np.ndarray, seed: int
) -> dict[str, float]:
    model = make_model(cfg, seed)
    stats = train_local(
        model,
        X,
        y,
        epochs=cfg["epochs"],
        batch_size=cfg["batch_size"],
        lr=cfg["lr"],
        optimizer=cfg["optimizer"],
        seed=seed,
    )
    out = evaluate(yte, predict_proba(model, Xte))
    out["train_loss"] = stats.loss
    out["train_seconds"] = stats.seconds
    return out


def fedavg(
    cfg: dict[str, Any],
    fed: dict[str, Any],
    parts: Sequence[tuple[np.ndarray, np.ndarray]],
    Xte: np.ndarray,
    yte: np.ndarray,
    seed: int,
) -> dict[str, Any]:
    global_model = make_model(cfg, seed)
    gw = get_weights(global_model)
    curve: list[float] = []
    for r in range(fed["rounds"]):
        updates: list[list[np.ndarray]] = []
        counts: list[int] = []
        for i, (X, y) in enumerate(parts):
            local = make_model(cfg, seed)
            set_weights(local, gw)
            st = train_local(
                local,
                X,
                y,
                epochs=fed["local_epochs"],
                batch_size=cfg["batch_size"],
                lr=cfg["lr"],
                optimizer=cfg["optimizer"],
                seed=seed * 1000 + r * 10 + i,
            )
            updates.append(get_weights(local))
            counts.append(st.n_samples)
        total = float(sum(counts))
        gw = [
            (
                np.sum([n * u[k].astype(np.float64) for n, u in zip(counts, updates, strict=True)], axis=0)
                / total
            ).astype(np.float32)
            for k in range(len(gw))
        ]
        set_weights(global_model, gw)
        curve.append(evaluate(yte, predict_proba(global_model, Xte))["auc"])
    out: dict[str, Any] = dict(evaluate(yte, predict_proba(global_model, Xte)))
    out["auc_per_round"] = curve
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    aucs = [r["auc"] for r in runs]
    return {
        "auc_mean": float(np.mean(aucs)),
        "auc_min": float(np.min(aucs)),
        "auc_per_seed": aucs,
        "ks_mean": float(np.mean([r["ks"] for r in runs])),
        "bad_rate_at_80_mean": float(np.mean([r["bad_rate_at_80"] for r in runs])),
        "runs": runs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    t0 = time.perf_counter()

    raw_parts = [load(args.data, f) for f in TRAIN_FILES]
    Xtr_raw = np.concatenate([p[0] for p in raw_parts])
    ytr = np.concatenate([p[1] for p in raw_parts])
    Xte_raw, yte = load(args.data, TEST_FILE)
    scaler = fit_scaler(Xtr_raw, clip=SCALER_CLIP)
    Xtr, Xte = scaler.transform(Xtr_raw), scaler.transform(Xte_raw)
    parts = [(scaler.transform(X), y) for X, y in raw_parts]

    result: dict[str, Any] = {
        "data": {
            "train_files": [f"default_credit_{f}.csv" for f in TRAIN_FILES],
            "test_file": f"default_credit_{TEST_FILE}.csv",
            "n_train": int(Xtr.shape[0]),
            "n_test": int(Xte.shape[0]),
            "n_features": len(FEATURES),
            "train_default_rate": float(ytr.mean()),
            "test_default_rate": float(yte.mean()),
        },
        "preprocessing": {"standardise": "fit on the training rows used", "clip_std": SCALER_CLIP},
        "configs": CONFIGS,
        "fedavg_configs": FEDAVG,
        "seeds": seeds,
    }

    # Centralized, with the fedcredit trainer.
    for key in ("logistic", "mlp"):
        s = summarise([fit_eval(CONFIGS[key], Xtr, ytr, Xte, yte, seed) for seed in seeds])
        result[f"central_{key}"] = s
        result[f"central_{key}_auc"] = s["auc_mean"]
        print(f"central {key:8s} AUC {s['auc_mean']:.4f} (min {s['auc_min']:.4f})  KS {s['ks_mean']:.4f}")

    # Local only: each lender alone, with its own scaler.
    local_auc: dict[str, dict[str, float]] = {}
    local_full: dict[str, dict[str, Any]] = {}
    for fname, (X_raw, y) in zip(TRAIN_FILES, raw_parts, strict=True):
        own = fit_scaler(X_raw, clip=SCALER_CLIP)
        local_auc[fname] = {}
        local_full[fname] = {}
        for key in ("logistic", "mlp"):
            s = summarise(
                [
                    fit_eval(CONFIGS[key], own.transform(X_raw), y, own.transform(Xte_raw), yte, sd)
                    for sd in seeds
                ]
            )
            local_auc[fname][key] = s["auc_mean"]
            local_full[fname][key] = s
            print(f"local {fname:12s} {key:8s} AUC {s['auc_mean']:.4f}")
    result["local_only_auc"] = local_auc
    result["local_only"] = local_full

    # Plain FedAvg simulation (no encryption) with the same trainer.
    for key in ("logistic", "mlp"):
        s = summarise([fedavg(CONFIGS[key], FEDAVG[key], parts, Xte, yte, seed) for seed in seeds])
        result[f"fedavg_sim_{key}"] = s
        result[f"fedavg_sim_{key}_auc"] = s["auc_mean"]
        print(f"fedavg  {key:8s} AUC {s['auc_mean']:.4f} (min {s['auc_min']:.4f})")

    # scikit-learn references (defaults, raw FATE z-scored features, as in the data README).
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(max_iter=1000).fit(Xtr_raw, ytr)
    result["sklearn_lr"] = evaluate(yte, lr.predict_proba(Xte_raw)[:, 1])
    hgb = HistGradientBoostingClassifier(random_state=0).fit(Xtr_raw, ytr)
    result["sklearn_hgb"] = evaluate(yte, hgb.predict_proba(Xte_raw)[:, 1])
    result["sklearn_lr_auc"] = result["sklearn_lr"]["auc"]
    result["sklearn_hgb_auc"] = result["sklearn_hgb"]["auc"]
    print(f"sklearn LR AUC {result['sklearn_lr_auc']:.4f}  HGB AUC {result['sklearn_hgb_auc']:.4f}")

    import sklearn

    result["environment"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "torch_threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    result["scaler"] = Scaler.to_dict(scaler)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    print(f"wrote {args.out} in {result['environment']['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
