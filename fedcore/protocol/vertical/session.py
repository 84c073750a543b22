"""A party's data and per-run state in vertical training: its aligned table, optimizer and session."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fedcore.crypto import he
from fedcore.crypto.envelope import EnvelopePrivateKey, EnvelopePublicKey
from fedcore.errors import InvalidInput
from fedcore.protocol.messages import JSONValue

log = logging.getLogger(__name__)




@dataclass(frozen=True)
class Table:
    """A party's side of one PSI run, rows in the joint PSI order. ``y`` only at lenders."""

    X: np.ndarray
    features: list[str]
    dataset: str
    y: np.ndarray | None = None
    # One-hot encoded categoricals: the stored columns and, per column of X, (stored column, level code
    # or None for a column taken as it is); the model slice keeps them so scoring encodes the same way.
    base_features: list[str] | None = None
    columns: list[tuple[int, float | None]] | None = None
    # WOE-encoded (``encoding = "woe"``): the slice's JSON record of the encoding (see ModelSlice).
    encoding: dict[str, Any] | None = None

    def data_hash(self) -> str:
        h = hashlib.sha256(json.dumps([self.dataset, self.features]).encode())
        h.update(np.ascontiguousarray(self.X, dtype="<f8").tobytes())
        if self.y is not None:
            h.update(np.ascontiguousarray(self.y, dtype="<i1").tobytes())
        return h.hexdigest()


class VerticalSource(Protocol):
    """This party's aligned data for a PSI run (``dataset`` None: the party's default)."""

    def vertical_table(self, psi_run: str, dataset: str | None, *, labels: bool) -> Table: ...


ENCODINGS = ("onehot", "woe")


def table_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """Extra ``vertical_table`` keywords from the setup parameters: none for the default encoding
    (one-hot), else ``encoding`` and the ``binning_run`` whose bins and WOE encode the columns."""
    enc = params.get("encoding") or "onehot"
    if enc not in ENCODINGS:
        raise InvalidInput(f"vertical: encoding {enc!r} is not one of {', '.join(ENCODINGS)}")
    if enc == "onehot":
        return {}
    if not params.get("binning_run"):
        raise InvalidInput("vertical: encoding 'woe' needs the binning run whose bins to use")
    return {"encoding": str(enc), "binning_run": str(params["binning_run"])}


# ---- party side ------------------------------------------------------------------------------------


class _Adam:
    def __init__(self, dim: int, lr: float, l2: float) -> None:
        self.m = np.zeros(dim)
        self.v = np.zeros(dim)
        self.t = 0
        self.lr = lr
        self.l2 = l2

    def step(self, w: np.ndarray, g: np.ndarray) -> np.ndarray:
        g = g + self.l2 * w
        self.t += 1
        self.m = 0.9 * self.m + 0.1 * g
        self.v = 0.999 * self.v + 0.001 * g * g
        mh = self.m / (1 - 0.9**self.t)
        vh = self.v / (1 - 0.999**self.t)
        out: np.ndarray = w - self.lr * mh / (np.sqrt(vh) + 1e-8)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"m": self.m.tolist(), "v": self.v.tolist(), "t": self.t}

    def load(self, d: Mapping[str, Any]) -> None:
        self.m, self.v, self.t = np.asarray(d["m"], float), np.asarray(d["v"], float), int(d["t"])


@dataclass
class _Session:
    run_id: str
    role: str  # "lender" | "platform"
    me: str
    lenders: list[str]
    platform: str
    pub: he.CkksPublicContext
    env_key: EnvelopePrivateKey
    seed: int
    steps: int = 0
    tables: dict[str, Table] = field(default_factory=dict)  # lender name -> table (one at a lender)
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    Z: dict[str, np.ndarray] = field(default_factory=dict)  # standardized features (lender: with a 1 column)
    peer_keys: dict[str, EnvelopePublicKey] = field(default_factory=dict)  # verified against certificates
    peer_anns: dict[str, Mapping[str, JSONValue]] = field(default_factory=dict)
    common_seed: bytes = b""
    train_rows: dict[str, int] = field(default_factory=dict)
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    std: np.ndarray = field(default_factory=lambda: np.zeros(0))
    w: np.ndarray = field(default_factory=lambda: np.zeros(0))
    best_w: np.ndarray = field(default_factory=lambda: np.zeros(0))
    opt: _Adam | None = None
    pending: dict[str, Any] = field(default_factory=dict)  # masks awaiting their masked sums
    created: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def index(self) -> int:
        return self.lenders.index(self.me) if self.role == "lender" else -1


def _f(params: Mapping[str, JSONValue], key: str, default: Any = None) -> Any:
    v = params.get(key, default)
    if v is None:
        raise InvalidInput(f"vertical step is missing parameter {key!r}")
    return v


