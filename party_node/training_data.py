"""Training data for horizontal runs, read from the party's own store: whitelisted features of the
subjects that consented to training, with their labels, split into train and validation. Categorical
columns with a declared vocabulary enter as level indicators (:mod:`party_node.horizontal_encoding`);
``fc-encoding = "codes"`` (tree models, which split on codes) keeps the store's codes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from fedcore.errors import InvalidInput
from fedcore.protocol.horizontal.env import DataSplit, stratified_split

from .horizontal_encoding import apply_encoding, onehot_encoding
from .store import Store


def store_data_provider(store: Store) -> Any:
    def provide(run_params: Mapping[str, Any]) -> DataSplit:
        dataset = str(run_params.get("fc-dataset") or "")
        if not dataset:
            labelled = [d for d in store.datasets() if store.dataset_info(d).has_labels]
            if len(labelled) != 1:
                raise InvalidInput(
                    f"this party has {len(labelled)} labelled datasets ({', '.join(labelled) or 'none'});"
                    " name one with --dataset"
                )
            dataset = labelled[0]
        info = store.dataset_info(dataset)
        columns = list(info.federation_columns)
        if not columns:
            raise InvalidInput(f"dataset {dataset!r} has no columns whitelisted for the federation")
        ids, X = store.feature_matrix(dataset, columns, purpose="training")
        lids, y = store.labels(dataset, purpose="training")
        common, xi, yi = np.intersect1d(ids, lids, return_indices=True)
        if len(common) < 10:
            raise InvalidInput(f"dataset {dataset!r} has only {len(common)} labelled rows with training consent")
        X, yv = X[xi].astype(np.float64), y[yi].astype(np.int64)
        names = columns
        if run_params.get("fc-encoding", "onehot") != "codes":
            enc = onehot_encoding(info, columns)
            X, names = apply_encoding(enc, X, columns), [n for n, _, _ in enc]
        tr, va = stratified_split(yv, float(run_params.get("fc-val-fraction", 0.2)), int(run_params.get("fc-seed", 0)))
        return X[tr], yv[tr], X[va], yv[va], names

    return provide
