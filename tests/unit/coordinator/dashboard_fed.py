"""Helpers for the dashboard, report and contribution tests: small synthetic lender data and an
in-process federation (a real coordinator with mutual TLS, party nodes whose links run in threads)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedcore.crypto.pki import CertificateAuthority
from fedcore.protocol.horizontal.env import DataSplit, stratified_split
from fedcore.protocol.horizontal.party import register_training_handlers
from fedcore.protocol.sealing import make_identities
from fedcore.protocol.tasks import HandlerRegistry, register_diagnostics
from party_node.reporting import register_report_handlers
from scripts.synthetic import LENDER_NUMERIC, SynthConfig, generate

LENDERS3 = ("yixin", "meili", "cango")


def lender_arrays(people: int = 40000, seed: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-lender ``(X, y)`` from the synthetic federation (numeric features, logs of amounts, one-hot
    city tier and vehicle type)."""
    fed = generate(SynthConfig(people=people, seed=seed))
    out = {}
    for name in LENDERS3:
        df = fed.parties[name].to_pandas()
        cols = []
        for c in LENDER_NUMERIC:
            v = df[c].to_numpy(dtype=np.float64)
            v = np.where(np.isnan(v), np.nanmean(v), v)
            cols.append(np.log1p(v) if c in ("monthly_income", "loan_amount", "vehicle_price") else v)
        cols += [(df["city_tier"] == f"tier{t}").to_numpy(np.float64) for t in (2, 3, 4)]
        cols.append((df["vehicle_type"] == "new").to_numpy(np.float64))
        out[name] = (np.column_stack(cols), df["defaulted"].to_numpy(np.int64))
    return out


def provider(X: np.ndarray, y: np.ndarray) -> Any:
    names = [f"f{i}" for i in range(X.shape[1])]

    def provide(params: Mapping[str, Any]) -> DataSplit:
        tr, va = stratified_split(y, float(params.get("fc-val-fraction", 0.2)), int(params.get("fc-seed", 0)))
        return X[tr], y[tr], X[va], y[va], names

    return provide


_CA = CertificateAuthority.create()


def party_registry(name: str, X: np.ndarray, y: np.ndarray, home: Path) -> HandlerRegistry:
    reg = HandlerRegistry()
    register_diagnostics(reg)
    prov = provider(X, y)
    identity = make_identities([name], _CA)[name]
    register_training_handlers(reg, prov, party=name, state_dir=home / "training", model_dir=home / "models",
                               identity=identity)
    register_report_handlers(reg, prov, model_dir=home / "models")
    return reg


@dataclass
class InProcessFed:
    server: Any
    nodes: dict[str, Any]
    threads: list[threading.Thread] = field(default_factory=list)

    def stop(self) -> None:
        for n in self.nodes.values():
            n.link.stop()
        for t in self.threads:
            t.join(timeout=5)
        self.server.stop()


def start_in_process(root: Path, data: dict[str, tuple[np.ndarray, np.ndarray]]) -> InProcessFed:
    """A coordinator (gRPC, mutual TLS) and one party node per lender in ``data`` plus the platform
    ``tiange`` (no data), all in this process."""
    from coordinator.config import load_coordinator_config
    from coordinator.server import CoordinatorServer
    from party_node.config import load_party_config
    from party_node.node import PartyNode
    from tests.conftest import make_homes

    roles = {name: "lender" for name in data} | {"tiange": "platform"}
    homes = make_homes(root, roles, heartbeat_s=2.0)  # one process, CKKS work: 0.3 s beats go missing under load
    server = CoordinatorServer(load_coordinator_config(homes.coordinator))
    server.start()
    fed = InProcessFed(server, {})
    for name, home in homes.parties.items():
        cfg = load_party_config(home)
        reg = party_registry(name, *data[name], home) if name in data else None
        node = PartyNode(cfg, registry=reg) if reg is not None else PartyNode(cfg)
        fed.nodes[name] = node
        t = threading.Thread(target=node.link.run, name=f"party-{name}", daemon=True)
        t.start()
        fed.threads.append(t)
    if not server.hub.wait_online(list(roles), timeout=30):
        fed.stop()
        raise TimeoutError("parties did not come online")
    return fed


def wait_run(server: Any, run_id: str, timeout: float = 600.0) -> Any:  # a hang guard (loaded machine)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        run = server.state.run(run_id)
        if run.status != "running":
            return run
        time.sleep(0.2)
    raise TimeoutError(f"run {run_id} still running after {timeout} s")
