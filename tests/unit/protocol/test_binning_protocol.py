"""Federated binning: IVs equal the central computation on the FATE hetero split; the wire carries no
label, no per-lender count and no per-row platform bin."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcore.errors import InvalidInput, ProtocolError
from fedcore.protocol.binning import messages as bm
from fedcore.protocol.binning.coordinator import BinningSettings, run_binning
from fedcore.protocol.binning.party import (
    LenderBinning,
    LenderData,
    PlatformBinning,
    PlatformData,
    _guard,
    woe_encoder,
)
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role
from fedcore.protocol.sealing import make_identities
from fedcore.protocol.tasks import HandlerRegistry
from fedcore.secret import SecretLeakError
from models.binning import NumericBinning
from models.optimal_binning import optimal_binning
from models.prebinning import QuantileSketch, categorical_prebinning, numeric_prebinning
from models.woe import bin_counts, woe_iv

LENDERS = ["bank-a", "bank-b", "bank-c"]
PLATFORM = "tiange"
IDS = make_identities([*LENDERS, PLATFORM])


def _fate(name: str) -> pd.DataFrame:
    shipped = Path(__file__).resolve().parents[2] / "data" / "fate" / f"{name}.csv.gz"
    if shipped.exists():
        return pd.read_csv(shipped)
    return pd.read_csv(Path(os.environ.get("FEDCREDIT_FATE_DATA", "/work/shared/data/fate")) / f"{name}.csv")


@pytest.fixture(scope="module")
def split():
    """FATE's hetero split, the label holder's rows dealt to three lenders (by id mod 3); the platform
    holds the partner's features for each lender's rows. x2 (education) is declared categorical at
    the platform, x0 (PAY_6) at the lenders; x1 gets missing values at the lenders."""
    g = _fate("default_credit_hetero_guest")
    h = _fate("default_credit_hetero_host").set_index("id").loc[g["id"]].reset_index()
    g = g.copy()
    g.loc[g.index % 17 == 0, "x1"] = np.nan
    lender_feats = ["x0", "x1", "x7", "x8"]
    platform_feats = ["x0", "x2", "x4", "x5"]
    parts = {}
    for k, name in enumerate(LENDERS):
        rows = (g["id"] % 3 == k).to_numpy()
        parts[name] = (g.loc[rows, lender_feats].reset_index(drop=True), g.loc[rows, "y"].to_numpy(),
                       h.loc[rows, platform_feats].reset_index(drop=True))
    lk = {"x0": "categorical", "x1": "numeric", "x7": "numeric", "x8": "numeric"}
    pk = {"x0": "numeric", "x2": "categorical", "x4": "numeric", "x5": "numeric"}
    return parts, lk, pk


def _federation(split, lenders=LENDERS, record=False):
    parts, lk, pk = split
    ch = InMemoryChannel(record_wire=record)
    nodes = {}
    for name in lenders:
        feats, y, _ = parts[name]
        node = LenderBinning(name, LenderData(feats, y, lk), IDS[name])
        reg = HandlerRegistry()
        node.register(reg)
        ch.add_party(name, Role.LENDER, reg)
        nodes[name] = node
    platform = PlatformBinning(PLATFORM, PlatformData({n: parts[n][2] for n in lenders}, pk), IDS[PLATFORM])
    reg = HandlerRegistry()
    platform.register(reg)
    ch.add_party(PLATFORM, Role.PLATFORM, reg)
    nodes[PLATFORM] = platform
    return ch, nodes


@pytest.fixture(scope="module")
def run(split):
    ch, nodes = _federation(split, record=True)
    settings = BinningSettings(max_bins=6)
    table = run_binning(ch, LENDERS, PLATFORM, settings, run_id="r1")
    ch.close()
    return table, nodes, ch.wire_log, settings


def test_lender_features_equal_central(split, run):
    parts, lk, _ = split
    table, nodes, _, settings = run
    y = np.concatenate([parts[n][1] for n in LENDERS])
    for f, kind in lk.items():
        cols = [parts[n][0][f].to_numpy() for n in LENDERS]
        allx = np.concatenate(cols)
        if kind == "numeric":
            sk = QuantileSketch.of(NumericBinning(f, ()).to_numbers(cols[0]))
            for c in cols[1:]:
                sk = sk.merge(QuantileSketch.of(NumericBinning(f, ()).to_numbers(c)))
            fine = numeric_prebinning(f, sketch=sk, n_bins=settings.n_bins)
        else:
            fine = categorical_prebinning(f, allx, min_fraction=settings.min_fraction)
        ev, ne = bin_counts(fine.assign(allx), y, fine.n_bins)
        central = optimal_binning(fine, ev, ne, max_bins=6, min_bin_size=settings.min_bin_size)
        got = table.parties[bm.LENDERS_PARTY][f]
        assert abs(got.iv - central.table.iv) <= 1e-9
        assert abs(got.iv_fine - woe_iv(ev, ne).iv) <= 1e-9
        for n in LENDERS:  # every lender holds the same pooled detail
            d = nodes[n].detail("r1")[f]
            assert d.fine == fine and np.array_equal(d.fine_table.events, ev)
    assert table.parties[bm.LENDERS_PARTY]["x0"].iv > 0.1  # PAY_6 is predictive


def test_platform_features_equal_central(split, run):
    parts, _, pk = split
    table, nodes, _, settings = run
    y = np.concatenate([parts[n][1] for n in LENDERS])
    for f, kind in pk.items():
        allx = np.concatenate([parts[n][2][f].to_numpy() for n in LENDERS])
        fine = (numeric_prebinning(f, allx, n_bins=settings.n_bins) if kind == "numeric"
                else categorical_prebinning(f, allx, min_fraction=settings.min_fraction))
        d = nodes[PLATFORM].detail("r1")[f]
        if kind == "numeric":
            assert d.fine == fine  # no bin needed merging: every bin has >= 20 rows of every lender
        ev, ne = bin_counts(d.fine.assign(allx), y, d.fine.n_bins)
        assert np.array_equal(d.fine_table.events, ev) and np.array_equal(d.fine_table.nonevents, ne)
        central = optimal_binning(d.fine, ev, ne, max_bins=6, min_bin_size=settings.min_bin_size)
        got = table.parties[PLATFORM][f]
        assert abs(got.iv - central.table.iv) <= 1e-6  # the woe_iv_abs_err bound
        assert got.iv == pytest.approx(central.table.iv, abs=1e-12)
    assert table.parties[PLATFORM]["x5"].iv > 0.5  # PAY_0, the strongest feature
    assert table.rows()[0][1] == "x5"


def _payloads(wire, direction=None, party=None):
    return [r.payload for r in wire if (direction is None or r.direction == direction)
            and (party is None or r.party == party)]


def test_wire_carries_no_label_count_or_platform_bin(split, run):
    parts, _, _ = split
    _, nodes, wire, _ = run
    blob = b"".join(_payloads(wire))
    params = json.dumps([r.params for r in wire])
    details = nodes[PLATFORM].detail("r1")
    assert not nodes[PLATFORM]._sessions  # the run's seeds and keys are gone
    binnings = [d.fine for d in details.values()]
    for n in LENDERS:
        y = parts[n][1]
        assert y.astype("<u8").tobytes() not in blob and y.astype("<i8").tobytes() not in blob
        for b in binnings:  # one lender's per-bin events of a platform feature: never on the wire
            idx = b.assign(parts[n][2][b.feature].to_numpy())
            ev, _ = bin_counts(idx, y, b.n_bins)
            assert ev.astype("<u8").tobytes() not in blob
            assert idx.astype("<u8").tobytes()[:4096] not in blob and idx.astype("<i8").tobytes()[:4096] not in blob
            onehot = np.zeros((len(idx), b.n_bins), dtype="<u8")
            onehot[np.arange(len(idx)), idx] = 1
            assert onehot.tobytes()[:4096] not in blob
    # the pooled lender counts travel only masked
    pooled = np.concatenate([np.concatenate([d.fine_table.events, d.fine_table.nonevents])
                             for d in nodes[LENDERS[0]].detail("r1").values()]).astype("<u8")
    assert pooled.tobytes() not in blob
    # no cut point of the platform's bins appears anywhere
    for b in binnings:
        if isinstance(b, NumericBinning) and b.cuts:
            assert np.asarray(b.cuts, dtype="<f8").tobytes() not in blob
            assert repr(b.cuts[len(b.cuts) // 2]) not in params


def test_replies_say_only_what_the_docstring_says(run):
    _, _, wire, _ = run
    allowed = {
        bm.SETUP: {"envelope_key", "rows", "features"},
        bm.KEYS: set(), bm.CUTS: set(), bm.LENDER_COUNTS: {"length"}, bm.PLATFORM_BINS: {"n_bins"},
        bm.PLATFORM_MASK: set(), bm.LABEL_SHARE: set(), bm.PLATFORM_IV: {"features"}, bm.LENDER_IV: {"features"},
    }
    seen = set()
    for r in wire:
        if r.direction != "from_party":
            continue
        seen.add(r.kind)
        assert set(r.params) == allowed[r.kind], r.kind
        if r.kind in (bm.PLATFORM_IV, bm.LENDER_IV):
            assert all(set(v) == {"iv", "iv_fine", "n_bins", "n_fine"} for v in r.params["features"].values())
        if r.kind == bm.PLATFORM_BINS:
            assert all(isinstance(k, int) for k in r.params["n_bins"])
    assert seen == set(bm.KINDS)
    # everything a party sends to another party is sealed: frames to the platform and lenders carry
    # only sealed tags, apart from the dealer's own share rb
    for r in wire:
        if r.direction == "to_party" and r.payload and r.kind not in (bm.LENDER_IV,):
            tags = set(bm.unpack_frames(r.payload))
            assert tags <= {"xhat", "rb", "cuts"} | {f"{t}:{n}" for t in ("sketch", "share", "pair") for n in LENDERS}


def test_platform_features_need_two_lenders(split):
    ch, _ = _federation(split, lenders=["bank-a"])
    with pytest.raises(InvalidInput, match="at least 2 lenders"):
        run_binning(ch, ["bank-a"], PLATFORM)
    table = run_binning(ch, ["bank-a"], None)  # lender features alone are fine
    assert set(table.parties) == {bm.LENDERS_PARTY}
    ch.close()


def test_guard_merges_bins_one_lender_barely_fills():
    a = np.r_[np.arange(100.0), [500.0] * 30]
    b = np.r_[np.arange(100.0), [500.0] * 3]  # lender b has 3 rows in the top bin
    fine = NumericBinning("x", (50.0, 400.0))
    got, excluded = _guard(fine, [a, b], min_rows=20)
    assert got.cuts == (50.0,) and not excluded
    c = np.r_[np.arange(100.0), [np.nan] * 5]
    got, excluded = _guard(NumericBinning("x", (50.0,)), [np.r_[np.arange(100.0), [np.nan] * 40], c], 20)
    assert excluded and got.cuts == (50.0,)


def test_encoder_from_a_run_transforms_raw_values(split, run):
    parts, _, pk = split
    _, nodes, _, _ = run
    enc = woe_encoder(nodes[PLATFORM].detail("r1"))
    assert enc.features == list(pk)
    X = enc.transform(parts["bank-a"][2])
    assert X.shape == (len(parts["bank-a"][2]), len(pk)) and np.all(np.isfinite(X))
    x5 = nodes[PLATFORM].detail("r1")["x5"].optimal
    assert set(np.unique(X[:, list(pk).index("x5")])) <= set(x5.table.woe)


def test_frames_and_mask_seeds():
    frames = {"a": b"x" * 3, "share:bank-a": b"", "z": bytes(range(256))}
    assert bm.unpack_frames(b"".join(bm.pack_frames(frames))) == frames
    with pytest.raises(ProtocolError, match="truncated"):
        bm.unpack_frames(b"".join(bm.pack_frames(frames))[:-1])
    with pytest.raises(ProtocolError, match="'cuts' is missing"):
        bm.frame({}, "cuts", bm.LENDER_COUNTS)
    seed = bm.MaskSeed.generate()
    a, b = seed.stream("x", 1000), seed.stream("y", 1000)
    assert a.dtype == np.uint64 and np.array_equal(a, seed.stream("x", 1000)) and not np.array_equal(a, b)
    assert abs(float((a >> np.uint64(63)).mean()) - 0.5) < 0.1  # top bit uniform
    with pytest.raises(SecretLeakError):
        pickle.dumps(seed)
    assert "secret" in repr(seed)


def test_bad_party_input_is_a_typed_error_naming_the_party():
    feats = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    with pytest.raises(InvalidInput, match=r"lender 'bank-a' row 2: label 2 is not 0 or 1"):
        LenderBinning("bank-a", LenderData(feats, np.array([0, 1, 2]), {"x": "numeric"}), IDS["bank-a"])
    with pytest.raises(InvalidInput, match=r"lender 'bank-a': no column\(s\) \['age'\]"):
        LenderBinning("bank-a", LenderData(feats, np.array([0, 1, 0]), {"age": "numeric"}), IDS["bank-a"])
    with pytest.raises(InvalidInput, match=r"platform 'tiange': no column\(s\) \['age'\] .* lender 'bank-b'"):
        PlatformBinning("tiange", PlatformData({"bank-b": feats}, {"age": "numeric"}), IDS["tiange"])
    with pytest.raises(InvalidInput, match="identity of 'bank-b'"):
        LenderBinning("bank-a", LenderData(feats, np.array([0, 1, 0]), {"x": "numeric"}), IDS["bank-b"])


def test_a_substituted_run_key_is_refused(split):
    """A relaying coordinator that swaps a lender's run key (here: re-signed by another CA) is caught."""
    from fedcore.errors import PartyTaskError
    from fedcore.protocol.binning.coordinator import BinningSettings as _S

    ch, _ = _federation(split)
    real_submit = ch.submit
    forged = make_identities(["bank-b"])["bank-b"]

    def tamper(party, task):
        if task.kind == bm.KEYS:
            keys = dict(task.params["keys"])
            from fedcore.crypto.envelope import EnvelopePrivateKey

            keys["bank-b"] = forged.announcement(EnvelopePrivateKey.generate())
            task = type(task)(task.kind, {"keys": keys}, task.run_id, task.timeout_s, task.payload)
        return real_submit(party, task)

    ch.submit = tamper  # type: ignore[method-assign]
    with pytest.raises(PartyTaskError, match="permission_denied"):
        run_binning(ch, LENDERS, PLATFORM, _S())
    ch.close()
