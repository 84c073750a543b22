"""PSI task kinds and the constants both sides agree on."""

from __future__ import annotations

import hashlib
import logging

import numpy as np

log = logging.getLogger(__name__)


START, BLIND, REBLIND, LEARN, MATCH, FINALIZE, POSITIONS, STAGE, COMMIT, ABORT = (
    "psi.start", "psi.blind", "psi.reblind", "psi.learn_own", "psi.match", "psi.finalize",
    "psi.positions", "psi.stage", "psi.commit", "psi.abort",
)
VERIFY = "psi.verify"
PURPOSES = ("training", "scoring", "blacklist")
KEY_BYTES = 16  # doubly-blinded values are compared on a 128-bit prefix: collisions ~ n^2 / 2^129


def alignment_digest(run_id: str, positions: np.ndarray) -> str:
    """Hex SHA-256 of a follower's aligned positions (little-endian uint32, in alignment order), bound
    to the run. The leader and the follower each compute it and check the other's before committing;
    the coordinator relays the positions anyway, so the digest tells it nothing new."""
    h = hashlib.sha256(b"fedcredit-psi-alignment\x00" + run_id.encode() + b"\x00")
    h.update(np.asarray(positions).astype("<u4").tobytes())
    return h.hexdigest()
