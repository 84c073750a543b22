"""Behaviour over time: dated snapshots in a party's store and the change features derived from them.

A *snapshot* is one dated load of a party's per-subject values (e.g. the platform's daily spend and
active minutes per user). Loads are incremental and keyed by (subject, date, feature): each load adds
one date and keeps every earlier one (the history), and loading the same date again replaces that date
(an idempotent re-run).

**A snapshot dated before the latest one already loaded for that dataset is refused**
(:class:`SnapshotOutOfOrder`, naming the dataset and both dates): change features and monitoring
alerts already computed from the later history would otherwise change silently behind them. A
correction of an old date is a new load of the latest date, or a rebuild of the dataset.

Change features (:func:`change_features`): for a value ``v`` and a date ``t``, the mean of ``v`` over
the ``recent_days`` up to ``t`` divided by its mean over the ``prior_days`` before those (the default:
30-day spending against the prior 90 days); 1.0 is "no change", 0.2 is "down 80%". Subjects without a
prior value get NaN. Snapshots stay at the party: only the derived, whitelisted values ever enter a
joint model or a monitoring score, through the usual scoring protocol.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa

from fedcore.errors import InvalidInput

from .ingest import _insert_many
from .schema import IdKind, normalize_ids
from .store import Store

_MD = sa.MetaData()
SNAPSHOTS = sa.Table(
    "snapshots",
    _MD,
    sa.Column("dataset", sa.String(64), primary_key=True),
    sa.Column("feature", sa.String(64), primary_key=True),
    sa.Column("id_kind", sa.String(16), primary_key=True),
    sa.Column("id_norm", sa.String(128), primary_key=True),
    sa.Column("as_of", sa.Date, primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
    sa.Index("ix_snapshots_date", "dataset", "feature", "as_of"),
)


class SnapshotOutOfOrder(InvalidInput):
    """A snapshot dated before the latest loaded one for its dataset."""


@dataclass(frozen=True)
class SnapshotReport:
    dataset: str
    as_of: dt.date
    rows: int
    invalid_ids: int
    replaced: bool


def _date(value: dt.date | str, where: str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput(f"{where}: {value!r} is not a date (YYYY-MM-DD)") from None


def _latest(dataset: str) -> sa.Select[Any]:
    return sa.select(sa.func.max(SNAPSHOTS.c.as_of)).where(SNAPSHOTS.c.dataset == dataset)


class Snapshots:
    """Dated snapshots in a party's store (their own table, created on first use)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        _MD.create_all(store.engine, tables=[SNAPSHOTS])

    def latest(self, dataset: str) -> dt.date | None:
        with self.store.engine.connect() as conn:
            return conn.execute(_latest(dataset)).scalar()

    def dates(self, dataset: str) -> list[dt.date]:
        with self.store.engine.connect() as conn:
            q = sa.select(SNAPSHOTS.c.as_of).where(SNAPSHOTS.c.dataset == dataset).distinct()
            q = q.order_by(SNAPSHOTS.c.as_of)
            return list(conn.execute(q).scalars())

    def load(self, dataset: str, as_of: dt.date | str, ids: Sequence[str], id_kind: str,
             values: Mapping[str, Sequence[float] | np.ndarray], source: str = "<snapshot>") -> SnapshotReport:
        """Add (or replace) the snapshot of ``dataset`` dated ``as_of``. All or nothing."""
        day = _date(as_of, f"{source}: as_of")
        kind = str(IdKind(id_kind))
        if not values:
            raise InvalidInput(f"{source}: a snapshot needs at least one value column")
        cols: dict[str, np.ndarray] = {}
        for name, col in values.items():
            arr = np.asarray(col, dtype=np.float64)
            if arr.shape != (len(ids),):
                raise InvalidInput(f"{source}: column {name!r} has {arr.shape[0]} values for {len(ids)} ids")
            bad = np.flatnonzero(~np.isfinite(arr))
            if len(bad):
                raise InvalidInput(f"{source}: row {int(bad[0]) + 1}, column {name!r}: not a finite number")
            cols[name] = arr
        norm = normalize_ids(list(ids), kind)
        keep = [i for i, v in enumerate(norm) if v is not None]
        with self.store.write_transaction() as conn:
            latest = conn.execute(_latest(dataset)).scalar()
            if latest is not None and day < latest:
                raise SnapshotOutOfOrder(
                    f"{source}: snapshot of {dataset!r} dated {day} is older than the latest loaded ({latest});"
                    " history is append-only"
                )
            replaced = latest == day
            conn.execute(SNAPSHOTS.delete().where(SNAPSHOTS.c.dataset == dataset, SNAPSHOTS.c.as_of == day))
            names = ["dataset", "feature", "id_kind", "id_norm", "as_of", "value"]
            iso = day.isoformat()  # how SQLAlchemy stores a Date on SQLite; PostgreSQL parses it
            for f, arr in cols.items():
                vals = arr.tolist()
                _insert_many(conn, SNAPSHOTS, names, [(dataset, f, kind, norm[i], iso, vals[i]) for i in keep])
        return SnapshotReport(dataset, day, len(keep), len(ids) - len(keep), replaced)

    def history(
        self, dataset: str, feature: str, since: dt.date, until: dt.date
    ) -> dict[tuple[str, str], list[tuple[dt.date, float]]]:
        """``{(id_kind, id_norm): [(date, value), ...]}`` in ``[since, until]``, dates ascending."""
        q = (sa.select(SNAPSHOTS.c.id_kind, SNAPSHOTS.c.id_norm, SNAPSHOTS.c.as_of, SNAPSHOTS.c.value)
             .where(SNAPSHOTS.c.dataset == dataset, SNAPSHOTS.c.feature == feature,
                    SNAPSHOTS.c.as_of >= since, SNAPSHOTS.c.as_of <= until)
             .order_by(SNAPSHOTS.c.as_of))
        out: dict[tuple[str, str], list[tuple[dt.date, float]]] = {}
        with self.store.engine.connect() as conn:
            for kind, idn, day, v in conn.execute(q):
                out.setdefault((kind, idn), []).append((day, float(v)))
        return out


def change_features(snaps: Snapshots, dataset: str, feature: str, as_of: dt.date | str, *,
                    recent_days: int = 30, prior_days: int = 90) -> dict[tuple[str, str], float]:
    """Per subject: mean over ``(as_of - recent_days, as_of]`` / mean over the ``prior_days`` before.
    NaN when the subject has no prior value; ``inf`` never (a zero prior mean gives NaN)."""
    if recent_days < 1 or prior_days < 1:
        raise InvalidInput("recent_days and prior_days must be positive")
    end = _date(as_of, "as_of")
    cut = end - dt.timedelta(days=recent_days)
    start = cut - dt.timedelta(days=prior_days)
    c = SNAPSHOTS.c
    recent = sa.func.avg(sa.case((c.as_of > cut, c.value)))
    prior = sa.func.avg(sa.case((c.as_of <= cut, c.value)))
    q = (sa.select(c.id_kind, c.id_norm, recent, prior)
         .where(c.dataset == dataset, c.feature == feature, c.as_of > start, c.as_of <= end)
         .group_by(c.id_kind, c.id_norm))
    out: dict[tuple[str, str], float] = {}
    with snaps.store.engine.connect() as conn:
        for kind, idn, rm, pm in conn.execute(q):
            out[(kind, idn)] = float(rm) / float(pm) if rm is not None and pm is not None and pm > 0 else float("nan")
    return out
