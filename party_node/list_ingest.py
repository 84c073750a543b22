"""Bulk load of a list (fraud/black list, active loans): ``fedcredit party ingest FILE --schema S --bulk``.

A list's schema declares an id column, consent (columns or ``consent_all``) and flags, and no features
or labels. At tens of millions of rows the row-by-row ingest (:mod:`party_node.ingest`) is too slow and
keeps the store's whole id index in memory; this path keeps nothing per row in memory across blocks:

1. The file is streamed in blocks (the same CSV/Parquet readers and error messages as ``ingest``); each
   block's ids are normalized, flags and consent values checked (a value that is not yes/no is fatal and
   names file, data row and column), pseudonyms computed under the installed key, and the block is
   appended to a temporary staging table (SQLite: one ``executemany`` that also looks up the subject's
   existing row id; PostgreSQL: ``COPY``, then one ``UPDATE ... FROM`` for the existing row ids).
2. The rest is set-based SQL inside the database: a duplicate id in the file is fatal (naming both data
   rows); new subjects get row ids ``max(row_id) + data row`` and are inserted in one statement (when the
   load more than doubles the subjects, the pseudonym index is dropped and rebuilt once: one sort instead
   of random B-tree inserts); the dataset's rows, consent and flags of the file's subjects are replaced,
   exactly as ``ingest`` does.

Everything is one transaction: on any error (or an interrupt) the store is as it was. Ids that are
missing or invalid for their kind are rejected and counted (``--max-rejects``), as in ``ingest``.
Temporary space: the staging table (about 60 B a row; SQLite puts it in its temp directory,
``SQLITE_TMPDIR`` or /tmp) until the load commits.
"""

# ruff: noqa: S608  (SQL built from this module's constant names and the quoted dataset table; values are bound)
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fedcore.errors import InvalidInput
from party_node.ingest import FALSE_VALUES, MAX_REJECT_DETAILS, TRUE_VALUES, IngestReport, ProgressFn, Reject
from party_node.ingest_sources import fail, open_source
from party_node.schema import DatasetSchema, id_problem, normalize_ids
from party_node.store import RowId, Store, feature_table
from party_node.store_pg import copy_rows, is_postgres

STAGE = "_bulk_list"
_TRUE = pa.array(sorted(TRUE_VALUES))
_FALSE = pa.array(sorted(FALSE_VALUES))


def check_list_schema(schema: DatasetSchema) -> None:
    """A bulk load takes a list: ids, consent and flags only."""
    if schema.numeric or schema.categorical or schema.label_column:
        raise InvalidInput(
            f"{schema.source}: --bulk loads a list (id, consent and flag columns); dataset {schema.name!r} "
            "declares features or a label: ingest it without --bulk"
        )
    if not schema.flags:
        raise InvalidInput(
            f"{schema.source}: --bulk loads a list: declare its column under [flags] (fraud, active_loan)"
        )


def yes_no(path: Path, arr: pa.Array, col: str, rows0: int) -> np.ndarray:
    """A consent/flag column as int8: 1 yes, 0 no, -1 empty; any other value is fatal (names the row)."""
    if pa.types.is_boolean(arr.type):
        v = arr
        yes, no = pc.fill_null(v, False), pc.fill_null(pc.invert(v), False)
    else:
        if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
            arr = pc.cast(arr, pa.string())
        v = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
        yes = pc.fill_null(pc.is_in(v, value_set=_TRUE), False)
        no = pc.fill_null(pc.is_in(v, value_set=_FALSE), False)
        empty = pc.fill_null(pc.equal(v, ""), True)
        bad = np.flatnonzero(~(yes.to_numpy(zero_copy_only=False) | no.to_numpy(zero_copy_only=False)
                               | empty.to_numpy(zero_copy_only=False)))
        if len(bad):
            i = int(bad[0])
            raise fail(path, f"data row {rows0 + i + 1}, column {col!r}: {v[i].as_py()!r} is not a yes/no value "
                       "(1/0, true/false)")
    out = np.full(len(arr), -1, dtype=np.int8)
    out[yes.to_numpy(zero_copy_only=False)] = 1
    out[no.to_numpy(zero_copy_only=False)] = 0
    return out


class _ListLoad:
    def __init__(self, store: Store, conn: Connection, path: Path, schema: DatasetSchema, max_rejects: int) -> None:
        self.store, self.conn, self.path, self.schema = store, conn, path, schema
        self.max_rejects = max_rejects
        self.report = IngestReport(file=str(path), dataset=schema.name)
        self.now = time.time()
        self.kind = str(schema.id_kind)
        self.pg = is_postgres(conn)
        # staging columns: consent purposes (c_<purpose>) and flags (f_<flag>), each 1/0/NULL
        self.marks = [(f"c_{p}", col) for p, col in schema.consent.items()]
        self.marks += [(f"f_{f}", col) for f, col in schema.flags.items()]
        self._prepare()

    def _prepare(self) -> None:
        s, conn, st = self.schema, self.conn, self.store
        d, sj = st.t["datasets"], st.t["subjects"]
        self.ds = feature_table(s.name, {})
        row = conn.execute(sa.select(d.c.structure).where(d.c.name == s.name)).first()
        if row is None:
            self.ds.create(conn)
            conn.execute(d.insert(), {
                "name": s.name, "id_kind": self.kind, "structure": json.dumps(s.structure()),
                "schema_json": json.dumps(s.to_json()), "vocabularies": "{}", "means": "{}",
                "federation_columns": json.dumps(list(s.federation_columns or ())),
                "created_at": self.now, "updated_at": self.now,
            })  # fmt: skip
        elif json.loads(row[0]) != s.structure():
            raise InvalidInput(f"{s.source}: dataset {s.name!r} already exists with a different id kind, consent "
                               "or flags; load under a new dataset.name")
        fp = st._meta_get(conn, "pseudonym_key_fingerprint")
        key = st.pseudonym_key
        if fp is not None and (key is None or key.fingerprint() != fp):
            raise InvalidInput("this store has a pseudonym key installed; ingest with that key loaded "
                               "(HOME/keys/pseudonym.key or --key-file) so new subjects get their pseudonyms")
        self.key = key if fp is not None else None
        self.subjects_before = int(conn.execute(sa.select(sa.func.count()).select_from(sj)).scalar() or 0)
        self.off = int(conn.execute(sa.select(sa.func.max(sj.c.row_id))).scalar() or 0)  # new row id = off + data row
        md = sa.MetaData()
        self.stage = sa.Table(
            STAGE, md,
            sa.Column("data_row", RowId, primary_key=True, autoincrement=False),
            sa.Column("id_norm", sa.String(128), nullable=False),
            sa.Column("pseudonym", sa.LargeBinary(16), nullable=True),
            sa.Column("row_id", sa.BigInteger, nullable=True),  # the subject's row id if it is already stored
            *[sa.Column(m, sa.SmallInteger, nullable=True) for m, _ in self.marks],
            prefixes=["TEMPORARY"], postgresql_on_commit="DROP",
        )  # fmt: skip
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {STAGE}")  # a rolled-back load's table on this connection
        self.stage.create(conn)
        cols = ["data_row", "id_norm", "pseudonym", *[m for m, _ in self.marks]]
        # look up stored subjects only if there are some of this kind (a first load of a list skips it)
        self.probe = conn.execute(sa.select(sj.c.row_id).where(sj.c.id_kind == self.kind).limit(1)).first() is not None
        if not self.pg:
            probe = ", (SELECT row_id FROM subjects WHERE id_kind = ? AND id_norm = ?)" if self.probe else ""
            self.insert_sql = (
                f"INSERT INTO {STAGE} ({', '.join(cols + ['row_id'] * self.probe)}) "
                f"VALUES (?, ?, ?{', ' if len(cols) > 3 else ''}{', '.join(['?'] * (len(cols) - 3))}{probe})"
            )
        self.stage_cols = cols

    def _reject(self, rows0: int, idx: np.ndarray, reason: str) -> None:
        if not len(idx):
            return
        self.report.rejected += len(idx)
        for i in idx[: max(0, MAX_REJECT_DETAILS - len(self.report.rejects))]:
            self.report.rejects.append(Reject(rows0 + int(i) + 1, self.schema.id_column, reason))
        if self.report.rejected > self.max_rejects:
            raise fail(self.path, f"more than {self.max_rejects} rejected rows (--max-rejects); "
                       f"the first: {self.report.rejects[0]}")

    def batch(self, cols: dict[str, pa.Array], rows0: int) -> None:
        s, path = self.schema, self.path
        raw = cols[s.id_column]
        n = len(raw)
        self.report.rows_read += n
        if not (pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type)):
            raw = pc.cast(raw, pa.string())
        norm = normalize_ids(raw, s.id_kind)
        bad = np.fromiter((v is None for v in norm), dtype=bool, count=n)
        if bad.any():
            missing = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(raw), ""), True).to_numpy(zero_copy_only=False)
            self._reject(rows0, np.flatnonzero(bad & missing), "missing id")
            self._reject(rows0, np.flatnonzero(bad & ~missing), id_problem(s.id_kind))
        marks = [yes_no(path, cols[col], col, rows0) for _, col in self.marks]
        kept = np.flatnonzero(~bad)
        ids: list[str] = [norm[i] for i in kept.tolist()] if bad.any() else norm  # type: ignore[misc,assignment]
        pseudo = self.key.pseudonymize(ids, self.kind) if self.key is not None else itertools.repeat(None)
        data_rows = (kept + (rows0 + 1)).tolist()
        vals = [[None if x < 0 else int(x) for x in m[kept].tolist()] for m in marks]
        if self.pg:
            copy_rows(self.conn, self.stage, self.stage_cols, zip(data_rows, ids, pseudo, *vals, strict=False))  # type: ignore[arg-type]
        else:
            lookup = (itertools.repeat(self.kind), ids) if self.probe else ()
            self.conn.exec_driver_sql(self.insert_sql, list(zip(data_rows, ids, pseudo, *vals, *lookup, strict=False)))

    def finish(self) -> None:
        s, conn = self.schema, self.conn
        if self.report.rows_read == 0:
            raise fail(self.path, "file has a header but no data rows")
        sql = lambda q, **p: conn.execute(sa.text(q), {"off": self.off, **p})  # noqa: E731
        if self.pg and self.probe:
            sql(f"UPDATE {STAGE} b SET row_id = s.row_id FROM subjects s "
                "WHERE s.id_kind = :k AND s.id_norm = b.id_norm", k=self.kind)
        sql(f"CREATE INDEX {STAGE}_id ON {STAGE} (id_norm)")
        dup = sql(f"SELECT id_norm FROM {STAGE} GROUP BY id_norm HAVING count(*) > 1 LIMIT 1").scalar()
        if dup is not None:
            a, b = (r[0] for r in sql(f"SELECT data_row FROM {STAGE} WHERE id_norm = :i ORDER BY data_row LIMIT 2",
                                      i=dup))  # fmt: skip
            raise fail(self.path, f"data row {b}, column {s.id_column!r}: duplicate id (same normalized id as "
                       f"data row {a})")
        new = int(sql(f"SELECT count(*) FROM {STAGE} WHERE row_id IS NULL").scalar() or 0)
        ix = next(i for i in self.store.t["subjects"].indexes if i.name == "ix_subjects_pseudonym")
        reindex = new > self.subjects_before
        if reindex:
            ix.drop(conn)
        sql(f"INSERT INTO subjects (row_id, id_kind, id_norm, pseudonym, ingested_at) "
            f"SELECT :off + data_row, :k, id_norm, pseudonym, :now FROM {STAGE} WHERE row_id IS NULL ORDER BY data_row",
            k=self.kind, now=self.now)  # fmt: skip
        if reindex:
            ix.create(conn)
        rid = "coalesce(row_id, :off + data_row)"
        old = f"(SELECT row_id FROM {STAGE} WHERE row_id IS NOT NULL)"
        ds = conn.dialect.identifier_preparer.format_table(self.ds)
        updated = int(sql(f"SELECT count(*) FROM {ds} WHERE row_id IN {old}").scalar() or 0)
        kept = self.report.rows_read - self.report.rejected
        self.report.updated, self.report.inserted = updated, kept - updated
        if updated:
            sql(f"DELETE FROM {ds} WHERE row_id IN {old}")
        sql(f"INSERT INTO {ds} (row_id) SELECT {rid} FROM {STAGE} ORDER BY data_row")
        old_any = new < kept
        for purpose in (*s.consent, *s.consent_all):
            m = f"c_{purpose}" if purpose in s.consent else None
            if old_any:
                sql(f"DELETE FROM consent WHERE purpose = :p AND row_id IN {old}", p=purpose)
            granted, where = (f"{m} = 1", f"WHERE {m} IS NOT NULL") if m else ("1 = 1", "")
            sql(f"INSERT INTO consent (purpose, row_id, granted, dataset) "
                f"SELECT :p, {rid}, {granted}, :ds FROM {STAGE} {where} ORDER BY data_row", p=purpose, ds=s.name)
        if "active_loan" in s.flags:
            if old_any:
                sql(f"DELETE FROM active_loans WHERE row_id IN {old}")
            sql(f"INSERT INTO active_loans (row_id, active, dataset) SELECT {rid}, f_active_loan = 1, :ds "
                f"FROM {STAGE} WHERE f_active_loan IS NOT NULL ORDER BY data_row", ds=s.name)
        if "fraud" in s.flags:
            if old_any:
                sql(f"DELETE FROM fraud_list WHERE row_id IN {old}")
            sql(f"INSERT INTO fraud_list (row_id, dataset, listed_at) SELECT {rid}, :ds, :now FROM {STAGE} "
                "WHERE f_fraud = 1 ORDER BY data_row", ds=s.name, now=self.now)
        sql(f"DROP TABLE {STAGE}")
        values: dict[str, Any] = {"schema_json": json.dumps(s.to_json()), "updated_at": self.now}
        if s.federation_columns is not None:
            values["federation_columns"] = json.dumps(list(s.federation_columns))
        d = self.store.t["datasets"]
        conn.execute(d.update().where(d.c.name == s.name).values(**values))


def load_list(
    store: Store,
    path: Path,
    schema: DatasetSchema,
    *,
    max_rejects: int = 1000,
    block_size: int = 4 << 20,
    batch_rows: int = 500_000,
    progress: ProgressFn | None = None,
) -> IngestReport:
    """Bulk-load the list at ``path`` (CSV or Parquet) into ``store`` under ``schema``, atomically."""
    t0 = time.perf_counter()
    path = Path(path)
    check_list_schema(schema)
    source, total = open_source(path, schema, block_size, batch_rows)
    if max_rejects < 0:
        max_rejects = 1 << 62
    with store.write_transaction() as conn:
        job = _ListLoad(store, conn, path, schema, max_rejects)  # on any error the transaction rolls back
        rows0 = 0
        for cols in source.batches():
            job.batch(cols, rows0)
            rows0 += len(cols[schema.id_column])
            if progress is not None:
                progress(min(source.done(), total), total)
        job.finish()
    job.report.seconds = time.perf_counter() - t0
    return job.report
