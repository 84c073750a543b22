"""Change features as an ordinary dataset: ``fedcredit party snapshot derive``.

:func:`derive_changes` turns a party's snapshot history (:mod:`party_node.snapshots`) into a dataset
of its store, ``into``, with one numeric column ``<feature>_change`` per snapshot feature: the value of
:func:`~party_node.snapshots.change_features` as of a date (mean of the last ``recent_days`` over the
mean of the ``prior_days`` before; 1.0 no change). Vertical training, trees and joint scoring read it
like any ingested dataset: its whitelisted columns (all of them when it is created; a re-derive keeps
the operator's whitelist) are the party's features when a run names the dataset, and the joint scoring
tables refresh from the store. ``with_dataset`` copies that dataset's whitelisted columns beside the
change columns, so one dataset holds the party's static and change features (a joint-model slice reads
one dataset per party); at a party without labels such a dataset stands in for its base as the default
training dataset (:meth:`party_node.vertical.StoreVerticalSource._dataset`).

Rows: every subject of the store with the snapshots' id kind (with ``with_dataset``: that dataset's
rows), so a PSI run over the party's subjects finds a row for each. A subject without a change value
(no history, nothing in the prior window, a zero prior mean) gets 1.0, "no change", recorded in the
dataset's schema as the fill value. Snapshot ids that are not subjects of the store are skipped and
counted (``unknown``): a derivation never adds a subject.

**Consent follows the source data, never wider**: consent is held per subject and purpose, and a
derivation writes no consent, so a derived row is used for training, scoring or monitoring exactly
where its subject granted that purpose in the data it was ingested with (a later withdrawal applies to
the derived rows at once). Snapshots and raw ids stay at the party: only the whitelisted derived
columns enter a model, through the ordinary training and scoring protocols.

Re-deriving (a later ``as_of``) replaces every value of the dataset in one transaction; a bad input
(unknown snapshot dataset or feature, a bad or history-less date, a different set of features than the
stored dataset, an ``into`` that is an ingested dataset) raises a typed error naming the field and
leaves the store unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from fedcore.errors import InvalidInput, NotFound

from .ingest import _insert_many
from .schema import COLUMN_RE, NAME_RE, CategoricalSpec, DatasetSchema, IdKind, NumericSpec
from .snapshots import SNAPSHOTS, Snapshots, _date, change_features
from .store import Store, feature_table

NO_CHANGE = 1.0


@dataclass(frozen=True)
class DeriveReport:
    dataset: str
    as_of: dt.date
    rows: int  # rows written (subjects of the store)
    with_change: int  # rows with at least one change value from the history (others: 1.0)
    unknown: int  # snapshot subjects without a row here (not subjects of the store; with --with: not in it)
    replaced: bool  # the dataset existed and its values were replaced
    columns: tuple[str, ...]


def change_column(feature: str) -> str:
    return f"{feature}_change"


def _check_inputs(snaps: Snapshots, dataset: str, features: Sequence[str], day: dt.date, into: str,
                  recent_days: int, prior_days: int) -> list[str]:
    if recent_days < 1 or prior_days < 1:
        raise InvalidInput(f"--recent-days and --prior-days must be positive (got {recent_days}, {prior_days})")
    if not NAME_RE.match(into):
        raise InvalidInput(f"--into: {into!r} is not a dataset name (a-z, 0-9, '_', starting with a letter)")
    dates = snaps.dates(dataset)
    if not dates:
        raise NotFound(f"--dataset: no snapshots of {dataset!r} are loaded")
    if not features:
        raise InvalidInput("--feature: name at least one snapshot feature")
    with snaps.store.engine.connect() as conn:
        known = set(conn.execute(sa.select(SNAPSHOTS.c.feature).where(SNAPSHOTS.c.dataset == dataset)
                                 .distinct()).scalars())
    feats = list(dict.fromkeys(features))
    for f in feats:
        if f not in known:
            raise NotFound(f"--feature: snapshot dataset {dataset!r} has no feature {f!r} "
                           f"(features: {', '.join(sorted(known))})")
        if not COLUMN_RE.match(change_column(f)):
            raise InvalidInput(f"--feature: {f!r} does not make a column name")
    start = day - dt.timedelta(days=recent_days + prior_days)
    if not any(start < d <= day for d in dates):
        raise InvalidInput(f"--as-of: no snapshot of {dataset!r} in the {recent_days + prior_days} days up to {day}"
                           f" (loaded: {dates[0]} .. {dates[-1]})")
    return feats


def derive_changes(store: Store, dataset: str, features: Sequence[str], as_of: dt.date | str, into: str, *,
                   recent_days: int = 30, prior_days: int = 90, with_dataset: str | None = None) -> DeriveReport:
    """Write (or replace) dataset ``into``: per subject, ``<feature>_change`` as of ``as_of`` for each of
    ``features`` of snapshot dataset ``dataset`` (and ``with_dataset``'s whitelisted columns). Atomic."""
    snaps = Snapshots(store)
    day = _date(as_of, "--as-of")
    feats = _check_inputs(snaps, dataset, features, day, into, recent_days, prior_days)
    if with_dataset == into:
        raise InvalidInput(f"--with: {into!r} cannot include itself")
    changes = {f: change_features(snaps, dataset, f, day, recent_days=recent_days, prior_days=prior_days)
               for f in feats}
    kinds = {k for ch in changes.values() for k, _ in ch}
    try:
        base = store.dataset_info(with_dataset) if with_dataset else None
    except NotFound as exc:
        raise NotFound(f"--with: {exc}") from None
    if base is not None:
        kind = base.id_kind
    elif len(kinds) == 1:
        kind = next(iter(kinds))
    else:
        raise InvalidInput(f"--dataset: snapshots of {dataset!r} hold {len(kinds)} id kinds "
                           f"({', '.join(sorted(kinds)) or 'none in the window'}); derive with --with DATASET")
    s = store.t["subjects"]
    with store.engine.connect() as conn:
        subj = {str(a): int(b) for a, b in conn.execute(sa.select(s.c.id_norm, s.c.row_id).where(s.c.id_kind == kind))}
    # the rows: the base dataset's (its whitelisted columns copied), else every subject of this id kind
    base_cols: list[str] = []
    if base is not None:
        base_cols = list(base.federation_columns)
        clash = [c for c in base_cols if c in {change_column(f) for f in feats}]
        if clash:
            raise InvalidInput(f"--with: dataset {base.name!r} already has a column {clash[0]!r}")
        row_ids, base_x = store.feature_matrix(base.name, base_cols)
    else:
        row_ids = np.array(sorted(subj.values()), dtype=np.int64)
        base_x = np.zeros((len(row_ids), 0))
    pos = {int(r): i for i, r in enumerate(row_ids.tolist())}
    cols = np.full((len(row_ids), len(feats)), np.nan)
    unknown: set[str] = set()
    for j, f in enumerate(feats):
        for (k, idn), v in changes[f].items():
            i = pos.get(subj.get(idn, -1), -1) if k == kind else -1
            if i < 0:
                unknown.add(f"{k}:{idn}")
            elif v == v:
                cols[i, j] = v
    with_change = int((~np.isnan(cols)).any(axis=1).sum()) if len(feats) else 0
    cols = np.where(np.isnan(cols), NO_CHANGE, cols)
    schema = _schema(into, kind, feats, base, base_cols)
    values = {c: base_x[:, j] for j, c in enumerate(base_cols)}
    values.update({change_column(f): cols[:, j] for j, f in enumerate(feats)})
    replaced = _write(store, schema, row_ids, values, {
        "snapshots": dataset, "features": feats, "as_of": day.isoformat(), "recent_days": recent_days,
        "prior_days": prior_days, "with": with_dataset, "fill": NO_CHANGE})
    return DeriveReport(into, day, len(row_ids), with_change, len(unknown), replaced,
                        tuple([*base_cols, *(change_column(f) for f in feats)]))


def _schema(into: str, kind: str, feats: list[str], base: Any, base_cols: list[str]) -> DatasetSchema:
    numeric = [NumericSpec(c, "reject") for c in base_cols if base.features[c] == "numeric"]
    numeric += [NumericSpec(change_column(f), "fill", NO_CHANGE) for f in feats]
    categorical: list[CategoricalSpec] = []
    if base is not None:
        specs = {c["name"]: c for c in base.schema.get("categorical", [])}
        for c in base_cols:
            if base.features[c] == "categorical":
                sp = specs[c]
                voc = sp.get("vocabulary")
                categorical.append(CategoricalSpec(c, sp.get("missing", "category"), sp.get("fill"),
                                                   tuple(voc) if voc is not None else None, sp.get("unseen")))
    return DatasetSchema(name=into, id_column="id", id_kind=IdKind(kind), numeric=tuple(numeric),
                         categorical=tuple(categorical), source="snapshot derive")


def _write(store: Store, schema: DatasetSchema, row_ids: np.ndarray, values: dict[str, np.ndarray],
           derived: dict[str, Any]) -> bool:
    """Replace the dataset's rows and metadata in one transaction (create it on first use)."""
    d = store.t["datasets"]
    now = time.time()
    types = schema.feature_types()
    names = list(types)
    table = feature_table(schema.name, types)
    meta = schema.to_json()
    meta["derived"] = derived
    vocab: dict[str, list[str]] = {}
    if derived["with"]:
        vocab = {c: v for c, v in store.dataset_info(str(derived["with"])).vocabularies.items() if c in types}
    data = [values[n].tolist() if types[n] == "numeric" else values[n].astype(np.int64).tolist() for n in names]
    with store.write_transaction() as conn:
        row = conn.execute(sa.select(d).where(d.c.name == schema.name)).mappings().first()
        if row is None:
            table.create(conn)
            conn.execute(d.insert(), {
                "name": schema.name, "id_kind": str(schema.id_kind), "structure": json.dumps(schema.structure()),
                "schema_json": "{}", "vocabularies": "{}", "means": "{}",
                "federation_columns": json.dumps(list(types)), "created_at": now, "updated_at": now})
        else:
            old = json.loads(row["schema_json"])
            if "derived" not in old:
                raise InvalidInput(f"--into: dataset {schema.name!r} is an ingested dataset, not a derived one; "
                                   "derive into a new name")
            if json.loads(row["structure"]) != schema.structure():
                raise InvalidInput(
                    f"--feature: dataset {schema.name!r} was derived with columns "
                    f"{[n for n, _ in json.loads(row['structure'])['features']]}, not {list(types)}; "
                    "derive into a new name")
            conn.execute(table.delete())
        _insert_many(conn, table, ["row_id", *names], list(zip(row_ids.tolist(), *data, strict=True)))
        conn.execute(d.update().where(d.c.name == schema.name).values(
            schema_json=json.dumps(meta), vocabularies=json.dumps(vocab), updated_at=now))
    return row is not None
