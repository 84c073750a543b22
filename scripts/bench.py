#!/usr/bin/env python
"""One entry point for the benchmarks: ``scripts/bench.py link`` (more subcommands join as they land).

Results are written to ``benchmarks/results/<name>.json``. Figures that depend on this shared, noisy
machine are reported beside a baseline measured in the same run, as ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def write(name: str, data: dict[str, object]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        **data,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()} {platform.processor() or ''} cores={__import__('os').cpu_count()}",
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(json.dumps(data, indent=2, sort_keys=True))


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def bench_link(args: argparse.Namespace) -> None:
    """Task round trip through the party link for 6 parties as processes, and large-payload throughput."""
    from scripts.localfed import DEMO_PARTIES, LocalFederation

    with tempfile.TemporaryDirectory() as tmp, LocalFederation(Path(tmp), DEMO_PARTIES) as fed:
        fed.setup()
        fed.start()
        fed.wait_online(timeout=60)
        rtts: list[float] = []
        unary: list[float] = []
        with fed.admin() as admin:
            for name in DEMO_PARTIES:  # warm-up: connections, thread pools, code paths
                admin.probe(name, count=50)
            for _ in range(args.rounds):
                for name in DEMO_PARTIES:
                    rtts.extend(admin.probe(name, count=args.count).rtt_ms)
            for _ in range(200):  # baseline: a unary admin RPC over the same mutual-TLS server
                t0 = time.perf_counter()
                admin.list_parties()
                unary.append((time.perf_counter() - t0) * 1000)
            size = args.payload_mb * 1024 * 1024
            admin.probe("tiange", count=1, payload_bytes=16 << 20, timeout_s=60)
            r = admin.probe("tiange", count=1, payload_bytes=size, timeout_s=300)
        write(
            "link",
            {
                "parties": len(DEMO_PARTIES),
                "task_rtt_samples": len(rtts),
                "task_rtt_p50_ms": round(pct(rtts, 0.50), 3),
                "task_rtt_p99_ms": round(pct(rtts, 0.99), 3),
                "task_rtt_mean_ms": round(statistics.fmean(rtts), 3),
                "baseline_unary_admin_rpc_p50_ms": round(pct(unary, 0.50), 3),
                "task_rtt_p50_over_unary_rpc_p50": round(pct(rtts, 0.5) / pct(unary, 0.5), 3),
                "payload_mb": args.payload_mb,
                "payload_mb_per_s": round(r.bytes_received / 2**20 / r.seconds, 1),
                "note": "task RTT measured at the coordinator: echo task over the party's stream and back; "
                "baseline is a whole unary mTLS RPC measured at the admin client",
            },
        )


def _primitives() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_psi_primitives", ROOT / "scripts" / "bench_psi_primitives.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _id_file(path: Path, ids: list[str]) -> None:
    with path.open("w") as f:
        f.write("id\n")
        f.writelines(f"{i}\n" for i in ids)


def bench_psi(args: argparse.Namespace) -> None:
    """PSI: per-core throughput against the floor and peers on the same ids, then 1M x 1M end to end
    across two party processes and the coordinator."""
    import random

    from scripts.localfed import LocalFederation

    prim = _primitives()
    n_small = args.compare_n
    floor = prim.bench_floor(args.floor_ops)
    ours = prim.bench_ours(n_small)
    openmined = prim.bench_openmined(n_small, args.openmined_python) if not args.skip_peers else {"error": "skipped"}
    spu = prim.bench_spu(n_small, args.spu_python) if not args.skip_peers else {"error": "skipped"}
    print("floor", floor, "ours", ours, "openmined", openmined, "spu", spu, flush=True)

    rng = random.Random(11)
    n = args.n
    overlap = n // 2
    common = [f"c{rng.getrandbits(64):016x}" for _ in range(overlap)]
    a = common + [f"a{rng.getrandbits(64):016x}" for _ in range(n - overlap)]
    b = common + [f"b{rng.getrandbits(64):016x}" for _ in range(n - overlap)]
    rng.shuffle(a)
    rng.shuffle(b)
    schema = (
        '[dataset]\nname = "ids"\nid_column = "id"\nid_kind = "opaque"\n'
        'consent_all = ["training"]\nfederation_columns = []\n'
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "ids.toml").write_text(schema)
        _id_file(root / "a.csv", a)
        _id_file(root / "b.csv", b)
        del a, b, common
        with LocalFederation(root / "fed", {"yixin": "lender", "tiange": "platform"}, heartbeat_s=1.0) as fed:
            fed.setup()
            t0 = time.perf_counter()
            fed.ingest("yixin", root / "a.csv", root / "ids.toml")
            fed.ingest("tiange", root / "b.csv", root / "ids.toml")
            ingest_s = time.perf_counter() - t0
            fed.start()
            fed.wait_online(timeout=60)
            t0 = time.perf_counter()
            with fed.admin() as admin:
                events = list(admin.start_run("psi", {"parties": ["yixin", "tiange"], "timeout_s": 1800}))
            wall = time.perf_counter() - t0
            last = events[-1]
            if last.status != "succeeded":
                raise SystemExit(f"PSI run failed: {last.message}")
            from fedcore.wire.convert import params_from_struct

            result = params_from_struct(last.result)
    floor_ips = floor["floor_ids_per_s_per_core"]
    write("psi", {
        "compare_n": n_small,
        "floor_ids_per_s_per_core": round(floor_ips),
        "ours_ids_per_s_per_core": round(ours["ids_per_s_per_core"]),
        "ours_fraction_of_floor": round(ours["ids_per_s_per_core"] / floor_ips, 3),
        "openmined_ids_per_s_per_core": openmined.get("ids_per_s_per_core"),
        "ours_over_openmined": (round(ours["ids_per_s_per_core"] / openmined["ids_per_s_per_core"], 2)
                                if openmined.get("ids_per_s_per_core") else None),
        "spu_ids_per_s_per_core": spu.get("ids_per_s_per_core"),
        "spu_note": spu.get("error") or "SecretFlow spu 0.9.5 ECDH-PSI (CURVE_25519) from its own venv",
        "ours_bytes_per_id": 32,
        "ours_bytes_per_id_note": "32 bytes per id per direction; 96 bytes per pair of ids (three messages)",
        "openmined_bytes_per_id": openmined.get("bytes_per_id"),
        "end_to_end_n_per_party": n,
        "end_to_end_intersection": result["intersection"],
        "end_to_end_1m_s": round(wall, 2) if n == 1_000_000 else None,
        "end_to_end_s": round(wall, 2),
        "end_to_end_protocol_s": result["seconds"],
        "ingest_both_parties_s": round(ingest_s, 2),
        "note": "end to end = admin StartRun to result, two party processes and the coordinator on loopback, "
                "mutual TLS, ids read from each party's SQLite store; per-core figures are CPU-time based "
                "(single process, hash + blind + re-blind per id = two scalar multiplications)",
    })


def bench_train(args: argparse.Namespace) -> None:
    """Horizontal round time on the real FATE homo split, three lenders as separate processes on
    loopback: plain aggregation vs CKKS-encrypted aggregation, same configuration, same run."""
    from fedcore.wire.convert import params_from_struct
    from scripts.fate_data import write_fate_federations
    from scripts.localfed import LocalFederation

    lenders = {"yixin": "guest", "meili": "host_1", "cango": "host_2"}
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = write_fate_federations(root / "fate")["homo"]
        with LocalFederation(root / "fed", {n: "lender" for n in lenders}, heartbeat_s=1.0) as fed:
            fed.setup()
            for name, split in lenders.items():
                fed.ingest(name, *files[split])
            fed.start()
            fed.wait_online(timeout=60)
            for secure in ("none", "he", "none", "he"):  # interleaved, so drift hits both alike
                params = {"parties": list(lenders), "model": "mlp", "rounds": args.rounds, "secure": secure,
                          "local_epochs": 1}
                with fed.admin() as admin:
                    last = list(admin.start_run("train", params))[-1]
                if last.status != "succeeded":
                    raise SystemExit(f"training failed: {last.message}")
                hist = params_from_struct(last.result)["history"]
                out.setdefault(secure, []).extend(h["seconds"] for h in hist[1:])  # round 1 includes warm-up
    plain, he = statistics.median(out["none"]), statistics.median(out["he"])
    path = RESULTS / "horizontal.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    for k in ("plain_round_s", "he_round_s", "he_over_plain", "round_timing_note"):
        if k in data and not k.startswith("inmemory_"):
            data[f"inmemory_{k}"] = data.pop(k)
    data.update({
        "plain_round_s": round(plain, 4),
        "he_round_s": round(he, 4),
        "he_over_plain": round(he / plain, 3),
        "round_timing_note": "median seconds per round (train + federated evaluation) of the MLP (64,32) with one "
                             "local epoch, FATE homo split, three lenders (8,000 rows each) as separate party "
                             "processes and the coordinator on loopback with mutual TLS; plain and HE runs "
                             "interleaved in one script; round 1 excluded (warm-up)",
    })
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps({k: data[k] for k in ("plain_round_s", "he_round_s", "he_over_plain")}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="which", required=True)
    link = sub.add_parser("link", help="party link round trip and payload throughput")
    link.add_argument("--count", type=int, default=100)
    link.add_argument("--rounds", type=int, default=3)
    link.add_argument("--payload-mb", type=int, default=512)
    link.set_defaults(fn=bench_link)
    psi = sub.add_parser("psi", help="PSI throughput vs floor and peers, and 1M x 1M end to end")
    psi.add_argument("--n", type=int, default=1_000_000, help="ids per party for the end-to-end run")
    psi.add_argument("--compare-n", type=int, default=100_000, help="ids for the per-core comparison")
    psi.add_argument("--floor-ops", type=int, default=50_000)
    psi.add_argument("--skip-peers", action="store_true")
    psi.add_argument("--spu-python", default=os.environ.get("FEDCREDIT_SPU_PYTHON", ".venv-spu/bin/python"))
    psi.add_argument("--openmined-python",
                     default=os.environ.get("FEDCREDIT_OPENMINED_PYTHON", ".venv-openmined/bin/python"))
    psi.set_defaults(fn=bench_psi)
    train = sub.add_parser("train", help="horizontal round time across processes, plain vs HE")
    train.add_argument("--rounds", type=int, default=6)
    train.set_defaults(fn=bench_train)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
