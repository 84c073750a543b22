"""A party node as a long-lived service: its config, credentials, task handlers and the party link.

``PartyNode.run()`` blocks until stopped; its status (connected, last error, task counts) is written to
``HOME/run/status.json`` for ``fedcredit party status``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path

from fedcore import telemetry as metrics
from fedcore.errors import AlreadyExists, NotFound
from fedcore.protocol.horizontal.party import register_training_handlers
from fedcore.protocol.keys.party import KeyParty
from fedcore.protocol.messages import DataSummary
from fedcore.protocol.preapproval.party import SnapshotListener
from fedcore.protocol.psi.party import PsiParty
from fedcore.protocol.tasks import HandlerRegistry, register_diagnostics
from fedcore.secret import ensure_token
from fedcore.telemetry import start_metrics_server

from .alignment import StoreAlignment
from .audit import AuditLog
from .binning import register_binning_handlers
from .compute import psi_blinder, row_compute
from .config import PartyConfig
from .keystore import StorePseudonymHolder, load_pseudonym_key, new_pseudonym_key, party_identity
from .link import LinkClient, LinkCredentials, LinkStatus
from .monitoring import SETTINGS_FILE as MONITORING_FILE
from .monitoring import Monitor, MonitorSettings
from .monitoring_cli import TOKEN_FILE as MONITORING_TOKEN
from .monitoring_cli import MonitoringRunner, SnapshotPasses
from .preapproval import PreapprovalSettings, build_platform_service, register_preapproval_handlers
from .preapproval_api import TOKEN_FILE as PREAPPROVAL_TOKEN
from .preapproval_api import start_preapproval_api
from .reporting import register_report_handlers
from .scoring import build_service, register_scoring_handlers
from .scoring_api import TOKEN_FILE, start_local_api
from .store import Store
from .training_data import store_data_provider
from .trees import register_tree_handlers
from .vertical import register_vertical_handlers

log = logging.getLogger(__name__)

STATUS_FILE = Path("run/status.json")
LOCK_FILE = Path("run/node.lock")


def lock_home(home: Path) -> int:
    """Hold the party home for this process (an ``flock`` released when the process ends, however it
    ends); a second node on the same home is refused instead of fighting the first for its link."""
    path = home / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise AlreadyExists(
            f"{home} is already served by another party node (pid {pid}, lock {path}); stop that one first"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def build_registry(config: PartyConfig, store: Store) -> HandlerRegistry:
    """Every task kind this node can run: only code installed with the package."""
    registry = HandlerRegistry()
    register_diagnostics(registry)
    alignment = StoreAlignment(store)
    register_vertical_handlers(registry, store, alignment, config.home, config.party.name, party_identity(config))
    register_binning_handlers(registry, store, alignment, config.home, config.party.name, party_identity(config))
    register_tree_handlers(registry, store, alignment, config.home, config.party.name, party_identity(config),
                           row_compute(config.compute))
    dropped = alignment.drop_uncommitted()
    if dropped:
        log.warning("dropped %d rows of alignment tables staged by runs that never committed", dropped)
    PsiParty(alignment, alignment, workers=config.compute.workers, blinder=psi_blinder(config.compute)).register(
        registry
    )
    KeyParty(party_identity(config), StorePseudonymHolder(store, config.home), new_pseudonym_key).register(registry)
    register_training_handlers(
        registry,
        store_data_provider(store),
        party=config.party.name,
        state_dir=config.home / "training",
        model_dir=config.home / "models",
        identity=party_identity(config),
    )
    register_report_handlers(registry, store_data_provider(store), model_dir=config.home / "models")
    register_scoring_handlers(registry, store, config.home, compute=config.compute, identity=party_identity(config))
    # a lender with a pricing policy (HOME/pricing.toml) answers pre-approvals
    register_preapproval_handlers(registry, config.home, lambda: build_service(config, store), party_identity(config))
    # the platform's snapshot announcements start a monitoring pass (a lender with HOME/monitoring.toml)
    SnapshotListener(SnapshotPasses(lambda: _snapshot_monitor(config, store)).fire,
                     AuditLog.for_home(config.home)).register(registry)
    metrics.instrument_registry(registry)
    return registry


def _snapshot_monitor(config: PartyConfig, store: Store) -> Monitor | None:
    if not (config.home / MONITORING_FILE).is_file():
        return None
    return Monitor(build_service(config, store), MonitorSettings.load(config.home))


def data_summary(config: PartyConfig) -> DataSummary:
    """What this node registers: whitelisted feature names, types and counts, never values."""
    url = config.store_url()
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        return DataSummary()
    with Store.open(url) as store:
        return store.summary()


class PartyNode:
    def __init__(self, config: PartyConfig, registry: HandlerRegistry | None = None) -> None:
        self.config = config
        tls = config.tls
        for path in (tls.ca_cert, tls.cert, tls.key):
            if not path.is_file():
                raise NotFound(f"{path} is missing: run `fedcredit party init` and install the startup kit")
        # before the store is touched: starting up drops uncommitted alignment rows, which are the
        # running node's work in progress if there is one
        self._lock_fd = lock_home(config.home)
        self.store = Store.open(config.store_url(), pseudonym_key=load_pseudonym_key(config.home))
        self.registry = registry or build_registry(config, self.store)
        link = config.link
        from importlib.metadata import version

        self.link = LinkClient(
            name=config.party.name,
            address=config.coordinator.address,
            server_name=config.coordinator.server_name,
            credentials=LinkCredentials(
                tls.ca_cert.read_bytes(), tls.cert.read_bytes(), tls.key.read_bytes()
            ),
            registry=self.registry,
            summary=self.store.summary,
            heartbeat_s=link.heartbeat_s,
            reconnect_initial_s=link.reconnect_initial_s,
            reconnect_max_s=link.reconnect_max_s,
            chunk_bytes=link.chunk_bytes,
            max_parallel_tasks=link.max_parallel_tasks,
            software_version=version("fedcredit"),
        )
        self.link.on_status = self._write_status
        self.status_path = config.home / STATUS_FILE

    def _write_status(self, status: LinkStatus) -> None:
        metrics.observe_link_status(status)
        self.status_path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            **asdict(status),
            "party": self.config.party.name,
            "coordinator": self.config.coordinator.address,
            "pid": os.getpid(),
            "updated": time.time(),
        }
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.status_path)

    def _serves_scoring(self) -> bool:
        """The local scoring API runs when ``HOME/scoring.json`` names a listen address."""
        from .scoring import load_settings

        st = load_settings(self.config.home)
        return bool(st.grpc_listen or st.http_listen) and (self.config.home / "scoring.json").is_file()

    def serve_forever(self) -> None:
        try:
            self._serve_forever()
        finally:
            os.close(self._lock_fd)

    def _serve_forever(self) -> None:
        done = threading.Event()

        def _stop(signum: int, frame: object) -> None:
            done.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        self._write_status(self.link.status)
        if any((self.config.home / "models").glob("*/gbdt.json")):  # compile tree scoring before a request
            threading.Thread(target=_warm_tree_kernels, name="tree-kernels-warm", daemon=True).start()
        log.info("party %s dialling %s", self.config.party.name, self.config.coordinator.address)
        metrics_server = start_metrics_server(self.config.metrics)
        local_api = None
        if self._serves_scoring():
            token = ensure_token(self.config.home / TOKEN_FILE, "local scoring API token")
            local_api = start_local_api(build_service(self.config, self.store), token)
        pre = PreapprovalSettings.load(self.config.home)  # the platform: HOME/preapproval.json
        home = self.config.home
        pre_api = start_preapproval_api(
            build_platform_service(self.config, self.store, pre),
            ensure_token(home / PREAPPROVAL_TOKEN, "local pre-approval API token"),
        ) if pre else None
        monitoring = None
        if (home / MONITORING_FILE).is_file():  # a lender monitoring its book
            monitoring = MonitoringRunner(Monitor(build_service(self.config, self.store), MonitorSettings.load(home)),
                                          ensure_token(home / MONITORING_TOKEN, "monitoring alerts API token"))
        runner = threading.Thread(target=self.link.run, name="party-link", daemon=True)
        runner.start()
        while not done.wait(0.5):
            if not runner.is_alive():
                break
        self.link.stop()
        runner.join(timeout=5)
        if metrics_server is not None:
            metrics_server.stop()
        if local_api is not None:
            local_api.stop()
        if pre_api is not None:
            pre_api.stop()
        if monitoring is not None:
            monitoring.stop()
        self._write_status(LinkStatus(last_error="stopped"))
        log.info("party %s stopped", self.config.party.name)


def _warm_tree_kernels() -> None:
    """Tree scoring's compiled kernels, loaded (or compiled) off the request path."""
    from fedcore.protocol.scoring.tree_kernels import warm

    try:
        warm()
    except Exception:  # a request compiles them then; nothing else depends on this
        log.warning("could not prepare the tree scoring kernels", exc_info=True)
