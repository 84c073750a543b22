"""PSI's party side holds points and keys as contiguous arrays and streams them in bounded chunks."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from fedcore.crypto.psi import POINT_BYTES, PsiSecret, blind_ids
from fedcore.errors import ProtocolError
from fedcore.protocol.psi.party import PsiParty, point_array
from fedcore.protocol.tasks import TaskContext


class _Source:
    def __init__(self, n: int) -> None:
        self.n = n

    def subjects_for_psi(self, purpose: str) -> tuple[np.ndarray, list[bytes]]:
        return np.arange(self.n, dtype=np.int64), [f"id{i}".encode() for i in range(self.n)]

    def stage_alignment(self, run_id: str, keys: np.ndarray) -> None: ...

    def commit_alignment(self, run_id: str) -> None: ...

    def drop_alignment(self, run_id: str) -> None: ...


def _ctx(kind: str, payload: Iterator[bytes] | None = None) -> TaskContext:
    return TaskContext(party="yixin", task_id=kind, kind=kind, run_id="r", deadline=time.monotonic() + 600,
                       payload=payload if payload is not None else iter(()))


def _party(n: int) -> PsiParty:
    src = _Source(n)
    party = PsiParty(src, src, workers=0)
    party._start(_ctx("psi.start"), {"purpose": "training", "peers": ["tiange"]})
    return party


def test_point_array_is_one_contiguous_n_by_32_array_even_when_expected_is_short() -> None:
    pts = np.random.default_rng(1).integers(0, 256, size=(1000, POINT_BYTES), dtype=np.uint8)
    chunks = (pts[i : i + 77].tobytes() for i in range(0, 1000, 77))
    arr = point_array(chunks, expected=10)
    assert arr.dtype == np.uint8 and arr.shape == (1000, POINT_BYTES) and arr.flags.c_contiguous
    assert np.array_equal(arr, pts)
    with pytest.raises(ProtocolError):
        point_array(iter([b"x" * 33]))


def test_learn_fills_a_keys_array_and_stops_at_the_first_surplus_chunk() -> None:
    party = _party(50)
    pts = blind_ids(PsiSecret.generate(), [f"p{i}".encode() for i in range(50)])
    party._learn(_ctx("psi.learn", iter([b"".join(pts[:20]), b"".join(pts[20:])])), {"peer": "tiange"})
    pair = party._sessions["r"].pairs["tiange"]
    assert isinstance(pair.own_keys, np.ndarray) and pair.own_keys.dtype == np.dtype("S16")
    assert len(pair.own_keys) == 50 and np.all(pair.own_keys[:-1] <= pair.own_keys[1:])

    consumed = []

    def surplus() -> Iterator[bytes]:  # 10x the expected points, 4096 at a time (aligned_points' cut)
        for i in range(10):
            consumed.append(i)
            yield bytes(POINT_BYTES * 4096)

    small = _party(50)
    with pytest.raises(ProtocolError, match="got more"):
        small._learn(_ctx("psi.learn", surplus()), {"peer": "tiange"})
    assert len(consumed) < 10  # refused while streaming, not after holding the whole payload


def test_shuffled_reblind_streams_point_aligned_chunks_of_the_same_points() -> None:
    n = 10_000
    party = _party(n)
    peer = PsiSecret.generate()
    blinded = b"".join(blind_ids(peer, [f"q{i}".encode() for i in range(n)]))
    reply = party._reblind(_ctx("psi.reblind", iter([blinded])), {"peer": "tiange", "shuffle": True, "n": n})
    chunks = list(reply.payload or [])
    assert len(chunks) > 1 and all(0 < len(c) <= 4096 * POINT_BYTES and len(c) % POINT_BYTES == 0 for c in chunks)
    plain = party._reblind(_ctx("psi.reblind", iter([blinded])), {"peer": "tiange", "n": n})
    ordered = point_array(plain.payload or [], n)
    shuffled = point_array(chunks, n)
    assert len(shuffled) == n and not np.array_equal(shuffled, ordered)
    key = np.ascontiguousarray(ordered).view(f"S{POINT_BYTES}").ravel()
    assert np.array_equal(np.sort(key), np.sort(np.ascontiguousarray(shuffled).view(f"S{POINT_BYTES}").ravel()))
