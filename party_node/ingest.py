"""Ingest a CSV or Parquet file into the party store under a dataset schema.

Semantics:

* **Streaming.** The file is read in blocks (pyarrow's streaming CSV reader, 4 MiB blocks with a
  bounded read-ahead of about 32 blocks; Parquet row batches), so files larger than memory work.
  What is held in memory for the whole ingest is the set of ids seen in the file (duplicate check)
  and the store's id index of the dataset's id kind.
* **Atomic.** The whole ingest is one database transaction: any error rolls it back and the store is
  logically unchanged (``Store.checksum()`` is equal before and after).
* **Upsert.** A row whose subject already has a row in the dataset replaces it (``updated``); other
  valid rows are ``inserted``. Consent, active-loan and fraud flags the schema declares are replaced
  for the subjects in the file. The report counts inserted, updated and rejected rows.
* **Row numbers** in messages are 1-based *data rows*: the header is not counted, so data row N of a
  CSV file is line N+1 when no quoted field spans lines; for Parquet, the N-th row.

Rejected and counted (the row is skipped; the ingest fails only if more than ``max_rejects`` rows
are rejected): an id that is missing or invalid for its kind (bad phone number, bad resident-id
checksum), a missing value in a column whose policy is ``missing = "reject"``, a label other than 0/1.

Fatal (the ingest stops, nothing is written): a missing or empty file, a header without data rows,
a wrong delimiter, a missing id column or any column the schema names but the file lacks, a row
with the wrong number of fields or a file cut off in the middle of a row, text in a numeric or label
column, a consent/flag value that is not yes/no, the same id twice in one file, a re-ingest whose
schema declares different features than the stored dataset, too many rejected rows.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fedcore.errors import InvalidInput
from party_node.id_index import MISSING as MISSING_ID
from party_node.id_index import IdIndex, encode_ids
from party_node.ingest_sources import fail, open_source
from party_node.schema import MISSING, UNSEEN, DatasetSchema, id_problem, normalize_ids
from party_node.store import Store, feature_table
from party_node.store_pg import copy_rows, is_postgres

TRUE_VALUES = frozenset({"1", "1.0", "true", "t", "yes", "y"})
FALSE_VALUES = frozenset({"0", "0.0", "false", "f", "no", "n"})
MAX_REJECT_DETAILS = 20

ProgressFn = Callable[[int, int], None]  # (bytes or rows done, total)


@dataclass(frozen=True)
class Reject:
    row: int  # 1-based data row
    column: str
    reason: str

    def __str__(self) -> str:
        return f"data row {self.row}, column {self.column!r}: {self.reason}"


@dataclass
class IngestReport:
    file: str
    dataset: str
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    rejected: int = 0
    rejects: list[Reject] = field(default_factory=list)  # the first MAX_REJECT_DETAILS
    seconds: float = 0.0


# ------------------------------------------------------------------------------------- conversion


def _strings(arr: pa.Array) -> pa.Array:
    if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
        arr = pc.cast(arr, pa.string())
    return pc.utf8_trim_whitespace(arr)


def _first_bad(path: Path, arr: pa.Array, col: str, rows0: int, what: str, ok: np.ndarray) -> InvalidInput:
    i = int(np.flatnonzero(~ok)[0])
    value = arr[i].as_py()
    shown = value if len(str(value)) <= 40 else str(value)[:40] + "..."
    return fail(path, f"data row {rows0 + i + 1}, column {col!r}: {shown!r} is not {what}")


def _to_float(path: Path, arr: pa.Array, col: str, rows0: int) -> np.ndarray:
    """Float64 with NaN for missing; text is fatal (names the row)."""
    if pa.types.is_boolean(arr.type):
        arr = pc.cast(arr, pa.int8())
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_decimal(arr.type):
        out = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
    else:
        s = _strings(arr)
        s = pc.if_else(pc.equal(s, ""), pa.scalar(None, pa.string()), s)
        try:
            out = pc.cast(s, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            vals = pd.to_numeric(pd.Series(s.to_pylist(), dtype=object), errors="coerce").to_numpy(dtype=np.float64)
            ok = ~(np.isnan(vals) & ~pc.is_null(s).to_numpy(zero_copy_only=False))
            raise _first_bad(path, s, col, rows0, "a number", ok) from None
    out = np.asarray(out, dtype=np.float64)
    finite = np.isfinite(out) | np.isnan(out)
    if not finite.all():
        raise _first_bad(path, arr, col, rows0, "a finite number", finite)
    return out


def _text_label(txt: pd.Series, bad: tuple[str, ...], good: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A text label as 1 (a value in ``bad``), 0 (in ``good``, or any other value when ``good`` is empty)
    or NaN (empty: not yet known); also the rows whose value is neither (only when ``good`` is declared)."""
    t = txt.fillna("").astype(str).str.strip()
    empty = (t == "").to_numpy(dtype=bool)
    is_bad = t.isin(bad).to_numpy(dtype=bool)
    wrong = ~empty & ~is_bad & ~t.isin(good).to_numpy(dtype=bool) if good else np.zeros(len(t), dtype=bool)
    out = np.where(empty, np.nan, np.where(is_bad, 1.0, 0.0))
    return out, wrong


def _to_bool(path: Path, arr: pa.Array, col: str, rows0: int) -> list[bool | None]:
    if pa.types.is_boolean(arr.type):
        return arr.to_pylist()
    s = pc.utf8_lower(_strings(arr)).to_pylist()
    out: list[bool | None] = []
    for i, v in enumerate(s):
        if v is None or v == "":
            out.append(None)
        elif v in TRUE_VALUES:
            out.append(True)
        elif v in FALSE_VALUES:
            out.append(False)
        else:
            raise fail(
                path,
                f"data row {rows0 + i + 1}, column {col!r}: {v!r} is not a yes/no value (1/0, true/false)",
            )
    return out


# ------------------------------------------------------------------------------------- writing


def _insert_many(conn: Connection, table: sa.Table, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    if is_postgres(conn):
        copy_rows(conn, table, columns, rows)
    elif conn.dialect.paramstyle == "qmark":
        cols = ", ".join(conn.dialect.identifier_preparer.quote(c) for c in columns)
        marks = ", ".join("?" for _ in columns)
        name = conn.dialect.identifier_preparer.format_table(table)
        conn.exec_driver_sql(f"INSERT INTO {name} ({cols}) VALUES ({marks})", rows)  # noqa: S608 (identifiers quoted)
    else:
        conn.execute(table.insert(), [dict(zip(columns, r, strict=True)) for r in rows])


def _delete_rows(conn: Connection, table: sa.Table, row_ids: list[int], **where: Any) -> None:
    if not row_ids:
        return
    stmt = table.delete().where(table.c.row_id == sa.bindparam("rid"))
    for k, v in where.items():
        stmt = stmt.where(table.c[k] == v)
    conn.execute(stmt, [{"rid": r} for r in row_ids])


_INDEX_BLOCK = 100_000


class _Ingest:
    def __init__(self, store: Store, conn: Connection, path: Path, schema: DatasetSchema, max_rejects: int) -> None:
        self.store = store
        self.conn = conn
        self.path = path
        self.schema = schema
        self.max_rejects = max_rejects
        self.report = IngestReport(file=str(path), dataset=schema.name)
        self.seen = IdIndex()  # the file's ids so far -> data row
        self.null_cols: set[str] = set()
        self.now = time.time()
        t = store.t
        self.subjects, self.labels_t, self.consent_t = t["subjects"], t["labels"], t["consent"]
        self.active_t, self.fraud_t, self.datasets_t = t["active_loans"], t["fraud_list"], t["datasets"]
        self.kind = str(schema.id_kind)
        self._prepare()

    def _prepare(self) -> None:
        s, conn = self.schema, self.conn
        types = s.feature_types()
        d = self.datasets_t
        row = conn.execute(sa.select(d).where(d.c.name == s.name)).mappings().first()
        self.ds = feature_table(s.name, types)
        if row is None:
            self.ds.create(conn)
            self.vocab = {c.name: [UNSEEN, *(c.vocabulary or ())] for c in s.categorical}
            whitelist = list(s.federation_columns or ())
            conn.execute(
                d.insert(),
                {
                    "name": s.name,
                    "id_kind": self.kind,
                    "structure": json.dumps(s.structure()),
                    "schema_json": json.dumps(s.to_json()),
                    "vocabularies": "{}",
                    "means": "{}",
                    "federation_columns": json.dumps(whitelist),
                    "created_at": self.now,
                    "updated_at": self.now,
                },
            )
            self.ds_existing = np.zeros(0, dtype=np.int64)
        else:
            stored = json.loads(row["structure"])
            if stored != s.structure():
                raise InvalidInput(
                    f"{s.source}: dataset {s.name!r} already exists with a different id kind, "
                    f"features or labels ({_structure_diff(stored, s.structure())}); "
                    "ingest under a new dataset.name"
                )
            stored_vocab: dict[str, list[str]] = json.loads(row["vocabularies"])
            self.vocab = {}
            for c in s.categorical:
                v = list(stored_vocab.get(c.name, [UNSEEN]))
                for cat in c.vocabulary or ():
                    if cat not in v:
                        v.append(cat)
                self.vocab[c.name] = v
            # the dataset's rows before this ingest, sorted (8 B each, not a set of Python ints): a row of
            # this file can only update one of them (the same id twice in a file is an error)
            with conn.execute(sa.select(self.ds.c.row_id).order_by(self.ds.c.row_id)) as res:
                blocks = [np.fromiter((r[0] for r in b), np.int64, len(b)) for b in res.partitions(_INDEX_BLOCK)]
            self.ds_existing = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int64)
        self.fixed = {c.name: c.vocabulary is not None for c in s.categorical}
        self.vocab_index = {k: {cat: i for i, cat in enumerate(v)} for k, v in self.vocab.items()}
        sj = self.subjects
        known_q = sa.select(sj.c.id_norm, sj.c.row_id).where(sj.c.id_kind == self.kind)
        with conn.execute(known_q) as res:  # no server-side cursor: this runs inside the ingest transaction
            self.known = IdIndex.from_blocks(
                (encode_ids([r[0] for r in rows]), np.fromiter((r[1] for r in rows), np.int64, len(rows)))
                for rows in res.partitions(_INDEX_BLOCK)
            )
        self.next_row_id = int(conn.execute(sa.select(sa.func.max(sj.c.row_id))).scalar() or 0) + 1
        fp = conn.execute(
            sa.select(self.store.t["store_meta"].c.value).where(
                self.store.t["store_meta"].c.key == "pseudonym_key_fingerprint"
            )
        ).scalar()
        key = self.store.pseudonym_key
        if fp is not None and (key is None or key.fingerprint() != fp):
            raise InvalidInput(
                "this store has a pseudonym key installed; ingest with that key loaded "
                "(HOME/keys/pseudonym.key or --key-file) so new subjects get their pseudonyms"
            )
        self.key = key if fp is not None else None

    # -- rejects
    def _reject(self, rows0: int, idx: np.ndarray, column: str, reason: str, keep: np.ndarray) -> None:
        idx = idx[keep[idx]]
        if not len(idx):
            return
        keep[idx] = False
        self.report.rejected += len(idx)
        for i in idx[: max(0, MAX_REJECT_DETAILS - len(self.report.rejects))]:
            self.report.rejects.append(Reject(rows0 + int(i) + 1, column, reason))
        if self.report.rejected > self.max_rejects:
            first = self.report.rejects[0]
            raise fail(
                self.path,
                f"more than {self.max_rejects} rejected rows (--max-rejects); the first: {first}",
            )

    def batch(self, cols: dict[str, pa.Array], rows0: int) -> None:
        s, path = self.schema, self.path
        n = len(cols[s.id_column])
        self.report.rows_read += n
        keep = np.ones(n, dtype=bool)
        raw_ids = cols[s.id_column]
        if not (pa.types.is_string(raw_ids.type) or pa.types.is_large_string(raw_ids.type)):
            raw_ids = pc.cast(raw_ids, pa.string())
        norm = normalize_ids(raw_ids, s.id_kind)
        bad = np.array([v is None for v in norm], dtype=bool)
        if bad.any():
            missing = pc.is_null(raw_ids).to_numpy(zero_copy_only=False) | (
                pc.utf8_trim_whitespace(raw_ids).to_numpy(zero_copy_only=False) == ""
            )
            self._reject(rows0, np.flatnonzero(bad & missing), s.id_column, "missing id", keep)
            self._reject(rows0, np.flatnonzero(bad & ~missing), s.id_column, id_problem(s.id_kind), keep)

        numeric: dict[str, np.ndarray] = {}
        for spec in s.numeric:
            v = _to_float(path, cols[spec.name], spec.name, rows0)
            miss = np.isnan(v)
            if miss.any():
                if spec.missing == "reject":
                    self._reject(rows0, np.flatnonzero(miss), spec.name, 'missing value (missing = "reject")', keep)
                elif spec.missing == "fill":
                    v = np.where(miss, float(spec.fill or 0.0), v)
            numeric[spec.name] = v

        label: np.ndarray | None = None
        if s.label_column:
            if s.label_bad:
                label, wrong = _text_label(_strings(cols[s.label_column]).to_pandas(), s.label_bad, s.label_good)
                allowed = ", ".join(repr(v) for v in (*s.label_bad, *s.label_good))
                self._reject(rows0, np.flatnonzero(wrong), s.label_column, f"label must be one of {allowed}", keep)
            else:
                label = _to_float(path, cols[s.label_column], s.label_column, rows0)
                wrong = ~np.isnan(label) & (label != 0) & (label != 1)
                self._reject(rows0, np.flatnonzero(wrong), s.label_column, "label must be 0 or 1", keep)

        texts: dict[str, pd.Series] = {}
        for cspec in s.categorical:
            txt = _strings(cols[cspec.name]).to_pandas()
            miss = (txt.isna() | (txt == "")).to_numpy(dtype=bool)
            if miss.any():
                if cspec.missing == "reject":
                    self._reject(rows0, np.flatnonzero(miss), cspec.name, 'missing value (missing = "reject")', keep)
                txt = txt.where(~miss, cspec.fill if cspec.missing == "fill" else MISSING)
            texts[cspec.name] = txt

        # categories: only rows that are kept may add to a vocabulary
        categorical: dict[str, np.ndarray] = {}
        for cspec in s.categorical:
            codes, uniques = pd.factorize(texts[cspec.name], use_na_sentinel=False)
            in_kept = np.zeros(len(uniques), dtype=bool)
            in_kept[codes[keep]] = True
            index = self.vocab_index[cspec.name]
            lookup = np.empty(len(uniques), dtype=np.int64)
            for j, u in enumerate(uniques):
                u = str(u)
                if u not in index:
                    if (self.fixed[cspec.name] and u != MISSING) or not in_kept[j]:
                        lookup[j] = index.get(cspec.unseen, 0) if cspec.unseen else 0
                        continue
                    index[u] = len(self.vocab[cspec.name])
                    self.vocab[cspec.name].append(u)
                lookup[j] = index[u]
            categorical[cspec.name] = lookup[codes] if len(codes) else np.zeros(0, dtype=np.int64)

        consent = {p: _to_bool(path, cols[c], c, rows0) for p, c in s.consent.items()}
        n_rows = len(keep)
        consent.update({p: [True] * n_rows for p in s.consent_all})
        flags = {p: _to_bool(path, cols[c], c, rows0) for p, c in s.flags.items()}

        # duplicates (fatal) and row id allocation for kept rows
        kept = np.flatnonzero(keep)
        ids = [norm[i] for i in kept.tolist()]
        keys = encode_ids(ids)  # type: ignore[arg-type]  # None ids were rejected above
        rows = rows0 + kept + 1
        earlier = self.seen.get(keys)  # data row of the same id in an earlier batch
        if len(keys):
            order = np.argsort(keys, kind="stable")
            srt = keys[order]
            repeat = np.zeros(len(keys), dtype=bool)  # in sorted order: same id as the one before
            repeat[1:] = srt[1:] == srt[:-1]
            start = np.maximum.accumulate(np.where(repeat, 0, np.arange(len(keys))))
            same = np.empty(len(keys), dtype=bool)
            same[order] = repeat
            in_batch = np.empty(len(keys), dtype=np.int64)
            in_batch[order] = order[start]  # position of each id's first occurrence in this batch
            earlier = np.where(same, rows[in_batch], earlier)
        dup = np.flatnonzero(earlier != MISSING_ID)
        if len(dup):
            i = int(dup[0])
            raise fail(
                path,
                f"data row {int(rows[i])}, column {s.id_column!r}: duplicate id (same normalized id as "
                f"data row {int(earlier[i])})",
            )
        self.seen.add(keys, rows)
        rid = self.known.get(keys)
        new = rid == MISSING_ID
        rid[new] = self.next_row_id + np.arange(int(new.sum()))
        self.next_row_id += int(new.sum())
        self.known.add(keys[new], rid[new])
        row_ids: list[int] = rid.tolist()
        new_subjects: list[tuple[int, str]] = [(int(rid[j]), str(ids[j])) for j in np.flatnonzero(new).tolist()]
        old_subjects: list[int] = rid[~new].tolist()
        self._write(kept, row_ids, new_subjects, old_subjects, numeric, categorical, label, consent, flags)

    def _write(
        self,
        kept: np.ndarray,
        row_ids: list[int],
        new_subjects: list[tuple[int, str]],
        old_subjects: list[int],
        numeric: dict[str, np.ndarray],
        categorical: dict[str, np.ndarray],
        label: np.ndarray | None,
        consent: dict[str, list[bool | None]],
        flags: dict[str, list[bool | None]],
    ) -> None:
        conn, s = self.conn, self.schema
        if new_subjects:
            pseudo: list[bytes | None]
            if self.key is not None:
                pseudo = list(self.key.pseudonymize([k for _, k in new_subjects], self.kind))
            else:
                pseudo = [None] * len(new_subjects)
            _insert_many(
                conn,
                self.subjects,
                ["row_id", "id_kind", "id_norm", "pseudonym", "ingested_at"],
                [(rid, self.kind, k, p, self.now) for (rid, k), p in zip(new_subjects, pseudo, strict=True)],
            )
        old = np.asarray(old_subjects, dtype=np.int64)
        at = np.minimum(np.searchsorted(self.ds_existing, old), max(len(self.ds_existing) - 1, 0))
        updated: list[int] = old[self.ds_existing[at] == old].tolist() if len(self.ds_existing) else []
        self.report.updated += len(updated)
        self.report.inserted += len(row_ids) - len(updated)
        _delete_rows(conn, self.ds, updated)

        columns: list[list[Any]] = [row_ids]
        for spec in s.numeric:
            v = numeric[spec.name][kept]
            if spec.missing == "mean" and np.isnan(v).any():
                self.null_cols.add(spec.name)
                columns.append([None if math.isnan(x) else x for x in v.tolist()])
            else:
                columns.append(v.tolist())
        for cspec in s.categorical:
            columns.append(categorical[cspec.name][kept].tolist())
        _insert_many(conn, self.ds, ["row_id", *s.feature_names], list(zip(*columns, strict=True)))

        if label is not None:
            _delete_rows(conn, self.labels_t, updated, dataset=s.name)
            lab = label[kept]
            has = ~np.isnan(lab)
            _insert_many(
                conn,
                self.labels_t,
                ["dataset", "row_id", "label"],
                [(s.name, r, int(y)) for r, y, h in zip(row_ids, lab.tolist(), has.tolist(), strict=True) if h],
            )
        kept_l = kept.tolist()
        for purpose, values in consent.items():
            _delete_rows(conn, self.consent_t, old_subjects, purpose=purpose)
            _insert_many(
                conn,
                self.consent_t,
                ["purpose", "row_id", "granted", "dataset"],
                [
                    (purpose, r, values[i], s.name)
                    for r, i in zip(row_ids, kept_l, strict=True)
                    if values[i] is not None
                ],
            )
        if "active_loan" in flags:
            values = flags["active_loan"]
            _delete_rows(conn, self.active_t, old_subjects)
            _insert_many(
                conn,
                self.active_t,
                ["row_id", "active", "dataset"],
                [(r, values[i], s.name) for r, i in zip(row_ids, kept_l, strict=True) if values[i] is not None],
            )
        if "fraud" in flags:
            values = flags["fraud"]
            _delete_rows(conn, self.fraud_t, old_subjects)
            _insert_many(
                conn,
                self.fraud_t,
                ["row_id", "dataset", "listed_at"],
                [(r, s.name, self.now) for r, i in zip(row_ids, kept_l, strict=True) if values[i]],
            )

    def finish(self) -> None:
        s, conn = self.schema, self.conn
        if self.report.rows_read == 0:
            raise fail(self.path, "file has a header but no data rows")
        means: dict[str, float] = {}
        mean_cols = [spec.name for spec in s.numeric if spec.missing == "mean"]
        if mean_cols:  # one scan for every mean, then fill only the columns that got missing values
            avgs = conn.execute(sa.select(*[sa.func.avg(self.ds.c[c]) for c in mean_cols])).one()
            for c, avg in zip(mean_cols, avgs, strict=True):
                if avg is None:
                    raise fail(self.path, f'column {c!r} has no values to take a mean from (missing = "mean")')
                means[c] = float(avg)
        for c in sorted(self.null_cols):
            col = self.ds.c[c]
            conn.execute(self.ds.update().where(col.is_(None)).values({c: means[c]}))
        values: dict[str, Any] = {
            "vocabularies": json.dumps(self.vocab),
            "means": json.dumps(means),
            "schema_json": json.dumps(s.to_json()),
            "updated_at": self.now,
        }
        if s.federation_columns is not None:
            values["federation_columns"] = json.dumps(list(s.federation_columns))
        d = self.datasets_t
        conn.execute(d.update().where(d.c.name == s.name).values(**values))


def _structure_diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    for k in ("id_kind", "has_labels", "features"):
        if a.get(k) != b.get(k):
            return f"stored {k}={a.get(k)!r}, schema {k}={b.get(k)!r}"
    return "differs"


def ingest_file(
    store: Store,
    path: Path,
    schema: DatasetSchema,
    *,
    max_rejects: int = 1000,
    block_size: int = 4 << 20,
    batch_rows: int = 100_000,
    progress: ProgressFn | None = None,
) -> IngestReport:
    """Ingest ``path`` (CSV or Parquet) into ``store`` under ``schema``, atomically.

    ``max_rejects`` (-1: unlimited) bounds the rows that may be rejected and counted before the ingest
    fails. ``progress(done, total)`` is called after each block (bytes for CSV, rows for Parquet).
    """
    t0 = time.perf_counter()
    path = Path(path)
    source, total = open_source(path, schema, block_size, batch_rows)
    if max_rejects < 0:
        max_rejects = 1 << 62
    with store.write_transaction() as conn:
        job = _Ingest(store, conn, path, schema, max_rejects)
        rows0 = 0
        for cols in source.batches():
            n = len(cols[schema.id_column])
            job.batch(cols, rows0)
            rows0 += n
            if progress is not None:
                progress(min(source.done(), total), total)
        job.finish()
    job.report.seconds = time.perf_counter() - t0
    return job.report
