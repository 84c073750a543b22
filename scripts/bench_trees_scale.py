"""Tree benchmarks at scale and on the synthetic federation, merged into ``benchmarks/results/trees.json``.

``python scripts/bench_trees_scale.py [--out benchmarks/results/trees.json] [--only all|scoring]``

- ``synthetic_hybrid_auc`` / ``synthetic_centralized_auc``: the synthetic car-loan federation
  (:mod:`scripts.synthetic`: five lenders + the platform), hybrid trees (each lender's own loans, the
  platform's behaviour features) against our learner on the pooled design in one place; same trees,
  same person-level test split (a person's loans all train or all test);
- the tree scoring figures: ``tree_score_p50_ms`` / ``lr_score_p50_ms`` and ``tree_batch_<n>_s`` /
  ``lr_batch_<n>_s`` (``1m`` at the default ``--score-batch 1000000``; ``_cpu_s``: the process's CPU
  seconds over the same blocks, all roles' threads): joint scoring of one applicant
  and of a batch, hybrid trees (:mod:`fedcore.protocol.scoring.trees`) against the logistic model
  (CKKS), in the same run
  (``--only scoring`` runs just these, ``--only synthetic`` just the AUCs above).

The 100,000 x 60 tree timings (processes over mutual TLS, in memory, xgboost, Paillier) are
``scripts/bench_trees_100k.py``.

The machine is shared and loaded: ratios measured in the same run are what count; the load average is
recorded beside them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from fedcore.protocol.inmemory import InMemoryChannel  # noqa: E402
from fedcore.protocol.messages import Role  # noqa: E402
from fedcore.protocol.scoring.coordinator import ScoringCoordinator  # noqa: E402
from fedcore.protocol.scoring.messages import PSEUDONYM_BYTES, ModelSlice  # noqa: E402
from fedcore.protocol.scoring.party import ArrayContributions, ScoringParty  # noqa: E402
from fedcore.protocol.scoring.requester import LocalGateway, Requester, TreeRequester  # noqa: E402
from fedcore.protocol.scoring.trees import ArrayTreeContributions, TreePlan, leaf_values  # noqa: E402
from fedcore.protocol.sealing import make_identities  # noqa: E402
from fedcore.protocol.tasks import HandlerRegistry  # noqa: E402
from fedcore.protocol.trees.coordinator import HybridTreesConfig, run_hybrid_trees  # noqa: E402
from fedcore.protocol.trees.messages import LENDERS_OWNER  # noqa: E402
from fedcore.protocol.trees.party import LenderTreeParty, PlatformTreeParty  # noqa: E402
from models.gbdt import GBDTModel, GBDTParams, train  # noqa: E402
from models.gbdt.tree import Tree  # noqa: E402
from models.metrics import auc  # noqa: E402
from party_node.scoring_batch import ScoringSettings  # noqa: E402
from scripts import synthetic  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "trees.json"
N_LENDER_COLS = 17  # synthetic._design: 10 application features, 3 city-tier and 4 lender indicators


def hybrid_fit(
    lender_cols: dict[str, np.ndarray],
    platform_cols: dict[str, np.ndarray],
    y: np.ndarray,
    parts: dict[str, np.ndarray],
    params: GBDTParams,
) -> tuple[GBDTModel, float]:
    """Hybrid trees over lenders holding rows ``parts[name]``: (model, fit seconds), in-memory channel."""
    channel = InMemoryChannel()
    names = list(parts)
    ids = make_identities([*names, "platform"])
    lenders: dict[str, LenderTreeParty] = {}
    for name, rows in parts.items():
        reg = HandlerRegistry()
        lenders[name] = LenderTreeParty(name, {c: v[rows] for c, v in lender_cols.items()}, y[rows], ids[name])
        lenders[name].register(reg)
        channel.add_party(name, Role.LENDER, reg)
    reg = HandlerRegistry()
    tables = {n: {c: v[rows] for c, v in platform_cols.items()} for n, rows in parts.items()}
    platform = PlatformTreeParty("platform", tables, ids["platform"])
    platform.register(reg)
    channel.add_party("platform", Role.PLATFORM, reg)
    cfg = HybridTreesConfig("bench", tuple(names), "platform", tuple(lender_cols), params)
    t0 = time.perf_counter()
    res = run_hybrid_trees(channel, cfg)
    fit_s = time.perf_counter() - t0
    channel.close()
    tables_ = {LENDERS_OWNER: lenders[names[0]].table, "platform": platform.table}
    return GBDTModel(res.owners, res.trees, res.base_score, tables_), fit_s


def synthetic_federation(people: int, n_trees: int) -> dict[str, Any]:
    fed = synthetic.generate(synthetic.SynthConfig(people=people, seed=0))
    x, y, person = synthetic._design(fed, with_platform=True)
    test = (np.random.default_rng(1).random(len(fed.people)) < 0.3)[person]
    lender_of = np.zeros(len(y), dtype=np.int64)
    dummies = x[:, N_LENDER_COLS - 4 : N_LENDER_COLS]
    lender_of[dummies.any(axis=1)] = 1 + dummies.argmax(axis=1)[dummies.any(axis=1)]
    lcols = {f"l{j}": x[:, j] for j in range(N_LENDER_COLS)}
    pcols = {f"p{j}": x[:, j] for j in range(N_LENDER_COLS, x.shape[1])}
    tr = np.flatnonzero(~test)
    parts = {name: tr[lender_of[tr] == i] for i, name in enumerate(synthetic.LENDERS)}
    params = GBDTParams(n_trees=n_trees, max_depth=3, learning_rate=0.3, max_bins=32)
    model, fit_s = hybrid_fit(lcols, pcols, y, parts, params)
    every = {**lcols, **pcols}
    te = {c: v[test] for c, v in every.items()}
    central = train({c: v[tr] for c, v in every.items()}, y[tr], params)
    h_auc, c_auc = auc(y[test], model.predict_proba(te)), auc(y[test], central.predict_proba(te))
    return {
        "synthetic_hybrid_auc": round(h_auc, 4),
        "synthetic_centralized_auc": round(c_auc, 4),
        "synthetic_gap_auc": round(c_auc - h_auc, 4),
        "synthetic_setup": {
            "people": people, "loans": len(y), "train_loans_per_lender": {k: len(v) for k, v in parts.items()},
            "test_loans": int(test.sum()), "trees": n_trees, "max_depth": 3, "learning_rate": 0.3,
            "hybrid_fit_s_in_memory": round(fit_s, 2),
            "note": "lender features = synthetic._design's 17 application columns (own loans only), platform = its "
            "8 behaviour columns (0 where the platform does not know the person); centralized = our learner on "
            "all 25 columns pooled; split by person, 30% of people held out",
        },
    }  # fmt: skip


def _pseudo(i: int) -> bytes:
    return hashlib.sha256(f"p{i}".encode()).digest()[:PSEUDONYM_BYTES]


def scoring(n: int, singles: int, batch: int, chunk: int = ScoringSettings().chunk) -> dict[str, Any]:
    """Joint scoring, tree (30 trees, depth 3, layered) vs logistic, same applicants, same in-memory run:
    single applicants (interleaved, one of each at a time) and a batch of ``batch`` applicants in chunks of
    the lender's batch path (``chunk`` applicants, ``batch_parallel`` chunks in flight; the tree path cuts
    each into requests of at most ``MAX_TABLE_BYTES`` of tables), the two models taking turns by blocks of
    eight chunks, so both see the same load."""
    rng = np.random.default_rng(0)
    rows = max(n, batch)
    x = rng.normal(size=(rows, 23))
    z = x[:, 0] - 0.6 * x[:, 1] + 0.8 * x[:, 13] + 0.4 * x[:, 14] * x[:, 2] - 1.2
    y = (rng.random(rows) < 1 / (1 + np.exp(-z))).astype(np.float64)
    lnames, pnames = [f"l{j}" for j in range(13)], [f"p{j}" for j in range(10)]
    cols = {f: x[:, j] for j, f in enumerate([*lnames, *pnames])}
    owners = {**dict.fromkeys(lnames, LENDERS_OWNER), **dict.fromkeys(pnames, "platform")}
    params = GBDTParams(n_trees=30, max_depth=3, sticky_owners=("platform",), first_tree_owners=(LENDERS_OWNER,))
    model = train({f: v[:n] for f, v in cols.items()}, y[:n], params, owners=owners, names=[*lnames, *pnames])
    ps = [_pseudo(i) for i in range(rows)]
    shapes = [Tree.from_dict({**t.to_dict(), "value": [0.0] * t.n_nodes}) for t in model.trees]
    trees = ArrayTreeContributions.build("t", "1", shapes, model.owners, model.tables["platform"], ps,
                                         {f: cols[f] for f in pnames})  # fmt: skip
    sl = ModelSlice("lr", "1", "platform", "platform-data", tuple(pnames), rng.normal(0, 0.5, 10), np.zeros(10),
                    np.ones(10), None)  # fmt: skip
    src = ArrayContributions.build([sl], {"lr": (ps, x[:, 13:])})
    ids = make_identities(["platform", "lender"])
    ch = InMemoryChannel()
    reg = HandlerRegistry()
    ScoringParty(src, _NoAudit(), trees=trees, identity=ids["platform"]).register(reg)
    ch.add_party("platform", Role.PLATFORM, reg)
    ch.add_party("lender", Role.LENDER, HandlerRegistry())
    gw = LocalGateway(ScoringCoordinator(ch, rate_per_minute=0), "lender", ids["lender"].ca_pem)
    lr, tr = Requester(gw), TreeRequester(gw)
    table = model.tables[LENDERS_OWNER]
    plan = TreePlan.of(model.trees, model.owners, table, model.base_score)
    packed = b"".join(ps)

    def tree(a: int, b: int) -> None:  # score_tree_chunk's work: own splits, leaf mask, requests
        per = plan.max_applicants()
        for c in range(a, b, per):
            e = min(b, c + per)
            tr.query(packed[16 * c : 16 * e], plan, {f: cols[f][c:e] for f in lnames}, model_id="t",
                     model_version="1")  # fmt: skip

    def linear(a: int, b: int) -> None:
        lr.query(packed[16 * a : 16 * b], model_id="lr", model_version="1")

    fns = {"lr": linear, "tree": tree}
    for fn in fns.values():
        fn(0, 2)  # warm up: the CKKS context and the platform's key are fetched once per process
    lat: dict[str, list[float]] = {"lr": [], "tree": []}
    for i in rng.integers(0, rows, singles):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(int(i), int(i) + 1)
            lat[name].append(time.perf_counter() - t0)
    spent, cpu = {"lr": 0.0, "tree": 0.0}, {"lr": 0.0, "tree": 0.0}
    block = 8 * chunk  # the two models take turns by blocks of chunks, so both see the same load
    with ThreadPoolExecutor(ScoringSettings().batch_parallel) as pool:  # the batch path's requests in flight
        for a0 in range(0, batch, block):
            for name, fn in fns.items():
                t0, c0 = time.perf_counter(), time.process_time()
                list(pool.map(lambda a, f=fn: f(a, min(batch, a + chunk)), range(a0, min(batch, a0 + block), chunk)))
                spent[name] += time.perf_counter() - t0
                cpu[name] += time.process_time() - c0  # every thread of the process: all three roles
    ch.close()
    key = "1m" if batch == 1_000_000 else f"{batch // 1000}k" if batch % 1000 == 0 else str(batch)
    out: dict[str, Any] = {}
    for name in fns:
        out[f"{name}_score_p50_ms"] = round(1e3 * statistics.median(lat[name]), 2)
        out[f"{name}_batch_{key}_s"] = round(spent[name], 2)
        out[f"{name}_batch_{key}_cpu_s"] = round(cpu[name], 2)  # less sensitive to the shared machine's load
    out["tree_over_lr_score_p50"] = round(out["tree_score_p50_ms"] / out["lr_score_p50_ms"], 2)
    out[f"tree_over_lr_batch_{key}"] = round(out[f"tree_batch_{key}_s"] / out[f"lr_batch_{key}_s"], 2)
    out[f"tree_over_lr_batch_{key}_cpu"] = round(out[f"tree_batch_{key}_cpu_s"] / out[f"lr_batch_{key}_cpu_s"], 2)
    lay = plan.layout
    out["scoring_conditions"] = (
        f"in ONE process over the in-memory channel (coordinator, requester and platform contributor; no "
        f"gRPC/TLS); logistic = 10 platform weights, CKKS (encrypt at the platform, decrypt at the lender); tree "
        f"= 30 trees depth 3 (layered; {len(leaf_values(model.trees))} leaves, {lay.n_regions} platform regions "
        f"holding {lay.width} leaves), rotated masked tables with the coordinator as helper (AES-CTR masks, "
        f"HPKE for the seed and y), including both owners' split evaluation; p50 over "
        f"{singles} single applicants each (interleaved); batch = {batch} applicants in chunks of {chunk} (the "
        f"lender's batch path, {ScoringSettings().batch_parallel} chunks in flight; trees: {plan.max_applicants()} "
        f"applicants per coordinator request, MAX_TABLE_BYTES), logistic and tree taking turns by blocks of "
        f"{8 * chunk} applicants; no rate limit"
    )
    return out


class _NoAudit:
    def append(self, event: str, fields: Any) -> None:
        pass

    def append_many(self, event: str, many: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--people", type=int, default=60_000)
    ap.add_argument("--synthetic-trees", type=int, default=40)
    ap.add_argument("--only", choices=("all", "scoring", "synthetic"), default="all")
    ap.add_argument("--score-batch", type=int, default=1_000_000)
    ap.add_argument("--score-singles", type=int, default=100)
    a = ap.parse_args(argv)
    load0 = os.getloadavg()
    doc: dict[str, Any] = json.loads(a.out.read_text()) if a.out.is_file() else {}
    new: dict[str, Any] = {}
    if a.only in ("all", "synthetic"):
        new.update(synthetic_federation(a.people, a.synthetic_trees))
    if a.only in ("all", "scoring"):
        new.update(scoring(20_000, a.score_singles, a.score_batch))
    for stale in ("lr_batch_2000_s", "tree_batch_2000_s", "tree_over_lr_batch_2000"):  # the CKKS tree protocol's
        doc.pop(stale, None)
    new[{"all": "scale_run", "scoring": "scoring_run", "synthetic": "synthetic_run"}[a.only]] = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "loadavg_start": [round(v, 2) for v in load0],
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "cores": os.cpu_count(),
    }
    doc.update(new)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(new, indent=1))


if __name__ == "__main__":
    main()
