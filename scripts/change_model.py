"""A joint model trained with the platform's change features, on the synthetic federation's time series
(``scripts/synthetic_time.py``), through the real parts: the platform's store gets its behaviour data
and weekly snapshots, ``snapshot derive`` writes the change features as a dataset
(:func:`party_node.snapshot_derive.derive_changes`, ``--with behaviour``), and a vertical run
(:func:`fedcore.protocol.vertical.coordinator.run_vertical`, CKKS, in-memory channel) trains the joint
logistic model between one lender and the platform.

The lender ("book") holds one row per borrower on the platform who has not defaulted by the training
date: the application PD's logit (``app_logit``, the lender's own score) and the label "defaults within
``horizon_weeks`` after the training date" (a behaviour model's outcome window). Without change
features the platform trains on its static ``behaviour`` dataset. The alignment is staged directly from
the shared ids (the tests of ``party_node.vertical`` do the same; PSI is tested on its own).

Used by ``tests/unit/realtime/test_change_model.py`` and ``scripts/bench_realtime.py`` (measuring only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role
from fedcore.protocol.scoring.messages import ModelSlice
from fedcore.protocol.sealing import make_identities
from fedcore.protocol.tasks import HandlerRegistry
from fedcore.protocol.vertical.coordinator import VerticalConfig, VerticalResult, run_vertical
from party_node.alignment import StoreAlignment
from party_node.ingest import ingest_file
from party_node.schema import parse_schema
from party_node.snapshot_derive import derive_changes
from party_node.snapshots import Snapshots
from party_node.store import Store
from party_node.vertical import register_vertical_handlers
from scripts.synthetic import PLATFORM, PLATFORM_DATASET, Federation
from scripts.synthetic_time import TimeSeries, platform_ids

LENDER = "book"
SNAPSHOT_DATASET = "weekly"
CHANGES = "behaviour_changes"
FEATURES = ("spend", "active_days")


@dataclass
class ChangeModel:
    result: VerticalResult
    lender: ModelSlice
    platform: ModelSlice
    platform_store: Store
    lender_store: Store
    person: np.ndarray  # the book's person ids (rows of the lender's dataset, in id order)
    label: np.ndarray  # per book row: defaults within the horizon after the training date

    def close(self) -> None:
        self.platform_store.close()
        self.lender_store.close()


def load_snapshots(store: Store, fed: Federation, ts: TimeSeries, weeks: range) -> None:
    """The platform's weekly snapshots of ``weeks`` into its store (dataset ``weekly``)."""
    snaps = Snapshots(store)
    ids = np.array(platform_ids(fed, np.arange(len(fed.people))), dtype=object)
    by_week = ts.snapshots.groupby("week", sort=True)
    for w in weeks:
        frame = by_week.get_group(w)
        snaps.load(SNAPSHOT_DATASET, ts.as_of(w), ids[frame["person_id"].to_numpy()].tolist(),
                   "phone" if fed.config.id_kind != "national_id" else "national_id",
                   {f: frame[f].to_numpy() for f in FEATURES})


def derive(store: Store, ts: TimeSeries, week: int, recent_days: int = 30, prior_days: int = 90) -> None:
    """``fedcredit party snapshot derive --dataset weekly --feature spend --feature active_days --as-of DATE
    --into behaviour_changes --with behaviour``."""
    derive_changes(store, SNAPSHOT_DATASET, FEATURES, ts.as_of(week), CHANGES, with_dataset=PLATFORM_DATASET,
                   recent_days=recent_days, prior_days=prior_days)


def book(fed: Federation, ts: TimeSeries, week: int, horizon_weeks: int) -> pd.DataFrame:
    """Borrowers on the platform not defaulted by ``week``: person, app_logit, label."""
    loans = fed.loans.drop_duplicates("person_id")
    on = fed.people["on_platform"].to_numpy()[loans["person_id"].to_numpy()]
    dw = ts.default_week[loans["person_id"].to_numpy()]
    keep = on & ((dw < 0) | (dw > week))
    loans, dw = loans[keep], dw[keep]
    p = loans["pd_true"].to_numpy()
    return pd.DataFrame({"person": loans["person_id"].to_numpy(), "app_logit": np.log(p / (1 - p)),
                         "label": ((dw > week) & (dw <= week + horizon_weeks)).astype(int)})


def train_change_model(root: Path, fed: Federation, ts: TimeSeries, week: int, *, with_changes: bool,
                       horizon_weeks: int = 26, epochs: int = 10, seed: int = 0, lr: float = 0.2,
                       static: list[str] | None = None, recent_days: int = 30, prior_days: int = 90,
                       l2: float = 0.0) -> ChangeModel:
    """Train the joint model as of ``week`` (model id ``chg``) with or without the change features;
    ``static``: the platform's whitelist of its behaviour columns (default: the synthetic schema's)."""
    root.mkdir(parents=True, exist_ok=True)
    kind = "national_id" if fed.config.id_kind == "national_id" else "phone"
    history = range(max(0, week - (recent_days + prior_days) // 7), week + 1) if with_changes else range(0)
    ps = platform_store(root, fed, ts, history)
    if static is not None:
        ps.set_whitelist(PLATFORM_DATASET, static)
    if with_changes:
        derive(ps, ts, week, recent_days, prior_days)
    b = book(fed, ts, week, horizon_weeks)
    ids = platform_ids(fed, b["person"].to_numpy())
    pd.DataFrame({"id": ids, "y": b["label"], "app_logit": b["app_logit"].round(6)}).to_csv(
        root / "book.csv", index=False)
    ls = Store.open(f"sqlite:///{root / 'lender.db'}")
    ingest_file(ls, root / "book.csv", parse_schema({
        "dataset": {"name": "book", "id_column": "id", "id_kind": kind, "label_column": "y",
                    "consent_all": ["training", "scoring"], "federation_columns": ["app_logit"]},
        "numeric": {"app_logit": {"missing": "reject"}}}))
    # the alignment: book borrowers with training consent at the platform, in one shared order
    rid_l, rid_p = ls.row_ids_for(ids, kind), ps.row_ids_for(ids, kind)
    ok = np.isin(rid_p, ps.ids_with_consent("training")) & (rid_l >= 0)
    order = np.random.default_rng(seed).permutation(np.flatnonzero(ok))
    aligns = {}
    for name, store, rid in ((LENDER, ls, rid_l), (PLATFORM, ps, rid_p)):
        al = StoreAlignment(store)
        al.stage_alignment("psi-chg", rid[order])
        al.commit_alignment("psi-chg")
        aligns[name] = al
    ch = InMemoryChannel()
    idents = make_identities([LENDER, PLATFORM])
    for name, store in ((LENDER, ls), (PLATFORM, ps)):
        reg = HandlerRegistry()
        register_vertical_handlers(reg, store, aligns[name], root / name, name, idents[name])
        ch.add_party(name, Role.PLATFORM if name == PLATFORM else Role.LENDER, reg)
    try:
        cfg = VerticalConfig(epochs=epochs, lr=lr, l2=l2, seed=seed, patience=epochs, batch_size=4096)
        res = run_vertical(ch, "chg", [LENDER], PLATFORM, {LENDER: "psi-chg"}, cfg, workdir=root / "coord")
    finally:
        ch.close()
    rows = ls.row_ids_for(ids, kind)
    srt = np.argsort(rows)
    return ChangeModel(res, ModelSlice.load(root / LENDER / "models", "chg"),
                       ModelSlice.load(root / PLATFORM / "models", "chg"), ps, ls,
                       b["person"].to_numpy()[srt], b["label"].to_numpy()[srt])


def joint_logit(m: ChangeModel, fed: Federation, people: np.ndarray, app_logit: np.ndarray,
                platform_store: Store | None = None) -> np.ndarray:
    """The joint model's logit for ``people``: the lender's slice on ``app_logit`` (with the intercept)
    plus the platform's slice on the values of the slice's dataset in ``platform_store`` (default: the
    one it was trained on; a person without a row: the slice's neutral row, nothing from the platform)."""
    store = platform_store or m.platform_store
    kind = "national_id" if fed.config.id_kind == "national_id" else "phone"
    own = m.lender.partial_logit(np.asarray(app_logit, dtype=np.float64)[:, None]) + (m.lender.intercept or 0.0)
    rid = store.row_ids_for(platform_ids(fed, people), kind)
    xr, x = store.feature_matrix(m.platform.dataset, list(m.platform.features))
    pos = np.searchsorted(xr, rid)
    pos = np.minimum(pos, max(len(xr) - 1, 0))
    found = (xr[pos] == rid) if len(xr) else np.zeros(len(rid), dtype=bool)
    rows = np.where(found[:, None], x[pos], m.platform.neutral()[None, :])
    return own + m.platform.partial_logit(rows)


def platform_store(root: Path, fed: Federation, ts: TimeSeries, weeks: range) -> Store:
    """A platform store with its behaviour data and the snapshots of ``weeks`` (for passes over time)."""
    root.mkdir(parents=True, exist_ok=True)
    ps = Store.open(f"sqlite:///{root / 'platform.db'}")
    fed.parties[PLATFORM].to_pandas().to_csv(root / "behaviour.csv", index=False)
    ingest_file(ps, root / "behaviour.csv", parse_schema(fed.schemas[PLATFORM]))
    load_snapshots(ps, fed, ts, weeks)
    return ps
