"""Horizontal training's message kinds, run parameters and the Flower message codec used on the party links."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from flwr.app import Message
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.proto.message_pb2 import Message as ProtoMessage

from fedcore.errors import InvalidInput, ProtocolError

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
    calibrate: bool = True  # federated Platt calibration after the last round (horizontal.calibration)

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

