"""Party-side task execution, shared by the in-memory channel and the gRPC party link.

A party node registers one handler per task ``kind`` in a :class:`HandlerRegistry`. A handler takes a
:class:`TaskContext` (who, which run, the incoming payload, the deadline, cancellation) and the task's
parameters, and returns a :class:`~fedcore.protocol.messages.TaskReply`. Handlers are ordinary
functions that take domain types: they never see gRPC.

:func:`execute` runs a handler and turns any failure into a ``(code, message)`` pair with a code from
:data:`fedcore.errors.ERROR_CODES`; unexpected exceptions become ``internal`` with a fixed message while
the detail goes to the party's own log, so nothing of the party's internals crosses the link.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from fedcore.errors import Cancelled, DeadlineExceeded, FedcreditError, InvalidInput, NotFound
from fedcore.protocol.messages import JSONValue, TaskReply

log = logging.getLogger(__name__)


@dataclass
class TaskContext:
    party: str
    task_id: str
    kind: str
    run_id: str
    deadline: float  # time.monotonic() value
    cancelled: threading.Event = field(default_factory=threading.Event)
    payload: Iterator[bytes] = field(default_factory=lambda: iter(()))

    def check_cancelled(self) -> None:
        """Raise if the task was cancelled or ran out of time; call it between units of work."""
        if self.cancelled.is_set():
            raise Cancelled(f"task {self.task_id} ({self.kind}) was cancelled")
        if time.monotonic() > self.deadline:
            raise DeadlineExceeded(f"task {self.task_id} ({self.kind}) ran past its deadline")

    def read_payload(self) -> bytes:
        return b"".join(self.payload)


Handler = Callable[[TaskContext, Mapping[str, JSONValue]], TaskReply]


class HandlerRegistry:
    """Task kinds a party node can run. Only code installed with the package is ever registered."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, kind: str, handler: Handler) -> None:
        if kind in self._handlers:
            raise ValueError(f"a handler for task kind {kind!r} is already registered")
        self._handlers[kind] = handler

    def kinds(self) -> list[str]:
        return sorted(self._handlers)

    def get(self, kind: str) -> Handler:
        try:
            return self._handlers[kind]
        except KeyError:
            raise NotFound(f"this party has no handler for task kind {kind!r}") from None


@dataclass(frozen=True)
class Outcome:
    """What a party sends back: either a reply or an error code and message."""

    reply: TaskReply | None = None
    error_code: str = ""
    error_message: str = ""


def execute(registry: HandlerRegistry, ctx: TaskContext, params: Mapping[str, JSONValue]) -> Outcome:
    """Run the handler for ``ctx.kind``; never raises."""
    try:
        handler = registry.get(ctx.kind)
        ctx.check_cancelled()
        return Outcome(reply=handler(ctx, params))
    except FedcreditError as exc:
        log.warning("task %s (%s) failed: %s", ctx.task_id, ctx.kind, exc)
        return Outcome(error_code=exc.code, error_message=str(exc))
    except Exception:
        log.exception("task %s (%s) crashed", ctx.task_id, ctx.kind)
        return Outcome(error_code="internal", error_message="internal error at the party (see its log)")


def error_of(exc: BaseException) -> tuple[str, str]:
    """(code, message) for an exception raised while streaming a reply's payload."""
    if isinstance(exc, FedcreditError):
        return exc.code, str(exc)
    log.error("payload stream crashed", exc_info=exc)
    return "internal", "internal error at the party (see its log)"


# ---- diagnostic handlers every party has (used by the admin's Probe and by the link benchmark) ----

ECHO = "link.echo"
BLOB = "link.blob"
MAX_BLOB_BYTES = 8 << 30


def _echo(ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
    data = ctx.read_payload()
    return TaskReply(params=dict(params), payload=[data] if data else None)


def blob_chunks(size: int, chunk: int = 1 << 20, seed: bytes = b"fedcredit-blob") -> Iterator[bytes]:
    """``size`` deterministic pseudo-random bytes in chunks, generated lazily (bounded memory)."""
    block = hashlib.shake_256(seed).digest(chunk)
    left = size
    while left > 0:
        n = min(chunk, left)
        yield block[:n]
        left -= n


def _blob(ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
    size = params.get("bytes")
    if not isinstance(size, int | float) or not 0 <= int(size) <= MAX_BLOB_BYTES:
        raise InvalidInput(f"{BLOB}: 'bytes' must be an integer between 0 and {MAX_BLOB_BYTES}")
    return TaskReply(params={"bytes": int(size)}, payload=blob_chunks(int(size)))


def register_diagnostics(registry: HandlerRegistry) -> None:
    registry.register(ECHO, _echo)
    registry.register(BLOB, _blob)
