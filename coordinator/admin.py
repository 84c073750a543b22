"""The admin gRPC API (admin certificate only; see ``coordinator.auth.RPC_ROLES``). Thin servicer:
decode, call the hub, encode."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

import grpc
from fedcredit.v1 import admin_pb2, admin_pb2_grpc

from fedcore.errors import FedcreditError, InvalidInput
from fedcore.protocol.messages import Task
from fedcore.protocol.tasks import BLOB, ECHO
from fedcore.wire.convert import params_from_struct, params_to_struct, summary_to_proto
from fedcore.wire.errors import abort, servicer_errors

from .auth import identity_of
from .link import LinkHub
from .runs import RunEvent, RunManager

MAX_PROBE_COUNT = 100_000


class AdminServicer(admin_pb2_grpc.AdminServicer):
    def __init__(self, hub: LinkHub, runs: RunManager) -> None:
        self._hub = hub
        self._runs = runs

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

    def _stream(self, run_id: str, context: grpc.ServicerContext) -> Iterator[admin_pb2.RunEvent]:
        stop = threading.Event()
        context.add_callback(stop.set)
        yield admin_pb2.RunEvent(run_id=run_id, message="started", status="running")
        for ev in self._runs.watch(run_id, stop):
            yield _event(ev)

    def StartRun(
        self, request: admin_pb2.StartRunRequest, context: grpc.ServicerContext
    ) -> Iterator[admin_pb2.RunEvent]:
        try:
            who = identity_of(context, self._hub.state)
            run_id = self._runs.start(request.kind, params_from_struct(request.params), actor=who.name)
        except FedcreditError as exc:
            abort(context, exc)
        yield from self._stream(run_id, context)

    def ResumeRun(
        self, request: admin_pb2.ResumeRunRequest, context: grpc.ServicerContext
    ) -> Iterator[admin_pb2.RunEvent]:
        try:
            who = identity_of(context, self._hub.state)
            run_id = self._runs.resume(request.run_id, actor=who.name)
        except FedcreditError as exc:
            abort(context, exc)
        yield from self._stream(run_id, context)

    @servicer_errors
    def ListRuns(
        self, request: admin_pb2.ListRunsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListRunsResponse:
        return admin_pb2.ListRunsResponse(
            runs=[
                admin_pb2.RunInfo(
                    run_id=r.run_id, kind=r.kind, status=r.status, params=params_to_struct(r.params),
                    result=params_to_struct(r.result), created_unix=r.created_at, updated_unix=r.updated_at,
                )
                for r in self._hub.state.runs()
            ]
        )


def _event(ev: RunEvent) -> admin_pb2.RunEvent:
    return admin_pb2.RunEvent(
        run_id=ev.run_id, message=ev.message, done=ev.done, status=ev.status, result=params_to_struct(ev.result)
    )
