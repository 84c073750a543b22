"""The contributor's blacklist and multi-lending tables: flagged, consenting subjects' pseudonyms from the
store as a :class:`~fedcore.protocol.scoring.party.SortedTable` (24 B a subject).

The first request builds a table; once older than ``refresh_s`` a background thread checks the store's
data version (:meth:`Store.data_version`: an ingest or a new pseudonym key changes it) and rebuilds the
table only if it changed, while requests keep using the current one (at 50M flagged subjects a build
takes minutes of CPU, which neither a request nor an idle member should pay every refresh). Concurrent
first requests wait for one build.
"""

from __future__ import annotations

import logging
import threading
import time

from fedcore.protocol.scoring.party import SortedTable

from .store import Store

log = logging.getLogger(__name__)

SOURCES = {"fraud": ("fraud", "blacklist"), "loans": ("active_loan", "scoring")}  # table -> (flag, consent)


class FlagTables:
    def __init__(self, store: Store, refresh_s: float = 300.0) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._tables: dict[str, tuple[float, SortedTable, object]] = {}  # name -> (checked at, table, version)
        self._rebuilding: set[str] = set()

    def table(self, name: str) -> SortedTable:
        now = time.monotonic()
        with self._lock:
            hit = self._tables.get(name)
            stale = hit is not None and now - hit[0] > self._refresh_s and name not in self._rebuilding
            if stale:
                self._rebuilding.add(name)
        if hit is None:
            with self._build_lock:
                with self._lock:
                    hit = self._tables.get(name)
                if hit is None:
                    hit = self._build(name)
            return hit[1]
        if stale:
            threading.Thread(target=self._rebuild, args=(name,), name=f"flags-{name}", daemon=True).start()
        return hit[1]

    def _build(self, name: str) -> tuple[float, SortedTable, object]:
        at, version = time.monotonic(), self._store.data_version()  # read first: a later ingest shows
        hit = (at, SortedTable.owning(self._store.flagged_pseudonyms(*SOURCES[name])), version)
        with self._lock:
            self._tables[name] = hit
        return hit

    def _rebuild(self, name: str) -> None:
        try:
            with self._lock:
                current = self._tables[name]
            if self._store.data_version() == current[2]:  # nothing changed: keep the table
                with self._lock:
                    self._tables[name] = (time.monotonic(), current[1], current[2])
                return
            self._build(name)
        except Exception:  # the current table keeps answering; the next stale request tries again
            log.exception("rebuilding the %s table failed", name)
        finally:
            with self._lock:
                self._rebuilding.discard(name)
