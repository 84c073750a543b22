"""Where a horizontal run keeps its spec, per-round aggregates and blobs (resume reads them back)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from flwr.app import ArrayRecord
from flwr.common.serde import array_record_from_proto, array_record_to_proto
from flwr.proto.recorddict_pb2 import ArrayRecord as ProtoArrayRecord

from fedcore.errors import NotFound, ProtocolError

log = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    round: int
    arrays: ArrayRecord
    meta: dict[str, Any]


class CheckpointStore(Protocol):
    """Where a run's spec, per-round checkpoints and public blobs live (the lead can back it with the
    coordinator's ``StateStore`` + a folder)."""

    def save_spec(self, run_id: str, spec: dict[str, Any]) -> None: ...
    def load_spec(self, run_id: str) -> dict[str, Any]: ...
    def save_checkpoint(self, run_id: str, round: int, arrays: bytes, meta: dict[str, Any]) -> None: ...
    def latest_checkpoint(self, run_id: str) -> tuple[int, bytes, dict[str, Any]] | None: ...
    def save_blob(self, run_id: str, name: str, data: bytes) -> None: ...
    def load_blob(self, run_id: str, name: str) -> bytes | None: ...


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class FileCheckpointStore:
    """``<root>/<run>/spec.json``, ``round-NNNN.arrays`` (Flower ArrayRecord protobuf) +
    ``round-NNNN.json``; files are written atomically (temp + rename), the ``.json`` last, so a crash
    mid-write leaves the previous round as the latest complete checkpoint."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _d(self, run_id: str) -> Path:
        return self.root / "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)

    def save_spec(self, run_id: str, spec: dict[str, Any]) -> None:
        _write_atomic(self._d(run_id) / "spec.json", json.dumps(spec, indent=2).encode())

    def load_spec(self, run_id: str) -> dict[str, Any]:
        p = self._d(run_id) / "spec.json"
        if not p.is_file():
            raise NotFound(f"no horizontal training run {run_id!r} under {self.root}")
        return dict(json.loads(p.read_text()))

    def save_checkpoint(self, run_id: str, round: int, arrays: bytes, meta: dict[str, Any]) -> None:
        d = self._d(run_id)
        _write_atomic(d / f"round-{round:04d}.arrays", arrays)
        _write_atomic(d / f"round-{round:04d}.json", json.dumps(meta).encode())

    def latest_checkpoint(self, run_id: str) -> tuple[int, bytes, dict[str, Any]] | None:
        d = self._d(run_id)
        metas = sorted(d.glob("round-*.json")) if d.is_dir() else []
        for m in reversed(metas):
            a = m.with_suffix(".arrays")
            if a.is_file():
                return int(m.stem.split("-")[1]), a.read_bytes(), dict(json.loads(m.read_text()))
        return None

    def save_blob(self, run_id: str, name: str, data: bytes) -> None:
        _write_atomic(self._d(run_id) / f"{name}.bin", data)

    def load_blob(self, run_id: str, name: str) -> bytes | None:
        p = self._d(run_id) / f"{name}.bin"
        return p.read_bytes() if p.is_file() else None


def arrays_to_bytes(arrays: ArrayRecord) -> bytes:
    return bytes(array_record_to_proto(arrays).SerializeToString())


def arrays_from_bytes(data: bytes) -> ArrayRecord:
    try:
        return array_record_from_proto(ProtoArrayRecord.FromString(data))
    except Exception as exc:
        raise ProtocolError("checkpoint does not hold a Flower ArrayRecord") from exc


# --------------------------------------------------------------------------------- strategy wrapper

