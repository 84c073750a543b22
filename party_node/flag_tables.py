"""The member's fraud-list and active-loan lookup tables, as scoring contributions read them.

Each is a :class:`~fedcore.protocol.scoring.party.SortedTable` of the pseudonyms of flagged subjects with
the right consent (fraud: ``blacklist``; active loans: ``scoring``). The first request builds a table;
once older than ``refresh_s`` it is rebuilt in a background thread while requests keep using the current
one (at 50M flagged subjects a build takes about a minute).
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
    def __init__(self, store: Store, refresh_s: float) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._tables: dict[str, tuple[float, SortedTable]] = {}
        self._rebuilding: set[str] = set()

    def table(self, name: str) -> SortedTable:
        now = time.monotonic()
        with self._lock:
            hit = self._tables.get(name)
            stale = hit is not None and now - hit[0] > self._refresh_s and name not in self._rebuilding
            if stale:
                self._rebuilding.add(name)
        if hit is None:
            with self._build_lock:  # concurrent first requests wait for one build
                with self._lock:
                    hit = self._tables.get(name)
                if hit is None:
                    hit = self._build(name)
            return hit[1]
        if stale:
            threading.Thread(target=self._rebuild, args=(name,), name=f"flags-{name}", daemon=True).start()
        return hit[1]

    def _build(self, name: str) -> tuple[float, SortedTable]:
        at = time.monotonic()
        keys = self._store.flagged_pseudonyms(*SOURCES[name])
        hit = (at, SortedTable(keys))
        del keys
        with self._lock:
            self._tables[name] = hit
        return hit

    def _rebuild(self, name: str) -> None:
        try:
            self._build(name)
        except Exception:  # the current table keeps answering; the next stale request tries again
            log.exception("rebuilding the %s table failed", name)
        finally:
            with self._lock:
                self._rebuilding.discard(name)
