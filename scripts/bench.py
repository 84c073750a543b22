#!/usr/bin/env python
"""One entry point for the benchmarks: ``scripts/bench.py link`` (more subcommands join as they land).

Results are written to ``benchmarks/results/<name>.json``. Figures that depend on this shared, noisy
machine are reported beside a baseline measured in the same run, as ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

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
    from fedcore.localfed import DEMO_PARTIES, LocalFederation

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="which", required=True)
    link = sub.add_parser("link", help="party link round trip and payload throughput")
    link.add_argument("--count", type=int, default=100)
    link.add_argument("--rounds", type=int, default=3)
    link.add_argument("--payload-mb", type=int, default=512)
    link.set_defaults(fn=bench_link)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
