"""Joint scoring with a hybrid tree model: the requester gets the score, nobody gets the path.

The model (:mod:`fedcore.protocol.trees`): every tree's leaves in :func:`models.gbdt.tree.leaf_index`
order, ``L`` leaves in all. Each owner evaluates only its own splits into a reachable-leaves mask (a leaf
is reachable if the owner's decisions on the path to it agree); the AND of the masks is one leaf per tree.

One request, per applicant (query ``tree``, CKKS preset :data:`TREE_CKKS`, the requester's key):

1. R (the lender) computes its mask ``A`` and ``w = v * A`` (leaf values where R's own splits allow) and
   sends ``Enc(w)`` (``L`` slots) with the request.
2. The platform P computes its mask ``B`` from its own rules and data (an applicant it does not know, or
   without ``scoring`` consent, has all platform values missing: the learned default directions) and
   replies ``Enc(w * (2B - 1) + r)``, with ``r`` uniform in ``[-MASK_BOUND, MASK_BOUND]`` summing to 0 over
   the applicant's ``L`` slots. (``2B - 1`` is +-1: no plaintext is all zero.) Other lenders add nothing.
3. C adds the ciphertexts; R decrypts and sums the applicant's slots: ``s = sum w (2B - 1)``, so
   ``sum w B = (s + sum w) / 2`` and the margin is ``base + (s + sum w) / 2``.

**What each side learns** (semi-honest, C colluding with nobody):

- *Requester R*: the joint margin. Per slot it sees ``+-w_l + r_l``: ``r`` hides the sign up to a
  statistical distance of ``|w_l| / (2 MASK_BOUND)`` per slot (leaf values are well below 1; bound
  2^12: under 1.3e-4), so not which leaf, which platform decision or which platform subtree leaf was
  taken. FATE-Serving shows the guest every host decision; the AND of masks would show the leaf of every
  tree. R's own path is its own.
- *Platform P*: that someone asked about these pseudonyms for this model (as for linear scores), not who,
  not the result, nothing of ``w`` (CKKS, IND-CPA).
- *Coordinator C*: ciphertexts, sizes, who asked, pseudonyms (as for linear scores).

Cost per applicant: ``L`` slots each way (CKKS N=8192: 4096 slots per ciphertext, ~330 KB up, ~240 KB
down per 4096 slots); one plaintext multiplication at P.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedcore.crypto.he import (
    DOT,
    CkksPublicContext,
    CkksSecretContext,
    EncryptedVector,
    add_plain,
    decrypt_vector,
    multiply_plain,
)
from fedcore.errors import NotFound, ProtocolError
from fedcore.protocol.scoring.messages import TREE_QUERY
from fedcore.protocol.scoring.party import SortedTable
from models.gbdt.tree import DirectionBits, SplitTable, Tree, leaf_index, owner_directions, reachable_leaves

__all__ = [
    "MASK_BOUND",
    "TREE_CKKS",
    "TREE_QUERY",
    "ArrayTreeContributions",
    "contribute",
    "margins",
    "requester_input",
]

TREE_CKKS = DOT  # one plaintext multiplication
MASK_BOUND = 4096.0


def leaf_values(trees: Sequence[Tree]) -> np.ndarray:
    """The leaf values in :func:`leaf_index` order."""
    return np.array([trees[t].value[i] for t, i in leaf_index(trees)], dtype=np.float64)


def requester_input(trees: Sequence[Tree], owners: Sequence[str], owner: str, bits: DirectionBits) -> np.ndarray:
    """``w`` per applicant (rows): the leaf values that the requester's own splits leave reachable."""
    mask = reachable_leaves(trees, owners, owner, bits)
    return mask * leaf_values(trees)


def contribute(
    pub: CkksPublicContext, enc_w: EncryptedVector, trees: Sequence[Tree], owners: Sequence[str], owner: str,
    bits: DirectionBits, rng: np.random.Generator | None = None,
) -> EncryptedVector:  # fmt: skip
    """P's reply ``Enc(w * (2B - 1) + r)`` for the applicants of ``bits`` (rows, in request order)."""
    b = reachable_leaves(trees, owners, owner, bits)
    n, width = b.shape
    if enc_w.length != n * width:
        raise ProtocolError(f"tree scoring input has {enc_w.length} values, expected {n} x {width} leaves")
    signs = (2.0 * b - 1.0).ravel()
    return add_plain(multiply_plain(enc_w, signs), zero_sum_masks(n, width, rng or np.random.default_rng()))


def zero_sum_masks(n: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Per applicant, ``width`` values uniform in [-MASK_BOUND, MASK_BOUND] minus their mean (sum 0)."""
    r = rng.uniform(-MASK_BOUND, MASK_BOUND, size=(n, width))
    return (r - r.mean(axis=1, keepdims=True)).ravel()


def margins(key: CkksSecretContext, data: bytes | None, w: np.ndarray, base_score: float) -> np.ndarray:
    """R's joint margins from the summed reply."""
    n, width = w.shape
    if data is None:
        raise ProtocolError("no party contributed the platform's splits to the tree score")
    vec = EncryptedVector.from_bytes(key, data, max_length=n * width)
    if vec.length != n * width:
        raise ProtocolError(f"tree score reply holds {vec.length} values, expected {n * width}")
    s = decrypt_vector(key, vec).reshape(n, width).sum(axis=1)
    return np.asarray(base_score + 0.5 * (s + w.sum(axis=1)), dtype=np.float64)


@dataclass
class ArrayTreeContributions:
    """A party's :class:`~fedcore.protocol.scoring.party.TreeContributionSource` over in-memory data:
    its split table and the trees' shapes of one model, its feature columns and their pseudonyms (rows
    with ``scoring`` consent only). An unknown applicant has all of this party's values missing."""

    model_id: str
    version: str
    trees: list[Tree]
    owners: tuple[str, ...]
    table: SplitTable
    pseudonyms: SortedTable  # pseudonym -> row number + 1
    columns: dict[str, np.ndarray]

    @classmethod
    def build(
        cls, model_id: str, version: str, trees: Sequence[Tree], owners: Sequence[str], table: SplitTable,
        pseudonyms: Sequence[bytes], columns: Mapping[str, np.ndarray],
    ) -> ArrayTreeContributions:  # fmt: skip
        rows = SortedTable(pseudonyms, np.arange(1, len(pseudonyms) + 1, dtype=np.float64))
        cols = {f: np.asarray(v, dtype=np.float64) for f, v in columns.items()}
        return cls(model_id, version, list(trees), tuple(owners), table, rows, cols)

    def tree_model_version(self, model_id: str) -> str:
        if model_id != self.model_id:
            raise NotFound(f"tree model {model_id!r} is not held here")
        return self.version

    def tree_contribution(
        self, model_id: str, pseudonyms: np.ndarray, pub: CkksPublicContext, tree_input: EncryptedVector
    ) -> EncryptedVector:
        self.tree_model_version(model_id)
        idx = self.pseudonyms.lookup(pseudonyms).astype(np.int64)
        known = idx > 0
        cols = {}
        for f in {r.feature for r in self.table.rules.values()}:
            v = np.full(len(idx), np.nan)
            v[known] = self.columns[f][idx[known] - 1]
            cols[f] = v
        bits = owner_directions(self.table, cols)
        return contribute(pub, tree_input, self.trees, self.owners, self.table.owner, bits)
