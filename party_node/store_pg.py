"""PostgreSQL specifics of the party store: bulk writes through ``COPY ... FROM STDIN``.

The store's code is the same on SQLite and PostgreSQL (SQLAlchemy Core). Only bulk inserts differ:
on PostgreSQL (psycopg 3) rows go through the COPY protocol on the ingest's own connection and
transaction, so an ingest stays atomic; elsewhere they are one executemany.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"


def copy_rows(conn: Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    """Append ``rows`` to ``table`` with COPY (binary-safe: bytea and NULL go through psycopg's adapters)."""
    prep = conn.dialect.identifier_preparer
    cols = ", ".join(prep.quote(c) for c in columns)
    name = prep.format_table(table)
    raw = conn.connection.driver_connection  # the psycopg Connection inside this SQLAlchemy transaction
    assert raw is not None
    with raw.cursor() as cur, cur.copy(f"COPY {name} ({cols}) FROM STDIN") as cp:  # type: ignore[attr-defined]
        for r in rows:
            cp.write_row(r)
