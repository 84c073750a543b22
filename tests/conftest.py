"""Shared fixtures: a federation's homes built in-process with the same functions the CLI calls."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Homes:
    root: Path
    coordinator: Path
    parties: dict[str, Path]
    port: int


def make_homes(root: Path, parties: dict[str, str], heartbeat_s: float = 0.3) -> Homes:
    from coordinator.config import load_coordinator_config
    from coordinator.home import admit, init_home
    from fedcore.protocol.messages import Role
    from party_node.home import init_home as party_init
    from party_node.home import install_kit

    port = free_port()
    chome = root / "coordinator"
    init_home(chome, listen=f"127.0.0.1:{port}")
    _set(chome / "coordinator.toml", "link", f"heartbeat_s = {heartbeat_s}\nrevocation_poll_s = 0.2")
    cfg = load_coordinator_config(chome)
    homes = {}
    for name, role in parties.items():
        phome = root / "parties" / name
        csr = party_init(phome, name)
        kit = admit(cfg, csr, Role(role), root / "kits")
        install_kit(phome, kit.path)
        _set(phome / "party.toml", "link", f"heartbeat_s = {heartbeat_s}\nreconnect_max_s = 1.0")
        homes[name] = phome
    return Homes(root, chome, homes, port)


def _set(path: Path, section: str, body: str) -> None:
    text = path.read_text()
    assert f"[{section}]" not in text
    path.write_text(text + f"\n[{section}]\n{body}\n")


@pytest.fixture(scope="module")
def fed_homes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homes]:
    root = tmp_path_factory.mktemp("fed")
    yield make_homes(root, {"yixin": "lender", "meili": "lender", "tiange": "platform"})


@pytest.fixture(scope="module")
def pg_server():
    """A throw-away PostgreSQL server (Debian's postgresql); fails, naming the package, when it is missing."""
    from scripts.pgserver import PgServer, PgServerError

    try:
        server = PgServer().start()
    except PgServerError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


# The longest test files start first: with ``--dist loadfile`` xdist hands files to its workers in
# collection order, and a long one collected late (the flwr run test takes 3-10 minutes, the process
# tests 1-5 minutes each under load) became the whole suite's tail. The known longest, then every other
# process test, then the unit tests, which fill in at the end.
FIRST = (
    "test_horizontal_flower_run.py",
    "test_vertical_calibration.py",
    "test_vertical_scoring_processes.py",
    "test_postgres_processes.py",
    "test_binning_processes.py",
    "test_vertical_resume_exact.py",
    "test_preapproval_processes.py",
    "test_training_processes.py",
    "test_evaluate_processes.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        if name in FIRST:
            return FIRST.index(name)
        return len(FIRST) + (0 if "integration" in item.path.parts else 1)

    items.sort(key=rank)  # stable: each file keeps its own order
