"""Protocol runs at the coordinator: start, watch, persist, resume.

A *job kind* is a function ``(RunContext) -> result`` registered in
:data:`JOB_KINDS` (PSI, training, ...). :class:`RunManager` runs each in a thread, records it in the
state store (``running`` -> ``succeeded`` / ``failed``, with the result or the error message), and
fans progress messages out to whoever watches. A run started by an admin goes on if the admin's
client goes away; a run interrupted by a coordinator crash stays ``running`` in the store until it is
resumed (for kinds that support resume) or marked failed at the next start.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcore.errors import FedcreditError, InvalidInput, NotFound
from fedcore.protocol.channel import PartyChannel

from .state import StateStore

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RunContext:
    """What a job gets: the party channel, its run id and parameters, a progress callback, a folder
    of its own for checkpoints (``workdir``, under the coordinator's home) and the state store."""

    channel: PartyChannel
    run_id: str
    params: Mapping[str, Any]
    progress: Progress
    workdir: Path
    state: StateStore


JobFn = Callable[[RunContext], dict[str, Any]]


@dataclass(frozen=True)
class JobKind:
    name: str
    run: JobFn
    resume: JobFn | None = None


JOB_KINDS: dict[str, JobKind] = {}


def register_job(kind: JobKind) -> None:
    JOB_KINDS[kind.name] = kind


@dataclass
class RunEvent:
    run_id: str
    message: str
    done: bool = False
    status: str = "running"
    result: dict[str, Any] = field(default_factory=dict)


class _Watchers:
    def __init__(self) -> None:
        self.queues: list[queue.Queue[RunEvent]] = []
        self.lock = threading.Lock()
        self.last: RunEvent | None = None

    def publish(self, event: RunEvent) -> None:
        with self.lock:
            self.last = event
            for q in self.queues:
                q.put(event)


class RunManager:
    def __init__(self, channel: PartyChannel, state: StateStore, workdir: Path) -> None:
        self.channel = channel
        self.state = state
        self.workdir = workdir
        self._watchers: dict[str, _Watchers] = {}
        self._lock = threading.Lock()
        self._mark_interrupted()

    def _mark_interrupted(self) -> None:
        for run in self.state.runs():
            if run.status == "running":
                kind = JOB_KINDS.get(run.kind)
                resumable = kind is not None and kind.resume is not None
                self.state.update_run(
                    run.run_id, "interrupted" if resumable else "failed",
                    {**run.result, "error": "the coordinator stopped during the run"},
                )

    def start(self, kind: str, params: Mapping[str, Any], actor: str) -> str:
        job = JOB_KINDS.get(kind)
        if job is None:
            raise InvalidInput(f"unknown run kind {kind!r}; known: {', '.join(sorted(JOB_KINDS))}")
        run_id = f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.state.create_run(run_id, kind, dict(params), actor=actor)
        self._launch(run_id, job.run, params)
        return run_id

    def resume(self, run_id: str, actor: str) -> str:
        run = self.state.run(run_id)
        job = JOB_KINDS.get(run.kind)
        if job is None or job.resume is None:
            raise InvalidInput(f"runs of kind {run.kind!r} cannot be resumed")
        if run.status not in ("interrupted", "failed"):
            raise InvalidInput(f"run {run_id} is {run.status}; only interrupted or failed runs resume")
        self.state.update_run(run_id, "running", run.result)
        self.state.audit(actor, "resume_run", run_id, {"kind": run.kind})
        self._launch(run_id, job.resume, run.params)
        return run_id

    def _launch(self, run_id: str, fn: JobFn, params: Mapping[str, Any]) -> None:
        w = _Watchers()
        with self._lock:
            self._watchers[run_id] = w

        def progress(message: str) -> None:
            log.info("run %s: %s", run_id, message)
            w.publish(RunEvent(run_id, message))

        def finish(status: str, result: dict[str, Any], message: str) -> None:
            """Record the run's end and tell its watchers, whatever happens to the registry: a client
            following the run always gets a final event, never a hang."""
            try:
                self.state.update_run(run_id, status, result)
            except Exception as exc:
                log.error("run %s ended (%s) but could not be recorded: %s", run_id, status, exc)
                status, message, result = "failed", f"{message}; the run could not be recorded: {exc}", {}
            w.publish(RunEvent(run_id, message, done=True, status=status, result=result))

        def body() -> None:
            try:
                rc = RunContext(self.channel, run_id, params, progress, self.workdir, self.state)
                result = fn(rc)
            except FedcreditError as exc:
                log.warning("run %s failed: %s", run_id, exc)
                finish("failed", {"error": str(exc)}, str(exc))
            except BaseException as exc:
                log.exception("run %s crashed", run_id)
                finish("failed", {"error": f"internal error: {type(exc).__name__}: {exc}"},
                       f"internal error: {type(exc).__name__}: {exc} (see the coordinator's log)")
            else:
                finish("succeeded", result, "succeeded")

        threading.Thread(target=body, name=f"run-{run_id}", daemon=True).start()

    def watch(self, run_id: str, stop: threading.Event | None = None) -> Iterator[RunEvent]:
        """Progress events of a run started in this process, until it is done."""
        with self._lock:
            w = self._watchers.get(run_id)
        if w is None:
            raise NotFound(f"run {run_id!r} is not running in this coordinator")
        q: queue.Queue[RunEvent] = queue.Queue()
        with w.lock:
            w.queues.append(q)
            if w.last is not None and w.last.done:
                q.put(w.last)
        while stop is None or not stop.is_set():
            try:
                event = q.get(timeout=0.5)
            except queue.Empty:
                continue
            yield event
            if event.done:
                return
