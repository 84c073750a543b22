"""The same ServerApp/ClientApp under Flower's own deployment runtime: `flwr run` against a local
SuperLink and three SuperNodes (insecure, loopback), HE-secured FedAvg for 2 rounds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.fate_data import fate_data_dir
from tests.conftest import free_port

DATA = fate_data_dir()
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow

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
rounds = 2
secure = "he"
min-parties = 3
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
        time.sleep(3)
        for name, f in [("guest", "homo_guest"), ("host1", "homo_host_1"), ("host2", "homo_host_2")]:
            # Flower's own deployment: no fedcredit certificates, so the operator opts in to unbound keys
            node_cfg = (f'data-file="{DATA / f"default_credit_{f}.csv"}" state-dir="{tmp_path / name}"'
                        ' unbound-keys="true"')
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
        time.sleep(3)
        run = subprocess.run(
            [str(VENV_BIN / "flwr"), "run", str(app), "local", "--stream"],
            env=env,
            capture_output=True,
            timeout=420,
            cwd=tmp_path,
        )
        deadline = time.time() + 240
        while not result.exists() and time.time() < deadline and all(p.poll() is None for p in procs):
            time.sleep(1)
        if not result.exists():
            dump = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(logs.iterdir()))
            pytest.fail(f"no result; flwr run rc={run.returncode}\n{run.stdout.decode()[-3000:]}\n{dump}")
        record = json.loads(result.read_text())
        assert [h["round"] for h in record["history"]] == [1, 2]
        assert record["secure"] == "he" and len(record["parties"]) == 3
        assert record["metrics"]["val_auc"] > 0.65
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
