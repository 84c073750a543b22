"""A throw-away local Ray cluster for tests and benchmarks: a head and further nodes on this machine.

Each node is one ``ray start --block`` process on free ports with its own CPU count, all sharing one
short temporary folder; :meth:`RayCluster.stop` ends those processes by their pids (``--block`` makes
each one stop the Ray processes it started) and never runs ``ray stop``, which would end every Ray
process on the machine. A party points ``compute.ray_address`` at :attr:`RayCluster.address`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

RESTARTS = 5  # how often a node that timed out while starting is started again


class RayClusterError(RuntimeError):
    """The local cluster could not start."""


def _free_port() -> int:
    return _free_ports(1)[0]


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: every socket stays bound until all are picked (one at a time, the
    kernel may hand the same just-closed port out twice, and Ray refuses two components on one port)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _ray_cli() -> list[str]:
    ray = Path(sys.executable).parent / "ray"
    if not ray.exists():
        raise RayClusterError("the `ray` command is not installed: pip install 'fedcredit[ray]'")
    return [str(ray)]


class RayCluster:
    """``nodes`` Ray nodes on this machine with ``cpus_per_node`` CPUs each; use as a context manager."""

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1, object_store_mb: int = 200) -> None:
        self.nodes, self.cpus, self.store_mb = nodes, cpus_per_node, object_store_mb
        self.root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: unix socket paths
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._procs: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}

    def _node_args(self) -> list[str]:
        while True:  # six component ports outside the 41 worker ports above ``lo``
            *ports, lo = _free_ports(7)
            if not any(lo <= p <= lo + 40 for p in ports):
                break
        return [
            f"--num-cpus={self.cpus}",
            "--num-gpus=0",
            f"--object-store-memory={self.store_mb << 20}",
            f"--node-manager-port={ports[0]}",
            f"--object-manager-port={ports[1]}",
            f"--dashboard-agent-listen-port={ports[2]}",
            f"--dashboard-agent-grpc-port={ports[3]}",
            f"--metrics-export-port={ports[4]}",
            f"--runtime-env-agent-port={ports[5]}",
            f"--min-worker-port={lo}",
            f"--max-worker-port={lo + 40}",
            "--disable-usage-stats",
            "--node-ip-address=127.0.0.1",
            "--block",
        ]

    def _spawn(self, args: list[str], name: str, slot: int | None = None) -> None:
        """Start one node (``slot``: in place of the node at that index, which exited while starting)."""
        log = open(self.root / f"{name}.log", "ab")
        proc = subprocess.Popen(
            [*_ray_cli(), "start", *args], stdout=log, stderr=subprocess.STDOUT, env=self.env,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        if slot is None:
            self._procs.append(proc)
            self._args.append(args)
        else:
            self._procs[slot] = proc

    def start(self) -> RayCluster:
        self._args: list[list[str]] = []
        try:
            self._spawn(
                [
                    "--head",
                    f"--port={self.port}",
                    f"--temp-dir={self.root}",
                    "--include-dashboard=false",
                    f"--ray-client-server-port={_free_port()}",
                    *self._node_args(),
                ],
                "head",
            )
            self._wait_cpus(self.cpus)
            for i in range(1, self.nodes):
                self._spawn([f"--address={self.address}", *self._node_args()], f"node{i}")
            self._wait_cpus(self.cpus * self.nodes)
        except BaseException:
            self.stop()  # no node outlives a failed start
            raise
        return self

    def _wait_cpus(self, want: int) -> None:
        """Poll the cluster's status until it offers ``want`` CPUs (a node that exits fails at once)."""
        probe = (
            "import ray,sys;ray.init(address=sys.argv[1],log_to_driver=False);"
            "print(int(ray.cluster_resources().get('CPU',0)))"
        )
        restarts = 0
        while True:
            for i, p in enumerate(self._procs):
                if p.poll() is not None:
                    name = "head" if i == 0 else f"node{i}"
                    log = (self.root / f"{name}.log").read_text(errors="replace").strip().splitlines()[-15:]
                    # Ray gives a starting node 30 s to register (hard-coded): on a loaded machine it can
                    # miss that and exit; such a node is started again, a few times.
                    if restarts < RESTARTS and any("timed out during startup" in line for line in log):
                        restarts += 1
                        self._spawn(self._args[i], name, slot=i)
                        continue
                    raise RayClusterError(f"Ray {name} exited with {p.returncode}:\n" + "\n".join(log))
            r = subprocess.run(
                [sys.executable, "-c", probe, self.address],
                capture_output=True,
                env=self.env,
                text=True,
                check=False,
                timeout=300,
            )
            if r.returncode == 0 and r.stdout.strip().splitlines()[-1:] == [str(want)]:
                return
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop the nodes we started (workers first, then the head), by their pids."""
        for p in reversed(self._procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)  # the node's own session (start_new_session)
                    p.wait()
        self._procs = []
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
