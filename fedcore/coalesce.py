"""The one request coalescer: concurrent small calls with the same key leave together as one batch.

At most ``inflight`` batches run at once; calls arriving meanwhile wait and leave together in the next
batch (up to ``max_merged`` items), so an idle caller adds no delay and a busy one amortizes a fixed cost
(a coordinator round trip, encryptions, an audit record) over many items. Each caller gets its own slice
of the batch's result (``cut``); ``cut`` may raise for one caller (e.g. a malformed id) without failing the
others. A batch that fails fails every caller in it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from fedcore.errors import DeadlineExceeded

__all__ = ["Coalescer"]

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")


@dataclass
class _Waiting(Generic[K, I, R]):
    items: Sequence[I]
    key: K
    done: threading.Event = field(default_factory=threading.Event)
    result: R | None = None
    error: BaseException | None = None


class Coalescer(Generic[K, I, R]):
    def __init__(self, run: Callable[[K, list[I], int], R], cut: Callable[[R, int, int], R], *,
                 max_merged: int, inflight: int = 2, name: str = "coalesce") -> None:
        """``run(key, merged items, number of callers)`` does the work; ``cut(result, start, stop)`` is a
        caller's part."""
        self._run_batch = run
        self._cut = cut
        self._max = max_merged
        self._queue: list[_Waiting[K, I, R]] = []
        self._cond = threading.Condition()
        self._closed = False
        self.batches_sent = 0
        for i in range(inflight):
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True).start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def submit(self, items: Sequence[I], key: K, timeout_s: float) -> R:
        item: _Waiting[K, I, R] = _Waiting(items, key)
        with self._cond:
            if self._closed:
                raise RuntimeError("coalescer is closed")
            self._queue.append(item)
            self._cond.notify()
        if not item.done.wait(timeout_s):
            raise DeadlineExceeded(f"the batched call did not finish within {timeout_s:g} s")
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def _take(self) -> list[_Waiting[K, I, R]] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            key = self._queue[0].key
            batch: list[_Waiting[K, I, R]] = []
            rest: list[_Waiting[K, I, R]] = []
            total = 0
            for it in self._queue:
                if it.key == key and (not batch or total + len(it.items) <= self._max):
                    batch.append(it)
                    total += len(it.items)
                else:
                    rest.append(it)
            self._queue = rest
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            merged = [x for it in batch for x in it.items]
            try:
                res = self._run_batch(batch[0].key, merged, len(batch))
                self.batches_sent += 1
                pos = 0
                for it in batch:
                    try:
                        it.result = self._cut(res, pos, pos + len(it.items))
                    except BaseException as exc:  # this caller's part is bad; the others are not
                        it.error = exc
                    pos += len(it.items)
            except BaseException as exc:  # every waiting caller gets the failure
                for it in batch:
                    it.error = exc
            for it in batch:
                it.done.set()
