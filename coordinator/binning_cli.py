"""``fedcredit coordinator binning``: federated binning, WOE and IV across parties (the IV table)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .config import load_coordinator_config

Home = Annotated[
    Path,
    typer.Option("--home", help="The coordinator's home folder (env FEDCREDIT_COORDINATOR_HOME).",
                 envvar="FEDCREDIT_COORDINATOR_HOME"),
]


def binning_command(
    parties: Annotated[str, typer.Option(help="Comma-separated lenders and (optionally) the platform.")],
    home: Home = Path("."),
    method: Annotated[str, typer.Option(help="quantile (equal-frequency) or optimal (monotone, merged).")] = "optimal",
    bins: Annotated[int | None, typer.Option(min=2, help="quantile: bins per feature; optimal: most bins.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset at each party (default: its labelled one).")] = None,
    psi_runs: Annotated[str, typer.Option(help="Existing alignments, LENDER=PSI_RUN,... (default: run PSI).")] = "",
    min_lenders: Annotated[int | None, typer.Option(min=1, help="Fewest lenders for platform features (2).")] = None,
    min_iv: Annotated[float, typer.Option(help="IV threshold of the feature selection.")] = 0.02,
) -> None:
    """Bin every party's features and print IV per feature per party; each party keeps its own bins,
    counts and WOE (`fedcredit party binning show`)."""
    from .admin_client import AdminClient
    from .cli import _table, follow_run

    params: dict[str, Any] = {"parties": [p.strip() for p in parties.split(",") if p.strip()], "method": method,
                              "min_iv": min_iv}
    for key, value in (("bins", bins), ("dataset", dataset), ("min_lenders", min_lenders)):
        if value is not None:
            params[key] = value
    if psi_runs:
        params["psi_runs"] = dict(item.split("=", 1) for item in psi_runs.split(","))
    with AdminClient(load_coordinator_config(home)) as client:
        result = follow_run(client.start_run("binning", params))
    selected = set(result.get("selected", []))
    rows = [(str(r["party"]), str(r["feature"]), f"{float(r['iv']):.4f}", str(r["n_bins"]),
             "yes" if f"{r['party']}:{r['feature']}" in selected else "")
            for r in result.get("table", [])]
    _table(("party", "feature", f"IV ({result.get('method')})", "bins", f"IV >= {min_iv:g}"), rows)
    typer.echo(f"binning run {result['run_id']}: {len(selected)} of {len(rows)} features selected by IV")
