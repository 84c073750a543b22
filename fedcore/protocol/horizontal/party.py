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

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcore.errors import PermissionDenied, ProtocolError
from fedcore.protocol import horizontal as hz
from fedcore.protocol.horizontal.env import _ENV, DataProvider, PartyTrainingEnv, _env
from fedcore.protocol.messages import JSONValue, TaskReply
from fedcore.protocol.sealing import PartyIdentity, open_from_peer, seal_to_peers, unbound_announcement
from fedcore.protocol.tasks import HandlerRegistry, TaskContext


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


def _begin(msg: Message, context: Context) -> tuple[PartyTrainingEnv, Mapping[str, Any], str, hz.TrainParams]:
    """What every handler starts with: this node's env, the message's config (checked to be addressed to
    this party) and the run's training parameters."""
    env = _env(context)
    cfg = _config(msg)
    me = _self_name(env, cfg)
    return env, cfg, me, hz.TrainParams.from_config(cfg)


def _reply(msg: Message, **records: Any) -> Message:
    return Message(RecordDict(records), reply_to=msg)


# ------------------------------------------------------------------------------------------ ClientApp

client_app = ClientApp()


def _sealer(env: PartyTrainingEnv, me: str) -> PartyIdentity | str:
    """Who seals: this party's certificate-bound identity, or (``trust_relay`` only) its bare name."""
    if env.identity is not None:
        return env.identity
    if not env.trust_relay:
        raise PermissionDenied("HE training needs this party's certificate to bind its keys (or unbound-keys)")
    return me


def _purpose(run: str) -> str:
    return f"horizontal-ckks/{run}"


@client_app.query("fc_envkey")
def _q_envkey(msg: Message, context: Context) -> Message:
    from fedcore.crypto.envelope import EnvelopePrivateKey

    env, _, me, p = _begin(msg, context)
    key = EnvelopePrivateKey.generate()
    env.put_env_key(p.run, key)
    sealer = _sealer(env, me)
    ann = sealer.announcement(key) if isinstance(sealer, PartyIdentity) else unbound_announcement(me, key)
    return _reply(msg, reply=ConfigRecord({"ann": json.dumps(ann)}))


@client_app.query("fc_keygen")
def _q_keygen(msg: Message, context: Context) -> Message:
    from fedcore.crypto.he import SUMS, CkksSecretContext

    env, cfg, me, p = _begin(msg, context)
    recipients = [str(r) for r in cfg.get("fc-recipients", [])]
    anns = [json.loads(str(a)) for a in cfg.get("fc-anns", [])]
    if len(recipients) != len(anns):
        raise ProtocolError("fc_keygen: recipients and key announcements differ in number")
    sealer = _sealer(env, me)
    ctx = CkksSecretContext.generate(SUMS)
    sealed = seal_to_peers(sealer, dict(zip(recipients, anns, strict=True)), ctx.serialize_for_party(),
                           _purpose(p.run), trust_relay=env.trust_relay)
    env.put_ckks(p.run, ctx)
    rec = ConfigRecord(
        {
            "envelopes": [json.dumps(sealed[r]) for r in recipients],
            "public-ctx": ctx.public_context().serialize(),
            "fingerprint": ctx.fingerprint(),
        }
    )
    return _reply(msg, reply=rec)


@client_app.query("fc_keyinstall")
def _q_keyinstall(msg: Message, context: Context) -> Message:
    from fedcore.crypto.he import CkksSecretContext

    env, cfg, me, p = _begin(msg, context)
    sender = str(cfg["fc-sender"])
    plain = open_from_peer(_sealer(env, me), json.loads(str(cfg["fc-envelope"])), sender, _purpose(p.run),
                           env.env_key(p.run), trust_relay=env.trust_relay)
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
    env, cfg, _, p = _begin(msg, context)
    Xtr, _, _, _, names = env.raw_data(p, cfg)
    mx = np.max(np.abs(Xtr), axis=0) if Xtr.shape[0] else np.zeros(Xtr.shape[1])
    exps = [max(0, math.ceil(math.log2(float(m)))) if m > 1 else 0 for m in mx]
    rec = ConfigRecord({"n": int(Xtr.shape[0]), "schema": _schema_hash(names), "exp": exps})
    return _reply(msg, reply=rec)


@client_app.query("fc_moments")
def _q_moments(msg: Message, context: Context) -> Message:
    env, cfg, _, p = _begin(msg, context)
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

    env, cfg, _, p = _begin(msg, context)
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

    env, cfg, me, p = _begin(msg, context)
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

    env, cfg, _, p = _begin(msg, context)
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

    env, cfg, _, p = _begin(msg, context)
    version = str(cfg.get("fc-version", "1"))
    Xtr, _, Xva, _ = _prepared(env, p, cfg)
    model = _global_model(env, p, Xtr.shape[1], msg.content.array_records["arrays"])
    weights = get_weights(model)
    if "fc-calib-a" in cfg:  # the federated Platt fit, folded into the last linear layer
        from fedcore.protocol.horizontal.calibration import fold_platt

        weights = fold_platt(weights, float(cfg["fc-calib-a"]), float(cfg["fc-calib-b"]))
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
        "calibration": ({"method": "platt", "a": float(cfg["fc-calib-a"]), "b": float(cfg["fc-calib-b"])}
                        if "fc-calib-a" in cfg else None),
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


def _q_calib(msg: Message, context: Context) -> Message:
    from fedcore.protocol.horizontal.calibration import handle_calib

    return handle_calib(msg, context)


client_app.query("fc_calib")(_q_calib)


# ---------------------------------------------------------------------------------- party-link handler


def register_training_handlers(
    registry: HandlerRegistry,
    data_provider: DataProvider,
    *,
    party: str | None = None,
    state_dir: Path | None = None,
    model_dir: Path | None = None,
    identity: PartyIdentity | None = None,
) -> PartyTrainingEnv:
    """Install the :data:`~fedcore.protocol.horizontal.FLOWER_TASK` handler; returns the environment
    (its ``saved_models`` and ``model_dir`` hold the final models)."""
    env = PartyTrainingEnv(data_provider, party=party, state_dir=state_dir, model_dir=model_dir, identity=identity)

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
