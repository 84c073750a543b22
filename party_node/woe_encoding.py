"""WOE encoding of a party's side of a joint logistic model (``coordinator train --kind vertical
--encoding woe``): every feature enters as the WOE of its bin in a federated binning run
(:mod:`fedcore.protocol.binning`), from the optimal bins and WOE that run left at THIS party
(``HOME/binning/<run_id>.json``). A lender's shared features carry the lenders' pooled WOE; the
platform's features the WOE of counts pooled over all lenders (what that protocol lets it learn). No bin,
WOE or count leaves the party: the model slice keeps the encoding (binnings, WOE, the vocabularies of
the categorical columns) so that scoring maps stored values and raw levels the same way, and the
classic scorecard (points per feature and bin) follows from it exactly (:mod:`party_node.scorecard`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedcore.errors import InvalidInput
from fedcore.protocol.vertical.session import Table
from models.binning import binning_from_dict
from models.encoding import StoredWoe, WoeEncoder

from .binning import load_result
from .store import Store

__all__ = ["woe_encoder", "woe_table"]


def woe_encoder(store: Store, home: Path, dataset: str, features: list[str], binning_run: str) -> StoredWoe:
    """This party's WOE encoding of ``features`` from binning run ``binning_run`` (NotFound when this
    party has no such run; InvalidInput naming a feature the run did not bin)."""
    res = load_result(Path(home), binning_run)
    detail: dict[str, Any] = res.get("features", {})
    info = store.dataset_info(dataset)
    binnings, woes = [], []
    for c in features:
        d = detail.get(c)
        if d is None:
            raise InvalidInput(f"feature {c!r} of dataset {dataset!r} is not in binning run {binning_run!r} at this"
                               f" party (it binned {', '.join(sorted(detail)) or 'nothing'}); run coordinator"
                               " binning on this dataset")
        binnings.append(binning_from_dict(d["optimal"]["binning"]))
        woes.append(tuple(float(b["woe"]) for b in d["optimal"]["bins"]))
    vocab = {c: list(info.vocabularies[c]) for c in features if info.features.get(c) == "categorical"}
    unseen = {str(c["name"]): str(c["unseen"]) for c in info.schema.get("categorical", [])
              if c.get("unseen") and c["name"] in vocab}
    return StoredWoe(WoeEncoder(tuple(binnings), tuple(woes)), vocab, unseen)


def woe_table(store: Store, home: Path, t: Table, binning_run: str) -> Table:
    """``t`` (stored values) with every column replaced by the WOE of its bin; the table records the
    encoding for the model slice."""
    enc = woe_encoder(store, home, t.dataset, list(t.features), binning_run)
    X = enc.transform(t.X)
    if np.isnan(X).any():
        raise InvalidInput(f"dataset {t.dataset!r}: missing values reached the WOE encoding")
    record = {"kind": "woe", "binning_run": binning_run, "encoder": enc.to_dict()}
    return Table(X, list(t.features), t.dataset, t.y, encoding=record)
