"""Joint scoring with a hybrid tree model: the requester gets the score, nobody gets the path.

The model (:mod:`fedcore.protocol.trees`) is *layered*: every tree is the lenders' splits on top and, below
a platform split, only platform splits. A **region** is a maximal subtree under a platform split (``m``
leaves); every other leaf is *local*, decided by the lender alone. Per applicant the lender ``R`` knows
its local leaf (if any) and ``alpha_S`` (1 if its path enters region ``S``); the platform ``P`` knows
``c_S``, the leaf its own splits select in each region (an applicant it does not know, or without
``scoring`` consent, has every platform value missing: the learned default directions). The margin is
``base + local + sum_S alpha_S v_S[c_S]``: a lookup of the lender's leaf values at the platform's index.

One request (a lookup through rotated tables; ``C`` is the non-colluding helper it is in training;
arithmetic in ``Z_2^32``, leaf values in fixed point ``round(v 2^f)`` with ``f`` the requester's choice,
the largest that keeps the reachable sum below ``2^31``; ``[x]_P`` is HPKE-sealed to
``P``'s envelope key, which ``P`` announced signed with its TLS key and ``R`` checked against the
federation CA, :mod:`fedcore.protocol.sealing`)::

    R        fresh seed r (AES-128-CTR streams): rotations rho_S uniform in Z_m, masks M (uniform) per slot;
             per region the rotated, masked table  T_S[i] = alpha_S v_S[(i - rho_S) mod m] + M_S[i]
    R -> C   pseudonyms, region sizes, T (one 32-bit word per region leaf), [r, fresh reply key K]_P
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

Cost per applicant: 4 bytes per region leaf from ``R`` to ``C`` (no encryption: masks from an AES
stream), one byte per region from ``P``, 4 bytes back each way; one HPKE seal and open per request at
``R`` and ``P``. Requests carry at most :data:`MAX_TABLE_BYTES` of tables.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedcore.errors import InvalidInput, NotFound, ProtocolError
from fedcore.protocol.scoring import tree_kernels as kernels
from fedcore.protocol.scoring.messages import TREE_QUERY
from fedcore.protocol.scoring.party import SortedTable
from fedcore.protocol.trees.messages import LENDERS_OWNER
from models.gbdt.tree import DirectionBits, SplitTable, Tree, leaf_index, owner_directions

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
    "prg",
    "rotations",
    "tree_layout",
]

SEED_BYTES = 32
RING = np.dtype("<u4")  # Z_2^32; the requester picks the fixed-point scale (:meth:`TreePlan.of`)
FRAC_BITS_MAX = 30
MAX_TABLE_BYTES = 12 << 20  # the lender's tables per coordinator request (gRPC messages stop at 16 MiB)
REQUESTER = "requester"  # the requester's name in sealing: the platform is not told who asked
ANNOUNCE, SCORE = 1, 2
_MAGIC = b"FCTR"


# ---- the model's regions --------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeLayout:
    """A layered model, flattened (global node ids, trees one after another) with its regions: ``roots``
    (region root per region), ``sizes`` (leaves per region), ``leaves`` (the region leaves, region by
    region, by node id) and ``slot`` (per node: its index among its region's leaves, else -1)."""

    platform: str
    lender: int  # the lenders' owner index
    tree_root: np.ndarray
    left: np.ndarray
    right: np.ndarray
    owner: np.ndarray
    ref: np.ndarray
    value: np.ndarray
    depth: int
    roots: np.ndarray
    region_tree: np.ndarray
    sizes: np.ndarray
    leaves: np.ndarray
    slot: np.ndarray
    _deciders: dict[tuple[int, bytes], _Decider | None] = field(default_factory=dict, compare=False, repr=False)
    _ranks: dict[tuple[int, bytes], tuple[SplitTable, _RankTables | None]] = field(
        default_factory=dict, compare=False, repr=False
    )

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

    def decide(self, roots: np.ndarray, owner: int, bits: DirectionBits) -> np.ndarray:
        """From each of ``roots`` (k), the node where ``owner``'s splits lead (n x k): the codes of its
        split bits (one matrix product) looked up in per-root tables, or :meth:`walk` for large subtrees."""
        key = (owner, np.asarray(roots, dtype=np.int64).tobytes())
        if key not in self._deciders:
            self._deciders[key] = _decider(self, roots, owner)
        d = self._deciders[key]
        n = bits.bits.shape[0]
        if d is None:
            return self.walk(np.broadcast_to(roots, (n, len(roots))), owner, bits)
        col = np.minimum(np.searchsorted(bits.refs, d.refs), max(len(bits.refs) - 1, 0))
        if len(d.refs) and (len(bits.refs) == 0 or (bits.refs[col] != d.refs).any()):
            raise InvalidInput("direction bits are missing a split of their owner")
        acc = np.zeros((n, len(d.refs) + 1), dtype=np.int32)  # running sums of 2^j per split, root by root
        np.cumsum(bits.bits[:, col] * d.power, axis=1, out=acc[:, 1:])
        codes = acc[:, d.base_ref[1:]] - acc[:, d.base_ref[:-1]]
        return d.table[d.base[None, :] + codes]

    def decide_columns(
        self, roots: np.ndarray, owner: int, table: SplitTable, columns: Mapping[str, np.ndarray],
        then: np.ndarray | None = None,
    ) -> np.ndarray:  # fmt: skip
        """:meth:`decide` from the owner's raw ``columns``: per numeric feature, the rank of each value among
        the feature's thresholds (missing: a rank of its own) picks every split's bit at once, summed into
        the codes through a (rank x roots) table; :func:`owner_directions` first if a rule is categorical.
        With ``then``, ``then[node]`` instead of the node."""
        key = (owner, np.asarray(roots, dtype=np.int64).tobytes())
        if key not in self._deciders:
            self._deciders[key] = _decider(self, roots, owner)
        d = self._deciders[key]
        hit = self._ranks.get(key)
        if d is not None and (hit is None or hit[0] is not table):
            hit = (table, _rank_tables(d, table))
            self._ranks[key] = hit
        prep = None if hit is None else hit[1]
        if d is None or prep is None:
            pos = self.decide(roots, owner, owner_directions(table, columns))
            return pos if then is None else then[pos]
        missing = sorted(set(prep.features) - set(columns))
        if missing:
            raise InvalidInput(f"party {table.owner!r}: column(s) {missing} needed by its splits are missing")
        n = len(np.asarray(next(iter(columns.values())))) if columns else 0
        x = np.empty((len(prep.features), n), dtype=np.float64)
        for q, f in enumerate(prep.features):
            x[q] = columns[f]
        to = d.table if then is None else then[d.table]
        return kernels.rank_decide(x, prep.thr, prep.thr_off, prep.cols, prep.col_off, prep.add, prep.add_off,
                                   d.base, to)  # fmt: skip

    def walk(self, start: np.ndarray, owner: int, bits: DirectionBits) -> np.ndarray:
        """From the nodes ``start`` (n x k), follow ``owner``'s splits (its ``bits``, rows = n) down to the
        first node that is a leaf or another owner's split."""
        pos = np.array(start, dtype=np.int64)
        rows = np.arange(pos.shape[0])[:, None]
        mine = (self.left >= 0) & (self.owner == owner)
        col = np.minimum(np.searchsorted(bits.refs, self.ref), max(len(bits.refs) - 1, 0))
        if len(bits.refs) == 0 or (bits.refs[col[mine]] != self.ref[mine]).any():
            if mine.any():
                raise InvalidInput("direction bits are missing a split of their owner")
            return pos
        for _ in range(self.depth):
            go = mine[pos]
            if not go.any():
                break
            left = bits.bits[rows, col[pos]]
            pos = np.where(go, np.where(left, self.left[pos], self.right[pos]), pos)
        return pos


@dataclass(frozen=True)
class _Decider:
    refs: np.ndarray  # the owner's split refs below the roots, root by root
    power: np.ndarray  # 2^j of each split within its root's code
    base_ref: np.ndarray  # (roots + 1): where each root's splits start in ``refs``
    base: np.ndarray  # each root's offset in ``table``
    table: np.ndarray  # code -> the node reached


MAX_CODE_BITS = 12  # a subtree with more of the owner's splits is walked instead (tables of 2^bits)


def _decider(lay: TreeLayout, roots: np.ndarray, owner: int) -> _Decider | None:
    refs: list[int] = []
    powers: list[int] = []
    base_ref = [0]
    base: list[int] = []
    tables: list[np.ndarray] = []
    jidx = np.zeros(len(lay.left), dtype=np.int64)
    mine = (lay.left >= 0) & (lay.owner == owner)
    for r in np.asarray(roots, dtype=np.int64):
        nodes, stack = [], [int(r)]
        while stack:
            i = stack.pop()
            if mine[i]:
                nodes.append(i)
                stack += [int(lay.left[i]), int(lay.right[i])]
        if len(nodes) > MAX_CODE_BITS:
            return None
        jidx[nodes] = np.arange(len(nodes))
        refs += [int(lay.ref[i]) for i in nodes]
        powers += [1 << j for j in range(len(nodes))]
        base_ref.append(len(refs))
        codes = np.arange(1 << len(nodes), dtype=np.int64)
        pos = np.full(len(codes), int(r), dtype=np.int64)
        for _ in range(len(nodes)):
            go = mine[pos]
            if not go.any():
                break
            left = ((codes >> jidx[pos]) & 1) == 1
            pos = np.where(go, np.where(left, lay.left[pos], lay.right[pos]), pos)
        base.append(sum(len(t) for t in tables))
        tables.append(pos)
    table = np.concatenate(tables) if tables else np.zeros(0, dtype=np.int64)
    return _Decider(np.array(refs, dtype=np.int64), np.array(powers, dtype=np.int32), np.array(base_ref),
                    np.array(base, dtype=np.int64), table)  # fmt: skip


@dataclass(frozen=True)
class _RankTables:
    """Per numeric feature of a :class:`_Decider`'s splits (``features``), one after another: its sorted
    thresholds (``thr[thr_off[f]:thr_off[f + 1]]``), the roots whose subtrees split on it
    (``cols[col_off[f]:col_off[f + 1]]``) and its (ranks + 2) x those roots table of code parts, flat
    from ``add_off[f]`` (rank ``r`` sends the split at threshold index ``j`` left iff ``r <= j``; the last
    row is a missing value's default directions)."""

    features: tuple[str, ...]
    thr: np.ndarray
    thr_off: np.ndarray
    cols: np.ndarray
    col_off: np.ndarray
    add: np.ndarray
    add_off: np.ndarray


def _rank_tables(d: _Decider, table: SplitTable) -> _RankTables | None:
    """``d``'s :class:`_RankTables` under ``table``'s rules; None if a split is categorical."""
    root_of = np.repeat(np.arange(len(d.base)), np.diff(d.base_ref))
    by_feature: dict[str, list[int]] = {}
    out: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] | None = []
    for q, ref in enumerate(d.refs.tolist()):
        rule = table.rules.get(int(ref))
        if rule is None:
            raise InvalidInput(f"party {table.owner!r} holds no split {ref} of the model")
        if rule.categorical:
            out = None
            break
        by_feature.setdefault(rule.feature, []).append(q)
    if out is not None:
        for f, qs in by_feature.items():
            thr = np.unique([table.rules[int(d.refs[q])].threshold for q in qs])
            add = np.zeros((len(thr) + 2, len(d.base)), dtype=np.int16)
            for q in qs:
                rule = table.rules[int(d.refs[q])]
                add[: int(np.searchsorted(thr, rule.threshold)) + 1, root_of[q]] += d.power[q]
                add[len(thr) + 1, root_of[q]] += d.power[q] * rule.default_left
            nz = np.flatnonzero(add.any(axis=0))  # the roots splitting on f (rank 0: all splits left)
            out.append((f, thr, nz, add[:, nz].astype(np.int64).ravel()))
    if out is None:
        return None

    def cat(i: int, dtype: type) -> tuple[np.ndarray, np.ndarray]:
        parts: list[np.ndarray] = [np.asarray(o[i], dtype=dtype) for o in out]  # type: ignore[index]
        return np.concatenate([np.zeros(0, dtype=dtype), *parts]), np.cumsum([0] + [len(a) for a in parts])

    (thr, thr_off), (cols, col_off), (add, add_off) = cat(1, np.float64), cat(2, np.int64), cat(3, np.int64)
    return _RankTables(tuple(str(o[0]) for o in out), thr, thr_off, cols, col_off, add, add_off)


def layout_digest(sizes: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(sizes, dtype=">u4").tobytes()).hexdigest()[:16]


def tree_layout(trees: Sequence[Tree], owners: Sequence[str], lender: str) -> TreeLayout:
    """The flattened model and its regions; InvalidInput unless the trees are layered with one platform."""
    me = owners.index(lender) if lender in owners else -1
    base = np.cumsum([0] + [t.n_nodes for t in trees])[:-1].astype(np.int64)

    def glue(field: str, shift: bool) -> np.ndarray:
        parts = [np.where(getattr(t, field) >= 0, getattr(t, field) + b, -1) if shift else getattr(t, field)
                 for t, b in zip(trees, base, strict=True)]  # fmt: skip
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    left, right, owner, ref = glue("left", True), glue("right", True), glue("owner", False), glue("ref", False)
    value = glue("value", False).astype(np.float64)
    platforms: set[int] = set()
    regions: list[tuple[int, int, int, int, list[int]]] = []  # (size, order, root, tree, leaves)
    slot = np.full(len(left), -1, dtype=np.int64)
    for t, b in enumerate(base):
        stack = [int(b)]
        while stack:
            i = stack.pop()
            if left[i] < 0:
                continue
            if int(owner[i]) == me:
                stack += [int(right[i]), int(left[i])]
                continue
            platforms.add(int(owner[i]))
            mine = _region_leaves(left, right, owner, i, t)
            slot[mine] = np.arange(len(mine))
            regions.append((len(mine), len(regions), i, t, mine))
    if len(platforms) > 1:
        raise InvalidInput(f"tree model splits on {len(platforms)} parties' features besides the lenders'")
    regions.sort(key=lambda r: (r[0], r[1]))  # regions of one size side by side (one gather per size)
    depth = max((t.depth() for t in trees), default=0)
    return TreeLayout(
        owners[platforms.pop()] if platforms else "", me, base, left, right, owner, ref, value, depth,
        np.array([r[2] for r in regions], dtype=np.int64), np.array([r[3] for r in regions], dtype=np.int64),
        np.array([r[0] for r in regions], dtype=np.int64),
        np.array([j for r in regions for j in r[4]], dtype=np.int64), slot,
    )  # fmt: skip


def _region_leaves(left: np.ndarray, right: np.ndarray, owner: np.ndarray, root: int, t: int) -> list[int]:
    out, stack = [], [root]
    while stack:
        i = stack.pop()
        if left[i] < 0:
            out.append(i)
        elif owner[i] != owner[root]:
            raise InvalidInput(f"tree {t}: a split of another party below a platform split (not a layered model)")
        else:
            stack += [int(left[i]), int(right[i])]
    return sorted(out)


def leaf_values(trees: Sequence[Tree]) -> np.ndarray:
    """The leaf values in :func:`leaf_index` order."""
    return np.array([trees[t].value[i] for t, i in leaf_index(trees)], dtype=np.float64)


@dataclass(frozen=True)
class TreePlan:
    """What the requester needs of its model: the layout (with the leaf values), the base score, and the
    regions' leaf values in fixed point (``frac_bits`` fractional bits, ring) under every rotation
    (:func:`~fedcore.protocol.scoring.tree_kernels.rotated_tables`: ``rot``, each region's rows from
    ``rot_off``)."""

    layout: TreeLayout
    base_score: float
    rot: np.ndarray
    rot_off: np.ndarray
    frac_bits: int
    table: SplitTable  # the lender's rules

    @classmethod
    def of(cls, trees: Sequence[Tree], owners: Sequence[str], table: SplitTable, base_score: float) -> TreePlan:
        lay = tree_layout(trees, owners, table.owner)
        # the largest region sum: one region per tree at most; it must stay below 2^31 in fixed point
        top = np.zeros(len(trees))
        np.maximum.at(top, np.repeat(lay.region_tree, lay.sizes), np.abs(lay.value[lay.leaves]))
        frac = int(min(FRAC_BITS_MAX, np.floor(np.log2((2.0**31 - 1) / max(float(top.sum()), 1e-9)))))
        fx = np.round(lay.value[lay.leaves] * 2.0**frac).astype(np.int64).astype(RING)
        return cls(lay, float(base_score), *kernels.rotated_tables(fx, lay.sizes), frac, table)

    def decode(self, total: np.ndarray) -> np.ndarray:
        """The regions' part of the margin from ``z - y`` in the ring."""
        return np.asarray(total, dtype=RING).view("<i4").astype(np.float64) / 2.0**self.frac_bits

    def lender_walk(self, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per row of the lender's ``columns``: ``base`` plus the local leaf values its splits reach, and
        ``alpha`` (rows x regions, True where its path enters the region)."""
        lay = self.layout
        pos = lay.decide_columns(lay.tree_root, lay.lender, self.table, columns)
        vals, alpha = kernels.lender_paths(pos, lay.left, lay.value, lay.region_tree, lay.roots)
        local = self.base_score + vals.sum(axis=1)  # numpy's sum, as ever: the same floats
        return np.asarray(local, dtype=np.float64), alpha

    def max_applicants(self) -> int:
        return max(1, MAX_TABLE_BYTES // (RING.itemsize * max(1, self.layout.width)))


# ---- pseudo-random streams (AES-128 in counter mode: the requester expands, the platform picks) ------


def _aes_key(seed: bytes, label: str) -> bytes:
    return hashlib.sha256(seed + b"\x00" + label.encode()).digest()[:16]


_ZEROS = memoryview(bytes(1 << 20))  # the plaintext of the keystream, encrypted in place piece by piece


def prg(seed: bytes, label: str, n: int) -> np.ndarray:
    """``n`` uniform ring elements: the AES-128-CTR keystream (counter from 0) of a key from ``seed``, ``label``."""
    enc = Cipher(algorithms.AES(_aes_key(seed, label)), modes.CTR(bytes(16))).encryptor()
    total, step = RING.itemsize * n, len(_ZEROS)
    out = np.empty(total + 15, dtype=np.uint8)  # update_into wants a block - 1 of room
    view = memoryview(out.data)
    for a in range(0, total, step):
        b = min(total, a + step)
        enc.update_into(_ZEROS[: b - a], view[a : b + 15])
    return out[:total].view(RING)


def rotations(seed: bytes, sizes: np.ndarray, n: int) -> np.ndarray:
    """``rho`` (n x regions), uniform in ``Z_m`` per region: a uniform 32-bit value mod ``m`` (bias below
    ``m / 2^32``)."""
    k = len(sizes)
    return (prg(seed, "rotation", n * k).reshape(n, k) % np.asarray(sizes, dtype=RING)).astype(np.int64)


# ---- the three parties' arithmetic ------------------------------------------------------------------


def lender_tables(plan: TreePlan, alpha: np.ndarray, seed: bytes) -> np.ndarray:
    """R's rotated, masked tables ``T`` (n x width, ring) for its regions' ``alpha`` (n x regions);
    ``rho`` as :func:`rotations` draws it, reduced mod ``m`` in the kernel."""
    lay = plan.layout
    n, k = alpha.shape[0], lay.n_regions
    raw = prg(seed, "rotation", n * k).reshape(n, k)
    masks = prg(seed, "mask", n * lay.width).reshape(n, lay.width)  # writable: the masks, then the values
    return kernels.lender_tables(masks, raw, np.ascontiguousarray(alpha), plan.rot, plan.rot_off, lay.offsets,
                                 lay.sizes)  # fmt: skip


def platform_picks(layout: TreeLayout, table: SplitTable, columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per row of the platform's ``columns``, the leaf (index within each region) its splits select."""
    me = int(layout.owner[layout.roots[0]]) if layout.n_regions else -1
    return layout.decide_columns(layout.roots, me, table, columns, then=layout.slot)


def platform_reply(sizes: np.ndarray, picks: np.ndarray, seed: bytes, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """P's ``chat`` (n x regions) and ``y`` (n) for its ``picks`` (leaf index within each region)."""
    n, k = picks.shape
    sizes = np.asarray(sizes, dtype=np.int64)
    width = int(sizes.sum())
    off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    raw = prg(seed, "rotation", n * k).reshape(n, k)  # rho = raw mod m, as :func:`rotations` draws it
    # the whole stream and a gather: cheaper than AES of the picked counter blocks one by one
    masks = prg(seed, "mask", n * width).reshape(n, width)
    return kernels.platform_reply(np.ascontiguousarray(picks, dtype=np.int64), raw, masks, off, sizes,
                                  np.asarray(s, dtype=RING))  # fmt: skip


def coordinator_sum(sizes: np.ndarray, tables: np.ndarray, chat: np.ndarray, s: np.ndarray) -> np.ndarray:
    """C's ``z = sum_S T_S[chat_S] + s``; ProtocolError if ``chat`` does not fit the regions."""
    sizes = np.asarray(sizes, dtype=np.int64)
    n = tables.shape[0]
    if chat.shape != (n, len(sizes)):
        raise ProtocolError(f"region picks must be {n} x {len(sizes)} values below the region sizes")
    off = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    z = kernels.coordinator_sum(tables, chat, off, sizes, np.asarray(s, dtype=RING))
    if z is None:
        raise ProtocolError(f"region picks must be {n} x {len(sizes)} values below the region sizes")
    return z


# ---- wire formats -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeInput:
    """The requester's ``tree_input`` (announce: platform only)."""

    kind: int
    platform: str
    sizes: np.ndarray
    sealed: bytes = b""
    tables: bytes | memoryview = b""


def pack_tree_input(t: TreeInput) -> bytes:
    name = t.platform.encode()
    head = _MAGIC + struct.pack(">BH", t.kind, len(name)) + name
    if t.kind == ANNOUNCE:
        return head
    sizes = np.asarray(t.sizes, dtype=">u4").tobytes()
    parts = (head, struct.pack(">I", len(t.sizes)), sizes, struct.pack(">I", len(t.sealed)), t.sealed, t.tables)
    return b"".join(parts)


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
        return TreeInput(kind, platform, sizes, sealed, memoryview(data)[pos + 4 + slen :])
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
        pseudonyms: Sequence[bytes] | np.ndarray, columns: Mapping[str, np.ndarray], lender: str = LENDERS_OWNER,
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
        return self.layout, platform_picks(self.layout, self.table, cols)
