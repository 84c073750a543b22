"""Benchmark horizontal federated training on the FATE homo split (three lenders, 8,000 rows each).

Runs the production protocol (:class:`fedcore.protocol.horizontal.coordinator.HorizontalJob`, Flower FedAvg,
CKKS-secured aggregation) over the in-memory party channel and writes
``benchmarks/results/horizontal.json``:

- ``fate_homo_lr_auc`` / ``fate_homo_mlp_auc``: the federated model (decrypted at a party) on
  ``homo_test``;
- ``best_local_only_auc``: the best lender training alone (same train split, its own scaler);
- ``plain_round_s`` / ``he_round_s``: median seconds of a round (train + federated evaluation) of the
  MLP with one local epoch, plain and HE, in the same process with the same configuration;
- ``synthetic_federated_auc`` / ``synthetic_centralized_auc``: on the synthetic federation when
  ``scripts.synthetic`` provides it (null with a reason otherwise).

Usage: ``python scripts/bench_horizontal.py [--data DIR] [--out FILE] [--rounds N]``. About 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fedcore.protocol.horizontal.coordinator import HorizontalJob, RoundReport  # noqa: E402
from fedcore.protocol.horizontal.env import PartyTrainingEnv, csv_data_provider  # noqa: E402
from fedcore.protocol.horizontal.party import register_training_handlers  # noqa: E402
from fedcore.protocol.inmemory import InMemoryChannel  # noqa: E402
from fedcore.protocol.messages import Role  # noqa: E402
from fedcore.protocol.sealing import make_identities  # noqa: E402
from fedcore.protocol.tasks import HandlerRegistry  # noqa: E402
from models.metrics import evaluate  # noqa: E402
from models.nets import build_model, set_weights  # noqa: E402
from models.train import fit_scaler, predict_proba, train_local  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "fate"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "horizontal.json"
FILES = {"guest": "homo_guest", "host1": "homo_host_1", "host2": "homo_host_2"}
FEATURES = [f"x{i}" for i in range(23)]


def federation(data: Path) -> tuple[InMemoryChannel, dict[str, PartyTrainingEnv]]:
    ch = InMemoryChannel()
    envs = {}
    ids = make_identities(list(FILES))
    for name, f in FILES.items():
        reg = HandlerRegistry()
        envs[name] = register_training_handlers(reg, csv_data_provider(data / f"default_credit_{f}.csv"), party=name,
                                                identity=ids[name])
        ch.add_party(name, Role.LENDER, reg)
    return ch, envs


def test_auc(env: PartyTrainingEnv, job: HorizontalJob, X: np.ndarray, y: np.ndarray) -> float:
    p = job.spec.params
    m = build_model(p.model, X.shape[1], **p.model_kwargs)  # type: ignore[arg-type]
    set_weights(m, env.saved_models[(job.run_id, job.spec.version)])
    return float(evaluate(y, predict_proba(m, env.scaler(job.run_id).transform(X)))["auc"])


def run(
    data: Path, ckdir: Path, model: str, secure: str, rounds: int, X: np.ndarray, y: np.ndarray, **kw: Any
) -> dict[str, Any]:
    ch, envs = federation(data)
    reports: list[RoundReport] = []
    job = HorizontalJob(
        ch, ckdir, list(FILES), model=model, rounds=rounds, secure=secure, min_parties=2, on_round=reports.append, **kw
    )
    t0 = time.perf_counter()
    rec = job.run()
    total = time.perf_counter() - t0
    ch.close()
    secs = [r.seconds for r in reports]
    return {
        "model": model,
        "secure": secure,
        "rounds": rounds,
        "params": {k: v for k, v in job.spec.params.to_config().items() if k != "fc-run"},
        "test_auc": test_auc(envs["guest"], job, X, y),
        "val_auc_per_round": [r.evaluate.get("val-auc") for r in reports],
        "val_ks_per_round": [r.evaluate.get("val-ks") for r in reports],
        "round_s": secs,
        "median_round_s": statistics.median(secs),
        "total_s": total,
        "val_metrics": rec.metrics,
    }


def local_only(data: Path, X: np.ndarray, y: np.ndarray, val_fraction: float) -> dict[str, dict[str, float]]:
    """Each lender alone on the same training split the federated run used (its own scaler)."""
    import torch

    out: dict[str, dict[str, float]] = {}
    for name, f in FILES.items():
        Xtr, ytr, _, _, _ = csv_data_provider(data / f"default_credit_{f}.csv")(
            {"fc-val-fraction": val_fraction, "fc-seed": 0}
        )
        sc = fit_scaler(Xtr, clip=5.0)
        out[name] = {}
        for model, cfg in (("logistic", {"lr": 1e-2, "epochs": 10}), ("mlp", {"lr": 3e-3, "epochs": 10})):
            torch.manual_seed(0)
            m = build_model(model, Xtr.shape[1])  # type: ignore[arg-type]
            train_local(m, sc.transform(Xtr), ytr, epochs=int(cfg["epochs"]), lr=float(cfg["lr"]), batch_size=256)
            out[name][model] = float(evaluate(y, predict_proba(m, sc.transform(X)))["auc"])
    return out


def synthetic(
    reason_out: dict[str, Any], rounds: int = 20, local_epochs: int = 3, people: int = 60_000
) -> tuple[float | None, float | None]:
    """Five non-IID lenders of :mod:`scripts.synthetic` (lender application features only, no lender id
    columns); federated logistic (HE) vs the same trainer on the pooled rows; test = held-out people."""
    try:
        import scripts.synthetic as synth
    except ImportError:
        reason_out["synthetic_reason"] = "scripts/synthetic.py (synthetic federation generator) is missing"
        return None, None
    import torch

    from fedcore.protocol.horizontal.env import stratified_split

    fed = synth.generate(synth.SynthConfig(people=people, seed=0))
    x, yf, person = synth._design(fed, with_platform=False)
    n_app = 13  # numeric + vehicle type + city tiers; the lender one-hot columns are dropped
    x = x[:, :n_app]
    y = yf.astype(np.int64)
    sizes = [fed.parties[name].num_rows for name in synth.LENDERS]
    lender = np.repeat(np.arange(len(sizes)), sizes)
    test = np.random.default_rng(1).random(len(fed.people)) < 0.3
    is_test = test[person]
    ch = InMemoryChannel()
    envs: dict[str, PartyTrainingEnv] = {}
    ids = make_identities(list(synth.LENDERS))
    for i, name in enumerate(synth.LENDERS):
        rows = np.flatnonzero((lender == i) & ~is_test)
        xs, ys = x[rows], y[rows]

        def provide(params: Any, xs: np.ndarray = xs, ys: np.ndarray = ys) -> Any:
            tr, va = stratified_split(ys, float(params.get("fc-val-fraction", 0.2)), int(params.get("fc-seed", 0)))
            return xs[tr], ys[tr], xs[va], ys[va], [f"f{j}" for j in range(n_app)]

        reg = HandlerRegistry()
        envs[name] = register_training_handlers(reg, provide, party=name, identity=ids[name])
        ch.add_party(name, Role.LENDER, reg)
    with TemporaryDirectory() as tmp:
        job = HorizontalJob(
            ch,
            Path(tmp),
            list(synth.LENDERS),
            model="logistic",
            rounds=rounds,
            secure="he",
            min_parties=3,
            local_epochs=local_epochs,
        )
        job.run()
    ch.close()
    fed_auc = test_auc(envs[synth.LENDERS[0]], job, x[is_test], y[is_test])
    # Centralized: the same trainer, config and data (the pooled training splits of all lenders).
    parts = [envs[n].run(job.run_id).data for n in synth.LENDERS]
    xtr = np.concatenate([p[0] for p in parts if p is not None])
    ytr = np.concatenate([p[1] for p in parts if p is not None])
    sc = fit_scaler(xtr, clip=5.0)
    torch.manual_seed(0)
    m = build_model("logistic", n_app)
    train_local(m, sc.transform(xtr), ytr, epochs=rounds * local_epochs, lr=1e-2, batch_size=256)
    central = float(evaluate(y[is_test], predict_proba(m, sc.transform(x[is_test])))["auc"])
    reason_out["synthetic_setup"] = (
        f"scripts.synthetic people={people}, five lenders' application features (13 columns), logistic; "
        f"{int((~is_test).sum())} training loans split by lender, {int(is_test.sum())} test loans of held-out "
        f"people; federated: {rounds} rounds x {local_epochs} local epochs; centralized: same trainer on the "
        f"pooled training splits for {rounds * local_epochs} epochs"
    )
    return fed_auc, central


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--timing-rounds", type=int, default=6)
    args = ap.parse_args(argv)
    import logging

    logging.getLogger("flwr").setLevel(logging.WARNING)
    te = pd.read_csv(args.data / "default_credit_homo_test.csv")
    X, y = te[FEATURES].to_numpy(np.float64), te["y"].to_numpy(np.int64)
    t0 = time.perf_counter()
    result: dict[str, Any] = {}
    with TemporaryDirectory() as tmp:
        ck = Path(tmp)
        lr = run(args.data, ck, "logistic", "he", args.rounds, X, y)
        print(f"federated logistic (HE) test AUC {lr['test_auc']:.4f}")
        mlp = run(args.data, ck, "mlp", "he", args.rounds, X, y)
        print(f"federated MLP (HE) test AUC {mlp['test_auc']:.4f}")
        plain = run(args.data, ck, "mlp", "none", args.timing_rounds, X, y, local_epochs=1)
        he = run(args.data, ck, "mlp", "he", args.timing_rounds, X, y, local_epochs=1)
        print(f"round: plain {plain['median_round_s']:.3f} s, HE {he['median_round_s']:.3f} s")
    local = local_only(args.data, X, y, val_fraction=0.2)
    best_local = max(v for d in local.values() for v in d.values())
    print(f"best local-only AUC {best_local:.4f}")
    reasons: dict[str, Any] = {}
    syn_fed, syn_central = synthetic(reasons)
    print(f"synthetic federated AUC {syn_fed} centralized {syn_central}")
    result.update(
        {
            "fate_homo_lr_auc": lr["test_auc"],
            "fate_homo_mlp_auc": mlp["test_auc"],
            "best_local_only_auc": best_local,
            "synthetic_federated_auc": syn_fed,
            "synthetic_centralized_auc": syn_central,
            **reasons,
            "he_round_s": he["median_round_s"],
            "plain_round_s": plain["median_round_s"],
            "he_over_plain": he["median_round_s"] / plain["median_round_s"],
            "round_timing_note": (
                "median round (train + federated evaluation) of the MLP (64,32) with 1 local epoch, three "
                "parties over the in-memory channel (threads in one process, 2 shared cores); the same "
                "configuration with secure='none' and secure='he'"
            ),
            "local_only_auc": local,
            "runs": {"logistic_he": lr, "mlp_he": mlp, "timing_plain": plain, "timing_he": he},
            "environment": {
                "python": platform.python_version(),
                "cpu_count": os.cpu_count(),
                "seconds": round(time.perf_counter() - t0, 1),
            },
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
