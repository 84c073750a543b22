"""The coordinator's driver of the hybrid tree protocol: :func:`run_hybrid_trees`.

It runs the ordinary tree learner (:func:`models.gbdt.grower.grow_tree`) on a
:class:`FederatedHistogramSource`, which gets every histogram from the parties as masked shares and
reconstructs only per-bin sums. See :mod:`fedcore.protocol.trees` for the messages and what each side
learns.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedcore.errors import InvalidInput, ProtocolError
from fedcore.protocol.channel import PartyChannel
from fedcore.protocol.messages import JSONValue, Task, TaskResult
from fedcore.protocol.trees.checkpoint import TreeCheckpoint, decision_from_dict, decision_to_dict
from fedcore.protocol.trees.messages import (
    BEGIN,
    BINS,
    EDGES,
    EVAL,
    FINISH,
    HIST,
    KEYS,
    LENDERS_OWNER,
    MOD128,
    SETUP,
    SPLIT,
    BinCodes,
    cached_codes,
    decode_arrays,
    encode_arrays,
    from_fixed,
)
from models.gbdt.grower import grow_tree
from models.gbdt.histogram import FeatureLayout, FeatureSpec, Histogram
from models.gbdt.params import GBDTParams, check_monotone
from models.gbdt.split import SplitDecision
from models.gbdt.tree import Tree


@dataclass(frozen=True)
class HybridTreesConfig:
    run_id: str
    lenders: tuple[str, ...]
    platform: str
    lender_features: tuple[str, ...]
    params: GBDTParams = field(default_factory=GBDTParams)
    timeout_s: float = 600.0
    data: Mapping[str, JSONValue] = field(default_factory=dict)  # for the parties' setup (e.g. PSI runs)


@dataclass
class HybridTreesResult:
    """The model as the coordinator holds it: opaque trees, owners and base score (no split tables)."""

    trees: list[Tree]
    owners: tuple[str, ...]
    base_score: float
    layout: FeatureLayout
    importance: dict[str, dict[str, float]] = field(default_factory=dict)  # owner -> feature -> total gain
    val_loss: list[float] = field(default_factory=list)  # pooled validation log-loss after 0, 1, ... trees
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # lender -> its validation metrics
    setup_s: float = 0.0  # keys, pooled lender bins, the platform's bins (before the first tree)
    tree_s: list[float] = field(default_factory=list)  # wall seconds of each tree grown
    resumed_after: int = 0  # a resumed run: the trees it replayed from its checkpoint


def _task(
    kind: str, cfg: HybridTreesConfig, params: Mapping[str, JSONValue], arrays: Mapping[str, np.ndarray] | None = None
) -> Task:
    full = {"run_id": cfg.run_id, **params}
    if not arrays:
        return Task(kind, full, cfg.run_id, cfg.timeout_s)
    layout, data = encode_arrays(arrays)
    return Task(kind, {**full, "arrays": layout}, cfg.run_id, cfg.timeout_s, payload=[data])


def _arrays(res: TaskResult) -> dict[str, np.ndarray]:
    layout = res.params.get("arrays")
    data = res.read_payload()
    return decode_arrays(layout, data, f"{res.kind} from {res.party}") if layout else {}


def _dec_params(dec: SplitDecision, local: int, node: int, left: int, right: int) -> dict[str, JSONValue]:
    return {
        "node": int(node), "left": int(left), "right": int(right), "feature": int(local),
        "default_left": bool(dec.default_left), "threshold": int(dec.threshold),
        "left_bins": [int(b) for b in dec.left_bins], "categorical": bool(dec.categorical),
    }  # fmt: skip


class FederatedHistogramSource:
    """A :class:`~models.gbdt.histogram.HistogramSource` over the parties.

    Node kinds: a *lender node* has only lender splits above it (each lender knows its rows there); a
    *platform node* lies below a platform split (``root`` = the lender node where the platform subtree
    starts; the coordinator and the platform know its rows from the platform's bins).
    """

    def __init__(
        self, channel: PartyChannel, cfg: HybridTreesConfig, layout: FeatureLayout, pbins: Mapping[str, np.ndarray]
    ) -> None:
        self.channel = channel
        self.cfg = cfg
        self.layout = layout
        self.n_lender = len(cfg.lender_features)
        self.pbins = dict(pbins)
        self.tree = -1
        self.root_of: dict[int, int | None] = {}
        self.rows: dict[int, dict[str, np.ndarray]] = {}
        self.values: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        self.recipes: dict[int, list[int] | None] = {}
        self.parent: dict[int, tuple[int, int]] = {}  # child -> (parent, sibling)
        self.codes: dict[str, BinCodes] = {}  # per lender: the platform's bins paired for histograms
        self.split_log: list[list[list[Any]]] = []  # this tree's split calls: [node, decision, left, right]

    # -- tree lifecycle --
    def begin_tree(
        self, tree: int, update: Mapping[str, tuple[dict[str, JSONValue], dict[str, np.ndarray]]]
    ) -> float | None:
        """Start tree ``tree`` (after the lenders added the last one); the pooled validation loss so far."""
        cfg = self.cfg
        tasks = {x: _task(BEGIN, cfg, {"tree": tree, **update[x][0]}, update[x][1]) for x in cfg.lenders}
        res = self.channel.run_all(tasks)
        sealed = {x: r.params["sealed_seed"] for x, r in res.items()}
        self.channel.run(cfg.platform, _task(BEGIN, cfg, {"tree": tree, "sealed_seeds": sealed}))
        self.tree = tree
        self.root_of = {0: None}
        self.rows, self.values, self.recipes, self.parent = {}, {}, {}, {}
        self.split_log = []
        return _pooled_loss(res.values())

    def replay(self, tree: Tree, batches: Sequence[Sequence[Sequence[Any]]]) -> None:
        """Order a finished tree's splits again, level by level as first ordered (a resumed run): each owner
        rebuilds its rules, which must get the references the tree holds, and its node rows."""
        owners = self.layout.owners
        for batch in batches:
            splits = [(int(n), decision_from_dict(d), int(lf), int(rt)) for n, d, lf, rt in batch]
            got = self.split(splits)
            want = [(owners[int(tree.owner[n])], int(tree.ref[n])) for n, _, _, _ in splits]
            if got != want:
                raise ProtocolError(f"tree {self.tree}: the parties numbered the replayed splits {got}, not {want}")

    def update_for(self, tree: Tree | None) -> dict[str, tuple[dict[str, JSONValue], dict[str, np.ndarray]]]:
        """What each lender needs to add the finished tree to its margins: lender leaves' values, and for
        every platform subtree the value its rows reach (no platform split, bin or threshold)."""
        if tree is None:
            return {x: ({}, {}) for x in self.cfg.lenders}
        leaf_values: dict[str, JSONValue] = {}
        subs: dict[str, dict[str, np.ndarray]] = {x: {} for x in self.cfg.lenders}
        for leaf in np.flatnonzero(tree.left < 0):
            node = int(leaf)
            root = self.root_of[node]
            if root is None:
                leaf_values[str(node)] = float(tree.value[node])
                continue
            for x in self.cfg.lenders:
                vec = subs[x].setdefault(f"sub{root}", np.zeros(self.pbins[x].shape[1]))
                vec[self.rows[node][x]] = tree.value[node]
        return {x: ({"leaf_values": leaf_values}, subs[x]) for x in self.cfg.lenders}

    # -- HistogramSource --
    def _all_rows(self, lender: str) -> np.ndarray:
        return np.arange(self.pbins[lender].shape[1])

    def _root(self, node: int) -> int:
        """The lender node whose masked gradients a node's platform histogram is built from."""
        root = self.root_of[node]
        return node if root is None else root

    def _lender_values(self, node: int, lender: str) -> tuple[np.ndarray, np.ndarray]:
        if lender not in self.values.get(node, {}):
            recipe = self.recipes.get(node)
            if recipe is None:
                raise ProtocolError(f"no masked gradients of lender node {node} from {lender!r}")
            pg, ph = self._lender_values(recipe[0], lender)
            sg, sh = self._lender_values(recipe[1], lender)
            self.values.setdefault(node, {})[lender] = (pg - sg, ph - sh)
        return self.values[node][lender]

    def build(self, nodes: Sequence[int], features: Sequence[int] | np.ndarray) -> list[Histogram]:
        cfg = self.cfg
        lf = [int(f) for f in features if f < self.n_lender]
        pf = [int(f) - self.n_lender for f in features if f >= self.n_lender]
        lnodes = [n for n in nodes if self.root_of[n] is None]
        with_values = lnodes if pf else []
        for n in with_values:  # the built child's mask is its own; its sibling's is the difference
            self.recipes[n] = None
            if n in self.parent:
                parent, sibling = self.parent[n]
                self.recipes.setdefault(sibling, [parent, n])
        handles = {}
        if lnodes:
            params = {"tree": self.tree, "nodes": lnodes, "features": lf, "values_for": with_values}
            handles.update({x: self.channel.submit(x, _task(HIST, cfg, params)) for x in cfg.lenders})
        items = [(n, self._root(n)) for n in nodes]
        if pf:
            params = {"tree": self.tree, "items": [list(i) for i in items], "features": pf,
                      "recipes": {str(k): v for k, v in self.recipes.items()}}  # fmt: skip
            handles[cfg.platform] = self.channel.submit(cfg.platform, _task(HIST, cfg, params))
        results = {x: _arrays(h.result()) for x, h in handles.items()}
        slots = self.layout.n_slots
        out = [Histogram.zeros(len(self.layout), slots) for _ in nodes]
        if lnodes:
            hg = np.zeros((len(lnodes), len(lf), slots), dtype=np.uint64)
            hh = np.zeros_like(hg)
            for x in cfg.lenders:
                r = results[x]
                if r["hg"].shape != hg.shape or r["hh"].shape != hh.shape:
                    raise ProtocolError(f"lender {x!r} sent histograms of the wrong shape")
                hg += r["hg"]
                hh += r["hh"]
                for n in with_values:
                    self.values.setdefault(n, {})[x] = (r[f"vg{n}"], r[f"vh{n}"])
            for k, n in enumerate(lnodes):
                out[nodes.index(n)].g[lf] = from_fixed(hg[k])
                out[nodes.index(n)].h[lf] = from_fixed(hh[k])
        if pf:
            pr = results[cfg.platform]
            for k, (n, root) in enumerate(items):
                cg, ch = pr["pg"][k].copy(), pr["ph"][k].copy()
                for x in cfg.lenders:
                    vg, vh = self._lender_values(root, x)
                    codes = cached_codes(self.codes, x, self.pbins[x], pf, slots)
                    if n in self.rows:  # a platform node: its rows; a lender node: every row
                        rows = self.rows[n][x]
                        sums = codes.sums(rows, [vg[rows], vh[rows]])
                    else:
                        sums = codes.sums(None, [vg, vh])
                    cg += sums[0]
                    ch += sums[1]
                cols = [self.n_lender + f for f in pf]
                out[k].g[cols] = from_fixed(cg)
                out[k].h[cols] = from_fixed(ch)
        return out

    def split(self, splits: Sequence[tuple[int, SplitDecision, int, int]]) -> list[tuple[str, int]]:
        cfg = self.cfg
        lender_splits, platform_splits = [], []
        slots = self.layout.n_slots
        self.split_log.append([[int(n), decision_to_dict(dec), int(lf), int(rt)] for n, dec, lf, rt in splits])
        for node, dec, left, right in splits:
            self.parent[left], self.parent[right] = (node, right), (node, left)
            if dec.feature < self.n_lender:
                lender_splits.append(_dec_params(dec, dec.feature, node, left, right))
                self.root_of[left] = self.root_of[right] = None
                continue
            local = dec.feature - self.n_lender
            platform_splits.append(_dec_params(dec, local, node, left, right))
            root = self.root_of[node]
            self.root_of[left] = self.root_of[right] = node if root is None else root
            table = dec.left_table(slots)
            self.rows[left], self.rows[right] = {}, {}
            for x in cfg.lenders:
                rows = self.rows[node][x] if node in self.rows else self._all_rows(x)
                go = table[self.pbins[x][local][rows]]
                self.rows[left][x], self.rows[right][x] = rows[go], rows[~go]
        handles = {}
        if lender_splits:
            p = {"tree": self.tree, "splits": lender_splits}
            handles.update({x: self.channel.submit(x, _task(SPLIT, cfg, p)) for x in cfg.lenders})
        if platform_splits:
            p = {"tree": self.tree, "splits": platform_splits}
            handles[cfg.platform] = self.channel.submit(cfg.platform, _task(SPLIT, cfg, p))
        refs = {x: [int(r) for r in h.result().params["refs"]] for x, h in handles.items()}
        lender_refs = refs[cfg.lenders[0]] if lender_splits else []
        for x in cfg.lenders[1:]:
            if lender_splits and refs[x] != lender_refs:
                raise ProtocolError(f"lender {x!r} numbered its split rules differently from {cfg.lenders[0]!r}")
        li, pi = iter(lender_refs), iter(refs.get(cfg.platform, []))
        return [(LENDERS_OWNER, next(li)) if dec.feature < self.n_lender else (cfg.platform, next(pi))
                for _, dec, _, _ in splits]  # fmt: skip


def _pooled_loss(replies: Any) -> float | None:
    total, n = 0.0, 0.0
    for r in replies:
        loss, rows = (float(v) for v in r.params.get("val_loss", [0.0, 0.0]))
        total, n = total + loss, n + rows
    return total / n if n > 0 else None


def agreed_levels(lenders: Sequence[str], digests: Mapping[str, Any]) -> dict[str, int]:
    """Categorical lender features: each lender sent a digest per level in code order. Codes agree when
    every lender's list is a prefix of the longest (a lender that met a level the others did not, such as
    ``__missing__``, appends it); returns feature -> number of levels, else names the disagreeing lenders."""
    lists = {x: {str(f): list(v) for f, v in dict(digests.get(x) or {}).items()} for x in lenders}
    for x in lenders[1:]:
        if set(lists[x]) != set(lists[lenders[0]]):
            raise InvalidInput(f"lenders {lenders[0]!r} and {x!r} disagree on which lender features are categorical")
    out: dict[str, int] = {}
    for f in sorted(lists[lenders[0]]):
        top = max(lenders, key=lambda x: len(lists[x][f]))
        for x in lenders:
            if lists[x][f] != lists[top][f][: len(lists[x][f])]:
                raise InvalidInput(f"lenders {top!r} and {x!r} declare lender feature {f!r} with different categories:"
                                   " declare one vocabulary for it in the shared schema")  # fmt: skip
        out[f] = len(lists[top][f])
    return out


def _setup(channel: PartyChannel, cfg: HybridTreesConfig) -> tuple[FeatureLayout, dict[str, np.ndarray], float]:
    p = cfg.params
    common: dict[str, JSONValue] = {"lenders": list(cfg.lenders), "platform": cfg.platform, "max_bins": p.max_bins}
    if cfg.data:
        common["data"] = dict(cfg.data)
    lender_params = {**common, "features": list(cfg.lender_features), "subsample": p.subsample, "seed": p.seed}
    tasks = {x: _task(SETUP, cfg, lender_params) for x in cfg.lenders}
    tasks[cfg.platform] = _task(SETUP, cfg, common)
    res = channel.run_all(tasks)
    pres = res[cfg.platform]
    parrays = _arrays(pres)
    pbins = {x: parrays[f"bins_{x}"] for x in cfg.lenders if f"bins_{x}" in parrays}
    for x in cfg.lenders:
        rows = int(res[x].params["rows"])
        if x not in pbins or pbins[x].shape[1] != rows:
            raise ProtocolError(f"lender {x!r} has {rows} aligned rows but the platform's table for it does not match")
    levels = agreed_levels(cfg.lenders, {x: r.params.get("categorical") for x, r in res.items()})
    undeclared = sorted((set(p.categorical) & set(cfg.lender_features)) - set(levels))
    if undeclared:
        raise InvalidInput(f"lender feature(s) {undeclared} are not categorical in the lenders' schema")
    kinds = {**{str(f["name"]): bool(f["categorical"]) for f in pres.params["features"]},
             **{f: f in levels for f in cfg.lender_features}}  # fmt: skip
    check_monotone(p.monotone, kinds, "the lenders' schema or the platform's data")
    keys = {x: res[x].params["env_key"] for x in [*cfg.lenders, cfg.platform]}
    sealed = {x: dict(r.params["sealed"]) for x, r in channel.run_all(
        {x: _task(KEYS, cfg, {"keys": keys}) for x in cfg.lenders}).items()}  # fmt: skip
    inbox: dict[str, dict[str, Any]] = {x: {} for x in cfg.lenders}
    for sender, out in sealed.items():
        for recipient, blobs in out.items():
            inbox[str(recipient)][sender] = blobs
    masked = channel.run_all({x: _task(BINS, cfg, {"sealed": inbox[x], "levels": levels}) for x in cfg.lenders})
    vectors = [[int(str(v), 16) for v in r.params["masked"]] for r in masked.values()]
    total = [format(sum(col) % MOD128, "x") for col in zip(*vectors, strict=True)]
    edges = channel.run_all({x: _task(EDGES, cfg, {"sum": total}) for x in cfg.lenders})
    n_bins = {x: [int(b) for b in r.params["n_bins"]] for x, r in edges.items()}
    if len({tuple(v) for v in n_bins.values()}) != 1:
        raise ProtocolError("lenders derived different bins from the same aggregate")
    base = float(edges[cfg.lenders[0]].params["base_score"])
    specs = [FeatureSpec(f, LENDERS_OWNER, b, f in levels, p.monotone.get(f, 0))
             for f, b in zip(cfg.lender_features, n_bins[cfg.lenders[0]], strict=True)]  # fmt: skip
    for f in pres.params["features"]:
        name = str(f["name"])
        specs.append(FeatureSpec(name, cfg.platform, int(f["n_bins"]), bool(f["categorical"]), p.monotone.get(name, 0)))
    return FeatureLayout(tuple(specs), p.max_bins), pbins, base


def config_to_dict(cfg: HybridTreesConfig) -> dict[str, Any]:
    return {"run_id": cfg.run_id, "lenders": list(cfg.lenders), "platform": cfg.platform,
            "lender_features": list(cfg.lender_features), "params": cfg.params.to_dict(),
            "timeout_s": cfg.timeout_s, "data": dict(cfg.data)}  # fmt: skip


def config_from_dict(d: Mapping[str, Any]) -> HybridTreesConfig:
    return HybridTreesConfig(
        str(d["run_id"]), tuple(d["lenders"]), str(d["platform"]), tuple(d["lender_features"]),
        GBDTParams.from_dict(dict(d["params"])), float(d["timeout_s"]), dict(d["data"]),
    )  # fmt: skip


def _layout_doc(layout: FeatureLayout) -> list[list[Any]]:
    return [[s.name, s.owner, int(s.n_bins), bool(s.categorical), int(s.monotone)] for s in layout.features]


def run_hybrid_trees(
    channel: PartyChannel, cfg: HybridTreesConfig, progress: Callable[[str], None] | None = None,
    checkpoint: Path | None = None,
) -> HybridTreesResult:  # fmt: skip
    """Train hybrid trees: lender features (histograms summed across lenders under pairwise masks) and
    platform features (aggregated from additive shares). The first tree uses lender features only and a
    platform split's subtree splits on platform features only. With ``checkpoint``, the coordinator keeps
    the run there after setup and after each tree (:mod:`.checkpoint`) for :func:`resume_hybrid_trees`."""
    return _train(channel, cfg, progress, checkpoint, None)


def resume_hybrid_trees(
    channel: PartyChannel, checkpoint: Path, progress: Callable[[str], None] | None = None
) -> tuple[HybridTreesConfig, HybridTreesResult]:
    """Continue an interrupted run from its checkpoint: setup again, replay the finished trees' splits
    (no histogram), grow the rest. The same model as an uninterrupted run."""
    ck = TreeCheckpoint.load(checkpoint)
    cfg = config_from_dict(ck.config)
    return cfg, _train(channel, cfg, progress, checkpoint, ck)


def _train(
    channel: PartyChannel, cfg: HybridTreesConfig, progress: Callable[[str], None] | None,
    checkpoint: Path | None, ck: TreeCheckpoint | None,
) -> HybridTreesResult:  # fmt: skip
    p = cfg.params
    if not cfg.lenders or not cfg.lender_features:
        raise InvalidInput("hybrid trees need at least one lender and one lender feature (the first tree uses them)")
    overlap = sorted(set(cfg.lenders) & {cfg.platform})
    if overlap:
        raise InvalidInput(f"party {overlap[0]!r} cannot be both a lender and the platform")
    params = dataclasses.replace(p, sticky_owners=(cfg.platform,), first_tree_owners=(LENDERS_OWNER,))
    t0 = time.perf_counter()
    layout, pbins, base = _setup(channel, cfg)
    setup_s = time.perf_counter() - t0
    owners = layout.owners
    source = FederatedHistogramSource(channel, cfg, layout, pbins)
    rng = np.random.default_rng(p.seed)
    update = source.update_for(None)
    resumed = 0 if ck is None else len(ck.trees)
    if ck is None:
        ck = TreeCheckpoint(config_to_dict(cfg), _layout_doc(layout), base)
    else:
        if ck.layout != _layout_doc(layout) or ck.base_score != base:
            raise InvalidInput(f"run {cfg.run_id!r} cannot resume: the parties' bins or base score differ from the"
                               " interrupted run's (their data changed); start a new run")  # fmt: skip
        update = _replay(source, ck, progress)
        rng.bit_generator.state = ck.rng
    trees: list[Tree] = list(ck.trees)
    gains: list[list[tuple[int, float]]] = [[(int(f), float(g)) for f, g in tg] for tg in ck.gains]
    losses, tree_s = list(ck.losses), list(ck.tree_s)

    def keep() -> None:
        if checkpoint is not None:
            ck.trees, ck.losses, ck.tree_s = trees, losses, tree_s
            ck.gains = [[[int(f), float(g)] for f, g in tg] for tg in gains]
            ck.rng = dict(rng.bit_generator.state)
            ck.save(checkpoint)

    if not trees:
        keep()
    for t in range(len(trees), p.n_trees):
        if progress is not None:
            progress(f"tree {t + 1}/{p.n_trees}")
        t0 = time.perf_counter()
        loss = source.begin_tree(t, update)
        if loss is not None:
            losses.append(loss)
            if p.early_stopping_rounds is not None and t - int(np.argmin(losses)) >= p.early_stopping_rounds:
                break
        feats = np.arange(len(layout))
        if t == 0:
            feats = np.array([j for j, s in enumerate(layout.features) if s.owner == LENDERS_OWNER], dtype=np.int64)
        if p.colsample_bytree < 1.0:
            k = max(1, round(len(layout) * p.colsample_bytree))
            feats = np.sort(rng.choice(feats, size=min(k, len(feats)), replace=False))
        grown = grow_tree(source, params, feats, owners)
        trees.append(grown.tree)
        gains.append(list(grown.gains))
        ck.splits.append(source.split_log)
        update = source.update_for(grown.tree)
        tree_s.append(time.perf_counter() - t0)
        keep()
    if len(losses) <= len(trees):  # the last tree is not in the lenders' margins yet (no early stop)
        last = _pooled_loss(channel.run_all({x: _task(EVAL, cfg, *update[x]) for x in cfg.lenders}).values())
        if last is not None:
            losses.append(last)
    # Early stopping keeps the trees up to the best validation loss.
    keep_n = int(np.argmin(losses)) if p.early_stopping_rounds is not None and losses else len(trees)
    trees = trees[:keep_n]
    importance: dict[str, dict[str, float]] = {o: {} for o in owners}
    for f, gain in (fg for tree_gains in gains[:keep_n] for fg in tree_gains):
        spec = layout.features[f]
        importance[spec.owner][spec.name] = importance[spec.owner].get(spec.name, 0.0) + gain
    # Lenders keep the released model (trees, their rules); the platform its rules; each its own importance.
    model = {"trees": [t.to_dict() for t in trees], "owners": list(owners), "importance": importance[LENDERS_OWNER]}
    done = channel.run_all({x: _task(FINISH, cfg, model) for x in cfg.lenders})
    # The platform gets the kept trees' shapes (no leaf value) to evaluate its splits in joint scoring.
    shapes = [{**t.to_dict(), "value": [0.0] * t.n_nodes} for t in trees]
    channel.run(cfg.platform, _task(FINISH, cfg, {"importance": importance[cfg.platform], "shapes": shapes,
                                                  "owners": list(owners)}))  # fmt: skip
    metrics = {x: {str(k): float(v) for k, v in dict(r.params.get("metrics", {})).items()} for x, r in done.items()}
    return HybridTreesResult(trees, owners, base, layout, importance, losses, metrics, setup_s, tree_s, resumed)


def _replay(
    source: FederatedHistogramSource, ck: TreeCheckpoint, progress: Callable[[str], None] | None
) -> dict[str, tuple[dict[str, JSONValue], dict[str, np.ndarray]]]:
    """Rebuild every party's state after the checkpoint's trees; the lenders' update for the next tree."""
    if progress is not None:
        progress(f"resuming after tree {len(ck.trees)}: replaying the finished trees' splits")
    update = source.update_for(None)
    for t, tree in enumerate(ck.trees):
        loss = source.begin_tree(t, update)
        if loss is not None and t < len(ck.losses) and not np.isclose(loss, ck.losses[t], rtol=1e-12, atol=0.0):
            raise InvalidInput(
                f"run {source.cfg.run_id!r} cannot resume: the lenders' validation loss after {t} "
                f"trees is {loss}, the interrupted run had {ck.losses[t]} (their data changed)"
            )
        source.replay(tree, ck.splits[t])
        update = source.update_for(tree)
    return update
