"""Vertical training's task kinds, constants and the binary frame format of its payloads."""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from fedcore.errors import ProtocolError

log = logging.getLogger(__name__)


SETUP, KEYS, START, SCALER, FORWARD, RESIDUAL, BACKWARD = (
    "vertical.setup", "vertical.keys", "vertical.start", "vertical.scaler",
    "vertical.forward", "vertical.residual", "vertical.backward",
)
EVAL_PLATFORM, EVAL_LENDER, REVEAL, CHECKPOINT, FINISH, ABORT = (
    "vertical.eval_platform", "vertical.eval_lender", "vertical.reveal",
    "vertical.checkpoint", "vertical.finish", "vertical.abort",
)
KINDS = (SETUP, KEYS, START, SCALER, FORWARD, RESIDUAL, BACKWARD, EVAL_PLATFORM, EVAL_LENDER, REVEAL,
         CHECKPOINT, FINISH, ABORT)
MASK = float(2**30)  # per-slot masks, uniform in [-MASK, MASK]
FIXED_BITS = 32  # fixed point for the masked moments, mod 2^128
MOD = 1 << 128
CLIP = 5.0  # standardized features are clipped to [-CLIP, CLIP]
CURVATURE_CAP = 3.0  # the residual's u^2 term uses min(u^2, CURVATURE_CAP^2): bounded, so margins cannot run away
LOSS_U_BOUND = 16.0  # the exact validation loss expands in u/LOSS_U_BOUND (|u| clipped to it; PD odds e^16)
LOSS_DEGREE = 64  # Chebyshev degree of that expansion: |error| <= 1e-6 per row for |u| <= LOSS_U_BOUND
MODEL_KIND = "joint-logistic"
SESSION_TTL_S = 24 * 3600

# ---- payload framing: u8 type | u32 tag | u64 length | body -----------------------------------------

F_CKKS, F_F64, F_SEALED, F_U128 = 1, 2, 3, 4
_FRAME = struct.Struct(">BIQ")


@dataclass(frozen=True)
class Frame:
    type: int
    tag: int
    body: bytes


def frames_bytes(frames: Iterable[Frame]) -> Iterator[bytes]:
    for f in frames:
        yield _FRAME.pack(f.type, f.tag, len(f.body))
        yield f.body


def parse_frames(data: bytes) -> list[Frame]:
    out: list[Frame] = []
    pos = 0
    while pos < len(data):
        if pos + _FRAME.size > len(data):
            raise ProtocolError("vertical payload is truncated (frame header)")
        t, tag, n = _FRAME.unpack_from(data, pos)
        pos += _FRAME.size
        if t not in (F_CKKS, F_F64, F_SEALED, F_U128) or pos + n > len(data):
            raise ProtocolError("vertical payload has a malformed frame")
        out.append(Frame(t, tag, data[pos : pos + n]))
        pos += n
    return out


def f64_frame(tag: int, arr: np.ndarray) -> Frame:
    return Frame(F_F64, tag, np.asarray(arr, dtype="<f8").tobytes())


def f64_of(frame: Frame) -> np.ndarray:
    if frame.type != F_F64 or len(frame.body) % 8:
        raise ProtocolError("expected a float64 frame")
    return np.frombuffer(frame.body, dtype="<f8").copy()


def _one(frames: Sequence[Frame], type_: int, tag: int | None = None) -> Frame | None:
    for f in frames:
        if f.type == type_ and (tag is None or f.tag == tag):
            return f
    return None


def encode_fixed(values: np.ndarray) -> list[int]:
    return [round(float(v) * 2**FIXED_BITS) % MOD for v in values]


def decode_fixed(values: Sequence[int]) -> np.ndarray:
    return np.array([((v + MOD // 2) % MOD - MOD // 2) / 2**FIXED_BITS for v in values], dtype=np.float64)


def u128_frame(tag: int, values: Sequence[int]) -> Frame:
    return Frame(F_U128, tag, b"".join(int(v % MOD).to_bytes(16, "big") for v in values))


def u128_of(frame: Frame) -> list[int]:
    if frame.type != F_U128 or len(frame.body) % 16:
        raise ProtocolError("expected a u128 frame")
    return [int.from_bytes(frame.body[i : i + 16], "big") for i in range(0, len(frame.body), 16)]

