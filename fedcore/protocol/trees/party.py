"""Party handlers of the hybrid tree protocol: :class:`LenderTreeParty` and :class:`PlatformTreeParty`.

See :mod:`fedcore.protocol.trees` for the protocol and what each side learns.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedcore.crypto.envelope import EnvelopePrivateKey
from fedcore.errors import InvalidInput, ProtocolError
from fedcore.partitions import LOCAL, RowCompute, node_histograms_u64
from fedcore.protocol.messages import JSONValue, TaskReply
from fedcore.protocol.sealing import PartyIdentity, open_from_peer, seal_to_peers
from fedcore.protocol.tasks import HandlerRegistry, TaskContext
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
    SCALE,
    SETUP,
    SPLIT,
    decode_arrays,
    encode_arrays,
    mask_int128,
    mask_u64,
    to_fixed,
)
from models.gbdt.binning import BinMapper, FeatureBins
from models.gbdt.booster import GBDTModel, logloss
from models.gbdt.split import SplitDecision
from models.gbdt.tree import SplitRule, SplitTable, Tree
from models.metrics import evaluate

SEED_BYTES = 32
FINE = 8  # quantile levels per bin in the pooled quantile vector


def _edges_from(fine: np.ndarray, max_bins: int) -> tuple[float, ...]:
    """Bin edges from pooled fine quantiles: every distinct value when they fit (a discrete feature keeps
    each of its values), else the quantiles at the bin levels."""
    distinct = np.unique(fine)
    if len(distinct) <= max_bins - 1:
        return tuple(float(u) for u in distinct)
    return tuple(float(u) for u in np.unique(fine[FINE - 1 :: FINE]))


def level_digests(levels: Sequence[str]) -> list[str]:
    """What a lender shows of a categorical feature's levels: a short digest of each (code, level)."""
    return [hashlib.sha256(f"{i}:{v}".encode()).hexdigest()[:16] for i, v in enumerate(levels)]


def _purpose(run_id: str, what: str) -> str:
    """The sealing purpose of one secret of a run (sender and recipient are bound by the sealing itself)."""
    return f"trees/{run_id}/{what}"


def _check_identity(name: str, identity: PartyIdentity) -> None:
    if identity.name != name:
        raise InvalidInput(f"party {name!r} was given the identity of {identity.name!r}")


def _decision(d: Mapping[str, Any]) -> SplitDecision:
    return SplitDecision(
        int(d["feature"]), 0.0, bool(d["default_left"]), threshold=int(d.get("threshold", -1)),
        left_bins=tuple(int(b) for b in d.get("left_bins", ())), categorical=bool(d.get("categorical", False)),
    )  # fmt: skip


def _reply(params: dict[str, JSONValue], arrays: Mapping[str, np.ndarray] | None = None) -> TaskReply:
    if not arrays:
        return TaskReply(params=params)
    layout, data = encode_arrays(arrays)
    return TaskReply(params={**params, "arrays": layout}, payload=[data])


def _arrays(ctx: TaskContext, params: Mapping[str, JSONValue]) -> dict[str, np.ndarray]:
    layout = params.get("arrays")
    if not layout:
        return {}
    return decode_arrays(layout, ctx.read_payload(), f"{ctx.kind} at {ctx.party}")


@dataclass
class _LenderRun:
    run_id: str
    lenders: list[str]
    platform: str
    key: EnvelopePrivateKey
    max_bins: int
    anns: dict[str, Mapping[str, JSONValue]] = field(default_factory=dict)  # signed per-run key announcements
    group_key: bytes = b""
    pair_seeds: dict[str, bytes] = field(default_factory=dict)  # other lender -> seed shared with it
    bins: np.ndarray | None = None
    margin: np.ndarray | None = None
    g: np.ndarray | None = None
    h: np.ndarray | None = None
    tree: int = -1
    tree_seed: bytes = b""
    rows: dict[int, np.ndarray] = field(default_factory=dict)
    val_margins: list[np.ndarray] = field(default_factory=list)  # validation margins after 0, 1, ... trees
    subsample: float = 1.0  # row subsampling: the share of this lender's training rows in each tree
    levels: dict[str, int] = field(default_factory=dict)  # categorical feature -> levels all lenders count
    seed: int = 0


class LenderTreeParty:
    """A lender: labels and the shared-schema lender features of its PSI-aligned rows (platform order).

    ``val_mask`` marks this lender's validation rows: they take part with zero gradient and hessian (so
    they shape no histogram, bin edge or base score) and get every tree's value, which gives the
    validation loss per tree (early stopping) and the final validation metrics, reported to ``C``."""

    def __init__(
        self, name: str, columns: Mapping[str, np.ndarray], y: np.ndarray, identity: PartyIdentity,
        val_mask: np.ndarray | None = None, categorical: Mapping[str, Sequence[str]] | None = None,
        compute: RowCompute = LOCAL,
    ) -> None:  # fmt: skip
        _check_identity(name, identity)
        self.name = name
        self.identity = identity
        self.compute = compute  # where the node histograms' row partitions run (fedcore.partitions)
        self.columns = {k: np.asarray(v) for k, v in columns.items()}
        # categorical lender features: column values are codes 0..len(levels)-1 into the schema's levels
        self.categorical = {str(k): tuple(str(v) for v in levels) for k, levels in (categorical or {}).items()}
        self.y = np.asarray(y, dtype=np.float64)
        self.val = np.zeros(len(self.y), dtype=bool) if val_mask is None else np.asarray(val_mask, dtype=bool)
        if self.val.shape != self.y.shape:
            raise InvalidInput(f"party {name!r}: validation mask has {self.val.size} rows, labels {self.y.size}")
        self.metrics: dict[str, float] = {}
        self.val_proba = np.zeros(0)  # after the run: the kept model's probabilities on the validation rows
        self.mapper: BinMapper | None = None
        self.table = SplitTable(LENDERS_OWNER)
        self.base_score = 0.0
        self.model: GBDTModel | None = None  # after the run: trees, base score, the lender rules
        self._run: _LenderRun | None = None

    def register(self, registry: HandlerRegistry) -> None:
        for kind, fn in (
            (SETUP, self._setup),
            (KEYS, self._keys),
            (BINS, self._bins),
            (EDGES, self._edges),
            (BEGIN, self._begin),
            (HIST, self._hist),
            (SPLIT, self._split),
            (EVAL, self._eval),
            (FINISH, self._finish),
        ):
            registry.register(kind, fn)  # fmt: skip

    def _state(self, params: Mapping[str, JSONValue]) -> _LenderRun:
        if self._run is None or params.get("run_id") != self._run.run_id:
            raise ProtocolError(f"party {self.name!r}: no tree run {params.get('run_id')!r} was set up here")
        return self._run

    def _setup(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        features = [str(f) for f in params["features"]]
        missing = [f for f in features if f not in self.columns]
        if missing:
            raise InvalidInput(f"party {self.name!r}: lender feature column(s) {missing} are missing")
        n = len(self.y)
        for f in features:
            if len(self.columns[f]) != n:
                raise InvalidInput(f"party {self.name!r}: column {f!r} has {len(self.columns[f])} rows, labels {n}")
        bad = np.flatnonzero((self.y != 0) & (self.y != 1))
        if bad.size:
            raise InvalidInput(f"party {self.name!r}: label of row {int(bad[0])} is {self.y[bad[0]]!r}, not 0/1")
        self.columns = {f: self.columns[f] for f in features}
        self.categorical = {f: v for f, v in self.categorical.items() if f in self.columns}
        self.table = SplitTable(LENDERS_OWNER)
        key = EnvelopePrivateKey.generate()
        self._run = _LenderRun(
            str(params["run_id"]), [str(x) for x in params["lenders"]], str(params["platform"]), key,
            int(params["max_bins"]), subsample=float(params.get("subsample", 1.0)), seed=int(params.get("seed", 0)),
        )  # fmt: skip
        vocab = {f: level_digests(v) for f, v in self.categorical.items()}
        return _reply({"rows": n, "env_key": self.identity.announcement(key), "categorical": vocab})

    def _keys(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._state(params)
        keys = params.get("keys")
        if not isinstance(keys, Mapping):
            raise ProtocolError(f"party {self.name!r}: the key step carries no key announcements")
        s.anns = {str(k): v for k, v in keys.items() if isinstance(v, Mapping)}
        me = s.lenders.index(self.name)
        out: dict[str, dict[str, JSONValue]] = {}
        for j, other in enumerate(s.lenders):
            if j <= me:
                continue
            seed = os.urandom(SEED_BYTES)
            s.pair_seeds[other] = seed
            out.setdefault(other, {})["pair"] = self._seal(s, other, seed, "pair")
        if me == 0:
            s.group_key = os.urandom(SEED_BYTES)
            for other in s.lenders[1:]:
                out.setdefault(other, {})["group"] = self._seal(s, other, s.group_key, "group")
        return _reply({"sealed": out})  # type: ignore[dict-item]

    def _seal(self, s: _LenderRun, to: str, secret: bytes, what: str) -> JSONValue:
        """``secret`` sealed to ``to``'s announced per-run key, checked against the CA (PermissionDenied
        if the coordinator substituted it)."""
        if to not in s.anns:
            raise ProtocolError(f"party {self.name!r}: no key announcement of {to!r}")
        return seal_to_peers(self.identity, {to: s.anns[to]}, secret, _purpose(s.run_id, what))[to]  # type: ignore[return-value]

    def _quantile_vector(self, s: _LenderRun) -> list[int]:
        """Per feature: non-missing count and count x each quantile, then rows and defaults (fixed point)."""
        levels = np.linspace(0.0, 1.0, FINE * s.max_bins + 1)[1:-1]
        values: list[float] = []
        train = ~self.val
        counts: list[float] = []  # categorical features: rows per category code, after every feature's slot
        for f in self.columns:
            x = np.asarray(self.columns[f], dtype=np.float64)[train]
            x = np.sort(x[~np.isnan(x)])  # the same quantiles, found faster in sorted values
            if f in self.categorical:
                n_levels = s.levels.get(f, len(self.categorical[f]))
                x = x[(x >= 0) & (x < n_levels)]
                counts += np.bincount(x.astype(np.int64), minlength=n_levels).astype(float).tolist()
                x = x[:0]
            qs = np.quantile(x, levels, method="inverted_cdf") if x.size else np.zeros(len(levels))
            values += [float(x.size)] + [float(x.size) * q for q in qs]
        values += [*counts, float(train.sum()), float(self.y[train].sum())]
        return [round(v * SCALE) % MOD128 for v in values]

    def _bins(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._state(params)
        for sender, blobs in dict(params["sealed"]).items():
            if "pair" in blobs:
                purpose = _purpose(s.run_id, "pair")
                s.pair_seeds[str(sender)] = open_from_peer(self.identity, blobs["pair"], str(sender), purpose, s.key)
            if "group" in blobs:
                purpose = _purpose(s.run_id, "group")
                s.group_key = open_from_peer(self.identity, blobs["group"], str(sender), purpose, s.key)
        if not s.group_key or set(s.pair_seeds) != set(s.lenders) - {self.name}:
            raise ProtocolError(f"party {self.name!r}: the lenders' seeds did not all arrive")
        s.levels = {str(f): int(n) for f, n in dict(params.get("levels") or {}).items()}  # type: ignore[call-overload]
        if any(s.levels.get(f, -1) < len(v) for f, v in self.categorical.items()):
            raise ProtocolError(f"party {self.name!r}: the level counts of its categorical features are missing")
        vec = self._quantile_vector(s)
        mask = mask_int128(s.group_key, f"edges/{self.name}", len(vec))
        return _reply({"masked": [format((v + m) % MOD128, "x") for v, m in zip(vec, mask, strict=True)]})

    def _edges(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._state(params)
        total = [int(str(v), 16) for v in params["sum"]]
        for lender in s.lenders:
            total = [(t - m) % MOD128 for t, m in zip(total, mask_int128(s.group_key, f"edges/{lender}", len(total)),
                                                      strict=True)]  # fmt: skip
        vals = [(t - MOD128 if t >= MOD128 // 2 else t) / SCALE for t in total]
        per = FINE * s.max_bins  # count + (FINE x max_bins - 1) quantiles per feature
        feats = []
        at = per * len(self.columns)
        for j, name in enumerate(self.columns):
            if name in self.categorical:  # the max_bins most frequent levels (pooled counts); code 0 is unseen
                pooled = np.asarray(vals[at : at + s.levels[name]])
                at += len(pooled)
                order = [int(c) for c in np.lexsort((np.arange(len(pooled)), -pooled)) if c > 0 and pooled[c] > 0]
                feats.append(FeatureBins(name, True, categories=tuple(float(c) for c in order[: s.max_bins])))
                continue
            count, qsum = vals[j * per], vals[j * per + 1 : (j + 1) * per]
            upper = _edges_from(np.asarray(qsum) / count, s.max_bins) if count > 0 else ()
            feats.append(FeatureBins(name, False, upper=upper))
        rows, defaults = vals[-2], vals[-1]
        if not 0 < defaults < rows:
            raise InvalidInput("the lenders' labels hold a single class: trees need defaults and non-defaults")
        self.mapper = BinMapper(tuple(feats), s.max_bins)
        s.bins = self.mapper.transform(self.columns)
        self.base_score = math.log(defaults / (rows - defaults))
        s.margin = np.full(len(self.y), self.base_score)
        s.val_margins = []
        return _reply({"n_bins": [fb.n_bins for fb in feats], "base_score": self.base_score})

    def _apply_update(self, s: _LenderRun, params: Mapping[str, JSONValue], arrays: Mapping[str, np.ndarray]) -> None:
        assert s.margin is not None
        values = {int(k): float(v) for k, v in dict(params.get("leaf_values", {})).items()}
        for node, rows in s.rows.items():
            if node in values:
                s.margin[rows] += values[node]
            elif f"sub{node}" in arrays:
                s.margin[rows] += arrays[f"sub{node}"][rows]
            else:
                raise ProtocolError(f"party {self.name!r}: no leaf value for node {node} of tree {s.tree}")
        s.rows = {}
        s.val_margins.append(s.margin[self.val])

    def _val_loss(self, s: _LenderRun) -> list[float]:
        """[sum of validation log-loss, validation rows] after the trees so far (what C learns of them)."""
        n = int(self.val.sum())
        return [logloss(self.y[self.val], s.val_margins[-1]) * n if n else 0.0, float(n)]

    def _begin(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._state(params)
        self._apply_update(s, params, _arrays(ctx, params))
        assert s.margin is not None
        p = 0.5 * (1.0 + np.tanh(0.5 * s.margin))
        skip = self.skipped(s, int(params["tree"]))
        s.g = to_fixed(np.where(skip, 0.0, p - self.y))
        s.h = to_fixed(np.where(skip, 0.0, np.maximum(p * (1.0 - p), 2.0**-32)))
        s.tree = int(params["tree"])
        s.tree_seed = os.urandom(SEED_BYTES)
        s.rows = {0: np.arange(len(self.y))}
        sealed = self._seal(s, s.platform, s.tree_seed, f"tree/{s.tree}")
        return _reply({"sealed_seed": sealed, "val_loss": self._val_loss(s)})  # type: ignore[dict-item]

    def skipped(self, s: _LenderRun, tree: int) -> np.ndarray:
        """Rows that add no gradient to tree ``tree``: validation rows and, with row subsampling, the rows
        outside this lender's own sample for the tree (drawn here; nobody else learns which)."""
        if s.subsample >= 1.0:
            return self.val
        rng = np.random.default_rng([s.seed, tree, s.lenders.index(self.name)])
        return self.val | (rng.random(len(self.y)) >= s.subsample)

    def _pair_mask(self, s: _LenderRun, label: str, n: int) -> np.ndarray:
        """This lender's share of masks that cancel over all lenders (pairwise, Z_2^64)."""
        out = np.zeros(n, dtype=np.uint64)
        for other, seed in s.pair_seeds.items():
            m = mask_u64(seed, label, n)
            if s.lenders.index(other) > s.lenders.index(self.name):
                out += m
            else:
                out -= m
        return out

    def _hist(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._state(params)
        if int(params["tree"]) != s.tree or s.bins is None or s.g is None or s.h is None:
            raise ProtocolError(f"party {self.name!r}: histogram request for tree {params['tree']} out of order")
        nodes = [int(x) for x in params["nodes"]]
        feats = [int(f) for f in params["features"]]
        slots = s.max_bins + 1
        hg = np.zeros((len(nodes), len(feats), slots), dtype=np.uint64)
        hh = np.zeros_like(hg)
        arrays: dict[str, np.ndarray] = {}
        n = len(self.y)
        for k, node in enumerate(nodes):
            if node not in s.rows:
                raise ProtocolError(f"party {self.name!r}: node {node} is not a lender node of tree {s.tree}")
            ctx.check_cancelled()
            hg[k], hh[k] = node_histograms_u64(s.bins, (s.g, s.h), s.rows[node], feats, slots, self.compute)
        size = hg.size
        label = f"{s.tree}/{','.join(map(str, nodes))}"
        arrays["hg"] = hg + self._pair_mask(s, label + "/g", size).reshape(hg.shape)
        arrays["hh"] = hh + self._pair_mask(s, label + "/h", size).reshape(hh.shape)
        for node in [int(x) for x in params["values_for"]]:
            inside = np.zeros(n, dtype=bool)
            inside[s.rows[node]] = True
            for comp, vec in (("g", s.g), ("h", s.h)):
                own = np.where(inside, vec, np.uint64(0))
                arrays[f"v{comp}{node}"] = own + mask_u64(s.tree_seed, f"{s.tree}/{node}/{comp}", n)
        return _reply({}, arrays)

    def _split(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._state(params)
        assert self.mapper is not None and s.bins is not None
        refs = []
        for d in params["splits"]:
            node, left, right = int(d["node"]), int(d["left"]), int(d["right"])
            dec = _decision(d)
            if node not in s.rows or not 0 <= dec.feature < len(self.mapper.features):
                raise ProtocolError(f"party {self.name!r}: bad split of node {node} on feature {dec.feature}")
            rule = SplitRule.from_decision(self.mapper.features[dec.feature], dec)
            refs.append(self.table.add(rule))
            rows = s.rows.pop(node)
            go = dec.left_table(s.max_bins + 1)[s.bins[dec.feature][rows]]
            s.rows[left], s.rows[right] = rows[go], rows[~go]
        return _reply({"refs": refs})

    def _eval(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        """Add the last tree; reply the validation loss after it."""
        s = self._state(params)
        self._apply_update(s, params, _arrays(ctx, params))
        return _reply({"val_loss": self._val_loss(s)})  # type: ignore[dict-item]

    def _finish(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._state(params)
        trees = [Tree.from_dict(t) for t in params["trees"]]
        keep = len(trees)
        if not 0 <= keep < len(s.val_margins):
            raise ProtocolError(f"party {self.name!r}: the model keeps {keep} trees, {len(s.val_margins) - 1} grown")
        self.val_proba = 0.5 * (1.0 + np.tanh(0.5 * s.val_margins[keep]))  # the kept model's, for reports
        if self.val.any():
            yv = self.y[self.val]
            if 0 < yv.sum() < yv.size:
                self.metrics = evaluate(yv, self.val_proba)
        importance = {LENDERS_OWNER: {str(k): float(v) for k, v in dict(params["importance"]).items()}}
        owners = tuple(str(o) for o in params["owners"])
        self.model = GBDTModel(owners, trees, self.base_score, {LENDERS_OWNER: self.table}, importance)
        return _reply({"metrics": dict(self.metrics)})  # type: ignore[arg-type]

    def margin(self) -> np.ndarray:
        """This lender's training margins after the run (for its own reports)."""
        if self._run is None or self._run.margin is None:
            raise ProtocolError(f"party {self.name!r}: no finished tree run")
        return self._run.margin.copy()


@dataclass
class _PlatformRun:
    run_id: str
    lenders: list[str]
    key: EnvelopePrivateKey
    max_bins: int
    bins: dict[str, np.ndarray]
    tree: int = -1
    seeds: dict[str, bytes] = field(default_factory=dict)
    rows: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # platform-subtree node -> rows
    masks: dict[tuple[str, int, str], np.ndarray] = field(default_factory=dict)


class PlatformTreeParty:
    """The platform: its features for each lender's aligned rows (``tables[lender]``, in that lender's row
    order). It never holds a label or a gradient; it keeps its split rules."""

    def __init__(
        self, name: str, tables: Mapping[str, Mapping[str, np.ndarray]], identity: PartyIdentity,
        categorical: Sequence[str] = (), compute: RowCompute = LOCAL,
    ) -> None:  # fmt: skip
        _check_identity(name, identity)
        self.name = name
        self.identity = identity
        self.compute = compute  # where the node histograms' row partitions run (fedcore.partitions)
        self.tables = {k: {c: np.asarray(v) for c, v in t.items()} for k, t in tables.items()}
        self.categorical = tuple(categorical)
        self.mapper: BinMapper | None = None
        self.table = SplitTable(name)
        self.importance: dict[str, float] = {}
        self.shapes: list[Tree] = []  # the released trees without leaf values (for joint scoring)
        self.owners: tuple[str, ...] = ()
        self._run: _PlatformRun | None = None

    def register(self, registry: HandlerRegistry) -> None:
        for kind, fn in (
            (SETUP, self._setup),
            (BEGIN, self._begin),
            (HIST, self._hist),
            (SPLIT, self._split),
            (FINISH, self._finish),
        ):
            registry.register(kind, fn)  # fmt: skip

    def _state(self, params: Mapping[str, JSONValue]) -> _PlatformRun:
        if self._run is None or params.get("run_id") != self._run.run_id:
            raise ProtocolError(f"party {self.name!r}: no tree run {params.get('run_id')!r} was set up here")
        return self._run

    def _setup(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        lenders = [str(x) for x in params["lenders"]]
        absent = [x for x in lenders if x not in self.tables]
        if absent:
            raise InvalidInput(f"party {self.name!r}: no aligned table for lender(s) {absent}")
        names = list(self.tables[lenders[0]])
        for lender in lenders:
            if list(self.tables[lender]) != names:
                raise InvalidInput(f"party {self.name!r}: the table for {lender!r} has other columns than {names}")
        pooled = {c: np.concatenate([np.asarray(self.tables[x][c]) for x in lenders]) for c in names}
        max_bins = int(params["max_bins"])
        self.mapper = BinMapper.fit(pooled, max_bins, [c for c in self.categorical if c in names], names=names)
        bins = {x: self.mapper.transform(self.tables[x]) for x in lenders}
        self.table = SplitTable(self.name)
        key = EnvelopePrivateKey.generate()
        self._run = _PlatformRun(str(params["run_id"]), lenders, key, max_bins, bins)
        feats = [{"name": fb.name, "n_bins": fb.n_bins, "categorical": fb.categorical} for fb in self.mapper.features]
        rows = {x: int(bins[x].shape[1]) for x in lenders}
        return _reply(
            {"rows": rows, "features": feats, "env_key": self.identity.announcement(key)},
            {f"bins_{x}": bins[x] for x in lenders},
        )

    def _begin(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._state(params)
        s.tree = int(params["tree"])
        s.seeds = {}
        purpose = _purpose(s.run_id, f"tree/{s.tree}")
        for lender, blob in dict(params["sealed_seeds"]).items():
            if str(lender) not in s.lenders:
                raise ProtocolError(f"party {self.name!r}: a tree seed from {lender!r}, who is not a lender of the run")
            s.seeds[str(lender)] = open_from_peer(self.identity, blob, str(lender), purpose, s.key)
        if set(s.seeds) != set(s.lenders):
            raise ProtocolError(f"party {self.name!r}: tree {s.tree} seeds missing from some lenders")
        s.rows, s.masks = {}, {}
        return _reply({})

    def _mask(self, s: _PlatformRun, lender: str, node: int, comp: str, recipes: Mapping[int, Any]) -> np.ndarray:
        """The lender's mask on its masked values of lender node ``node`` (a built node's own mask, or
        parent's minus built sibling's for a node the coordinator got by subtraction)."""
        key = (lender, node, comp)
        if key not in s.masks:
            recipe = recipes.get(node)
            if recipe is None:
                n = s.bins[lender].shape[1]
                s.masks[key] = mask_u64(s.seeds[lender], f"{s.tree}/{node}/{comp}", n)
            else:
                parent, sibling = int(recipe[0]), int(recipe[1])
                s.masks[key] = self._mask(s, lender, parent, comp, recipes) - self._mask(
                    s, lender, sibling, comp, recipes
                )
        return s.masks[key]

    def _hist(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._state(params)
        if int(params["tree"]) != s.tree:
            raise ProtocolError(f"party {self.name!r}: histogram request for tree {params['tree']} out of order")
        recipes = {int(k): v for k, v in dict(params["recipes"]).items()}
        feats = [int(f) for f in params["features"]]
        items = [(int(a), int(b)) for a, b in params["items"]]
        slots = s.max_bins + 1
        pg = np.zeros((len(items), len(feats), slots), dtype=np.uint64)
        ph = np.zeros_like(pg)
        for k, (node, root) in enumerate(items):
            ctx.check_cancelled()
            for lender in s.lenders:
                rows = s.rows[node][lender] if node in s.rows else np.arange(s.bins[lender].shape[1])
                masks = (self._mask(s, lender, root, "g", recipes), self._mask(s, lender, root, "h", recipes))
                part = node_histograms_u64(s.bins[lender], masks, rows, feats, slots, self.compute)
                pg[k] -= part[0]  # the sums of the negated masks, modulo 2^64
                ph[k] -= part[1]
        return _reply({}, {"pg": pg, "ph": ph})

    def _split(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._state(params)
        assert self.mapper is not None
        refs = []
        for d in params["splits"]:
            node, left, right = int(d["node"]), int(d["left"]), int(d["right"])
            dec = _decision(d)
            if not 0 <= dec.feature < len(self.mapper.features):
                raise ProtocolError(f"party {self.name!r}: split on unknown feature {dec.feature}")
            refs.append(self.table.add(SplitRule.from_decision(self.mapper.features[dec.feature], dec)))
            table = dec.left_table(s.max_bins + 1)
            s.rows[left], s.rows[right] = {}, {}
            for lender in s.lenders:
                rows = s.rows[node][lender] if node in s.rows else np.arange(s.bins[lender].shape[1])
                go = table[s.bins[lender][dec.feature][rows]]
                s.rows[left][lender], s.rows[right][lender] = rows[go], rows[~go]
        return _reply({"refs": refs})

    def _finish(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        self._state(params)
        self.importance = {str(k): float(v) for k, v in dict(params["importance"]).items()}
        self.shapes = [Tree.from_dict(t) for t in params.get("shapes", [])]  # type: ignore[union-attr]
        if any(t.value.any() for t in self.shapes):
            raise ProtocolError(f"party {self.name!r}: tree shapes must not carry leaf values")
        self.owners = tuple(str(o) for o in params.get("owners", []))  # type: ignore[union-attr]
        return _reply({})
