"""Party side of hybrid tree training (:mod:`fedcore.protocol.trees`) on the node's local store.

The ``trees.setup`` task names the committed PSI run of each lender with the platform (``data.psi_runs``),
the dataset, the validation fraction and seed. A lender reads its aligned whitelisted columns and labels
(:class:`~party_node.vertical.StoreVerticalSource`, subjects with training consent only) and holds out the
same validation rows as vertical training (:func:`~fedcore.protocol.vertical.numerics.split_rows`); the
platform reads its aligned columns for each lender. On ``trees.finish`` each party writes what it keeps
to ``HOME/models/<run_id>/gbdt.json``: a lender the released model (trees with opaque splits, leaf
values, the lender rules and gain importance), the platform its own split rules and gain importance.
What leaves the node is listed in the protocol's docstring.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedcore.errors import InvalidInput, ProtocolError
from fedcore.partitions import LOCAL, RowCompute
from fedcore.protocol.horizontal_trees import messages as hmsg
from fedcore.protocol.horizontal_trees.party import LenderHTreeParty
from fedcore.protocol.messages import JSONValue, TaskReply
from fedcore.protocol.sealing import PartyIdentity
from fedcore.protocol.tasks import HandlerRegistry, TaskContext
from fedcore.protocol.trees.messages import FINISH, KINDS, LENDERS_OWNER, SETUP
from fedcore.protocol.trees.party import LenderTreeParty, PlatformTreeParty
from fedcore.protocol.vertical.numerics import split_rows
from fedcore.protocol.vertical.party import VALIDATION_HIST
from models import histograms as hm

from .alignment import StoreAlignment
from .store import Store
from .training_data import store_data_provider
from .vertical import StoreVerticalSource

MODEL_FILE = "gbdt.json"
MODEL_KIND = "hybrid-gbdt"


class StoreTreeParty:
    """Builds this party's protocol object from the store at ``trees.setup`` and routes every later task
    of the run to it (one tree run at a time per node)."""

    KINDS: tuple[str, ...] = KINDS
    SETUP_KIND, FINISH_KIND = SETUP, FINISH
    MODEL_KIND = MODEL_KIND

    def __init__(self, name: str, store: Store, alignment: StoreAlignment, home: Path, identity: PartyIdentity,
                 compute: RowCompute = LOCAL) -> None:  # fmt: skip
        self.name = name
        self.store = store
        self.compute = compute  # where node histograms run: this process or the party's Ray cluster
        self.source = StoreVerticalSource(store, alignment)
        self.model_dir = Path(home) / "models"
        self.identity = identity
        self._lock = threading.Lock()
        self._party: LenderTreeParty | PlatformTreeParty | None = None
        self._inner = HandlerRegistry()
        self._run: dict[str, Any] = {}

    def register(self, registry: HandlerRegistry) -> None:
        for kind in self.KINDS:
            registry.register(kind, self._handler(kind))

    def _handler(self, kind: str) -> Any:
        def handle(ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
            if kind == self.SETUP_KIND:
                self._setup(params)
            with self._lock:
                inner, run = self._inner, dict(self._run)
            if run.get("run_id") != params.get("run_id"):
                raise ProtocolError(f"party {self.name!r}: no tree run {params.get('run_id')!r} was set up here")
            reply = inner.get(kind)(ctx, params)
            if kind == self.FINISH_KIND:
                self._save(run)
            return reply

        return handle

    def _setup(self, params: Mapping[str, JSONValue]) -> None:
        data = params.get("data")
        if not isinstance(data, Mapping):
            raise InvalidInput(f"party {self.name!r}: tree setup names no PSI runs ('data.psi_runs')")
        psi_runs = data.get("psi_runs")
        lenders = [str(x) for x in params.get("lenders", [])]  # type: ignore[union-attr]
        if params.get("leader") is not None:
            psi_runs = {}  # horizontal: no alignment
        elif not isinstance(psi_runs, Mapping) or any(x not in psi_runs for x in lenders):
            raise InvalidInput(f"party {self.name!r}: tree setup needs a PSI run for every lender {lenders}")
        dataset = str(data["dataset"]) if data.get("dataset") else None
        seed, val_fraction = int(data.get("seed", 0)), float(data.get("val_fraction", 0.2))  # type: ignore[arg-type]
        party: LenderTreeParty | PlatformTreeParty
        if params.get("leader") is not None:  # horizontal trees: this lender's own labelled rows
            split = store_data_provider(self.store)({"fc-dataset": dataset or "", "fc-val-fraction": val_fraction,
                                                     "fc-seed": seed, "fc-encoding": "codes"})  # fmt: skip
            xtr, ytr, xva, yva, names = split
            xs, yy = np.vstack([xtr, xva]), np.concatenate([ytr, yva]).astype(np.float64)
            mask = np.arange(len(yy)) >= len(ytr)
            info_name = dataset or next(d for d in self.store.datasets() if self.store.dataset_info(d).has_labels)
            party = LenderHTreeParty(self.name, {f: xs[:, j] for j, f in enumerate(names)}, yy, self.identity, mask,
                                     categorical=self._levels(info_name, names))  # fmt: skip
            role, name, features = "lender", info_name, list(names)
        elif self.name in lenders:
            t = self.source.vertical_table(str(psi_runs[self.name]), dataset, labels=True, onehot=False)
            assert t.y is not None
            mask = np.zeros(len(t.y), dtype=bool)
            mask[split_rows(len(t.y), val_fraction, seed, lenders.index(self.name))[1]] = True
            cols = {f: t.X[:, j] for j, f in enumerate(t.features)}
            party = LenderTreeParty(self.name, cols, t.y.astype(np.float64), self.identity, val_mask=mask,
                                    categorical=self._levels(t.dataset, cols), compute=self.compute)  # fmt: skip
            role, name, features = "lender", t.dataset, list(t.features)
        elif params.get("platform") == self.name:
            tables: dict[str, dict[str, np.ndarray]] = {}
            for lender in lenders:
                t = self.source.vertical_table(str(psi_runs[lender]), dataset, labels=False, onehot=False)
                tables[lender] = {f: t.X[:, j] for j, f in enumerate(t.features)}
            info = self.store.dataset_info(t.dataset)
            cats = [f for f, dtype in info.features.items() if dtype == "categorical" and f in tables[lenders[0]]]
            party = PlatformTreeParty(self.name, tables, self.identity, categorical=cats, compute=self.compute)
            role, name, features = "platform", t.dataset, list(t.features)
        else:
            raise InvalidInput(f"party {self.name!r} is neither a lender nor the platform of tree run")
        inner = HandlerRegistry()
        party.register(inner)
        with self._lock:
            self._party, self._inner = party, inner
            self._run = {
                "run_id": params.get("run_id"),
                "model_id": params.get("run_id"),
                "role": role,
                "seed": seed,
                "val_fraction": val_fraction,
                "version": str(data.get("version", "1")),
                "dataset": name,
                "features": features,
            }

    def _levels(self, dataset: str, names: Any) -> dict[str, list[str]]:
        """The categorical features among ``names``: their columns hold codes into these levels."""
        info = self.store.dataset_info(dataset)
        return {f: info.vocabularies[f] for f, kind in info.features.items() if kind == "categorical" and f in names}

    def _save(self, run: Mapping[str, Any]) -> None:
        party = self._party
        doc: dict[str, Any] = {"party": self.name, "kind": self.MODEL_KIND, **run}
        if isinstance(party, LenderTreeParty):
            if party.model is None:
                raise ProtocolError(f"party {self.name!r}: the tree run finished without a model")
            doc["model"] = party.model.to_dict(owners=[LENDERS_OWNER])
            doc["metrics"] = party.metrics
            if self.MODEL_KIND == MODEL_KIND and party.val.any():  # counts per score bin for `coordinator report`
                y_val = party.y[party.val]
                hist = {"val": hm.histogram(y_val, party.val_proba).to_params(), "n_val": len(y_val)}
                self._write(self.model_dir / str(run["run_id"]) / VALIDATION_HIST, hist)
        elif isinstance(party, PlatformTreeParty):
            doc["table"] = party.table.to_dict()
            doc["importance"] = party.importance
            doc["shapes"] = [t.to_dict() for t in party.shapes]
            doc["owners"] = list(party.owners)
        self._write(self.model_dir / str(run["run_id"]) / MODEL_FILE, doc)

    @staticmethod
    def _write(path: Path, doc: Mapping[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, path)


class StoreHTreeParty(StoreTreeParty):
    """The same for horizontal trees (``htrees.*``): the lender's labelled rows with training consent."""

    KINDS = hmsg.KINDS
    SETUP_KIND, FINISH_KIND = hmsg.SETUP, hmsg.FINISH
    MODEL_KIND = "horizontal-gbdt"


def register_tree_handlers(
    registry: HandlerRegistry,
    store: Store,
    alignment: StoreAlignment,
    home: Path,
    party: str,
    identity: PartyIdentity,
    compute: RowCompute = LOCAL,
) -> StoreTreeParty:
    """Install the ``trees.*`` handlers for party ``party`` (call from ``build_registry``); ``compute``: where
    the hybrid trees' node histograms run (:func:`party_node.compute.row_compute`)."""
    tp = StoreTreeParty(party, store, alignment, home, identity, compute)
    tp.register(registry)
    StoreHTreeParty(party, store, alignment, home, identity).register(registry)
    return tp
