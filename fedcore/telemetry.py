"""Prometheus metrics shared by both roles (``prometheus_client``), and the hooks that feed them.

One :data:`REGISTRY` per process (not ``prometheus_client``'s global one, so nothing else leaks in).
The series carry a ``role`` label (``coordinator`` or ``party``); none carries subject data:

=====================================  =========  ===============================================
metric                                 type       labels
=====================================  =========  ===============================================
``fedcredit_links_up``                 gauge      role (coordinator: live party links; party: 0/1)
``fedcredit_link_connects_total``      counter    role (party: successful (re)connections)
``fedcredit_tasks_total``              counter    role, kind, outcome (ok / error code)
``fedcredit_task_seconds``             histogram  role, kind
``fedcredit_payload_bytes_total``      counter    role, direction (sent / received)
``fedcredit_errors_total``             counter    role, kind (error code)
=====================================  =========  ===============================================

Hooks, so the link code needs no edits of its own:

- coordinator: wrap the channel the runs use, ``RunManager(instrument_channel(hub), ...)``, and
  :func:`watch_links` the hub (``links_up`` reads ``hub.online()`` at scrape time);
- party: :func:`instrument_registry` the handler registry (times each task, counts outcomes and payload
  bytes both ways) and call :func:`observe_link_status` from the link's ``on_status`` callback.

:func:`start_metrics_server` serves ``/metrics`` on its own port (the party node's listener, off by
default: :class:`MetricsSettings`); the coordinator also serves it on the dashboard port.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import pydantic
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from fedcore.config import Section, check_listen
from fedcore.errors import FedcreditError, InvalidInput
from fedcore.protocol.channel import PartyChannel, TaskHandle
from fedcore.protocol.messages import JSONValue, PartyInfo, Task, TaskReply, TaskResult
from fedcore.protocol.tasks import Handler, HandlerRegistry, TaskContext

__all__ = [
    "CONTENT_TYPE_LATEST",
    "REGISTRY",
    "MetricsServer",
    "MetricsSettings",
    "count_error",
    "instrument_channel",
    "instrument_registry",
    "observe_link_status",
    "observe_task",
    "payload_bytes",
    "render",
    "start_metrics_server",
    "watch_links",
]

REGISTRY = CollectorRegistry(auto_describe=True)

LINKS_UP = Gauge("fedcredit_links_up", "Live party links (coordinator) or link connected 0/1 (party).",
                 ["role"], registry=REGISTRY)
LINK_CONNECTS = Counter("fedcredit_link_connects", "Successful link (re)connections.", ["role"], registry=REGISTRY)
TASKS = Counter("fedcredit_tasks", "Tasks finished, by kind and outcome (ok or an error code).",
                ["role", "kind", "outcome"], registry=REGISTRY)
TASK_SECONDS = Histogram(
    "fedcredit_task_seconds", "Task latency: submit to reply header (coordinator) or handler time (party).",
    ["role", "kind"], registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0),
)
PAYLOAD_BYTES = Counter("fedcredit_payload_bytes", "Task payload bytes (mostly ciphertexts), by direction.",
                        ["role", "direction"], registry=REGISTRY)
ERRORS = Counter("fedcredit_errors", "Errors by kind (error code).", ["role", "kind"], registry=REGISTRY)
PREAPPROVAL_OUTCOMES = Counter("fedcredit_preapproval_outcomes", "Pre-approval answers per lender outcome "
                               "(offer, decline, deadline_exceeded, offline, an error code).", ["outcome"],
                               registry=REGISTRY)
ALERTS = Counter("fedcredit_monitoring_alerts", "Monitoring alerts raised at this lender, by kind.", ["kind"],
                 registry=REGISTRY)


class MetricsSettings(Section):
    """``[metrics]``: the Prometheus listener of a process (``listen = "127.0.0.1:9464"``; off if empty)."""

    listen: str = ""

    @pydantic.field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        return check_listen(v, allow_empty=True)


# ------------------------------------------------------------------------------------ plain hooks


def observe_task(role: str, kind: str, outcome: str, seconds: float) -> None:
    TASKS.labels(role, kind, outcome).inc()
    TASK_SECONDS.labels(role, kind).observe(max(0.0, seconds))
    if outcome != "ok":
        ERRORS.labels(role, outcome).inc()


def payload_bytes(role: str, direction: str, n: int) -> None:
    if n > 0:
        PAYLOAD_BYTES.labels(role, direction).inc(n)


def count_error(role: str, code: str) -> None:
    ERRORS.labels(role, code).inc()


def _code(exc: BaseException) -> str:
    return exc.code if isinstance(exc, FedcreditError) else "internal"


def _counted(chunks: Iterable[bytes], role: str, direction: str) -> Iterator[bytes]:
    for chunk in chunks:
        payload_bytes(role, direction, len(chunk))
        yield chunk


# ------------------------------------------------------------------------------------ coordinator


def watch_links(online: Callable[[], list[str]]) -> None:
    """``fedcredit_links_up{role="coordinator"}`` reads ``online()`` at each scrape."""
    LINKS_UP.labels("coordinator").set_function(lambda: float(len(online())))


class _Handle(TaskHandle):
    def __init__(self, inner: TaskHandle, kind: str, started: float) -> None:
        self._inner = inner
        self.party = inner.party
        self.kind = kind
        self.task_id = inner.task_id
        self._started = started
        self._done = False

    def result(self, timeout: float | None = None) -> TaskResult:
        try:
            res = self._inner.result(timeout)
        except BaseException as exc:
            self._finish(_code(exc))
            raise
        self._finish("ok")
        return TaskResult(res.party, res.kind, res.params, _counted(res.chunks(), "coordinator", "received"))

    def _finish(self, outcome: str) -> None:
        if not self._done:
            self._done = True
            observe_task("coordinator", self.kind, outcome, time.monotonic() - self._started)

    def cancel(self, reason: str = "cancelled by the coordinator") -> None:
        self._inner.cancel(reason)


class InstrumentedChannel(PartyChannel):
    """A :class:`PartyChannel` that counts, times and measures every task sent through ``inner``."""

    def __init__(self, inner: PartyChannel) -> None:
        self.inner = inner

    def parties(self) -> list[PartyInfo]:
        return self.inner.parties()

    def online(self) -> list[str]:
        return self.inner.online()

    def submit(self, party: str, task: Task) -> TaskHandle:
        if task.payload is not None:
            task = Task(task.kind, task.params, task.run_id, task.timeout_s,
                        _counted(task.payload, "coordinator", "sent"))
        started = time.monotonic()
        try:
            handle = self.inner.submit(party, task)
        except BaseException as exc:
            observe_task("coordinator", task.kind, _code(exc), 0.0)
            raise
        return _Handle(handle, task.kind, started)

    def __getattr__(self, name: str) -> Any:  # wait_online, changed, ... of the wrapped hub
        return getattr(self.inner, name)


def instrument_channel(channel: PartyChannel) -> InstrumentedChannel:
    return channel if isinstance(channel, InstrumentedChannel) else InstrumentedChannel(channel)


# ------------------------------------------------------------------------------------------ party


def _instrumented(kind: str, handler: Handler) -> Handler:
    def run(ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        ctx.payload = _counted(ctx.payload, "party", "received")
        started = time.monotonic()
        try:
            reply = handler(ctx, params)
        except BaseException as exc:
            observe_task("party", kind, _code(exc), time.monotonic() - started)
            raise
        observe_task("party", kind, "ok", time.monotonic() - started)
        if reply.payload is not None:
            reply = TaskReply(reply.params, _counted(reply.payload, "party", "sent"))
        return reply

    return run


class _InstrumentedRegistry(HandlerRegistry):
    def register(self, kind: str, handler: Handler) -> None:
        super().register(kind, _instrumented(kind, handler))


def instrument_registry(registry: HandlerRegistry) -> HandlerRegistry:
    """Wrap every handler of ``registry`` (and any registered later) with task metrics. In place."""
    handlers: dict[str, Handler] = registry._handlers
    for kind, handler in list(handlers.items()):
        handlers[kind] = _instrumented(kind, handler)
    registry.__class__ = _InstrumentedRegistry
    return registry


def observe_link_status(status: Any) -> None:
    """Feed a party's ``LinkStatus`` (``connected``, ``connects``) into the link metrics."""
    LINKS_UP.labels("party").set(1.0 if getattr(status, "connected", False) else 0.0)
    connects = int(getattr(status, "connects", 0) or 0)
    seen = LINK_CONNECTS.labels("party")
    delta = connects - seen._value.get()
    if delta > 0:
        seen.inc(delta)


# ----------------------------------------------------------------------------------------- serving


def render() -> bytes:
    """The current metrics in Prometheus text format."""
    return bytes(generate_latest(REGISTRY))


class MetricsServer:
    """A tiny HTTP listener serving ``GET /metrics``; ``.port`` is the bound port; ``.stop()``."""

    def __init__(self, listen: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        host, _, port = listen.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidInput(f"metrics listen address {listen!r} must be HOST:PORT")

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = render()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        try:
            self._httpd = ThreadingHTTPServer((host, int(port)), _Handler)
        except OSError as exc:
            raise InvalidInput(f"cannot listen on {listen} for metrics: {exc.strerror or exc}") from None
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(settings: MetricsSettings | str) -> MetricsServer | None:
    """Start the ``/metrics`` listener if configured (``None`` when ``listen`` is empty)."""
    listen = settings if isinstance(settings, str) else settings.listen
    return MetricsServer(listen) if listen else None
