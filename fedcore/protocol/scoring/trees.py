"""Joint scoring with a hybrid tree model: the requester gets the score, nobody gets the path.

The model (:mod:`fedcore.protocol.trees`) is *layered*: every tree is the lenders' splits on top and, below
a platform split, only platform splits. A **region** is a maximal subtree under a platform split (``m``
leaves); every other leaf is *local*, decided by the lender alone. Per applicant the lender ``R`` knows
its local leaf (if any) and ``alpha_S`` (1 if its path enters region ``S``); the platform ``P`` knows
``c_S``, the leaf its own splits select in each region (an applicant it does not know, or without
``scoring`` consent, has every platform value missing: the learned default directions). The margin is
``base + local + sum_S alpha_S v_S[c_S]``: a lookup of the lender's leaf values at the platform's index.

One request (a lookup through rotated tables; ``C`` is the non-colluding helper it is in training;
arithmetic in ``Z_2^64``, leaf values in fixed point ``round(v 2^32)``; ``[x]_P`` is HPKE-sealed to
``P``'s envelope key, which ``P`` announced signed with its TLS key and ``R`` checked against the
federation CA, :mod:`fedcore.protocol.sealing`)::

    R        fresh seed r (AES-128-CTR streams): rotations rho_S uniform in Z_m, masks M (uniform) per slot;
             per region the rotated, masked table  T_S[i] = alpha_S v_S[(i - rho_S) mod m] + M_S[i]
    R -> C   pseudonyms, region sizes, T (one uint64 per region leaf), [r, fresh reply key K]_P
    C -> P   pseudonyms, [r, K]_P, a fresh seed for s (uniform per applicant)
    P -> C   chat_S = (c_S + rho_S) mod m  per region,  and  [y = sum_S M_S[chat_S] + s]_K
    C -> R   z = sum_S T_S[chat_S] + s,  and  [y]_K
    R        z - y = sum_S alpha_S v_S[c_S]  (T_S[chat_S] = alpha_S v_S[c_S] + M_S[chat_S])

The first request of a process asks ``C`` for ``P``'s signed announcement (no pseudonym, no data);
``R`` keeps the checked key and asks again if ``P`` refuses an input sealed to an old key.

**What each side learns** (semi-honest; ``C`` colluding with nobody):

- *Requester R*: the joint margin, per applicant. ``z`` and ``y`` are each uniform (``s``); only their
  difference is the sum: not which leaf of any tree, not which region's value, not a platform decision.
  (FATE-Serving shows the guest every host decision; AND-ing the masks would show every tree's leaf.)
- *Platform P*: that someone asked about these pseudonyms for this model (not who, not the result), and
  ``r``: its rotations and masks, which touch nothing of the lender's (``T`` never reaches ``P``). No leaf
  value, no lender decision, no score.
- *Coordinator C*: who asked, the pseudonyms, sizes and timing (as for linear scores), the region sizes
  (the model's shape, which it built), ``T`` (uniform: masked by ``M``, which it does not have), ``chat``
  (uniform: rotated by ``rho``, which it does not have), its own ``s``, sealed bytes.
- *Collusion* unmasks: ``C`` with ``P`` (who has ``M`` and ``rho``) reads the lender's ``alpha`` (which
  region it reached: its path) from ``T``; ``C`` with ``R`` (who has ``rho``) reads every ``c_S`` (the
  platform's path in every region) from ``chat``. A requester that sends tables other than its model's
  (chosen values) learns the platform's decisions from the sum, as with any protocol that returns a sum
  under weights the requester chooses; so could a ``C`` that forges a whole request (``P`` is not told who
  asked). Controls: the coordinator's rate limit and the audit log at every party.

Cost per applicant: one uint64 per region leaf from ``R`` to ``C`` (no encryption: masks from an AES
stream), one byte per region from ``P``, 8 bytes back each way; one HPKE seal and open per request at
``R`` and ``P``. Requests carry at most :data:`MAX_TABLE_BYTES` of tables.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedcore.errors import InvalidInput, NotFound, ProtocolError
from fedcore.protocol.scoring.messages import TREE_QUERY
from fedcore.protocol.scoring.party import SortedTable
from fedcore.protocol.trees.messages import LENDERS_OWNER, from_fixed, to_fixed
from models.gbdt.tree import DirectionBits, SplitTable, Tree, leaf_index, owner_directions, reachable_leaves

__all__ = [
    "MAX_TABLE_BYTES",
    "REQUESTER",
    "TREE_QUERY",
    "ArrayTreeContributions",
    "TreeLayout",
    "TreePlan",
    "coordinator_sum",
    "lender_tables",
    "platform_reply",
    "prg_u64",
    "prg_u64_at",
    "rotations",
    "tree_layout",
]

SEED_BYTES = 32
MAX_TABLE_BYTES = 8 << 20  # the lender's tables per coordinator request (gRPC messages stop at 16 MiB)
REQUESTER = "requester"  # the requester's name in sealing: the platform is not told who asked
ANNOUNCE, SCORE = 1, 2
_MAGIC = b"FCTR"


# ---- the model's regions --------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeLayout:
    """The regions of a layered model. ``columns``: the :func:`leaf_index` column of every region leaf,
    region by region (leaves by node id); ``local``: every other leaf's column."""

    platform: str
    sizes: np.ndarray
    columns: np.ndarray
    local: np.ndarray

    @property
    def n_regions(self) -> int:
        return len(self.sizes)

    @property
    def width(self) -> int:
        return int(self.sizes.sum())

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    def digest(self) -> str:
        return layout_digest(self.sizes)


def layout_digest(sizes: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(sizes, dtype=">u4").tobytes()).hexdigest()[:16]


def tree_layout(trees: Sequence[Tree], owners: Sequence[str], lender: str) -> TreeLayout:
    """The regions of ``trees``; InvalidInput unless the trees are layered with one platform."""
    me = owners.index(lender) if lender in owners else -1
    col = {key: j for j, key in enumerate(leaf_index(trees))}
    platforms: set[int] = set()
    sizes: list[int] = []
    columns: list[int] = []
    local: list[int] = []
    for t, tree in enumerate(trees):
        stack = [0]
        while stack:
            i = stack.pop()
            if tree.left[i] < 0:
                local.append(col[(t, i)])
            elif int(tree.owner[i]) == me:
                stack += [int(tree.right[i]), int(tree.left[i])]
            else:
                platforms.add(int(tree.owner[i]))
                leaves = _region_leaves(tree, i, int(tree.owner[i]), t)
                sizes.append(len(leaves))
                columns += [col[(t, j)] for j in leaves]
    if len(platforms) > 1:
        raise InvalidInput(f"tree model splits on {len(platforms)} parties' features besides the lenders'")
    platform = owners[platforms.pop()] if platforms else ""
    return TreeLayout(platform, np.array(sizes, dtype=np.int64), np.array(columns, dtype=np.int64),
                      np.array(sorted(local), dtype=np.int64))  # fmt: skip


def _region_leaves(tree: Tree, root: int, owner: int, t: int) -> list[int]:
    out, stack = [], [root]
    while stack:
        i = stack.pop()
        if tree.left[i] < 0:
            out.append(i)
        elif int(tree.owner[i]) != owner:
            raise InvalidInput(f"tree {t}: a split of another party below a platform split (not a layered model)")
        else:
            stack += [int(tree.left[i]), int(tree.right[i])]
    return sorted(out)


def leaf_values(trees: Sequence[Tree]) -> np.ndarray:
    """The leaf values in :func:`leaf_index` order."""
    return np.array([trees[t].value[i] for t, i in leaf_index(trees)], dtype=np.float64)


@dataclass(frozen=True)
class TreePlan:
    """What the requester needs of its model: the layout, the leaf values, the base score."""

    layout: TreeLayout
    values: np.ndarray
    base_score: float

    @classmethod
    def of(cls, trees: Sequence[Tree], owners: Sequence[str], lender: str, base_score: float) -> TreePlan:
        return cls(tree_layout(trees, owners, lender), leaf_values(trees), float(base_score))

    def local_margin(self, mask: np.ndarray) -> np.ndarray:
        """``base`` plus the local leaves the lender's own splits select (rows of ``mask``)."""
        loc = self.layout.local
        return np.asarray(self.base_score + mask[:, loc].astype(np.float64) @ self.values[loc], dtype=np.float64)

    def max_applicants(self) -> int:
        return max(1, MAX_TABLE_BYTES // (8 * max(1, self.layout.width)))


# ---- pseudo-random streams (AES-128 in counter mode: the requester expands, the platform picks) ------


def _aes_key(seed: bytes, label: str) -> bytes:
    return hashlib.sha256(seed + b"\x00" + label.encode()).digest()[:16]


def prg_u64(seed: bytes, label: str, n: int) -> np.ndarray:
    """``n`` uniform uint64: the AES-128-CTR keystream (counter from 0) of a key from ``seed``, ``label``."""
    enc = Cipher(algorithms.AES(_aes_key(seed, label)), modes.CTR(bytes(16))).encryptor()
    return np.frombuffer(enc.update(bytes(8 * n)), dtype="<u8").astype(np.uint64)


def prg_u64_at(seed: bytes, label: str, positions: np.ndarray) -> np.ndarray:
    """``prg_u64(seed, label, N)[positions]`` without the rest of the stream (AES of the counter blocks)."""
    pos = np.asarray(positions, dtype=np.int64).ravel()
    blocks = np.zeros((len(pos), 2), dtype=">u8")
    blocks[:, 1] = pos // 2
    # AES as a PRF on chosen counter blocks: exactly the CTR keystream's blocks, not ECB of data
    enc = Cipher(algorithms.AES(_aes_key(seed, label)), modes.ECB()).encryptor()  # noqa: S305
    out = np.frombuffer(enc.update(blocks.tobytes()), dtype="<u8").reshape(-1, 2)
    return out[np.arange(len(pos)), pos % 2].astype(np.uint64).reshape(np.shape(positions))


def rotations(seed: bytes, sizes: np.ndarray, n: int) -> np.ndarray:
    """``rho`` (n x regions), uniform in ``Z_m`` per region (bias ``m / 2^64``)."""
    k = len(sizes)
    raw = prg_u64(seed, "rotation", n * k).reshape(n, k)
    return (raw % np.asarray(sizes, dtype=np.uint64)).astype(np.int64)


# ---- the three parties' arithmetic ------------------------------------------------------------------


def lender_tables(plan: TreePlan, mask: np.ndarray, seed: bytes) -> np.ndarray:
    """R's rotated, masked tables ``T`` (n x width uint64) for the rows of its reachable-leaves ``mask``."""
    lay = plan.layout
    n, sizes, off = mask.shape[0], lay.sizes, lay.offsets
    region = np.repeat(np.arange(lay.n_regions), sizes)
    pos = np.arange(lay.width) - off[region]
    rho = rotations(seed, sizes, n)
    src = off[region] + (pos - rho[:, region]) % sizes[region]
    alpha = mask[:, lay.columns[off]]  # a region's leaves are all reachable for R, or none
    fx = to_fixed(plan.values[lay.columns])
    table = np.where(alpha[:, region], fx[src], np.uint64(0))
    return table + prg_u64(seed, "mask", n * lay.width).reshape(n, lay.width)


def platform_reply(sizes: np.ndarray, picks: np.ndarray, seed: bytes, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P's ``chat`` (n x regions) and ``y`` (n) for its ``picks`` (leaf index within each region)."""
    n = picks.shape[0]
    sizes = np.asarray(sizes, dtype=np.int64)
    chat = (picks + rotations(seed, sizes, n)) % sizes
    off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    at = np.arange(n, dtype=np.int64)[:, None] * int(sizes.sum()) + off[None, :] + chat
    return chat, prg_u64_at(seed, "mask", at).sum(axis=1, dtype=np.uint64) + s


def coordinator_sum(sizes: np.ndarray, tables: np.ndarray, chat: np.ndarray, s: np.ndarray) -> np.ndarray:
    """C's ``z = sum_S T_S[chat_S] + s``; ProtocolError if ``chat`` does not fit the regions."""
    sizes = np.asarray(sizes, dtype=np.int64)
    n = tables.shape[0]
    if chat.shape != (n, len(sizes)) or (chat >= sizes[None, :]).any():
        raise ProtocolError(f"region picks must be {n} x {len(sizes)} values below the region sizes")
    off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return tables[np.arange(n)[:, None], off[None, :] + chat].sum(axis=1, dtype=np.uint64) + s


def joint_margin(plan: TreePlan, mask: np.ndarray, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    return plan.local_margin(mask) + from_fixed(z - y)


def platform_picks(layout: TreeLayout, trees: Sequence[Tree], owners: Sequence[str], bits: DirectionBits) -> np.ndarray:
    """Per row, the leaf (index within each region) that the platform's splits select."""
    reach = reachable_leaves(trees, owners, layout.platform, bits)
    out = np.zeros((reach.shape[0], layout.n_regions), dtype=np.int64)
    for k, (o, m) in enumerate(zip(layout.offsets, layout.sizes, strict=True)):
        out[:, k] = np.argmax(reach[:, layout.columns[o : o + m]], axis=1)
    return out


# ---- wire formats -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeInput:
    """The requester's ``tree_input`` (announce: platform only)."""

    kind: int
    platform: str
    sizes: np.ndarray
    sealed: bytes = b""
    tables: bytes = b""


def pack_tree_input(t: TreeInput) -> bytes:
    name = t.platform.encode()
    head = _MAGIC + struct.pack(">BH", t.kind, len(name)) + name
    if t.kind == ANNOUNCE:
        return head
    sizes = np.asarray(t.sizes, dtype=">u4").tobytes()
    return head + struct.pack(">I", len(t.sizes)) + sizes + struct.pack(">I", len(t.sealed)) + t.sealed + t.tables


def unpack_tree_input(data: bytes) -> TreeInput:
    try:
        if data[:4] != _MAGIC:
            raise ValueError("magic")
        kind, nlen = struct.unpack_from(">BH", data, 4)
        pos = 7 + nlen
        platform = data[7:pos].decode()
        if kind == ANNOUNCE:
            return TreeInput(kind, platform, np.zeros(0, dtype=np.int64))
        if kind != SCORE:
            raise ValueError("kind")
        (k,) = struct.unpack_from(">I", data, pos)
        sizes = np.frombuffer(data[pos + 4 : pos + 4 + 4 * k], dtype=">u4").astype(np.int64)
        pos += 4 + 4 * k
        (slen,) = struct.unpack_from(">I", data, pos)
        sealed = data[pos + 4 : pos + 4 + slen]
        if len(sizes) != k or len(sealed) != slen or (sizes < 2).any():
            raise ValueError("truncated")
        return TreeInput(kind, platform, sizes, sealed, data[pos + 4 + slen :])
    except (ValueError, struct.error, UnicodeDecodeError):
        raise ProtocolError("not a fedcredit tree scoring input") from None


def pack_sealed_and(sealed: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(sealed)) + sealed + data


def unpack_sealed_and(data: bytes) -> tuple[bytes, bytes]:
    if len(data) < 4:
        raise ProtocolError("tree scoring reply is truncated")
    (k,) = struct.unpack_from(">I", data, 0)
    if 4 + k > len(data):
        raise ProtocolError("tree scoring reply is truncated")
    return data[4 : 4 + k], data[4 + k :]


def picks_dtype(sizes: np.ndarray) -> str:
    return "u1" if len(sizes) == 0 or int(np.max(sizes)) <= 256 else "<u2"


def sealing_purpose(model_id: str, version: str, pseudonyms_sha256: str) -> str:
    return f"scoring-tree/{model_id}/{version}/{pseudonyms_sha256}"


# ---- a platform's source over in-memory data ------------------------------------------------------


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
    layout: TreeLayout

    @classmethod
    def build(
        cls, model_id: str, version: str, trees: Sequence[Tree], owners: Sequence[str], table: SplitTable,
        pseudonyms: Sequence[bytes], columns: Mapping[str, np.ndarray], lender: str = LENDERS_OWNER,
    ) -> ArrayTreeContributions:  # fmt: skip
        rows = SortedTable(pseudonyms, np.arange(1, len(pseudonyms) + 1, dtype=np.float64))
        cols = {f: np.asarray(v, dtype=np.float64) for f, v in columns.items()}
        layout = tree_layout(trees, owners, lender)
        return cls(model_id, version, list(trees), tuple(owners), table, rows, cols, layout)

    def tree_model_version(self, model_id: str) -> str:
        if model_id != self.model_id:
            raise NotFound(f"tree model {model_id!r} is not held here")
        return self.version

    def tree_picks(self, model_id: str, pseudonyms: np.ndarray) -> tuple[TreeLayout, np.ndarray] | None:
        self.tree_model_version(model_id)
        if self.layout.platform != self.table.owner:
            return None  # not this party's regions
        idx = self.pseudonyms.lookup(pseudonyms).astype(np.int64)
        known = idx > 0
        cols = {}
        for f in {r.feature for r in self.table.rules.values()}:
            v = np.full(len(idx), np.nan)
            v[known] = self.columns[f][idx[known] - 1]
            cols[f] = v
        bits = owner_directions(self.table, cols)
        return self.layout, platform_picks(self.layout, self.trees, self.owners, bits)
