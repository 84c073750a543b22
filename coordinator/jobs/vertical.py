"""The vertical training job kind (``fedcredit coordinator train --kind vertical``; protocol and leakage
statement in :mod:`fedcore.protocol.vertical`).

Parameters: ``lenders`` (list) and ``platform`` (name), or ``parties`` (list; roles from the registry);
``psi_runs`` ({lender: committed PSI run id}; missing ones are run here, pairwise lender x platform);
``epochs``, ``batch_size``, ``lr``, ``l2``, ``val_fraction``, ``patience``, ``seed``, ``dataset``,
``timeout_s``; ``encoding``: ``onehot`` (default) or ``woe`` with ``binning_run`` (default: the newest
succeeded ``coordinator binning`` run that covers every party) and ``min_iv`` (keep the features with
at least this IV in it); ``model``: ``logistic`` (default) or
``gbdt`` (hybrid trees, :mod:`.trees`). The result
registers one joint model version: metrics per lender, the parties with their
feature *names*, datasets and data hashes, and the per-epoch history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedcore.errors import InvalidInput
from fedcore.protocol.messages import Role
from fedcore.protocol.psi.coordinator import run_psi
from fedcore.protocol.vertical.coordinator import EpochReport, VerticalConfig, VerticalResult, run_vertical

from ..pooled import with_pooled_metrics
from ..runs import JobKind, RunContext, register_job
from .trees import gbdt_job, gbdt_precheck, gbdt_resume

CONFIG_KEYS = ("epochs", "batch_size", "lr", "l2", "val_fraction", "patience", "seed", "dataset", "timeout_s",
               "encoding", "binning_run", "min_iv")


def _binning_run(rc: RunContext, parties: list[str]) -> str:
    """The binning run a WOE-encoded model uses: the one named, else the newest succeeded run that
    binned every party of this model."""
    named = rc.params.get("binning_run")
    runs = {r.run_id: r for r in rc.state.runs() if r.kind == "binning"}
    covers = [r for r in runs.values() if r.status == "succeeded"
              and set(parties) <= {*r.result.get("lenders", []), r.result.get("platform")}]
    if named:
        run = runs.get(str(named))
        if run is None or run.status != "succeeded":
            raise InvalidInput(f"vertical: binning run {named!r} is not a succeeded binning run")
        if run not in covers:
            raise InvalidInput(f"vertical: binning run {named!r} did not bin every party of {', '.join(parties)}")
        return str(named)
    if not covers:
        raise InvalidInput("vertical: encoding 'woe' needs a binning run of these parties"
                           f" ({', '.join(parties)}): run `fedcredit coordinator binning` first")
    return covers[-1].run_id


def _roles(rc: RunContext) -> tuple[list[str], str]:
    p = rc.params
    known = {x.name: x for x in rc.channel.parties()}
    lenders = p.get("lenders")
    platform = p.get("platform")
    if lenders is None or platform is None:
        parties = p.get("parties")
        if not isinstance(parties, list) or not parties:
            raise InvalidInput("vertical: give 'lenders' and 'platform', or 'parties'")
        unknown = [x for x in parties if x not in known]
        if unknown:
            raise InvalidInput(f"vertical: unknown parties: {', '.join(map(str, unknown))}")
        lenders = [x for x in parties if known[x].role == Role.LENDER]
        platforms = [x for x in parties if known[x].role == Role.PLATFORM]
        if len(platforms) != 1:
            raise InvalidInput(f"vertical: need exactly one platform among the parties, got {len(platforms)}")
        platform = platforms[0]
    if not isinstance(lenders, list) or not lenders or not all(isinstance(x, str) for x in lenders):
        raise InvalidInput("vertical: 'lenders' must be a non-empty list of party names")
    unknown = [x for x in [*lenders, platform] if x not in known]
    if unknown:
        raise InvalidInput(f"vertical: unknown parties: {', '.join(map(str, unknown))}")
    return list(lenders), str(platform)


def _encoding(cfg: dict[str, Any]) -> dict[str, Any]:
    """The model record's line on how its features were encoded (and from which binning run)."""
    out = {"kind": cfg.get("encoding") or "onehot", "binning_run": cfg.get("binning_run")}
    if cfg.get("min_iv") is not None:
        out["min_iv"] = cfg["min_iv"]
    return out


def _version(rc: RunContext) -> str:
    done = [r for r in rc.state.runs() if r.kind == "vertical" and r.status == "succeeded"]
    return str(len(done) + 1)


def _report(rc: RunContext) -> Any:
    def on_epoch(r: EpochReport) -> None:
        rc.progress(f"epoch {r.epoch + 1}/{r.epochs}: validation loss {r.val_loss:.5f} ({r.seconds:.2f} s)")

    return on_epoch


def _result(res: VerticalResult) -> dict[str, Any]:
    out = res.to_dict()
    out.update(model_id=res.run_id, kind="joint-logistic", model="joint-logistic")
    # One line for listings: the lenders' validation metrics weighted by their validation rows.
    per = [m for m in res.metrics.values() if "auc" in m]
    total = sum(float(m.get("n", 1)) for m in per)
    if per and total > 0:
        out["summary_metrics"] = {
            f"val_{k}": sum(float(m.get(k, 0.0)) * float(m.get("n", 1)) for m in per) / total
            for k in ("auc", "ks", "bad_rate_at_80")
        }
    return out


MODELS = ("logistic", "gbdt")


def vertical_job(rc: RunContext) -> dict[str, Any]:
    p = rc.params
    model = str(p.get("model") or "logistic")
    if model not in MODELS:
        raise InvalidInput(f"model {model!r} is not available with kind 'vertical' (vertical: {', '.join(MODELS)})")
    lenders, platform = _roles(rc)
    encoding = str(p.get("encoding") or "onehot")
    if model == "gbdt" and encoding != "onehot":
        raise InvalidInput("vertical: --encoding applies to the logistic model; trees bin the features themselves")
    binning_run = _binning_run(rc, [*lenders, platform]) if encoding == "woe" else None
    if model == "gbdt":
        gbdt_precheck(rc, lenders, platform)
    psi_runs = dict(p.get("psi_runs") or {})
    for lender in lenders:
        if lender not in psi_runs:
            psi_id = f"{rc.run_id}-psi-{lender}"
            rc.progress(f"aligning {lender} with {platform} (PSI run {psi_id})")
            run_psi(rc.channel, psi_id, [lender, platform], purpose="training", progress=rc.progress)
            psi_runs[lender] = psi_id
    version = _version(rc)
    if model == "gbdt":
        return gbdt_job(rc, lenders, platform, psi_runs, version)
    cfg = VerticalConfig(**{k: p[k] for k in CONFIG_KEYS if p.get(k) is not None})
    cfg.binning_run = binning_run
    cfg.check()
    res = run_vertical(
        rc.channel, rc.run_id, lenders, platform, psi_runs, cfg,
        workdir=rc.workdir, version=version, progress=rc.progress,
    )
    out = _result(res)
    out["encoding"] = _encoding(vars(cfg))
    # KS and AUC of the pooled validation scores, as the report computes them (not a mean of lenders')
    return with_pooled_metrics(out, rc.channel, list(lenders), rc.run_id, key="summary_metrics")


def vertical_resume(rc: RunContext) -> dict[str, Any]:
    if rc.params.get("model") == "gbdt":
        return gbdt_resume(rc)
    rc.progress("resuming from the last completed epoch")
    res = run_vertical(rc.channel, rc.run_id, [], "", {}, workdir=rc.workdir, resume=True, progress=rc.progress)
    out = _result(res)
    try:  # the resumed run's configuration, as the checkpoint kept it
        out["encoding"] = _encoding(json.loads((Path(rc.workdir) / rc.run_id / "vertical.json").read_text())["config"])
    except (OSError, ValueError, KeyError):
        pass
    return out


register_job(JobKind("vertical", vertical_job, resume=vertical_resume))
