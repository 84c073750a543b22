"""The admin gRPC API (admin certificate only; see ``coordinator.auth.RPC_ROLES``). Thin servicer:
decode, call the hub, encode."""

from __future__ import annotations

import hashlib
import time

import grpc
from fedcredit.v1 import admin_pb2, admin_pb2_grpc

from fedcore.errors import InvalidInput
from fedcore.protocol.messages import Task
from fedcore.protocol.tasks import BLOB, ECHO
from fedcore.wire.convert import summary_to_proto
from fedcore.wire.errors import servicer_errors

from .link import LinkHub

MAX_PROBE_COUNT = 100_000


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(self, hub: LinkHub) -> None:
        self._hub = hub

    @servicer_errors
    def ListParties(
        self, request: admin_pb2.ListPartiesRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListPartiesResponse:
        live = {p.name: p for p in self._hub.parties()}
        out = []
        for pr in self._hub.state.principals():
            if pr.role.value == "admin":
                continue
            info = live.get(pr.name)
            out.append(
                admin_pb2.PartyStatus(
                    name=pr.name,
                    role=pr.role.value,
                    status=pr.status,
                    online=bool(info and info.online),
                    last_seen_unix=(info.last_seen if info and info.last_seen else pr.last_seen) or 0.0,
                    summary=summary_to_proto(info.summary) if info else None,
                )
            )
        return admin_pb2.ListPartiesResponse(parties=out)

    @servicer_errors
    def Probe(
        self, request: admin_pb2.ProbeRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ProbeResponse:
        if not 1 <= request.count <= MAX_PROBE_COUNT:
            raise InvalidInput(f"count must be between 1 and {MAX_PROBE_COUNT}")
        if request.payload_bytes < 0:
            raise InvalidInput("payload_bytes must not be negative")
        timeout = request.timeout_s or 30.0
        rtts: list[float] = []
        received = 0
        digest = hashlib.sha256()
        start = time.perf_counter()
        for i in range(request.count):
            t0 = time.perf_counter()
            if request.payload_bytes:
                result = self._hub.run(
                    request.party, Task(BLOB, {"bytes": request.payload_bytes}, timeout_s=timeout)
                )
                for chunk in result.chunks():
                    received += len(chunk)
                    digest.update(chunk)
            else:
                self._hub.run(request.party, Task(ECHO, {"i": i}, timeout_s=timeout))
            rtts.append((time.perf_counter() - t0) * 1000)
        return admin_pb2.ProbeResponse(
            rtt_ms=rtts,
            bytes_received=received,
            seconds=time.perf_counter() - start,
            payload_sha256=digest.hexdigest() if request.payload_bytes else "",
        )
