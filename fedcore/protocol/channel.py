"""The one interface every protocol is written against: :class:`PartyChannel`.

The coordinator side of a protocol calls ``channel.submit(party, Task(...))`` and reads the
:class:`TaskHandle`'s result; the party side is a handler in a
:class:`~fedcore.protocol.tasks.HandlerRegistry`. Two implementations exist and protocols never know
which one they run on (the shape of Flower's in-memory and gRPC grids):

- :class:`fedcore.protocol.inmemory.InMemoryChannel`: parties as handler registries in this process,
  for unit tests of protocol logic;
- ``coordinator.link.LinkHub``: real party nodes over mutual-TLS gRPC streams.

Semantics both implementations keep:

- ``submit`` fails fast with :class:`~fedcore.errors.PartyUnavailable` when the party is not connected.
- ``TaskHandle.result()`` waits up to the task's ``timeout_s`` and raises
  :class:`~fedcore.errors.TaskTimeout` (after cancelling the task at the party),
  :class:`~fedcore.errors.PartyTaskError` (the handler failed: names party, step and error code) or
  :class:`~fedcore.errors.PartyUnavailable` (the link dropped).
- A result's payload is a stream of chunks read once; memory stays bounded on both sides.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping

from fedcore.protocol.messages import PartyInfo, Task, TaskResult


class TaskHandle(abc.ABC):
    party: str
    kind: str
    task_id: str

    @abc.abstractmethod
    def result(self, timeout: float | None = None) -> TaskResult:
        """Wait for the reply header (not the whole payload). ``timeout`` defaults to the task's."""

    @abc.abstractmethod
    def cancel(self, reason: str = "cancelled by the coordinator") -> None:
        """Ask the party to stop; a waiting ``result()`` raises Cancelled."""


class PartyChannel(abc.ABC):
    @abc.abstractmethod
    def parties(self) -> list[PartyInfo]:
        """Every admitted party with its role, liveness and registered data summary."""

    @abc.abstractmethod
    def submit(self, party: str, task: Task) -> TaskHandle:
        """Send ``task`` to ``party``; returns at once."""

    def run(self, party: str, task: Task) -> TaskResult:
        """Submit and wait for the reply header."""
        return self.submit(party, task).result()

    def run_all(self, tasks: Mapping[str, Task]) -> dict[str, TaskResult]:
        """Submit one task per party concurrently; wait for all. The first failure is raised after
        the other tasks are cancelled."""
        handles = {party: self.submit(party, task) for party, task in tasks.items()}
        results: dict[str, TaskResult] = {}
        try:
            for party, handle in handles.items():
                results[party] = handle.result()
        except BaseException:
            cancel_all(h for p, h in handles.items() if p not in results)
            raise
        return results

    def online(self) -> list[str]:
        return [p.name for p in self.parties() if p.online]


def cancel_all(handles: Iterable[TaskHandle]) -> None:
    for handle in handles:
        handle.cancel("another party's task failed")
