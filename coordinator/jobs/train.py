"""The training job kind: ``fedcredit coordinator train`` / ``resume`` (horizontal training in
:mod:`fedcore.protocol.horizontal`)."""

from __future__ import annotations

from typing import Any

from fedcore.errors import InvalidInput
from fedcore.protocol.horizontal.coordinator import DpConfig, HorizontalJob, RoundReport

from ..pooled import with_pooled_metrics
from ..runs import JobKind, RunContext, register_job

HORIZONTAL_MODELS = ("mlp", "logistic", "gbdt")
HYPER = ("lr", "local_epochs", "batch_size", "seed", "hidden", "dropout", "val_fraction", "dataset")


def _reporter(rc: RunContext) -> Any:
    def report(r: RoundReport) -> None:
        ev = r.evaluate
        rc.progress(
            f"round {r.round}/{r.rounds}: validation AUC {ev.get('val-auc', float('nan')):.4f}"
            f" KS {ev.get('val-ks', float('nan')):.4f} loss {ev.get('val-loss', float('nan')):.4f}"
            f" ({len(r.parties)} parties, {r.seconds:.2f} s)"
        )

    return report


def _version(rc: RunContext) -> str:
    done = [r for r in rc.state.runs() if r.kind == "train" and r.status == "succeeded"]
    return str(len(done) + 1)


def train_job(rc: RunContext) -> dict[str, Any]:
    p = rc.params
    kind = p.get("kind", "horizontal")
    if kind != "horizontal":
        raise InvalidInput(f"training kind {kind!r} is not available (only horizontal)")
    model = str(p.get("model", "mlp"))
    if model not in HORIZONTAL_MODELS:
        raise InvalidInput(
            f"model {model!r} is not available with kind 'horizontal' (horizontal: {', '.join(HORIZONTAL_MODELS)})"
        )
    parties = p.get("parties")
    if not isinstance(parties, list) or len(parties) < 1 or not all(isinstance(x, str) for x in parties):
        raise InvalidInput("train: 'parties' must be a list of party names")
    known = {x.name: x for x in rc.channel.parties()}
    unknown = [x for x in parties if x not in known]
    if unknown:
        raise InvalidInput(f"train: unknown parties: {', '.join(unknown)}")
    not_lenders = [x for x in parties if known[x].role.value != "lender"]
    if not_lenders:
        raise InvalidInput(f"horizontal training needs label-holding lenders; not lenders: {', '.join(not_lenders)}")
    if model == "gbdt":
        from .trees import horizontal_gbdt_job

        return horizontal_gbdt_job(rc, list(parties), _version(rc))
    dp = None
    if p.get("dp_noise_multiplier"):
        dp = DpConfig(clip=float(p.get("dp_clip", 1.0)), noise_multiplier=float(p["dp_noise_multiplier"]),
                      delta=float(p.get("dp_delta", 1e-5)))
    hyper = {k: p[k] for k in HYPER if k in p and p[k] is not None}
    if "hidden" in hyper:
        hyper["hidden"] = tuple(int(h) for h in hyper["hidden"])
    job = HorizontalJob(
        rc.channel,
        rc.workdir,
        parties,
        model=str(p.get("model", "mlp")),
        rounds=int(p.get("rounds", 10)),
        strategy=str(p.get("strategy", "fedavg")),
        secure=str(p.get("secure", "he")),
        min_parties=int(p.get("min_parties", min(2, len(parties)))),
        dp=dp,
        run_id=rc.run_id,
        version=_version(rc),
        on_round=_reporter(rc),
        **hyper,
    )
    res = job.run().to_dict()
    return with_pooled_metrics(res, rc.channel, list(res.get("parties", [])), rc.run_id)


def train_resume(rc: RunContext) -> dict[str, Any]:
    if rc.params.get("model") == "gbdt":
        raise InvalidInput(f"run {rc.run_id!r} trained horizontal trees, which do not resume: start a new run")
    rc.progress("resuming from the last completed round")
    return HorizontalJob.resume(rc.channel, rc.workdir, rc.run_id, on_round=_reporter(rc)).to_dict()


register_job(JobKind("train", train_job, resume=train_resume))
