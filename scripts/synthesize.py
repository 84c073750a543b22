"""Write a synthetic federation (or the real FATE splits' schemas) for parties to ingest::

    python scripts/synthesize.py --out DIR --people 100000 --seed 7 [--format csv|parquet] \\
        [--id-kind phone|national_id] [--weeks 60]   # --weeks: dated platform snapshots too
    python scripts/synthesize.py --fate --out DIR      # schemas for the real FATE data (homo/ and hetero/)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedcore.errors import FedcreditError, InvalidInput

app = typer.Typer(help="Write a synthetic car-loan federation (per-party files + schemas + ground truth).")


@app.callback(invoke_without_command=True)
def synth(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")],
    people: Annotated[int, typer.Option("--people", help="Population size.")] = 100_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same files).")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    id_kind: Annotated[str, typer.Option("--id-kind", help="phone or national_id.")] = "phone",
    fate: Annotated[bool, typer.Option("--fate", help="Write schemas for the real FATE data instead.")] = False,
    weeks: Annotated[int, typer.Option("--weeks", help="Also weekly platform snapshots over this many weeks.")] = 0,
) -> None:
    """Write per-party data files and schema TOMLs that `fedcredit party ingest` takes as they are."""
    try:
        if fate:
            from scripts.fate_data import write_fate_federations

            for layout, parties in write_fate_federations(out).items():
                for party, (csv, schema) in parties.items():
                    typer.echo(f"{layout}/{party}: fedcredit party ingest {csv} --schema {schema}")
            return
        if fmt not in ("csv", "parquet"):
            raise InvalidInput(f"--format must be csv or parquet, not {fmt!r}")
        if id_kind not in ("phone", "national_id"):
            raise InvalidInput(f"--id-kind must be phone or national_id, not {id_kind!r}")
        if people < 100:
            raise InvalidInput("--people must be at least 100")
        from scripts.synthetic import SynthConfig, generate, write_federation

        t0 = time.perf_counter()
        fed = generate(SynthConfig(people=people, seed=seed, fmt=fmt, id_kind=id_kind))
        written = write_federation(fed, out)
        for party, (data, schema) in written.items():
            typer.echo(f"{party}: {fed.parties[party].num_rows} rows -> {data} (schema {schema.name})")
        if weeks:
            from scripts.synthetic_time import TimeConfig, generate_time, write_time

            if weeks < 20:
                raise InvalidInput("--weeks must be at least 20 (defaults start at week 20)")
            snaps = write_time(generate_time(fed, TimeConfig(weeks=weeks, seed=seed)), fed, out)
            typer.echo(f"tiange: {len(snaps)} weekly snapshots -> {snaps[0].parent}")
        rate = float(fed.loans["defaulted"].mean())
        typer.echo(
            f"{people} people, {len(fed.loans)} loans, default rate {rate:.2%}; ground truth in "
            f"{out / 'ground_truth'} ({time.perf_counter() - t0:.1f} s)"
        )
    except FedcreditError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


if __name__ == "__main__":
    app()
