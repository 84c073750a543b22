"""``fedcredit party score ...`` and ``fedcredit party audit verify`` (a Typer app the party CLI mounts).

``score`` runs the requester side in this process: it pseudonymizes the ids, asks the coordinator with
the node's certificate and prints the results; raw ids and the lender's features stay here.
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from pathlib import Path
from typing import Annotated, Any, TextIO

import numpy as np
import typer

from fedcore.errors import FedcreditError, InvalidInput
from fedcore.files import replacing

app = typer.Typer(help="Joint scoring and the scoring audit log.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained scoring audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

Home = Annotated[
    Path, typer.Option("--home", help="The party's home folder (env FEDCREDIT_HOME).", envvar="FEDCREDIT_HOME")
]


def _fail(exc: FedcreditError) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


def _number_or_text(value: str) -> float | str:
    """A number when the text is one, else the text (a category level, checked against the schema)."""
    try:
        return float(value)
    except ValueError:
        return value.strip()


def _parse_features(items: list[str]) -> dict[str, float | str]:
    out: dict[str, float | str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise InvalidInput(f"--feature {item!r} must be NAME=VALUE (a number, or a category level)")
        out[name.strip()] = _number_or_text(value)
    return out


def read_table(path: Path, features: tuple[str, ...], kind: str, id_column: str = "id") -> Any:
    """The fast path: an ``ApplicantTable`` when the CSV has every model feature filled and one id kind;
    ``None`` when per-applicant handling is needed (store lookups, an ``id_kind`` column)."""
    import pandas as pd

    from .scoring_batch import ApplicantTable

    if not path.is_file():
        raise InvalidInput(f"{path} does not exist")
    head = pd.read_csv(path, nrows=0)
    if id_column not in head.columns:
        raise InvalidInput(f"{path}: needs a column {id_column!r}")
    if "id_kind" in head.columns or not set(features) <= set(head.columns):
        return None
    df = pd.read_csv(
        path, dtype={id_column: str}, usecols=[id_column, *features], keep_default_na=False, na_values=[""]
    )
    try:
        x = df[list(features)].to_numpy(dtype=np.float64)
    except ValueError:
        return None  # a non-numeric cell: the per-row reader names it
    if np.isnan(x).any():
        return None
    return ApplicantTable(df[id_column].fillna("").tolist(), kind, x)


def read_applicants(path: Path, kind: str = "", id_column: str = "id") -> list[Any]:
    """Applicants from a CSV file: an id column, an optional ``id_kind`` column, other columns as features."""
    from .scoring_batch import Applicant

    if not path.is_file():
        raise InvalidInput(f"{path} does not exist")
    apps: list[Applicant] = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or id_column not in reader.fieldnames:
            raise InvalidInput(f"{path}: needs a column {id_column!r}")
        for line, row in enumerate(reader, 2):
            feats: dict[str, float | str] = {}
            for k, v in row.items():
                if k is None:
                    raise InvalidInput(f"{path}, row {line}: more fields than the header has columns")
                if k in (id_column, "id_kind") or v is None or v == "":
                    continue
                feats[k] = _number_or_text(v)  # text: a category level (numeric features reject it, naming it)
            apps.append(Applicant(row[id_column] or "", row.get("id_kind") or kind, feats or None))
    return apps


@app.command()
def score(
    home: Home = Path("."),
    ids: Annotated[list[str] | None, typer.Option("--id", help="Applicant id (repeatable).")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="CSV of applicants (id[,id_kind],features...).")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write results as JSON lines here (default stdout).")
    ] = None,
    kind: Annotated[str, typer.Option("--kind", help="Id kind: phone, national_id or opaque.")] = "",
    feature: Annotated[list[str] | None, typer.Option("--feature", help="Own feature NAME=VALUE (with --id).")] = None,
    model: Annotated[str, typer.Option("--model", help="Model id (default: scoring.json's model_id).")] = "",
    allow_partial: Annotated[bool, typer.Option("--allow-partial", help="Score even if a party is offline.")] = False,
) -> None:
    """Score applicants jointly with the consortium (probability of default, points, reasons, decision)."""
    try:
        _score(home, ids or [], file, out, kind, feature or [], model, allow_partial)
    except FedcreditError as exc:
        _fail(exc)


def _score(
    home: Path,
    ids: list[str],
    file: Path | None,
    out: Path | None,
    kind: str,
    feature: list[str],
    model: str,
    allow_partial: bool,
) -> None:
    from .config import load_party_config
    from .data_cli import open_store
    from .scoring import build_service

    if bool(ids) == bool(file):
        raise InvalidInput("give either --id (one or more) or --file")
    feats = _parse_features(feature)
    if feats and len(ids) != 1:
        raise InvalidInput("--feature works with exactly one --id")
    config = load_party_config(home)
    store = open_store(config.home, None)
    from .horizontal_scoring import is_horizontal, score_horizontal
    from .scoring_batch import Applicant

    if is_horizontal(config.home, model):  # held whole here: scored locally, no consortium query
        from .scoring import load_settings

        try:
            apps = [Applicant(i, kind, feats or None) for i in ids] if file is None else read_applicants(file, kind)
            rows = score_horizontal(store, config.home, model, apps, load_settings(config.home))
        finally:
            store.close()
        with replacing(out) if out else contextlib.nullcontext(sys.stdout) as sink:
            for row in rows:
                sink.write(json.dumps(row) + "\n")
        return
    service = build_service(config, store)
    kw: dict[str, Any] = {"allow_partial": allow_partial or None, "model_id": model or None}
    # --out is written beside its final name and renamed when every row is in: a batch that stops
    # part-way (a party died, Ctrl-C) leaves no half-written results file under that name.
    with contextlib.ExitStack() as stack:
        stack.callback(store.close)
        sink = stack.enter_context(replacing(out)) if out else sys.stdout
        _write_scores(service, sink, ids, file, kind, feats, model, kw)


def _write_scores(
    service: Any,
    sink: TextIO,
    ids: list[str],
    file: Path | None,
    kind: str,
    feats: dict[str, float | str],
    model: str,
    kw: dict[str, Any],
) -> None:
    from .scoring_batch import Applicant

    if ids:
        apps = [Applicant(i, kind, feats or None) for i in ids]
        batch = service.score(apps, **kw)
        for row in batch.rows():
            sink.write(json.dumps(row) + "\n")
        return
    assert file is not None
    # the column-wise fast path is for a joint-logistic slice; a tree model's applicants go one by one
    tree = service.trees.lender_model(model or service.settings.model_id)
    table = None if tree is not None else read_table(file, service.model(model or None).features, kind)

    def progress(done: int, total: int | None) -> None:
        typer.echo(f"scored {done}/{total}", err=True)

    counts: dict[str, int] = {}
    batches = (
        service.score_table(table, progress=progress, **kw)
        if table is not None
        else service.score_stream(apps := read_applicants(file, kind), total=len(apps), progress=progress, **kw)
    )
    for batch in batches:
        for row in batch.rows():
            key = str(row["decision"] or row["status"])
            counts[key] = counts.get(key, 0) + 1
            sink.write(json.dumps(row) + "\n")
    typer.echo("summary: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), err=True)


@audit_app.command("verify")
def audit_verify(
    home: Home = Path("."),
    path: Annotated[Path | None, typer.Option("--log", help="Audit log (default HOME/audit/scoring.log).")] = None,
) -> None:
    """Recompute the audit log's hash chain; exit 1 and name the first broken record if it was edited."""
    from .audit import AUDIT_FILE, verify

    res = verify(path or home / AUDIT_FILE)
    if not res.ok:
        _fail(InvalidInput(f"{path or home / AUDIT_FILE}: {res}"))
    typer.echo(str(res))
