"""Party handlers of the federated binning protocol (see :mod:`fedcore.protocol.binning` for the flow
and what each side learns).

:class:`LenderBinning` runs at every lender (labels and the lenders' shared features, rows aligned with
the platform's table for that lender); :class:`PlatformBinning` runs at the platform (one feature table
per lender, aligned with that lender's rows). After a run each party keeps the detail of its own
features (fine and optimal binnings, counts, WOE) in :meth:`detail`; only IVs leave it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedcore.crypto.envelope import EnvelopePrivateKey, EnvelopePublicKey
from fedcore.errors import InvalidInput, NotFound, ProtocolError
from fedcore.protocol.binning.messages import (
    CUTS,
    KEYS,
    LABEL_SHARE,
    LENDER_COUNTS,
    LENDER_IV,
    PLATFORM_BINS,
    PLATFORM_IV,
    PLATFORM_MASK,
    SETUP,
    MaskSeed,
    frame,
    json_bytes,
    json_of,
    pack_frames,
    u64_array,
    u64_bytes,
    unpack_frames,
)
from fedcore.protocol.messages import JSONValue, TaskReply
from fedcore.protocol.sealing import (
    PartyIdentity,
    open_for,
    open_from_peer,
    seal_for,
    seal_to_peers,
    verify_announcement,
)
from fedcore.protocol.tasks import HandlerRegistry, TaskContext
from models.binning import Binning, CategoricalBinning, NumericBinning, binning_from_dict
from models.encoding import WoeEncoder
from models.optimal_binning import OptimalBinning, optimal_binning
from models.prebinning import LevelCounts, QuantileSketch, categorical_prebinning, numeric_prebinning
from models.woe import WoeTable, bin_counts, woe_iv

__all__ = ["FeatureDetail", "LenderBinning", "LenderData", "PlatformBinning", "PlatformData", "woe_encoder"]


@dataclass(frozen=True)
class LenderData:
    """A lender's labelled rows: the lenders' shared features and 0/1 labels, aligned with the
    platform's table for this lender. ``kinds`` maps each feature to ``numeric`` or ``categorical``."""

    features: pd.DataFrame
    labels: np.ndarray
    kinds: Mapping[str, str]


@dataclass(frozen=True)
class PlatformData:
    """The platform's feature table for each lender's aligned rows (same row order as that lender)."""

    tables: Mapping[str, pd.DataFrame]
    kinds: Mapping[str, str]


@dataclass(frozen=True)
class FeatureDetail:
    """What a party keeps about one of its own features after a run."""

    fine: Binning
    fine_table: WoeTable
    optimal: OptimalBinning
    missing_excluded: bool = False


@dataclass
class _Session:
    run_id: str
    params: Mapping[str, Any]
    env_key: EnvelopePrivateKey
    pubs: dict[str, EnvelopePublicKey] = field(default_factory=dict)
    anns: dict[str, Mapping[str, JSONValue]] = field(default_factory=dict)
    pair_seeds: dict[str, MaskSeed] = field(default_factory=dict)
    common: MaskSeed | None = None
    binnings: list[Binning] = field(default_factory=list)
    idx: dict[str, list[np.ndarray]] = field(default_factory=dict)
    excluded: dict[str, bool] = field(default_factory=dict)
    seeds_a: dict[str, MaskSeed] = field(default_factory=dict)


def woe_encoder(details: Mapping[str, FeatureDetail], *, optimal: bool = True) -> WoeEncoder:
    """A WOE encoder of a party's own features from a run's detail (optimal bins by default)."""
    pairs = [(d.optimal.binning, d.optimal.table) if optimal else (d.fine, d.fine_table) for d in details.values()]
    return WoeEncoder(tuple(b for b, _ in pairs), tuple(tuple(float(w) for w in t.woe) for _, t in pairs))


def _features(kinds: Mapping[str, str]) -> list[dict[str, str]]:
    for f, k in kinds.items():
        if k not in ("numeric", "categorical"):
            raise InvalidInput(f"feature {f!r}: kind must be numeric or categorical, got {k!r}")
    return [{"name": f, "kind": k} for f, k in kinds.items()]


def _fine_from_stats(feature: str, kind: str, stats: Sequence[Any], params: Mapping[str, Any]) -> Binning:
    """Fine binning of a lender feature from every lender's sketch or level counts (in lender order)."""
    if kind == "numeric":
        sketch = QuantileSketch.from_dict(stats[0])
        for s in stats[1:]:
            sketch = sketch.merge(QuantileSketch.from_dict(s))
        return numeric_prebinning(feature, sketch=sketch, n_bins=int(params["n_bins"]))
    counts = LevelCounts()
    for s in stats:
        counts = counts + LevelCounts(Counter({str(k): int(v) for k, v in s.items()}))
    return categorical_prebinning(feature, level_counts=counts, min_fraction=float(params["min_fraction"]))


def _optimal(b: Binning, ev: np.ndarray, ne: np.ndarray, params: Mapping[str, Any], excluded: bool) -> FeatureDetail:
    max_bins = params.get("max_bins")
    opt = optimal_binning(b, ev, ne, max_bins=None if max_bins is None else int(max_bins),
                          min_bin_size=float(params["min_bin_size"]), trend=str(params["trend"]))
    return FeatureDetail(b, woe_iv(ev, ne), opt, excluded)


def _reply_ivs(details: Mapping[str, FeatureDetail]) -> TaskReply:
    return TaskReply({"features": {
        f: {"iv": d.optimal.table.iv, "iv_fine": d.fine_table.iv, "n_bins": d.optimal.binning.n_bins,
            "n_fine": d.fine.n_bins}
        for f, d in details.items()
    }})


class _Base:
    role = ""

    def __init__(self, name: str, identity: PartyIdentity) -> None:
        if identity.name != name:
            raise InvalidInput(f"party {name!r} was given the identity of {identity.name!r}")
        self.name = name
        self.identity = identity
        self._sessions: dict[str, _Session] = {}
        self._details: dict[str, dict[str, FeatureDetail]] = {}
        self._lock = threading.Lock()

    def detail(self, run_id: str) -> dict[str, FeatureDetail]:
        """This party's own features after run ``run_id``: binnings, counts, WOE, optimal bins."""
        try:
            return self._details[run_id]
        except KeyError:
            raise NotFound(f"no finished binning run {run_id!r} at {self.name!r}") from None

    def _finish(self, s: _Session, details: dict[str, FeatureDetail]) -> TaskReply:
        """Keep the detail of this party's features; drop the run's keys and seeds."""
        with self._lock:
            self._details[s.run_id] = details
            self._sessions.pop(s.run_id, None)
        return _reply_ivs(details)

    def _session(self, ctx: TaskContext) -> _Session:
        with self._lock:
            s = self._sessions.get(ctx.run_id)
        if s is None:
            raise NotFound(f"no binning run {ctx.run_id!r} at {self.name!r}")
        return s

    def _new_session(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> _Session:
        s = _Session(ctx.run_id, dict(params), EnvelopePrivateKey.generate())
        with self._lock:
            self._sessions[ctx.run_id] = s
        return s

    def _purpose(self, s: _Session, what: str) -> str:
        return f"binning/{s.run_id}/{what}"

    def _seal(self, s: _Session, to: str, data: bytes, what: str) -> bytes:
        """Bulk data to a peer whose run key was checked against its certificate."""
        return seal_for(s.pubs[to], data, self._purpose(s, what), self.name, to)

    def _open(self, s: _Session, frm: str, data: bytes, what: str) -> bytes:
        return open_for(s.env_key, data, self._purpose(s, what), frm, self.name)

    def _seal_secret(self, s: _Session, to: str, secret: bytes, what: str) -> bytes:
        """A seed, through the certificate-bound :func:`seal_to_peers` (signed by this party)."""
        return json_bytes(seal_to_peers(self.identity, {to: s.anns[to]}, secret, self._purpose(s, what))[to])

    def _open_secret(self, s: _Session, frm: str, data: bytes, what: str) -> bytes:
        return open_from_peer(self.identity, json_of(data, what), frm, self._purpose(s, what), s.env_key)

    def _set_pubs(self, s: _Session, params: Mapping[str, JSONValue]) -> None:
        """The run keys of the parties, each checked against its certificate (PermissionDenied if not)."""
        anns = params.get("keys")
        if not isinstance(anns, Mapping):
            raise ProtocolError("binning step needs the parties' signed key announcements")
        s.anns = {str(p): a for p, a in anns.items()}
        s.pubs = {p: verify_announcement(self.identity.ca_pem, a, p) for p, a in s.anns.items()}

    def _pair_mask(self, s: _Session, label: str, n: int) -> np.ndarray:
        """Sum of pairwise masks: + stream(seed_ij) for later lenders j, - for earlier ones (zero-sum)."""
        lenders = list(s.params["lenders"])
        me = lenders.index(self.name)
        z = np.zeros(n, dtype=np.uint64)
        for other, seed in s.pair_seeds.items():
            m = seed.stream(label, n)
            z = z + m if lenders.index(other) > me else z - m
        return z


class LenderBinning(_Base):
    role = "lender"

    def __init__(self, name: str, data: LenderData, identity: PartyIdentity) -> None:
        super().__init__(name, identity)
        if len(data.features) != len(data.labels):
            raise InvalidInput(f"lender {name!r}: {len(data.features)} feature rows but {len(data.labels)} labels")
        y = np.asarray(data.labels)
        if y.size and not np.all((y == 0) | (y == 1)):
            row = int(np.flatnonzero(~((y == 0) | (y == 1)))[0])
            raise InvalidInput(f"lender {name!r} row {row}: label {y[row].item()!r} is not 0 or 1 (1 = default)")
        missing = [f for f in data.kinds if f not in data.features.columns]
        if missing:
            raise InvalidInput(f"lender {name!r}: no column(s) {missing} in its feature table")
        self.data = data

    def register(self, registry: HandlerRegistry) -> None:
        for kind, fn in ((SETUP, self._setup), (KEYS, self._keys), (CUTS, self._cuts),
                         (LENDER_COUNTS, self._counts), (LABEL_SHARE, self._label_share),
                         (LENDER_IV, self._lender_iv)):
            registry.register(kind, fn)

    def _lenders(self, s: _Session) -> list[str]:
        return [str(x) for x in s.params["lenders"]]

    def _setup(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._new_session(ctx, params)
        return TaskReply({"envelope_key": self.identity.announcement(s.env_key), "rows": len(self.data.labels),
                          "features": _features(self.data.kinds)})

    def _local_stats(self, s: _Session) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f, kind in self.data.kinds.items():
            col = self.data.features[f].to_numpy()
            if kind == "numeric":
                x = NumericBinning(f, ()).to_numbers(col)
                out[f] = QuantileSketch.of(x, int(s.params["sketch_size"])).to_dict()
            else:
                out[f] = dict(LevelCounts.of(col).counts)
        return out

    def _keys(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx)
        self._set_pubs(s, params)
        lenders = self._lenders(s)
        me = lenders.index(self.name)
        frames: dict[str, bytes] = {}
        if me > 0:
            frames["sketch"] = self._seal(s, lenders[0], json_bytes(self._local_stats(s)), "sketch")
        for other in lenders[me + 1:]:
            seed = MaskSeed.generate()
            s.pair_seeds[other] = seed
            frames[f"pair:{other}"] = self._seal_secret(s, other, seed.seal_bytes(), "pair")
        return TaskReply({}, pack_frames(frames))

    def _cuts(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx)
        lenders = self._lenders(s)
        if lenders[0] != self.name:
            raise InvalidInput("only the first lender merges the lenders' sketches")
        frames = unpack_frames(ctx.read_payload())
        stats = [self._local_stats(s)]
        for other in lenders[1:]:
            stats.append(json_of(self._open(s, other, frame(frames, f"sketch:{other}", CUTS), "sketch"), "sketch"))
        s.binnings = [_fine_from_stats(f, k, [st[f] for st in stats], s.params) for f, k in self.data.kinds.items()]
        s.common = MaskSeed.generate()
        body = {"binnings": [b.to_dict() for b in s.binnings], "common": s.common.seal_bytes().hex()}
        out = {f"cuts:{o}": self._seal_secret(s, o, json_bytes(body), "cuts") for o in lenders[1:]}
        return TaskReply({}, pack_frames(out))

    def _counts(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx)
        lenders = self._lenders(s)
        me = lenders.index(self.name)
        frames = unpack_frames(ctx.read_payload())
        if me > 0:
            body = json_of(self._open_secret(s, lenders[0], frame(frames, "cuts", LENDER_COUNTS), "cuts"), "cuts")
            s.binnings = [binning_from_dict(d) for d in body["binnings"]]
            s.common = MaskSeed(bytes.fromhex(body["common"]))
        for other in lenders[:me]:
            sealed = frame(frames, f"pair:{other}", LENDER_COUNTS)
            s.pair_seeds[other] = MaskSeed(self._open_secret(s, other, sealed, "pair"))
        vec = self._own_counts(s)
        masked = vec + self._pair_mask(s, "lender-counts", len(vec)) + self._common_mask(s, self.name, len(vec))
        return TaskReply({"length": len(vec)}, [u64_bytes(masked)])

    def _own_counts(self, s: _Session) -> np.ndarray:
        parts = []
        y = np.asarray(self.data.labels)
        for b in s.binnings:
            ev, ne = bin_counts(b.assign(self.data.features[b.feature].to_numpy()), y, b.n_bins)
            parts += [ev, ne]
        return np.concatenate(parts).astype(np.uint64)

    def _common_mask(self, s: _Session, lender: str, n: int) -> np.ndarray:
        assert s.common is not None
        return s.common.stream(f"lender-counts/{lender}", n)

    def _label_share(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx)
        n = len(self.data.labels)
        try:
            width = int(params["width"])
            seed_b = MaskSeed(bytes.fromhex(str(params["seed_b"])))
        except (KeyError, TypeError, ValueError):
            raise ProtocolError(f"{LABEL_SHARE} needs an integer width and a hex dealer seed") from None
        frames = unpack_frames(ctx.read_payload())
        platform = str(s.params["platform"])
        sealed = frame(frames, "xhat", LABEL_SHARE)
        xhat = u64_array(self._open(s, platform, sealed, "xhat"), n * width, "masked bins").reshape(n, width)
        rb = u64_array(frame(frames, "rb", LABEL_SHARE), width, "dealer share")
        Rb = seed_b.stream("Rb", n)
        y = np.asarray(self.data.labels).astype(np.uint64)
        yhat = y + Rb
        share = rb - xhat.T @ Rb + self._pair_mask(s, "platform-share", width)
        body = {"yhat": u64_bytes(yhat), "share": u64_bytes(share)}
        return TaskReply({}, pack_frames({"share": self._seal(s, platform, b"".join(pack_frames(body)), "share")}))

    def _lender_iv(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx)
        total = u64_array(ctx.read_payload(), None, "sum of counts")
        for lender in self._lenders(s):
            total = total - self._common_mask(s, lender, len(total))
        counts = total.astype(np.int64)
        details: dict[str, FeatureDetail] = {}
        pos = 0
        for b in s.binnings:
            ev, ne = counts[pos:pos + b.n_bins], counts[pos + b.n_bins:pos + 2 * b.n_bins]
            pos += 2 * b.n_bins
            details[b.feature] = _optimal(b, ev, ne, s.params, False)
        return self._finish(s, details)


class PlatformBinning(_Base):
    role = "platform"

    def __init__(self, name: str, data: PlatformData, identity: PartyIdentity) -> None:
        super().__init__(name, identity)
        for lender, table in data.tables.items():
            missing = [f for f in data.kinds if f not in table.columns]
            if missing:
                raise InvalidInput(f"platform {name!r}: no column(s) {missing} in its table for lender {lender!r}")
        self.data = data

    def register(self, registry: HandlerRegistry) -> None:
        for kind, fn in ((SETUP, self._setup), (PLATFORM_BINS, self._bins), (PLATFORM_MASK, self._mask),
                         (PLATFORM_IV, self._iv)):
            registry.register(kind, fn)

    def _setup(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._new_session(ctx, params)
        lenders = [str(x) for x in s.params["lenders"]]
        missing = [x for x in lenders if x not in self.data.tables]
        if missing:
            raise NotFound(f"the platform has no aligned table for lender(s) {missing}")
        return TaskReply({"envelope_key": self.identity.announcement(s.env_key),
                          "rows": {x: len(self.data.tables[x]) for x in lenders},
                          "features": _features(self.data.kinds)})

    def _bins(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx)
        lenders = [str(x) for x in s.params["lenders"]]
        min_rows = int(s.params["min_rows"])
        for f, kind in self.data.kinds.items():
            cols = [self.data.tables[x][f].to_numpy() for x in lenders]
            allv = np.concatenate(cols)
            b: Binning
            if kind == "numeric":
                b = numeric_prebinning(f, allv, n_bins=int(s.params["n_bins"]))
            else:
                b = categorical_prebinning(f, allv, min_fraction=float(s.params["min_fraction"]))
            b, excluded = _guard(b, cols, min_rows)
            s.binnings.append(b)
            s.excluded[f] = excluded
            s.idx[f] = [b.assign(c) for c in cols]
        return TaskReply({"n_bins": [b.n_bins for b in s.binnings]})

    def _onehot_offsets(self, s: _Session) -> list[int]:
        return list(np.cumsum([0] + [b.n_bins for b in s.binnings])[:-1])

    def _mask(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx)
        self._set_pubs(s, params)
        seeds = params.get("seeds_a")
        if not isinstance(seeds, Mapping):
            raise ProtocolError("binning.platform_mask needs one dealer seed per lender")
        width = sum(b.n_bins for b in s.binnings)
        offsets = self._onehot_offsets(s)
        frames: dict[str, bytes] = {}
        for lender, hexseed in seeds.items():
            seed = MaskSeed(bytes.fromhex(str(hexseed)))
            s.seeds_a[str(lender)] = seed
            n = len(self.data.tables[str(lender)])
            xhat = seed.stream("Ra", n * width).reshape(n, width)
            rows = np.arange(n)
            for b, off in zip(s.binnings, offsets, strict=True):
                idx = s.idx[b.feature][list(s.params["lenders"]).index(lender)]
                keep = idx != b.missing_bin if s.excluded[b.feature] else np.ones(n, dtype=bool)
                xhat[rows[keep], off + idx[keep]] += np.uint64(1)
            ctx.check_cancelled()
            frames[f"xhat:{lender}"] = self._seal(s, str(lender), u64_bytes(xhat), "xhat")
        return TaskReply({}, pack_frames(frames))

    def _iv(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        s = self._session(ctx)
        lenders = [str(x) for x in s.params["lenders"]]
        frames = unpack_frames(ctx.read_payload())
        width = sum(b.n_bins for b in s.binnings)
        offsets = self._onehot_offsets(s)
        events = np.zeros(width, dtype=np.uint64)
        rows = np.zeros(width, dtype=np.int64)
        for i, lender in enumerate(lenders):
            body = unpack_frames(self._open(s, lender, frame(frames, f"share:{lender}", PLATFORM_IV), "share"))
            n = len(self.data.tables[lender])
            yhat = u64_array(frame(body, "yhat", PLATFORM_IV), n, "masked labels")
            events = events + u64_array(frame(body, "share", PLATFORM_IV), width, "label share")
            events = events + s.seeds_a[lender].stream("ra", width)
            for b, off in zip(s.binnings, offsets, strict=True):
                idx = s.idx[b.feature][i]
                if s.excluded[b.feature]:
                    keep = idx != b.missing_bin
                    idx, yh = idx[keep], yhat[keep]
                else:
                    yh = yhat
                acc = np.zeros(b.n_bins, dtype=np.uint64)
                np.add.at(acc, idx, yh)
                events[off:off + b.n_bins] += acc
                rows[off:off + b.n_bins] += np.bincount(idx, minlength=b.n_bins)
        ev_all = events.astype(np.int64)
        if np.any(ev_all < 0) or np.any(ev_all > rows):
            raise ProtocolError("pooled event counts are out of range: a share was wrong")
        details = {}
        for b, off in zip(s.binnings, offsets, strict=True):
            ev = ev_all[off:off + b.n_bins]
            ne = rows[off:off + b.n_bins] - ev
            details[b.feature] = _optimal(b, ev, ne, s.params, s.excluded[b.feature])
        return self._finish(s, details)


def _guard(b: Binning, cols: Sequence[np.ndarray], min_rows: int) -> tuple[Binning, bool]:
    """Coarsen ``b`` until every non-empty bin holds at least ``min_rows`` rows of every lender, so a
    pooled per-bin count is never one lender's alone. A missing bin that fails is excluded (its rows
    count in no bin). Returns the binning and whether the missing bin was excluded."""
    while True:
        counts = np.array([np.bincount(b.assign(c), minlength=b.n_bins) for c in cols])
        bad = [k for k in range(b.n_bins - 1) if counts[:, k].sum() > 0 and counts[:, k].min() < min_rows]
        if not bad or b.n_bins <= 2:
            break
        k = bad[0]
        if isinstance(b, NumericBinning):
            tot = counts.sum(axis=0)
            left = k - 1 if k > 0 else None
            right = k + 1 if k + 1 < b.n_bins - 1 else None
            j = left if right is None or (left is not None and tot[left] <= tot[right]) else right
            assert j is not None
            lo = min(k, j)
            b = NumericBinning(b.feature, b.cuts[:lo] + b.cuts[lo + 1:])
        else:
            assert isinstance(b, CategoricalBinning)
            tot = counts.sum(axis=0)[:-1]
            if len(bad) > 1:
                groups = [bad] + [[g] for g in range(len(b.groups)) if g not in bad]
            else:
                others = [g for g in range(len(b.groups)) if g != k]
                j = min(others, key=lambda g: tot[g])
                groups = [[k, j]] + [[g] for g in others if g != j]
            b = b.merged(groups)
    m = b.missing_bin
    counts = np.array([np.bincount(b.assign(c), minlength=b.n_bins) for c in cols])
    return b, bool(counts[:, m].sum() > 0 and counts[:, m].min() < min_rows)
