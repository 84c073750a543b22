"""The coordinator registry's PostgreSQL connection (psycopg 3), shaped like the sqlite3 one it replaces.

:class:`PgConnection` offers the few ``sqlite3.Connection`` methods the registry uses (``execute``,
``executemany``, ``close``), rewriting ``?`` placeholders to ``%s``; transactions are explicit
``BEGIN``/``COMMIT`` statements on an autocommit connection, as they are on SQLite.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fedcore.errors import Unavailable

PG_SCHEMES = ("postgresql://", "postgresql+psycopg://", "postgres://")


def pg_conninfo(url: str) -> str:
    """A libpq URL from a SQLAlchemy-style one (``postgresql+psycopg://`` -> ``postgresql://``)."""
    for scheme in PG_SCHEMES:
        if url.startswith(scheme):
            return "postgresql://" + url[len(scheme) :]
    return url


class PgConnection:
    def __init__(self, raw: Any) -> None:
        self._raw = raw

    @classmethod
    def connect(cls, conninfo: str, shown: str) -> PgConnection:
        try:
            import psycopg
        except ImportError:
            raise Unavailable(
                "a PostgreSQL registry needs psycopg: pip install 'fedcredit[postgres]'"
            ) from None
        try:
            return cls(psycopg.connect(conninfo, autocommit=True))
        except psycopg.Error as exc:
            raise Unavailable(f"coordinator registry {shown}: {exc}") from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._raw.execute(sql.replace("?", "%s"), tuple(params) or None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        with self._raw.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), list(rows))
            return cur

    def close(self) -> None:
        self._raw.close()
