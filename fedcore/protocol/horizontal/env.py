"""A party's state for horizontal training: its data provider, per-run keys, scaler and saved models."""

from __future__ import annotations

import contextvars
import hashlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Context

from fedcore.errors import InvalidInput, NotFound, ProtocolError
from fedcore.protocol import horizontal as hz
from fedcore.protocol.sealing import PartyIdentity
from fedcore.secret import write_private_file

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
        identity: PartyIdentity | None = None,
        trust_relay: bool = False,
    ) -> None:
        self.data_provider = data_provider
        self.party = party
        # Key set-up seals the CKKS secret context to peers' certificate-bound keys; ``trust_relay`` (only
        # under ``flwr run``, opted in per node with ``unbound-keys``) accepts keys bound to nothing.
        self.identity = identity
        self.trust_relay = trust_relay
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
            trust_relay=str(nc.get("unbound-keys", "")).lower() == "true",
        )
    return _NODE_ENVS[key]

