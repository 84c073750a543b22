"""Alignment tables at a party: which of its subjects are row ``i`` of a PSI run's joint table.

The PSI protocol (:mod:`fedcore.protocol.psi`) sees this party through :class:`StoreAlignment`: the
subjects that consented to a purpose, as ``kind:normalized-id`` bytes (so a phone number never matches
a national id), and a sink that stages a run's table, commits it, or drops it. Staged tables are
invisible; a node that restarts drops any table it staged but never committed, so a run that failed
half-way leaves nothing behind.
"""

from __future__ import annotations

import itertools

import numpy as np
import sqlalchemy as sa

from fedcore.errors import NotFound

from .store import Store

_BLOCK = 100_000
_md = sa.MetaData()
ALIGNMENTS = sa.Table(
    "alignments",
    _md,
    sa.Column("run_id", sa.String(96), primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("row_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
    sa.Column("committed", sa.Boolean, nullable=False),
)
_BATCH = 20_000
_INSERT_SQL = "INSERT INTO alignments (run_id, position, row_id, committed) VALUES ({0}, {0}, {0}, {0})"
_MARKS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


class StoreAlignment:
    def __init__(self, store: Store) -> None:
        self.store = store
        _md.create_all(store.engine, tables=[ALIGNMENTS])

    def drop_uncommitted(self) -> int:
        with self.store.engine.begin() as conn:
            return int(conn.execute(sa.delete(ALIGNMENTS).where(ALIGNMENTS.c.committed.is_(False))).rowcount)

    # ---- SubjectSource ----

    def subjects_for_psi(self, purpose: str) -> tuple[np.ndarray, np.ndarray]:
        """(row ids, ``kind:id`` as a fixed-width bytes array), read in blocks: no Python object per id
        is kept."""
        s = self.store.t["subjects"]
        c = self.store.t["consent"]
        stmt = (
            sa.select(s.c.row_id, s.c.id_kind, s.c.id_norm)
            .where(sa.exists().where(c.c.purpose == purpose, c.c.row_id == s.c.row_id, c.c.granted.is_(True)))
            .order_by(s.c.row_id)
        )
        keys: list[np.ndarray] = []
        ids: list[np.ndarray] = []
        with self.store.engine.connect() as conn:
            res = conn.execution_options(stream_results=True, yield_per=_BLOCK).execute(stmt)
            for rows in res.partitions(_BLOCK):
                keys.append(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
                ids.append(np.array([f"{r[1]}:{r[2]}".encode() for r in rows], dtype=bytes))
        if not keys:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype="S1")
        return np.concatenate(keys), np.concatenate(ids)

    # ---- AlignmentSink ----

    def stage_alignment(self, run_id: str, subject_keys: np.ndarray) -> None:
        keys = np.asarray(subject_keys, dtype=np.int64)
        with self.store.engine.begin() as conn:
            conn.execute(sa.delete(ALIGNMENTS).where(ALIGNMENTS.c.run_id == run_id))
            for start in range(0, len(keys), _BATCH):
                part = keys[start : start + _BATCH]
                # one executemany per block of plain tuples (no per-row dicts or ORM rows)
                rows = zip(itertools.repeat(run_id), range(start, start + len(part)), part.tolist(),
                           itertools.repeat(False))
                conn.exec_driver_sql(_INSERT_SQL.format(_MARKS[conn.dialect.paramstyle]), list(rows))

    def commit_alignment(self, run_id: str) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(sa.update(ALIGNMENTS).where(ALIGNMENTS.c.run_id == run_id).values(committed=True))

    def drop_alignment(self, run_id: str) -> None:
        with self.store.engine.begin() as conn:
            conn.execute(sa.delete(ALIGNMENTS).where(ALIGNMENTS.c.run_id == run_id))

    # ---- reads for later steps (training, scoring) ----

    def aligned_row_ids(self, run_id: str) -> np.ndarray:
        """Row ids of this party's subjects in the run's joint order (committed tables only)."""
        stmt = (
            sa.select(ALIGNMENTS.c.row_id)
            .where(ALIGNMENTS.c.run_id == run_id, ALIGNMENTS.c.committed.is_(True))
            .order_by(ALIGNMENTS.c.position)
        )
        with self.store.engine.connect() as conn:
            rows = np.fromiter(conn.execute(stmt).scalars(), dtype=np.int64)
        if len(rows) == 0 and run_id not in self.runs():
            raise NotFound(f"no committed alignment table for run {run_id!r} at this party")
        return rows

    def runs(self) -> dict[str, int]:
        stmt = (
            sa.select(ALIGNMENTS.c.run_id, sa.func.count())
            .where(ALIGNMENTS.c.committed.is_(True))
            .group_by(ALIGNMENTS.c.run_id)
        )
        with self.store.engine.connect() as conn:
            return {str(r): int(n) for r, n in conn.execute(stmt)}
