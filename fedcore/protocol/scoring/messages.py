"""Joint scoring's task kind, CKKS parameters, the model slice format and the request/response payloads."""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedcore.crypto.he import (
    SUMS,
    CkksParams,
)
from fedcore.errors import (
    InvalidInput,
    NotFound,
    ProtocolError,
)
from fedcore.protocol.messages import JSONValue
from models.encoding import StoredWoe

log = logging.getLogger(__name__)


CONTRIBUTE = "scoring.contribute"
# One task per member for the joint scores of one pre-approval (several lenders, one viewer): the member
# answers one ciphertext per asking lender's key (:mod:`fedcore.protocol.scoring.groups`).
CONTRIBUTE_GROUP = "scoring.contribute_group"
GROUP_MAX_N = 16  # requests of at most this many pseudonyms may be grouped
GROUP_MAX_PARTS = 64
QUERIES = ("score", "blacklist", "loans")
PSEUDONYM_BYTES = 16
DEFAULT_MAX_BATCH = 1 << 17  # pseudonyms per coordinator request (the requester chunks bigger files)
DEFAULT_RATE_PER_MINUTE = 2_000_000  # applicants per requester per minute at the coordinator (token bucket)
CONTEXT_CACHE = 16
# N=4096 with one 60-bit data prime and a 49-bit special prime (109 bits: the 128-bit bound for N=4096),
# scale 2^40: additions only, no Galois/relin keys. Half the ciphertext size (64 KiB per 2048 values) and
# half the encryption time of SUMS (N=8192); per value the cost is the same, per small request it halves.
SCORING_CKKS = CkksParams("scoring", 4096, (60, 49), 40)
ALLOWED_PARAMS = (SCORING_CKKS, SUMS)  # tree scores use no CKKS (fedcore.protocol.scoring.trees)
TREE_QUERY = "tree"  # a tree model's score (fedcore.protocol.scoring.trees); goes alone in a request
_REQ_MAGIC = b"FCSQ"
_REQ_HEADER = struct.Struct(">4sBI")
_GROUP_MAGIC = b"FCSG"
_REPLY_MAGIC = b"FCSR"


class ModelVersionMismatch(InvalidInput):
    """A party holds another version of the model than the request names."""


# ---- model slices ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSlice:
    """One party's slice of a joint logistic model (``HOME/models/<model_id>/slice.json``)."""

    model_id: str
    version: str
    party: str
    dataset: str
    features: tuple[str, ...]
    weights: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    intercept: float | None = None
    # One-hot categoricals: per weight, (feature index, level code) or (index, None) for a feature taken
    # as it is; ``None``: one weight per feature. ``features`` are then the stored columns (codes).
    columns: tuple[tuple[int, float | None], ...] | None = None
    # WOE encoding (``--encoding woe``): each stored value enters as the WOE of its bin in the named
    # binning run; ``encoding`` is the slice's JSON record of it ({"kind", "binning_run", "encoder"}).
    woe: StoredWoe | None = None
    encoding: Mapping[str, JSONValue] | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, JSONValue], source: str = "<slice>") -> ModelSlice:
        try:
            if d.get("kind", "joint-logistic") != "joint-logistic":
                raise InvalidInput(f"{source}: model kind {d.get('kind')!r} is not joint-logistic")
            feats = tuple(str(f) for f in d["features"])
            w = np.asarray(d["weights"], dtype=np.float64)
            mean = np.asarray(d["scaler"]["mean"], dtype=np.float64)
            std = np.asarray(d["scaler"]["std"], dtype=np.float64)
            intercept = d.get("intercept")
            cols_raw = d.get("columns")
            columns = None if cols_raw is None else tuple(
                (int(c[0]), None if c[1] is None else float(c[1])) for c in cols_raw)  # type: ignore[index, union-attr, arg-type]
            sl = cls(
                model_id=str(d["model_id"]),
                version=str(d["version"]),
                party=str(d.get("party", "")),
                dataset=str(d["dataset"]),
                features=feats,
                weights=w,
                mean=mean,
                std=np.where(std > 0, std, 1.0),
                intercept=None if intercept is None else float(intercept),
                columns=columns,
                **_woe_fields(d.get("encoding"), feats, source),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"{source}: not a valid model slice ({exc})") from None
        width = len(feats) if columns is None else len(columns)
        if not (width == w.shape[0] == mean.shape[0] == std.shape[0]) or w.ndim != 1:
            raise InvalidInput(f"{source}: features, weights and scaler differ in length")
        if columns is not None and any(not 0 <= j < len(feats) for j, _ in columns):
            raise InvalidInput(f"{source}: a one-hot column names no feature")
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
            raise InvalidInput(f"{source}: weights and scaler must be finite")
        return sl

    @classmethod
    def load(cls, models_dir: Path, model_id: str) -> ModelSlice:
        path = models_dir / model_id / "slice.json"
        if not path.is_file():
            raise NotFound(f"model {model_id!r} has no slice at this party ({path})")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{path}: cannot read model slice ({exc})") from None
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict[str, JSONValue]:
        d: dict[str, JSONValue] = {
            "model_id": self.model_id,
            "version": self.version,
            "party": self.party,
            "kind": "joint-logistic",
            "dataset": self.dataset,
            "features": list(self.features),
            "weights": self.weights.tolist(),
            "scaler": {"mean": self.mean.tolist(), "std": self.std.tolist()},
        }
        if self.intercept is not None:
            d["intercept"] = self.intercept
        if self.columns is not None:
            d["columns"] = [[j, c] for j, c in self.columns]
        if self.encoding is not None:
            d["encoding"] = dict(self.encoding)
        return d

    def neutral(self) -> np.ndarray:
        """A row of ``features`` that contributes nothing: the means (NaN for a one-hot or WOE feature)."""
        if self.woe is not None:
            return np.full(len(self.features), np.nan)
        if self.columns is None:
            return self.mean
        out = np.full(len(self.features), np.nan)
        for k, (j, code) in enumerate(self.columns):
            if code is None:
                out[j] = self.mean[k]
        return out

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per-feature logit contributions ``w * (x - mean) / std`` (rows: subjects); a one-hot feature's
        is the sum over its levels' columns (a NaN value: neutral)."""
        x = np.asarray(x, dtype=np.float64)
        if self.woe is not None:  # stored values -> WOE of their bin; NaN (no value): neutral
            z = self.woe.transform(x)
            return np.where(np.isnan(z), 0.0, (z - self.mean) / self.std * self.weights)
        if self.columns is None:
            return (x - self.mean) / self.std * self.weights
        z = np.empty((x.shape[0], len(self.columns)))
        agg = np.zeros((len(self.columns), len(self.features)))
        for k, (j, code) in enumerate(self.columns):
            v = x[:, j]
            z[:, k] = v if code is None else np.where(np.isnan(v), self.mean[k], (v == code).astype(np.float64))
            agg[k, j] = 1.0
        return np.asarray(((z - self.mean) / self.std * self.weights) @ agg)

    def partial_logit(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.contributions(x).sum(axis=1), dtype=np.float64)


def _woe_fields(enc: JSONValue, feats: tuple[str, ...], source: str) -> dict[str, Any]:
    """The slice's ``woe``/``encoding`` from its JSON ``encoding`` record (none: one-hot or plain)."""
    if enc is None:
        return {}
    if not isinstance(enc, Mapping) or enc.get("kind") != "woe" or not isinstance(enc.get("encoder"), Mapping):
        raise InvalidInput(f"{source}: unknown encoding {enc!r}")
    woe = StoredWoe.from_dict(enc["encoder"])  # type: ignore[arg-type]
    if tuple(woe.features) != feats:
        raise InvalidInput(f"{source}: the WOE encoding's features {woe.features} are not the slice's {list(feats)}")
    return {"woe": woe, "encoding": dict(enc)}


def pack_pseudonyms(pseudonyms: Sequence[bytes]) -> bytes:
    for i, p in enumerate(pseudonyms):
        if len(p) != PSEUDONYM_BYTES:
            raise InvalidInput(f"pseudonym {i} is {len(p)} bytes, expected {PSEUDONYM_BYTES}")
    return b"".join(pseudonyms)


def pseudonym_array(packed: bytes) -> np.ndarray:
    """Packed pseudonyms as a numpy ``S16`` array (no copy)."""
    if len(packed) % PSEUDONYM_BYTES:
        raise ProtocolError(f"pseudonym block of {len(packed)} bytes is not a multiple of {PSEUDONYM_BYTES}")
    return np.frombuffer(packed, dtype=f"S{PSEUDONYM_BYTES}")


def _digest(packed: bytes) -> str:
    return hashlib.sha256(packed).hexdigest()


def check_queries(queries: Sequence[str]) -> tuple[str, ...]:
    qs = tuple(str(q) for q in queries)
    if qs == (TREE_QUERY,):
        return qs
    if not qs or len(set(qs)) != len(qs) or any(q not in QUERIES for q in qs):
        raise InvalidInput(f"queries must be distinct values of {', '.join(QUERIES)}, got {list(qs)}")
    return qs


def pack_task_payload(pseudonyms: bytes, context: bytes | None, tree_input: bytes | None = None) -> bytes:
    """``b"FCSQ" | u8 version=1 | u32 context length (0: cached) | context | pseudonyms (16 B each)``;
    version 2 adds ``u32 tree input length | tree input`` (a tree score's input sealed to the platform)
    after the context."""
    ctx = context or b""
    if tree_input is None:
        return _REQ_HEADER.pack(_REQ_MAGIC, 1, len(ctx)) + ctx + pseudonyms
    return (
        _REQ_HEADER.pack(_REQ_MAGIC, 2, len(ctx)) + ctx + struct.pack(">I", len(tree_input)) + tree_input + pseudonyms
    )


def unpack_task_payload(data: bytes) -> tuple[bytes | None, bytes]:
    ctx, _, pseudonyms = unpack_task_payload_full(data)
    return ctx, pseudonyms


def unpack_task_payload_full(data: bytes) -> tuple[bytes | None, bytes | None, bytes]:
    """(context or None, tree input or None, pseudonyms)."""
    if len(data) < _REQ_HEADER.size:
        raise ProtocolError("scoring request payload is truncated")
    magic, version, ctx_len = _REQ_HEADER.unpack_from(data, 0)
    if magic != _REQ_MAGIC or version not in (1, 2):
        raise ProtocolError("not a fedcredit scoring request payload")
    start = _REQ_HEADER.size
    if start + ctx_len > len(data):
        raise ProtocolError("scoring request payload is truncated inside the context")
    ctx = data[start : start + ctx_len] if ctx_len else None
    pos = start + ctx_len
    tree = None
    if version == 2:
        if pos + 4 > len(data):
            raise ProtocolError("scoring request payload is truncated before the tree input")
        (size,) = struct.unpack_from(">I", data, pos)
        if pos + 4 + size > len(data):
            raise ProtocolError("scoring request payload is truncated inside the tree input")
        tree, pos = data[pos + 4 : pos + 4 + size], pos + 4 + size
    return ctx, tree, data[pos:]


def _pack_blocks(magic: bytes, blocks: Sequence[bytes]) -> bytes:
    """``magic | u16 k | k x u32 length | blocks``."""
    if len(blocks) > GROUP_MAX_PARTS:
        raise InvalidInput(f"{len(blocks)} parts in one grouped request, at most {GROUP_MAX_PARTS}")
    head = magic + struct.pack(f">H{len(blocks)}I", len(blocks), *(len(b) for b in blocks))
    return head + b"".join(blocks)


def _unpack_blocks(magic: bytes, data: bytes, k: int, what: str) -> tuple[list[bytes], int]:
    """The ``k`` blocks of :func:`_pack_blocks` and the offset after them."""
    if len(data) < 6 or data[:4] != magic:
        raise ProtocolError(f"not a fedcredit {what}")
    (count,) = struct.unpack_from(">H", data, 4)
    if count != k:
        raise ProtocolError(f"{what} holds {count} parts, expected {k}")
    pos = 6 + 4 * k
    if len(data) < pos:
        raise ProtocolError(f"{what} is truncated in its header")
    blocks = []
    for size in struct.unpack_from(f">{k}I", data, 6):
        if pos + size > len(data):
            raise ProtocolError(f"{what} is truncated")
        blocks.append(data[pos : pos + size])
        pos += size
    return blocks, pos


def pack_group_payload(pseudonyms: bytes, contexts: Sequence[bytes | None]) -> bytes:
    """A grouped task's payload: per part the public context (empty: the member has it cached), then
    the pseudonyms all parts share."""
    return _pack_blocks(_GROUP_MAGIC, [c or b"" for c in contexts]) + pseudonyms


def unpack_group_payload(data: bytes, parts: int) -> tuple[list[bytes | None], bytes]:
    blocks, pos = _unpack_blocks(_GROUP_MAGIC, data, parts, "grouped scoring payload")
    return [b or None for b in blocks], data[pos:]


def pack_group_reply(ciphertexts: Sequence[bytes]) -> bytes:
    """A member's grouped reply: one ciphertext per part (empty for a part that failed)."""
    return _pack_blocks(_REPLY_MAGIC, ciphertexts)


def unpack_group_reply(data: bytes, parts: int) -> list[bytes]:
    blocks, pos = _unpack_blocks(_REPLY_MAGIC, data, parts, "grouped scoring reply")
    if pos != len(data):
        raise ProtocolError("grouped scoring reply has trailing bytes")
    return blocks


@dataclass(frozen=True)
class JointRequest:
    """What the requester sends the coordinator."""

    model_id: str
    model_version: str
    queries: tuple[str, ...]
    pseudonyms: bytes  # n x 16 bytes
    fingerprint: str
    public_context: bytes | None = None  # None: the coordinator should have it cached
    allow_partial: bool = False
    timeout_s: float = 30.0
    tree_input: bytes | None = None  # query "tree": fedcore.protocol.scoring.trees.pack_tree_input
    group: str = ""  # a pre-approval's request id: the coordinator may ask each member once for all its lenders

    @property
    def n(self) -> int:
        return len(self.pseudonyms) // PSEUDONYM_BYTES


@dataclass(frozen=True)
class JointResponse:
    """What the coordinator returns: the sum of the contributors' ciphertexts (None if none answered)."""

    request_id: str
    n: int
    queries: tuple[str, ...]
    ciphertext: bytes | None
    contributors: int
    missing: tuple[str, ...] = ()
