"""The vertical training driver (the coordinator is the arbiter; see the package docstring)."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedcore.crypto import he
from fedcore.errors import CorruptResult, FedcreditError, InvalidInput, NotFound, ProtocolError
from fedcore.protocol.channel import PartyChannel
from fedcore.protocol.messages import JSONValue, Task, TaskResult
from fedcore.protocol.vertical.messages import (
    ABORT,
    BACKWARD,
    CHECKPOINT,
    EVAL_LENDER,
    EVAL_PLATFORM,
    F_CKKS,
    F_SEALED,
    F_U128,
    FINISH,
    FORWARD,
    KEYS,
    MOD,
    RESIDUAL,
    REVEAL,
    SCALER,
    SETUP,
    START,
    Frame,
    _one,
    f64_frame,
    frames_bytes,
    parse_frames,
    u128_frame,
    u128_of,
)
from fedcore.protocol.vertical.numerics import batch_sizes
from fedcore.protocol.vertical.session import table_options

log = logging.getLogger(__name__)



@dataclass
class VerticalConfig:
    epochs: int = 10
    batch_size: int = 2048
    lr: float = 0.05
    l2: float = 0.0
    val_fraction: float = 0.2
    patience: int = 3
    min_delta: float = 1e-4
    seed: int = 0
    dataset: str | None = None
    timeout_s: float = 600.0
    encoding: str = "onehot"  # categoricals one-hot, or every feature as the WOE of its bin ("woe")
    binning_run: str | None = None  # with "woe": the federated binning run whose bins and WOE to use
    min_iv: float | None = None  # with "woe": each party keeps its features with at least this IV in that run

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 16 or not 0 <= self.val_fraction < 0.9 or not self.lr > 0:
            raise InvalidInput("vertical: need epochs >= 1, batch_size >= 16, 0 <= val_fraction < 0.9, lr > 0")
        table_options({"encoding": self.encoding, "binning_run": self.binning_run})  # names a bad encoding


@dataclass
class EpochReport:
    epoch: int
    epochs: int
    val_loss: float
    seconds: float
    improved: bool


@dataclass
class VerticalResult:
    run_id: str
    epochs_run: int
    best_epoch: int
    history: list[dict[str, float]]
    metrics: dict[str, dict[str, float]]  # lender -> validation metrics of the final model
    parties: dict[str, dict[str, Any]]  # party -> role, features (names), dataset, data hash, rows
    seconds: float
    version: str = "1"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "version": self.version, "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "history": self.history, "metrics": self.metrics, "parties": self.parties,
            "seconds": round(self.seconds, 3),
        }


class _Arbiter:
    """The coordinator's key: decrypts the masked per-slot values parties send it."""

    def __init__(self) -> None:
        self.sk = he.CkksSecretContext.generate(he.DOT)

    def slot_sums(self, frames: Sequence[Frame], dim: int) -> np.ndarray:
        out = np.zeros(dim)
        for f in frames:
            if f.type != F_CKKS:
                continue
            if f.tag >= dim:
                raise ProtocolError(f"vertical: gradient column {f.tag} out of range")
            out[f.tag] += float(he.decrypt_vector(self.sk, he.EncryptedVector.from_bytes(self.sk, f.body)).sum())
        return out

    def slots(self, frame: Frame) -> np.ndarray:
        return he.decrypt_vector(self.sk, he.EncryptedVector.from_bytes(self.sk, frame.body))


def run_vertical(
    channel: PartyChannel,
    run_id: str,
    lenders: Sequence[str],
    platform: str,
    psi_runs: Mapping[str, str],
    config: VerticalConfig | None = None,
    *,
    workdir: Path,
    version: str = "1",
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> VerticalResult:
    """Train (or, with ``resume``, continue from the last checkpointed epoch) a joint logistic model.

    ``workdir/<run_id>/vertical.json`` holds the coordinator's checkpoint (config, history, best epoch);
    each party checkpoints its own slice. Any party failing fails the run with its name in the error.
    """
    say = progress or (lambda _m: None)
    ckpt_path = Path(workdir) / run_id / "vertical.json"
    if resume:
        try:
            ck = json.loads(ckpt_path.read_text())
        except FileNotFoundError:
            raise NotFound(f"vertical run {run_id!r} has no checkpoint to resume from") from None
        config = VerticalConfig(**ck["config"])
        lenders, platform, psi_runs = ck["lenders"], ck["platform"], ck["psi_runs"]
        version = ck["version"]
    else:
        ck = {"epoch": -1, "history": [], "best_loss": None, "best_epoch": -1, "bad": 0}
    cfg = config or VerticalConfig()
    cfg.check()
    lenders = list(lenders)
    if not lenders or platform in lenders or len(set(lenders)) != len(lenders):
        raise InvalidInput("vertical: need one or more distinct lenders and a platform that is not a lender")
    missing = [n for n in lenders if n not in psi_runs]
    if missing:
        raise InvalidInput(f"vertical: no PSI run for lenders {', '.join(missing)}")
    everyone = [*lenders, platform]
    t0 = time.monotonic()
    arb = _Arbiter()

    def task(kind: str, params: Mapping[str, JSONValue], payload: Iterable[bytes] | None = None) -> Task:
        return Task(kind, params, run_id=run_id, timeout_s=cfg.timeout_s, payload=payload)

    def run_one(party: str, t: Task) -> TaskResult:
        return channel.run(party, t)

    try:
        base = {"lenders": lenders, "platform": platform, "psi_runs": dict(psi_runs), "seed": cfg.seed,
                "val_fraction": cfg.val_fraction, "dataset": cfg.dataset, "encoding": cfg.encoding,
                "binning_run": cfg.binning_run, "min_iv": cfg.min_iv}
        pub = arb.sk.public_context().serialize()
        setup = channel.run_all({
            n: task(SETUP, {**base, "role": "platform" if n == platform else "lender"}, [pub]) for n in everyone
        })
        rows = {n: int(setup[n].params["rows"][n]) for n in lenders}
        train_rows = {n: int(setup[n].params["train_rows"][n]) for n in lenders}
        for n in lenders:
            if int(setup[platform].params["rows"][n]) != rows[n]:
                raise ProtocolError(
                    f"vertical: lender {n!r} has {rows[n]} aligned rows but the platform has "
                    f"{setup[platform].params['rows'][n]} for PSI run {psi_runs[n]!r}"
                )
            if train_rows[n] < 1:
                raise InvalidInput(f"vertical: lender {n!r} has no training rows")
        steps = max(1, max(math.ceil(train_rows[n] / cfg.batch_size) for n in lenders))
        keys = {n: setup[n].params["envelope_key"] for n in everyone}  # signed announcements, relayed as-is
        sealed: dict[str, JSONValue] = {}
        if len(lenders) > 1:
            sealed = dict(run_one(lenders[0], task(KEYS, {"keys": keys})).params["sealed_seed"])
        start_params = {"keys": keys, "steps": steps, "train_rows": train_rows, "lr": cfg.lr, "l2": cfg.l2,
                        "resume_epoch": int(ck["epoch"]) if resume else -1}
        started = channel.run_all({
            n: task(START, {**start_params, "sealed_seed": sealed.get(n, {})}) for n in everyone
        })
        moments: list[int] | None = None
        for n in lenders:
            fr = _one(_frames(started[n]), F_U128)
            if fr is None:
                raise ProtocolError(f"vertical: lender {n!r} sent no masked moments")
            vals = u128_of(fr)
            moments = vals if moments is None else [(a + b) % MOD for a, b in zip(moments, vals, strict=True)]
        assert moments is not None
        channel.run_all({n: task(SCALER, {}, frames_bytes([u128_frame(0, moments)])) for n in lenders})
        dim_p = int(started[platform].params["dim"])
        dim_l = int(started[lenders[0]].params["dim"])
        sizes = {n: batch_sizes(train_rows[n], steps) for n in lenders}
        say(f"vertical run {run_id}: {len(lenders)} lender(s) + {platform}, {sum(rows.values())} aligned rows, "
            f"{steps} steps per epoch")

        carry_p: list[Frame] = []
        carry_l: list[Frame] = []
        history: list[dict[str, float]] = list(ck["history"])
        first_epoch = int(ck["epoch"]) + 1
        epoch = first_epoch - 1
        for epoch in range(first_epoch, cfg.epochs):
            te = time.monotonic()
            for step in range(steps):
                sp = {"epoch": epoch, "step": step, "total": sum(sizes[n][step] for n in lenders)}
                fwd = run_one(platform, task(FORWARD, sp, frames_bytes(carry_p)))
                ufr = {f.tag: f for f in _frames(fwd) if f.type == F_SEALED}
                if set(ufr) != set(range(len(lenders))):
                    raise CorruptResult(platform, FORWARD, f"sealed scores for {len(ufr)} of {len(lenders)} lenders")
                res = channel.run_all({
                    n: task(RESIDUAL, sp, frames_bytes([ufr[i], *carry_l])) for i, n in enumerate(lenders)
                })
                lender_frames, ab_frames = _split_sealed(res, lenders)
                back = run_one(platform, task(BACKWARD, sp, frames_bytes(ab_frames)))
                carry_p = [f64_frame(1, arb.slot_sums(_frames(back), dim_p))]
                carry_l = [f64_frame(1, arb.slot_sums(lender_frames, dim_l))]
            val_loss, _ = _validate(channel, arb, task, lenders, platform, epoch, carry_p, carry_l, final=False)
            carry_p, carry_l = [], []
            n_val = sum(rows[n] - train_rows[n] for n in lenders)
            mean_loss = val_loss / max(n_val, 1)
            best = ck["best_loss"]
            improved = best is None or mean_loss < best - cfg.min_delta
            if improved:
                ck["best_loss"], ck["best_epoch"], ck["bad"] = mean_loss, epoch, 0
            else:
                ck["bad"] = int(ck["bad"]) + 1
            channel.run_all({n: task(CHECKPOINT, {"epoch": epoch, "improved": improved}) for n in everyone})
            secs = time.monotonic() - te
            history.append({"epoch": epoch, "val_loss": round(mean_loss, 6), "seconds": round(secs, 3)})
            ck.update(epoch=epoch, history=history)
            _save_ckpt(ckpt_path, ck, cfg, lenders, platform, psi_runs, version)
            say(f"epoch {epoch + 1}/{cfg.epochs}: validation loss {mean_loss:.5f}"
                f"{' (best)' if improved else ''} ({secs:.2f} s)")
            if on_epoch:
                on_epoch(EpochReport(epoch, cfg.epochs, mean_loss, secs, improved))
            if int(ck["bad"]) >= cfg.patience:
                say(f"early stop: no improvement for {cfg.patience} epochs")
                break
        _, metrics = _validate(channel, arb, task, lenders, platform, epoch + 1, [], [], final=True)
        channel.run_all({n: task(FINISH, {"version": version}) for n in everyone})
    except FedcreditError:
        _abort(channel, everyone, run_id)
        raise
    parties = {
        n: {"role": "platform" if n == platform else "lender", "features": list(setup[n].params["features"]),
            "dataset": str(setup[n].params["dataset"]), "data_hash": str(setup[n].params["data_hash"]),
            "rows": int(sum(dict(setup[n].params["rows"]).values()))}
        for n in everyone
    }
    say(f"vertical run {run_id} done: best epoch {int(ck['best_epoch']) + 1}, "
        + ", ".join(f"{n} AUC {m.get('auc', float('nan')):.4f}" for n, m in metrics.items()))
    return VerticalResult(run_id, len(ck["history"]), int(ck["best_epoch"]), ck["history"], metrics, parties,
                          time.monotonic() - t0, version)


def _frames(result: TaskResult) -> list[Frame]:
    """A party's reply payload as frames; a malformed one is that party's :class:`CorruptResult`."""
    try:
        return parse_frames(result.read_payload())
    except CorruptResult:
        raise
    except ProtocolError as exc:
        log.warning("vertical: %s sent a malformed %s reply: %s", result.party, result.kind, exc)
        raise CorruptResult(result.party, result.kind, str(exc)) from None


def _split_sealed(res: Mapping[str, TaskResult], lenders: Sequence[str]) -> tuple[list[Frame], list[Frame]]:
    """(frames for the arbiter, sealed frames for the platform re-tagged 2i, 2i+1 by lender index)."""
    mine: list[Frame] = []
    sealed: list[Frame] = []
    for i, n in enumerate(lenders):
        for f in _frames(res[n]):
            if f.type == F_SEALED:
                if f.tag not in (0, 1):
                    raise ProtocolError(f"vertical: lender {n!r} sent an unexpected sealed frame")
                sealed.append(Frame(F_SEALED, 2 * i + f.tag, f.body))
            else:
                mine.append(f)
    return mine, sealed


def _validate(channel: PartyChannel, arb: _Arbiter, task: TaskFn, lenders: Sequence[str], platform: str,
              epoch: int, carry_p: list[Frame], carry_l: list[Frame], *,
              final: bool) -> tuple[float, dict[str, dict[str, float]]]:
    """The exact validation log-loss summed over every lender's validation rows (or, ``final``: each
    lender's metrics of the best model, from the masked joint scores)."""
    if final:
        ev = channel.run(platform, task(EVAL_PLATFORM, {"epoch": epoch, "final": True}))
        ufr = {f.tag: f for f in _frames(ev) if f.type == F_SEALED}
        res = channel.run_all({
            n: task(EVAL_LENDER, {"epoch": epoch, "final": True}, frames_bytes([ufr[i]] if i in ufr else []))
            for i, n in enumerate(lenders)
        })
        reveal = {}
        for n in lenders:
            fr = _one(_frames(res[n]), F_CKKS)
            if fr is not None:
                reveal[n] = task(REVEAL, {}, frames_bytes([f64_frame(0, arb.slots(fr))]))
        return 0.0, {n: dict(r.params.get("metrics", {})) for n, r in channel.run_all(reveal).items()}
    res = channel.run_all({
        n: task(EVAL_LENDER, {"epoch": epoch, "final": False}, frames_bytes(carry_l)) for n in lenders
    })
    mine, sealed = _split_sealed(res, lenders)
    if mine:
        raise ProtocolError("vertical: a lender sent the arbiter validation terms (it sends only sealed ones)")
    ev = channel.run(platform, task(EVAL_PLATFORM, {"epoch": epoch, "final": False},
                                    frames_bytes([*carry_p, *sealed])))
    # one masked, folded ciphertext per lender; its slots sum to that lender's exact validation log-loss
    loss = float(arb.slot_sums(_frames(ev), 1)[0])
    return loss, {}


TaskFn = Callable[..., Task]


def _save_ckpt(path: Path, ck: Mapping[str, Any], cfg: VerticalConfig, lenders: Sequence[str], platform: str,
               psi_runs: Mapping[str, str], version: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {**ck, "config": cfg.__dict__, "lenders": list(lenders), "platform": platform,
           "psi_runs": dict(psi_runs), "version": version}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def _abort(channel: PartyChannel, parties: Sequence[str], run_id: str) -> None:
    for n in parties:
        try:
            channel.run(n, Task(ABORT, {}, run_id=run_id, timeout_s=10.0))
        except FedcreditError:
            pass
