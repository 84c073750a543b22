"""Scale benchmark: PSI end to end with party memory, Ray vs the local pool, PostgreSQL vs SQLite ingest,
and the blacklist lookup at tens of millions of flagged subjects. Writes ``benchmarks/results/scale.json``.

Every figure is measured on this machine in this run; sizes the run did not reach are given only as
``*_extrapolated_*`` keys, labelled as extrapolations (linear in ids from the largest run), never under
the key of a measured figure. Usage::

    python scripts/bench_scale.py [--psi-n 1000000] [--ray-n 200000] [--ingest-rows 1000000]
                                  [--blacklist-n 50000000] [--only PARTS] [--skip PARTS]

* ``psi``: n x n ids (half shared) end to end: two party processes and the coordinator, mutual TLS on
  loopback, ids read from each party's store; peak RSS of each party process tree (node + its blinding
  workers), sampled every 50 ms.
* ``ray``: blinding throughput (ids/s per core) of :class:`party_node.compute.RayBlinder` on a local Ray
  cluster of two one-CPU nodes vs :class:`fedcore.crypto.psi.ParallelBlinder` with two workers, on the
  same ids; and one one-CPU node vs two (``ray_two_nodes_over_one``).
* ``ingest``: the same 1M x 30 file (scripts/bench_data.py) into SQLite and into a throw-away
  PostgreSQL server (COPY path), each ingest in its own process: time and peak RSS.
* ``blacklist``: one applicant's blacklist check through the scoring path (a lender's request over
  gRPC + mutual TLS to the coordinator, ``scoring.contribute`` to a member node process whose store holds
  n flagged subjects, CKKS back): p50/p99 latency over ``--blacklist-requests``, the member's RSS, the
  first request (which builds the member's fraud table), the list's load (``party ingest --bulk`` of the
  whole list; ``--blacklist-ingest-n`` also times the row-by-row ``party ingest`` of that many entries
  first, for comparison). ``--blacklist-dir`` keeps the built federation for a rerun.
* ``blacklist_table``: the fraud table alone (:class:`SortedTable`) in this process over n random
  pseudonyms: build time, memory, one lookup (p50/p99 over 2,000).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "results" / "scale.json"


def _tree_rss(pid: int) -> int:
    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class PeakSampler:
    """Peak RSS of process trees, sampled until stopped."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids, self.peak = pids, dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for k, pid in self.pids.items():
                self.peak[k] = max(self.peak[k], _tree_rss(pid))

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._t.join()
        return {k: round(v / 2**20, 1) for k, v in self.peak.items()}


def _psi_once(n: int) -> dict[str, Any]:
    from fedcore.wire.convert import params_from_struct
    from scripts.localfed import LocalFederation

    rng = random.Random(11)
    common = [f"c{rng.getrandbits(64):016x}" for _ in range(n // 2)]
    a = common + [f"a{rng.getrandbits(64):016x}" for _ in range(n - n // 2)]
    b = common + [f"b{rng.getrandbits(64):016x}" for _ in range(n - n // 2)]
    schema = '[dataset]\nname = "ids"\nid_column = "id"\nid_kind = "opaque"\nconsent_all = ["training"]\n'
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "ids.toml").write_text(schema)
        (root / "a.csv").write_text("id\n" + "\n".join(a) + "\n")
        (root / "b.csv").write_text("id\n" + "\n".join(b) + "\n")
        del a, b, common
        with LocalFederation(root / "fed", {"yixin": "lender", "tiange": "platform"}, heartbeat_s=1.0) as fed:
            fed.setup()
            fed.ingest("yixin", root / "a.csv", root / "ids.toml")
            fed.ingest("tiange", root / "b.csv", root / "ids.toml")
            fed.start()
            fed.wait_online(timeout=120)
            idle = max(_tree_rss(fed.procs[k].pid) for k in ("yixin", "tiange")) / 2**20
            load0 = os.getloadavg()[0]
            sampler = PeakSampler({k: fed.procs[k].pid for k in ("yixin", "tiange", "coordinator")})
            t0 = time.perf_counter()
            with fed.admin() as admin:
                events = list(admin.start_run("psi", {"parties": ["yixin", "tiange"], "timeout_s": 7200}))
            wall = time.perf_counter() - t0
            peaks = sampler.stop()
            last = events[-1]
            if last.status != "succeeded":
                raise SystemExit(f"PSI run failed: {last.message}")
            result = params_from_struct(last.result)
    return {"n": n, "wall": wall, "idle": idle, "peaks": peaks, "result": result, "load0": load0}


def bench_psi(n: int) -> dict[str, Any]:
    """Two runs, n/5 and n: the party's memory per million ids is the slope between them (a run's fixed
    costs, the blinding worker processes and SQLite's page cache, capped at 128 MiB a connection, are not
    per-id), and its time the larger run's."""
    small, big = _psi_once(max(n // 5, 1000)), _psi_once(n)
    wall, idle, peaks, result, load0 = big["wall"], big["idle"], big["peaks"], big["result"], big["load0"]
    party_peak = max(peaks["yixin"], peaks["tiange"])
    small_peak = max(small["peaks"]["yixin"], small["peaks"]["tiange"])
    per_m = max(party_peak - small_peak, 0.0) * 1_000_000 / (n - small["n"])
    return {
        "psi_small_n_per_party": small["n"],
        "psi_small_party_peak_rss_mb": small_peak,
        "psi_party_rss_mb_per_million_ids_basis": (
            f"slope of party peak RSS between the {small['n']:,} and {n:,} runs (marginal, not peak/n)"),
        "psi_n_per_party": n,
        "psi_s": round(wall, 2),
        "psi_intersection": result.get("intersection", result.get("size")),
        "psi_party_peak_rss_mb": party_peak,
        "psi_coordinator_peak_rss_mb": peaks["coordinator"],
        "psi_10m_s_extrapolated_linear": round(wall * 10_000_000 / n, 1),
        "psi_10m_s_extrapolated_note": f"NOT MEASURED: linear extrapolation from the {n:,} x {n:,} run above",
        "psi_party_idle_rss_mb": round(idle, 1),
        "psi_party_rss_mb_per_million_ids": round(per_m, 1),
        "psi_10m_party_peak_rss_mb_extrapolated_linear": round(party_peak + per_m * (10_000_000 - n) / 1e6, 1),
        "psi_10m_party_peak_rss_mb_extrapolated_note": (
            f"NOT MEASURED: the {n:,} run's party peak + the per-million slope for the remaining ids"),
        "psi_load_average": [round(load0, 1), round(os.getloadavg()[0], 1)],
        "psi_note": ("end to end = admin StartRun to result; two party processes and the coordinator on loopback, "
                     "mutual TLS, ids read from each party's SQLite store, local backend; 2-core machine shared "
                     "with other work (1-minute load average before and after in psi_load_average)"),
    }


def bench_psi_single(n: int) -> dict[str, Any]:
    """One n x n run on its own (the 10M run takes ~25 minutes, so it is run apart from the n/5 + n pair):
    measured keys named by size, e.g. psi_10m_s and psi_10m_party_peak_rss_mb."""
    run = _psi_once(n)
    tag = f"psi_{n // 1_000_000}m" if n % 1_000_000 == 0 else f"psi_{n}"
    result = run["result"]
    return {
        f"{tag}_s": round(run["wall"], 1),
        f"{tag}_party_peak_rss_mb": max(run["peaks"]["yixin"], run["peaks"]["tiange"]),
        f"{tag}_party_idle_rss_mb": round(run["idle"], 1),
        f"{tag}_coordinator_peak_rss_mb": run["peaks"]["coordinator"],
        f"{tag}_intersection": result.get("intersection", result.get("size")),
        f"{tag}_load_average": [round(run["load0"], 1), round(os.getloadavg()[0], 1)],
        f"{tag}_note": (f"one {n:,} x {n:,} run end to end (admin StartRun to result), two party processes and the "
                        "coordinator on loopback, mutual TLS, ids from each party's SQLite store, local backend"),
    }


def _blind_rate(blinder: Any, ids: list[bytes]) -> float:
    for _ in blinder.blind_ids_stream(ids[:20_000]):  # warm the workers
        pass
    t0 = time.perf_counter()
    for _ in blinder.blind_ids_stream(ids):
        pass
    return len(ids) / (time.perf_counter() - t0)


def bench_ray(n: int) -> dict[str, Any]:
    import ray

    from fedcore.crypto.psi import ParallelBlinder, PsiSecret
    from party_node.compute import RayBlinder
    from scripts.raycluster import RayCluster

    ids = [f"id{i:012d}".encode() for i in range(n)]
    secret = PsiSecret.generate()
    locals_ = []
    rates: dict[int, float] = {}

    def local_rate() -> None:
        with ParallelBlinder(secret, 2) as pool:
            locals_.append(_blind_rate(pool, ids) / 2)

    local_rate()
    for nodes in (2, 1):
        with RayCluster(nodes=nodes, cpus_per_node=1) as cluster:
            with RayBlinder(secret, cluster.address) as rb:
                rates[nodes] = _blind_rate(rb, ids)
            ray.shutdown()
    local_rate()  # before and after the Ray runs; the better one is the baseline (a shared, loaded machine)
    local = max(locals_)
    out: dict[str, Any] = {"ray_n": n, "local_psi_ids_per_s_per_core": round(local),
                           "local_psi_ids_per_s_per_core_runs": [round(x) for x in locals_]}
    out["ray_psi_ids_per_s_per_core"] = round(rates[2] / 2)
    out["ray_over_local_per_core"] = round(rates[2] / 2 / local, 3)
    out["ray_two_nodes_over_one"] = round(rates[2] / rates[1], 3)
    out["ray_note"] = ("blinding only (hash + scalar multiplication), same ids; local = ParallelBlinder with "
                       "2 worker processes; ray = RayBlinder on a local cluster of 1-CPU nodes on this 2-core "
                       "machine, so two nodes cannot exceed the machine's two cores; the local rate is the "
                       "better of a run before and one after the Ray runs")
    return out


_INGEST_CHILD = """
import json, sys, time
from pathlib import Path
from party_node.ingest import ingest_file
from party_node.schema import load_schema
from party_node.store import Store
store = Store.open(sys.argv[1])
t0 = time.perf_counter()
rep = ingest_file(store, Path(sys.argv[2]), load_schema(Path(sys.argv[3])))
print(json.dumps({"s": time.perf_counter() - t0, "inserted": rep.inserted}))
"""


def bench_ingest(rows: int) -> dict[str, Any]:
    """The same file into SQLite and PostgreSQL, each ingest in its own process (party ingest's code path):
    its time (measured inside the child, without interpreter start) and the child's peak RSS."""
    import subprocess

    from scripts.bench_data import write_bench_file
    from scripts.pgserver import PgServer

    times, peaks = {}, {}
    with tempfile.TemporaryDirectory() as tmp, PgServer() as pg:
        data, schema = write_bench_file(Path(tmp), rows, 7)
        for name, url in (("sqlite", f"sqlite:///{tmp}/store.db"), ("postgres", pg.create_database("bench"))):
            peak, stop = [0], threading.Event()
            proc = subprocess.Popen([sys.executable, "-c", _INGEST_CHILD, url, str(data), str(schema)],
                                    env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
            sampler = threading.Thread(target=_sample_rss, args=(proc.pid, stop, peak), daemon=True)
            sampler.start()
            out, _ = proc.communicate()
            stop.set()
            sampler.join()
            if proc.returncode != 0:
                raise SystemExit(f"{name} ingest failed")
            rep = json.loads(out.strip().splitlines()[-1])
            assert rep["inserted"] == rows, rep
            times[name], peaks[name] = rep["s"], round(peak[0] / 2**20, 1)
    k = "1m" if rows == 1_000_000 else str(rows)
    return {
        "ingest_rows": rows,
        f"sqlite_ingest_{k}_s": round(times["sqlite"], 2),
        f"postgres_ingest_{k}_s": round(times["postgres"], 2),
        "postgres_over_sqlite_ingest": round(times["postgres"] / times["sqlite"], 3),
        f"ingest_{k}_peak_rss_mb": max(peaks.values()),
        f"sqlite_ingest_{k}_peak_rss_mb": peaks["sqlite"],
        f"postgres_ingest_{k}_peak_rss_mb": peaks["postgres"],
        "ingest_note": ("same file (rows x 30 columns, phone ids), same code path (party ingest's ingest_file), "
                        "each in its own process: time measured inside it, peak RSS of that process sampled every "
                        "0.1 s (ids streamed: the file's and the store's ids as sorted numpy runs); SQLite: WAL, "
                        "synchronous=NORMAL; PostgreSQL 15: throw-away local server (scripts/pgserver.py: "
                        "fsync=off, synchronous_commit=off), COPY; 1-minute load average at the end "
                        f"{os.getloadavg()[0]:.1f} on a shared machine"),
    }


def bench_blacklist(n: int) -> dict[str, Any]:
    from fedcore.protocol.scoring.party import SortedTable

    proc = psutil.Process()
    gc.collect()
    base = proc.memory_info().rss
    rng = np.random.default_rng(5)
    keys = np.frombuffer(rng.bytes(16 * n), dtype="S16").copy()
    listed = keys[(np.arange(1000) * 7919) % n].copy()  # applicants who are on the list
    t0 = time.perf_counter()
    table = SortedTable.owning(keys)  # as the member builds it (sorted in place)
    build = time.perf_counter() - t0
    del keys  # the member keeps only the table
    gc.collect()
    rss = proc.memory_info().rss
    lat = []
    for i in range(2000):
        q = listed[i // 2 : i // 2 + 1] if i % 2 == 0 else np.frombuffer(rng.bytes(16), dtype="S16")
        t = time.perf_counter()
        hit = table.lookup(q)
        lat.append(time.perf_counter() - t)
        assert hit[0] == (1.0 if i % 2 == 0 else 0.0)
    lat_ms = np.array(lat) * 1000
    k = "50m" if n == 50_000_000 else f"{n // 1_000_000}m"
    return {
        "blacklist_table_n": n,
        f"blacklist_{k}_table_build_s": round(build, 1),
        f"blacklist_{k}_table_lookup_p50_ms": round(float(np.percentile(lat_ms, 50)), 4),
        f"blacklist_{k}_table_lookup_p99_ms": round(float(np.percentile(lat_ms, 99)), 4),
        f"blacklist_{k}_table_process_rss_mb": round(rss / 2**20, 1),
        f"blacklist_{k}_table_mb": round((rss - base) / 2**20, 1),
        "blacklist_table_note": ("the lookup structure scoring.contribute's fraud_flags uses (SortedTable over "
                           "16-byte pseudonyms), one applicant per request, in process; the gRPC round trip "
                           "to the member is not included"),
    }


_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")


def _list_ids(start: int, stop: int) -> np.ndarray:
    """Distinct opaque ids ``b`` + 16 hex digits, increasing with the index (an export sorted by id) with
    random-looking low bits: ``i << 34 | mix(i) mod 2^34``."""
    i = np.arange(start, stop, dtype=np.uint64)
    x = i * np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(29)
    x = (i << np.uint64(34)) | (x & np.uint64((1 << 34) - 1))
    hexed = _HEX[x.astype(">u8").view(np.uint8).reshape(-1, 8)]  # (n, 8) of 2-char hex
    return np.char.add(b"b", hexed.view("S16").ravel())


def write_blacklist_file(path: Path, start: int, stop: int) -> None:
    """``id,fraud`` with the flagged subjects ``start..stop`` of :func:`_list_ids`, written in blocks."""
    with open(path, "wb") as f:
        f.write(b"id,fraud\n")
        for a in range(start, stop, 1_000_000):
            ids = _list_ids(a, min(stop, a + 1_000_000))
            f.write(np.char.add(ids, b",1\n").tobytes())


BLACKLIST_SCHEMA = """[dataset]
name = "fraud_list"
id_column = "id"
id_kind = "opaque"
consent_all = ["blacklist"]

[flags]
fraud = "fraud"
"""


def _sample_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    while not stop.wait(0.1):
        peak[0] = max(peak[0], _tree_rss(pid))


def _ingest_list(fed: Any, root: Path, start: int, stop: int, bulk: bool = False) -> tuple[float, float]:
    """``fedcredit party ingest [--bulk]`` of list entries start..stop at the (stopped) member: (seconds, peak
    RSS MB of the ingest process)."""
    import subprocess

    from scripts.localfed import fedcredit_cmd

    write_blacklist_file(root / "list.csv", start, stop)
    (root / "list.toml").write_text(BLACKLIST_SCHEMA)
    peak, stop_ev = [0], threading.Event()
    t0 = time.perf_counter()
    proc = subprocess.Popen([*fedcredit_cmd(), "party", "ingest", str(root / "list.csv"), "--schema",
                             str(root / "list.toml"), "--home", str(fed.party_home("member")), "--quiet",
                             *(["--bulk"] if bulk else [])],
                            env=fed.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = threading.Thread(target=_sample_rss, args=(proc.pid, stop_ev, peak), daemon=True)
    sampler.start()
    so, se = proc.communicate()
    took = time.perf_counter() - t0
    stop_ev.set()
    sampler.join()
    (root / "list.csv").unlink()
    if proc.returncode != 0:
        raise SystemExit(f"blacklist ingest failed: {se.strip() or so.strip()}")
    return took, round(peak[0] / 2**20, 1)


def bench_blacklist_path(n: int, requests: int = 1000, ingest_n: int = 0,
                         keep: Path | None = None) -> dict[str, Any]:
    """One applicant's blacklist check through the scoring path: a lender (the requester, this process with
    the lender's certificate and pseudonym key) asks the coordinator over gRPC + mutual TLS; the coordinator
    sends ``scoring.contribute`` over its link to the member node (its own process, ``party serve``) whose
    store holds ``n`` flagged subjects; the member looks the pseudonym up in its fraud table and encrypts
    the flag under the lender's CKKS key; the coordinator sums; the lender decrypts.

    The member's list: all ``n`` entries with ``fedcredit party ingest --bulk`` (timed, with the ingest
    process's peak RSS); ``ingest_n`` > 0 first times the row-by-row ``party ingest`` of that many entries
    (then discards that store). ``keep``: build into (or reuse) this folder.
    """
    from fedcore.protocol.scoring.requester import Requester
    from party_node.config import load_party_config
    from party_node.pseudonym import PseudonymKey, default_key_path
    from party_node.scoring import GrpcGateway
    from scripts.localfed import LocalFederation

    out: dict[str, Any] = {}
    k = "50m" if n == 50_000_000 else (f"{n // 1_000_000}m" if n >= 1_000_000 else str(n))
    ik = f"{ingest_n // 1_000_000}m" if ingest_n >= 1_000_000 else str(ingest_n)
    ingest_n = min(ingest_n, n)
    with contextlib.ExitStack() as stack:
        if keep is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        else:
            root = keep
            root.mkdir(parents=True, exist_ok=True)
        built = root / "built.json"
        fed = stack.enter_context(LocalFederation(root / "fed", {"yixin": "lender", "member": "lender"}))
        if built.exists() and json.loads(built.read_text())["n"] == n:
            out.update(json.loads(built.read_text())["build"])
            fed.start()
            fed.wait_online(timeout=600)
        else:
            if (root / "fed").exists():
                shutil.rmtree(root / "fed")
            fed.setup()
            fed.start()
            fed.wait_online(timeout=120)
            fed.cli("coordinator", "distribute-key", "--home", str(fed.coordinator_home))
            fed.kill("member", 15)  # the member loads its list offline, then serves
            if ingest_n:  # the row-by-row ingest, for comparison, into a throw-away copy of the member's store
                took, peak = _ingest_list(fed, root, 0, ingest_n)
                out[f"blacklist_party_ingest_{ik}_s"] = round(took, 1)
                out[f"blacklist_party_ingest_{ik}_peak_rss_mb"] = peak
                for f in fed.party_home("member").glob("store.db*"):
                    f.unlink()
            took, peak = _ingest_list(fed, root, 0, n, bulk=True)
            out[f"blacklist_{k}_bulk_ingest_s"] = round(took, 1)
            out[f"blacklist_{k}_bulk_ingest_peak_rss_mb"] = peak
            out["blacklist_build_load_average"] = round(os.getloadavg()[0], 1)
            home = fed.party_home("member")
            out[f"blacklist_{k}_store_mb"] = round(sum(p.stat().st_size for p in home.glob("store.db*")) / 2**20, 1)
            built.write_text(json.dumps({"n": n, "build": out}))
            fed.start_party("member")
            fed.wait_online(["member"], timeout=600)
        member_pid = fed.procs["member"].pid
        idle = _tree_rss(member_pid)
        cfg = load_party_config(fed.party_home("yixin"))
        tls = cfg.tls
        gw = GrpcGateway(cfg.coordinator.address, cfg.coordinator.server_name, tls.ca_cert.read_bytes(),
                         tls.cert.read_bytes(), tls.key.read_bytes())
        pkey = PseudonymKey.load(default_key_path(fed.party_home("yixin")))
        requester = Requester(gw)
        rng = np.random.default_rng(3)
        listed = [x.decode() for x in _list_ids(0, n)[rng.integers(0, n, requests // 2)]] if n <= 2_000_000 \
            else [_list_ids(int(i), int(i) + 1)[0].decode() for i in rng.integers(0, n, requests // 2)]
        unknown = [f"u{int(v):016x}" for v in rng.integers(0, 2**62, requests - len(listed))]

        def check(raw: str, timeout_s: float = 30.0) -> int:
            outcome = requester.query(pkey.pseudonymize([raw], "opaque"), model_id="", model_version="",
                                      queries=("blacklist",), timeout_s=timeout_s)
            assert outcome.blacklist_hits is not None and outcome.contributors == 1
            return int(outcome.blacklist_hits[0])

        mpeak = [0]
        mstop = threading.Event()
        msampler = threading.Thread(target=_sample_rss, args=(member_pid, mstop, mpeak), daemon=True)
        msampler.start()
        t0 = time.perf_counter()
        assert check(listed[0], timeout_s=1800) == 1  # the member builds its fraud table on the first request
        first = time.perf_counter() - t0
        lat = []
        for i in range(requests):
            raw, want = (listed[i // 2], 1) if i % 2 == 0 else (unknown[i // 2], 0)
            t = time.perf_counter()
            got = check(raw)
            lat.append(time.perf_counter() - t)
            assert got == want, (raw, got, want)
        mstop.set()
        msampler.join()
        serving = _tree_rss(member_pid)
        gw.close()
    lat_ms = np.array(lat) * 1000
    out.update({
        "blacklist_n": n,
        f"blacklist_{k}_lookup_p50_ms": round(float(np.percentile(lat_ms, 50)), 2),
        f"blacklist_{k}_lookup_p99_ms": round(float(np.percentile(lat_ms, 99)), 2),
        f"blacklist_{k}_first_request_s": round(first, 1),
        f"blacklist_{k}_member_rss_mb": round(serving / 2**20, 1),
        f"blacklist_{k}_member_peak_rss_mb": round(mpeak[0] / 2**20, 1),
        f"blacklist_{k}_member_idle_rss_mb": round(idle / 2**20, 1),
        "blacklist_requests": requests,
        "blacklist_load_average": [round(x, 1) for x in os.getloadavg()],
        "blacklist_measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "blacklist_note": (
            "through the scoring path: one applicant per request (half listed, half not; every answer checked), "
            "the lender's Requester with its mTLS certificate -> coordinator Scoring/Score -> the member node "
            "process over its party link (scoring.contribute: fraud-table lookup, CKKS encryption under the "
            "lender's key) -> coordinator sum -> lender decrypts; latency = pseudonymize + round trip + decrypt. "
            "The member's list (SQLite store): one CSV loaded with `fedcredit party ingest --bulk` (one "
            "transaction; bulk_ingest_s, its process's peak RSS in bulk_ingest_peak_rss_mb, 1-minute load "
            "average at its end in blacklist_build_load_average); its fraud table is built on the "
            "first request (first_request_s; later rebuilds run in the background). member_rss_mb: the member "
            "node's RSS while serving (after the requests); "
            "member_peak_rss_mb: its peak during the table build and the requests; idle: after start"),
    })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--psi-n", type=int, default=1_000_000)
    ap.add_argument("--ray-n", type=int, default=200_000)
    ap.add_argument("--ingest-rows", type=int, default=1_000_000)
    ap.add_argument("--blacklist-n", type=int, default=50_000_000)
    ap.add_argument("--blacklist-requests", type=int, default=1000)
    ap.add_argument("--blacklist-ingest-n", type=int, default=0,
                    help="also time the row-by-row party ingest of this many list entries (before the bulk load)")
    ap.add_argument("--blacklist-dir", type=Path, default=None, help="build the member's store here (reused)")
    ap.add_argument("--psi-single", type=int, default=0,
                    help="run only one PSI of this many ids per party (e.g. 10000000) and write its measured keys")
    ap.add_argument("--only", default="", help="comma list of parts to run (default: all but the skipped)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: psi,ray,ingest,blacklist_table,blacklist")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    res: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    Part = tuple[str, Callable[[], dict[str, Any]]]
    parts: tuple[Part, ...] = (
             ("ingest", lambda: bench_ingest(args.ingest_rows)), ("ray", lambda: bench_ray(args.ray_n)),
             ("blacklist_table", lambda: bench_blacklist(args.blacklist_n)),
             ("blacklist", lambda: bench_blacklist_path(args.blacklist_n, args.blacklist_requests,
                                                        args.blacklist_ingest_n, args.blacklist_dir)),
             ("psi", lambda: bench_psi(args.psi_n)))
    if args.psi_single:
        parts = (("psi_single", lambda: bench_psi_single(args.psi_single)),)
    for name, fn in parts:
        if name in skip or (args.only and name not in args.only.split(",")):
            continue
        print(f"{name} ...", flush=True)
        part = fn()
        print(json.dumps(part, indent=1), flush=True)
        res.update(part)
        res["machine"] = f"{platform.machine()} cores={os.cpu_count()}"
        res["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
