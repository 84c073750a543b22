"""``fedcredit party scorecard MODEL``: the points table of this party's features (see :mod:`party_node.scorecard`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Home = Annotated[
    Path,
    typer.Option("--home", help="The party's home folder (env FEDCREDIT_HOME).", envvar="FEDCREDIT_HOME"),
]


def scorecard_command(
    model: Annotated[str, typer.Argument(help="The joint model (its training run id).")],
    home: Home = Path("."),
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    out: Annotated[Path | None, typer.Option(help="Write the table to this file (default: stdout).")] = None,
    binning: Annotated[str | None, typer.Option(help="Numeric bins of this binning run (default: newest).")] = None,
    bins: Annotated[int, typer.Option(help="Quantile bins per numeric feature without a stored binning.")] = 10,
    digits: Annotated[int | None, typer.Option(help="Round points to this many digits.")] = None,
) -> None:
    """The scorecard of a joint logistic model for this party's own features: points per feature and
    bin, base points at the label holder, scaled by the scoring settings (base_score, base_odds, pdo)."""
    from fedcore.errors import InvalidInput
    from fedcore.files import replacing

    from .config import load_party_config
    from .data_cli import open_store
    from .scorecard import party_scorecard, scorecard_from_settings
    from .scoring import load_settings

    if fmt not in ("csv", "json"):
        raise InvalidInput(f"--format must be csv or json, got {fmt!r}")
    config = load_party_config(home)
    settings = load_settings(config.home)
    store = open_store(config.home, None)
    try:
        card = party_scorecard(config.home, store, model, scorecard_from_settings(settings),
                               binning_run=binning, n_bins=bins, digits=digits)
    finally:
        store.close()
    text = card.to_csv() if fmt == "csv" else card.to_json() + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        with replacing(out) as f:
            f.write(text)
        typer.echo(f"wrote {len(card.table.rows)} rows of {len(card.exact)} features to {out}")
