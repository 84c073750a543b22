"""Horizontal (same-schema) federated training: what the coordinator and the parties share.

Training jobs are Flower apps (Message API). Every Flower ``Message`` between the coordinator's
``ServerApp`` and a party's ``ClientApp`` rides the party link as one task of kind
:data:`FLOWER_TASK` whose payload is the message serialized with Flower's own protobuf serde
(:func:`encode_message` / :func:`decode_message`; never pickle). This module holds what both sides must
agree on: message types, node ids, the hyper-parameter record, the CKKS encoding of updates and
aggregates, federated-standardisation statistics, and the differential-privacy accounting.

Messages and what each side learns (``secure="he"``)
----------------------------------------------------
Each item: message type -- content -- what the coordinator learns.

- ``query.fc_envkey`` -- reply: the party's per-run X25519 envelope public key -- public keys only.
- ``query.fc_keygen`` -- to the creator: the recipients' public keys; reply: one sealed envelope per
  recipient and the CKKS *public* context -- envelope sizes; a public context (encrypts, cannot decrypt).
- ``query.fc_keyinstall`` -- to each other party: its envelope -- nothing (relays opaque bytes).
- ``query.fc_stats`` -- reply: row count, feature-schema hash, per-feature ``ceil(log2 max|x|)`` (the
  public scaling exponent for the moments) -- row counts (already in the registry), feature magnitudes.
- ``query.fc_moments`` -- reply: CKKS(row-weighted first and second feature moments) -- nothing.
- ``query.fc_scaler`` -- to parties: CKKS(sum of moments); reply: a hash of the scaler built from it --
  that all parties built the same scaler.
- ``train`` -- to parties: CKKS(global aggregate) (round 1: the public random initial model); reply:
  ``CKKS([w*n/u, n/u])`` plus ``num-examples`` and ``train-loss`` -- each party's row count and
  last-epoch loss; never a weight.
- ``evaluate`` -- to parties: CKKS(global aggregate); reply: AUC, KS, log loss and row count on the
  party's validation split -- those metrics.
- ``query.fc_save`` -- to parties: CKKS(final aggregate) and the model version; reply: SHA-256 of the
  decrypted model and of the data used -- the hashes.

The coordinator only ever adds ciphertexts (:func:`sum_encrypted`); the global model is decrypted
only by the parties (``[sum w_i n_i/u] / [sum n_i/u]``: the weighted average, with the row counts
inside the ciphertext). What a *party* learns: the aggregate of every round, hence with exactly two
parties the other party's update (aggregate minus its own); run with ``min_parties >= 3`` to avoid it,
and add DP (:func:`clip_and_noise`) to bound what the aggregate reveals about any one party.

With ``secure="none"`` the same messages carry plain float32 arrays and moments, and Flower's
strategies average them at the coordinator, which then sees every update in clear.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage

from fedcore.errors import InvalidInput, ProtocolError

__all__ = [
    "CIPHER_STYPE",
    "FLOWER_TASK",
    "MSG_ENVKEY",
    "MSG_KEYGEN",
    "MSG_KEYINSTALL",
    "MSG_MOMENTS",
    "MSG_SAVE",
    "MSG_SCALER",
    "MSG_STATS",
    "TrainParams",
    "clip_and_noise",
    "decode_message",
    "decrypt_average",
    "dp_epsilon",
    "encode_message",
    "encrypt_weighted",
    "flower_run_id",
    "is_encrypted",
    "node_id_for",
    "pack_encrypted",
    "sum_encrypted",
    "unpack_encrypted",
    "weights_sha256",
]

FLOWER_TASK = "flower.message"
"""Task kind of every Flower message on the party link."""

MSG_ENVKEY = "query.fc_envkey"
MSG_KEYGEN = "query.fc_keygen"
MSG_KEYINSTALL = "query.fc_keyinstall"
MSG_STATS = "query.fc_stats"
MSG_MOMENTS = "query.fc_moments"
MSG_SCALER = "query.fc_scaler"
MSG_SAVE = "query.fc_save"

CIPHER_STYPE = "fedcredit.ckks-sums.v1"
"""``Array.stype`` of an :class:`~fedcore.crypto.he.EncryptedVector` carried in an ``ArrayRecord``."""
CIPHER_KEY = "ckks"
MAX_WIRE_MESSAGE = 1 << 30


# ------------------------------------------------------------------------------- ids and message codec


def node_id_for(party: str) -> int:
    """A stable Flower node id (positive, < 2**63) for a party name."""
    return int.from_bytes(hashlib.sha256(b"fedcredit-node:" + party.encode()).digest()[:7], "big") + 1


def flower_run_id(run_id: str) -> int:
    """A stable Flower run id (positive int) for a fedcredit run id."""
    return int.from_bytes(hashlib.sha256(b"fedcredit-run:" + run_id.encode()).digest()[:7], "big") + 1


def encode_message(message: Message) -> bytes:
    """Flower's protobuf serialization of a Message (what crosses the party link)."""
    return bytes(message_to_proto(message).SerializeToString())


def decode_message(data: bytes) -> Message:
    """Inverse of :func:`encode_message`; anything that does not parse is a ProtocolError."""
    if len(data) > MAX_WIRE_MESSAGE:
        raise ProtocolError(f"Flower message of {len(data)} bytes exceeds the limit")
    try:
        proto = ProtoMessage.FromString(data)
        return message_from_proto(proto)
    except Exception as exc:  # protobuf DecodeError, flwr type checks
        raise ProtocolError("payload is not a valid Flower message") from exc


# ----------------------------------------------------------------------------------- hyper-parameters


@dataclass(frozen=True)
class TrainParams:
    """Everything a party needs to train its part of a run; travels in each message's ConfigRecord
    (keys prefixed ``fc-``), so the same ClientApp works on the party link and under ``flwr run``."""

    run: str = "run"
    model: str = "logistic"
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    optimizer: str = "adam"
    lr: float = 1e-2
    batch_size: int = 256
    local_epochs: int = 1
    seed: int = 0
    scaler_clip: float = 5.0
    secure: str = "he"  # "he" | "none"
    he_unit: float = 1000.0  # updates are weighted by n / he_unit to keep CKKS values small
    dp_clip: float = 0.0  # L2 clip of each party's update; 0 = no DP
    dp_noise_multiplier: float = 0.0
    val_fraction: float = 0.2
    dataset: str = ""  # the party's dataset to train on; "" = its only labelled dataset

    def __post_init__(self) -> None:
        if self.model not in ("logistic", "mlp"):
            raise InvalidInput(f"model must be 'logistic' or 'mlp', got {self.model!r}")
        if self.secure not in ("he", "none"):
            raise InvalidInput(f"secure must be 'he' or 'none', got {self.secure!r}")
        if self.local_epochs < 1 or self.batch_size < 1:
            raise InvalidInput("local_epochs and batch_size must be >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InvalidInput(f"lr must be > 0, got {self.lr!r}")
        if self.dp_clip < 0 or self.dp_noise_multiplier < 0:
            raise InvalidInput("dp_clip and dp_noise_multiplier must be >= 0")
        if not 0.0 < self.val_fraction < 1.0:
            raise InvalidInput(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if not self.he_unit > 0:
            raise InvalidInput("he_unit must be > 0")

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return {"hidden": tuple(self.hidden), "dropout": self.dropout} if self.model == "mlp" else {}

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            out["fc-" + k.replace("_", "-")] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrainParams:
        kw: dict[str, Any] = {}
        for f in fields(cls):
            key = "fc-" + f.name.replace("_", "-")
            if key in config:
                v = config[key]
                kw[f.name] = tuple(int(x) for x in v) if f.name == "hidden" else v
        try:
            return cls(**kw)
        except TypeError as exc:
            raise InvalidInput(f"bad training parameters: {exc}") from exc

    def replace(self, **kw: Any) -> TrainParams:
        d = asdict(self)
        d.update(kw)
        d["hidden"] = tuple(d["hidden"])
        return TrainParams(**d)


def as_config_record(d: Mapping[str, Any]) -> ConfigRecord:
    return ConfigRecord(dict(d))


# ---------------------------------------------------------------------------- CKKS updates, aggregates


def pack_encrypted(data: bytes, length: int) -> ArrayRecord:
    """Carry a serialized EncryptedVector in an ArrayRecord (one Array of stype :data:`CIPHER_STYPE`)."""
    return ArrayRecord({CIPHER_KEY: Array(dtype="ckks", shape=(int(length),), stype=CIPHER_STYPE, data=data)})


def is_encrypted(record: ArrayRecord) -> bool:
    return len(record) == 1 and CIPHER_KEY in record and record[CIPHER_KEY].stype == CIPHER_STYPE


def unpack_encrypted(record: ArrayRecord) -> bytes:
    if not is_encrypted(record):
        raise ProtocolError("expected an encrypted ArrayRecord")
    return bytes(record[CIPHER_KEY].data)


def encrypt_weighted(ctx: Any, vec: np.ndarray, weight: float) -> ArrayRecord:
    """``CKKS([vec * weight, weight])`` in an ArrayRecord: summing these and dividing the first part by
    the last slot gives the weighted average."""
    from fedcore.crypto.he import encrypt_vector

    v = np.asarray(vec, dtype=np.float64).reshape(-1)
    payload = np.concatenate([v * weight, [weight]])
    if np.max(np.abs(payload)) > 2.0**17:
        raise InvalidInput("an encrypted value exceeds 2^17 (CKKS SUMS keeps |values| below 2^19): raise he_unit")
    enc = encrypt_vector(ctx, payload)
    return pack_encrypted(enc.to_bytes(), enc.length)


def sum_encrypted(public_ctx: Any, records: Sequence[ArrayRecord]) -> ArrayRecord:
    """Coordinator side: the element-wise sum of encrypted ArrayRecords (no key needed, none used)."""
    from fedcore.crypto.he import EncryptedVector, add

    if not records:
        raise InvalidInput("nothing to sum")
    vecs = [EncryptedVector.from_bytes(public_ctx, unpack_encrypted(r)) for r in records]
    total = add(vecs)
    return pack_encrypted(total.to_bytes(), total.length)


def decrypt_average(secret_ctx: Any, record: ArrayRecord) -> np.ndarray:
    """Party side: decrypt ``CKKS([sum v_i w_i, sum w_i])`` and return ``sum v_i w_i / sum w_i``."""
    from fedcore.crypto.he import EncryptedVector, decrypt_vector

    vec = decrypt_vector(secret_ctx, EncryptedVector.from_bytes(secret_ctx, unpack_encrypted(record)))
    denom = float(vec[-1])
    if not denom > 0:
        raise ProtocolError("decrypted aggregate has a non-positive total weight")
    return np.asarray(vec[:-1] / denom, dtype=np.float64)


def weights_sha256(weights: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256()
    for w in weights:
        a = np.ascontiguousarray(np.asarray(w, dtype=np.float32))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


# -------------------------------------------------------------------------------------------- DP


@dataclass(frozen=True)
class DpReport:
    """Party-level (epsilon, delta) of a run: per-round clipping ``C``, Gaussian noise ``sigma * C``."""

    epsilon: float
    delta: float
    noise_multiplier: float
    clip: float
    rounds: int
    accounting: str = field(default="RDP of the Gaussian mechanism, composed over rounds")


def clip_and_noise(
    update: np.ndarray, clip: float, noise_multiplier: float, rng: np.random.Generator
) -> tuple[np.ndarray, float]:
    """Clip the update's L2 norm to ``clip`` and add ``N(0, (noise_multiplier * clip)^2)`` per entry.
    Returns the noisy update and the norm before clipping."""
    u = np.asarray(update, dtype=np.float64)
    norm = float(np.linalg.norm(u))
    if clip > 0 and norm > clip:
        u = u * (clip / norm)
    if noise_multiplier > 0:
        u = u + rng.normal(0.0, noise_multiplier * clip, size=u.shape)
    return u, norm


def dp_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """Epsilon after ``rounds`` releases of a Gaussian mechanism (sensitivity ``C``, noise ``sigma * C``).

    Renyi DP of order ``a`` for one release is ``a / (2 sigma^2)`` (Mironov 2017, Prop. 7); it composes
    additively over rounds; conversion to (epsilon, delta):
    ``epsilon = min_a [R * a / (2 sigma^2) + log(1/delta) / (a - 1)]``. The neighbouring relation is
    *one party's whole update* (party-level DP: replacing all of a party's rows), since each party
    clips its whole update to ``C`` and adds its own noise before encryption.
    """
    if noise_multiplier <= 0:
        return math.inf
    if not 0 < delta < 1:
        raise InvalidInput("delta must be in (0, 1)")
    best = math.inf
    for alpha in [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 257)):
        eps = rounds * alpha / (2 * noise_multiplier**2) + math.log(1 / delta) / (alpha - 1)
        best = min(best, eps)
    return best
