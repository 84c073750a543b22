"""Party side of horizontal federated training: the Flower ``ClientApp`` and its party-link handler.

The coordinator sends each Flower ``Message`` as a :data:`~fedcore.protocol.horizontal.FLOWER_TASK`
task; :func:`register_training_handlers` installs the handler that deserializes it (Flower protobuf
serde), runs :data:`client_app` in-process on this party's local data and returns the serialized
reply. The same :data:`client_app` runs unchanged under ``flwr run`` (Flower's SuperNode), where it
finds its data and state folder in the node config (``data-file``, ``state-dir``); its protocol name
there is ``node-<node id>``.

What stays at this party: its rows, its scaler inputs, every locally trained weight vector, the
envelope private key and the shared CKKS secret context (memory, and a 0600 file under the state
folder when one is configured), the decrypted global model (saved under
``<model dir>/<run>/<version>/``). What leaves (see :mod:`fedcore.protocol.horizontal` for the full
table): in HE mode only ciphertexts, public keys, sealed envelopes, row counts, validation metrics,
feature orders of magnitude and hashes.

``data_provider(run_params) -> (X_train, y_train, X_val, y_val, feature_names)`` supplies the rows;
:func:`csv_data_provider` reads a FATE-style CSV (``id, y, x0..``) with a deterministic stratified
validation split.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcore.errors import InvalidInput, NotFound, ProtocolError
from fedcore.protocol import horizontal as hz
from fedcore.protocol.messages import JSONValue, TaskReply
from fedcore.protocol.tasks import HandlerRegistry, TaskContext
from fedcore.secret import write_private_file

__all__ = [
    "DataProvider",
    "PartyTrainingEnv",
    "client_app",
    "csv_data_provider",
    "register_training_handlers",
]

DataSplit = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Sequence[str]]
DataProvider = Callable[[Mapping[str, Any]], DataSplit]


# ------------------------------------------------------------------------------------- data providers


def stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified (train_idx, val_idx)."""
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for c in (0, 1):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        val.append(idx[: round(len(idx) * val_fraction)])
    val_idx = np.sort(np.concatenate(val))
    mask = np.ones(len(y), dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def csv_data_provider(path: str | Path, label: str = "y", drop: Sequence[str] = ("id",)) -> DataProvider:
    """Rows from a CSV with a 0/1 ``label`` column; every other column but ``drop`` is a feature.
    The validation split uses ``run_params['fc-val-fraction']`` and ``['fc-seed']``."""
    import pandas as pd

    p = Path(path)

    def provide(run_params: Mapping[str, Any]) -> DataSplit:
        if not p.is_file():
            raise NotFound(f"training data file {p} does not exist")
        df = pd.read_csv(p)
        if label not in df.columns:
            raise InvalidInput(f"{p}: no label column {label!r}")
        feats = [c for c in df.columns if c != label and c not in drop]
        X = df[feats].to_numpy(dtype=np.float64)
        y = df[label].to_numpy(dtype=np.int64)
        vf = float(run_params.get("fc-val-fraction", 0.2))
        tr, va = stratified_split(y, vf, int(run_params.get("fc-seed", 0)))
        return X[tr], y[tr], X[va], y[va], feats

    return provide


# ------------------------------------------------------------------------------------------- state


@dataclass
class _RunState:
    env_key: Any = None  # EnvelopePrivateKey
    ckks: Any = None  # CkksSecretContext
    scaler: Any = None  # models.train.Scaler
    data: DataSplit | None = None
    data_sha256: str = ""


class PartyTrainingEnv:
    """One party's training environment: name, data provider, per-run secrets, model folder.

    ``state_dir`` (optional) keeps per-run secrets in 0600 files so a restarted node (or Flower's
    process-per-message ClientApp) can continue a run; ``model_dir`` receives the final models.
    """

    def __init__(
        self,
        data_provider: DataProvider,
        *,
        party: str | None = None,
        state_dir: Path | None = None,
        model_dir: Path | None = None,
    ) -> None:
        self.data_provider = data_provider
        self.party = party
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.model_dir = (
            Path(model_dir)
            if model_dir is not None
            else (self.state_dir / "models" if self.state_dir is not None else None)
        )
        self._runs: dict[str, _RunState] = {}
        self._lock = threading.Lock()
        self.saved_models: dict[tuple[str, str], list[np.ndarray]] = {}

    # -- per-run state
    def run(self, run: str) -> _RunState:
        with self._lock:
            return self._runs.setdefault(run, _RunState())

    def _dir(self, run: str) -> Path | None:
        if self.state_dir is None:
            return None
        safe = hashlib.sha256(run.encode()).hexdigest()[:24]
        return self.state_dir / "horizontal" / safe

    def put_env_key(self, run: str, key: Any) -> None:
        self.run(run).env_key = key
        d = self._dir(run)
        if d is not None:
            key.save(d / "envelope.pem")

    def env_key(self, run: str) -> Any:
        st = self.run(run)
        if st.env_key is None and (d := self._dir(run)) is not None and (d / "envelope.pem").is_file():
            from fedcore.crypto.envelope import EnvelopePrivateKey

            st.env_key = EnvelopePrivateKey.load(d / "envelope.pem")
        if st.env_key is None:
            raise ProtocolError(f"no envelope key for run {run!r}: key exchange out of order")
        return st.env_key

    def put_ckks(self, run: str, ctx: Any) -> None:
        self.run(run).ckks = ctx
        d = self._dir(run)
        if d is not None:
            write_private_file(d / "ckks.secret", ctx.serialize_for_party())

    def ckks(self, run: str) -> Any:
        st = self.run(run)
        if st.ckks is None and (d := self._dir(run)) is not None and (d / "ckks.secret").is_file():
            from fedcore.crypto.he import CkksSecretContext

            st.ckks = CkksSecretContext.from_party_bytes((d / "ckks.secret").read_bytes())
        if st.ckks is None:
            raise ProtocolError(f"this party holds no CKKS key for run {run!r}")
        return st.ckks

    def put_scaler(self, run: str, scaler: Any) -> None:
        self.run(run).scaler = scaler
        d = self._dir(run)
        if d is not None:
            write_private_file(d / "scaler.json", json.dumps(scaler.to_dict()).encode())

    def scaler(self, run: str) -> Any:
        from models.train import Scaler

        st = self.run(run)
        if st.scaler is None and (d := self._dir(run)) is not None and (d / "scaler.json").is_file():
            st.scaler = Scaler.from_dict(json.loads((d / "scaler.json").read_text()))
        if st.scaler is None:
            raise ProtocolError(f"no federated scaler for run {run!r}: statistics step missing")
        return st.scaler

    def raw_data(self, p: hz.TrainParams, config: Mapping[str, Any]) -> DataSplit:
        st = self.run(p.run)
        if st.data is None:
            Xtr, ytr, Xva, yva, names = self.data_provider(dict(config))
            Xtr, Xva = np.asarray(Xtr, dtype=np.float64), np.asarray(Xva, dtype=np.float64)
            ytr, yva = np.asarray(ytr).astype(np.int64), np.asarray(yva).astype(np.int64)
            if Xtr.ndim != 2 or Xtr.shape[0] != ytr.shape[0] or Xva.shape[1:] != Xtr.shape[1:]:
                raise InvalidInput("data provider returned inconsistent shapes")
            h = hashlib.sha256()
            h.update(json.dumps(list(names)).encode())
            for a in (Xtr, ytr, Xva, yva):
                h.update(np.ascontiguousarray(a).tobytes())
            st.data = (Xtr, ytr, Xva, yva, list(names))
            st.data_sha256 = h.hexdigest()
        return st.data

    def save_model(self, run: str, version: str, weights: list[np.ndarray], meta: dict[str, Any]) -> str:
        self.saved_models[(run, version)] = weights
        if self.model_dir is None:
            return ""
        d = self.model_dir / _safe(run) / _safe(version)
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / "weights.npz", *weights)
        (d / "model.json").write_text(json.dumps(meta, indent=2))
        return str(d)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:64] or "x"


_ENV: contextvars.ContextVar[PartyTrainingEnv | None] = contextvars.ContextVar("fc_training_env", default=None)
_NODE_ENVS: dict[tuple[Any, ...], PartyTrainingEnv] = {}


def _env(context: Context) -> PartyTrainingEnv:
    env = _ENV.get()
    if env is not None:
        return env
    # Under Flower's own runtime: build the environment from the node config.
    nc = context.node_config
    key = tuple(sorted((k, str(v)) for k, v in nc.items()))
    if key not in _NODE_ENVS:
        if "data-file" not in nc:
            raise InvalidInput("node config needs 'data-file' (and 'state-dir') to run fedcredit training")
        state_dir = Path(str(nc["state-dir"])) if "state-dir" in nc else None
        _NODE_ENVS[key] = PartyTrainingEnv(
            csv_data_provider(str(nc["data-file"])),
            party=f"node-{context.node_id}",  # the name Flower's ServerApp side uses for this node
            state_dir=state_dir,
        )
    return _NODE_ENVS[key]


def _self_name(env: PartyTrainingEnv, cfg: Mapping[str, Any]) -> str:
    claimed = str(cfg.get("fc-self", ""))
    if env.party is None:
        if not claimed:
            raise ProtocolError("message does not say which party this is")
        env.party = claimed
    elif claimed and claimed != env.party:
        raise ProtocolError(f"message addressed to {claimed!r} reached party {env.party!r}")
    return env.party


def _config(msg: Message) -> Mapping[str, Any]:
    cfg = msg.content.config_records.get("config")
    if cfg is None:
        raise ProtocolError("message has no 'config' record")
    return cast(Mapping[str, Any], cfg)


def _reply(msg: Message, **records: Any) -> Message:
    return Message(RecordDict(records), reply_to=msg)


# ------------------------------------------------------------------------------------------ ClientApp

client_app = ClientApp()


@client_app.query("fc_envkey")
def _q_envkey(msg: Message, context: Context) -> Message:
    from fedcore.crypto.envelope import EnvelopePrivateKey

    env = _env(context)
    cfg = _config(msg)
    _self_name(env, cfg)
    p = hz.TrainParams.from_config(cfg)
    key = EnvelopePrivateKey.generate()
    env.put_env_key(p.run, key)
    return _reply(msg, reply=ConfigRecord({"pub": key.public_key().to_bytes()}))


def _aad(run: str, sender: str, recipient: str) -> Any:
    from fedcore.crypto.envelope import EnvelopeAad

    return EnvelopeAad(sender=sender, recipient=recipient, purpose=f"fedcredit/horizontal/{run}/ckks")


@client_app.query("fc_keygen")
def _q_keygen(msg: Message, context: Context) -> Message:
    from fedcore.crypto.envelope import EnvelopePublicKey, seal
    from fedcore.crypto.he import SUMS, CkksSecretContext

    env = _env(context)
    cfg = _config(msg)
    me = _self_name(env, cfg)
    p = hz.TrainParams.from_config(cfg)
    recipients = [str(r) for r in cfg.get("fc-recipients", [])]
    pubs = [bytes(b) for b in cfg.get("fc-pubs", [])]
    if len(recipients) != len(pubs):
        raise ProtocolError("fc_keygen: recipients and public keys differ in number")
    ctx = CkksSecretContext.generate(SUMS)
    env.put_ckks(p.run, ctx)
    secret = ctx.serialize_for_party()
    envelopes = [
        seal(EnvelopePublicKey.from_bytes(pub), secret, _aad(p.run, me, r))
        for r, pub in zip(recipients, pubs, strict=True)
    ]
    rec = ConfigRecord(
        {
            "envelopes": envelopes,
            "public-ctx": ctx.public_context().serialize(),
            "fingerprint": ctx.fingerprint(),
        }
    )
    return _reply(msg, reply=rec)


@client_app.query("fc_keyinstall")
def _q_keyinstall(msg: Message, context: Context) -> Message:
    from fedcore.crypto.envelope import open_sealed
    from fedcore.crypto.he import CkksSecretContext

    env = _env(context)
    cfg = _config(msg)
    me = _self_name(env, cfg)
    p = hz.TrainParams.from_config(cfg)
    sender = str(cfg["fc-sender"])
    plain = open_sealed(env.env_key(p.run), bytes(cfg["fc-envelope"]), _aad(p.run, sender, me))
    ctx = CkksSecretContext.from_party_bytes(plain)
    expected = str(cfg.get("fc-fingerprint", ""))
    if expected and ctx.fingerprint() != expected:
        raise ProtocolError("the CKKS context in the envelope does not match the announced fingerprint")
    env.put_ckks(p.run, ctx)
    return _reply(msg, reply=ConfigRecord({"fingerprint": ctx.fingerprint()}))


def _schema_hash(names: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(names)).encode()).hexdigest()


@client_app.query("fc_stats")
def _q_stats(msg: Message, context: Context) -> Message:
    env = _env(context)
    cfg = _config(msg)
    _self_name(env, cfg)
    p = hz.TrainParams.from_config(cfg)
    Xtr, _, _, _, names = env.raw_data(p, cfg)
    mx = np.max(np.abs(Xtr), axis=0) if Xtr.shape[0] else np.zeros(Xtr.shape[1])
    exps = [max(0, math.ceil(math.log2(float(m)))) if m > 1 else 0 for m in mx]
    rec = ConfigRecord({"n": int(Xtr.shape[0]), "schema": _schema_hash(names), "exp": exps})
    return _reply(msg, reply=rec)


@client_app.query("fc_moments")
def _q_moments(msg: Message, context: Context) -> Message:
    env = _env(context)
    cfg = _config(msg)
    _self_name(env, cfg)
    p = hz.TrainParams.from_config(cfg)
    Xtr, _, _, _, _ = env.raw_data(p, cfg)
    scale = np.exp2(np.asarray(cfg["fc-exp"], dtype=np.float64))
    if scale.shape[0] != Xtr.shape[1]:
        raise ProtocolError("fc_moments: exponent count does not match the feature count")
    z = Xtr / scale
    vec = np.concatenate([z.mean(axis=0), (z * z).mean(axis=0)])
    weight = Xtr.shape[0] / p.he_unit
    if p.secure == "he":
        arrays = hz.encrypt_weighted(env.ckks(p.run), vec, weight)
    else:
        arrays = ArrayRecord([np.concatenate([vec * weight, [weight]])])
    return _reply(msg, arrays=arrays)


@client_app.query("fc_scaler")
def _q_scaler(msg: Message, context: Context) -> Message:
    from models.train import Scaler

    env = _env(context)
    cfg = _config(msg)
    _self_name(env, cfg)
    p = hz.TrainParams.from_config(cfg)
    rec = msg.content.array_records["arrays"]
    if p.secure == "he":
        avg = hz.decrypt_average(env.ckks(p.run), rec)
    else:
        (total,) = rec.to_numpy_ndarrays()
        avg = np.asarray(total[:-1] / total[-1], dtype=np.float64)
    scale = np.exp2(np.asarray(cfg["fc-exp"], dtype=np.float64))
    d = scale.shape[0]
    mean = avg[:d] * scale
    ex2 = avg[d:] * scale * scale
    scaler = Scaler.from_moments(1.0, mean, ex2, clip=p.scaler_clip or None)
    env.put_scaler(p.run, scaler)
    digest = hashlib.sha256(np.round(np.concatenate([scaler.mean, scaler.std]), 4).tobytes()).hexdigest()
    return _reply(msg, reply=ConfigRecord({"scaler": digest}))


def _prepared(env: PartyTrainingEnv, p: hz.TrainParams, cfg: Mapping[str, Any]) -> tuple[np.ndarray, ...]:
    Xtr, ytr, Xva, yva, _ = env.raw_data(p, cfg)
    sc = env.scaler(p.run)
    return sc.transform(Xtr), ytr, sc.transform(Xva), yva


def _global_model(env: PartyTrainingEnv, p: hz.TrainParams, n_features: int, rec: ArrayRecord) -> Any:
    import torch

    from models.nets import build_model, flatten, set_weights, unflatten

    model = build_model(p.model, n_features, **p.model_kwargs)  # type: ignore[arg-type]
    if hz.is_encrypted(rec):
        vec = hz.decrypt_average(env.ckks(p.run), rec)
        _, shapes = flatten([t.detach().numpy() for t in model.state_dict().values()])
        set_weights(model, unflatten(vec, shapes))
    else:
        set_weights(model, rec.to_numpy_ndarrays())
    torch.set_num_threads(1)
    return model


def _round_seed(p: hz.TrainParams, server_round: int, party: str) -> int:
    h = hashlib.sha256(f"{p.seed}/{server_round}/{party}".encode()).digest()
    return int.from_bytes(h[:4], "big")


@client_app.train()
def _train(msg: Message, context: Context) -> Message:
    from models.nets import flatten, get_weights
    from models.train import train_local

    env = _env(context)
    cfg = _config(msg)
    me = _self_name(env, cfg)
    p = hz.TrainParams.from_config(cfg)
    server_round = int(cfg.get("server-round", 0))
    Xtr, ytr, _, _ = _prepared(env, p, cfg)
    model = _global_model(env, p, Xtr.shape[1], msg.content.array_records["arrays"])
    global_vec, shapes = flatten(get_weights(model))
    mu = float(cfg.get("proximal-mu", 0.0))
    stats = train_local(
        model,
        Xtr,
        ytr,
        epochs=p.local_epochs,
        batch_size=p.batch_size,
        lr=p.lr,
        optimizer=p.optimizer,  # type: ignore[arg-type]
        proximal_mu=mu,
        seed=_round_seed(p, server_round, me),
    )
    vec, _ = flatten(get_weights(model))
    metrics: dict[str, Any] = {"num-examples": int(stats.n_samples), "train-loss": float(stats.loss)}
    if p.dp_clip > 0:
        rng = np.random.default_rng(_round_seed(p, server_round, me + "/dp"))
        delta, norm = hz.clip_and_noise(vec - global_vec, p.dp_clip, p.dp_noise_multiplier, rng)
        vec = global_vec + delta
        metrics["update-norm"] = norm
    if p.secure == "he":
        arrays = hz.encrypt_weighted(env.ckks(p.run), vec, stats.n_samples / p.he_unit)
    else:
        from models.nets import unflatten

        arrays = ArrayRecord(unflatten(vec, shapes))
    return _reply(msg, arrays=arrays, metrics=MetricRecord(metrics))


@client_app.evaluate()
def _evaluate(msg: Message, context: Context) -> Message:
    from models.metrics import evaluate
    from models.train import predict_proba

    env = _env(context)
    cfg = _config(msg)
    _self_name(env, cfg)
    p = hz.TrainParams.from_config(cfg)
    _, _, Xva, yva = _prepared(env, p, cfg)
    model = _global_model(env, p, Xva.shape[1], msg.content.array_records["arrays"])
    prob = predict_proba(model, Xva)
    m = evaluate(yva, prob)
    eps = 1e-7
    loss = float(-np.mean(yva * np.log(prob + eps) + (1 - yva) * np.log(1 - prob + eps)))
    rec = MetricRecord(
        {"num-examples": len(yva), "val-auc": float(m["auc"]), "val-ks": float(m["ks"]), "val-loss": loss}
    )
    return _reply(msg, metrics=rec)


@client_app.query("fc_save")
def _q_save(msg: Message, context: Context) -> Message:
    from models.nets import get_weights

    env = _env(context)
    cfg = _config(msg)
    _self_name(env, cfg)
    p = hz.TrainParams.from_config(cfg)
    version = str(cfg.get("fc-version", "1"))
    Xtr, _, Xva, _ = _prepared(env, p, cfg)
    model = _global_model(env, p, Xtr.shape[1], msg.content.array_records["arrays"])
    weights = get_weights(model)
    digest = hz.weights_sha256(weights)
    st = env.run(p.run)
    meta = {
        "run": p.run,
        "version": version,
        "params": p.to_config(),
        "scaler": env.scaler(p.run).to_dict(),
        "feature_names": list(st.data[4]) if st.data else [],
        "model_sha256": digest,
        "data_sha256": st.data_sha256,
    }
    path = env.save_model(p.run, version, weights, meta)
    rec = ConfigRecord(
        {
            "model-sha256": digest,
            "data-sha256": st.data_sha256,
            "n-train": int(Xtr.shape[0]),
            "n-val": int(Xva.shape[0]),
            "stored-at-party": bool(path) or (p.run, version) in env.saved_models,
        }
    )
    return _reply(msg, reply=rec)


# ---------------------------------------------------------------------------------- party-link handler


def register_training_handlers(
    registry: HandlerRegistry,
    data_provider: DataProvider,
    *,
    party: str | None = None,
    state_dir: Path | None = None,
    model_dir: Path | None = None,
) -> PartyTrainingEnv:
    """Install the :data:`~fedcore.protocol.horizontal.FLOWER_TASK` handler; returns the environment
    (its ``saved_models`` and ``model_dir`` hold the final models)."""
    env = PartyTrainingEnv(data_provider, party=party, state_dir=state_dir, model_dir=model_dir)

    def handle(ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        msg = hz.decode_message(ctx.read_payload())
        if env.party is None:
            env.party = ctx.party
        node_id = hz.node_id_for(env.party)
        if msg.metadata.dst_node_id != node_id:
            raise ProtocolError("Flower message is addressed to another node")
        ctx.check_cancelled()
        context = Context(
            run_id=msg.metadata.run_id, node_id=node_id, node_config={}, state=RecordDict(), run_config={}
        )
        token = _ENV.set(env)
        try:
            reply = client_app(msg, context)
        finally:
            _ENV.reset(token)
        ctx.check_cancelled()
        return TaskReply(params={"message_type": reply.metadata.message_type}, payload=[hz.encode_message(reply)])

    registry.register(hz.FLOWER_TASK, handle)
    return env
