"""The party's local data store (SQLAlchemy Core; SQLite in WAL mode by default, any SQLAlchemy URL).

Layout (one database per party)::

    store_meta    key, value                              store version, pseudonym key fingerprint
    subjects      row_id PK, id_kind, id_norm, pseudonym, ingested_at
                  unique (id_kind, id_norm); index on pseudonym
    datasets      name PK, id_kind, schema/vocabularies/means/whitelist as JSON, rows, timestamps
    ds_<name>     row_id PK, one column per feature (REAL numeric, INTEGER categorical index)
    labels        dataset, row_id, label (0/1)             PK (dataset, row_id)
    consent       purpose, row_id, granted, dataset        PK (purpose, row_id)
    active_loans  row_id PK, active, dataset
    fraud_list    row_id PK, dataset, listed_at

Features are stored **wide**, one table per dataset with one column per feature: an ingest of 1M rows
x 30 columns is 1M inserted rows (a long table would be 30M rows, an index entry each), and a feature
matrix is one sequential scan of the primary key order with no pivot. Schemas are fixed per dataset
(a re-ingest must declare the same features), which is what makes a wide table safe.

Raw ids live in ``subjects`` only; every other table refers to the internal ``row_id``. Nothing in
this module sends data anywhere: :meth:`Store.summary` is what a party registers (whitelisted feature
names and types and row counts, never values or ids).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from fedcore.errors import InvalidInput, NotFound, PermissionDenied
from fedcore.files import check_writable
from fedcore.protocol.messages import DataSummary, FeatureInfo, TableSummary
from party_node.pseudonym import PseudonymKey
from party_node.schema import PURPOSES, UNSEEN, IdKind, normalize_ids

STORE_VERSION = "1"
DS_PREFIX = "ds_"
_BATCH = 20_000
# BIGINT elsewhere; INTEGER on SQLite so that the primary key is the rowid (no second index).
RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _base_metadata() -> sa.MetaData:
    md = sa.MetaData()
    sa.Table(
        "store_meta",
        md,
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    sa.Table(
        "subjects",
        md,
        sa.Column("row_id", RowId, primary_key=True, autoincrement=False),
        sa.Column("id_kind", sa.String(16), nullable=False),
        sa.Column("id_norm", sa.String(128), nullable=False),
        sa.Column("pseudonym", sa.LargeBinary(16), nullable=True),
        sa.Column("ingested_at", sa.Float, nullable=False),
        sa.UniqueConstraint("id_kind", "id_norm", name="uq_subjects_id"),
        sa.Index("ix_subjects_pseudonym", "pseudonym"),
    )
    sa.Table(
        "datasets",
        md,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("id_kind", sa.String(16), nullable=False),
        sa.Column("structure", sa.Text, nullable=False),
        sa.Column("schema_json", sa.Text, nullable=False),
        sa.Column("vocabularies", sa.Text, nullable=False),
        sa.Column("means", sa.Text, nullable=False),
        sa.Column("federation_columns", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    sa.Table(
        "labels",
        md,
        sa.Column("dataset", sa.String(64), primary_key=True),
        sa.Column("row_id", RowId, primary_key=True, autoincrement=False),
        sa.Column("label", sa.SmallInteger, nullable=False),
    )
    sa.Table(
        "consent",
        md,
        sa.Column("purpose", sa.String(16), primary_key=True),
        sa.Column("row_id", RowId, primary_key=True, autoincrement=False),
        sa.Column("granted", sa.Boolean, nullable=False),
        sa.Column("dataset", sa.String(64), nullable=False),
    )
    sa.Table(
        "active_loans",
        md,
        sa.Column("row_id", RowId, primary_key=True, autoincrement=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("dataset", sa.String(64), nullable=False),
    )
    sa.Table(
        "fraud_list",
        md,
        sa.Column("row_id", RowId, primary_key=True, autoincrement=False),
        sa.Column("dataset", sa.String(64), nullable=False),
        sa.Column("listed_at", sa.Float, nullable=False),
    )
    return md


def feature_table(name: str, features: dict[str, str], md: sa.MetaData | None = None) -> sa.Table:
    """The wide feature table of a dataset (``features``: name -> numeric|categorical, in order)."""
    cols = [sa.Column("row_id", RowId, primary_key=True, autoincrement=False)]
    for f, t in features.items():
        cols.append(sa.Column(f, sa.Float if t == "numeric" else sa.Integer, nullable=True))
    return sa.Table(DS_PREFIX + name, md or sa.MetaData(), *cols)


def _install_sqlite_hooks(engine: Engine) -> None:
    """WAL mode, and real transactions (pysqlite would not BEGIN before DDL on its own)."""

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA cache_size=-131072")  # 128 MiB: random-order id index inserts stay in memory
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset's stored metadata."""

    name: str
    id_kind: str
    features: dict[str, str]  # name -> numeric|categorical, in table order
    has_labels: bool
    schema: dict[str, Any]
    vocabularies: dict[str, list[str]]  # categorical column -> categories; index 0 is __unseen__
    means: dict[str, float]
    federation_columns: list[str]


class Store:
    """A party's local store. Open with :meth:`open`."""

    def __init__(self, engine: Engine, pseudonym_key: PseudonymKey | None = None) -> None:
        self.engine = engine
        self.md = _base_metadata()
        self.t = self.md.tables
        self._key = pseudonym_key
        self._key_seen = False
        subjects = self.t["subjects"]
        self._one_pseudonym = sa.select(subjects.c.row_id).where(subjects.c.pseudonym == sa.bindparam("p"))

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, url: str, *, pseudonym_key: PseudonymKey | None = None) -> Store:
        """Open (creating tables if needed) the store at a SQLAlchemy URL.

        With a ``pseudonym_key`` whose fingerprint differs from the installed one, every subject's
        pseudonym is recomputed (see :meth:`install_pseudonym_key`).
        """
        try:
            engine = sa.create_engine(url)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
            raise InvalidInput(f"store URL {url!r} is not a valid SQLAlchemy URL: {exc}") from None
        if engine.dialect.name == "sqlite":
            db = engine.url.database
            if db and db != ":memory:" and not db.startswith("file:"):
                check_writable(Path(db), "store")
            _install_sqlite_hooks(engine)
        store = cls(engine)
        try:
            with engine.begin() as conn:
                store.md.create_all(conn)
                if (
                    conn.execute(
                        sa.select(store.t["store_meta"].c.value).where(store.t["store_meta"].c.key == "version")
                    ).scalar()
                    is None
                ):
                    conn.execute(store.t["store_meta"].insert(), {"key": "version", "value": STORE_VERSION})
        except sa.exc.DatabaseError as exc:  # also a corrupt file ("file is not a database")
            raise InvalidInput(f"cannot open store {url!r}: {exc.orig}") from None
        if pseudonym_key is not None:
            store.install_pseudonym_key(pseudonym_key)
        return store

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def write_transaction(self) -> Iterator[Connection]:
        """One write transaction (SQLite: BEGIN IMMEDIATE, so row id allocation cannot race)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                yield conn

    @property
    def pseudonym_key(self) -> PseudonymKey | None:
        return self._key

    # ------------------------------------------------------------ metadata

    def _meta_get(self, conn: Connection, key: str) -> str | None:
        sm = self.t["store_meta"]
        return conn.execute(sa.select(sm.c.value).where(sm.c.key == key)).scalar()

    def _meta_set(self, conn: Connection, key: str, value: str) -> None:
        sm = self.t["store_meta"]
        conn.execute(sm.delete().where(sm.c.key == key))
        conn.execute(sm.insert(), {"key": key, "value": value})

    def datasets(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(self.t["datasets"].c.name).order_by("name")).scalars())

    def dataset_info(self, name: str, conn: Connection | None = None) -> DatasetInfo:
        if conn is None:
            with self.engine.connect() as c:
                return self.dataset_info(name, c)
        d = self.t["datasets"]
        row = conn.execute(sa.select(d).where(d.c.name == name)).mappings().first()
        if row is None:
            raise NotFound(f"dataset {name!r} is not in the store (known: {', '.join(self.datasets()) or 'none'})")
        structure = json.loads(row["structure"])
        return DatasetInfo(
            name=name,
            id_kind=row["id_kind"],
            features={n: t for n, t in structure["features"]},
            has_labels=bool(structure["has_labels"]),
            schema=json.loads(row["schema_json"]),
            vocabularies=json.loads(row["vocabularies"]),
            means=json.loads(row["means"]),
            federation_columns=json.loads(row["federation_columns"]),
        )

    def _ds_table(self, info: DatasetInfo) -> sa.Table:
        return feature_table(info.name, info.features)

    def set_whitelist(self, dataset: str, columns: Sequence[str]) -> list[str]:
        """Replace the operator's whitelist of columns the federation may use."""
        with self.write_transaction() as conn:
            info = self.dataset_info(dataset, conn)
            for c in columns:
                if c not in info.features:
                    raise InvalidInput(
                        f"dataset {dataset!r} has no feature {c!r} (features: {', '.join(info.features)})"
                    )
            cols = list(dict.fromkeys(columns))
            d = self.t["datasets"]
            conn.execute(
                d.update()
                .where(d.c.name == dataset)
                .values(federation_columns=json.dumps(cols), updated_at=time.time())
            )
        return cols

    # ------------------------------------------------------------ what the federation sees

    def summary(self) -> DataSummary:
        """Whitelisted feature names and types and row counts per dataset: no ids, no values."""
        tables: list[TableSummary] = []
        with self.engine.connect() as conn:
            for name in self.datasets():
                info = self.dataset_info(name, conn)
                ds = self._ds_table(info)
                rows = conn.execute(sa.select(sa.func.count()).select_from(ds)).scalar() or 0
                label_rows = 0
                if info.has_labels:
                    lt = self.t["labels"]
                    label_rows = (
                        conn.execute(sa.select(sa.func.count()).select_from(lt).where(lt.c.dataset == name)).scalar()
                        or 0
                    )
                feats = tuple(FeatureInfo(c, info.features[c]) for c in info.federation_columns)
                tables.append(TableSummary(name, int(rows), feats, info.has_labels, int(label_rows)))
        return DataSummary(tuple(tables))

    # ------------------------------------------------------------ reads

    def _consent_filter(self, stmt: sa.Select[Any], row_id_col: sa.ColumnElement[Any], purpose: str) -> sa.Select[Any]:
        if purpose not in PURPOSES:
            raise InvalidInput(f"unknown consent purpose {purpose!r} (one of {', '.join(PURPOSES)})")
        c = self.t["consent"]
        return stmt.where(sa.exists().where(c.c.purpose == purpose, c.c.row_id == row_id_col, c.c.granted.is_(True)))

    def feature_matrix(
        self,
        dataset: str,
        columns: Sequence[str] | None = None,
        *,
        purpose: str | None = None,
        row_ids: Sequence[int] | np.ndarray | None = None,
        allow_local: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(row_ids, X)`` for a dataset, ordered by row id.

        ``columns`` defaults to the whitelist; a column outside the whitelist raises PermissionDenied
        unless ``allow_local`` (the party's own, local use such as its own scoring features).
        ``purpose`` keeps subjects who consented to it; ``row_ids`` keeps only those subjects.
        Categorical columns hold vocabulary indices (0 is ``__unseen__``); a numeric column with
        ``missing = "mean"`` is already imputed.
        """
        info = self.dataset_info(dataset)
        cols = list(info.federation_columns if columns is None else columns)
        for c in cols:
            if c not in info.features:
                raise InvalidInput(f"dataset {dataset!r} has no feature {c!r}")
            if not allow_local and c not in info.federation_columns:
                raise PermissionDenied(f"feature {c!r} of dataset {dataset!r} is not whitelisted for the federation")
        ds = self._ds_table(info)
        stmt = sa.select(ds.c.row_id, *[ds.c[c] for c in cols]).order_by(ds.c.row_id)
        if purpose is not None:
            stmt = self._consent_filter(stmt, ds.c.row_id, purpose)
        ids, x = self._fetch_matrix(stmt, len(cols))
        if row_ids is not None:
            keep = np.isin(ids, np.asarray(row_ids, dtype=np.int64))
            ids, x = ids[keep], x[keep]
        return ids, x

    def _fetch_matrix(self, stmt: sa.Select[Any], ncols: int) -> tuple[np.ndarray, np.ndarray]:
        parts: list[np.ndarray] = []
        with self.engine.connect() as conn:
            compiled = stmt.compile(conn)
            sql, params = str(compiled), compiled.params
            if conn.dialect.positional:
                res = conn.exec_driver_sql(sql, tuple(params[k] for k in compiled.positiontup or ()))
            else:
                res = conn.exec_driver_sql(sql, params)
            cursor = res.cursor  # the DBAPI cursor: plain tuples, no Row objects (10x faster into numpy)
            while True:
                rows = cursor.fetchmany(_BATCH * 5)
                if not rows:
                    break
                parts.append(np.array(rows, dtype=np.float64))
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros((0, ncols))
        arr = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return arr[:, 0].astype(np.int64), np.ascontiguousarray(arr[:, 1:])

    def labels(
        self, dataset: str, *, purpose: str | None = None, row_ids: Sequence[int] | np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(row_ids, y)`` of the labelled subjects of a dataset, ordered by row id."""
        info = self.dataset_info(dataset)
        if not info.has_labels:
            raise NotFound(f"dataset {dataset!r} has no label column")
        lt = self.t["labels"]
        stmt = sa.select(lt.c.row_id, lt.c.label).where(lt.c.dataset == dataset).order_by(lt.c.row_id)
        if purpose is not None:
            stmt = self._consent_filter(stmt, lt.c.row_id, purpose)
        ids, y = self._fetch_matrix(stmt, 1)
        y1 = y[:, 0].astype(np.int8)
        if row_ids is not None:
            keep = np.isin(ids, np.asarray(row_ids, dtype=np.int64))
            ids, y1 = ids[keep], y1[keep]
        return ids, y1

    def ids_with_consent(self, purpose: str) -> np.ndarray:
        """Row ids of the subjects who granted consent for ``purpose`` (training, scoring, blacklist)."""
        s = self.t["subjects"]
        stmt = self._consent_filter(sa.select(s.c.row_id).order_by(s.c.row_id), s.c.row_id, purpose)
        with self.engine.connect() as conn:
            return np.fromiter(conn.execute(stmt).scalars(), dtype=np.int64)

    def has_consent(self, row_id: int, purpose: str) -> bool:
        """Whether one subject granted consent for ``purpose`` (an indexed lookup)."""
        s = self.t["subjects"]
        stmt = self._consent_filter(sa.select(s.c.row_id).where(s.c.row_id == int(row_id)), s.c.row_id, purpose)
        with self.engine.connect() as conn:
            return conn.execute(stmt).first() is not None

    def active_loan_ids(self, purpose: str | None = None) -> np.ndarray:
        """Row ids flagged with an active loan here."""
        a = self.t["active_loans"]
        stmt = sa.select(a.c.row_id).where(a.c.active.is_(True)).order_by(a.c.row_id)
        if purpose is not None:
            stmt = self._consent_filter(stmt, a.c.row_id, purpose)
        with self.engine.connect() as conn:
            return np.fromiter(conn.execute(stmt).scalars(), dtype=np.int64)

    def fraud_ids(self) -> np.ndarray:
        """Row ids on this party's fraud list."""
        f = self.t["fraud_list"]
        with self.engine.connect() as conn:
            return np.fromiter(conn.execute(sa.select(f.c.row_id).order_by(f.c.row_id)).scalars(), dtype=np.int64)

    def data_version(self) -> tuple[str | None, float, int]:
        """Changes whenever an ingest commits or the pseudonym key changes (the only writers of subjects,
        consent and flags): (key fingerprint, newest dataset update, datasets)."""
        d = self.t["datasets"]
        with self.engine.connect() as conn:
            newest, count = conn.execute(sa.select(sa.func.max(d.c.updated_at), sa.func.count())).one()
            return self._meta_get(conn, "pseudonym_key_fingerprint"), float(newest or 0.0), int(count)

    def flagged_pseudonyms(self, flag: str, purpose: str) -> np.ndarray:
        """Pseudonyms (``S16``) of the subjects on this party's ``"fraud"`` list or with an
        ``"active_loan"``, who consented to ``purpose``: one join streamed from the database in blocks
        into one array (16 B a subject; no Python object per subject is kept, so a 50M-entry list fits)."""
        if purpose not in PURPOSES:
            raise InvalidInput(f"unknown consent purpose {purpose!r} (one of {', '.join(PURPOSES)})")
        s, c = self.t["subjects"], self.t["consent"]
        if flag == "fraud":
            f = self.t["fraud_list"]
            cond = None
        elif flag == "active_loan":
            f = self.t["active_loans"]
            cond = f.c.active.is_(True)
        else:
            raise InvalidInput(f"unknown flag {flag!r} (fraud or active_loan)")
        # plain joins from the consent index (an EXISTS filter lets SQLite walk the pseudonym index instead,
        # with a random lookup per row: 3x slower)
        stmt = (
            sa.select(s.c.pseudonym)
            .select_from(c)
            .join(f, f.c.row_id == c.c.row_id)
            .join(s, s.c.row_id == c.c.row_id)
            .where(c.c.purpose == purpose, c.c.granted.is_(True))
        )
        if cond is not None:
            stmt = stmt.where(cond)
        with self.engine.connect() as conn:
            bound = int(conn.execute(sa.select(sa.func.count()).select_from(f)).scalar() or 0)
            out = np.empty(bound, dtype="S16")  # filled in place: no second copy of the list
            n = 0
            res = conn.execution_options(yield_per=_BATCH * 5).execute(stmt)
            for block in res.partitions():
                rows = [r[0] for r in block if r[0] is not None]  # no pseudonym key yet: not listed
                raw = b"".join(rows)
                if len(raw) != 16 * len(rows):
                    raise InvalidInput("a stored pseudonym is not 16 bytes")
                if n + len(rows) > len(out):  # rows added since the count (PostgreSQL, read committed)
                    out = np.concatenate([out[:n], np.empty(len(rows) + n // 8, dtype="S16")])
                out[n : n + len(rows)] = np.frombuffer(raw, dtype="S16")
                n += len(rows)
        return out[:n]

    def row_ids_for(self, raw_ids: Sequence[str], kind: IdKind | str) -> np.ndarray:
        """Row ids of raw ids (normalized first); -1 for an invalid or unknown id. Local use only."""
        norm = normalize_ids(list(raw_ids), kind)
        s = self.t["subjects"]
        found: dict[str, int] = {}
        wanted = sorted({n for n in norm if n is not None})
        with self.engine.connect() as conn:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                q = sa.select(s.c.id_norm, s.c.row_id).where(s.c.id_kind == str(IdKind(kind)), s.c.id_norm.in_(chunk))
                found.update({a: int(b) for a, b in conn.execute(q)})
        return np.array([found.get(n, -1) if n is not None else -1 for n in norm], dtype=np.int64)

    def encode_categories(self, dataset: str, column: str, values: Sequence[str | None]) -> np.ndarray:
        """Vocabulary indices of category values (scoring time): unknown values -> the declared ``unseen``
        level, else ``__unseen__`` (0)."""
        info = self.dataset_info(dataset)
        vocab = info.vocabularies.get(column)
        if vocab is None:
            raise InvalidInput(f"dataset {dataset!r} has no categorical feature {column!r}")
        index = {v: i for i, v in enumerate(vocab)}
        spec = next(c for c in info.schema["categorical"] if c["name"] == column)
        fallback = index.get(spec.get("unseen") or UNSEEN, 0)  # the declared fallback level, if seen
        out = np.empty(len(values), dtype=np.int64)
        for i, v in enumerate(values):
            if v is None or str(v).strip() == "":
                if spec["missing"] == "fill":
                    v = spec["fill"]
                elif spec["missing"] == "category":
                    v = "__missing__"
            out[i] = index.get(str(v).strip() if v is not None else UNSEEN, fallback)
        return out

    # ------------------------------------------------------------ pseudonyms

    def key_fingerprint(self) -> str | None:
        with self.engine.connect() as conn:
            return self._meta_get(conn, "pseudonym_key_fingerprint")

    def install_pseudonym_key(self, key: PseudonymKey) -> int:
        """Use ``key`` from now on; recompute every subject's pseudonym (in blocks) if it is a new key.

        Returns the number of pseudonyms recomputed (0 if the key was already installed).
        """
        from party_node.store_pseudonyms import install_key

        self._key = key
        return install_key(self, key)

    def pseudonyms(self, row_ids: Sequence[int] | np.ndarray) -> list[bytes | None]:
        """Pseudonyms of row ids (``None`` for an unknown row id or when no key is installed)."""
        s = self.t["subjects"]
        wanted = [int(r) for r in row_ids]
        found: dict[int, bytes | None] = {}
        with self.engine.connect() as conn:
            uniq = sorted(set(wanted))
            for i in range(0, len(uniq), 500):
                q = sa.select(s.c.row_id, s.c.pseudonym).where(s.c.row_id.in_(uniq[i : i + 500]))
                found.update({int(a): b for a, b in conn.execute(q)})
        return [found.get(r) for r in wanted]

    def all_pseudonyms(self, purpose: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(row_ids, pseudonyms)`` (int64, ``S16``) of every subject (optionally only those consenting to
        ``purpose``): read in blocks into two arrays, 24 B a subject (:mod:`party_node.store_pseudonyms`)."""
        from party_node.store_pseudonyms import all_pseudonyms

        self._require_key()
        return all_pseudonyms(self, purpose)

    def row_ids_for_pseudonyms(self, pseudonyms: Sequence[bytes]) -> np.ndarray:
        """Row ids of pseudonyms (indexed lookup); -1 where the pseudonym is unknown here."""
        self._require_key()
        s = self.t["subjects"]
        if len(pseudonyms) == 1:  # one viewer or applicant: a cached statement, no expanding IN to compile
            with self.engine.connect() as conn:
                rid = conn.execute(self._one_pseudonym, {"p": bytes(pseudonyms[0])}).scalar()
            return np.array([-1 if rid is None else int(rid)], dtype=np.int64)
        found: dict[bytes, int] = {}
        uniq = sorted(set(pseudonyms))
        with self.engine.connect() as conn:
            for i in range(0, len(uniq), 500):
                q = sa.select(s.c.pseudonym, s.c.row_id).where(s.c.pseudonym.in_(uniq[i : i + 500]))
                found.update({bytes(a): int(b) for a, b in conn.execute(q)})
        return np.array([found.get(p, -1) for p in pseudonyms], dtype=np.int64)

    def _require_key(self) -> None:
        # once a store has a key it keeps one (a new key replaces it), so a positive check is remembered:
        # a joint score per pre-approval lender no longer reads the store's meta table each time
        if self._key_seen:
            return
        if self.key_fingerprint() is None:
            raise NotFound("no pseudonym key is installed in this store")
        self._key_seen = True

    # ------------------------------------------------------------ tests and audits

    def checksum(self) -> str:
        """SHA-256 over the logical content of every table (rows in primary-key order)."""
        h = hashlib.sha256()
        md = sa.MetaData()
        with self.engine.connect() as conn:
            md.reflect(conn)
            for name in sorted(md.tables):
                t = md.tables[name]
                h.update(f"table {name} {[c.name for c in t.columns]}\n".encode())
                order = list(t.primary_key.columns) or list(t.columns)
                for row in conn.execute(sa.select(t).order_by(*order)):
                    h.update(repr(tuple(row)).encode())
                    h.update(b"\n")
        return h.hexdigest()


