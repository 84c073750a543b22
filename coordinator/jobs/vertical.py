"""The vertical training job kind (``fedcredit coordinator train --kind vertical``; protocol and leakage
statement in :mod:`fedcore.protocol.vertical`).

Parameters: ``lenders`` (list) and ``platform`` (name), or ``parties`` (list; roles from the registry);
``psi_runs`` ({lender: committed PSI run id}; missing ones are run here, pairwise lender x platform);
``epochs``, ``batch_size``, ``lr``, ``l2``, ``val_fraction``, ``patience``, ``seed``, ``dataset``,
``timeout_s``. The result registers one joint model version: metrics per lender, the parties with their
feature *names*, datasets and data hashes, and the per-epoch history.
"""

from __future__ import annotations

from typing import Any

from fedcore.errors import InvalidInput
from fedcore.protocol.messages import Role
from fedcore.protocol.psi.coordinator import run_psi
from fedcore.protocol.vertical.coordinator import EpochReport, VerticalConfig, VerticalResult, run_vertical

from ..pooled import with_pooled_metrics
from ..runs import JobKind, RunContext, register_job

CONFIG_KEYS = ("epochs", "batch_size", "lr", "l2", "val_fraction", "patience", "seed", "dataset", "timeout_s")


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


def vertical_job(rc: RunContext) -> dict[str, Any]:
    p = rc.params
    if p.get("model") not in (None, "logistic", "joint-logistic"):
        raise InvalidInput(f"vertical training fits a joint logistic model; model {p.get('model')!r} is not one")
    lenders, platform = _roles(rc)
    psi_runs = dict(p.get("psi_runs") or {})
    for lender in lenders:
        if lender not in psi_runs:
            psi_id = f"{rc.run_id}-psi-{lender}"
            rc.progress(f"aligning {lender} with {platform} (PSI run {psi_id})")
            run_psi(rc.channel, psi_id, [lender, platform], purpose="training", progress=rc.progress)
            psi_runs[lender] = psi_id
    cfg = VerticalConfig(**{k: p[k] for k in CONFIG_KEYS if p.get(k) is not None})
    version = _version(rc)
    res = run_vertical(
        rc.channel, rc.run_id, lenders, platform, psi_runs, cfg,
        workdir=rc.workdir, version=version, progress=rc.progress,
    )
    # KS and AUC of the pooled validation scores, as the report computes them (not a mean of lenders')
    return with_pooled_metrics(_result(res), rc.channel, list(lenders), rc.run_id, key="summary_metrics")


def vertical_resume(rc: RunContext) -> dict[str, Any]:
    rc.progress("resuming from the last completed epoch")
    res = run_vertical(rc.channel, rc.run_id, [], "", {}, workdir=rc.workdir, resume=True, progress=rc.progress)
    return _result(res)


register_job(JobKind("vertical", vertical_job, resume=vertical_resume))
