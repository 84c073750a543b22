"""An in-process :class:`~fedcore.protocol.channel.PartyChannel` for unit tests of protocol logic.

Parties are handler registries in this process; tasks run on a thread pool. It keeps the semantics of
the gRPC link (timeouts cancel the task at the party, handler errors become
:class:`~fedcore.errors.PartyTaskError`, a disconnected party gives
:class:`~fedcore.errors.PartyUnavailable`), and it records every message that would cross the wire in
:attr:`InMemoryChannel.wire_log` so that privacy tests can inspect what the coordinator relays.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from fedcore.errors import Cancelled, DeadlineExceeded, PartyTaskError, PartyUnavailable, TaskTimeout
from fedcore.protocol.channel import PartyChannel, TaskHandle
from fedcore.protocol.messages import DataSummary, JSONValue, PartyInfo, Role, Task, TaskResult
from fedcore.protocol.tasks import HandlerRegistry, Outcome, TaskContext, error_of, execute


@dataclass(frozen=True)
class WireRecord:
    """One message as it would cross the link: direction, party, task kind, params and payload bytes."""

    direction: str  # "to_party" | "from_party"
    party: str
    kind: str
    params: dict[str, JSONValue]
    payload: bytes


@dataclass
class _Member:
    name: str
    role: Role
    registry: HandlerRegistry
    summary: DataSummary
    connected: threading.Event = field(default_factory=threading.Event)
    last_seen: float = field(default_factory=time.time)


class InMemoryChannel(PartyChannel):
    def __init__(self, record_wire: bool = False, max_workers: int = 32) -> None:
        self._members: dict[str, _Member] = {}
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="inmem-party")
        self._ids = itertools.count(1)
        self._record = record_wire
        self._wire_lock = threading.Lock()
        self.wire_log: list[WireRecord] = []

    def add_party(
        self, name: str, role: Role, registry: HandlerRegistry, summary: DataSummary | None = None
    ) -> None:
        member = _Member(name, role, registry, summary or DataSummary())
        member.connected.set()
        self._members[name] = member

    def disconnect(self, name: str) -> None:
        self._members[name].connected.clear()

    def reconnect(self, name: str) -> None:
        self._members[name].connected.set()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def parties(self) -> list[PartyInfo]:
        return [
            PartyInfo(m.name, m.role, m.connected.is_set(), m.last_seen, m.summary)
            for m in self._members.values()
        ]

    def _log(
        self, direction: str, party: str, kind: str, params: dict[str, JSONValue], payload: bytes
    ) -> None:
        if self._record:
            with self._wire_lock:
                self.wire_log.append(WireRecord(direction, party, kind, params, payload))

    def submit(self, party: str, task: Task) -> TaskHandle:
        member = self._members.get(party)
        if member is None or not member.connected.is_set():
            raise PartyUnavailable(party)
        params = dict(task.params)
        payload_in = list(bytes(c) for c in task.payload) if task.payload is not None else []
        self._log("to_party", party, task.kind, params, b"".join(payload_in))
        task_id = f"t{next(self._ids)}"
        ctx = TaskContext(
            party=party,
            task_id=task_id,
            kind=task.kind,
            run_id=task.run_id,
            deadline=time.monotonic() + task.timeout_s,
            payload=iter(payload_in),
        )
        future = self._pool.submit(execute, member.registry, ctx, params)
        return _Handle(self, member, task, ctx, future)


class _Handle(TaskHandle):
    def __init__(
        self, channel: InMemoryChannel, member: _Member, task: Task, ctx: TaskContext, future: Future[Outcome]
    ) -> None:
        self.party = member.name
        self.kind = task.kind
        self.task_id = ctx.task_id
        self._channel = channel
        self._member = member
        self._task = task
        self._ctx = ctx
        self._future = future

    def cancel(self, reason: str = "cancelled by the coordinator") -> None:
        self._ctx.cancelled.set()

    def result(self, timeout: float | None = None) -> TaskResult:
        limit = self._task.timeout_s if timeout is None else timeout
        end = time.monotonic() + limit
        while True:
            if self._ctx.cancelled.is_set() and not self._future.done():
                raise Cancelled(f"task {self.task_id} ({self.kind}) at {self.party!r} was cancelled")
            if not self._member.connected.is_set():
                self._ctx.cancelled.set()
                raise PartyUnavailable(self.party, f"link dropped during step {self.kind!r}")
            left = end - time.monotonic()
            if left <= 0:
                self._ctx.cancelled.set()
                raise TaskTimeout(self.party, self.kind, limit)
            try:
                outcome = self._future.result(timeout=min(left, 0.02))
                break
            except TimeoutError:
                continue
        if outcome.reply is None:
            if outcome.error_code == DeadlineExceeded.code and time.monotonic() >= self._ctx.deadline:
                # The party noticed the deadline first (it checks the same clock): still a timeout of
                # this task, not a failure of the party.
                raise TaskTimeout(self.party, self.kind, limit)
            raise PartyTaskError(self.party, self.kind, outcome.error_code, outcome.error_message)
        params = dict(outcome.reply.params)
        self._member.last_seen = time.time()
        if outcome.reply.payload is None:
            self._channel._log("from_party", self.party, self.kind, params, b"")
            return TaskResult(self.party, self.kind, params)
        return TaskResult(self.party, self.kind, params, self._stream(outcome.reply.payload, params))

    def _stream(self, chunks: Iterable[bytes], params: dict[str, JSONValue]) -> Iterator[bytes]:
        seen: list[bytes] = []
        try:
            for chunk in chunks:
                if not self._member.connected.is_set():
                    raise PartyUnavailable(self.party, f"link dropped during step {self.kind!r}")
                data = bytes(chunk)
                if self._channel._record:
                    seen.append(data)
                yield data
        except PartyUnavailable:
            raise
        except Exception as exc:
            code, message = error_of(exc)
            raise PartyTaskError(self.party, self.kind, code, message) from None
        finally:
            self._channel._log("from_party", self.party, self.kind, params, b"".join(seen))
