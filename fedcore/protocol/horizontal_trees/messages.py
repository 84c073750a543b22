"""Task kinds and encodings of horizontal trees (:mod:`fedcore.protocol.horizontal_trees`)."""

from __future__ import annotations

import numpy as np

SETUP, KEYS, QUANT, EDGES, GROW, HIST, FINISH = (
    "htrees.setup", "htrees.keys", "htrees.quant", "htrees.edges", "htrees.grow", "htrees.hist", "htrees.finish",
)  # fmt: skip
KINDS = (SETUP, KEYS, QUANT, EDGES, GROW, HIST, FINISH)
OWNER = "lenders"  # every lender holds the same shared-schema features
QUANT_BITS = 12  # g, h and quantile sums are multiples of 2^-12: CKKS noise (~1e-7) rounds away


def quantize(x: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(x, dtype=np.float64) * (1 << QUANT_BITS)) / (1 << QUANT_BITS)
