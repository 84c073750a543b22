"""The coordinator's end of the party links: :class:`LinkHub` (a :class:`PartyChannel` over gRPC) and
:class:`PartyLinkServicer` (the thin servicer that feeds it).

Each connected party has one :class:`_Session`: an outbound queue drained by the servicer's response
generator, a reader thread that consumes the party's messages, and the table of tasks in flight.
Memory stays bounded in both directions: every queue is bounded, so a slow consumer of a large result
stops the reader, which stops HTTP/2 flow control, which stops the party's sender.

Liveness: any message from a party counts as a sign of life; a party silent for
``heartbeat_s * missed_heartbeats`` is marked offline and its tasks fail with PartyUnavailable.
Revocation: the hub re-reads the revoked serials every ``revocation_poll_s`` and closes the session of
a revoked certificate with UNAUTHENTICATED; the interceptor keeps it out afterwards.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

import grpc
from fedcredit.v1 import link_pb2, link_pb2_grpc

from fedcore.errors import (
    Cancelled,
    FedcreditError,
    InvalidInput,
    PartyTaskError,
    PartyUnavailable,
    ProtocolError,
    TaskTimeout,
)
from fedcore.protocol.channel import PartyChannel, TaskHandle
from fedcore.protocol.messages import DataSummary, PartyInfo, Role, Task, TaskResult
from fedcore.wire.convert import params_from_struct, params_to_struct, summary_from_proto
from fedcore.wire.errors import status_of
from fedcore.wire.link_queue import force_put

from .auth import identity_of
from .state import StateStore

log = logging.getLogger(__name__)

OUTBOUND_QUEUE = 64
RESULT_QUEUE_CHUNKS = 8
# A data summary is names, types and counts: a few KB for hundreds of features. Anything bigger is
# refused at registration (it would be stored, and sent back to every `coordinator parties`).
MAX_SUMMARY_BYTES = 256 << 10
_END = object()


@dataclass
class _Pending:
    task_id: str
    kind: str
    timeout_s: float
    header: threading.Event = field(default_factory=threading.Event)
    params: dict[str, object] = field(default_factory=dict)
    has_payload: bool = False
    error: FedcreditError | None = None
    chunks: queue.Queue[object] = field(default_factory=lambda: queue.Queue(RESULT_QUEUE_CHUNKS))
    abandoned: bool = False


class _Session:
    def __init__(self, name: str, role: Role, serial: str, summary: DataSummary) -> None:
        self.name = name
        self.role = role
        self.serial = serial
        self.summary = summary
        self.outbound: queue.Queue[link_pb2.CoordinatorMessage | None] = queue.Queue(OUTBOUND_QUEUE)
        self.pending: dict[str, _Pending] = {}
        self.lock = threading.Lock()
        self.last_seen = time.monotonic()
        self.last_seen_wall = time.time()
        self.closed = threading.Event()
        self.close_status: tuple[grpc.StatusCode, str] | None = None

    def touch(self) -> None:
        self.last_seen = time.monotonic()
        self.last_seen_wall = time.time()

    def send(self, msg: link_pb2.CoordinatorMessage) -> None:
        while not self.closed.is_set():
            try:
                self.outbound.put(msg, timeout=0.2)
                return
            except queue.Full:
                continue
        raise PartyUnavailable(self.name, "link closed")

    def close(self, code: grpc.StatusCode, reason: str) -> None:
        with self.lock:
            if self.closed.is_set():
                return
            self.close_status = (code, reason)
            self.closed.set()
            pending = list(self.pending.values())
            self.pending.clear()
        for p in pending:
            p.error = PartyUnavailable(self.name, f"{reason} during step {p.kind!r}")
            p.header.set()
            force_put(p.chunks, p.error)
        force_put(self.outbound, None)


class LinkHub(PartyChannel):
    """The live party links, as a PartyChannel for protocols running at the coordinator."""

    def __init__(
        self,
        state: StateStore,
        *,
        heartbeat_s: float = 1.0,
        missed_heartbeats: int = 3,
        chunk_bytes: int = 1 << 20,
        revocation_poll_s: float = 0.5,
        registration_timeout_s: float = 10.0,
    ) -> None:
        self.state = state
        self.registration_timeout_s = registration_timeout_s
        self.heartbeat_s = heartbeat_s
        self.offline_after_s = heartbeat_s * missed_heartbeats
        self.chunk_bytes = chunk_bytes
        self.revocation_poll_s = revocation_poll_s
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name="link-monitor", daemon=True)
        self.changed = threading.Condition()

    # ---- lifecycle ----

    def start(self) -> None:
        self._monitor.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            sessions = list(self._sessions.values())
        for s in sessions:
            s.close(grpc.StatusCode.UNAVAILABLE, "coordinator shutting down")

    def _watch(self) -> None:
        next_revocation_check = 0.0
        while not self._stop.wait(min(0.2, self.heartbeat_s / 2)):
            now = time.monotonic()
            with self._lock:
                sessions = list(self._sessions.values())
            for s in sessions:
                if now - s.last_seen > self.offline_after_s:
                    log.warning("party %s missed heartbeats: marking it offline", s.name)
                    s.close(grpc.StatusCode.UNAVAILABLE, "missed heartbeats")
                    self._detach(s)
            if now >= next_revocation_check and sessions:
                next_revocation_check = now + self.revocation_poll_s
                try:
                    revoked = self.state.revoked_serials()
                except Exception:
                    log.exception("could not read revocations")
                    continue
                for s in sessions:
                    if s.serial in revoked:
                        log.warning("party %s is revoked: closing its link", s.name)
                        s.close(grpc.StatusCode.UNAUTHENTICATED, "certificate revoked")
                        self._detach(s)

    def _attach(self, session: _Session) -> bool:
        """Make ``session`` the party's live link, unless it already has one: one live link per name.
        The newer connection is refused (a duplicate or an impostor with a copied key must not be able
        to knock the real node off); a node that really restarted gets in once its old link is gone
        (the old TCP connection closes, or it misses heartbeats)."""
        with self._lock:
            old = self._sessions.get(session.name)
            if old is not None and not old.closed.is_set():
                return False
            self._sessions[session.name] = session
        self._notify()
        return True

    def _detach(self, session: _Session) -> None:
        with self._lock:
            if self._sessions.get(session.name) is session:
                del self._sessions[session.name]
        self._notify()

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def wait_online(self, names: Iterable[str], timeout: float) -> bool:
        """Block until every party in ``names`` is connected (True) or ``timeout`` passes (False)."""
        wanted = set(names)
        end = time.monotonic() + timeout
        with self.changed:
            while not wanted <= set(self.online()):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 0.2))
        return True

    # ---- PartyChannel ----

    def parties(self) -> list[PartyInfo]:
        with self._lock:
            live = dict(self._sessions)
        out = []
        for p in self.state.principals():
            if p.role == Role.ADMIN or p.status != "admitted":
                continue
            s = live.get(p.name)
            out.append(
                PartyInfo(
                    name=p.name,
                    role=p.role,
                    online=s is not None,
                    last_seen=s.last_seen_wall if s else p.last_seen,
                    summary=s.summary if s else DataSummary(),
                )
            )
        return out

    def online(self) -> list[str]:
        with self._lock:
            return sorted(self._sessions)

    def submit(self, party: str, task: Task) -> TaskHandle:
        with self._lock:
            session = self._sessions.get(party)
        if session is None:
            raise PartyUnavailable(party)
        pending = _Pending(task_id=uuid.uuid4().hex, kind=task.kind, timeout_s=task.timeout_s)
        with session.lock:
            if session.closed.is_set():
                raise PartyUnavailable(party, "link closed")
            session.pending[pending.task_id] = pending
        header = link_pb2.TaskHeader(
            task_id=pending.task_id,
            kind=task.kind,
            run_id=task.run_id,
            params=params_to_struct(task.params),
            timeout_s=task.timeout_s,
            has_payload=task.payload is not None,
        )
        session.send(link_pb2.CoordinatorMessage(task=header))
        small = _small_payload(task.payload, self.chunk_bytes)
        if small is not None:  # e.g. a scoring contribution's pseudonyms: no sender thread per task
            for i, chunk in enumerate(small):  # the last chunk carries the end mark: one message fewer
                last = i == len(small) - 1
                session.send(link_pb2.CoordinatorMessage(chunk=link_pb2.PayloadChunk(task_id=pending.task_id,
                                                                                      data=chunk, last=last)))
            if not small:
                session.send(link_pb2.CoordinatorMessage(chunk=link_pb2.PayloadChunk(task_id=pending.task_id,
                                                                                      last=True)))
        elif task.payload is not None:
            threading.Thread(
                target=self._send_payload,
                args=(session, pending, task.payload),
                name=f"payload-{party}",
                daemon=True,
            ).start()
        return _GrpcHandle(session, pending)

    def _send_payload(self, session: _Session, pending: _Pending, payload: Iterable[bytes]) -> None:
        source = rechunk(payload, self.chunk_bytes)
        while not pending.abandoned:
            try:
                chunk = next(source, None)
            except Exception as exc:
                # The payload's source failed (often another party's stream that dropped): the task
                # cannot complete. Fail it with the source's error and tell the party to stop waiting.
                error = exc if isinstance(exc, FedcreditError) else ProtocolError(f"payload source failed: {exc}")
                if not isinstance(exc, FedcreditError):
                    log.exception("producing the payload of task %s for %s failed", pending.task_id, session.name)
                _cancel(session, pending, f"the task's input failed: {error}")
                pending.error = error
                pending.header.set()
                return
            try:
                if chunk is None:
                    session.send(
                        link_pb2.CoordinatorMessage(chunk=link_pb2.PayloadChunk(task_id=pending.task_id, last=True))
                    )
                    return
                session.send(
                    link_pb2.CoordinatorMessage(chunk=link_pb2.PayloadChunk(task_id=pending.task_id, data=chunk))
                )
            except PartyUnavailable:
                return  # the receiving party is gone; its session already failed the task

    # ---- called by the servicer ----

    def serve_session(self, session: _Session, requests: Iterator[link_pb2.PartyMessage]) -> None:
        """Consume a party's messages until its stream ends (runs on a reader thread)."""
        try:
            for msg in requests:
                session.touch()
                self._dispatch(session, msg)
            session.close(grpc.StatusCode.UNAVAILABLE, "party closed the link")
        except grpc.RpcError:
            session.close(grpc.StatusCode.UNAVAILABLE, "link dropped")
        except Exception as exc:
            log.exception("link to %s failed", session.name)
            session.close(grpc.StatusCode.INTERNAL, f"link error: {exc}")
        finally:
            self._detach(session)

    def _dispatch(self, session: _Session, msg: link_pb2.PartyMessage) -> None:
        body = msg.WhichOneof("body")
        if body == "heartbeat":
            return
        if body == "result":
            r = msg.result
            with session.lock:
                pending = session.pending.get(r.task_id)
                if pending is not None and not r.has_payload:
                    del session.pending[r.task_id]
            if pending is None:
                return
            pending.params = params_from_struct(r.params)
            pending.has_payload = r.has_payload
            pending.header.set()
        elif body == "chunk":
            c = msg.chunk
            with session.lock:
                pending = session.pending.get(c.task_id)
                if pending is not None and c.last:
                    del session.pending[c.task_id]
            if pending is None or pending.abandoned:
                return
            # the last chunk may carry data too (one message fewer per small reply)
            for item in ([c.data] if c.data else []) + ([_END] if c.last else []):
                while not session.closed.is_set() and not pending.abandoned:
                    try:
                        pending.chunks.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        session.touch()  # blocked on our own consumer, not a silent party
        elif body == "error":
            er = msg.error
            with session.lock:
                pending = session.pending.pop(er.task_id, None)
            if pending is None:
                return
            pending.error = PartyTaskError(session.name, er.step or pending.kind, er.code, er.message)
            pending.header.set()
            force_put(pending.chunks, pending.error)
        elif body == "register":
            raise ProtocolError(f"party {session.name!r} registered twice on one link")


def _cancel(session: _Session, pending: _Pending, reason: str) -> None:
    pending.abandoned = True
    with session.lock:
        session.pending.pop(pending.task_id, None)
    if not session.closed.is_set():
        try:
            session.send(
                link_pb2.CoordinatorMessage(
                    cancel=link_pb2.CancelTask(task_id=pending.task_id, reason=reason)
                )
            )
        except PartyUnavailable:
            pass


def _small_payload(payload: Iterable[bytes] | None, size: int) -> list[bytes] | None:
    """The payload's chunks when it is already in memory (a list or tuple of bytes) and fits one chunk;
    such a payload is sent from the submitting thread, as the header is. Anything else (a stream, a
    large payload) goes through a sender thread, so that the submitter does not wait on the link."""
    if not isinstance(payload, list | tuple) or not all(isinstance(c, bytes) for c in payload):
        return None
    if sum(len(c) for c in payload) > size:
        return None
    return [c for c in payload if c]


def rechunk(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Split chunks larger than ``size``; pass others through (no copying into one big buffer)."""
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), size):
            yield bytes(view[start : start + size])


class _GrpcHandle(TaskHandle):
    def __init__(self, session: _Session, pending: _Pending) -> None:
        self.party = session.name
        self.kind = pending.kind
        self.task_id = pending.task_id
        self._session = session
        self._pending = pending

    def cancel(self, reason: str = "cancelled by the coordinator") -> None:
        if not self._pending.abandoned:
            _cancel(self._session, self._pending, reason)
            self._pending.error = self._pending.error or Cancelled(
                f"task {self.task_id} ({self.kind}) at {self.party!r} was cancelled: {reason}"
            )
            self._pending.header.set()

    def result(self, timeout: float | None = None) -> TaskResult:
        limit = self._pending.timeout_s if timeout is None else timeout
        if not self._pending.header.wait(limit):
            _cancel(self._session, self._pending, "timed out")
            raise TaskTimeout(self.party, self.kind, limit)
        if self._pending.error is not None:
            raise self._pending.error
        params = dict(self._pending.params)
        if not self._pending.has_payload:
            return TaskResult(self.party, self.kind, params)
        return TaskResult(self.party, self.kind, params, self._chunks(limit))

    def _chunks(self, inactivity_s: float) -> Iterator[bytes]:
        try:
            while True:
                try:
                    item = self._pending.chunks.get(timeout=inactivity_s)
                except queue.Empty:
                    raise TaskTimeout(self.party, self.kind, inactivity_s) from None
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, bytes)
                yield item
        finally:
            # Still registered means the party is still streaming: the consumer gave up early.
            if self._pending.task_id in self._session.pending:
                _cancel(self._session, self._pending, "result stream abandoned")


class PartyLinkServicer(link_pb2_grpc.PartyLinkServicer):
    """Thin: authenticate, read the Register message, hand the stream to the hub."""

    def __init__(self, hub: LinkHub) -> None:
        self._hub = hub

    def Connect(
        self, request_iterator: Iterator[link_pb2.PartyMessage], context: grpc.ServicerContext
    ) -> Iterator[link_pb2.CoordinatorMessage]:
        # A connection that does not register in time is cut (it would hold a thread and a slot).
        deadline = threading.Timer(self._hub.registration_timeout_s, context.cancel)
        deadline.daemon = True
        deadline.start()
        try:
            who = identity_of(context, self._hub.state)
            first = next(request_iterator)
            deadline.cancel()
            if first.WhichOneof("body") != "register":
                raise ProtocolError("the first message on a party link must be Register")
            size = first.register.summary.ByteSize()
            if size > MAX_SUMMARY_BYTES:
                raise InvalidInput(
                    f"party {who.name!r}: data summary of {size} bytes is over the {MAX_SUMMARY_BYTES}-byte limit"
                )
        except (StopIteration, grpc.RpcError):
            deadline.cancel()
            if not context.is_active():
                log.warning("a connection closed without registering within %.0f s", self._hub.registration_timeout_s)
            return
        except FedcreditError as exc:
            deadline.cancel()
            code, message = status_of(exc)
            log.warning("refused a party link: %s", message)
            context.abort(code, message)
        summary = summary_from_proto(first.register.summary)
        session = _Session(who.name, who.role, who.serial, summary)
        if not self._hub._attach(session):
            log.warning("refused a second link for party %s (%s): it already has a live link; kept the old one",
                        who.name, context.peer())
            context.abort(grpc.StatusCode.ALREADY_EXISTS, f"party {who.name!r} already has a live link")
        self._hub.state.record_seen(who.name, json.dumps(asdict(summary), sort_keys=True))
        log.info("party %s (%s) connected", who.name, who.role.value)
        reader = threading.Thread(
            target=self._hub.serve_session,
            args=(session, request_iterator),
            name=f"link-{who.name}",
            daemon=True,
        )
        reader.start()
        context.add_callback(lambda: session.close(grpc.StatusCode.CANCELLED, "stream cancelled"))
        yield link_pb2.CoordinatorMessage(
            registered=link_pb2.Registered(
                party=who.name, role=who.role.value, heartbeat_interval_s=self._hub.heartbeat_s
            )
        )
        last_persist = time.monotonic()
        while True:
            try:
                msg = session.outbound.get(timeout=0.5)
            except queue.Empty:
                msg = None
                if not session.closed.is_set():
                    if time.monotonic() - last_persist > 5:
                        last_persist = time.monotonic()
                        self._hub.state.record_seen(who.name)
                    continue
            if msg is None:
                break
            yield msg
        log.info("party %s disconnected", who.name)
        self._hub._detach(session)
        if session.close_status is not None and session.close_status[0] != grpc.StatusCode.CANCELLED:
            context.abort(*session.close_status)
