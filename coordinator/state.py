"""The coordinator's durable state in SQLite (default) or PostgreSQL: parties, certificates,
revocations, runs and the audit of admin actions. It survives restarts; liveness is not stored here
(it lives with the links). A ``postgresql://`` URL (``coordinator.state_url``) puts the same tables
on a PostgreSQL server through psycopg 3; the SQL is the same, with ``%s`` placeholders there.

One :class:`StateStore` per process; every method is a short transaction, safe from many threads.
Admin CLI commands and the running server share the file (WAL mode), which is how a revocation made
with ``fedcredit coordinator revoke`` reaches a running server.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcore.errors import AlreadyExists, InvalidInput, NotFound, Unavailable
from fedcore.files import check_writable
from fedcore.protocol.messages import Role

from .state_pg import PG_SCHEMES, PgConnection, pg_conninfo

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS principals (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('admin', 'lender', 'platform')),
    status TEXT NOT NULL CHECK (status IN ('admitted', 'revoked')),
    admitted_at REAL NOT NULL,
    revoked_at REAL,
    last_seen REAL,
    summary_json TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,
    name TEXT NOT NULL REFERENCES principals(name),
    fingerprint TEXT NOT NULL UNIQUE,
    not_before REAL NOT NULL,
    not_after REAL NOT NULL,
    issued_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS revocations (
    serial TEXT PRIMARY KEY REFERENCES certificates(serial),
    name TEXT NOT NULL,
    revoked_at REAL NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    params_json TEXT NOT NULL,
    result_json TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail_json TEXT NOT NULL
);
"""


def pg_schema() -> str:
    """The same tables on PostgreSQL: 8-byte floats for times, an identity column for the audit id."""
    return SCHEMA.replace(" REAL", " DOUBLE PRECISION").replace(
        "INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"
    )


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    status: str
    admitted_at: float
    revoked_at: float | None
    last_seen: float | None
    summary_json: str


@dataclass(frozen=True)
class AuditEntry:
    at: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class Run:
    run_id: str
    kind: str
    status: str
    params: dict[str, Any]
    result: dict[str, Any]
    created_at: float
    updated_at: float


class StateStore:
    """The registry. ``create=False`` (what the server and the admin commands use) refuses a missing,
    read-only or corrupt file, naming it; only ``fedcredit coordinator init`` creates one."""

    def __init__(self, path: Path | str, *, create: bool = True) -> None:
        self._ident: tuple[int, int] | None = None
        if isinstance(path, str) and path.startswith(PG_SCHEMES):
            self._pg: str | None = pg_conninfo(path)
            self.path = Path(path.split("@")[-1])  # for messages only: host/db, never a password
            self._local = threading.local()
            self._init_pg(create)
            return
        self._pg = None
        path = Path(path)
        self.path = path
        if not create:
            if not path.is_file():
                raise NotFound(
                    f"coordinator registry {path} does not exist (a mistyped path or a deleted file?); "
                    "`fedcredit coordinator init` creates a new federation"
                )
            check_writable(path, "coordinator registry")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        try:
            self._conn().executescript(SCHEMA)
            with self._tx() as db:
                db.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
        except sqlite3.DatabaseError as exc:
            raise InvalidInput(
                f"coordinator registry {path} is not a valid registry ({exc}); restore it from a backup"
            ) from None

    def _init_pg(self, create: bool) -> None:
        db = self._conn()
        exists = db.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]
        if not create and not exists:
            raise NotFound(
                f"coordinator registry {self.path} has no registry tables; "
                "`fedcredit coordinator init` creates a new federation"
            )
        with self._tx() as tx:
            for stmt in pg_schema().split(";"):
                if stmt.strip():
                    tx.execute(stmt)
            tx.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
                (str(SCHEMA_VERSION),),
            )

    def _check_file(self) -> None:
        """The registry must still be the file we opened: deleted or replaced while running is an error
        every caller sees (a new empty file would silently forget every party and run)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise Unavailable(f"coordinator registry {self.path} was deleted while the coordinator ran") from None
        ident = (st.st_dev, st.st_ino)
        if self._ident is None:
            self._ident = ident
        elif ident != self._ident:
            raise Unavailable(f"coordinator registry {self.path} was replaced while the coordinator ran")

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None and self._pg is not None:
            conn = PgConnection.connect(self._pg, str(self.path))  # type: ignore[assignment]
            self._local.conn = conn
            return conn  # type: ignore[return-value]
        if self._pg is not None:
            return conn  # type: ignore[return-value]
        if conn is None:
            if self._ident is not None:
                self._check_file()
            # once created, never create again: a vanished file must not come back empty
            mode = "rw" if self._ident is not None else "rwc"
            uri = f"file:{urllib.parse.quote(str(self.path.resolve()))}?mode={mode}"
            try:
                conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
            except sqlite3.OperationalError as exc:
                raise Unavailable(f"coordinator registry {self.path}: {exc}") from None
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        self._check_file()
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        try:
            db.execute("BEGIN" if self._pg is not None else "BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise Unavailable(f"coordinator registry {self.path}: {exc}") from None
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            db.execute("ROLLBACK")
            raise Unavailable(f"coordinator registry {self.path}: cannot write ({exc})") from None

    # ---- principals and certificates ----

    def admit(
        self,
        name: str,
        role: Role,
        *,
        serial: str,
        fingerprint: str,
        not_before: float,
        not_after: float,
        actor: str,
    ) -> None:
        """Record a newly admitted principal and its certificate in one transaction."""
        now = time.time()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM principals WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(f"a party named {name!r} is already admitted (revoked names stay taken)")
            db.execute(
                "INSERT INTO principals(name, role, status, admitted_at) VALUES (?, ?, 'admitted', ?)",
                (name, role.value, now),
            )
            db.execute(
                "INSERT INTO certificates(serial, name, fingerprint, not_before, not_after, issued_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (serial, name, fingerprint, not_before, not_after, now),
            )
            self._audit(db, actor, "admit", name, {"role": role.value, "serial": serial})

    def add_certificate(
        self, name: str, *, serial: str, fingerprint: str, not_before: float, not_after: float, actor: str
    ) -> None:
        """Record another certificate for an admitted principal (renewal, or a test's extra cert)."""
        with self._tx() as db:
            self._require(db, name)
            db.execute(
                "INSERT INTO certificates(serial, name, fingerprint, not_before, not_after, issued_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (serial, name, fingerprint, not_before, not_after, time.time()),
            )
            self._audit(db, actor, "issue_certificate", name, {"serial": serial})

    def revoke(self, name: str, *, reason: str, actor: str) -> list[str]:
        """Revoke a principal and all its certificates; returns the revoked serials."""
        now = time.time()
        with self._tx() as db:
            row = self._require(db, name)
            if row[0] == "revoked":
                raise InvalidInput(f"party {name!r} is already revoked")
            serials = [r[0] for r in db.execute("SELECT serial FROM certificates WHERE name = ?", (name,))]
            db.execute("UPDATE principals SET status = 'revoked', revoked_at = ? WHERE name = ?", (now, name))
            db.executemany(
                "INSERT INTO revocations(serial, name, revoked_at, reason) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                [(s, name, now, reason) for s in serials],
            )
            self._audit(db, actor, "revoke", name, {"reason": reason, "serials": serials})
        return serials

    def _require(self, db: sqlite3.Connection, name: str) -> tuple[str]:
        row = db.execute("SELECT status FROM principals WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no party named {name!r} is admitted")
        return (str(row[0]),)

    def principal(self, name: str) -> Principal | None:
        row = (
            self._conn()
            .execute(
                "SELECT name, role, status, admitted_at, revoked_at, last_seen, summary_json"
                " FROM principals WHERE name = ?",
                (name,),
            )
            .fetchone()
        )
        return Principal(row[0], Role(row[1]), *row[2:]) if row else None

    def principals(self) -> list[Principal]:
        rows = (
            self._conn()
            .execute(
                "SELECT name, role, status, admitted_at, revoked_at, last_seen, summary_json"
                " FROM principals ORDER BY name"
            )
            .fetchall()
        )
        return [Principal(r[0], Role(r[1]), *r[2:]) for r in rows]

    def certificate_owner(self, serial: str) -> tuple[str, bool] | None:
        """(name, revoked) of a certificate serial we issued, or None if unknown."""
        row = (
            self._conn()
            .execute(
                "SELECT c.name, r.serial IS NOT NULL FROM certificates c"
                " LEFT JOIN revocations r ON r.serial = c.serial WHERE c.serial = ?",
                (serial,),
            )
            .fetchone()
        )
        return (str(row[0]), bool(row[1])) if row else None

    def revoked_serials(self) -> set[str]:
        return {r[0] for r in self._conn().execute("SELECT serial FROM revocations")}

    def record_seen(self, name: str, summary_json: str | None = None) -> None:
        with self._tx() as db:
            if summary_json is None:
                db.execute("UPDATE principals SET last_seen = ? WHERE name = ?", (time.time(), name))
            else:
                db.execute(
                    "UPDATE principals SET last_seen = ?, summary_json = ? WHERE name = ?",
                    (time.time(), summary_json, name),
                )

    # ---- runs ----

    def create_run(self, run_id: str, kind: str, params: dict[str, Any], actor: str) -> None:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT INTO runs(run_id, kind, status, params_json, created_at, updated_at)"
                " VALUES (?, ?, 'running', ?, ?, ?)",
                (run_id, kind, json.dumps(params, sort_keys=True), now, now),
            )
            self._audit(db, actor, "start_run", run_id, {"kind": kind})

    def update_run(self, run_id: str, status: str, result: dict[str, Any]) -> None:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE runs SET status = ?, result_json = ?, updated_at = ? WHERE run_id = ?",
                (status, json.dumps(result, sort_keys=True), time.time(), run_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no run {run_id!r}")

    def run(self, run_id: str) -> Run:
        row = (
            self._conn()
            .execute(
                "SELECT run_id, kind, status, params_json, result_json, created_at, updated_at"
                " FROM runs WHERE run_id = ?",
                (run_id,),
            )
            .fetchone()
        )
        if row is None:
            raise NotFound(f"no run {run_id!r}")
        return Run(row[0], row[1], row[2], json.loads(row[3]), json.loads(row[4]), row[5], row[6])

    def runs(self) -> list[Run]:
        ids = [r[0] for r in self._conn().execute("SELECT run_id FROM runs ORDER BY created_at")]
        return [self.run(i) for i in ids]

    # ---- audit ----

    def _audit(
        self, db: sqlite3.Connection, actor: str, action: str, target: str, detail: dict[str, Any]
    ) -> None:
        db.execute(
            "INSERT INTO audit(at, actor, action, target, detail_json) VALUES (?, ?, ?, ?, ?)",
            (time.time(), actor, action, target, json.dumps(detail, sort_keys=True)),
        )

    def audit(self, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
        with self._tx() as db:
            self._audit(db, actor, action, target, detail)

    def audit_log(self) -> list[AuditEntry]:
        rows = (
            self._conn()
            .execute("SELECT at, actor, action, target, detail_json FROM audit ORDER BY id")
            .fetchall()
        )
        return [AuditEntry(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
