"""PSI task kinds and the constants both sides agree on."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


START, BLIND, REBLIND, LEARN, MATCH, FINALIZE, POSITIONS, STAGE, COMMIT, ABORT = (
    "psi.start", "psi.blind", "psi.reblind", "psi.learn_own", "psi.match", "psi.finalize",
    "psi.positions", "psi.stage", "psi.commit", "psi.abort",
)
PURPOSES = ("training", "scoring", "blacklist")
KEY_BYTES = 16  # doubly-blinded values are compared on a 128-bit prefix: collisions ~ n^2 / 2^129
