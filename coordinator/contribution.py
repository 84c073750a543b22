"""Data-contribution accounting: the lift each party's data brings to the joint model, without pooling.

Method (leave-one-party-out federated retraining): for a trained horizontal model over parties ``P``
and each party ``i``, the coordinator retrains the same model with the same hyper-parameters and
secure aggregation over ``P - {i}`` (a :class:`~fedcore.protocol.horizontal.coordinator.HorizontalJob` over the
party channel). Both models are then evaluated on the validation splits of ``P - {i}`` through the
:data:`~models.histograms.REPORT_TASK` histograms (counts per score bin only):

- ``auc_lift = AUC(full on V_-i) - AUC(without i on V_-i)``
- ``bad_rate_lift = BR80(without i on V_-i) - BR80(full on V_-i)`` (bad rate at 80 % approval; a
  positive lift means party ``i``'s data lowers the other members' bad rate).

Evaluating on the *other* parties' validation data measures what party ``i``'s data is worth to its
partners, and needs no model to reach a party that did not train it (in HE mode only the training
parties can decrypt a model). The same definition computed on pooled data with a centrally trained
model is the reference the tests compare against.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedcore.errors import InvalidInput, ProtocolError
from fedcore.protocol.channel import PartyChannel
from fedcore.protocol.messages import Task
from models import histograms as hm

log = logging.getLogger(__name__)

__all__ = ["Contribution", "PartyHists", "collect_histograms", "horizontal_job_kwargs", "leave_one_out"]


@dataclass(frozen=True)
class PartyHists:
    """One party's histograms of one model: validation and training splits, scoring traffic if any."""

    val: hm.Hist
    train: hm.Hist | None  # None for a joint (vertical) model: only the final validation scores exist
    scoring: hm.Hist | None
    n_val: int
    n_train: int
    importance: dict[str, float] | None = None  # a tree model: gain per feature of this party's own features

    def to_params(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "val": self.val.to_params(), "train": self.train.to_params() if self.train else None,
            "scoring": self.scoring.to_params() if self.scoring else None, "n_val": self.n_val, "n_train": self.n_train,
        }  # fmt: skip
        if self.importance is not None:
            out["importance"] = dict(self.importance)
        return out

    @classmethod
    def from_params(cls, d: Mapping[str, Any]) -> PartyHists:
        sc = d.get("scoring")
        tr = d.get("train")
        imp = d.get("importance")
        if imp is not None and not isinstance(imp, Mapping):
            raise InvalidInput("'importance' must map feature names to gains")
        return cls(hm.Hist.from_params(d.get("val")), hm.Hist.from_params(tr) if tr else None,
                   hm.Hist.from_params(sc) if sc else None, int(d.get("n_val", 0)), int(d.get("n_train", 0)),
                   {str(k): float(v) for k, v in imp.items()} if imp is not None else None)


@dataclass(frozen=True)
class Contribution:
    party: str
    auc_full: float
    auc_without: float
    auc_lift: float
    bad_rate_full: float
    bad_rate_without: float
    bad_rate_lift: float
    eval_rows: int
    run_without: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def collect_histograms(
    channel: PartyChannel, parties: Sequence[str], model_run: str, version: str, *,
    run_id: str = "", bins: int = hm.DEFAULT_BINS, timeout_s: float = 600.0,
) -> dict[str, PartyHists]:
    """Ask every party for its histograms of ``model_run``/``version`` (concurrently)."""
    tasks = {p: Task(hm.REPORT_TASK, {"model_run": model_run, "version": version, "bins": bins},
                     run_id=run_id, timeout_s=timeout_s) for p in parties}
    out = {}
    for party, res in channel.run_all(tasks).items():
        try:
            out[party] = PartyHists.from_params(res.params)
        except InvalidInput as exc:
            raise ProtocolError(f"party {party} sent malformed histograms: {exc}") from None
        if out[party].val.bins != bins:
            raise ProtocolError(f"party {party} sent {out[party].val.bins} bins, asked for {bins}")
    return out


def horizontal_job_kwargs(train_params: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`HorizontalJob` arguments a ``train`` run was started with (its stored params)."""
    from fedcore.protocol.horizontal.coordinator import DpConfig

    from .jobs.train import HYPER

    p = train_params
    kw: dict[str, Any] = {
        "model": str(p.get("model", "mlp")), "rounds": int(p.get("rounds", 10)),
        "strategy": str(p.get("strategy", "fedavg")), "secure": str(p.get("secure", "he")),
    }
    if p.get("dp_noise_multiplier"):
        kw["dp"] = DpConfig(clip=float(p.get("dp_clip", 1.0)), noise_multiplier=float(p["dp_noise_multiplier"]),
                            delta=float(p.get("dp_delta", 1e-5)))
    for k in HYPER:
        if k in p and p[k] is not None:
            kw[k] = tuple(int(h) for h in p[k]) if k == "hidden" else p[k]
    return kw


def leave_one_out(
    channel: PartyChannel,
    workdir: Path,
    model_run: str,
    train_params: Mapping[str, Any],
    parties: Sequence[str],
    full: Mapping[str, PartyHists],
    *,
    bins: int = hm.DEFAULT_BINS,
    progress: Callable[[str], None] = lambda m: None,
) -> list[Contribution]:
    """Leave-one-party-out retraining and evaluation (see the module docstring). Needs >= 2 parties."""
    from fedcore.protocol.horizontal.coordinator import HorizontalJob

    if len(parties) < 2:
        raise InvalidInput("contribution accounting needs a model trained by at least 2 parties")
    kw = horizontal_job_kwargs(train_params)
    out = []
    for i, party in enumerate(sorted(parties)):
        others = [p for p in parties if p != party]
        run_id = f"{model_run}.loo-{party}"
        progress(f"contribution {i + 1}/{len(parties)}: retraining without {party} ({len(others)} parties)")
        job = HorizontalJob(channel, workdir, others, run_id=run_id, version="1",
                            min_parties=min(int(train_params.get("min_parties", 2)), len(others)), **kw)
        record = job.run()
        loo = collect_histograms(channel, others, record.run_id, record.version, run_id=run_id, bins=bins)
        v_full = hm.merge(full[p].val for p in others)
        v_loo = hm.merge(loo[p].val for p in others)
        a_full, a_loo = hm.auc(v_full), hm.auc(v_loo)
        b_full, b_loo = hm.bad_rate_at_approval(v_full, 0.8), hm.bad_rate_at_approval(v_loo, 0.8)
        c = Contribution(party, a_full, a_loo, a_full - a_loo, b_full, b_loo, b_loo - b_full, int(v_full.n), run_id)
        progress(f"contribution of {party}: AUC lift {c.auc_lift:+.4f}, bad rate at 80% lift {c.bad_rate_lift:+.4f}")
        out.append(c)
    return out
