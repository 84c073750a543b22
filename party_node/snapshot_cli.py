"""``fedcredit party snapshot load|dates|changes|derive``: dated snapshots in the party's store
(:mod:`party_node.snapshots`; an older date than the latest is refused, exit 1) and their change
features as a dataset (:mod:`party_node.snapshot_derive`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fedcore.errors import FedcreditError, InvalidInput

app = typer.Typer(help="Dated snapshots (behaviour over time) and their change features.", no_args_is_help=True)
Home = Annotated[
    Path, typer.Option("--home", help="The party's home folder (env FEDCREDIT_HOME).", envvar="FEDCREDIT_HOME")
]


def _fail(exc: FedcreditError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


@app.command("load")
def load(
    file: Annotated[Path, typer.Argument(help="CSV: one id column and numeric value columns.")],
    dataset: Annotated[str, typer.Option(help="Snapshot dataset name, e.g. behaviour.")],
    as_of: Annotated[str, typer.Option("--as-of", help="The snapshot's date, YYYY-MM-DD.")],
    id_column: Annotated[str, typer.Option("--id-column", help="The id column.")] = "id",
    kind: Annotated[str, typer.Option("--kind", help="Id kind: phone, national_id or opaque.")] = "phone",
    announce: Annotated[bool, typer.Option(
        help="The platform: tell the lenders (through the coordinator) a snapshot of this date is loaded, "
             "so those monitoring a book run a pass. Sends the date only.")] = False,
    home: Home = Path("."),
) -> None:
    """Add one dated snapshot (the same date again replaces it)."""
    import pandas as pd

    from .data_cli import open_store
    from .snapshots import Snapshots

    try:
        if not file.is_file():
            raise InvalidInput(f"{file} does not exist")
        try:
            frame = pd.read_csv(file, dtype={id_column: str})
        except (ValueError, OSError) as exc:
            raise InvalidInput(f"{file}: not a readable CSV ({exc})") from None
        if id_column not in frame.columns:
            raise InvalidInput(f"{file}: needs a column {id_column!r}")
        values = {}
        for col in frame.columns:
            if col == id_column:
                continue
            num = pd.to_numeric(frame[col], errors="coerce")
            bad = num.isna() & frame[col].notna()
            if bad.any():
                raise InvalidInput(f"{file}: row {int(bad.idxmax()) + 2}, column {col!r}: not a number")
            values[col] = num.to_numpy(dtype=float)
        store = open_store(home, None)
        try:
            rep = Snapshots(store).load(dataset, as_of, frame[id_column].astype(str).tolist(), kind, values,
                                        source=str(file))
            typer.echo(f"snapshot {rep.dataset} {rep.as_of}: {rep.rows} rows, {rep.invalid_ids} invalid ids"
                       + (" (replaced that date)" if rep.replaced else ""))
            if announce:
                typer.echo(f"announced to {_announce(home, store, rep.as_of.isoformat())} lenders")
        finally:
            store.close()
    except FedcreditError as exc:
        _fail(exc)


def _announce(home: Path, store: Any, as_of: str) -> int:
    from .config import load_party_config
    from .preapproval import PreapprovalSettings, build_platform_service

    svc = build_platform_service(load_party_config(home), store, PreapprovalSettings())
    try:
        return svc.announce_snapshot(as_of)
    finally:
        close = getattr(svc.gateway, "close", None)
        if close is not None:
            close()


@app.command("dates")
def dates(dataset: Annotated[str, typer.Option(help="Snapshot dataset name.")], home: Home = Path(".")) -> None:
    """The dates loaded for a dataset."""
    from .data_cli import open_store
    from .snapshots import Snapshots

    try:
        store = open_store(home, None)
    except FedcreditError as exc:
        _fail(exc)
    try:
        for d in Snapshots(store).dates(dataset):
            typer.echo(d.isoformat())
    finally:
        store.close()


@app.command("changes")
def changes(
    dataset: Annotated[str, typer.Option(help="Snapshot dataset name.")],
    feature: Annotated[str, typer.Option(help="The value column.")],
    as_of: Annotated[str, typer.Option("--as-of", help="Date, YYYY-MM-DD.")],
    recent_days: int = 30,
    prior_days: int = 90,
    home: Home = Path("."),
) -> None:
    """Per subject (local ids): mean of the recent window over the mean of the prior one (JSON lines)."""
    from .data_cli import open_store
    from .snapshots import Snapshots, change_features

    try:
        store = open_store(home, None)
    except FedcreditError as exc:
        _fail(exc)
    try:
        out = change_features(Snapshots(store), dataset, feature, as_of, recent_days=recent_days,
                              prior_days=prior_days)
    except FedcreditError as exc:
        _fail(exc)
    finally:
        store.close()
    for (kind, idn), v in sorted(out.items()):
        typer.echo(json.dumps({"id_kind": kind, "id": idn, "change": None if v != v else round(v, 6)}))


@app.command("derive")
def derive(
    dataset: Annotated[str, typer.Option(help="Snapshot dataset name, e.g. behaviour.")],
    feature: Annotated[list[str], typer.Option(help="A snapshot value column (repeat for several).")],
    as_of: Annotated[str, typer.Option("--as-of", help="Date, YYYY-MM-DD.")],
    into: Annotated[str, typer.Option(help="The store dataset to write (replaced when derived before).")],
    with_dataset: Annotated[str | None, typer.Option(
        "--with", help="Copy this store dataset's whitelisted columns beside the change columns.")] = None,
    recent_days: int = 30,
    prior_days: int = 90,
    announce: Annotated[bool, typer.Option(
        help="The platform: once derived, tell the lenders (through the coordinator) a snapshot of this date "
             "is in, so those monitoring a book run a pass. Sends the date only.")] = False,
    home: Home = Path("."),
) -> None:
    """Write the change features as of a date into an ordinary dataset (one `<feature>_change` column
    each) that training and joint scoring use like any other; consent stays the subjects' own."""
    from .data_cli import open_store
    from .snapshot_derive import derive_changes

    try:
        store = open_store(home, None)
    except FedcreditError as exc:
        _fail(exc)
    try:
        rep = derive_changes(store, dataset, feature, as_of, into, recent_days=recent_days, prior_days=prior_days,
                             with_dataset=with_dataset)
        typer.echo(f"dataset {rep.dataset} as of {rep.as_of}: {rep.rows} rows ({rep.with_change} with history), "
                   f"columns {', '.join(rep.columns)}; {rep.unknown} snapshot ids not in the store"
                   + (" (replaced)" if rep.replaced else ""))
        if announce:
            typer.echo(f"announced to {_announce(home, store, rep.as_of.isoformat())} lenders")
    except FedcreditError as exc:
        _fail(exc)
    finally:
        store.close()
