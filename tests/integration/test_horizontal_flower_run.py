"""The same ServerApp/ClientApp under Flower's own deployment runtime: `flwr run` against a local
SuperLink and two SuperNodes (insecure, loopback), HE-secured FedAvg for one round on 2,000 rows per
node (kept small: the point is the real deployment path, not the model; quality is tested elsewhere).
Every wait is on a state (a port that accepts, a file that exists, a process that ended)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.fate_data import fate_data_dir
from tests.conftest import free_port

DATA = fate_data_dir()
VENV_BIN = Path(sys.executable).parent

# Flower 1.41 starts a fresh `flwr-clientapp` process for every message a SuperNode handles (its imports of
# Flower, torch and TenSEAL: ~8 CPU-s): seven per node for keys, scaler, round and evaluation, then one per
# calibration iteration (up to 12). That is the bulk of the time: 147 s at load 12 on two cores, over 420 s
# at load 7-8 beside other test modules.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

APP_TOML = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedcredit-horizontal"
version = "1.0.0"
description = "fedcredit horizontal training as a Flower app"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedcredit"

[tool.flwr.app.components]
serverapp = "fedcore.protocol.horizontal.server:server_app"
clientapp = "fedcore.protocol.horizontal.party:client_app"

[tool.flwr.app.config]
model = "logistic"
rounds = 1
secure = "he"
min-parties = 2
strategy = "fedavg"
run-name = "flwr-it"
result-file = "{result}"
checkpoint-dir = "{ckpt}"
"""


def test_flwr_run_local_deployment(tmp_path: Path) -> None:
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1", FLWR_HOME=str(tmp_path / "home"))
    root = Path(__file__).resolve().parents[2]
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    # Flower's SuperNode starts `flower-superexec` by name: the venv's bin must be on PATH.
    env["PATH"] = str(VENV_BIN) + os.pathsep + env.get("PATH", "")
    app = tmp_path / "app"
    app.mkdir()
    result = tmp_path / "result.json"
    (app / "pyproject.toml").write_text(APP_TOML.format(result=result, ckpt=tmp_path / "ckpt"))
    link = free_port()  # flwr 1.41: one HTTP port for the Control, Fleet and Runtime APIs
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "127.0.0.1:{link}"\ninsecure = true\n'
    )
    procs: list[subprocess.Popen[bytes]] = []
    logs = tmp_path / "logs"
    logs.mkdir()

    def start(name: str, args: list[str]) -> None:
        out = open(logs / f"{name}.log", "wb")
        procs.append(subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path))

    try:
        start(
            "superlink",
            [
                str(VENV_BIN / "flower-superlink"),
                "--insecure",
                "--host=127.0.0.1",
                f"--port={link}",
                f"--database={tmp_path / 'link.db'}",
            ],
        )
        _wait_for_port(link, procs[0])
        for name, f in [("guest", "homo_guest"), ("host1", "homo_host_1")]:
            data = tmp_path / f"{name}.csv"
            with open(DATA / f"default_credit_{f}.csv") as src:
                data.write_text("".join(line for _, line in zip(range(2001), src, strict=False)))
            # Flower's own deployment: no fedcredit certificates, so the operator opts in to unbound keys
            node_cfg = f'data-file="{data}" state-dir="{tmp_path / name}" unbound-keys="true"'

            start(
                f"supernode-{name}",
                [
                    str(VENV_BIN / "flower-supernode"),
                    "--insecure",
                    f"--superlink=127.0.0.1:{link}",
                    "--host=127.0.0.1",
                    f"--port={free_port()}",
                    f"--node-config={node_cfg}",
                ],
            )
        # no wait for the SuperNodes: the ServerApp waits until min-parties nodes have joined. No timeout of
        # its own: the test's timeout mark is the hang guard (a 420 s limit here failed two runs at load 7-8
        # that were still progressing, one in the evaluation, one in the calibration iterations).
        run = subprocess.run(
            [str(VENV_BIN / "flwr"), "run", str(app), "local", "--stream"],
            env=env,
            capture_output=True,
            cwd=tmp_path,
        )
        # `flwr run --stream` returns when the run ended; the ServerApp wrote the result before that
        if not result.exists():
            dump = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(logs.iterdir()))
            pytest.fail(f"no result; flwr run rc={run.returncode}\n{run.stdout.decode()[-3000:]}\n{dump}")
        record = json.loads(result.read_text())
        assert [h["round"] for h in record["history"]] == [1]
        assert record["secure"] == "he" and len(record["parties"]) == 2 and record["dropped"] == []
        assert record["metrics"]["val_auc"] > 0.6
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Until something accepts on 127.0.0.1:port (fails at once if the process died)."""
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the SuperLink exited ({proc.returncode}) before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)  # poll the state again
