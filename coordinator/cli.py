"""``fedcredit coordinator ...``: the coordinator admin's commands."""

from __future__ import annotations

import datetime as dt
import gc
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import click
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

    server = CoordinatorServer(config, port=port)
    gc.collect()  # start-up objects live as long as the process: out of the collector's sight
    gc.freeze()
    server.serve_forever()


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
    ctx: typer.Context,
    parties: Annotated[str, typer.Option(help="Comma-separated parties, e.g. yixin,meili,cango.")] = "",
    home: Home = Path("."),
    kind: Annotated[
        str, typer.Option(help="horizontal (lenders share a schema) or vertical (lenders + the platform).")
    ] = "horizontal",
    model: Annotated[str, typer.Option(help="horizontal: mlp, logistic or gbdt; vertical: logistic or gbdt.")] = "",
    rounds: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    strategy: Annotated[str, typer.Option(help="fedavg or fedprox.")] = "fedavg",
    secure: Annotated[str, typer.Option(help="he (CKKS-encrypted aggregation) or none.")] = "he",
    min_parties: Annotated[int | None, typer.Option(help="Fewest replies a round may complete with.")] = None,
    local_epochs: Annotated[int | None, typer.Option(min=1)] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (gbdt: shrinkage).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset at each party (default: its labelled one).")] = None,
    dp_noise: Annotated[float, typer.Option(help="Gaussian noise multiplier for DP (0: off).")] = 0.0,
    dp_clip: Annotated[float, typer.Option(help="L2 clip of each party's update for DP.")] = 1.0,
    batch_size: Annotated[int | None, typer.Option(min=16, help="Mini-batch size.")] = None,
    psi_runs: Annotated[
        str, typer.Option(help="Vertical: existing alignments, LENDER=PSI_RUN,... (default: run PSI).")
    ] = "",
    n_trees: Annotated[int | None, typer.Option(min=1, help="gbdt: most trees.")] = None,
    depth: Annotated[int | None, typer.Option(min=1, max=12, help="gbdt: tree depth.")] = None,
    bins: Annotated[int | None, typer.Option(min=2, max=255, help="gbdt: histogram bins per feature.")] = None,
    min_child_weight: Annotated[float | None, typer.Option(min=0.0, help="gbdt: least hessian per leaf.")] = None,
    l2: Annotated[float | None, typer.Option(min=0.0, help="L2 penalty (gbdt: on leaf values).")] = None,
    monotone: Annotated[str, typer.Option(help="gbdt: FEATURE=+1|-1,... (score never falls / rises).")] = "",
    early_stopping_rounds: Annotated[int | None, typer.Option(min=1, help="gbdt: stop after N trees without "
                                                              "a better validation loss; keep the best.")] = None,
    val_fraction: Annotated[float | None, typer.Option(help="Vertical: validation share of each lender.")] = None,
    encoding: Annotated[str, typer.Option(help="Vertical logistic: onehot (categoricals as level indicators) "
                                          "or woe (every feature as the WOE of its federated bin).")] = "onehot",
    binning_run: Annotated[str | None, typer.Option(help="With --encoding woe: the binning run whose bins "
                                                    "to use (default: the newest of these parties).")] = None,
    min_iv: Annotated[float | None, typer.Option(help="With --encoding woe: keep the features whose IV in the "
                                                 "binning run is at least this (e.g. 0.02).")] = None,
    run_config: Annotated[Path | None, typer.Option(help="TOML file with every training parameter "
                                                    "(options given here win).")] = None,
) -> None:
    """Train a model across parties (--rounds: rounds, or epochs for vertical); registers the model.

    Horizontal: lenders with a shared schema, Flower FedAvg/FedProx with CKKS-encrypted aggregation.
    Vertical: lenders (labels, application features) with the platform (behaviour features) on
    PSI-aligned subjects: coordinated logistic regression under CKKS, or (--model gbdt) hybrid
    gradient-boosted trees on masked histograms."""
    from .admin_client import AdminClient
    from .run_config import load_run_config

    cfg = load_run_config(run_config) if run_config else {}

    def pick(name: str, value: Any) -> Any:
        given = ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
        return value if given or name not in cfg else cfg[name]

    names = [p.strip() for p in parties.split(",") if p.strip()] if parties else list(cfg.get("parties", []))
    if not names:
        raise InvalidInput("train: name the parties (--parties or 'parties' in the run config)")
    kind, rounds, lr, dataset = pick("kind", kind), pick("rounds", rounds), pick("lr", lr), pick("dataset", dataset)
    model = pick("model", model) or ("logistic" if kind == "vertical" else "mlp")
    batch_size = pick("batch_size", batch_size)
    allowed = {"horizontal": ("mlp", "logistic", "gbdt"), "vertical": ("logistic", "gbdt")}
    if kind not in allowed:
        raise InvalidInput(f"--kind must be horizontal or vertical, not {kind!r}")
    if model not in allowed[kind]:
        raise InvalidInput(f"--model {model!r} is not available with --kind {kind!r} "
                           f"({kind}: {' or '.join(allowed[kind])})")
    encoding, binning_run = pick("encoding", encoding), pick("binning_run", binning_run)
    if encoding not in ("onehot", "woe"):
        raise InvalidInput(f"--encoding must be onehot or woe, not {encoding!r}")
    min_iv = pick("min_iv", min_iv)
    if (encoding != "onehot" or binning_run or min_iv is not None) and (kind, model) != ("vertical", "logistic"):
        raise InvalidInput("--encoding woe and --binning-run apply to --kind vertical --model logistic only")
    if (binning_run or min_iv is not None) and encoding != "woe":
        raise InvalidInput("--binning-run and --min-iv need --encoding woe")
    if kind == "vertical":
        vparams: dict[str, Any] = {"parties": names, "epochs": rounds, "model": model}
        for key, value in (("lr", lr), ("dataset", dataset), ("batch_size", batch_size),
                           ("encoding", None if encoding == "onehot" else encoding), ("binning_run", binning_run),
                           ("min_iv", min_iv),
                           ("val_fraction", pick("val_fraction", val_fraction)), ("seed", cfg.get("seed"))):
            if value is not None:
                vparams[key] = value
        runs = dict(item.split("=", 1) for item in psi_runs.split(",")) if psi_runs else cfg.get("psi_runs")
        if runs:
            vparams["psi_runs"] = dict(runs)
        if model == "gbdt":
            vparams.pop("epochs")
            vparams.pop("lr", None)
            vparams["gbdt"] = _tree_params(cfg.get("gbdt", {}), n_trees, depth, lr, bins, min_child_weight, l2,
                                           monotone, early_stopping_rounds)
        with AdminClient(load_coordinator_config(home)) as client:
            _print_model(follow_run(client.start_run("vertical", vparams)))
        return
    params: dict[str, Any] = {"kind": kind, "parties": names, "model": model, "rounds": rounds,
                              "strategy": pick("strategy", strategy), "secure": pick("secure", secure)}
    if model == "gbdt":
        params = {"kind": kind, "parties": names, "model": model,
                  "gbdt": _tree_params(cfg.get("gbdt", {}), n_trees, depth, lr, bins, min_child_weight, l2,
                                       monotone, early_stopping_rounds)}  # fmt: skip
        for key, value in (("dataset", dataset), ("val_fraction", pick("val_fraction", val_fraction)),
                           ("seed", cfg.get("seed"))):
            if value is not None:
                params[key] = value
        with AdminClient(load_coordinator_config(home)) as client:
            _print_model(follow_run(client.start_run("train", params)))
        return
    for key, value in (("min_parties", pick("min_parties", min_parties)),
                       ("local_epochs", pick("local_epochs", local_epochs)), ("lr", lr),
                       ("dataset", dataset), ("batch_size", batch_size)):
        if value is not None:
            params[key] = value
    dp_noise, dp_clip = pick("dp_noise", dp_noise), pick("dp_clip", dp_clip)
    if dp_noise > 0:
        params.update(dp_noise_multiplier=dp_noise, dp_clip=dp_clip)
    with AdminClient(load_coordinator_config(home)) as client:
        result = follow_run(client.start_run("train", params))
    _print_model(result)


def _tree_params(base: dict[str, Any], n_trees: int | None, depth: int | None, lr: float | None, bins: int | None,
                 min_child_weight: float | None, l2: float | None, monotone: str,
                 early_stopping_rounds: int | None) -> dict[str, Any]:
    """The run config's [gbdt] table with the command-line tree options on top."""
    out = dict(base)
    for key, value in (("n_trees", n_trees), ("max_depth", depth), ("learning_rate", lr), ("max_bins", bins),
                       ("min_child_weight", min_child_weight), ("reg_lambda", l2),
                       ("early_stopping_rounds", early_stopping_rounds)):
        if value is not None:
            out[key] = value
    if monotone:
        signs: dict[str, int] = {}
        for item in monotone.split(","):
            feat, _, sign = item.partition("=")
            if sign.strip() not in ("+1", "1", "-1") or not feat.strip():
                raise InvalidInput(f"--monotone: {item!r} is not FEATURE=+1 or FEATURE=-1")
            signs[feat.strip()] = int(sign)
        out["monotone"] = signs
    return out


def _print_model(result: dict[str, Any]) -> None:
    m = result.get("summary_metrics") or result.get("metrics", {})
    typer.echo(f"model {result.get('model')} version {result.get('version')} (run {result['run_id']}):"
               f" validation AUC {m.get('val_auc', float('nan')):.4f} KS {m.get('val_ks', float('nan')):.4f};"
               f" stored at {', '.join(result.get('parties', []))}; secure={result.get('secure', 'he')}"
               + (f"; DP epsilon {result['dp'].get('epsilon'):.2f}" if result.get("dp") else "")
               + (f"; WOE of binning run {enc.get('binning_run')}" if (enc := result.get("encoding") or {})
                  .get("kind") == "woe" else ""))


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
        enc = res.get("encoding") or {}
        woe = f" on WOE of {enc.get('binning_run')}" if enc.get("kind") == "woe" else ""
        rows.append((str(res.get("version", "")), r.kind, str(res.get("model", res.get("kind", ""))) + woe,
                     f"{m.get('val_auc', float('nan')):.4f}", f"{m.get('val_ks', float('nan')):.4f}",
                     ",".join(res.get("parties", [])), r.run_id,
                     ",".join(f"{p}:{h[:8]}" for p, h in sorted(res.get("data_sha256", {}).items()))))
    _table(("version", "kind", "model", "val AUC", "val KS", "parties", "run", "data hashes"), rows)


from .binning_cli import binning_command  # noqa: E402 (a command defined beside its job)
from .report import evaluate_command, report_command  # noqa: E402 (commands defined beside the report)

app.command("binning")(binning_command)

app.command("report")(report_command)
app.command("evaluate")(evaluate_command)
