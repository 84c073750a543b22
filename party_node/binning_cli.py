"""``fedcredit party binning show``: this party's own features after a federated binning run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .config import load_party_config

app = typer.Typer(name="binning", help="Results of federated binning runs (own features only).",
                  no_args_is_help=True)

Home = Annotated[
    Path,
    typer.Option("--home", help="The party's home folder (env FEDCREDIT_HOME).", envvar="FEDCREDIT_HOME"),
]


@app.command()
def show(
    run_id: Annotated[str | None, typer.Argument(help="The binning run (default: the newest).")] = None,
    home: Home = Path("."),
    method: Annotated[str, typer.Option(help="quantile or optimal bins.")] = "optimal",
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole detail as JSON.")] = False,
) -> None:
    """Bins, counts, WOE and IV of this party's features (another party's are never here)."""
    from fedcore.errors import InvalidInput

    from .binning import load_result

    if method not in ("quantile", "optimal"):
        raise InvalidInput(f"--method must be quantile or optimal, not {method!r}")
    data = load_result(load_party_config(home).home, run_id)
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    typer.echo(f"binning run {data['run_id']} at {data['party']} ({data['role']}), {method} bins")
    feats = sorted(data["features"].items(), key=lambda kv: -float(kv[1][f"iv_{method}"]))
    for name, f in feats:
        typer.echo(f"\n{name} ({f['kind']}): IV {float(f[f'iv_{method}']):.4f}")
        typer.echo(f"  {'bin':<28} {'events':>8} {'non-events':>10} {'bad rate':>8} {'WOE':>8} {'IV':>7}")
        for b in f[method]["bins"]:
            n = b["events"] + b["nonevents"]
            if n == 0:
                continue
            typer.echo(f"  {b['bin'][:28]:<28} {b['events']:>8} {b['nonevents']:>10} {b['events'] / n:>8.3f}"
                       f" {b['woe']:>8.3f} {b['iv']:>7.4f}")
