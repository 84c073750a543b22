"""``coordinator train --run-config FILE.toml``: every training parameter in one file (as ``flwr run
--run-config`` takes one), command-line options given explicitly win.

Top-level keys are the ``train`` options (``parties`` as a list or a comma string, ``kind``, ``model``,
``rounds``, ``lr``, ``dataset``, ``batch_size``, ``strategy``, ``secure``, ``min_parties``, ``local_epochs``,
``psi_runs`` as a table, ``val_fraction``, ``seed``, ``encoding``, ``binning_run``); a ``[gbdt]`` table
holds the tree parameters (:class:`models.gbdt.params.GBDTParams` names: ``n_trees``, ``max_depth``,
``learning_rate``, ``max_bins``,
``min_child_weight``, ``reg_lambda``, ``monotone`` as a table of +1/-1, ``early_stopping_rounds``, ...)::

    parties = ["yixin", "tiange"]
    kind = "vertical"
    model = "gbdt"
    [gbdt]
    n_trees = 50
    max_depth = 4
    monotone = { arrears = 1 }
"""

from __future__ import annotations

import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from fedcore.errors import InvalidInput
from models.gbdt.params import GBDTParams

TOP_KEYS = {
    "parties", "kind", "model", "rounds", "lr", "dataset", "batch_size", "strategy", "secure", "min_parties",
    "local_epochs", "psi_runs", "val_fraction", "seed", "gbdt", "dp_noise", "dp_clip", "encoding", "binning_run",
}  # fmt: skip
GBDT_KEYS = {f.name for f in fields(GBDTParams)} - {"sticky_owners", "first_tree_owners"}


def load_run_config(path: Path) -> dict[str, Any]:
    """The file's parameters; InvalidInput naming the file and the key (or TOML line) that is wrong."""
    try:
        text = path.read_text()
    except OSError as e:
        raise InvalidInput(f"run config {path}: cannot read it ({e.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InvalidInput(f"run config {path}: not valid TOML ({e})") from None
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise InvalidInput(f"run config {path}: unknown key(s) {unknown} (known: {sorted(TOP_KEYS)})")
    gbdt = data.get("gbdt", {})
    if not isinstance(gbdt, dict):
        raise InvalidInput(f"run config {path}: 'gbdt' must be a table")
    bad = sorted(set(gbdt) - GBDT_KEYS)
    if bad:
        raise InvalidInput(f"run config {path}: unknown key(s) {bad} in [gbdt] (known: {sorted(GBDT_KEYS)})")
    parties = data.get("parties")
    if isinstance(parties, str):
        data["parties"] = [p.strip() for p in parties.split(",") if p.strip()]
    elif parties is not None and not (isinstance(parties, list) and all(isinstance(p, str) for p in parties)):
        raise InvalidInput(f"run config {path}: 'parties' must be a list of party names")
    try:
        GBDTParams.from_dict(dict(gbdt))
    except (InvalidInput, TypeError) as e:
        raise InvalidInput(f"run config {path}: [gbdt] {e}") from None
    return data
