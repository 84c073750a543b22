"""``fedcredit party ingest`` and ``fedcredit party data ...``: the operator's data commands.

Mount with ``party_app.add_typer(data_cli.app)`` (no name: the commands join the ``party`` group):

* ``ingest FILE --schema SCHEMA.toml``  CSV or Parquet into the store, atomically, with a report
  (``--bulk``: a list, streamed into a staging table and merged in SQL: :mod:`party_node.list_ingest`)
* ``data summary``                      what this party registers (whitelisted names/types, counts)
* ``data whitelist DATASET [COLS...]``  show or set which feature columns the federation may use

Every command takes ``--home DIR`` (env ``FEDCREDIT_HOME``, default ``.``: the store URL comes from
``party.toml``) or ``--store URL`` (any SQLAlchemy URL; no config needed). The pseudonym key is read
from ``--key-file`` or ``HOME/keys/pseudonym.key`` when that file exists.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedcore.errors import FedcreditError

if TYPE_CHECKING:  # pandas, pyarrow and SQLAlchemy load only when a command runs (fast --help)
    from party_node.ingest import IngestReport
    from party_node.store import Store

app = typer.Typer(help="Ingest and inspect this party's local data.", no_args_is_help=True)
data_app = typer.Typer(help="Inspect this party's local data and its federation whitelist.", no_args_is_help=True)
app.add_typer(data_app, name="data")

Home = Annotated[
    Path,
    typer.Option("--home", help="The party's home folder (env FEDCREDIT_HOME).", envvar="FEDCREDIT_HOME"),
]
StoreUrl = Annotated[str | None, typer.Option("--store", help="A SQLAlchemy store URL (bypasses party.toml).")]
KeyFile = Annotated[
    Path | None, typer.Option("--key-file", help="Pseudonym key file (default HOME/keys/pseudonym.key).")
]


def _fail(exc: FedcreditError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


def open_store(home: Path, store_url: str | None, key_file: Path | None = None) -> Store:
    """The store of ``--store URL`` or of the party configured in ``HOME/party.toml``."""
    from party_node.pseudonym import PseudonymKey, default_key_path
    from party_node.store import Store

    if store_url is None:
        from party_node.config import load_party_config

        store_url = load_party_config(home).store_url()
    key: PseudonymKey | None = None
    path = key_file or default_key_path(home)
    if key_file is not None or path.is_file():
        key = PseudonymKey.load(path)
    return Store.open(store_url, pseudonym_key=key)


def _guarded(fn: Callable[[], None]) -> None:
    try:
        fn()
    except FedcreditError as exc:
        _fail(exc)


def format_report(r: IngestReport) -> str:
    lines = [
        f"ingested {r.file} into dataset {r.dataset!r} in {r.seconds:.1f} s: {r.rows_read} rows read, "
        f"{r.inserted} inserted, {r.updated} updated, {r.rejected} rejected"
    ]
    for rej in r.rejects:
        lines.append(f"  rejected {rej}")
    if r.rejected > len(r.rejects):
        lines.append(f"  ... and {r.rejected - len(r.rejects)} more rejected rows")
    return "\n".join(lines)


@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file.")],
    schema: Annotated[Path, typer.Option("--schema", help="The dataset schema TOML.")],
    home: Home = Path("."),
    store: StoreUrl = None,
    key_file: KeyFile = None,
    max_rejects: Annotated[
        int, typer.Option("--max-rejects", help="Fail if more rows than this are rejected (-1: no limit).")
    ] = 1000,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    bulk: Annotated[
        bool, typer.Option("--bulk", help="Bulk-load a list (id, consent, flags; tens of millions of rows).")
    ] = False,
) -> None:
    """Ingest FILE into the local store, atomically: on any error the store is left as it was."""

    def run() -> None:
        from party_node.ingest import ingest_file
        from party_node.list_ingest import check_list_schema, load_list
        from party_node.schema import load_schema

        sch = load_schema(schema)
        if bulk:
            check_list_schema(sch)
        load = load_list if bulk else ingest_file  # same arguments and report
        st = open_store(home, store, key_file)
        try:
            if quiet or not sys.stderr.isatty():
                report = load(st, file, sch, max_rejects=max_rejects)
            else:
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

                with Progress(
                    TextColumn("ingest {task.description}"),
                    BarColumn(),
                    TextColumn("{task.percentage:>3.0f}%"),
                    TimeElapsedColumn(),
                    transient=True,
                ) as bar:
                    task = bar.add_task(file.name, total=None)

                    def progress(done: int, total: int) -> None:
                        bar.update(task, completed=done, total=total)

                    report = load(st, file, sch, max_rejects=max_rejects, progress=progress)
        finally:
            st.close()
        typer.echo(json.dumps(asdict(report)) if as_json else format_report(report))

    _guarded(run)


@data_app.command("summary")
def summary(
    home: Home = Path("."),
    store: StoreUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """What this party registers: whitelisted feature names and types, row counts. No ids, no values."""

    def run() -> None:
        st = open_store(home, store)
        try:
            s = st.summary()
        finally:
            st.close()
        if as_json:
            typer.echo(json.dumps(asdict(s), indent=2))
            return
        if not s.tables:
            typer.echo("no datasets")
        for t in s.tables:
            labels = f", {t.label_rows} labelled" if t.has_labels else ""
            feats = ", ".join(f"{f.name}:{f.dtype}" for f in t.features) or "(none whitelisted)"
            typer.echo(f"{t.name}: {t.rows} rows{labels}; federation features: {feats}")

    _guarded(run)


@data_app.command("whitelist")
def whitelist(
    dataset: Annotated[str, typer.Argument(help="Dataset name.")],
    columns: Annotated[list[str] | None, typer.Argument(help="Set the whitelist to these feature columns.")] = None,
    add: Annotated[list[str] | None, typer.Option("--add", help="Add a column.")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="Remove a column.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Whitelist nothing.")] = False,
    home: Home = Path("."),
    store: StoreUrl = None,
) -> None:
    """Show or change which feature columns of DATASET the federation may use."""

    def run() -> None:
        st = open_store(home, store)
        try:
            info = st.dataset_info(dataset)
            cols = list(info.federation_columns)
            changed = bool(columns or add or remove or clear)
            if clear:
                cols = []
            if columns:
                cols = list(columns)
            cols += [c for c in add or [] if c not in cols]
            cols = [c for c in cols if c not in set(remove or [])]
            if changed:
                cols = st.set_whitelist(dataset, cols)
            typer.echo(f"{dataset}: federation columns: {', '.join(cols) or '(none)'}")
            others = [c for c in info.features if c not in cols]
            if others:
                typer.echo(f"  local only: {', '.join(others)}")
        finally:
            st.close()

    _guarded(run)
