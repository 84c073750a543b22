"""Benchmark joint HE scoring with six parties as processes on loopback (mutual TLS gRPC).

Processes: the coordinator (with the ``Scoring`` service wired as the lead will wire it), five
contributors (four lenders and the platform, each a real party link client serving
``scoring.contribute`` over ``N`` synthetic subjects), and the requester lender's node serving the local
scoring gRPC API. This process plays the loan-origination system (single and concurrent requests) and,
for the 1M batch, the requester node itself (``ScoringService.score_stream`` over the same gateway).

Writes ``benchmarks/results/scoring.json``:

- ``single_p50_ms`` / ``single_p99_ms``: one applicant through the local gRPC API, sequential;
- ``concurrent_rps`` / ``concurrent_errors``: 8 client threads for ``--concurrent-s`` seconds;
- ``batch_1m_s``: ``--batch`` applicants end to end at the requester (pseudonymize, fan-out, decrypt,
  points, reasons, bands); ``coordinator_peak_rss_mb``: the coordinator process's VmHWM afterwards;
- ``max_abs_prob_err``: the batch's probabilities against the plaintext joint model;
- ``plaintext_batch_1m_s``: the same fan-out in plaintext (lookups + sums, no crypto, in process);
- ``paillier_batch_1m_s_extrapolated``: phe 2048-bit encrypt + 4 adds + decrypt per applicant, measured
  on a sample and extrapolated (contributors encrypt in parallel on their own machines).

Usage: ``python scripts/bench_scoring.py [--batch 1000000] [--concurrent-s 60] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from fedcore.protocol.scoring.messages import ModelSlice  # noqa: E402
from fedcore.protocol.scoring.party import SortedTable  # noqa: E402
from fedcore.protocol.scoring.requester import sigmoid  # noqa: E402
from party_node.pseudonym import PseudonymKey  # noqa: E402

CONTRIBUTORS = {
    "lender2": "lender",
    "lender3": "lender",
    "lender4": "lender",
    "lender5": "lender",
    "platform": "platform",
}
REQUESTER = "lender1"
MODEL, VERSION = "joint", "1"
KEY = PseudonymKey(hashlib.sha256(b"bench pseudonym key").digest())
K_OWN, K_OTHER = 6, 8


def phone(i: int) -> str:
    return f"13{i:09d}"


def party_data(name: str, n: int) -> tuple[ModelSlice, np.ndarray, np.ndarray]:
    """Deterministic synthetic data: (slice, known mask, partial logit of every subject)."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big"))
    k = K_OWN if name == REQUESTER else K_OTHER
    sl = ModelSlice(
        MODEL,
        VERSION,
        name,
        "d",
        tuple(f"{name}_f{j}" for j in range(k)),
        rng.normal(0, 0.3, k),
        rng.normal(2, 1, k),
        rng.uniform(0.5, 2, k),
        -2.0 if name == REQUESTER else None,
    )
    x = rng.normal(sl.mean, sl.std, size=(n, k))
    known = rng.random(n) < (1.0 if name == REQUESTER else 0.6)
    return sl, known, sl.partial_logit(x) if name != REQUESTER else x  # requester: its features


def pseudonyms(n: int) -> np.ndarray:
    return np.array(KEY.pseudonymize((phone(i) for i in range(n)), "phone"), dtype="S16")


BENCH_TOKEN = "bench-local-scoring-token"  # noqa: S105 (the local API needs one; loopback only)

# ---- child processes -------------------------------------------------------------------------------


def run_coordinator(home: Path) -> None:
    import coordinator.server as server_mod
    from coordinator.config import load_coordinator_config

    srv = server_mod.CoordinatorServer(load_coordinator_config(home), port=None)
    srv.serve_forever()


def run_contributor(home: Path, name: str, n: int) -> None:
    from fedcore.protocol.messages import DataSummary
    from fedcore.protocol.scoring.party import ArrayContributions, ScoringParty
    from fedcore.protocol.tasks import HandlerRegistry
    from party_node.config import load_party_config
    from party_node.link import LinkClient, LinkCredentials

    sl, known, logits = party_data(name, n)
    ps = pseudonyms(n)
    src = ArrayContributions(
        {MODEL: sl}, {MODEL: SortedTable(ps[known], logits[known])}, SortedTable(ps[::97]), SortedTable(ps[::5])
    )
    reg = HandlerRegistry()
    ScoringParty(src).register(reg)
    cfg = load_party_config(home)
    tls = cfg.tls
    client = LinkClient(
        name=name,
        address=cfg.coordinator.address,
        server_name=cfg.coordinator.server_name,
        credentials=LinkCredentials(tls.ca_cert.read_bytes(), tls.cert.read_bytes(), tls.key.read_bytes()),
        registry=reg,
        summary=DataSummary,
        heartbeat_s=1.0,
        max_parallel_tasks=8,
    )
    client.run()


def requester_service(home: Path) -> Any:
    from party_node.config import load_party_config
    from party_node.scoring import ScoringService, build_service
    from party_node.scoring_batch import ScoringSettings
    from party_node.store import Store

    cfg = load_party_config(home)
    store = Store.open(cfg.store_url())
    store.install_pseudonym_key(KEY)
    sl, _, _ = party_data(REQUESTER, 1)
    (home / "models" / MODEL).mkdir(parents=True, exist_ok=True)
    (home / "models" / MODEL / "slice.json").write_text(json.dumps(sl.to_dict()))
    settings = ScoringSettings(
        model_id=MODEL, max_request=20_000, chunk=32_768, batch_parallel=2, grpc_listen="127.0.0.1:0", http_listen=""
    )
    svc: ScoringService = build_service(cfg, store, settings)
    return svc


def run_requester(home: Path, port_file: Path) -> None:
    from party_node.scoring_api import serve_local_grpc

    svc = requester_service(home)
    server, port = serve_local_grpc(svc, "127.0.0.1:0", workers=16, token=BENCH_TOKEN)
    port_file.write_text(str(port))
    server.wait_for_termination()


# ---- measurements ------------------------------------------------------------------------------------


def rss_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def plaintext_truth(n: int, own_x: np.ndarray) -> np.ndarray:
    own_sl, _, _ = party_data(REQUESTER, 1)
    z = own_sl.intercept + own_sl.partial_logit(own_x)  # type: ignore[operator]
    for name in CONTRIBUTORS:
        _, known, logits = party_data(name, n)
        z = z + np.where(known, logits, 0.0)
    return sigmoid(z)


def plaintext_flow_s(n: int) -> float:
    """The same fan-out without crypto: each contributor looks up its partial logits, the sum is formed."""
    ps = pseudonyms(n)
    tables = []
    for name in CONTRIBUTORS:
        _, known, logits = party_data(name, n)
        tables.append(SortedTable(ps[known], logits[known]))
    t0 = time.perf_counter()
    total = np.zeros(n)
    for t in tables:
        total += t.lookup(ps)
    sigmoid(total)
    return time.perf_counter() - t0


def paillier_extrapolated(n: int, sample: int = 50) -> tuple[float, dict[str, float]]:
    from phe import paillier

    pub, priv = paillier.generate_paillier_keypair(n_length=2048)
    vals = np.random.default_rng(1).normal(0, 1, sample)
    t0 = time.perf_counter()
    enc = [pub.encrypt(float(v)) for v in vals]
    t_enc = (time.perf_counter() - t0) / sample
    t0 = time.perf_counter()
    acc = enc[0]
    for _ in range(4):
        for e in enc:
            acc = acc + e
    t_add = (time.perf_counter() - t0) / (4 * sample)
    t0 = time.perf_counter()
    for e in enc:
        priv.decrypt(e)
    t_dec = (time.perf_counter() - t0) / sample
    per = t_enc + 4 * t_add + t_dec
    return n * per, {"encrypt_ms": t_enc * 1e3, "add_ms": t_add * 1e3, "decrypt_ms": t_dec * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=1_000_000)
    ap.add_argument("--single", type=int, default=300)
    ap.add_argument("--concurrent-s", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scoring.json")
    ap.add_argument("--role", default="")
    ap.add_argument("--home", type=Path)
    ap.add_argument("--name", default="")
    ap.add_argument("--port-file", type=Path)
    args = ap.parse_args()
    if args.role == "coordinator":
        run_coordinator(args.home)
        return
    if args.role == "contributor":
        run_contributor(args.home, args.name, args.batch)
        return
    if args.role == "requester":
        run_requester(args.home, args.port_file)
        return

    import grpc
    from fedcredit.v1 import scoring_pb2, scoring_pb2_grpc

    from coordinator.config import load_coordinator_config
    from party_node.scoring_batch import ApplicantTable
    from tests.conftest import make_homes

    result: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "parties": 6,
        "batch_n": args.batch,
    }
    procs: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    me = [sys.executable, str(Path(__file__).resolve())]
    try:
        homes = make_homes(tmp, {REQUESTER: "lender", **CONTRIBUTORS}, heartbeat_s=1.0)
        cproc = subprocess.Popen([*me, "--role", "coordinator", "--home", str(homes.coordinator)], env=env)
        procs.append(cproc)
        port_file = load_coordinator_config(homes.coordinator).coordinator.port_file
        for name in CONTRIBUTORS:
            procs.append(
                subprocess.Popen(
                    [
                        *me,
                        "--role",
                        "contributor",
                        "--home",
                        str(homes.parties[name]),
                        "--name",
                        name,
                        "--batch",
                        str(args.batch),
                    ],
                    env=env,
                )
            )
        rport = tmp / "requester.port"
        procs.append(
            subprocess.Popen(
                [*me, "--role", "requester", "--home", str(homes.parties[REQUESTER]), "--port-file", str(rport)],
                env=env,
            )
        )
        end = time.monotonic() + 300
        while not (rport.exists() and port_file.exists()) and time.monotonic() < end:
            time.sleep(0.2)
        # wait until every contributor has its data loaded and is online (a probe request succeeds)
        chan = grpc.insecure_channel(f"127.0.0.1:{rport.read_text()}")
        stub = scoring_pb2_grpc.LocalScoringStub(chan)
        sl_own, _, own_x = party_data(REQUESTER, 20_000)

        def one(i: int) -> scoring_pb2.LocalScoreResponse:
            feats = {f: float(v) for f, v in zip(sl_own.features, own_x[i % 20_000], strict=True)}
            req = scoring_pb2.LocalScoreRequest(applicants=[scoring_pb2.Applicant(id=phone(i), features=feats)])
            return stub.Score(req, timeout=30, metadata=(("authorization", f"Bearer {BENCH_TOKEN}"),))

        while True:
            try:
                r = one(0)
                if not r.scores[0].partial:
                    break
            except grpc.RpcError as err:
                if time.monotonic() > end:
                    raise SystemExit(f"federation did not come up: {err.details()}") from None
                time.sleep(1.0)
        for i in range(20):
            one(i)
        lat = []
        for i in range(args.single):
            t0 = time.perf_counter()
            one(i)
            lat.append((time.perf_counter() - t0) * 1e3)
        lat.sort()
        result["single_p50_ms"] = round(statistics.median(lat), 2)
        result["single_p99_ms"] = round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2)
        print(f"single: p50 {result['single_p50_ms']} ms, p99 {result['single_p99_ms']} ms", flush=True)

        count = [0, 0]
        lock = threading.Lock()
        stop_at = time.monotonic() + args.concurrent_s

        def worker(w: int) -> None:
            i = w * 100_000
            while time.monotonic() < stop_at:
                try:
                    one(i)
                    ok = 1
                except grpc.RpcError:
                    ok = 0
                with lock:
                    count[0 if ok else 1] += 1
                i += 1

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(args.clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        el = time.monotonic() - t0
        result["concurrent_rps"] = round(count[0] / el, 1)
        result["concurrent_errors"] = count[1]
        result["concurrent_seconds"] = round(el, 1)
        result["concurrent_clients"] = args.clients
        print(f"concurrent: {result['concurrent_rps']} rps, {count[1]} errors", flush=True)
        chan.close()

        # the 1M batch, at the requester (this process acts as the requester node)
        svc = requester_service(homes.parties[REQUESTER])
        n = args.batch
        _, _, own_x = party_data(REQUESTER, n)
        ids = [phone(i) for i in range(n)]
        t0 = time.perf_counter()
        probs = np.empty(n)
        pos = 0
        for b in svc.score_table(ApplicantTable(ids, "phone", own_x), queries=("score",)):
            probs[pos : pos + len(b)] = b.prob_default
            pos += len(b)
        result["batch_1m_s"] = round(time.perf_counter() - t0, 2)
        result["coordinator_peak_rss_mb"] = rss_hwm_mb(cproc.pid)
        result["max_abs_prob_err"] = float(np.max(np.abs(probs - plaintext_truth(n, own_x))))
        print(
            f"batch {n}: {result['batch_1m_s']} s, coordinator peak {result['coordinator_peak_rss_mb']} MB, "
            f"max err {result['max_abs_prob_err']:.2e}",
            flush=True,
        )
        if n != 1_000_000:
            result["batch_note"] = f"batch measured on {n} applicants, not 1M"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    result["plaintext_batch_1m_s"] = round(plaintext_flow_s(1_000_000), 3)
    paillier_s, parts = paillier_extrapolated(1_000_000)
    result["paillier_batch_1m_s_extrapolated"] = round(paillier_s, 0)
    result["paillier_per_value"] = {k: round(v, 3) for k, v in parts.items()}
    result["paillier_note"] = (
        "per applicant: one encryption (the 5 contributors encrypt in parallel), 4 adds "
        "at the coordinator, one decryption; measured on 50 values, times 1M"
    )
    if result.get("batch_1m_s"):
        result["ratio_he_to_plaintext"] = round(result["batch_1m_s"] / result["plaintext_batch_1m_s"], 1)
        result["ratio_paillier_to_he"] = round(paillier_s / result["batch_1m_s"], 1)
    result["plaintext_note"] = "plaintext flow timed in one process: 5 lookups + sum + sigmoid, no transport"
    result["load_average_after_run"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
