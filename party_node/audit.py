"""An append-only, hash-chained audit log of every scoring request a party takes part in.

File ``HOME/audit/scoring.log``: one JSON object per line (UTF-8, sorted keys, no spaces)::

    {"seq": 1, "ts": "2026-...Z", "event": "score_request", ..., "prev": "<hash of line seq-1>",
     "hash": sha256(canonical JSON of every other field)}

The first record's ``prev`` is 64 zeros. A sidecar ``scoring.log.head`` holds ``seq hash`` of the last
record, written (atomically) after each append, so that dropping records from the end is detected too.

:func:`verify` recomputes the chain and reports the first broken record: an edited field (its hash no
longer matches), a deleted or re-ordered record (``prev``/``seq`` mismatch) or a truncated tail (the
head does not match). It cannot stop an operator who rewrites the whole file *and* the head from
scratch; for that, export the head hash regularly (it is printed by ``fedcredit party audit verify``)
to a place the operator does not control.

What is recorded never includes raw ids or feature values: request id, model, queries, the number of
subjects and a SHA-256 of the pseudonym list (so a regulator holding the pseudonyms can check them).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedcore.errors import InvalidInput
from fedcore.protocol.messages import JSONValue

GENESIS = "0" * 64
AUDIT_FILE = Path("audit") / "scoring.log"
_RESERVED = frozenset({"seq", "ts", "event", "prev", "hash"})
_SHARED: dict[Path, AuditLog] = {}
_SHARED_LOCK = threading.Lock()


def _canonical(obj: Mapping[str, JSONValue]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _hash(record: Mapping[str, JSONValue]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int
    head: str
    problem: str = ""
    line: int | None = None  # 1-based line of the first broken record

    def __str__(self) -> str:
        if self.ok:
            return f"audit log OK: {self.records} records, head {self.head}"
        where = f" at line {self.line}" if self.line is not None else ""
        return f"audit log BROKEN{where}: {self.problem}"


class AuditLog:
    """Append-only hash-chained JSON-lines log; safe across threads and processes (``flock``).

    Durability: every record is written with ``write(2)`` before :meth:`append` returns (it survives a
    crash of the process). ``fsync_interval_s=None`` also fsyncs each record before returning (about 5 ms
    here); the default fsyncs in the background at most every second, so a power failure can lose at most
    the last second of records, and ``verify`` then reports the head ahead of the log.
    """

    def __init__(self, path: Path, clock: Callable[[], str] = _now, fsync_interval_s: float | None = 1.0) -> None:
        self.path = path
        self.head_path = path.with_name(path.name + ".head")
        self._clock = clock
        self._lock = threading.Lock()
        self._interval = fsync_interval_s
        self._fd: int | None = None
        self._head_fd: int | None = None
        self._dirty = threading.Event()
        self._closed = threading.Event()
        self._flusher: threading.Thread | None = None
        self._seq, self._prev = self._tail()
        self._end = -1  # file size after our last append; another writer changes it (then re-read the tail)

    @classmethod
    def for_home(cls, home: Path) -> AuditLog:
        """The node's log, one instance per file in this process (its scoring party, scoring service and
        pre-approval handler share it, so appends from one process never re-read the tail)."""
        path = (home / AUDIT_FILE).resolve()
        with _SHARED_LOCK:
            log = _SHARED.get(path)
            if log is None or not log._same_file():
                log = _SHARED[path] = cls(path)
            return log

    def _same_file(self) -> bool:
        """False once the file this instance writes was removed or replaced (then a fresh instance)."""
        with self._lock:
            if self._closed.is_set():
                return False
            if self._fd is None:
                return True
            try:
                return os.fstat(self._fd).st_ino == os.stat(self.path).st_ino
            except OSError:
                return False

    def _open(self) -> tuple[int, int]:
        if self._fd is None or self._head_fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._head_fd = os.open(self.head_path, os.O_WRONLY | os.O_CREAT, 0o600)
            if self._interval and self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, name="audit-fsync", daemon=True)
                self._flusher.start()
        return self._fd, self._head_fd

    def _flush_loop(self) -> None:
        while not self._closed.is_set():
            self._dirty.wait()
            self._closed.wait(self._interval or 1.0)
            self._dirty.clear()
            self._sync()

    def _sync(self) -> None:
        """fsync copies of the descriptors outside the lock: an append never waits for the disk (a flush
        can take tens of milliseconds; a joint score appends at every party on its path)."""
        with self._lock:
            fds = [os.dup(fd) for fd in (self._fd, self._head_fd) if fd is not None]
        try:
            for fd in fds:
                os.fsync(fd)
        finally:
            for fd in fds:
                os.close(fd)

    def close(self) -> None:
        self._closed.set()
        self._dirty.set()
        with self._lock:
            for fd in (self._fd, self._head_fd):
                if fd is not None:
                    os.fsync(fd)
                    os.close(fd)
            self._fd = self._head_fd = None

    def _tail(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last record, read from the end of the file (cheap for long logs)."""
        if not self.path.exists():
            return 0, GENESIS
        with self.path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            block = 1 << 16
            data = b""
            while True:
                start = max(0, size - block)
                f.seek(start)
                data = f.read(size - start)
                lines = [ln for ln in data.split(b"\n") if ln.strip()]
                if len(lines) >= 2 or start == 0:
                    break
                block *= 4
        if not lines:
            return 0, GENESIS
        try:
            rec = json.loads(lines[-1])
            return int(rec["seq"]), str(rec["hash"])
        except (ValueError, KeyError, TypeError):
            raise InvalidInput(f"{self.path}: last record is not valid; run `audit verify`") from None

    def append(self, event: str, fields: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
        """Append one record. Safe across threads and processes (an exclusive ``flock`` on the file)."""
        return self.append_many(event, [fields])[0]

    def append_many(self, event: str, many: Sequence[Mapping[str, JSONValue]]) -> list[dict[str, JSONValue]]:
        """Append one ``event`` record per entry of ``many``, chained in order, with one write (a grouped
        scoring task audits each of its parts)."""
        for fields in many:
            bad = _RESERVED & set(fields)
            if bad:
                raise InvalidInput(f"audit fields may not use reserved names {sorted(bad)}")
        if not many:
            return []
        with self._lock:
            fd, head_fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(fd).st_size
                if size != self._end:  # another writer (process or instance) appended: chain after its record
                    self._seq, self._prev = self._tail()
                seq, prev, ts = self._seq, self._prev, self._clock()
                out: list[dict[str, JSONValue]] = []
                lines: list[bytes] = []
                for fields in many:
                    seq += 1
                    rec: dict[str, JSONValue] = {"seq": seq, "ts": ts, "event": event, **fields}
                    rec["prev"] = prev
                    rec["hash"] = prev = _hash(rec)
                    out.append(rec)
                    lines.append(_canonical(rec) + b"\n")
                data = b"".join(lines)
                os.write(fd, data)
                self._end = size + len(data)
                self._seq, self._prev = seq, prev
                head = f"{self._seq:020d} {self._prev}\n".encode("ascii")  # fixed width: rewritten in place
                os.pwrite(head_fd, head, 0)
                os.ftruncate(head_fd, len(head))
                if not self._interval:
                    os.fsync(fd)
                    os.fsync(head_fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            if self._interval:
                self._dirty.set()
            return out

    def verify(self) -> VerifyResult:
        return verify(self.path)


def verify(path: Path) -> VerifyResult:
    """Recompute the chain of ``path`` (and compare with its head file). Never raises for bad content."""
    prev, seq, n = GENESIS, 0, 0
    if path.exists():
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    return VerifyResult(False, n, prev, "empty line inside the log", lineno)
                try:
                    rec = json.loads(raw)
                except ValueError:
                    return VerifyResult(False, n, prev, "line is not valid JSON", lineno)
                if not isinstance(rec, dict) or "hash" not in rec:
                    return VerifyResult(False, n, prev, "record has no hash", lineno)
                if rec.get("seq") != seq + 1:
                    return VerifyResult(
                        False,
                        n,
                        prev,
                        f"sequence {rec.get('seq')!r} where {seq + 1} was due (a record was removed or re-ordered)",
                        lineno,
                    )
                if rec.get("prev") != prev:
                    return VerifyResult(False, n, prev, "chain broken: prev does not match the previous record", lineno)
                if _hash(rec) != rec["hash"]:
                    return VerifyResult(False, n, prev, "record content does not match its hash (edited)", lineno)
                prev, seq, n = str(rec["hash"]), seq + 1, n + 1
    head = path.with_name(path.name + ".head")
    if head.exists():
        parts = head.read_text(encoding="ascii").split()
        if len(parts) != 2 or not parts[0].isdigit() or (int(parts[0]), parts[1]) != (seq, prev):
            return VerifyResult(
                False,
                n,
                prev,
                f"head file says {' '.join(parts)!r}, the log ends at {seq} "
                "(records were removed from the end, or the head was edited)",
            )
    elif n:
        return VerifyResult(False, n, prev, f"head file {head} is missing")
    return VerifyResult(True, n, prev)
