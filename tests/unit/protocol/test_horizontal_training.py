"""Horizontal training over the in-memory channel: quality, FedProx, wire privacy, drop-out, resume, DP."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

from fedcore.errors import CorruptResult, ProtocolError
from fedcore.protocol import horizontal as hz
from fedcore.protocol.horizontal.checkpoints import FileCheckpointStore, arrays_from_bytes
from fedcore.protocol.horizontal.coordinator import DpConfig, HorizontalJob
from fedcore.protocol.horizontal.env import PartyTrainingEnv, csv_data_provider
from fedcore.protocol.horizontal.party import register_training_handlers
from fedcore.protocol.horizontal.strategy import TrainingAborted
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role, TaskReply
from fedcore.protocol.sealing import make_identities
from fedcore.protocol.tasks import HandlerRegistry, TaskContext
from models.metrics import evaluate
from models.nets import build_model, set_weights
from models.train import predict_proba
from scripts.fate_data import fate_data_dir

DATA = fate_data_dir()
FILES = {"guest": "homo_guest", "host1": "homo_host_1", "host2": "homo_host_2"}
PARTIES = list(FILES)
FEATURES = [f"x{i}" for i in range(23)]


@pytest.fixture(scope="module")
def providers() -> dict[str, Any]:
    out = {}
    for name, f in FILES.items():
        df = pd.read_csv(DATA / f"default_credit_{f}.csv")
        base = csv_data_provider(DATA / f"default_credit_{f}.csv")
        cache: dict[tuple[Any, ...], Any] = {}

        def provide(params: Mapping[str, Any], _base: Any = base, _cache: Any = cache) -> Any:
            key = (params.get("fc-val-fraction"), params.get("fc-seed"))
            if key not in _cache:
                _cache[key] = _base(params)
            return _cache[key]

        out[name] = provide
        assert len(df) == 8000
    return out


@pytest.fixture(scope="module")
def homo_test() -> tuple[np.ndarray, np.ndarray]:
    df = pd.read_csv(DATA / "default_credit_homo_test.csv")
    return df[FEATURES].to_numpy(np.float64), df["y"].to_numpy(np.int64)


def federation(
    providers: dict[str, Any], record: bool = False, wrap: Any = None
) -> tuple[InMemoryChannel, dict[str, PartyTrainingEnv]]:
    ch = InMemoryChannel(record_wire=record)
    envs = {}
    ids = make_identities(list(PARTIES))
    for name in PARTIES:
        reg = HandlerRegistry()
        envs[name] = register_training_handlers(reg, providers[name], party=name, identity=ids[name])
        if wrap is not None:
            reg = wrap(name, reg, ch)
        ch.add_party(name, Role.LENDER, reg)
    return ch, envs


def homo_test_auc(env: PartyTrainingEnv, job_run: str, model: str, homo_test: Any, **kw: Any) -> float:
    X, y = homo_test
    m = build_model(model, 23, **kw)  # type: ignore[arg-type]
    set_weights(m, env.saved_models[(job_run, "1")])
    return float(evaluate(y, predict_proba(m, env.scaler(job_run).transform(X)))["auc"])


def test_he_fedavg_logistic_reaches_target_auc(providers, homo_test, tmp_path):
    ch, envs = federation(providers)
    reports = []
    job = HorizontalJob(
        ch, tmp_path, PARTIES, model="logistic", rounds=6, secure="he", min_parties=2, on_round=reports.append
    )
    rec = job.run()
    assert [r.round for r in reports] == [1, 2, 3, 4, 5, 6]
    assert all(r.parties == PARTIES for r in reports)
    assert 0.5 < rec.metrics["val_auc"] < 1 and rec.metrics["val_ks"] > 0
    assert rec.parties == PARTIES and set(rec.data_sha256) == set(PARTIES)
    # the registered model is the round with the best validation AUC, not the last
    aucs = [h["evaluate"]["val-auc"] for h in rec.history]
    assert rec.best_round == 1 + int(np.argmax(aucs)) and rec.metrics["val_auc"] == max(aucs)
    auc = homo_test_auc(envs["guest"], job.run_id, "logistic", homo_test)
    assert auc >= 0.725, auc
    # every party decrypted the same final model
    hashes = {hz.weights_sha256(e.saved_models[(job.run_id, "1")]) for e in envs.values()}
    assert hashes == {rec.model_sha256}


def test_fedprox_plain_mlp_runs(providers, tmp_path):
    ch, _ = federation(providers, record=True)
    job = HorizontalJob(
        ch,
        tmp_path,
        PARTIES,
        model="mlp",
        rounds=2,
        strategy="fedprox",
        proximal_mu=0.1,
        secure="none",
        local_epochs=1,
    )
    rec = job.run()
    assert rec.strategy == "fedprox" and len(rec.history) == 2
    assert rec.history[-1]["evaluate"]["val-auc"] > 0.65
    # FedProx's proximal term reached the parties in the train config
    trains = [
        hz.decode_message(r.payload)
        for r in ch.wire_log
        if r.direction == "to_party" and r.params.get("message_type") == "train"
    ]
    assert trains and all(m.content["config"]["proximal-mu"] == 0.1 for m in trains)


def test_wire_never_carries_an_update_in_clear(providers, tmp_path, monkeypatch):
    from fedcore.crypto.he import CkksPublicContext, EncryptedVector, NoSecretKeyError, decrypt_vector

    local: list[np.ndarray] = []
    real = hz.encrypt_weighted

    def spy(ctx: Any, vec: np.ndarray, weight: float) -> Any:
        local.append(np.asarray(vec, dtype=np.float64).copy())
        local.append(np.asarray(vec, dtype=np.float64) * weight)
        return real(ctx, vec, weight)

    monkeypatch.setattr(hz, "encrypt_weighted", spy)
    ch, _envs = federation(providers, record=True)
    job = HorizontalJob(ch, tmp_path, PARTIES, model="logistic", rounds=2, secure="he", min_parties=3)
    rec = job.run()
    assert len(rec.history) == 2
    # 2 rounds x 3 parties training updates + 3 moment vectors, each recorded twice
    assert len(local) >= 2 * (6 + 3)
    blobs = [r.payload for r in ch.wire_log]
    assert blobs and any(len(b) > 100_000 for b in blobs)  # ciphertexts did cross
    for vec in local:
        for dtype in (np.float32, np.float64):
            for start in range(0, max(1, len(vec) - 4), max(1, len(vec) // 6)):
                needle = vec[start : start + 4].astype(dtype).tobytes()
                assert not any(needle in b for b in blobs), f"clear update fragment on the wire ({dtype})"
    # The coordinator's aggregate cannot be decrypted without the parties' secret context.
    store = FileCheckpointStore(tmp_path)
    _, raw, _ = store.latest_checkpoint(job.run_id)
    agg = arrays_from_bytes(raw)
    assert hz.is_encrypted(agg)
    pub_bytes = store.load_blob(job.run_id, "ckks-public")
    pub = CkksPublicContext.from_bytes(pub_bytes)  # rejects a context holding a secret key
    vec = EncryptedVector.from_bytes(pub, hz.unpack_encrypted(agg))
    with pytest.raises(NoSecretKeyError):
        decrypt_vector(pub, vec)  # type: ignore[arg-type]
    # What the coordinator relayed from the key creator is only envelopes and the public context.
    for r in ch.wire_log:
        if r.direction == "from_party" and r.params.get("message_type") == hz.MSG_KEYGEN:
            msg = hz.decode_message(r.payload)
            rep = msg.content["reply"]
            CkksPublicContext.from_bytes(bytes(rep["public-ctx"]))
            sealed = [json.loads(str(e)) for e in rep["envelopes"]]  # HPKE ciphertexts, signed by the creator
            assert sealed and all(set(s) == {"sender", "ciphertext", "signature", "cert"} for s in sealed)


def test_party_dropping_mid_round_does_not_stop_the_run(providers, tmp_path):
    state = {"trains": 0}

    def wrap(name: str, reg: HandlerRegistry, ch: InMemoryChannel) -> HandlerRegistry:
        if name != "host2":
            return reg
        inner = reg.get(hz.FLOWER_TASK)
        out = HandlerRegistry()

        def handler(ctx: TaskContext, params: Mapping[str, Any]) -> TaskReply:
            if params.get("message_type") == "train":
                state["trains"] += 1
                if state["trains"] == 2:  # die in the middle of round 2 (before its reply can count)
                    ch.disconnect(name)
            return inner(ctx, params)

        out.register(hz.FLOWER_TASK, handler)
        return out

    ch, _envs = federation(providers, wrap=wrap)
    reports = []
    job = HorizontalJob(
        ch, tmp_path, PARTIES, model="logistic", rounds=3, secure="he", min_parties=2, on_round=reports.append
    )
    rec = job.run()
    assert reports[0].parties == PARTIES
    assert reports[1].parties == ["guest", "host1"]
    assert reports[2].parties == ["guest", "host1"]
    assert rec.parties == ["guest", "host1"]
    assert rec.metrics["val_auc"] > 0.65
    # the run record says who dropped out and when, not only the coordinator's log
    assert reports[0].dropped == [] and reports[1].dropped == ["host2"]
    assert [(d["party"], d["round"]) for d in rec.dropped] == [("host2", 2)]
    assert rec.to_dict()["dropped"][0]["at"] > 0


def test_corrupt_update_is_attributed_and_dropped(providers, tmp_path, caplog):
    def wrap(name: str, reg: HandlerRegistry, ch: InMemoryChannel) -> HandlerRegistry:
        if name != "host1":
            return reg
        inner = reg.get(hz.FLOWER_TASK)
        out = HandlerRegistry()

        def handler(ctx: TaskContext, params: Mapping[str, Any]) -> TaskReply:
            reply = inner(ctx, params)
            if params.get("message_type") != "train":
                return reply
            msg = hz.decode_message(b"".join(reply.payload or []))
            rec = next(iter(msg.content.array_records.values()))
            good = hz.unpack_encrypted(rec)
            bad = hz.pack_encrypted(good[: len(good) // 2] + b"\x00" * (len(good) - len(good) // 2), 1)
            msg.content.array_records[next(iter(msg.content.array_records))] = bad
            return TaskReply(reply.params, [hz.encode_message(msg)])

        out.register(hz.FLOWER_TASK, handler)
        return out

    ch, _envs = federation(providers, wrap=wrap)
    with caplog.at_level("WARNING", logger="fedcore.protocol.horizontal.strategy"):
        rec = HorizontalJob(ch, tmp_path, PARTIES, model="logistic", rounds=1, secure="he", min_parties=2).run()
    assert rec.history[0]["parties"] == ["guest", "host2"] and rec.history[0]["dropped"] == ["host1"]
    assert any("'host1'" in r.getMessage() and "corrupt" in r.getMessage() for r in caplog.records)
    ch2, _ = federation(providers, wrap=wrap)
    with pytest.raises(CorruptResult, match="host1"):
        HorizontalJob(ch2, tmp_path / "b", PARTIES, model="logistic", rounds=1, secure="he", min_parties=3).run()


def test_plain_update_with_nan_is_attributed_and_dropped(providers, tmp_path, caplog):
    from flwr.app import Array, ArrayRecord

    def wrap(name: str, reg: HandlerRegistry, ch: InMemoryChannel) -> HandlerRegistry:
        if name != "host2":
            return reg
        inner = reg.get(hz.FLOWER_TASK)
        out = HandlerRegistry()

        def handler(ctx: TaskContext, params: Mapping[str, Any]) -> TaskReply:
            reply = inner(ctx, params)
            if params.get("message_type") != "train":
                return reply
            msg = hz.decode_message(b"".join(reply.payload or []))
            key = next(iter(msg.content.array_records))
            rec = msg.content.array_records[key]
            msg.content.array_records[key] = ArrayRecord({k: Array(np.full_like(a.numpy(), np.nan))
                                                          for k, a in rec.items()})
            return TaskReply(reply.params, [hz.encode_message(msg)])

        out.register(hz.FLOWER_TASK, handler)
        return out

    ch, _ = federation(providers, wrap=wrap)
    with caplog.at_level("WARNING", logger="fedcore.protocol.horizontal.strategy"):
        rec = HorizontalJob(ch, tmp_path, PARTIES, model="logistic", rounds=1, secure="none", min_parties=2).run()
    assert rec.history[0]["parties"] == ["guest", "host1"] and rec.history[0]["dropped"] == ["host2"]
    assert any("'host2'" in r.getMessage() and "NaN" in r.getMessage() for r in caplog.records)
    assert rec.metrics["val_auc"] > 0.5


def test_losing_a_party_below_min_parties_fails_the_run_naming_the_round(providers, tmp_path):
    def wrap(name: str, reg: HandlerRegistry, ch: InMemoryChannel) -> HandlerRegistry:
        if name != "host2":
            return reg
        inner = reg.get(hz.FLOWER_TASK)
        out = HandlerRegistry()

        def handler(ctx: TaskContext, params: Mapping[str, Any]) -> TaskReply:
            if params.get("message_type") == "train":
                ch.disconnect(name)  # gone before answering its first training message
            return inner(ctx, params)

        out.register(hz.FLOWER_TASK, handler)
        return out

    ch, _envs = federation(providers, wrap=wrap)
    job = HorizontalJob(ch, tmp_path, PARTIES, model="logistic", rounds=2, secure="none", min_parties=3)
    with pytest.raises(TrainingAborted, match=r"round 1: 2 parties replied, the run needs at least 3"):
        job.run()


def test_too_few_parties_aborts(providers, tmp_path):
    ch, _ = federation(providers)
    ch.disconnect("host1")
    ch.disconnect("host2")
    job = HorizontalJob(ch, tmp_path, PARTIES, model="logistic", rounds=2, secure="none", min_parties=2)
    with pytest.raises(TrainingAborted):
        job.run()


def test_a_key_substituted_by_the_coordinator_is_refused(providers, tmp_path, monkeypatch, caplog):
    """A relay that swaps a recipient's announced key for its own gets no CKKS secret context."""
    import base64

    import fedcore.protocol.horizontal.coordinator as hc
    from fedcore.crypto.envelope import EnvelopePrivateKey

    mallory = EnvelopePrivateKey.generate()
    real_query = hc._query

    def swapping_query(grid, spec, kind, per_node, *a, **kw):
        if kind == hz.MSG_KEYGEN:
            for cfg in per_node.values():
                anns = [json.loads(a) for a in cfg["fc-anns"]]
                for ann in anns:
                    ann["public"] = base64.b64encode(mallory.public_key().to_bytes()).decode()
                cfg["fc-anns"] = [json.dumps(a) for a in anns]
        return real_query(grid, spec, kind, per_node, *a, **kw)

    monkeypatch.setattr(hc, "_query", swapping_query)
    ch, envs = federation(providers)
    job = HorizontalJob(ch, tmp_path, PARTIES, model="logistic", rounds=1, secure="he", min_parties=2)
    with pytest.raises(TrainingAborted, match="key generation failed"):
        job.run()
    assert "permission_denied" in caplog.text or "bad signature" in caplog.text
    assert all(e.run(job.run_id).ckks is None for e in envs.values())


class Crash(Exception):
    pass


@pytest.mark.parametrize("secure", ["none", "he"])
def test_resume_matches_uninterrupted_run(providers, tmp_path, secure):
    ch, envs = federation(providers)
    full = HorizontalJob(ch, tmp_path / "a", PARTIES, model="logistic", rounds=4, secure=secure, run_id="full")
    full.run()
    w_full = envs["guest"].saved_models[("full", "1")]

    def crash(report: Any) -> None:
        if report.round == 2:
            raise Crash("coordinator killed")

    ch2, envs2 = federation(providers)
    job = HorizontalJob(
        ch2,
        tmp_path / "b",
        PARTIES,
        model="logistic",
        rounds=4,
        secure=secure,
        run_id="crashy",
        on_round=crash,
    )
    with pytest.raises(Crash):
        job.run()
    seen = []
    rec = HorizontalJob.resume(ch2, tmp_path / "b", "crashy", on_round=seen.append)
    assert [r.round for r in seen] == [3, 4]
    assert [h["round"] for h in rec.history] == [1, 2, 3, 4]
    w_res = envs2["guest"].saved_models[("crashy", "1")]
    if secure == "none":
        for a, b in zip(w_full, w_res, strict=True):
            np.testing.assert_array_equal(a, b)
    else:  # CKKS noise is random: equal up to its error
        for a, b in zip(w_full, w_res, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-3)


def test_dp_run_reports_epsilon(providers, tmp_path):
    ch, _envs = federation(providers)
    job = HorizontalJob(
        ch,
        tmp_path,
        PARTIES,
        model="logistic",
        rounds=2,
        secure="he",
        dp=DpConfig(clip=5.0, noise_multiplier=0.5, delta=1e-5),
    )
    rec = job.run()
    assert rec.dp is not None and 0 < rec.dp["epsilon"] < 1000
    assert rec.history[-1]["train"]["update-norm"] > 0


def test_dp_epsilon_accounting():
    e1 = hz.dp_epsilon(1.0, 10, 1e-5)
    assert hz.dp_epsilon(2.0, 10, 1e-5) < e1 < hz.dp_epsilon(1.0, 20, 1e-5)
    assert hz.dp_epsilon(0.0, 1, 1e-5) == float("inf")
    rng = np.random.default_rng(0)
    u, norm = hz.clip_and_noise(np.full(100, 1.0), 1.0, 0.0, rng)
    assert norm == pytest.approx(10.0) and np.linalg.norm(u) == pytest.approx(1.0)


def test_message_codec_roundtrip_and_rejects_garbage():
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    try:
        TaskIdentity.run_id  # noqa: B018
    except RuntimeError:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 0
    msg = Message(RecordDict({"config": ConfigRecord({"a": 1, "b": b"x"})}), hz.node_id_for("guest"), "train")
    back = hz.decode_message(hz.encode_message(msg))
    assert back.content["config"]["b"] == b"x" and back.metadata.dst_node_id == hz.node_id_for("guest")
    with pytest.raises(ProtocolError):
        hz.decode_message(b"\xff\x00garbage")
    assert hz.node_id_for("a") != hz.node_id_for("b") and 0 < hz.node_id_for("a") < 2**63
    p = hz.TrainParams(model="mlp", hidden=(8, 4))
    assert hz.TrainParams.from_config(p.to_config()) == p
