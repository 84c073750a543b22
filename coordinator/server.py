"""Coordinator bootstrap: a gRPC server with mutual TLS, the auth interceptor, health checking,
reflection, the party link and the admin API."""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures

import grpc
from fedcredit.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    link_pb2,
    link_pb2_grpc,
    preapproval_pb2_grpc,
    scoring_pb2,
    scoring_pb2_grpc,
)
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedcore import telemetry as metrics
from fedcore.errors import InvalidInput
from fedcore.grpc_options import SERVER_OPTIONS
from fedcore.protocol.scoring.groups import ScoreGroups
from fedcore.wire.reflection import enable_reflection

from . import report as _report_job  # noqa: F401 (registers the job kind)
from .admin import AdminServicer
from .auth import AuthInterceptor
from .config import CoordinatorConfig
from .dashboard import DashboardHandle, start_dashboard
from .jobs import binning as _binning_job  # noqa: F401 (registers the job kind)
from .jobs import keys as _keys_job  # noqa: F401 (registers the job kind)
from .jobs import psi as _psi_job  # noqa: F401 (registers the job kind)
from .jobs import train as _train_job  # noqa: F401 (registers the job kind)
from .jobs import vertical as _vertical_job  # noqa: F401 (registers the job kind)
from .link import LinkHub, PartyLinkServicer
from .preapproval import SERVICE as PREAPPROVAL_SERVICE
from .preapproval import PreapprovalServicer
from .runs import RunManager
from .scoring import ScoringServicer
from .state import StateStore

log = logging.getLogger(__name__)

SERVICES = (
    link_pb2.DESCRIPTOR.services_by_name["PartyLink"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
    scoring_pb2.DESCRIPTOR.services_by_name["Scoring"].full_name,
    PREAPPROVAL_SERVICE,
)


class CoordinatorServer:
    def __init__(self, config: CoordinatorConfig, port: int | None = None) -> None:
        self.config = config
        self.state = StateStore(config.coordinator.registry(), create=False)
        link = config.link
        self.hub = LinkHub(
            self.state,
            heartbeat_s=link.heartbeat_s,
            missed_heartbeats=link.missed_heartbeats,
            chunk_bytes=link.chunk_bytes,
            revocation_poll_s=link.revocation_poll_s,
            registration_timeout_s=link.registration_timeout_s,
        )
        host, _, cfg_port = config.coordinator.listen.rpartition(":")
        self._address = f"{host}:{cfg_port if port is None else port}"
        self._server: grpc.Server | None = None
        self._health = health.HealthServicer()
        self.port = 0
        self._stopped = threading.Event()
        self._dashboard: DashboardHandle | None = None

    def start(self) -> int:
        tls = self.config.tls
        for path in (tls.ca_cert, tls.cert, tls.key):
            if not path.is_file():
                raise InvalidInput(f"TLS file {path} is missing (run `fedcredit coordinator init` first)")
        creds = grpc.ssl_server_credentials(
            [(tls.key.read_bytes(), tls.cert.read_bytes())],
            root_certificates=tls.ca_cert.read_bytes(),
            require_client_auth=True,
        )
        slots = self.config.coordinator.max_workers - 4
        per_party = min(self.config.coordinator.max_rpcs_per_party, max(2, slots // 4))
        self.auth = AuthInterceptor(self.state, max_rpcs_per_party=per_party)
        server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=self.config.coordinator.max_workers, thread_name_prefix="rpc"
            ),
            interceptors=[self.auth],
            options=SERVER_OPTIONS,
            maximum_concurrent_rpcs=slots,
        )
        link_pb2_grpc.add_PartyLinkServicer_to_server(PartyLinkServicer(self.hub), server)
        self.runs = RunManager(metrics.instrument_channel(self.hub), self.state, self.config.home / "runs")
        admin_pb2_grpc.add_AdminServicer_to_server(AdminServicer(self.hub, self.runs), server)
        groups = ScoreGroups()  # a pre-approval's lenders' joint scores share one task per member
        scoring = ScoringServicer(self.hub, self.state, groups=groups)
        scoring_pb2_grpc.add_ScoringServicer_to_server(scoring, server)
        preapproval_pb2_grpc.add_PreapprovalServicer_to_server(  # prefetches lenders' sums through scoring's fan-out
            PreapprovalServicer(self.hub, self.state, groups=groups, scores=scoring.fanout), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        enable_reflection((*SERVICES, health.SERVICE_NAME), server)
        try:
            self.port = server.add_secure_port(self._address, creds)
        except RuntimeError as exc:
            raise InvalidInput(f"cannot listen on {self._address}: {exc}") from None
        if self.port == 0:
            raise InvalidInput(f"cannot listen on {self._address} (port in use?)")
        server.start()
        self._server = server
        self.hub.start()
        metrics.watch_links(self.hub.online)
        if self.config.dashboard.listen:
            self._dashboard = start_dashboard(self, self.config.dashboard)
            log.info("dashboard at %s", self._dashboard.url)
        for name in ("", *SERVICES):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        port_file = self.config.coordinator.port_file
        port_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(self.port))
        os.replace(tmp, port_file)
        log.info("coordinator listening on %s (port %d) with mutual TLS", self._address, self.port)
        return self.port

    def stop(self, grace: float = 2.0) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._health.enter_graceful_shutdown()
        if self._dashboard is not None:
            self._dashboard.stop()
        self.hub.stop()
        if self._server is not None:
            self._server.stop(grace).wait(grace + 1)
        self.state.close()

    def serve_forever(self) -> None:
        """Run until SIGINT/SIGTERM, then shut down cleanly."""
        done = threading.Event()

        def _stop(signum: int, frame: object) -> None:
            done.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        self.start()
        done.wait()
        log.info("coordinator stopping")
        self.stop()
