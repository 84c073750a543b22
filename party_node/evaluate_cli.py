"""``fedcredit party evaluate MODEL --file holdout.csv`` (see :mod:`party_node.evaluate`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated

import typer

Home = Annotated[
    Path,
    typer.Option("--home", help="The party's home folder (env FEDCREDIT_HOME).", envvar="FEDCREDIT_HOME"),
]


def evaluate_command(
    model: Annotated[str, typer.Argument(help="The model (its training run id).")],
    file: Annotated[Path, typer.Option("--file", help="This lender's labelled CSV: id, label, features.")],
    home: Home = Path("."),
    label_column: Annotated[str, typer.Option(help="The label column (0/1 or declared text).")] = "y",
    id_column: Annotated[str, typer.Option(help="The id column.")] = "id",
    kind: Annotated[str, typer.Option(help="Id kind: phone, national_id or opaque.")] = "opaque",
    version: Annotated[str | None, typer.Option(help="Horizontal: the model version (default: newest).")] = None,
    label_bad: Annotated[list[str] | None, typer.Option(help="Text label values meaning default (repeat).")] = None,
    label_good: Annotated[list[str] | None, typer.Option(help="Text label values meaning repaid (repeat).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write id, label, prob_default per row to this CSV.")] = None,
) -> None:
    """Evaluate a model on this lender's own labelled file: AUC, KS, Gini, bad rate at 80% approval.
    Horizontal models are scored here; joint models through joint scoring."""
    from fedcore.files import replacing

    from .config import load_party_config
    from .data_cli import open_store
    from .evaluate import evaluate_file
    from .scoring import build_service

    config = load_party_config(home)
    store = open_store(config.home, None)
    try:
        ev = evaluate_file(config.home, store, lambda: build_service(config, store), model, file,
                           id_column=id_column, label_column=label_column, kind=kind, version=version,
                           label_bad=tuple(label_bad or ()), label_good=tuple(label_good or ()))
    finally:
        store.close()
    if out is not None:
        with replacing(out) as f:
            w = csv.writer(f)
            w.writerow(["id", "label", "prob_default"])
            for i, yv, pv in zip(ev.ids, ev.y.tolist(), ev.p.tolist(), strict=True):
                w.writerow([i, yv, repr(float(pv))])
    typer.echo(json.dumps(ev.summary(), sort_keys=True))
