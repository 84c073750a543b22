"""A lender in horizontal trees (:mod:`fedcore.protocol.horizontal_trees`): bins as in the hybrid protocol
(masked sums of quantile vectors under the lenders' group key), histograms under the leader's CKKS key;
the leader also grows the trees on the decrypted sums."""

from __future__ import annotations

import queue
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedcore.crypto.he import SUMS, CkksPublicContext, CkksSecretContext, EncryptedVector, decrypt_vector
from fedcore.crypto.he import encrypt_vector as encrypt
from fedcore.errors import ProtocolError
from fedcore.partitions import node_histograms
from fedcore.protocol.horizontal_trees.messages import (
    EDGES,
    FINISH,
    GROW,
    HIST,
    KEYS,
    OWNER,
    QUANT,
    QUANT_BITS,
    SETUP,
    quantize,
)
from fedcore.protocol.messages import JSONValue, TaskReply
from fedcore.protocol.tasks import HandlerRegistry, TaskContext
from fedcore.protocol.trees.party import LenderTreeParty, _decision, _LenderRun, _node_sums
from models.gbdt.booster import GBDTModel
from models.gbdt.grower import grow_tree
from models.gbdt.histogram import FeatureLayout, FeatureSpec, Histogram
from models.gbdt.params import GBDTParams
from models.gbdt.split import SplitDecision
from models.gbdt.tree import SplitRule, Tree


def decision_params(node: int, dec: SplitDecision, left: int, right: int) -> dict[str, JSONValue]:
    return {
        "node": int(node), "left": int(left), "right": int(right), "feature": int(dec.feature),
        "default_left": bool(dec.default_left), "threshold": int(dec.threshold),
        "left_bins": [int(b) for b in dec.left_bins], "categorical": bool(dec.categorical),
    }  # fmt: skip


class _GrowerSource:
    """The leader's :class:`~models.gbdt.histogram.HistogramSource`: each ``build`` hands the request to the
    coordinator's next ``grow`` task and waits for the summed histograms."""

    def __init__(self, layout: FeatureLayout, first_ref: int) -> None:
        self.layout = layout
        self.requests: queue.Queue[dict[str, Any]] = queue.Queue()
        self.replies: queue.Queue[list[Histogram] | None] = queue.Queue()
        self.pending: list[dict[str, JSONValue]] = []
        self.next_ref = first_ref
        self.last: dict[str, Any] = {}  # the build request the coordinator is serving

    def build(self, nodes: Sequence[int], features: np.ndarray) -> list[Histogram]:
        self.requests.put({"build": [int(x) for x in nodes], "features": [int(f) for f in features],
                           "splits": self.pending})  # fmt: skip
        self.pending = []
        hists = self.replies.get()
        if hists is None:
            raise ProtocolError("the tree run was abandoned")
        return hists

    def split(self, splits: Sequence[tuple[int, SplitDecision, int, int]]) -> list[tuple[str, int]]:
        out = []
        for node, dec, left, right in splits:
            self.pending.append(decision_params(node, dec, left, right))
            out.append((OWNER, self.next_ref))
            self.next_ref += 1
        return out


PACK_ROWS = 1 << 19  # below this many rows, sums of g and h packed in one int64 cannot overflow


def pack_gh(g: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``g`` and ``h`` (multiples of 2^-12, ``|g| <= 1``, ``0 <= h <= 1/4``) in one word per row: ``g`` units
    times 2^32 plus ``h`` units, as uint64. Below ``PACK_ROWS`` rows their sums cannot overflow
    (``|sum g| < 2^31`` and ``0 <= sum h < 2^32`` units), so one pass sums both."""
    unit = float(1 << QUANT_BITS)
    packed = (np.rint(g * unit).astype(np.int64) << 32) + np.rint(h * unit).astype(np.int64)
    return packed.view(np.uint64)


def unpack_gh(acc: np.ndarray) -> np.ndarray:
    """Sums of :func:`pack_gh` words (uint64, any shape) -> float sums of ``g`` and ``h``, shape (2, ...)."""
    signed = np.asarray(acc, dtype=np.uint64).view(np.int64)
    low = signed & 0xFFFFFFFF
    unit = float(1 << QUANT_BITS)
    return np.stack([((signed - low) >> 32) / unit, low / unit])


def _node_part(bins: np.ndarray, rows: np.ndarray, feats: Sequence[int], slots: int, g: np.ndarray,
               h: np.ndarray) -> np.ndarray:  # fmt: skip
    """One partition of a node's rows (:func:`fedcore.partitions.node_histograms`), at or above
    ``PACK_ROWS`` rows: per (feature, slot) float sums of ``g`` and ``h``, shape (2, features, slots). The
    sums of multiples of 2^-12 are exact, so partitions add up to one pass bit for bit."""
    every = len(rows) == len(g)  # a root: no gather
    gg, hh = (g, h) if every else (g[rows], h[rows])
    out = np.zeros((2, len(feats), slots))
    for j, f in enumerate(feats):
        b = bins[f] if every else bins[f][rows]
        out[0, j] = np.bincount(b, weights=gg, minlength=slots)
        out[1, j] = np.bincount(b, weights=hh, minlength=slots)
    return out


class LenderHTreeParty(LenderTreeParty):
    """A lender of horizontal trees (its own rows, labels and the shared-schema features)."""

    secret: CkksSecretContext | None = None
    pub: CkksPublicContext | None = None
    grower: tuple[_GrowerSource, threading.Thread, dict[str, Any]] | None = None
    params = GBDTParams()
    refs_assigned = 0
    packed: np.ndarray | None = None  # this tree's g and h in one word per row (pack_gh)
    own: np.ndarray | None = None  # the leader's own histograms of the last request, in clear

    def register(self, registry: HandlerRegistry) -> None:
        for kind, fn in (
            (SETUP, self._hsetup),
            (KEYS, self._keys),
            (QUANT, self._quant),
            (EDGES, self._edges),
            (GROW, self._grow),
            (HIST, self._hist_enc),
            (FINISH, self._hfinish),
        ):
            registry.register(kind, fn)  # fmt: skip

    def _hsetup(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        reply = self._setup(ctx, {**params, "platform": params["leader"]})
        self.params = GBDTParams.from_dict(dict(params["gbdt"]))  # type: ignore[arg-type]
        s = self._state(params)
        s.subsample, s.seed = self.params.subsample, self.params.seed
        self.refs_assigned = 0
        out = dict(reply.params)
        if params["leader"] == self.name:
            self.secret = CkksSecretContext.generate(SUMS)
            out["public_context"] = self.secret.public_context().serialize().hex()
        return TaskReply(out)

    def _quant(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        self.pub = CkksPublicContext.from_bytes(bytes.fromhex(str(params["public_context"])))
        return self._bins(ctx, params)  # the hybrid protocol's masked quantile vector

    # -- every lender: splits, margins, encrypted histograms

    def _apply_splits(self, s: _LenderRun, splits: Any) -> None:
        assert self.mapper is not None and s.bins is not None
        for d in splits or []:
            node, left, right = int(d["node"]), int(d["left"]), int(d["right"])
            dec = _decision(d)
            if node not in s.rows or not 0 <= dec.feature < len(self.mapper.features):
                raise ProtocolError(f"party {self.name!r}: bad split of node {node} on feature {dec.feature}")
            self.table.add(SplitRule.from_decision(self.mapper.features[dec.feature], dec))
            rows = s.rows.pop(node)
            go = dec.left_table(s.max_bins + 1)[s.bins[dec.feature][rows]]
            s.rows[left], s.rows[right] = rows[go], rows[~go]

    def _hist_enc(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._state(params)
        if self.pub is None or s.bins is None or s.margin is None:
            raise ProtocolError(f"party {self.name!r}: histogram request before the bins")
        out: dict[str, JSONValue] = {}
        if params.get("first"):
            self._apply_splits(s, params.get("splits_before"))
            self._apply_update(s, params, {})
            p = 0.5 * (1.0 + np.tanh(0.5 * s.margin))
            skip = self.skipped(s, int(params["tree"]))  # validation rows, rows outside the tree's sample
            s.g = quantize(np.where(skip, 0.0, p - self.y))  # type: ignore[assignment]
            s.h = quantize(np.where(skip, 0.0, p * (1.0 - p)))  # type: ignore[assignment]
            self.packed = None
            s.tree, s.rows = int(params["tree"]), {0: np.arange(len(self.y))}
            out["val_loss"] = self._val_loss(s)  # type: ignore[assignment]
        self._apply_splits(s, params.get("splits"))
        if not params["build"]:  # the last tree's loss only (early stopping)
            return TaskReply(out)
        feats = [int(f) for f in params["features"]]  # type: ignore[union-attr]
        slots = s.max_bins + 1
        parts: list[np.ndarray] = []
        assert s.g is not None and s.h is not None
        for node in [int(x) for x in params["build"]]:  # type: ignore[union-attr]
            ctx.check_cancelled()
            rows = s.rows.get(node)
            if rows is None:
                raise ProtocolError(f"party {self.name!r}: node {node} is not in tree {s.tree}")
            parts.append(self._node_hist(s, rows, feats, slots).ravel())
        vec = np.concatenate(parts) if parts else np.zeros(0)
        if self.secret is not None:  # the leader adds its own histograms in clear to the others' decrypted sum
            self.own = vec
            return TaskReply(out)
        return TaskReply(out, [encrypt(self.pub, vec).to_bytes()])

    def _node_hist(self, s: _LenderRun, rows: np.ndarray, feats: list[int], slots: int) -> np.ndarray:
        """A node's (2, features, slots) sums of ``g`` and ``h``: one pass over the packed words and the
        run's paired bin codes below ``PACK_ROWS`` rows, else float sums per row partition."""
        assert s.bins is not None and s.g is not None and s.h is not None
        if len(s.g) >= PACK_ROWS:
            return node_histograms(_node_part, s.bins, (s.g, s.h), rows, feats, slots, self.compute)
        if self.packed is None or len(self.packed) != len(s.g):
            self.packed = pack_gh(s.g, s.h)
        return unpack_gh(_node_sums(self.compute, s.codes, "htrees", s.bins, (self.packed,), rows, feats, slots)[0])

    # -- the leader: the learner on the summed histograms

    def _grow(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        if self.secret is None or self.mapper is None:
            raise ProtocolError(f"party {self.name!r} is not the leader of this run")
        if params.get("start"):
            self._stop_grower()
            specs = tuple(FeatureSpec(fb.name, OWNER, fb.n_bins, fb.categorical, self.params.monotone.get(fb.name, 0))
                          for fb in self.mapper.features)  # fmt: skip
            layout = FeatureLayout(specs, self.mapper.max_bins)
            source = _GrowerSource(layout, self.refs_assigned)
            feats = [int(f) for f in params["features"]]  # type: ignore[union-attr]
            box: dict[str, Any] = {}

            def run() -> None:
                try:
                    box["grown"] = grow_tree(source, self.params, feats, (OWNER,))
                except BaseException as exc:  # handed to the task that waits for it
                    box["error"] = exc
                source.requests.put({"done": True})

            th = threading.Thread(target=run, name=f"htrees-grow-{self.name}", daemon=True)
            self.grower = (source, th, box)
            th.start()
        else:
            if self.grower is None:
                raise ProtocolError(f"party {self.name!r}: no tree is growing")
            source, _, _ = self.grower
            last = source.last
            data = ctx.read_payload()
            n_feat, slots = len(self.mapper.features), self.mapper.max_bins + 1
            width = len(last["features"]) * slots
            vec = EncryptedVector.from_bytes(self.secret, data, max_length=2 * len(last["build"]) * width)
            others = decrypt_vector(self.secret, vec)
            if self.own is None or len(self.own) != len(others):
                raise ProtocolError(f"party {self.name!r}: summed histograms do not match its own request")
            vals = quantize(others + self.own).reshape(len(last["build"]), 2, len(last["features"]), slots)
            hists = []
            for k in range(len(last["build"])):
                hg, hh = np.zeros((n_feat, slots)), np.zeros((n_feat, slots))
                hg[last["features"]], hh[last["features"]] = vals[k, 0], vals[k, 1]
                hists.append(Histogram(hg, hh))
            source.replies.put(hists)
        source, _, box = self.grower
        req = source.requests.get()
        if req.get("done"):
            if "error" in box:
                raise box["error"]
            grown = box["grown"]
            self.grower = None
            self.refs_assigned = source.next_ref  # rules every lender will hold once it applies the splits
            return TaskReply({"done": True, "tree": grown.tree.to_dict(), "splits": source.pending,
                              "gains": [[int(f), float(g)] for f, g in grown.gains]})  # fmt: skip
        source.last = req
        return TaskReply(req)

    def _stop_grower(self) -> None:
        if self.grower is not None:
            self.grower[0].replies.put(None)
            self.grower = None

    def _hfinish(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._state(params)
        if params.get("stopped"):  # early stopping: every grown tree is in the margins already
            s.rows = {}
        else:
            self._apply_splits(s, params.get("splits_before"))
            self._apply_update(s, params, {})
        trees = [Tree.from_dict(t) for t in params["trees"]]  # type: ignore[union-attr]
        keep = len(trees)
        if self.val.any() and keep < len(s.val_margins):
            yv = self.y[self.val]
            if 0 < yv.sum() < yv.size:
                from models.metrics import evaluate

                self.metrics = evaluate(yv, 0.5 * (1.0 + np.tanh(0.5 * s.val_margins[keep])))
        importance = {OWNER: {str(k): float(v) for k, v in dict(params["importance"]).items()}}  # type: ignore[arg-type]
        self.model = GBDTModel((OWNER,), trees, self.base_score, {OWNER: self.table}, importance)
        self._stop_grower()
        return TaskReply({"metrics": dict(self.metrics)})  # type: ignore[arg-type]
