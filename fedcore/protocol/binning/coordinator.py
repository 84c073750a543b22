"""Coordinator driver of the federated binning protocol: relays sealed frames, sums masked vectors and
deals the correlated randomness for the platform-feature counts (see the package docstring)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedcore.errors import InvalidInput, ProtocolError
from fedcore.protocol.binning.messages import (
    CUTS,
    KEYS,
    LABEL_SHARE,
    LENDER_COUNTS,
    LENDER_IV,
    LENDERS_PARTY,
    PLATFORM_BINS,
    PLATFORM_IV,
    PLATFORM_MASK,
    SETUP,
    FeatureIv,
    IvTable,
    MaskSeed,
    feature_ivs,
    frame,
    pack_frames,
    u64_array,
    u64_bytes,
    unpack_frames,
)
from fedcore.protocol.channel import PartyChannel
from fedcore.protocol.messages import JSONValue, Task
from models.optimal_binning import TRENDS

__all__ = ["BinningSettings", "run_binning"]


@dataclass(frozen=True)
class BinningSettings:
    """Run parameters. ``min_rows``: every platform bin holds at least this many rows of every lender
    (else bins are merged). ``min_lenders``: platform features are counted only with at least this many
    lenders (with one, the pooled counts would be that lender's)."""

    n_bins: int = 20
    min_fraction: float = 0.01
    min_bin_size: float = 0.05
    max_bins: int | None = 8
    trend: str = "auto"
    min_rows: int = 20
    min_lenders: int = 2
    sketch_size: int = 4096
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.trend not in TRENDS:
            raise InvalidInput(f"binning trend must be one of {TRENDS}, got {self.trend!r}")
        if self.n_bins < 2 or self.min_rows < 1 or self.min_lenders < 1 or self.sketch_size < 16:
            raise InvalidInput("binning settings: n_bins >= 2, min_rows >= 1, min_lenders >= 1, sketch_size >= 16")

    def params(self, lenders: Sequence[str], platform: str | None) -> dict[str, JSONValue]:
        return {"lenders": list(lenders), "platform": platform, "n_bins": self.n_bins,
                "min_fraction": self.min_fraction, "min_bin_size": self.min_bin_size, "max_bins": self.max_bins,
                "trend": self.trend, "min_rows": self.min_rows, "sketch_size": self.sketch_size}


def run_binning(
    channel: PartyChannel,
    lenders: Sequence[str],
    platform: str | None,
    settings: BinningSettings | None = None,
    run_id: str | None = None,
    data_params: Mapping[str, JSONValue] | None = None,
) -> IvTable:
    """Run the protocol; return the IV table (``"lenders"`` for the shared lender features, the
    platform's name for its features). Each party keeps its own features' detail. ``data_params``
    (e.g. ``dataset``, ``psi_runs``) go to every party with ``binning.setup``: which rows to bin."""
    cfg = settings or BinningSettings()
    lenders = sorted(lenders)
    if not lenders:
        raise InvalidInput("binning needs at least one lender")
    if platform is not None and len(lenders) < cfg.min_lenders:
        raise InvalidInput(
            f"platform features need at least {cfg.min_lenders} lenders ({len(lenders)} given): with fewer the "
            "platform would see one lender's per-bin default counts; lower min_lenders to accept that"
        )
    rid = run_id or f"binning-{uuid.uuid4().hex[:12]}"
    params = {**dict(data_params or {}), **cfg.params(lenders, platform)}

    def task(kind: str, p: dict[str, JSONValue] | None = None, payload: dict[str, bytes] | None = None,
             raw: bytes | None = None) -> Task:
        body = list(pack_frames(payload)) if payload is not None else ([raw] if raw is not None else None)
        return Task(kind, p or {}, rid, cfg.timeout_s, body)

    everyone = [*lenders, *([platform] if platform else [])]
    setup = channel.run_all({p: task(SETUP, params) for p in everyone})
    try:
        pubs: dict[str, JSONValue] = {p: dict(setup[p].params["envelope_key"]) for p in everyone}
        rows = {x: int(setup[x].params["rows"]) for x in lenders}
        prow = dict(setup[platform].params["rows"]) if platform else {}
        schemas = {x: {str(f["name"]): str(f["kind"]) for f in setup[x].params["features"]} for x in lenders}
    except (KeyError, TypeError, ValueError):
        raise ProtocolError(f"a party's {SETUP} reply is malformed") from None
    if platform and any(int(prow.get(x, -1)) != rows[x] for x in lenders):
        raise ProtocolError(f"the platform's aligned rows {prow} do not match the lenders' {rows}")
    for x in lenders[1:]:
        if schemas[x] != schemas[lenders[0]]:
            raise ProtocolError(f"lender {x!r} does not hold the same feature schema as {lenders[0]!r}")

    # Lender features: sketches sealed to the first lender, pairwise seeds sealed lender to lender.
    keys = channel.run_all({x: task(KEYS, {"keys": pubs}) for x in lenders})
    kframes = {x: unpack_frames(keys[x].read_payload()) for x in lenders}
    cuts = unpack_frames(channel.run(lenders[0], task(
        CUTS, payload={f"sketch:{x}": frame(kframes[x], "sketch", KEYS) for x in lenders[1:]})).read_payload())
    count_tasks = {}
    for i, x in enumerate(lenders):
        frames = {f"pair:{o}": frame(kframes[o], f"pair:{x}", KEYS) for o in lenders[:i]}
        if i > 0:
            frames["cuts"] = frame(cuts, f"cuts:{x}", CUTS)
        count_tasks[x] = task(LENDER_COUNTS, payload=frames)
    counted = channel.run_all(count_tasks)
    total: np.ndarray | None = None
    for x in lenders:
        v = u64_array(counted[x].read_payload(), int(counted[x].params["length"]), "masked counts")
        total = v if total is None else total + v
    assert total is not None
    table = IvTable()
    if platform is not None:
        table.parties[platform] = _platform_features(channel, task, lenders, platform, pubs, rows)
    # Last, as it ends the lenders' sessions (the platform step needs their keys and pairwise seeds).
    liv = channel.run_all({x: task(LENDER_IV, raw=u64_bytes(total)) for x in lenders})
    first = feature_ivs(liv[lenders[0]].params, lenders[0])
    for x in lenders[1:]:
        if feature_ivs(liv[x].params, x) != first:
            raise ProtocolError(f"lender {x!r} computed different lender-feature IVs from {lenders[0]!r}")
    table.parties = {LENDERS_PARTY: first, **table.parties}
    return table


def _platform_features(
    channel: PartyChannel,
    task: Callable[..., Task],
    lenders: Sequence[str],
    platform: str,
    pubs: dict[str, JSONValue],
    rows: dict[str, int],
) -> dict[str, FeatureIv]:
    """Dealer-assisted product of the platform's bin one-hots and the lenders' labels."""
    width = int(sum(int(k) for k in channel.run(platform, task(PLATFORM_BINS)).params["n_bins"]))
    seeds_a = {x: MaskSeed.generate() for x in lenders}
    seeds_b = {x: MaskSeed.generate() for x in lenders}
    masked = unpack_frames(channel.run(platform, task(
        PLATFORM_MASK, {"keys": pubs, "seeds_a": {x: s.seal_bytes().hex() for x, s in seeds_a.items()}},
    )).read_payload())
    share_tasks = {}
    for x in lenders:
        n = rows[x]
        Ra = seeds_a[x].stream("Ra", n * width).reshape(n, width)
        rb = Ra.T @ seeds_b[x].stream("Rb", n) - seeds_a[x].stream("ra", width)
        del Ra
        share_tasks[x] = task(LABEL_SHARE, {"width": width, "seed_b": seeds_b[x].seal_bytes().hex()},
                              payload={"xhat": frame(masked, f"xhat:{x}", PLATFORM_MASK), "rb": u64_bytes(rb)})
    shares = channel.run_all(share_tasks)
    piv = channel.run(platform, task(PLATFORM_IV, payload={
        f"share:{x}": frame(unpack_frames(shares[x].read_payload()), "share", LABEL_SHARE) for x in lenders}))
    return feature_ivs(piv.params, platform)
