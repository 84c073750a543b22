"""Benchmark of the gradient-boosted tree learner (:mod:`models.gbdt`) on the real FATE credit data.

``python scripts/bench_trees.py [--out benchmarks/results/trees.json]``

- hetero (one lender's 13 features + the platform's 10, the same 30,000 ids), 5-fold AUC: the lender
  alone (our learner and xgboost on its 13 features), our learner on all 23 (central: the ceiling a
  hybrid federation can reach), xgboost on all 23 with the same parameters (30 trees, depth 3, 32 bins,
  learning rate 0.3, lambda 1, min child weight 1);
- homo (three lenders x 8,000 rows, evaluated on the held-out homo_test): each lender alone, our learner
  on the pooled rows, xgboost pooled (100 trees, otherwise the same parameters);
- fit time of our learner over xgboost's (both single-threaded) on the same folds;
- hybrid trees (:mod:`fedcore.protocol.trees`, the protocol logic over the in-memory channel, every
  message serialized) on the same hetero folds: ``hetero_fate_auc``, also with the lender's rows spread
  over three lenders, beside the layered central learner (the trees the protocol grows, in one place).

Results are merged into ``benchmarks/results/trees.json`` (other tree benchmarks add their own keys).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xgboost as xgb  # noqa: E402
from sklearn.model_selection import StratifiedKFold  # noqa: E402

from fedcore.protocol.horizontal_trees.coordinator import HorizontalTreesConfig, run_horizontal_trees  # noqa: E402
from fedcore.protocol.horizontal_trees.party import LenderHTreeParty  # noqa: E402
from fedcore.protocol.inmemory import InMemoryChannel  # noqa: E402
from fedcore.protocol.messages import Role  # noqa: E402
from fedcore.protocol.sealing import make_identities  # noqa: E402
from fedcore.protocol.tasks import HandlerRegistry  # noqa: E402
from fedcore.protocol.trees.coordinator import HybridTreesConfig, run_hybrid_trees  # noqa: E402
from fedcore.protocol.trees.messages import LENDERS_OWNER  # noqa: E402
from fedcore.protocol.trees.party import LenderTreeParty, PlatformTreeParty  # noqa: E402
from models.gbdt import GBDTModel, GBDTParams, train  # noqa: E402
from models.metrics import auc  # noqa: E402
from scripts.fate_data import FATE_FILES, fate_data_dir  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "trees.json"
LR, LAMBDA, MCW, BINS, DEPTH = 0.3, 1.0, 1.0, 32, 3


def _read(layout: str, party: str) -> pd.DataFrame:
    return pd.read_csv(fate_data_dir() / FATE_FILES[layout][party][0])


def _ours(x: np.ndarray, y: np.ndarray, xt: np.ndarray, n_trees: int) -> tuple[np.ndarray, float]:
    names = [f"f{j}" for j in range(x.shape[1])]
    params = GBDTParams(
        n_trees=n_trees, max_depth=DEPTH, learning_rate=LR, max_bins=BINS, reg_lambda=LAMBDA, min_child_weight=MCW
    )
    t0 = time.perf_counter()
    model = train({n: x[:, j] for j, n in enumerate(names)}, y, params)
    fit_s = time.perf_counter() - t0
    return model.predict_proba({n: xt[:, j] for j, n in enumerate(names)}), fit_s


def _xgb(x: np.ndarray, y: np.ndarray, xt: np.ndarray, n_trees: int) -> tuple[np.ndarray, float]:
    clf = xgb.XGBClassifier(
        n_estimators=n_trees, max_depth=DEPTH, learning_rate=LR, max_bin=BINS, reg_lambda=LAMBDA,
        min_child_weight=MCW, tree_method="hist", n_jobs=1, random_state=0,
    )  # fmt: skip
    t0 = time.perf_counter()
    clf.fit(x, y)
    fit_s = time.perf_counter() - t0
    return clf.predict_proba(xt)[:, 1], fit_s


def hetero(n_trees: int = 30, folds: int = 5) -> dict[str, Any]:
    guest = _read("hetero", "guest")
    host = _read("hetero", "host")
    data = guest.merge(host, on="id", suffixes=("_lender", "_platform"))
    lender_cols = [c for c in data.columns if c.endswith("_lender")]
    all_cols = lender_cols + [c for c in data.columns if c.endswith("_platform")]
    y = data["y"].to_numpy(dtype=np.float64)
    aucs: dict[str, list[float]] = {"lender_ours": [], "lender_xgb": [], "central_ours": [], "central_xgb": []}
    times = {"ours": 0.0, "xgb": 0.0}
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=0).split(np.zeros(len(y)), y):
        for cols, tag in ((lender_cols, "lender"), (all_cols, "central")):
            x = data[cols].to_numpy(dtype=np.float64)
            for fn, name in ((_ours, "ours"), (_xgb, "xgb")):
                p, fit_s = fn(x[tr], y[tr], x[te], n_trees)
                aucs[f"{tag}_{name}"].append(auc(y[te], p))
                if tag == "central":
                    times[name] += fit_s
    mean = {k: round(float(np.mean(v)), 4) for k, v in aucs.items()}
    return {
        "hetero_lender_alone_auc": mean["lender_ours"],
        "hetero_lender_alone_xgb_auc": mean["lender_xgb"],
        "hetero_central_auc": mean["central_ours"],
        "hetero_central_xgb_auc": mean["central_xgb"],
        "hetero_central_minus_xgb_auc": round(mean["central_ours"] - mean["central_xgb"], 4),
        "hetero_fit_time_ratio_ours_over_xgb": round(times["ours"] / times["xgb"], 2),
        "hetero_fold_aucs": {k: [round(a, 4) for a in v] for k, v in aucs.items()},
    }


def _params(n_trees: int, **kw: Any) -> GBDTParams:
    return GBDTParams(
        n_trees=n_trees, max_depth=DEPTH, learning_rate=LR, max_bins=BINS, reg_lambda=LAMBDA, min_child_weight=MCW, **kw
    )


def _hybrid(
    lender_cols: dict[str, np.ndarray],
    platform_cols: dict[str, np.ndarray],
    y: np.ndarray,
    tr: np.ndarray,
    te: np.ndarray,
    n_lenders: int,
    n_trees: int,
) -> tuple[float, float]:
    """(test AUC, fit seconds) of hybrid trees trained on rows ``tr`` spread over ``n_lenders`` lenders."""
    channel = InMemoryChannel()
    names = [f"lender{i + 1}" for i in range(n_lenders)]
    parts = np.array_split(tr, n_lenders)
    lenders: dict[str, LenderTreeParty] = {}
    ids = make_identities([*names, "platform"])
    for name, rows in zip(names, parts, strict=True):
        reg = HandlerRegistry()
        lenders[name] = LenderTreeParty(name, {c: v[rows] for c, v in lender_cols.items()}, y[rows], ids[name])
        lenders[name].register(reg)
        channel.add_party(name, Role.LENDER, reg)
    reg = HandlerRegistry()
    tables = {n: {c: v[rows] for c, v in platform_cols.items()} for n, rows in zip(names, parts, strict=True)}
    platform = PlatformTreeParty("platform", tables, ids["platform"])
    platform.register(reg)
    channel.add_party("platform", Role.PLATFORM, reg)
    cfg = HybridTreesConfig("bench", tuple(names), "platform", tuple(lender_cols), _params(n_trees))
    t0 = time.perf_counter()
    result = run_hybrid_trees(channel, cfg)
    fit_s = time.perf_counter() - t0
    channel.close()
    model = GBDTModel(
        result.owners,
        result.trees,
        result.base_score,
        {LENDERS_OWNER: lenders[names[0]].table, "platform": platform.table},
    )
    test = {c: v[te] for c, v in {**lender_cols, **platform_cols}.items()}
    return auc(y[te], model.predict_proba(test)), fit_s


def hybrid(n_trees: int = 30, folds: int = 5) -> dict[str, Any]:
    """Hybrid trees on the same stratified folds as :func:`hetero` (each fold's test ids held out)."""
    guest = _read("hetero", "guest")
    host = _read("hetero", "host")
    data = guest.merge(host, on="id", suffixes=("_lender", "_platform"))
    lender_cols = {c: data[c].to_numpy(dtype=np.float64) for c in data.columns if c.endswith("_lender")}
    platform_cols = {c: data[c].to_numpy(dtype=np.float64) for c in data.columns if c.endswith("_platform")}
    y = data["y"].to_numpy(dtype=np.float64)
    every = {**lender_cols, **platform_cols}
    owners = {**{c: LENDERS_OWNER for c in lender_cols}, **{c: "platform" for c in platform_cols}}
    layered = _params(n_trees, sticky_owners=("platform",), first_tree_owners=(LENDERS_OWNER,))
    aucs: dict[str, list[float]] = {"hybrid_1": [], "hybrid_3": [], "layered_central": []}
    fit: dict[str, float] = {"hybrid_1": 0.0, "hybrid_3": 0.0}
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=0).split(np.zeros(len(y)), y):
        for k in (1, 3):
            a, s = _hybrid(lender_cols, platform_cols, y, tr, te, k, n_trees)
            aucs[f"hybrid_{k}"].append(a)
            fit[f"hybrid_{k}"] += s / folds
        m = train({c: v[tr] for c, v in every.items()}, y[tr], layered, owners=owners)
        aucs["layered_central"].append(auc(y[te], m.predict_proba({c: v[te] for c, v in every.items()})))
    mean = {k: round(float(np.mean(v)), 4) for k, v in aucs.items()}
    return {
        "hetero_fate_auc": mean["hybrid_1"],
        "hetero_fate_auc_3_lenders": mean["hybrid_3"],
        "hetero_layered_central_auc": mean["layered_central"],
        "hetero_hybrid_fold_aucs": {k: [round(a, 4) for a in v] for k, v in aucs.items()},
        "hetero_hybrid_fit_s_in_memory": {
            "1_lender": round(fit["hybrid_1"], 2),
            "3_lenders": round(fit["hybrid_3"], 2),
        },
    }


def homo(n_trees: int = 100) -> dict[str, Any]:
    lenders = {p: _read("homo", p) for p in ("guest", "host_1", "host_2")}
    test = _read("homo", "test")
    cols = [f"x{i}" for i in range(23)]
    xt = test[cols].to_numpy(dtype=np.float64)
    yt = test["y"].to_numpy(dtype=np.float64)
    alone: dict[str, float] = {}
    for name, df in lenders.items():
        p, _ = _ours(df[cols].to_numpy(dtype=np.float64), df["y"].to_numpy(dtype=np.float64), xt, n_trees)
        alone[name] = round(auc(yt, p), 4)
    pooled = pd.concat(list(lenders.values()))
    x, y = pooled[cols].to_numpy(dtype=np.float64), pooled["y"].to_numpy(dtype=np.float64)
    p_ours, t_ours = _ours(x, y, xt, n_trees)
    p_xgb, t_xgb = _xgb(x, y, xt, n_trees)
    return {
        "homo_lender_alone_auc": alone,
        "homo_best_lender_alone_auc": max(alone.values()),
        "homo_central_auc": round(auc(yt, p_ours), 4),
        "homo_central_xgb_auc": round(auc(yt, p_xgb), 4),
        "homo_fit_time_ratio_ours_over_xgb": round(t_ours / t_xgb, 2),
    }


def _horizontal(parts: dict[str, tuple[np.ndarray, np.ndarray]], names: list[str], params: GBDTParams
                ) -> tuple[GBDTModel, Any, float]:  # fmt: skip
    """Horizontal trees (protocol logic, in-memory channel) over ``parts``: (model, result, fit seconds)."""
    ids = make_identities(list(parts))
    channel = InMemoryChannel()
    parties = {}
    for name, (x, y) in parts.items():
        reg = HandlerRegistry()
        parties[name] = LenderHTreeParty(name, {f: x[:, j] for j, f in enumerate(names)}, y, ids[name])
        parties[name].register(reg)
        channel.add_party(name, Role.LENDER, reg)
    t0 = time.perf_counter()
    res = run_horizontal_trees(channel, HorizontalTreesConfig("bench", tuple(parts), tuple(names), params))
    fit_s = time.perf_counter() - t0
    channel.close()
    model = parties[next(iter(parts))].model
    assert model is not None
    return model, res, fit_s


def horizontal(n_trees: int = 100, big_trees: int = 3) -> dict[str, Any]:
    """homo_fate_auc: horizontal trees over the three FATE homo lenders, AUC on homo_test; and the
    seconds and ciphertext bytes per tree for five lenders of 100,000 synthetic rows x 20 features."""
    cols = [f"x{i}" for i in range(23)]
    parts = {p: _read("homo", p) for p in ("guest", "host_1", "host_2")}
    data = {p: (df[cols].to_numpy(dtype=np.float64), df["y"].to_numpy(dtype=np.float64)) for p, df in parts.items()}
    test = _read("homo", "test")
    model, _, fit_s = _horizontal(data, cols, _params(n_trees))
    p_test = model.predict_proba({c: test[c].to_numpy(dtype=np.float64) for c in cols})
    return {
        "homo_fate_auc": round(auc(test["y"].to_numpy(dtype=np.float64), p_test), 4),
        "homo_fate_fit_s_per_tree_in_memory": round(fit_s / n_trees, 3),
        **horizontal_scale(big_trees),
    }


def horizontal_scale(big_trees: int = 3) -> dict[str, Any]:
    """Seconds and ciphertext bytes per horizontal tree, five lenders of 100,000 rows x 20 features."""
    rng = np.random.default_rng(0)
    big = {}
    for i in range(5):
        x = rng.normal(size=(100_000, 20))
        z = x[:, 0] - 0.5 * x[:, 1] + 0.3 * x[:, 2] * x[:, 3] - 1.5
        big[f"lender{i + 1}"] = (x, (rng.random(100_000) < 1 / (1 + np.exp(-z))).astype(np.float64))
    load0 = os.getloadavg()[0]
    cpu = []  # process CPU seconds (all five lenders' threads and the coordinator) of 1 and big_trees trees
    for n_trees in (1, big_trees):
        c0 = time.process_time()
        _, big_res, big_s = _horizontal(
            big, [f"f{j}" for j in range(20)], GBDTParams(n_trees=n_trees, max_depth=5, max_bins=BINS)
        )
        cpu.append(time.process_time() - c0)
    load = os.getloadavg()[0]
    return {
        "horizontal_tree_s_5x100k": round((big_s - big_res.setup_s) / big_trees, 3),
        "horizontal_tree_cpu_s_5x100k": round((cpu[1] - cpu[0]) / (big_trees - 1), 3),
        "horizontal_5x100k_load_average": [round(load0, 2), round(load, 2)],
        "horizontal_setup_s_5x100k": round(big_res.setup_s, 3),
        "horizontal_bytes_per_lender_per_tree_5x100k": int(big_res.bytes_per_lender),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--hetero-trees", type=int, default=30)
    ap.add_argument("--homo-trees", type=int, default=100)
    ap.add_argument("--only", choices=("all", "horizontal", "horizontal-scale"), default="all",
                    help="horizontal: only the horizontal-tree measurements; horizontal-scale: only the five "
                    "lenders x 100,000 rows timing; merged into the existing results")  # fmt: skip
    a = ap.parse_args(argv)
    doc: dict[str, Any] = json.loads(a.out.read_text()) if a.out.is_file() else {}
    if a.only == "all":
        doc.update(hetero(a.hetero_trees))
        doc.update(homo(a.homo_trees))
        doc.update(hybrid(a.hetero_trees))
    if a.only == "horizontal-scale":
        doc = json.loads(a.out.read_text()) if a.out.is_file() else {}
        doc.update(horizontal_scale())
        a.out.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
        return
    doc.update(horizontal(a.homo_trees))
    doc["learner_setup"] = {
        "max_depth": DEPTH, "max_bins": BINS, "learning_rate": LR, "reg_lambda": LAMBDA, "min_child_weight": MCW,
        "hetero_trees": a.hetero_trees, "homo_trees": a.homo_trees, "hetero_folds": 5,
        "xgboost": xgb.__version__, "xgboost_threads": 1,
        "machine": f"{platform.machine()} cores={os.cpu_count()}",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "note": "central = every feature in one place; hetero AUCs are 5-fold stratified means over the 30,000 "
        "aligned ids (the same folds for every model; each fold's test ids held out); hetero_fate_auc = hybrid "
        "trees (protocol logic, in-memory channel, every message serialized; the lender's rows as 1 or 3 "
        "lenders); layered = first tree lender-only and platform subtrees platform-only, the trees the hybrid "
        "protocol grows; homo AUCs on homo_test; homo_fate_auc = horizontal trees (protocol logic, in-memory "
        "channel, CKKS histogram sums) over the three homo lenders; horizontal_tree_s_5x100k = seconds per "
        "tree (depth 5, after the one-off keys and pooled bins: horizontal_setup_s) for five lenders of 100,000 "
        "synthetic rows x 20 features, all parties in one process (2 cores); horizontal_tree_cpu_s_5x100k = "
        "that process's CPU seconds per tree (every lender and the coordinator), steady under load",
    }  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
