#!/usr/bin/env python
"""Binning benchmark on FATE's hetero split: federated IV against the central computation, and the
optimal binning against optbinning (the baseline, measured in the same run).

Writes ``benchmarks/results/binning.json``:

- ``woe_iv_abs_err``: the largest |federated IV - central IV| over every feature (the label holder's
  13 dealt to 3 lenders by id mod 3, the partner's 10 at the platform), fine and optimal bins;
- ``optbinning_iv_abs_err``: the largest |IV - optbinning's IV| with the same fine bins and constraints
  (optbinning solved for each trend, the higher IV kept, as our ``"auto"`` does);
- ``optimal_binning_time_ratio``: our solve time / optbinning's fit time (both trends), all 23 features;
- ``protocol_time_ratio``: the in-process protocol's wall time / the central computation's;
- ``protocol_bytes``: bytes that crossed the (in-memory) wire;
- ``platform_features_coarsened_by_min_rows``: platform features whose fine bins the platform merged so
  that every bin holds ``min_rows`` rows of every lender (the central IV uses the same bins).

Usage: ``scripts/bench_binning.py`` (data from ``FEDCREDIT_FATE_DATA`` or ../shared/data/fate).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedcore.protocol.binning.coordinator import BinningSettings, run_binning  # noqa: E402
from fedcore.protocol.binning.messages import LENDERS_PARTY  # noqa: E402
from fedcore.protocol.binning.party import LenderBinning, LenderData, PlatformBinning, PlatformData  # noqa: E402
from fedcore.protocol.inmemory import InMemoryChannel  # noqa: E402
from fedcore.protocol.messages import Role  # noqa: E402
from fedcore.protocol.sealing import make_identities  # noqa: E402
from fedcore.protocol.tasks import HandlerRegistry  # noqa: E402
from models.binning import Binning, NumericBinning  # noqa: E402
from models.optimal_binning import optimal_binning  # noqa: E402
from models.prebinning import QuantileSketch, numeric_prebinning  # noqa: E402
from models.woe import bin_counts, woe_iv  # noqa: E402
from scripts.fate_data import fate_data_dir  # noqa: E402

LENDERS = ["bank-a", "bank-b", "bank-c"]
RESULTS = ROOT / "benchmarks" / "results"


def write(name: str, data: dict[str, object]) -> None:
    data = {**data, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": f"{platform.machine()} cores={os.cpu_count()}"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(json.dumps(data, indent=2, sort_keys=True))


def main() -> None:
    base = fate_data_dir()
    g = pd.read_csv(base / "default_credit_hetero_guest.csv")
    h = pd.read_csv(base / "default_credit_hetero_host.csv").set_index("id").loc[g["id"]].reset_index()
    lf = [f"x{i}" for i in range(13)]
    pf = [f"x{i}" for i in range(10)]
    settings = BinningSettings(max_bins=6)
    parts = {n: (g["id"] % 3 == k).to_numpy() for k, n in enumerate(LENDERS)}

    ids = make_identities([*LENDERS, "tiange"])
    ch = InMemoryChannel(record_wire=True)
    nodes: dict[str, LenderBinning | PlatformBinning] = {}
    for n in LENDERS:
        rows = parts[n]
        nodes[n] = LenderBinning(n, LenderData(g.loc[rows, lf].reset_index(drop=True), g.loc[rows, "y"].to_numpy(),
                                               dict.fromkeys(lf, "numeric")), ids[n])
    nodes["tiange"] = PlatformBinning("tiange", PlatformData(
        {n: h.loc[parts[n], pf].reset_index(drop=True) for n in LENDERS}, dict.fromkeys(pf, "numeric")), ids["tiange"])
    for n, party in nodes.items():
        reg = HandlerRegistry()
        party.register(reg)
        ch.add_party(n, Role.PLATFORM if n == "tiange" else Role.LENDER, reg)
    t0 = time.perf_counter()
    table = run_binning(ch, LENDERS, "tiange", settings, run_id="bench")
    t_protocol = time.perf_counter() - t0
    wire_bytes = sum(len(r.payload) for r in ch.wire_log)
    ch.close()

    # Central: the same fine bins (sketch merge for lender features, pooled quantiles for the platform's).
    t0 = time.perf_counter()
    y = np.concatenate([g.loc[parts[n], "y"].to_numpy() for n in LENDERS])
    err = 0.0
    guarded = 0
    fines = {}
    for owner, frame, feats in ((LENDERS_PARTY, g, lf), ("tiange", h, pf)):
        for f in feats:
            cols = [frame.loc[parts[n], f].to_numpy() for n in LENDERS]
            allx = np.concatenate(cols)
            fine: Binning
            if owner == LENDERS_PARTY:
                sk = QuantileSketch.of(cols[0])
                for c in cols[1:]:
                    sk = sk.merge(QuantileSketch.of(c))
                fine = numeric_prebinning(f, sketch=sk, n_bins=settings.n_bins)
            else:
                # the platform's fine bins, after its guard merged bins short of min_rows at some lender
                fine = nodes["tiange"].detail("bench")[f].fine
                guarded += fine != numeric_prebinning(f, allx, n_bins=settings.n_bins)
            ev, ne = bin_counts(fine.assign(allx), y, fine.n_bins)
            opt = optimal_binning(fine, ev, ne, max_bins=6, min_bin_size=settings.min_bin_size)
            got = table.parties[owner][f]
            err = max(err, abs(got.iv - opt.table.iv), abs(got.iv_fine - woe_iv(ev, ne).iv))
            fines[(owner, f)] = (fine, allx)
    t_central = time.perf_counter() - t0

    from optbinning import OptimalBinning

    ob_err, t_ours, t_ob = 0.0, 0.0, 0.0
    for fine_any, allx in fines.values():
        assert isinstance(fine_any, NumericBinning)
        fine_b = fine_any
        ev, ne = bin_counts(fine_b.assign(allx), y, fine_b.n_bins)
        t0 = time.perf_counter()
        ours = optimal_binning(fine_b, ev, ne, max_bins=6, min_bin_size=0.05)
        t_ours += time.perf_counter() - t0
        # optbinning's "auto_asc_desc" picks one trend by a heuristic; ours solves both and keeps the
        # higher IV, so the baseline is optbinning run for each trend, the higher IV kept.
        ob_iv = 0.0
        for trend in ("ascending", "descending"):
            t0 = time.perf_counter()
            ob = OptimalBinning(name=fine_b.feature, user_splits=list(fine_b.cuts), monotonic_trend=trend,
                                min_bin_size=0.05, max_n_bins=6, solver="cp").fit(allx, y)
            t_ob += time.perf_counter() - t0
            ob_iv = max(ob_iv, float(ob.binning_table.build().loc["Totals", "IV"]))
        ob_err = max(ob_err, abs(ours.table.iv - ob_iv))

    write("binning", {
        "woe_iv_abs_err": err,
        "optbinning_iv_abs_err": ob_err,
        "optimal_binning_time_ratio": t_ours / t_ob,
        "protocol_time_ratio": t_protocol / t_central,
        "protocol_bytes": wire_bytes,
        "platform_features_coarsened_by_min_rows": guarded,
        "features": len(lf) + len(pf),
        "rows": len(g),
        "lenders": len(LENDERS),
    })


if __name__ == "__main__":
    main()
