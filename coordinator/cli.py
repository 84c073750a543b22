"""``fedcredit coordinator ...``: the coordinator admin's commands."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from fedcore.errors import InvalidInput, Unavailable
from fedcore.logs import setup_logging
from fedcore.protocol.messages import Role

from .config import load_coordinator_config

app = typer.Typer(help="Run the coordinator and administer the federation.", no_args_is_help=True)

Home = Annotated[
    Path,
    typer.Option(
        "--home",
        help="The coordinator's home folder (env FEDCREDIT_COORDINATOR_HOME).",
        envvar="FEDCREDIT_COORDINATOR_HOME",
    ),
]


@app.command()
def init(
    home: Home = Path("."),
    listen: Annotated[str, typer.Option(help="HOST:PORT to listen on.")] = "127.0.0.1:7443",
    host: Annotated[
        list[str] | None, typer.Option("--host", help="Host name or IP parties dial (repeatable).")
    ] = None,
    state_url: Annotated[
        str, typer.Option(help="Keep the registry in PostgreSQL at this URL (postgresql+psycopg://...).")
    ] = "",
) -> None:
    """Create a new federation: CA, coordinator and admin certificates, state store."""
    from .home import init_home

    config = init_home(home, listen=listen, hosts=tuple(host or ["127.0.0.1", "localhost"]), state_url=state_url)
    typer.echo(f"created federation in {config.home}; admin credentials in {config.tls.admin_cert.parent}")


@app.command()
def serve(
    home: Home = Path("."),
    port: Annotated[int | None, typer.Option(help="Override the configured port (0: any free port).")] = None,
) -> None:
    """Run the coordinator until SIGINT/SIGTERM."""
    config = load_coordinator_config(home)
    setup_logging(config.log.level, config.log.json_format or None)
    from .server import CoordinatorServer

    CoordinatorServer(config, port=port).serve_forever()


@app.command()
def admit(
    csr: Annotated[Path, typer.Argument(help="The party's CSR file (from `fedcredit party init`).")],
    role: Annotated[str, typer.Option(help="lender or platform.")],
    home: Home = Path("."),
    out: Annotated[Path, typer.Option(help="Folder to write the startup kit into.")] = Path("kits"),
    valid_days: Annotated[int, typer.Option(min=1, max=3650)] = 365,
) -> None:
    """Sign a party's CSR and write its startup kit (CA certificate, its certificate, config)."""
    from .home import admit as do_admit

    try:
        r = Role(role)
    except ValueError:
        raise InvalidInput(f"--role must be lender or platform, not {role!r}") from None
    kit = do_admit(load_coordinator_config(home), csr, r, out, valid_days=valid_days)
    typer.echo(f"admitted {kit.name} as {kit.role.value}; startup kit: {kit.path}")


@app.command()
def revoke(
    name: Annotated[str, typer.Argument(help="The party to revoke.")],
    home: Home = Path("."),
    reason: Annotated[str, typer.Option(help="Recorded in the audit log.")] = "revoked by the admin",
) -> None:
    """Revoke a party: its live link is cut within a second and it cannot reconnect."""
    from .home import revoke as do_revoke

    serials = do_revoke(load_coordinator_config(home), name, reason)
    typer.echo(f"revoked {name} ({len(serials)} certificate(s))")


@app.command()
def parties(
    home: Home = Path("."),
    offline: Annotated[
        bool, typer.Option(help="Read the registry only; do not ask the running coordinator.")
    ] = False,
) -> None:
    """List admitted parties with role and liveness (asks the running coordinator)."""
    from .state import StateStore

    config = load_coordinator_config(home)
    rows: list[tuple[str, ...]] = []
    if not offline:
        from .admin_client import AdminClient

        try:
            with AdminClient(config) as client:
                for p in client.list_parties():
                    seen = _ago(p.last_seen_unix) if p.last_seen_unix else "never"
                    rows_n = sum(t.rows for t in p.summary.tables)
                    feats = sum(len(t.features) for t in p.summary.tables)
                    rows.append(
                        (
                            p.name,
                            p.role,
                            p.status,
                            "live" if p.online else "offline",
                            seen,
                            f"{rows_n} rows, {feats} features",
                        )
                    )
        except Unavailable as exc:
            typer.echo(f"coordinator not reachable ({exc}); showing the registry only", err=True)
            offline = True
    if offline:
        for pr in StateStore(config.coordinator.registry(), create=False).principals():
            if pr.role == Role.ADMIN:
                continue
            seen = _ago(pr.last_seen) if pr.last_seen else "never"
            rows.append((pr.name, pr.role.value, pr.status, "unknown", seen, ""))
    _table(("party", "role", "status", "link", "last seen", "data"), rows)


def _ago(ts: float) -> str:
    secs = max(0.0, dt.datetime.now().timestamp() - ts)
    return f"{secs:.1f}s ago" if secs < 120 else dt.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    typer.echo("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


@app.command()
def probe(
    party: Annotated[str, typer.Argument(help="Party to probe.")],
    home: Home = Path("."),
    count: Annotated[int, typer.Option(min=1)] = 10,
    payload_mb: Annotated[float, typer.Option(help="Stream this many MB back per probe.")] = 0.0,
) -> None:
    """Round-trip diagnostic tasks to a party and print latencies."""
    from .admin_client import AdminClient

    with AdminClient(load_coordinator_config(home)) as client:
        r = client.probe(party, count=count, payload_bytes=int(payload_mb * 1e6))
    rtts = sorted(r.rtt_ms)
    typer.echo(
        f"{party}: {count} round trips, p50 {rtts[len(rtts) // 2]:.2f} ms, max {rtts[-1]:.2f} ms"
        + (f", {r.bytes_received / 1e6 / r.seconds:.0f} MB/s" if r.bytes_received else "")
    )


@app.command()
def audit(home: Home = Path(".")) -> None:
    """Show the audit log of admin actions."""
    from .state import StateStore

    for e in StateStore(load_coordinator_config(home).coordinator.registry(), create=False).audit_log():
        when = dt.datetime.fromtimestamp(e.at).isoformat(timespec="seconds")
        typer.echo(f"{when}  {e.actor:<10} {e.action:<18} {e.target:<12} {e.detail}")


def follow_run(events: Iterator[Any]) -> dict[str, Any]:
    """Print a run's progress; return its result, or raise with its error message."""
    from fedcore.errors import FedcreditError
    from fedcore.wire.convert import params_from_struct

    run_id = ""
    for ev in events:
        run_id = ev.run_id or run_id
        if not ev.done:
            typer.echo(f"[{run_id}] {ev.message}")
            continue
        if ev.status != "succeeded":
            raise FedcreditError(f"run {run_id} failed: {ev.message}")
        result = params_from_struct(ev.result)
        typer.echo(f"[{run_id}] succeeded")
        return {"run_id": run_id, **result}
    raise Unavailable(f"lost the coordinator while following run {run_id}; see `fedcredit coordinator runs`")


@app.command()
def psi(
    parties: Annotated[str, typer.Option(help="Comma-separated parties; the first leads, e.g. yixin,tiange.")],
    home: Home = Path("."),
    purpose: Annotated[str, typer.Option(help="Consent purpose the subjects must have.")] = "training",
    cardinality_only: Annotated[bool, typer.Option(help="Learn the intersection size only.")] = False,
) -> None:
    """Align parties' subjects by private set intersection; each party keeps a local alignment table."""
    from .admin_client import AdminClient

    names = [p.strip() for p in parties.split(",") if p.strip()]
    with AdminClient(load_coordinator_config(home)) as client:
        result = follow_run(client.start_run(
            "psi", {"parties": names, "purpose": purpose, "cardinality_only": cardinality_only}))
    sizes = ", ".join(f"{k} {v}" for k, v in result.get("sizes", {}).items())
    typer.echo(f"intersection {result.get('intersection')} (sets: {sizes}) in {result.get('seconds')} s; "
               f"alignment tables under run id {result['run_id']}")


@app.command()
def runs(home: Home = Path(".")) -> None:
    """List runs with status and result."""
    from fedcore.wire.convert import params_from_struct

    from .admin_client import AdminClient

    with AdminClient(load_coordinator_config(home)) as client:
        rows = []
        for r in client.list_runs():
            result = params_from_struct(r.result)
            started = dt.datetime.fromtimestamp(r.created_unix).isoformat(timespec="seconds")
            rows.append((r.run_id, r.kind, r.status, started, dropped_text(result) or "-",
                         json.dumps(result, sort_keys=True)[:80]))
    _table(("run", "kind", "status", "started", "dropped out", "result"), rows)


def dropped_text(result: Any) -> str:
    """``host2 (round 2, 23:50:01)``: the parties a run lost, when (from its record's ``dropped``)."""
    out = []
    for d in result.get("dropped", []) if isinstance(result, dict) else []:
        when = dt.datetime.fromtimestamp(float(d.get("at", 0))).isoformat(timespec="seconds")
        out.append(f"{d.get('party')} (round {int(d.get('round', 0))}, {when})")  # Struct numbers are floats
    return ", ".join(out)


@app.command("distribute-key")
def distribute_key(
    home: Home = Path("."),
    parties: Annotated[str, typer.Option(help="Comma-separated parties (default: every live party).")] = "",
) -> None:
    """Make every party hold the same pseudonym key, sealed party to party (the coordinator never has it)."""
    from .admin_client import AdminClient

    names = [p.strip() for p in parties.split(",") if p.strip()]
    with AdminClient(load_coordinator_config(home)) as client:
        result = follow_run(client.start_run("pseudonym-key", {"parties": names} if names else {}))
    typer.echo(f"pseudonym key {str(result.get('key_fingerprint'))[:16]} held by {', '.join(result.get('parties', []))}"
               f" (sealed by {result.get('creator')})")


@app.command()
def train(
    parties: Annotated[str, typer.Option(help="Comma-separated lenders, e.g. yixin,meili,cango.")],
    home: Home = Path("."),
    kind: Annotated[
        str, typer.Option(help="horizontal (lenders share a schema) or vertical (lenders + the platform).")
    ] = "horizontal",
    model: Annotated[
        str | None, typer.Option(help="horizontal: mlp (default) or logistic; vertical: logistic.")
    ] = None,
    rounds: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    strategy: Annotated[str, typer.Option(help="fedavg or fedprox.")] = "fedavg",
    secure: Annotated[str, typer.Option(help="he (CKKS-encrypted aggregation) or none.")] = "he",
    min_parties: Annotated[int | None, typer.Option(help="Fewest replies a round may complete with.")] = None,
    local_epochs: Annotated[int | None, typer.Option(min=1)] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset at each party (default: its labelled one).")] = None,
    dp_noise: Annotated[float, typer.Option(help="Gaussian noise multiplier for DP (0: off).")] = 0.0,
    dp_clip: Annotated[float, typer.Option(help="L2 clip of each party's update for DP.")] = 1.0,
    batch_size: Annotated[int | None, typer.Option(min=16, help="Mini-batch size.")] = None,
    psi_runs: Annotated[
        str, typer.Option(help="Vertical: existing alignments, LENDER=PSI_RUN,... (default: run PSI).")
    ] = "",
) -> None:
    """Train a model across parties (--rounds: rounds, or epochs for vertical); registers the model.

    Horizontal: lenders with a shared schema, Flower FedAvg/FedProx with CKKS-encrypted aggregation.
    Vertical: lenders (labels, application features) with the platform (behaviour features) on
    PSI-aligned subjects, coordinated logistic regression under CKKS."""
    from .admin_client import AdminClient

    names = [p.strip() for p in parties.split(",") if p.strip()]
    if kind == "vertical":
        if model not in (None, "logistic"):
            raise InvalidInput(
                f"--kind vertical trains a joint logistic model; --model {model} is not available for it")
        vparams: dict[str, Any] = {"parties": names, "epochs": rounds}
        for key, value in (("lr", lr), ("dataset", dataset), ("batch_size", batch_size)):
            if value is not None:
                vparams[key] = value
        if psi_runs:
            vparams["psi_runs"] = dict(item.split("=", 1) for item in psi_runs.split(","))
        with AdminClient(load_coordinator_config(home)) as client:
            _print_model(follow_run(client.start_run("vertical", vparams)))
        return
    if kind != "horizontal":
        raise InvalidInput(f"--kind must be horizontal or vertical, not {kind!r}")
    params: dict[str, Any] = {"kind": kind, "parties": names, "model": model or "mlp", "rounds": rounds,
                              "strategy": strategy, "secure": secure}
    for key, value in (("min_parties", min_parties), ("local_epochs", local_epochs), ("lr", lr),
                       ("dataset", dataset), ("batch_size", batch_size)):
        if value is not None:
            params[key] = value
    if dp_noise > 0:
        params.update(dp_noise_multiplier=dp_noise, dp_clip=dp_clip)
    with AdminClient(load_coordinator_config(home)) as client:
        result = follow_run(client.start_run("train", params))
    _print_model(result)


def _print_model(result: dict[str, Any]) -> None:
    m = result.get("summary_metrics") or result.get("metrics", {})
    typer.echo(f"model {result.get('model')} version {result.get('version')} (run {result['run_id']}):"
               f" validation AUC {m.get('val_auc', float('nan')):.4f} KS {m.get('val_ks', float('nan')):.4f};"
               f" stored at {', '.join(result.get('parties', []))}; secure={result.get('secure', 'he')}"
               + (f"; DP epsilon {result['dp'].get('epsilon'):.2f}" if result.get("dp") else ""))


@app.command()
def resume(
    run_id: Annotated[str, typer.Argument(help="The interrupted run.")],
    home: Home = Path("."),
) -> None:
    """Continue an interrupted training run from its last completed round."""
    from .admin_client import AdminClient

    with AdminClient(load_coordinator_config(home)) as client:
        result = follow_run(client.resume_run(run_id))
    _print_model(result)


@app.command()
def models(home: Home = Path(".")) -> None:
    """Registered models: version, kind, validation metrics, parties that hold them, data hashes."""
    from fedcore.wire.convert import params_from_struct

    from .admin_client import AdminClient

    with AdminClient(load_coordinator_config(home)) as client:
        done = [r for r in client.list_runs() if r.kind in ("train", "vertical") and r.status == "succeeded"]
    rows = []
    for r in done:
        res = params_from_struct(r.result)
        m = res.get("summary_metrics") or res.get("metrics", {})
        rows.append((str(res.get("version", "")), r.kind, str(res.get("model", res.get("kind", ""))),
                     f"{m.get('val_auc', float('nan')):.4f}", f"{m.get('val_ks', float('nan')):.4f}",
                     ",".join(res.get("parties", [])), r.run_id,
                     ",".join(f"{p}:{h[:8]}" for p, h in sorted(res.get("data_sha256", {}).items()))))
    _table(("version", "kind", "model", "val AUC", "val KS", "parties", "run", "data hashes"), rows)


from .binning_cli import binning_command  # noqa: E402 (a command defined beside its job)
from .report import report_command  # noqa: E402 (a command defined beside the report it renders)

app.command("binning")(binning_command)

app.command("report")(report_command)
