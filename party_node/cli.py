"""``fedcredit party ...``: the party operator's commands."""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Annotated

import typer

from fedcore.errors import NotFound
from fedcore.logs import setup_logging

from .binning_cli import app as binning_app
from .config import load_party_config
from .data_cli import app as data_app
from .monitoring_cli import app as monitor_app
from .scoring_cli import app as scoring_app
from .snapshot_cli import app as snapshot_app

app = typer.Typer(help="Run a party node and manage its data.", no_args_is_help=True)
app.add_typer(data_app)
app.add_typer(scoring_app)
app.add_typer(monitor_app, name="monitor")
app.add_typer(snapshot_app, name="snapshot")
app.add_typer(binning_app)


def _mount() -> None:
    from .evaluate_cli import evaluate_command
    from .importance_cli import importance_command
    from .scorecard_cli import scorecard_command

    app.command("evaluate")(evaluate_command)
    app.command("scorecard")(scorecard_command)
    app.command("importance")(importance_command)


_mount()

Home = Annotated[
    Path,
    typer.Option("--home", help="The party's home folder (env FEDCREDIT_HOME).", envvar="FEDCREDIT_HOME"),
]


@app.command()
def init(
    name: Annotated[str, typer.Option(help="This party's name in the federation, e.g. yixin.")],
    home: Home = Path("."),
) -> None:
    """Create this node's private key and a certificate signing request for the admin."""
    from .home import init_home

    csr = init_home(home, name)
    typer.echo(f"created key and CSR for {name}; send {csr} to the coordinator admin")


@app.command("install-kit")
def install_kit(
    kit: Annotated[Path, typer.Argument(help="The startup kit folder the admin returned.")],
    home: Home = Path("."),
) -> None:
    """Install the admin's startup kit (checked against this node's key)."""
    from .home import install_kit as do_install

    config = do_install(home, kit)
    typer.echo(f"installed startup kit for {config.party.name}; coordinator at {config.coordinator.address}")


@app.command()
def serve(home: Home = Path(".")) -> None:
    """Run the node: dial out to the coordinator and serve tasks until SIGINT/SIGTERM."""
    config = load_party_config(home)
    setup_logging(config.log.level, config.log.json_format or None)
    from .node import PartyNode

    node = PartyNode(config)
    # start-up objects (modules, handlers, store) live as long as the process: out of the collector's
    # sight, so that full collections while serving requests do not walk them again
    gc.collect()
    gc.freeze()
    node.serve_forever()


@app.command()
def status(home: Home = Path(".")) -> None:
    """Show the node's link status (as written by the running node) and its data summary."""
    from .node import STATUS_FILE, data_summary

    config = load_party_config(home)
    path = config.home / STATUS_FILE
    if not path.is_file():
        raise NotFound(f"{path} does not exist: the node has not run yet")
    st = json.loads(path.read_text())
    age = time.time() - st.get("updated", 0)
    state = "connected" if st.get("connected") else "not connected"
    typer.echo(f"party {config.party.name}: {state} to {st.get('coordinator')} (status {age:.0f}s old)")
    if st.get("role"):
        typer.echo(
            f"role: {st['role']}; tasks done {st.get('tasks_done', 0)}, failed {st.get('tasks_failed', 0)}"
        )
    if st.get("last_error"):
        typer.echo(f"last error: {st['last_error']}")
    for t in data_summary(config).tables:
        typer.echo(
            f"dataset {t.name}: {t.rows} rows, {len(t.features)} federation features"
            + (", labelled" if t.has_labels else "")
        )
