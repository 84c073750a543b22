"""Task kinds, payload framing, masks and result types of the federated binning protocol.

Payloads are a sequence of tagged frames (``u16 tag length | tag | u64 body length | body``); bodies
are sealed envelopes, little-endian uint64 vectors or UTF-8 JSON, never pickle. Arithmetic on shares is
in Z_2^64 (numpy uint64 wraps). Masks come from ChaCha20 keystreams keyed by 32-byte seeds held in
:class:`MaskSeed` (secret material; never pickled, never logged).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fedcore.errors import ProtocolError
from fedcore.secret import Secret

__all__ = [
    "FeatureIv",
    "IvTable",
    "MaskSeed",
    "pack_frames",
    "unpack_frames",
]

SETUP, KEYS, CUTS, LENDER_COUNTS, PLATFORM_BINS, PLATFORM_MASK, LABEL_SHARE, PLATFORM_IV, LENDER_IV = (
    "binning.setup", "binning.keys", "binning.cuts", "binning.lender_counts", "binning.platform_bins",
    "binning.platform_mask", "binning.label_share", "binning.platform_iv", "binning.lender_iv",
)
KINDS = (SETUP, KEYS, CUTS, LENDER_COUNTS, PLATFORM_BINS, PLATFORM_MASK, LABEL_SHARE, PLATFORM_IV, LENDER_IV)
LENDERS_PARTY = "lenders"
"""The table's name for the lenders' shared features (every lender holds the same schema)."""

_TAG = struct.Struct(">H")
_LEN = struct.Struct(">Q")


def pack_frames(frames: Mapping[str, bytes]) -> Iterator[bytes]:
    for tag, body in frames.items():
        raw = tag.encode()
        yield _TAG.pack(len(raw)) + raw + _LEN.pack(len(body))
        yield bytes(body)


def unpack_frames(data: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    pos = 0
    try:
        while pos < len(data):
            (n,) = _TAG.unpack_from(data, pos)
            tag = data[pos + 2 : pos + 2 + n].decode()
            pos += 2 + n
            (m,) = _LEN.unpack_from(data, pos)
            pos += 8
            if pos + m > len(data):
                raise ProtocolError(f"binning frame {tag!r} is truncated")
            out[tag] = data[pos : pos + m]
            pos += m
    except (struct.error, UnicodeDecodeError):
        raise ProtocolError("binning payload is not a sequence of frames") from None
    return out


def frame(frames: Mapping[str, bytes], tag: str, step: str) -> bytes:
    """The body of frame ``tag``; a missing frame is a protocol error naming the step."""
    try:
        return frames[tag]
    except KeyError:
        raise ProtocolError(f"{step}: frame {tag!r} is missing") from None


def u64_bytes(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<u8").tobytes()


def u64_array(b: bytes, n: int | None = None, what: str = "vector") -> np.ndarray:
    if len(b) % 8 or (n is not None and len(b) != 8 * n):
        raise ProtocolError(f"binning {what} has {len(b)} bytes, expected {8 * (n or 0)}")
    return np.frombuffer(b, dtype="<u8").astype(np.uint64)


class MaskSeed(Secret):
    """A 32-byte seed of a ChaCha20 mask stream."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise ProtocolError("a mask seed is 32 bytes")
        self._raw = bytes(raw)

    @classmethod
    def generate(cls) -> MaskSeed:
        return cls(os.urandom(32))

    def seal_bytes(self) -> bytes:
        """The raw seed, only to be put in a sealed envelope or a task to its one recipient."""
        return self._raw

    def stream(self, label: str, n: int) -> np.ndarray:
        """``n`` uniform uint64 values for ``label`` (different labels give independent streams)."""
        nonce = hashlib.sha256(label.encode()).digest()[:16]
        enc = Cipher(algorithms.ChaCha20(self._raw, nonce), mode=None).encryptor()
        return np.frombuffer(enc.update(bytes(8 * n)), dtype="<u8").astype(np.uint64)


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


def json_of(b: bytes, what: str) -> Any:
    try:
        return json.loads(b.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolError(f"binning {what} is not JSON") from None


@dataclass(frozen=True)
class FeatureIv:
    """What everyone may see of one feature: its IV (optimal bins), the IV of its fine bins, bin count."""

    iv: float
    iv_fine: float
    n_bins: int
    n_fine: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return {"iv": self.iv, "iv_fine": self.iv_fine, "n_bins": self.n_bins, "n_fine": self.n_fine}


@dataclass
class IvTable:
    """IV per feature per party (``"lenders"`` for the lenders' shared features)."""

    parties: dict[str, dict[str, FeatureIv]] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, str, FeatureIv]]:
        """(party, feature, IV), highest IV first."""
        rows = [(p, f, v) for p, feats in self.parties.items() for f, v in feats.items()]
        return sorted(rows, key=lambda r: (-r[2].iv, r[0], r[1]))

    def to_dict(self) -> dict[str, dict[str, dict[str, float | int]]]:
        return {p: {f: v.to_dict() for f, v in feats.items()} for p, feats in self.parties.items()}


def feature_ivs(obj: Any, who: str) -> dict[str, FeatureIv]:
    """Parse a party's ``{"features": {name: {iv, iv_fine, n_bins}}}`` reply."""
    try:
        return {
            str(name): FeatureIv(float(v["iv"]), float(v["iv_fine"]), int(v["n_bins"]), int(v.get("n_fine", 0)))
            for name, v in dict(obj["features"]).items()
        }
    except (KeyError, TypeError, ValueError):
        raise ProtocolError(f"{who} sent a malformed IV table") from None
