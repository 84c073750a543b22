"""Party side of federated binning (:mod:`fedcore.protocol.binning`) on the node's local store.

A run's ``binning.setup`` names the lenders, the platform (or none) and, with a platform, each
lender's committed PSI run with it. This node then builds its protocol party over its store: a lender
its whitelisted features and labels (rows in the PSI run's joint order, or every labelled row with
training consent when there is no platform); the platform one table per lender (that lender's PSI
order). Categorical columns enter as their declared level strings (never the store's codes, which
differ between parties). What leaves the node is what the protocol's docstring lists; the detail of
this party's own features (cut points or level groups, counts, WOE, IV) is written to
``HOME/binning/<run_id>.json`` and shown by ``fedcredit party binning show``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedcore.errors import InvalidInput, NotFound
from fedcore.files import replacing
from fedcore.protocol.binning.messages import KINDS, LENDER_IV, PLATFORM_IV, SETUP
from fedcore.protocol.binning.party import FeatureDetail, LenderBinning, LenderData, PlatformBinning, PlatformData
from fedcore.protocol.messages import JSONValue, TaskReply
from fedcore.protocol.sealing import PartyIdentity
from fedcore.protocol.tasks import HandlerRegistry, TaskContext

from .alignment import StoreAlignment
from .store import DatasetInfo, Store
from .vertical import StoreVerticalSource

__all__ = ["BINNING_DIR", "detail_to_dict", "load_result", "register_binning_handlers"]

BINNING_DIR = Path("binning")
_FINAL = {LENDER_IV, PLATFORM_IV}


def _frame(info: DatasetInfo, columns: list[str], X: np.ndarray) -> pd.DataFrame:
    """Feature columns as the binning sees them: numbers, or the declared level strings."""
    data: dict[str, Any] = {}
    for j, c in enumerate(columns):
        if info.features[c] == "categorical":
            vocab = info.vocabularies[c]
            data[c] = np.array([vocab[int(v)] if 0 <= int(v) < len(vocab) else vocab[0] for v in X[:, j]],
                               dtype=object)
        else:
            data[c] = X[:, j]
    return pd.DataFrame(data, columns=columns)


def detail_to_dict(details: Mapping[str, FeatureDetail]) -> dict[str, Any]:
    """A party's own features after a run, JSON-able: fine and optimal bins with counts, WOE and IV."""
    out: dict[str, Any] = {}
    for f, d in details.items():
        def bins(b: Any, t: Any) -> list[dict[str, Any]]:
            return [{"bin": lab, "events": int(e), "nonevents": int(n), "woe": float(w), "iv": float(v)}
                    for lab, e, n, w, v in zip(b.labels(), t.events, t.nonevents, t.woe, t.iv_bins, strict=True)]

        out[f] = {
            "kind": d.fine.kind,
            "iv_quantile": d.fine_table.iv,
            "iv_optimal": d.optimal.table.iv,
            "trend": d.optimal.trend,
            "missing_excluded": d.missing_excluded,
            "quantile": {"binning": d.fine.to_dict(), "bins": bins(d.fine, d.fine_table)},
            "optimal": {"binning": d.optimal.binning.to_dict(), "bins": bins(d.optimal.binning, d.optimal.table)},
        }
    return out


class NodeBinning:
    """Dispatches the ``binning.*`` tasks to a per-run protocol party built over the store."""

    def __init__(self, store: Store, alignment: StoreAlignment, home: Path, party: str,
                 identity: PartyIdentity) -> None:
        self.store = store
        self.source = StoreVerticalSource(store, alignment)
        self.home = Path(home)
        self.party = party
        self.identity = identity
        self._runs: dict[str, tuple[HandlerRegistry, LenderBinning | PlatformBinning]] = {}
        self._lock = threading.Lock()

    def register(self, registry: HandlerRegistry) -> None:
        for kind in KINDS:
            registry.register(kind, self._handler(kind))

    def _handler(self, kind: str) -> Any:
        def handle(ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
            if kind == SETUP:
                self._start(ctx.run_id, params)
            with self._lock:
                run = self._runs.get(ctx.run_id)
            if run is None:
                raise NotFound(f"no binning run {ctx.run_id!r} at {self.party!r}")
            reply = run[0].get(kind)(ctx, params)
            if kind in _FINAL:
                self._save(ctx.run_id, params, run[1])
            return reply

        return handle

    def _start(self, run_id: str, params: Mapping[str, JSONValue]) -> None:
        lenders = [str(x) for x in params.get("lenders") or []]  # type: ignore[union-attr]
        platform = params.get("platform")
        dataset = str(params["dataset"]) if params.get("dataset") else None
        psi_runs = params.get("psi_runs") or {}
        if not isinstance(psi_runs, Mapping):
            raise InvalidInput("binning: 'psi_runs' must map each lender to its PSI run")
        party: LenderBinning | PlatformBinning
        if self.party in lenders:
            party = LenderBinning(self.party, self._lender_data(dataset, psi_runs.get(self.party), platform),
                                  self.identity)
        elif platform == self.party:
            party = PlatformBinning(self.party, self._platform_data(dataset, lenders, psi_runs), self.identity)
        else:
            raise InvalidInput(f"binning run {run_id!r} does not name {self.party!r} as a lender or the platform")
        reg = HandlerRegistry()
        party.register(reg)
        with self._lock:
            self._runs[run_id] = (reg, party)

    def _lender_data(self, dataset: str | None, psi_run: JSONValue, platform: JSONValue) -> LenderData:
        if platform:
            if not psi_run:
                raise InvalidInput(f"binning with a platform needs {self.party!r}'s PSI run with it")
            t = self.source.vertical_table(str(psi_run), dataset, labels=True, onehot=False)
            info = self.store.dataset_info(t.dataset)
            assert t.y is not None
            return LenderData(_frame(info, t.features, t.X), np.asarray(t.y, dtype=np.int64),
                              {c: info.features[c] for c in t.features})
        name = self.source._dataset(dataset, labels=True)
        info = self.store.dataset_info(name)
        cols = list(info.federation_columns)
        if not cols:
            raise InvalidInput(f"dataset {name!r} has no columns whitelisted for the federation")
        ids, X = self.store.feature_matrix(name, cols, purpose="training")
        lids, y = self.store.labels(name, purpose="training")
        _, xi, yi = np.intersect1d(ids, lids, return_indices=True)
        return LenderData(_frame(info, cols, X[xi]), y[yi].astype(np.int64), {c: info.features[c] for c in cols})

    def _platform_data(self, dataset: str | None, lenders: list[str], psi_runs: Mapping[str, Any]) -> PlatformData:
        tables: dict[str, pd.DataFrame] = {}
        kinds: dict[str, str] = {}
        for lender in lenders:
            if not psi_runs.get(lender):
                raise InvalidInput(f"binning: no PSI run of lender {lender!r} with the platform")
            t = self.source.vertical_table(str(psi_runs[lender]), dataset, labels=False, onehot=False)
            info = self.store.dataset_info(t.dataset)
            tables[lender] = _frame(info, t.features, t.X)
            kinds = {c: info.features[c] for c in t.features}
        return PlatformData(tables, kinds)

    def _save(self, run_id: str, params: Mapping[str, JSONValue], party: LenderBinning | PlatformBinning) -> None:
        with self._lock:
            self._runs.pop(run_id, None)
        body = {"run_id": run_id, "party": self.party, "role": party.role,
                "features": detail_to_dict(party.detail(run_id))}
        path = self.home / BINNING_DIR / f"{run_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        with replacing(path) as fh:
            fh.write(json.dumps(body, indent=2, sort_keys=True))


def load_result(home: Path, run_id: str | None = None) -> dict[str, Any]:
    """This party's detail of binning run ``run_id`` (default: the newest)."""
    folder = Path(home) / BINNING_DIR
    files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if run_id is not None:
        files = [p for p in files if p.stem == run_id]
    if not files:
        raise NotFound(f"no binning run {run_id or ''} in {folder}".replace("  ", " "))
    data: dict[str, Any] = json.loads(files[-1].read_text())
    return data


def register_binning_handlers(registry: HandlerRegistry, store: Store, alignment: StoreAlignment, home: Path,
                              party: str, identity: PartyIdentity) -> NodeBinning:
    """Install the ``binning.*`` handlers (call from ``build_registry``)."""
    nb = NodeBinning(store, alignment, home, party, identity)
    nb.register(registry)
    return nb
