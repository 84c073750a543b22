"""A whole federation on loopback, as real processes driven through the ``fedcredit`` CLI.

Used by the quick start (``scripts/demo.py``) and by the integration tests, so both exercise exactly
what an operator runs: ``coordinator init``, ``party init``, ``coordinator admit``, ``party
install-kit``, then ``coordinator serve`` and one ``party serve`` per party, each its own process with
mutual TLS between them. It lives in ``scripts/`` because it may import both roles (here: the
coordinator's admin client).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import typer

from fedcore.errors import DeadlineExceeded, FedcreditError

DEMO_PARTIES: dict[str, str] = {
    "yixin": "lender",
    "meili": "lender",
    "cango": "lender",
    "uxin": "lender",
    "guazi": "lender",
    "tiange": "platform",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fedcredit_cmd() -> list[str]:
    return [sys.executable, "-m", "fedcore.cli"]


class LocalFederation:
    """A coordinator and parties under ``root``, each a separate process on 127.0.0.1."""

    def __init__(
        self,
        root: Path,
        parties: dict[str, str],
        *,
        heartbeat_s: float = 2.0,  # generous: a loaded machine must not drop a busy party (CKKS steps)
        offline_after_s: float = 6.0,  # silence before the coordinator drops a party, whatever heartbeat_s is
        env: dict[str, str] | None = None,
        dashboard: bool = False,
        state_url: str = "",
    ) -> None:
        self.root = root
        self.state_url = state_url  # the coordinator's registry in PostgreSQL instead of SQLite
        self.parties = dict(parties)
        self.coordinator_home = root / "coordinator"
        self.kits = root / "kits"
        self.logs = root / "logs"
        self.port = 0
        self.heartbeat_s = heartbeat_s
        # a short heartbeat finds a party up quickly, but 3 missed ones (the default) is 1.5 s at 0.5 s: a
        # loaded 2-core machine can starve a busy party that long, and a run then loses it mid-step
        self.missed_heartbeats = max(3, math.ceil(offline_after_s / heartbeat_s))
        self.dashboard = dashboard
        self.dashboard_port = 0
        self.env = {
            **os.environ,
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def party_home(self, name: str) -> Path:
        return self.root / "parties" / name

    def cli(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*fedcredit_cmd(), *args],
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=900,  # a hang guard only: a training run's CLI call takes minutes on a loaded 2-core machine
        )
        if check and proc.returncode != 0:
            raise FedcreditError(
                f"`fedcredit {' '.join(args)}` failed: {proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc

    def setup(self) -> None:
        """Create the federation: CA, coordinator, each party's key and CSR, kits, installed."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.cli(
            "coordinator", "init", "--home", str(self.coordinator_home), "--listen", f"127.0.0.1:{self.port}",
            *(["--state-url", self.state_url] if self.state_url else []),
        )
        self._tune(self.coordinator_home / "coordinator.toml", "link",
                   {"heartbeat_s": self.heartbeat_s, "missed_heartbeats": self.missed_heartbeats})
        if self.dashboard:
            self.dashboard_port = free_port()
            self._tune(self.coordinator_home / "coordinator.toml", "dashboard",
                       {"listen": f"127.0.0.1:{self.dashboard_port}"})

        def one(name: str) -> None:
            home = self.party_home(name)
            self.cli("party", "init", "--name", name, "--home", str(home))
            self.cli(
                "coordinator",
                "admit",
                str(home / "party.csr"),
                "--role",
                self.parties[name],
                "--home",
                str(self.coordinator_home),
                "--out",
                str(self.kits),
            )
            self.cli("party", "install-kit", str(self.kits / name), "--home", str(home))
            self._tune(home / "party.toml", "link", {"heartbeat_s": self.heartbeat_s})

        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(one, self.parties))

    @staticmethod
    def _tune(path: Path, section: str, values: dict[str, Any]) -> None:
        import tomllib

        from fedcore.config import dump_toml

        data = tomllib.loads(path.read_text())
        data.setdefault(section, {}).update(values)
        path.write_text(dump_toml(data))

    def _spawn(self, key: str, args: list[str]) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{key}.log", "ab")
        proc = subprocess.Popen(
            [*fedcredit_cmd(), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        log.close()
        self.procs[key] = proc
        return proc

    def synth(self, people: int, seed: int = 7) -> Path:
        """Write a synthetic federation's per-party files under ``root/data``."""
        out = self.root / "data"
        from scripts.synthetic import SynthConfig, generate, write_federation

        write_federation(generate(SynthConfig(people=people, seed=seed)), out)
        return out

    def ingest(self, name: str, file: Path, schema: Path) -> str:
        """``fedcredit party ingest`` at party ``name``; returns its report line."""
        proc = self.cli("party", "ingest", str(file), "--schema", str(schema), "--home", str(self.party_home(name)),
                        "--quiet")
        return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""

    def ingest_synthetic(self, data: Path) -> dict[str, str]:
        """Each party ingests its own synthetic file (the files and schemas ``synth`` wrote)."""
        reports = {}
        for name in self.parties:
            folder = data / name
            schemas = sorted(folder.glob("*.toml"))
            if not schemas:
                continue
            schema = schemas[0]
            files = [p for p in folder.iterdir() if p.stem == schema.stem and p.suffix in (".csv", ".parquet")]
            reports[name] = self.ingest(name, files[0], schema)
        return reports

    def start_coordinator(self) -> subprocess.Popen[bytes]:
        pf = self.coordinator_home / "run" / "coordinator.port"
        pf.unlink(missing_ok=True)
        proc = self._spawn("coordinator", ["coordinator", "serve", "--home", str(self.coordinator_home)])
        end = time.monotonic() + 30
        while not pf.exists():
            if proc.poll() is not None:
                raise FedcreditError(
                    f"coordinator exited with {proc.returncode}; see {self.logs / 'coordinator.log'}"
                )
            if time.monotonic() > end:
                raise DeadlineExceeded("coordinator did not start within 30 s")
            time.sleep(0.05)
        return proc

    def start_party(self, name: str) -> subprocess.Popen[bytes]:
        return self._spawn(name, ["party", "serve", "--home", str(self.party_home(name))])

    def start(self) -> None:
        self.start_coordinator()
        for name in self.parties:
            self.start_party(name)

    def admin(self) -> Any:
        """An admin API client (imports the coordinator package lazily: for callers that may)."""
        from coordinator.admin_client import AdminClient
        from coordinator.config import load_coordinator_config

        return AdminClient(load_coordinator_config(self.coordinator_home))

    def online(self) -> dict[str, bool]:
        try:
            with self.admin() as client:
                return {p.name: p.online for p in client.list_parties()}
        except FedcreditError:
            return {}

    def wait_online(self, names: list[str] | None = None, timeout: float = 30.0) -> float:
        """Wait until the named parties (default: all) are live; returns seconds waited."""
        wanted = set(names or self.parties)
        start = time.monotonic()
        while True:
            live = {n for n, up in self.online().items() if up}
            if wanted <= live:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise DeadlineExceeded(f"parties not live after {timeout:.0f} s: {sorted(wanted - live)}")
            time.sleep(0.1)

    def kill(self, key: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.get(key)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=120)

    def serve_scoring(self, name: str) -> tuple[str, str, Path]:
        """Give party ``name`` its local scoring API (a ``scoring.json`` with free loopback ports; the
        default model name ``joint``), restart it so it serves, wait until the HTTP API answers.
        Returns (gRPC address, HTTP URL, token file)."""
        import json
        import urllib.request

        home = self.party_home(name)
        grpc_addr, http_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        (home / "scoring.json").write_text(json.dumps({"grpc_listen": grpc_addr, "http_listen": http_addr}))
        self.kill(name, signal.SIGTERM)
        self.start_party(name)
        self.wait_online([name], timeout=120)
        url = f"http://{http_addr}"
        end = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=5):  # noqa: S310 (loopback)
                    break
            except OSError:
                if time.monotonic() > end or self.procs[name].poll() is not None:
                    raise DeadlineExceeded(f"{name}'s local scoring API did not come up; see {self.logs}") from None
                time.sleep(0.2)
        return grpc_addr, url, home / "scoring_api.token"

    def stop(self) -> dict[str, int | None]:
        """SIGTERM everything (parties first), wait, SIGKILL stragglers; returns exit codes."""
        order = [k for k in self.procs if k != "coordinator"] + (
            ["coordinator"] if "coordinator" in self.procs else []
        )
        for key in order:
            proc = self.procs[key]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for key in order:
            proc = self.procs[key]
            try:
                codes[key] = proc.wait(timeout=120)  # a hang guard: a loaded machine stops slowly
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[key] = proc.wait()
        self.procs.clear()
        return codes

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()


def score_examples(fed: LocalFederation, root: Path, model: str, n_batch: int = 500) -> list[str]:
    """Score one applicant and a batch at yixin with the joint model; lines to show."""
    import csv
    import json

    with open(root / "data" / "yixin" / "applications.csv", newline="") as f:
        ids = [row["applicant_id"] for _, row in zip(range(n_batch), csv.DictReader(f), strict=False)]
    home = str(fed.party_home("yixin"))
    one = json.loads(fed.cli("party", "score", "--id", ids[0], "--model", model, "--home", home).stdout)
    lines = [
        f"applicant {ids[0][:3]}****{ids[0][-4:]}: PD {one['prob_default']:.4f} with the consortium's data;"
        f" {one['points']:.0f} points -> {one['decision']}"
        f" (tier {one['rate_tier']}); blacklist hits {one['blacklist_hits']}, "
        f"active loans elsewhere {one['active_loans_elsewhere']}",
        "reasons: " + "; ".join(str(r.get("feature", r)) for r in one.get("reasons", [])),
    ]
    batch = root / "applicants.csv"
    batch.write_text("id\n" + "".join(f"{i}\n" for i in ids))
    out = fed.cli("party", "score", "--file", str(batch), "--model", model, "--out", str(root / "scores.jsonl"),
                  "--home", home)
    rows = [json.loads(ln) for ln in (root / "scores.jsonl").read_text().splitlines()]
    with_p = sum(r["prob_default"] for r in rows) / len(rows)
    summary = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""
    lines.append(f"batch of {len(rows)}: mean PD {with_p:.4f}; {summary}")
    lines.append(f"scores in {root / 'scores.jsonl'}")
    return lines


def _val_auc(out: str) -> float:
    line = next(ln for ln in out.splitlines() if ln.startswith("model "))
    return float(line.split("validation AUC ", 1)[1].split()[0])


def demo_command(
    root: Annotated[Path, typer.Option(help="Where the demo federation lives.")] = Path("demo-federation"),
    keep: Annotated[bool, typer.Option(help="Keep an existing demo folder instead of starting fresh.")] = False,
    people: Annotated[int, typer.Option(help="Size of the synthetic population.")] = 20_000,
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 8,
    train_model: Annotated[str, typer.Option("--model", help="mlp or logistic.")] = "mlp",
    serve: Annotated[bool, typer.Option(help="Keep the federation and dashboard up until Ctrl-C.")] = False,
) -> None:
    """Run the coordinator and six party nodes on loopback with synthetic data: register, align, stop."""
    if root.exists() and not keep:
        shutil.rmtree(root)
    fed = LocalFederation(root, DEMO_PARTIES, dashboard=True)
    t0 = time.monotonic()
    coord = ["--home", str(fed.coordinator_home)]
    say = typer.echo
    say(f"[1/8] creating the federation in {root}: CA, coordinator, {len(DEMO_PARTIES)} parties "
        "(each makes its own key and CSR; the admin signs)")
    fed.setup()
    say(f"[2/8] synthetic data for {people} people; each party ingests its own file into its local store")
    for name, report in fed.ingest_synthetic(fed.synth(people)).items():
        say(f"      {name}: {report}")
    from scripts.realtime_demo import prepare_platform, realtime_examples

    preapproval_port = prepare_platform(fed)
    say(f"[3/8] starting the coordinator on 127.0.0.1:{fed.port} and {len(DEMO_PARTIES)} party processes (mutual TLS)")
    with fed:
        fed.start()
        waited = fed.wait_online(timeout=60)
        say(f"      all parties registered and live after {waited:.1f} s")
        say(fed.cli("coordinator", "parties", *coord).stdout.rstrip())
        say("      " + fed.cli("coordinator", "probe", "yixin", "--count", "50", *coord).stdout.strip())
        out = fed.cli("coordinator", "distribute-key", *coord).stdout.strip()
        say(f"      pseudonym key, sealed party to party: {out.splitlines()[-1]}")
        say("[4/8] entity alignment: private set intersection of each lender with the platform")
        psi_runs = {}
        for lender in [p for p, r in DEMO_PARTIES.items() if r == "lender"]:
            out = fed.cli("coordinator", "psi", "--parties", f"{lender},tiange", *coord).stdout.strip()
            say(f"      {lender} x tiange: {out.splitlines()[-1]}")
            psi_runs[lender] = out.rsplit("run id ", 1)[1].split()[0]
        lenders = ",".join(p for p, r in DEMO_PARTIES.items() if r == "lender")
        say(f"[5/8] horizontal training across the five lenders: {train_model} with CKKS-encrypted aggregation")
        out = fed.cli("coordinator", "train", "--parties", lenders, "--model", train_model, "--rounds",
                      str(rounds), "--secure", "he", *coord).stdout.strip()
        for line in out.splitlines():
            if "round " in line or line.startswith("model "):
                say("      " + line.split("] ", 1)[-1])
        say("      " + fed.cli("coordinator", "models", *coord).stdout.rstrip().replace("\n", "\n      "))
        run_id = next(ln.split("(run ", 1)[1].split(")")[0] for ln in out.splitlines() if ln.startswith("model "))
        report_dir = root / "report"
        fed.cli("coordinator", "report", run_id, "--out", str(report_dir), "--no-contribution", *coord)
        say(f"      evaluation report (ROC, KS, score distribution, bad rate by band): {report_dir / 'report.html'}")
        token = fed.coordinator_home / "admin" / "dashboard.token"
        say(f"      dashboard: http://127.0.0.1:{fed.dashboard_port}/ (admin token in {token})")
        say("[6/8] vertical training: the five lenders' application data with tiange's behaviour data, "
            "coordinated logistic regression under CKKS on the aligned borrowers")
        out = fed.cli("coordinator", "train", "--kind", "vertical", "--parties", f"{lenders},tiange",
                      "--rounds", "12", "--lr", "0.05", "--batch-size", "512",
                      "--psi-runs", ",".join(f"{k}={v}" for k, v in psi_runs.items()), *coord).stdout.strip()
        for line in out.splitlines():
            if "epoch " in line or line.startswith("model "):
                say("      " + line.split("] ", 1)[-1])
        joint = next(ln.split("(run ", 1)[1].split(")")[0] for ln in out.splitlines() if ln.startswith("model "))
        lr_auc = _val_auc(out)
        say("      hybrid gradient-boosted trees on the same alignment: lender splits on histograms summed under "
            "pairwise masks, platform splits on masked per-row gradients (docs/trees.md)")
        out = fed.cli("coordinator", "train", "--kind", "vertical", "--model", "gbdt", "--parties",
                      f"{lenders},tiange", "--n-trees", "40", "--depth", "3", "--early-stopping-rounds", "5",
                      "--psi-runs", ",".join(f"{k}={v}" for k, v in psi_runs.items()), *coord).stdout.strip()
        say(f"      validation AUC: logistic regression {lr_auc:.4f} | hybrid trees {_val_auc(out):.4f}")
        say("[7/8] joint scoring at yixin: the applicant's id and yixin's own data stay at yixin")
        for line in score_examples(fed, root, joint):
            say("      " + line)
        say("      real time: a live-stream pre-approval and a monitoring pass")
        for line in realtime_examples(fed, root, joint, preapproval_port):
            say("      " + line)
        if serve:
            grpc_addr, url, tok = fed.serve_scoring("yixin")
            say(f"      yixin's local scoring API: gRPC {grpc_addr}, HTTP {url}/v1/score (model 'joint'; "
                f"bearer token in {tok})")
            say(f"      try: curl -s {url}/v1/score -H \"Authorization: Bearer $(cat {tok})\" "
                "-d '{\"id\": \"<an applicant id>\"}'")
            say("      serving until Ctrl-C")
            with contextlib.suppress(KeyboardInterrupt):
                while all(p.poll() is None for p in fed.procs.values()):
                    time.sleep(1)
        say("[8/8] shutting down")
        codes = fed.stop()
    bad = {k: c for k, c in codes.items() if c not in (0, -signal.SIGTERM)}
    if bad:
        raise FedcreditError(f"processes did not stop cleanly: {bad}; logs in {fed.logs}")
    say(f"done in {time.monotonic() - t0:.1f} s; logs in {fed.logs}")
