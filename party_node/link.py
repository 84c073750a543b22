"""The party's end of the party link: dial out to the coordinator with mutual TLS, register, send
heartbeats, run tasks, stream results back; reconnect with back-off when the link drops.

Nothing here knows what a task does: tasks run through :func:`fedcore.protocol.tasks.execute` with the
node's :class:`~fedcore.protocol.tasks.HandlerRegistry`. Queues are bounded, so a large result is
produced only as fast as the coordinator consumes it.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from fedcredit.v1 import link_pb2, link_pb2_grpc

from fedcore.errors import Cancelled, FedcreditError, Unauthenticated, Unavailable
from fedcore.grpc_options import secure_target_options
from fedcore.protocol.messages import DataSummary
from fedcore.protocol.tasks import HandlerRegistry, TaskContext, error_of, execute
from fedcore.wire.convert import params_from_struct, params_to_struct, summary_to_proto
from fedcore.wire.link_queue import force_put

log = logging.getLogger(__name__)

OUTBOUND_QUEUE = 32
INBOUND_PAYLOAD_CHUNKS = 8
_END = object()
_DROPPED = object()
_CANCELLED = object()


@dataclass(frozen=True)
class LinkCredentials:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


@dataclass
class LinkStatus:
    connected: bool = False
    since: float = 0.0
    registered_as: str = ""
    role: str = ""
    last_error: str = ""
    failures: int = 0  # connection attempts that ended in an error (tests and status wait on it)
    connects: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0


class _Stream:
    """State of one connection attempt."""

    def __init__(self) -> None:
        self.outbound: queue.Queue[link_pb2.PartyMessage | None] = queue.Queue(OUTBOUND_QUEUE)
        self.alive = threading.Event()
        self.alive.set()
        self.dead = threading.Event()
        self.tasks: dict[str, TaskContext] = {}
        self.payloads: dict[str, queue.Queue[object]] = {}
        self.lock = threading.Lock()

    def send(self, msg: link_pb2.PartyMessage) -> bool:
        while self.alive.is_set():
            try:
                self.outbound.put(msg, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def requests(self) -> Iterator[link_pb2.PartyMessage]:
        while True:
            msg = self.outbound.get()
            if msg is None:
                return
            yield msg

    def end(self) -> None:
        self.alive.clear()
        self.dead.set()
        with self.lock:
            for ctx in self.tasks.values():
                ctx.cancelled.set()
            for q in self.payloads.values():
                force_put(q, _DROPPED)
        force_put(self.outbound, None)


class LinkClient:
    def __init__(
        self,
        *,
        name: str,
        address: str,
        server_name: str,
        credentials: LinkCredentials,
        registry: HandlerRegistry,
        summary: Callable[[], DataSummary],
        heartbeat_s: float = 1.0,
        reconnect_initial_s: float = 0.2,
        reconnect_max_s: float = 2.0,
        chunk_bytes: int = 1 << 20,
        max_parallel_tasks: int = 8,
        software_version: str = "",
    ) -> None:
        self.name = name
        self.address = address
        self.server_name = server_name
        self._creds = credentials
        self._registry = registry
        self._summary = summary
        self.heartbeat_s = heartbeat_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.chunk_bytes = chunk_bytes
        self.software_version = software_version
        self._pool = ThreadPoolExecutor(max_workers=max_parallel_tasks, thread_name_prefix="task")
        self.status = LinkStatus()
        self.on_status: Callable[[LinkStatus], None] = lambda s: None
        self._stop = threading.Event()
        self._registered = threading.Event()
        self._channel: grpc.Channel | None = None

    # ---- lifecycle ----

    def stop(self) -> None:
        self._stop.set()
        if self._channel is not None:
            self._channel.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def wait_registered(self, timeout: float) -> bool:
        return self._registered.wait(timeout)

    def run(self) -> None:
        """Connect and serve until :meth:`stop`; reconnect with jittered exponential back-off."""
        delay = self.reconnect_initial_s
        while not self._stop.is_set():
            try:
                registered = self._session()
            except FedcreditError as exc:
                registered = False
                self._set_error(str(exc))
            if self._stop.is_set():
                break
            if registered:
                delay = self.reconnect_initial_s
            wait = delay * (0.5 + random.random() / 2)
            log.info("reconnecting to %s in %.2f s", self.address, wait)
            self._stop.wait(wait)
            delay = min(delay * 2, self.reconnect_max_s)

    def _set_error(self, message: str) -> None:
        self.status.connected = False
        self.status.last_error = message
        self.status.failures += 1
        self._registered.clear()
        self.on_status(self.status)

    def _session(self) -> bool:
        creds = grpc.ssl_channel_credentials(
            root_certificates=self._creds.ca_pem,
            private_key=self._creds.key_pem,
            certificate_chain=self._creds.cert_pem,
        )
        channel = grpc.secure_channel(self.address, creds, options=secure_target_options(self.server_name))
        self._channel = channel
        stream = _Stream()
        registered = False
        heartbeat: threading.Thread | None = None
        try:
            stub = link_pb2_grpc.PartyLinkStub(channel)
            stream.send(
                link_pb2.PartyMessage(
                    register=link_pb2.Register(
                        summary=summary_to_proto(self._summary()), software_version=self.software_version
                    )
                )
            )
            call = stub.Connect(stream.requests())
            for msg in call:
                body = msg.WhichOneof("body")
                if body == "registered":
                    if msg.registered.party != self.name:
                        raise Unauthenticated(
                            f"the coordinator knows this node's certificate as {msg.registered.party!r},"
                            f" but party.toml names {self.name!r}"
                        )
                    registered = True
                    self.status = LinkStatus(
                        connected=True,
                        since=time.time(),
                        registered_as=msg.registered.party,
                        role=msg.registered.role,
                        connects=self.status.connects + 1,
                        tasks_done=self.status.tasks_done,
                        tasks_failed=self.status.tasks_failed,
                    )
                    self._registered.set()
                    self.on_status(self.status)
                    log.info("registered with %s as %s (%s)", self.address, self.name, msg.registered.role)
                    heartbeat = threading.Thread(target=self._heartbeats, args=(stream,), daemon=True)
                    heartbeat.start()
                elif body == "task":
                    self._start_task(stream, msg.task)
                elif body == "chunk":
                    with stream.lock:
                        q = stream.payloads.get(msg.chunk.task_id)
                    if q is not None:  # the last chunk may carry data too
                        c = msg.chunk
                        for item in ([c.data] if c.data else []) + ([_END] if c.last else []):
                            while stream.alive.is_set():
                                try:
                                    q.put(item, timeout=0.2)
                                    break
                                except queue.Full:
                                    continue
                elif body == "cancel":
                    with stream.lock:
                        ctx = stream.tasks.get(msg.cancel.task_id)
                        payload_q = stream.payloads.get(msg.cancel.task_id)
                    if ctx is not None:
                        log.info("task %s cancelled: %s", ctx.task_id, msg.cancel.reason)
                        ctx.cancelled.set()
                    if payload_q is not None:
                        force_put(payload_q, _CANCELLED)
            self._set_error("the coordinator closed the link")
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else None
            details = err.details() if hasattr(err, "details") else str(err)
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                log.error("the coordinator rejected this node: %s", details)
            else:
                log.warning("link to %s dropped: %s", self.address, details)
            self._set_error(f"{code.name.lower() if code else 'error'}: {details}")
        finally:
            stream.end()
            channel.close()
        return registered

    def _heartbeats(self, stream: _Stream) -> None:
        while not stream.dead.wait(self.heartbeat_s) and not self._stop.is_set():
            try:
                stream.outbound.put_nowait(
                    link_pb2.PartyMessage(heartbeat=link_pb2.Heartbeat(sent_unix_ms=int(time.time() * 1000)))
                )
            except queue.Full:
                pass  # the link is busy sending, which is a sign of life too

    # ---- tasks ----

    def _start_task(self, stream: _Stream, header: link_pb2.TaskHeader) -> None:
        payload_q: queue.Queue[object] | None = None
        if header.has_payload:
            payload_q = queue.Queue(INBOUND_PAYLOAD_CHUNKS)
        ctx = TaskContext(
            party=self.name,
            task_id=header.task_id,
            kind=header.kind,
            run_id=header.run_id,
            deadline=time.monotonic() + (header.timeout_s or 60.0),
            payload=_drain(payload_q) if payload_q is not None else iter(()),
        )
        with stream.lock:
            stream.tasks[header.task_id] = ctx
            if payload_q is not None:
                stream.payloads[header.task_id] = payload_q
        params = params_from_struct(header.params)
        self._pool.submit(self._run_task, stream, ctx, params)

    def _run_task(self, stream: _Stream, ctx: TaskContext, params: dict[str, object]) -> None:
        try:
            outcome = execute(self._registry, ctx, params)
            if outcome.reply is None:
                self._send_error(stream, ctx, outcome.error_code, outcome.error_message)
                return
            has_payload = outcome.reply.payload is not None
            stream.send(
                link_pb2.PartyMessage(
                    result=link_pb2.TaskResultHeader(
                        task_id=ctx.task_id,
                        params=params_to_struct(outcome.reply.params),
                        has_payload=has_payload,
                    )
                )
            )
            if outcome.reply.payload is not None:
                held: bytes | None = None  # one piece behind, so that the last one carries the end mark
                try:
                    for chunk in outcome.reply.payload:
                        view = memoryview(chunk)
                        for start in range(0, len(view), self.chunk_bytes):
                            ctx.check_cancelled()
                            if held is not None and not stream.send(
                                link_pb2.PartyMessage(chunk=link_pb2.PayloadChunk(task_id=ctx.task_id, data=held))
                            ):
                                return
                            held = bytes(view[start : start + self.chunk_bytes])
                except Exception as exc:
                    code, message = error_of(exc)
                    self._send_error(stream, ctx, code, message)
                    return
                stream.send(
                    link_pb2.PartyMessage(chunk=link_pb2.PayloadChunk(task_id=ctx.task_id, data=held or b"", last=True))
                )
            self.status.tasks_done += 1
        finally:
            with stream.lock:
                stream.tasks.pop(ctx.task_id, None)
                stream.payloads.pop(ctx.task_id, None)

    def _send_error(self, stream: _Stream, ctx: TaskContext, code: str, message: str) -> None:
        self.status.tasks_failed += 1
        stream.send(
            link_pb2.PartyMessage(
                error=link_pb2.TaskError(task_id=ctx.task_id, code=code, step=ctx.kind, message=message)
            )
        )


def _drain(q: queue.Queue[object]) -> Iterator[bytes]:
    while True:
        item = q.get()
        if item is _END:
            return
        if item is _DROPPED:
            raise Unavailable("the link to the coordinator dropped while receiving this task's payload")
        if item is _CANCELLED:
            raise Cancelled("the task was cancelled while receiving its payload")
        assert isinstance(item, bytes)
        yield item
