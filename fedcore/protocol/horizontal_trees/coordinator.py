"""The coordinator's driver of horizontal trees: :func:`run_horizontal_trees` (flow and what each side
learns in :mod:`fedcore.protocol.horizontal_trees`). It relays and adds ciphertexts; the leader lender
grows the trees."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedcore.crypto.he import CkksPublicContext, EncryptedVector, add
from fedcore.errors import InvalidInput, ProtocolError
from fedcore.protocol.channel import PartyChannel
from fedcore.protocol.horizontal_trees.messages import EDGES, FINISH, GROW, HIST, KEYS, QUANT, SETUP
from fedcore.protocol.messages import JSONValue, Task
from fedcore.protocol.trees.coordinator import agreed_levels
from fedcore.protocol.trees.messages import MOD128
from models.gbdt.params import GBDTParams, check_monotone
from models.gbdt.tree import Tree


@dataclass(frozen=True)
class HorizontalTreesConfig:
    run_id: str
    lenders: tuple[str, ...]
    features: tuple[str, ...]
    params: GBDTParams = field(default_factory=GBDTParams)
    timeout_s: float = 600.0
    data: Mapping[str, JSONValue] = field(default_factory=dict)  # for the parties' setup


@dataclass
class HorizontalTreesResult:
    trees: list[Tree]
    base_score: float
    n_bins: list[int]
    importance: dict[str, float] = field(default_factory=dict)
    val_loss: list[float] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    bytes_per_lender: float = 0.0  # histogram ciphertext bytes per lender (but the leader) per tree
    setup_s: float = 0.0  # keys, pooled bins (before the first tree)


def _task(kind: str, cfg: HorizontalTreesConfig, params: Mapping[str, Any], payload: bytes | None = None) -> Task:
    return Task(kind, {"run_id": cfg.run_id, **params}, cfg.run_id, cfg.timeout_s, [payload] if payload else None)


def _pooled(replies: Any) -> float | None:
    total = n = 0.0
    for r in replies:
        loss, rows = (float(v) for v in r.params.get("val_loss", [0.0, 0.0]))
        total, n = total + loss, n + rows
    return total / n if n > 0 else None


def run_horizontal_trees(
    channel: PartyChannel, cfg: HorizontalTreesConfig, progress: Callable[[str], None] | None = None
) -> HorizontalTreesResult:
    p = cfg.params
    t0 = time.perf_counter()
    if len(cfg.lenders) < 2 or len(set(cfg.lenders)) != len(cfg.lenders) or not cfg.features:
        raise InvalidInput("horizontal trees need two or more distinct lenders and at least one feature")
    if p.sticky_owners:
        raise InvalidInput("horizontal trees have one owner: 'sticky_owners' does not apply")
    leader = cfg.lenders[0]
    common = {"lenders": list(cfg.lenders), "leader": leader, "max_bins": p.max_bins, "features": list(cfg.features),
              "gbdt": p.to_dict(), **({"data": dict(cfg.data)} if cfg.data else {})}  # fmt: skip
    res = channel.run_all({x: _task(SETUP, cfg, common) for x in cfg.lenders})
    pub = CkksPublicContext.from_bytes(bytes.fromhex(str(res[leader].params["public_context"])))
    levels = agreed_levels(cfg.lenders, {x: r.params.get("categorical") for x, r in res.items()})
    undeclared = sorted(set(p.categorical) - set(levels))
    if undeclared:
        raise InvalidInput(f"feature(s) {undeclared} are not categorical in the lenders' schema")
    check_monotone(p.monotone, {f: f in levels for f in cfg.features}, "the lenders' schema")
    keys = {x: res[x].params["env_key"] for x in cfg.lenders}
    sealed = {x: dict(r.params["sealed"]) for x, r in channel.run_all(  # type: ignore[arg-type]
        {x: _task(KEYS, cfg, {"keys": keys}) for x in cfg.lenders}).items()}  # fmt: skip
    inbox: dict[str, dict[str, Any]] = {x: {} for x in cfg.lenders}
    for sender, out in sealed.items():
        for recipient, blobs in out.items():
            inbox[str(recipient)][sender] = blobs
    masked = channel.run_all({x: _task(QUANT, cfg, {"sealed": inbox[x], "public_context": pub.serialize().hex(),
                                                    "levels": levels})
                              for x in cfg.lenders})  # fmt: skip
    vectors = [[int(str(v), 16) for v in r.params["masked"]] for r in masked.values()]  # type: ignore[union-attr]
    total = [format(sum(col) % MOD128, "x") for col in zip(*vectors, strict=True)]
    edges = channel.run_all({x: _task(EDGES, cfg, {"sum": total}) for x in cfg.lenders})
    n_bins = {x: [int(b) for b in r.params["n_bins"]] for x, r in edges.items()}  # type: ignore[union-attr]
    if len({tuple(v) for v in n_bins.values()}) != 1:
        raise ProtocolError("lenders derived different bins from the same aggregate")
    base = float(edges[leader].params["base_score"])  # type: ignore[arg-type]
    rng = np.random.default_rng(p.seed)
    setup_s = time.perf_counter() - t0
    n_feat = len(cfg.features)
    trees: list[Tree] = []
    losses: list[float] = []
    gains: list[list[Any]] = []
    before: dict[str, Any] = {"splits_before": [], "leaf_values": {}}
    sent = 0
    stop = p.early_stopping_rounds
    for t in range(p.n_trees + (stop is not None)):  # early stopping: one more step for the last tree's loss
        if t == p.n_trees:  # the lenders add the last tree and report the loss (nothing is built)
            res = channel.run_all({x: _task(HIST, cfg, {"tree": t, "first": True, "splits": [], "build": [],
                                                        "features": [], **before}) for x in cfg.lenders})  # fmt: skip
            loss = _pooled(res.values())
            losses += [] if loss is None else [loss]
            break
        if progress is not None:
            progress(f"tree {t + 1}/{p.n_trees}")
        feats = np.arange(n_feat)
        if p.colsample_bytree < 1.0:
            feats = np.sort(rng.choice(feats, size=max(1, round(n_feat * p.colsample_bytree)), replace=False))
        reply = channel.run(leader, _task(GROW, cfg, {"tree": t, "start": True, "features": feats.tolist()}))
        first = True
        while not reply.params.get("done"):
            req = {"tree": t, "first": first, "splits": reply.params["splits"], "build": reply.params["build"],
                   "features": reply.params["features"], **(before if first else {})}  # fmt: skip
            res = channel.run_all({x: _task(HIST, cfg, req) for x in cfg.lenders})
            if first:
                loss = _pooled(res.values())
                if loss is not None:
                    losses.append(loss)
                if stop is not None and loss is not None and t - int(np.argmin(losses)) >= stop:
                    break  # tree t is abandoned; the lenders already hold every earlier tree
            datas = {x: r.read_payload() for x, r in res.items() if x != leader}  # the leader's stay with it
            sent += sum(len(d) for d in datas.values())
            summed = add(EncryptedVector.from_bytes(pub, d) for d in datas.values())
            reply = channel.run(leader, _task(GROW, cfg, {"tree": t}, summed.to_bytes()))
            first = False
        if not reply.params.get("done"):
            break
        tree = Tree.from_dict(reply.params["tree"])  # type: ignore[arg-type]
        trees.append(tree)
        gains.append(list(reply.params.get("gains", [])))  # type: ignore[arg-type]
        before = {"splits_before": reply.params["splits"],
                  "leaf_values": {str(int(i)): float(tree.value[i]) for i in tree.leaves()}}  # fmt: skip
    # Early stopping keeps the trees up to the best pooled validation loss (losses[i]: after i trees).
    keep = int(np.argmin(losses)) if stop is not None and losses else len(trees)
    trees = trees[:keep]
    importance: dict[str, float] = {}
    for f, gain in (fg for tree_gains in gains[:keep] for fg in tree_gains):
        importance[cfg.features[int(f)]] = importance.get(cfg.features[int(f)], 0.0) + float(gain)
    last = {"stopped": True} if stop is not None else before  # stopped: the lenders hold every grown tree
    done = channel.run_all({x: _task(FINISH, cfg, {**last, "trees": [t.to_dict() for t in trees],
                                                    "importance": importance}) for x in cfg.lenders})  # fmt: skip
    metrics = {x: {str(k): float(v) for k, v in dict(r.params.get("metrics", {})).items()}  # type: ignore[arg-type]
               for x, r in done.items()}  # fmt: skip
    per = sent / (len(cfg.lenders) - 1) / max(1, len(trees))
    return HorizontalTreesResult(trees, base, n_bins[leader], importance, losses, metrics, per, setup_s)
