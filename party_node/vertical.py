"""Party side of vertical training (:mod:`fedcore.protocol.vertical`) on the node's local store.

:class:`StoreVerticalSource` reads this party's side of a committed PSI run: the alignment table gives
the row ids in the joint order, the store gives the whitelisted (federation) columns of the dataset
and, at a lender, the labels, for subjects that consented to training. The protocol handlers keep
per-epoch checkpoints under ``HOME/vertical/<run_id>/epoch-<n>.json`` (the last two) and write the final slice to
``HOME/models/<run_id>/slice.json``. What leaves the node is listed in the protocol's docstring: only
envelope-sealed or masked ciphertexts, masked sums, row counts, feature names and data hashes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedcore.errors import InvalidInput
from fedcore.protocol.sealing import PartyIdentity
from fedcore.protocol.tasks import HandlerRegistry
from fedcore.protocol.vertical.party import VerticalParty
from fedcore.protocol.vertical.session import Table
from models.metrics import evaluate

from .alignment import StoreAlignment
from .store import Store


class StoreVerticalSource:
    """A :class:`~fedcore.protocol.vertical.VerticalSource` over a :class:`Store` and its alignments."""

    def __init__(self, store: Store, alignment: StoreAlignment, home: Path | None = None) -> None:
        self.store = store
        self.alignment = alignment
        self.home = home

    def _dataset(self, dataset: str | None, labels: bool) -> str:
        """The named dataset, else this party's only (labelled) one; at a party without labels a dataset
        derived with ``--with BASE`` (:mod:`party_node.snapshot_derive`) stands in for BASE."""
        if dataset:
            return dataset
        names = [d for d in self.store.datasets() if not labels or self.store.dataset_info(d).has_labels]
        if not labels and len(names) > 1:  # a derived dataset that copies its base stands in for it
            bases = {self.store.dataset_info(d).schema.get("derived", {}).get("with") for d in names}
            names = [d for d in names if d not in bases]
        if len(names) != 1:
            what = "labelled datasets" if labels else "datasets"
            raise InvalidInput(
                f"this party has {len(names)} {what} ({', '.join(names) or 'none'}); name one with 'dataset'"
            )
        return names[0]

    def vertical_table(self, psi_run: str, dataset: str | None, *, labels: bool, onehot: bool = True,
                       encoding: str = "onehot", binning_run: str | None = None,
                       min_iv: float | None = None) -> Table:
        """This party's side of the PSI run; categorical columns one-hot encoded (``onehot``, the default
        for the logistic model) or as the store's codes; with ``encoding="woe"`` every column as the WOE
        of its bin in this party's result of federated binning run ``binning_run`` (only the features
        with at least ``min_iv`` IV in it, when given)."""
        t = self._table(psi_run, dataset, labels=labels)
        if encoding == "woe":
            from .woe_encoding import woe_table  # imports party_node.binning, which imports this module

            if self.home is None or not binning_run:
                raise InvalidInput("WOE encoding needs the node's home and a binning run")
            return woe_table(self.store, self.home, t, binning_run, min_iv)
        return onehot_table(self.store, t, shared=labels) if onehot else t

    def _table(self, psi_run: str, dataset: str | None, *, labels: bool) -> Table:
        name = self._dataset(dataset, labels)
        info = self.store.dataset_info(name)
        columns = list(info.federation_columns)
        if not columns:
            raise InvalidInput(f"dataset {name!r} has no columns whitelisted for the federation")
        rows = self.alignment.aligned_row_ids(psi_run)
        ids, X = self.store.feature_matrix(name, columns, purpose="training", row_ids=rows)
        pos = _positions(rows, ids, f"dataset {name!r} (PSI run {psi_run!r})")
        y = None
        if labels:
            lids, lab = self.store.labels(name, purpose="training", row_ids=rows)
            y = lab[_positions(rows, lids, f"labels of dataset {name!r} (PSI run {psi_run!r})")].astype(np.int8)
        return Table(np.asarray(X[pos], dtype=np.float64), columns, name, y)


MIN_LEVEL_SHARE = 0.01  # rarer levels are merged with the unseen ones (all indicators zero)
MAX_LEVELS = 30


def onehot_levels(codes: np.ndarray) -> list[float]:
    """The level codes that get an indicator: at least :data:`MIN_LEVEL_SHARE` of the rows, not the
    unseen code 0, most frequent first, the most frequent (the reference) left out."""
    values, counts = np.unique(codes, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    kept = [float(values[i]) for i in order if counts[i] >= MIN_LEVEL_SHARE * len(codes) and values[i] != 0]
    return kept[1:MAX_LEVELS + 1]


def onehot_table(store: Store, t: Table, *, shared: bool = False) -> Table:
    """``t`` with each categorical column replaced by indicators of its levels: those with at least
    :data:`MIN_LEVEL_SHARE` of the dataset's training rows (at most :data:`MAX_LEVELS`), the most
    frequent one left out as the reference. Rare, missing-as-rare and unseen levels have every indicator
    zero. The levels come from the whole dataset, so every PSI run of a party encodes alike.

    ``shared`` (the lenders' common schema): every lender must encode alike without seeing the others'
    data, so a column is one-hot only with a declared ``vocabulary`` (indicators for every declared level
    but the first), and stays as codes otherwise."""
    info = store.dataset_info(t.dataset)
    declared = {c["name"]: c.get("vocabulary") for c in info.schema.get("categorical", [])}
    if not any(info.features[c] == "categorical" for c in t.features):
        return t
    cols: list[np.ndarray] = []
    names: list[str] = []
    spec: list[tuple[int, float | None]] = []
    for j, c in enumerate(t.features):
        if info.features[c] != "categorical":
            cols.append(t.X[:, j])
            names.append(c)
            spec.append((j, None))
            continue
        vocab = info.vocabularies[c]
        if shared:
            levels = declared.get(c)
            if not levels:
                cols.append(t.X[:, j])
                names.append(c)
                spec.append((j, None))
                continue
            for level in levels[1:]:  # a level this lender never stored gets code -1: never set
                code = float(vocab.index(level)) if level in vocab else -1.0
                cols.append((t.X[:, j] == code).astype(np.float64))
                names.append(f"{c}={level}")
                spec.append((j, code))
            continue
        _, full = store.feature_matrix(t.dataset, [c], purpose="training")
        for code in onehot_levels(full[:, 0]):
            cols.append((t.X[:, j] == code).astype(np.float64))
            names.append(f"{c}={vocab[int(code)]}")
            spec.append((j, code))
    X = np.column_stack(cols) if cols else np.zeros((len(t.X), 0))
    return Table(X, names, t.dataset, t.y, base_features=list(t.features), columns=spec)


def _positions(rows: np.ndarray, ids: np.ndarray, what: str) -> np.ndarray:
    """Index into ``ids`` (sorted) for each of ``rows`` (joint order); every row must be present."""
    idx = np.searchsorted(ids, rows)
    ok = (idx < len(ids)) & (ids[np.minimum(idx, max(len(ids) - 1, 0))] == rows) if len(ids) else np.zeros(
        len(rows), dtype=bool)
    if not np.all(ok):
        raise InvalidInput(
            f"{what}: {int((~ok).sum())} of {len(rows)} aligned subjects have no row with training consent"
            " (consent withdrawn or data deleted since the PSI run); run PSI again"
        )
    return np.asarray(idx)


def register_vertical_handlers(
    registry: HandlerRegistry, store: Store, alignment: StoreAlignment, home: Path, party: str,
    identity: PartyIdentity,
) -> VerticalParty:
    """Install the ``vertical.*`` handlers for party ``party`` (call from ``build_registry``)."""
    vp = VerticalParty(
        party,
        StoreVerticalSource(store, alignment, Path(home)),
        state_dir=Path(home) / "vertical",
        model_dir=Path(home) / "models",
        metrics=evaluate,
        identity=identity,
    )
    vp.register(registry)
    return vp
