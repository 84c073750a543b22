"""A client for the coordinator's admin API, authenticated with the admin certificate."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
from fedcredit.v1 import admin_pb2, admin_pb2_grpc

from fedcore.grpc_options import secure_target_options
from fedcore.wire.convert import params_to_struct
from fedcore.wire.errors import from_rpc_error

from .config import CoordinatorConfig


class AdminClient:
    def __init__(self, config: CoordinatorConfig, port: int | None = None) -> None:
        tls = config.tls
        creds = grpc.ssl_channel_credentials(
            root_certificates=tls.ca_cert.read_bytes(),
            private_key=tls.admin_key.read_bytes(),
            certificate_chain=tls.admin_cert.read_bytes(),
        )
        host, _, cfg_port = config.coordinator.listen.rpartition(":")
        if port is None:
            pf = config.coordinator.port_file
            port = int(pf.read_text()) if pf.is_file() else int(cfg_port)
        if host in ("0.0.0.0", "[::]", "::"):
            host = "127.0.0.1"
        self.target = f"{host}:{port}"
        self._channel = grpc.secure_channel(
            self.target, creds, options=secure_target_options(config.coordinator.name)
        )
        self._stub = admin_pb2_grpc.AdminStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def list_parties(self, timeout: float = 5.0) -> list[admin_pb2.PartyStatus]:
        try:
            return list(self._stub.ListParties(admin_pb2.ListPartiesRequest(), timeout=timeout).parties)
        except grpc.RpcError as err:
            raise from_rpc_error(err, f"listing parties at {self.target}") from None

    def probe(
        self, party: str, count: int = 1, payload_bytes: int = 0, timeout_s: float = 30.0
    ) -> admin_pb2.ProbeResponse:
        try:
            return self._stub.Probe(
                admin_pb2.ProbeRequest(
                    party=party, count=count, payload_bytes=payload_bytes, timeout_s=timeout_s
                ),
                timeout=timeout_s * max(count, 1) + 10,
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err, f"probing {party!r} via {self.target}") from None

    def start_run(self, kind: str, params: dict[str, Any]) -> Iterator[admin_pb2.RunEvent]:
        """Start a run and stream its progress events (the last has ``done``)."""
        try:
            yield from self._stub.StartRun(admin_pb2.StartRunRequest(kind=kind, params=params_to_struct(params)))
        except grpc.RpcError as err:
            raise from_rpc_error(err, f"{kind} run via {self.target}") from None

    def resume_run(self, run_id: str) -> Iterator[admin_pb2.RunEvent]:
        try:
            yield from self._stub.ResumeRun(admin_pb2.ResumeRunRequest(run_id=run_id))
        except grpc.RpcError as err:
            raise from_rpc_error(err, f"resuming {run_id} via {self.target}") from None

    def list_runs(self, timeout: float = 10.0) -> list[admin_pb2.RunInfo]:
        try:
            return list(self._stub.ListRuns(admin_pb2.ListRunsRequest(), timeout=timeout).runs)
        except grpc.RpcError as err:
            raise from_rpc_error(err, f"listing runs at {self.target}") from None
