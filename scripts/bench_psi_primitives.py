"""Benchmark the ECDH-PSI primitives against their floor and against openmined-psi and SecretFlow spu.

Run once, on a quiet machine::

    scripts/setup_peer_venv.sh openmined && scripts/setup_peer_venv.sh spu
    .venv/bin/python scripts/bench_psi_primitives.py --sizes 100000 --big 1000000 \
        --openmined-python .venv-openmined/bin/python --spu-python .venv-spu/bin/python

Definitions (every figure is per party-id, per core):

* ``floor``: a bare loop of ``X25519PrivateKey.exchange`` on pre-built public-key objects; one id costs
  two multiplications (blind own id, re-blind the peer's), so ids/s = exchanges/s / 2. A second floor
  also counts ``X25519PublicKey.from_public_bytes`` (unavoidable with ``cryptography``'s API).
* ``ours``: both parties of an n x n run in one process (hash + blind own ids, re-blind the peer's,
  intersect), CPU time; ids/s per core = 2n / CPU seconds. ``ours_pool``: the same with a
  :class:`ParallelBlinder` of 2 workers per party; ids/s per core = 2n / (wall seconds x 2 cores).
* ``openmined``: openmined-psi 2.x client and server (RAW data structure, exact) in one process on
  the same sets; 2n / CPU seconds. Its bytes are the serialized setup, request and response. It pins
  protobuf 6.30 (the product's generated code needs 6.31+), so it runs from its own venv given by
  ``--openmined-python``, like spu.
* ``spu``: SecretFlow spu ``psi_execute`` with ``PROTOCOL_ECDH`` / ``CURVE_25519``, two processes over
  brpc on loopback, CSV in and out (its only input type); 2n / (sum of both processes' CPU seconds).
  spu pins numpy<2 and protobuf 6.30, which the project's venv cannot take, so it runs from a separate
  venv given by ``--spu-python``. Its bytes per id are approximated from ``/proc/self/io`` write
  counts (sockets + log), minus the output file.

``bytes_per_id`` is the total over both directions of an n x n run divided by n; the per-direction
figure divides by 2n.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "psi_primitives.json"

SPU_PARTY = r"""
import os, sys, time
import spu.libspu.link as link
import spu.psi as psi
rank, inp, out, port = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
desc = link.Desc()
desc.id = "bench"
desc.recv_timeout_ms = 600000
desc.add_party("alice", f"127.0.0.1:{port}")
desc.add_party("bob", f"127.0.0.1:{port + 1}")
lctx = link.create_brpc(desc, rank)
conf = psi.PsiExecuteConfig(
    protocol_conf=psi.PsiProtocolConfig(
        protocol=psi.PsiProtocol.PROTOCOL_ECDH, receiver_rank=0, broadcast_result=True,
        ecdh_params=psi.EcdhParams(curve=psi.EllipticCurveType.CURVE_25519, batch_size=4096)),
    input_params=psi.InputParams(path=inp, selected_keys=["id"], keys_unique=True),
    output_params=psi.OutputParams(path=out, disable_alignment=True),
)
def wchar():
    for line in open("/proc/self/io"):
        if line.startswith("wchar:"):
            return int(line.split()[1])
w0 = wchar(); t = time.perf_counter(); c = time.process_time()
rep = psi.psi_execute(conf, lctx)
wall, cpu = time.perf_counter() - t, time.process_time() - c
written = wchar() - w0 - os.path.getsize(out)
lctx.stop_link()
print("RESULT", wall, cpu, rep.original_count, rep.intersection_count, written, flush=True)
"""


def make_sets(n: int) -> tuple[list[bytes], list[bytes], int]:
    """Two sets of n phone-number-like ids sharing n // 2."""
    common = n // 2
    xs = [b"138%08d" % i for i in range(n)]
    ys = [b"138%08d" % i for i in range(common)] + [b"139%08d" % i for i in range(n - common)]
    return xs, ys, common


def bench_floor(n_ops: int) -> dict[str, float]:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    from fedcore.crypto.psi import hash_ids

    points = hash_ids([b"%d" % i for i in range(n_ops)])
    key = X25519PrivateKey.generate()
    exchange = key.exchange
    pubs = [X25519PublicKey.from_public_bytes(p) for p in points]
    c = time.process_time()
    for p in pubs:
        exchange(p)
    t_ex = (time.process_time() - c) / n_ops
    from_bytes = X25519PublicKey.from_public_bytes
    c = time.process_time()
    for q in points:
        exchange(from_bytes(q))
    t_ex_parse = (time.process_time() - c) / n_ops
    return {
        "exchange_us": t_ex * 1e6,
        "exchange_with_parse_us": t_ex_parse * 1e6,
        "floor_ids_per_s_per_core": 1 / (2 * t_ex),
        "floor_with_parse_ids_per_s_per_core": 1 / (2 * t_ex_parse),
    }


def bench_ours(n: int) -> dict[str, Any]:
    from fedcore.crypto import psi

    xs, ys, common = make_sets(n)
    a, b = psi.PsiSecret.generate(), psi.PsiSecret.generate()
    c, t = time.process_time(), time.perf_counter()
    a_x = psi.blind_ids(a, xs)
    b_y = psi.blind_ids(b, ys)
    ab_x = psi.reblind(b, a_x)
    ab_y = psi.reblind(a, b_y)
    found = len(psi.intersect_indices(ab_x, ab_y))
    cpu, wall = time.process_time() - c, time.perf_counter() - t
    assert found == common, (found, common)
    wire = len(psi.pack_points(a_x)) + len(psi.pack_points(ab_x)) + len(psi.pack_points(b_y))
    return {
        "n": n,
        "cpu_s": cpu,
        "wall_s": wall,
        "ids_per_s_per_core": 2 * n / cpu,
        "bytes_per_id": wire / n,
        "bytes_per_id_per_direction": wire / (2 * n),
    }


def bench_ours_pool(n: int, workers: int) -> dict[str, Any]:
    from fedcore.crypto import psi

    xs, ys, common = make_sets(n)
    a, b = psi.PsiSecret.generate(), psi.PsiSecret.generate()
    with psi.ParallelBlinder(a, workers) as pa, psi.ParallelBlinder(b, workers) as pb:
        pa.blind_ids([b"warm"] * workers)
        pb.blind_ids([b"warm"] * workers)
        t = time.perf_counter()
        a_x = b"".join(pa.blind_ids_stream(xs))  # packed chunks, as they would be streamed
        b_y = b"".join(pb.blind_ids_stream(ys))
        chunk = 32 * pa.chunk_ids
        ab_x = b"".join(pb.reblind_stream(a_x[i : i + chunk] for i in range(0, len(a_x), chunk)))
        ab_y = b"".join(pa.reblind_stream(b_y[i : i + chunk] for i in range(0, len(b_y), chunk)))
        found = len(psi.intersect_indices(psi.unpack_points(ab_x), psi.unpack_points(ab_y)))
        wall = time.perf_counter() - t
    assert found == common, (found, common)
    return {
        "n": n,
        "workers": workers,
        "wall_s": wall,
        "ids_per_s_per_core": 2 * n / (wall * workers),
    }


OPENMINED_RUN = r"""
import json, sys, time
from importlib.metadata import version
import private_set_intersection.python as omp
xs = open(sys.argv[1]).read().split()
ys = open(sys.argv[2]).read().split()
n = len(xs)
c, t = time.process_time(), time.perf_counter()
client = omp.client.CreateWithNewKey(True)
server = omp.server.CreateWithNewKey(True)
setup = server.CreateSetupMessage(0.0, n, ys, omp.DataStructure.RAW)
request = client.CreateRequest(xs)
response = server.ProcessRequest(request)
found = len(client.GetIntersection(setup, response))
cpu, wall = time.process_time() - c, time.perf_counter() - t
wire = sum(len(m.SerializeToString()) for m in (setup, request, response))
print("RESULT " + json.dumps({"found": found, "cpu_s": cpu, "wall_s": wall, "wire": wire,
                              "version": version("openmined-psi")}))
"""


def bench_openmined(n: int, openmined_python: str | None) -> dict[str, Any]:
    """openmined-psi from its own venv (scripts/setup_peer_venv.sh openmined): it pins a protobuf
    older than the product's generated code needs, so it never shares the product's environment."""
    if not openmined_python or not Path(openmined_python).exists():
        return {"n": n, "error": "no --openmined-python (run scripts/setup_peer_venv.sh openmined)"}
    xs, ys, common = make_sets(n)
    with tempfile.TemporaryDirectory(prefix="openmined-bench-") as d:
        files = []
        for name, ids in (("x", xs), ("y", ys)):
            path = Path(d) / f"{name}.txt"
            path.write_bytes(b"\n".join(ids) + b"\n")
            files.append(str(path))
        run = subprocess.run([openmined_python, "-c", OPENMINED_RUN, *files], capture_output=True, text=True,
                             timeout=3600)
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if run.returncode != 0 or line is None:
        return {"n": n, "error": f"openmined-psi run exited with {run.returncode}: {run.stderr.strip()[-300:]}"}
    r = json.loads(line[len("RESULT "):])
    assert r["found"] == common, (r["found"], common)
    return {
        "n": n,
        "version": r["version"],
        "cpu_s": r["cpu_s"],
        "wall_s": r["wall_s"],
        "ids_per_s_per_core": 2 * n / r["cpu_s"],
        "bytes_per_id": r["wire"] / n,
        "bytes_per_id_per_direction": r["wire"] / (2 * n),
        "data_structure": "RAW",
    }


def bench_spu(n: int, spu_python: str | None) -> dict[str, Any]:
    if not spu_python or not Path(spu_python).exists():
        return {"n": n, "error": "no --spu-python given (spu needs its own venv: numpy<2, protobuf 6.30)"}
    xs, ys, common = make_sets(n)
    with tempfile.TemporaryDirectory(prefix="spu-bench-") as d:
        party = Path(d) / "party.py"
        party.write_text(SPU_PARTY)
        paths = []
        for name, ids in (("a", xs), ("b", ys)):
            p = Path(d) / f"{name}.csv"
            p.write_bytes(b"id\n" + b"\n".join(ids) + b"\n")
            paths.append((str(p), str(Path(d) / f"out_{name}.csv")))
        port = 20000 + os.getpid() % 20000
        procs = [
            subprocess.Popen(
                [spu_python, str(party), str(rank), inp, out, str(port)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for rank, (inp, out) in enumerate(paths)
        ]
        results = []
        for proc in procs:
            stdout, _ = proc.communicate(timeout=900)
            line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT")), None)
            if proc.returncode != 0 or line is None:
                return {"n": n, "error": f"spu party exited with {proc.returncode}"}
            results.append([float(v) for v in line.split()[1:]])
    version = subprocess.run(
        [spu_python, "-c", "import spu; print(spu.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    assert all(int(r[3]) == common for r in results), results
    cpu = sum(r[1] for r in results)
    written = sum(r[4] for r in results)
    return {
        "n": n,
        "version": version,
        "wall_s": max(r[0] for r in results),
        "cpu_s": cpu,
        "ids_per_s_per_core": 2 * n / cpu,
        "bytes_per_id_approx": written / n,
        "curve": "CURVE_25519",
        "note": "includes CSV read/write and sorting; bytes from /proc/self/io wchar (socket + log writes)",
    }


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000], help="n for every contender")
    ap.add_argument("--big", type=int, nargs="*", default=[], help="n for ours (pool) and spu only")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--floor-ops", type=int, default=50_000)
    ap.add_argument("--spu-python", default=os.environ.get("FEDCREDIT_SPU_PYTHON", ".venv-spu/bin/python"))
    ap.add_argument("--openmined-python",
                    default=os.environ.get("FEDCREDIT_OPENMINED_PYTHON", ".venv-openmined/bin/python"))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))

    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
            "python": platform.python_version(),
            "cryptography": _version("cryptography"),
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "floor": bench_floor(args.floor_ops),
        "runs": [],
    }
    print("floor", json.dumps(report["floor"]), flush=True)
    for n in args.sizes:
        run = {"n": n, "ours": bench_ours(n)}
        print("ours", json.dumps(run["ours"]), flush=True)
        run["ours_pool"] = bench_ours_pool(n, args.workers)
        print("ours_pool", json.dumps(run["ours_pool"]), flush=True)
        run["openmined"] = bench_openmined(n, args.openmined_python)
        print("openmined", json.dumps(run["openmined"]), flush=True)
        run["spu"] = bench_spu(n, args.spu_python)
        print("spu", json.dumps(run["spu"]), flush=True)
        report["runs"].append(run)
    for n in args.big:
        run = {"n": n, "ours_pool": bench_ours_pool(n, args.workers)}
        print("ours_pool", json.dumps(run["ours_pool"]), flush=True)
        run["spu"] = bench_spu(n, args.spu_python)
        print("spu", json.dumps(run["spu"]), flush=True)
        report["runs"].append(run)

    first = report["runs"][0]
    floor = report["floor"]["floor_ids_per_s_per_core"]
    report["summary"] = {
        "n": first["n"],
        "floor_ids_per_s_per_core": floor,
        "floor_with_parse_ids_per_s_per_core": report["floor"]["floor_with_parse_ids_per_s_per_core"],
        "ours_ids_per_s_per_core": first["ours"]["ids_per_s_per_core"],
        "ours_pool_ids_per_s_per_core": first["ours_pool"]["ids_per_s_per_core"],
        "ours_fraction_of_floor": first["ours"]["ids_per_s_per_core"] / floor,
        "ours_pool_fraction_of_floor": first["ours_pool"]["ids_per_s_per_core"] / floor,
        "openmined_ids_per_s_per_core": first["openmined"].get("ids_per_s_per_core"),
        "spu_ids_per_s_per_core": first["spu"].get("ids_per_s_per_core"),
        "ours_bytes_per_id": first["ours"]["bytes_per_id"],
        "ours_bytes_per_id_per_direction": first["ours"]["bytes_per_id_per_direction"],
        "openmined_bytes_per_id": first["openmined"].get("bytes_per_id"),
        "spu_bytes_per_id_approx": first["spu"].get("bytes_per_id_approx"),
        "rusage_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
