"""The horizontal training driver: key set-up, federated scaler, rounds and registration (package docstring)."""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx

from fedcore.errors import InvalidInput, NotFound, ProtocolError
from fedcore.protocol import horizontal as hz
from fedcore.protocol.channel import PartyChannel
from fedcore.protocol.horizontal.checkpoints import (
    CheckpointStore,
    FileCheckpointStore,
    arrays_from_bytes,
    arrays_to_bytes,
)
from fedcore.protocol.horizontal.flower import ChannelGrid, set_task_identity
from fedcore.protocol.horizontal.strategy import SecureAggregation, TrainingAborted

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class DpConfig:
    """Per-party clipping of the update norm (``clip``) and Gaussian noise ``noise_multiplier·clip``."""

    clip: float = 1.0
    noise_multiplier: float = 1.0
    delta: float = 1e-5


@dataclass(frozen=True)
class JobSpec:
    """Everything needed to (re)start a run; persisted with the run so that ``resume`` needs only the id."""

    run_id: str
    parties: tuple[str, ...]
    rounds: int = 10
    strategy: str = "fedavg"  # "fedavg" | "fedprox"
    proximal_mu: float = 0.01
    min_parties: int = 2
    version: str = "1"
    round_timeout_s: float = 600.0
    task_timeout_s: float = 600.0
    dp: DpConfig | None = None
    params: hz.TrainParams = field(default_factory=hz.TrainParams)

    def __post_init__(self) -> None:
        if self.strategy not in ("fedavg", "fedprox"):
            raise InvalidInput(f"strategy must be 'fedavg' or 'fedprox', got {self.strategy!r}")
        if self.rounds < 1:
            raise InvalidInput("rounds must be >= 1")
        if self.min_parties < 1:
            raise InvalidInput("min_parties must be >= 1")
        if self.parties and self.min_parties > len(self.parties):
            raise InvalidInput(f"min_parties={self.min_parties} exceeds the {len(self.parties)} parties named")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["parties"] = list(self.parties)
        d["params"] = self.params.to_config()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JobSpec:
        kw = dict(d)
        kw["parties"] = tuple(kw.get("parties", ()))
        kw["params"] = hz.TrainParams.from_config(kw.get("params", {}))
        dp = kw.get("dp")
        kw["dp"] = DpConfig(**dp) if dp else None
        return cls(**kw)


@dataclass
class RoundReport:
    """What ``on_round`` receives after each completed round."""

    run_id: str
    round: int
    rounds: int
    train: dict[str, float]
    evaluate: dict[str, float]
    parties: list[str]
    seconds: float
    dropped: list[str] = field(default_factory=list)  # parties of the run that did not answer this round

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelRecord:
    """The registration record of a trained model (held by the coordinator; the model itself is not)."""

    run_id: str
    version: str
    model: str
    rounds: int
    metrics: dict[str, float]
    parties: list[str]
    data_sha256: dict[str, str]
    model_sha256: str
    secure: str
    strategy: str
    history: list[dict[str, Any]]
    dp: dict[str, Any] | None = None
    # parties that dropped out: {"party", "round" (the first round without it), "at" (unix time)}
    dropped: list[dict[str, Any]] = field(default_factory=list)
    best_round: int | None = None  # the round whose model is registered (best validation AUC)
    # Platt (a, b) folded into the stored model (horizontal.calibration); None: trained with calibrate off
    calibration: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -------------------------------------------------------------------------------------- persistence


@dataclass
class Hooks:
    """What the run reports to: checkpoint store (optional) and per-round callback (optional)."""

    store: CheckpointStore | None = None
    on_round: Callable[[RoundReport], None] | None = None


def _names(grid: Grid) -> Callable[[int], str]:
    if isinstance(grid, ChannelGrid):
        return grid.party_of
    return lambda n: f"node-{n}"


def _query(
    grid: Grid,
    spec: JobSpec,
    msg_type: str,
    per_node: Mapping[int, Mapping[str, Any]],
    arrays: ArrayRecord | None = None,
    records: Mapping[str, ArrayRecord] | None = None,
) -> dict[int, Message]:
    """Send ``msg_type`` to each node with its extra config (and ``arrays``, and more array
    ``records`` by name); return the successful replies by node."""
    name_of = _names(grid)
    base = spec.params.to_config()
    msgs: list[Message] = []
    for node, extra in per_node.items():
        content: dict[str, Any] = {"config": ConfigRecord({**base, "fc-self": name_of(node), **extra})}
        if arrays is not None:
            content["arrays"] = arrays
        content.update(records or {})
        msgs.append(Message(RecordDict(content), node, msg_type))
    out: dict[int, Message] = {}
    for reply in grid.send_and_receive(msgs, timeout=spec.round_timeout_s):
        if reply.has_error():
            log.warning("%s failed at node %d: %s", msg_type, reply.metadata.src_node_id, reply.error.reason)
            continue
        out[reply.metadata.src_node_id] = reply
    return out


def _rep(msg: Message) -> Mapping[str, Any]:
    return cast(Mapping[str, Any], msg.content["reply"])


def _online(grid: Grid, spec: JobSpec) -> list[int]:
    nodes = sorted(grid.get_node_ids(), key=lambda n: _names(grid)(n))
    if len(nodes) < spec.min_parties:
        raise TrainingAborted(f"only {len(nodes)} parties online, the run needs at least {spec.min_parties}")
    return nodes


def _need(spec: JobSpec, step: str, got: Mapping[int, Any]) -> None:
    if len(got) < spec.min_parties:
        raise TrainingAborted(f"{step}: {len(got)} parties answered, the run needs at least {spec.min_parties}")


def setup_keys(grid: Grid, spec: JobSpec) -> Any:
    """Step 1: share a CKKS secret context among the parties; returns the public context."""
    from fedcore.crypto.he import CkksPublicContext

    name_of = _names(grid)
    nodes = _online(grid, spec)
    pubs = _query(grid, spec, hz.MSG_ENVKEY, {n: {} for n in nodes})
    _need(spec, "envelope keys", pubs)
    holders = sorted(pubs, key=name_of)
    creator, others = holders[0], holders[1:]
    rep = _query(
        grid,
        spec,
        hz.MSG_KEYGEN,
        {
            creator: {
                "fc-recipients": [name_of(n) for n in others],
                "fc-anns": [str(_rep(pubs[n])["ann"]) for n in others],
            }
        },
    )
    if creator not in rep:
        raise TrainingAborted(f"key generation failed at {name_of(creator)!r}")
    kg = _rep(rep[creator])
    public = CkksPublicContext.from_bytes(bytes(kg["public-ctx"]))  # type: ignore[arg-type]
    fingerprint = str(kg["fingerprint"])
    if public.fingerprint() != fingerprint:
        raise ProtocolError("the creator's public context does not match its fingerprint")
    envelopes = list(kg["envelopes"])  # type: ignore[arg-type]
    if len(envelopes) != len(others):
        raise ProtocolError("the creator returned the wrong number of envelopes")
    installed = _query(
        grid,
        spec,
        hz.MSG_KEYINSTALL,
        {
            n: {"fc-sender": name_of(creator), "fc-envelope": str(e), "fc-fingerprint": fingerprint}
            for n, e in zip(others, envelopes, strict=True)
        },
    )
    for n, r in installed.items():
        if str(_rep(r)["fingerprint"]) != fingerprint:
            raise ProtocolError(f"party {name_of(n)!r} installed a different CKKS context")
    _need(spec, "key installation", {creator: 1, **installed})
    return public


def federated_scaler(grid: Grid, spec: JobSpec, public_ctx: Any) -> int:
    """Step 2: federated standardisation; returns the number of features."""
    name_of = _names(grid)
    nodes = _online(grid, spec)
    stats = _query(grid, spec, hz.MSG_STATS, {n: {} for n in nodes})
    _need(spec, "statistics", stats)
    schemas = {str(_rep(r)["schema"]) for r in stats.values()}
    if len(schemas) != 1:
        raise TrainingAborted(
            "parties do not share a feature schema: "
            + ", ".join(f"{name_of(n)}={str(r.content['reply']['schema'])[:12]}" for n, r in stats.items())
        )
    exps = np.max(np.array([list(_rep(r)["exp"]) for r in stats.values()]), axis=0)  # type: ignore[arg-type]
    extra = {"fc-exp": [int(e) for e in exps]}
    moments = _query(grid, spec, hz.MSG_MOMENTS, {n: extra for n in stats})
    _need(spec, "moments", moments)
    recs = [moments[n].content["arrays"] for n in sorted(moments)]
    if public_ctx is not None:
        total = hz.sum_encrypted(public_ctx, recs)  # type: ignore[arg-type]
    else:
        total = ArrayRecord([np.sum([cast(ArrayRecord, r).to_numpy_ndarrays()[0] for r in recs], axis=0)])
    scal = _query(grid, spec, hz.MSG_SCALER, {n: extra for n in moments}, arrays=total)
    _need(spec, "scaler", scal)
    if len({str(_rep(r)["scaler"]) for r in scal.values()}) != 1:
        raise ProtocolError("parties derived different scalers from the same aggregate")
    return len(exps)


def initial_arrays(spec: JobSpec, n_features: int) -> ArrayRecord:
    import torch

    from models.nets import build_model, get_weights

    torch.manual_seed(spec.params.seed)
    model = build_model(spec.params.model, n_features, **spec.params.model_kwargs)  # type: ignore[arg-type]
    return ArrayRecord(get_weights(model))




def run_horizontal(grid: Grid, spec: JobSpec, hooks: Hooks | None = None, *, resume: bool = False) -> ModelRecord:
    """The whole protocol against any Flower grid. ``resume``: continue from the store's last
    checkpoint (the parties keep their key and scaler for the run)."""
    hooks = hooks or Hooks()
    set_task_identity(grid.run.run_id)
    name_of = _names(grid)
    store = hooks.store
    history: list[dict[str, Any]] = []
    done = 0
    public_ctx: Any = None
    arrays: ArrayRecord
    if resume:
        if store is None:
            raise InvalidInput("resume needs a checkpoint store")
        ck = store.latest_checkpoint(spec.run_id)
        if ck is None:
            raise NotFound(f"run {spec.run_id!r} has no completed round to resume from")
        done, raw, meta = ck
        arrays = arrays_from_bytes(raw)
        history = list(meta.get("history", []))
        if spec.params.secure == "he":
            from fedcore.crypto.he import CkksPublicContext

            blob = store.load_blob(spec.run_id, "ckks-public")
            if blob is None:
                raise NotFound(f"run {spec.run_id!r} has no stored public CKKS context")
            public_ctx = CkksPublicContext.from_bytes(blob)
    else:
        if store is not None:
            store.save_spec(spec.run_id, spec.to_dict())
        if spec.params.secure == "he":
            public_ctx = setup_keys(grid, spec)
            if store is not None:
                store.save_blob(spec.run_id, "ckks-public", public_ctx.serialize())
        n_features = federated_scaler(grid, spec, public_ctx)
        arrays = initial_arrays(spec, n_features)

    current: dict[str, Any] = {}
    t_round = [time.perf_counter()]
    # Who the run started with, and who left it when: the run record says so, not only the log.
    if resume:
        members = set(history[0]["parties"]) if history else {name_of(n) for n in _online(grid, spec)}
        dropped = [d for h in history for d in h.get("dropped_at", [])]
    else:
        members = {name_of(n) for n in _online(grid, spec)}
        dropped = []

    def drop_out(names: set[str], rnd: int) -> list[dict[str, Any]]:
        gone = {d["party"] for d in dropped}
        new = [{"party": p, "round": rnd, "at": time.time()} for p in sorted(names - gone)]
        for d in new:
            log.warning("run %s: party %r dropped out in round %d", spec.run_id, d["party"], rnd)
        dropped.extend(new)
        return new

    # The model registered is the round with the best validation AUC (as vertical training keeps its
    # best epoch), not the last; on a resumed run, among the rounds run since the resume.
    best: dict[str, Any] = {}

    def on_train(rnd: int, metrics: dict[str, float], nodes: list[int]) -> None:
        current.update(round=rnd, train=metrics, parties=sorted(name_of(n) for n in nodes))

    def on_evaluate(rnd: int, metrics: dict[str, float], nodes: list[int]) -> None:
        current.update(evaluate=metrics)

    def after_round(server_round: int, agg: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            return None
        rnd = server_round + done
        report = RoundReport(
            run_id=spec.run_id,
            round=rnd,
            rounds=spec.rounds,
            train=dict(current.get("train", {})),
            evaluate=dict(current.get("evaluate", {})),
            parties=list(current.get("parties", [])),
            seconds=time.perf_counter() - t_round[0],
        )
        new = drop_out(members - set(report.parties), rnd)
        report.dropped = sorted(members - set(report.parties))
        history.append(report.to_dict() | {"dropped_at": new})
        score = report.evaluate.get("val-auc")
        if score is not None and ("auc" not in best or float(score) > best["auc"]):
            best.update(auc=float(score), round=rnd, arrays=agg, report=history[-1])
        if store is not None:
            store.save_checkpoint(spec.run_id, rnd, arrays_to_bytes(agg), {"round": rnd, "history": history})
        if hooks.on_round is not None:
            hooks.on_round(report)
        current.clear()
        t_round[0] = time.perf_counter()
        return None

    remaining = spec.rounds - done
    if remaining > 0:
        kw: dict[str, Any] = {
            "min_train_nodes": spec.min_parties,
            "min_evaluate_nodes": spec.min_parties,
            "min_available_nodes": spec.min_parties,
        }
        inner: FedAvg = FedProx(proximal_mu=spec.proximal_mu, **kw) if spec.strategy == "fedprox" else FedAvg(**kw)
        strategy = SecureAggregation(
            inner,
            public_ctx=public_ctx,
            min_parties=spec.min_parties,
            round_offset=done,
            on_train=on_train,
            on_evaluate=on_evaluate,
            name_of=name_of,
        )
        random.seed(spec.params.seed)  # Flower samples node order with `random`
        cfg = spec.params.to_config()
        t_round[0] = time.perf_counter()
        result = strategy.start(
            grid,
            arrays,
            num_rounds=remaining,
            timeout=spec.round_timeout_s,
            train_config=ConfigRecord(dict(cfg)),
            evaluate_config=ConfigRecord(dict(cfg)),
            evaluate_fn=after_round,
        )
        arrays = best.get("arrays", result.arrays)

    # Step 5: calibration (federated Platt on the training rows), folded into the model the parties store.
    calibration = None
    save_cfg: dict[str, Any] = {"fc-version": spec.version}
    if spec.params.calibrate:
        from fedcore.protocol.horizontal.calibration import federated_platt

        calibration = federated_platt(grid, spec, arrays, public_ctx)
        save_cfg.update({"fc-calib-a": calibration["a"], "fc-calib-b": calibration["b"]})
    # Step 6: the parties decrypt and store the best round's model.
    saved = _query(grid, spec, hz.MSG_SAVE, {n: save_cfg for n in _online(grid, spec)}, arrays)
    _need(spec, "model registration", saved)
    drop_out(members - {name_of(n) for n in saved}, spec.rounds)
    model_hashes = {str(_rep(r)["model-sha256"]) for r in saved.values()}
    if len(model_hashes) != 1:
        raise ProtocolError("parties decrypted different final models")
    kept = best.get("report") or (history[-1] if history else {})
    metrics = {f"val_{k.removeprefix('val-')}": v for k, v in kept.get("evaluate", {}).items()}
    dp = None
    if spec.dp is not None:
        dp = asdict(
            hz.DpReport(
                epsilon=hz.dp_epsilon(spec.dp.noise_multiplier, spec.rounds, spec.dp.delta),
                delta=spec.dp.delta,
                noise_multiplier=spec.dp.noise_multiplier,
                clip=spec.dp.clip,
                rounds=spec.rounds,
            )
        )
    return ModelRecord(
        run_id=spec.run_id,
        version=spec.version,
        model=spec.params.model,
        rounds=spec.rounds,
        metrics=metrics,
        parties=sorted(name_of(n) for n in saved),
        data_sha256={name_of(n): str(_rep(r)["data-sha256"]) for n, r in saved.items()},
        model_sha256=model_hashes.pop(),
        secure=spec.params.secure,
        strategy=spec.strategy,
        history=history,
        dp=dp,
        dropped=dropped,
        best_round=int(kept["round"]) if kept else None,
        calibration=calibration,
    )


# ------------------------------------------------------------------------------- run lifecycle (API)


class HorizontalJob:
    """A horizontal training run over a :class:`PartyChannel` (what ``fedcredit coordinator train`` runs).

    ``store``: a :class:`CheckpointStore` (or a folder, for :class:`FileCheckpointStore`);
    ``on_round``: called with a :class:`RoundReport` after every round. Hyper-parameters not named
    here go to :class:`~fedcore.protocol.horizontal.TrainParams` (``lr``, ``local_epochs``,
    ``batch_size``, ``seed``, ``hidden``, ``val_fraction``, ...).
    """

    def __init__(
        self,
        channel: PartyChannel,
        store: CheckpointStore | Path | None,
        parties: Sequence[str],
        *,
        model: str = "mlp",
        rounds: int = 10,
        strategy: str = "fedavg",
        secure: str = "he",
        min_parties: int = 2,
        dp: DpConfig | None = None,
        run_id: str | None = None,
        version: str = "1",
        proximal_mu: float = 0.01,
        on_round: Callable[[RoundReport], None] | None = None,
        round_timeout_s: float = 600.0,
        task_timeout_s: float = 600.0,
        **hyper: Any,
    ) -> None:
        defaults = {"lr": 1e-2, "local_epochs": 1} if model == "logistic" else {"lr": 3e-3, "local_epochs": 2}
        run = run_id or f"hz-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        params = hz.TrainParams(run=run, model=model, secure=secure, **{**defaults, **hyper})
        if dp is not None:
            params = params.replace(dp_clip=dp.clip, dp_noise_multiplier=dp.noise_multiplier)
        self.spec = JobSpec(
            run_id=run,
            parties=tuple(parties),
            rounds=rounds,
            strategy=strategy,
            proximal_mu=proximal_mu,
            min_parties=min_parties,
            version=version,
            dp=dp,
            params=params,
            round_timeout_s=round_timeout_s,
            task_timeout_s=task_timeout_s,
        )
        self.channel = channel
        self.store: CheckpointStore | None = FileCheckpointStore(store) if isinstance(store, Path) else store
        self.on_round = on_round
        self.grid: ChannelGrid | None = None

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    def _grid(self) -> ChannelGrid:
        self.grid = ChannelGrid(
            self.channel, self.spec.parties, self.spec.run_id, task_timeout_s=self.spec.task_timeout_s
        )
        return self.grid

    def run(self) -> ModelRecord:
        return run_horizontal(self._grid(), self.spec, Hooks(self.store, self.on_round))

    @classmethod
    def resume(
        cls,
        channel: PartyChannel,
        store: CheckpointStore | Path,
        run_id: str,
        *,
        on_round: Callable[[RoundReport], None] | None = None,
    ) -> ModelRecord:
        """Continue ``run_id`` from its last completed round (spec and checkpoints from ``store``)."""
        st: CheckpointStore = FileCheckpointStore(store) if isinstance(store, Path) else store
        job = cls.__new__(cls)
        job.spec = JobSpec.from_dict(st.load_spec(run_id))
        job.channel = channel
        job.store = st
        job.on_round = on_round
        return run_horizontal(job._grid(), job.spec, Hooks(st, on_round), resume=True)


# ------------------------------------------------------------------------- ServerApp for `flwr run`
