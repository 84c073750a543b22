"""Vertical (coordinated LR under CKKS) over the in-memory channel: quality on FATE's hetero split,
several lenders, what crosses the wire, a party dropping mid-epoch, resume."""

from __future__ import annotations

import csv
import json
import struct
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from fedcore.crypto import he
from fedcore.crypto.pki import CertificateAuthority
from fedcore.errors import FedcreditError, PartyUnavailable
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role
from fedcore.protocol.sealing import make_identities
from fedcore.protocol.tasks import HandlerRegistry
from fedcore.protocol.vertical.coordinator import VerticalConfig, run_vertical
from fedcore.protocol.vertical.messages import (
    BACKWARD,
    EVAL_LENDER,
    EVAL_PLATFORM,
    F_CKKS,
    F_F64,
    F_SEALED,
    F_U128,
    FORWARD,
    KINDS,
    RESIDUAL,
    parse_frames,
)
from fedcore.protocol.vertical.numerics import score_slices, split_rows
from fedcore.protocol.vertical.party import VerticalParty
from fedcore.protocol.vertical.session import Table
from models.metrics import auc, evaluate
from scripts.fate_data import fate_data_dir

FATE = fate_data_dir()

CA = CertificateAuthority.create()  # the federation's CA: binds the parties' session keys


@lru_cache(maxsize=1)
def fate_hetero() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids, y, X_guest 13 cols, X_host 10 cols), host rows matched to guest ids."""
    def read(name: str) -> tuple[np.ndarray, list[list[str]]]:
        with open(FATE / name) as fh:
            r = csv.reader(fh)
            next(r)
            rows = list(r)
        return np.array([int(x[0]) for x in rows]), rows

    gid, g = read("default_credit_hetero_guest.csv")
    hid, h = read("default_credit_hetero_host.csv")
    y = np.array([int(x[1]) for x in g], dtype=np.int8)
    xg = np.array([[float(v) for v in x[2:]] for x in g])
    xh = np.array([[float(v) for v in x[1:]] for x in h])
    order = np.argsort(hid)
    xh = xh[order][np.searchsorted(hid[order], gid)]
    return gid, y, xg, xh


class MemorySource:
    """A VerticalSource in memory: per PSI run id, this party's aligned table."""

    def __init__(self, tables: dict[str, Table]) -> None:
        self.tables = tables

    def vertical_table(self, psi_run, dataset, *, labels):
        return self.tables[psi_run]


def federation(sources: dict[str, MemorySource], platform: str, tmp: Path, record: bool = False,
               hooks=None) -> tuple[InMemoryChannel, dict[str, VerticalParty]]:
    ch = InMemoryChannel(record_wire=record)
    parties = {}
    for name, src in sources.items():
        reg = HandlerRegistry()
        vp = VerticalParty(name, src, tmp / name / "vertical", tmp / name / "models", metrics=evaluate,
                           identity=make_identities([name], CA)[name])
        vp.register(reg)
        if hooks and name in hooks:
            hooks[name](reg)
        parties[name] = vp
        ch.add_party(name, Role.PLATFORM if name == platform else Role.LENDER, reg)
    return ch, parties


def split_lenders(n_lenders: int, idx: np.ndarray, y, xg, xh, *, seed: int = 0):
    """Split the rows ``idx`` over lenders; returns sources for lenders + platform (one PSI run each)."""
    rng = np.random.default_rng(seed)
    parts = np.array_split(rng.permutation(idx), n_lenders)
    lenders = [f"lender{i}" for i in range(n_lenders)]
    srcs = {}
    plat = {}
    for name, rows in zip(lenders, parts, strict=True):
        run = f"psi-{name}"
        srcs[name] = MemorySource({run: Table(xg[rows], [f"g{j}" for j in range(xg.shape[1])], "loans", y[rows])})
        plat[run] = Table(xh[rows], [f"h{j}" for j in range(xh.shape[1])], "behaviour")
    srcs["tiange"] = MemorySource(plat)
    return lenders, srcs, {n: f"psi-{n}" for n in lenders}


def _holdout() -> tuple[np.ndarray, np.ndarray]:
    """FATE's own 20% hold-out: the ids of default_credit_homo_test.csv (6,000 of 30,000)."""
    ids = fate_hetero()[0]
    with open(FATE / "default_credit_homo_test.csv") as fh:
        rows = list(csv.reader(fh))[1:]
    test = np.isin(ids, np.array([int(r[0]) for r in rows]))
    return np.flatnonzero(~test), np.flatnonzero(test)


def _slices(tmp, names, run_id):
    return {n: json.loads((tmp / n / "models" / run_id / "slice.json").read_text()) for n in names}


def test_fate_hetero_two_party_reaches_centralized_quality(tmp_path):
    _ids, y, xg, xh = fate_hetero()
    train, test = _holdout()
    lenders, srcs, psi = split_lenders(1, train, y, xg, xh)
    ch, _ = federation(srcs, "tiange", tmp_path)
    res = run_vertical(ch, "fate2", lenders, "tiange", psi,
                       VerticalConfig(epochs=4, batch_size=2048, lr=0.05, val_fraction=0.1),
                       workdir=tmp_path / "coord")
    sl = _slices(tmp_path, [*lenders, "tiange"], "fate2")
    lender, plat = sl[lenders[0]], sl["tiange"]
    assert lender["kind"] == plat["kind"] == "joint-logistic"
    assert "intercept" in lender and "intercept" not in plat
    assert len(lender["weights"]) == 13 and len(plat["weights"]) == 10
    assert plat["features"] == [f"h{j}" for j in range(10)]
    z = score_slices([lender, plat], [xg[test], xh[test]])
    joint = auc(y[test], z)
    assert joint >= 0.725, joint  # centralized LR 0.730, guest only 0.667
    assert res.metrics[lenders[0]]["auc"] > 0.69
    assert res.parties["tiange"]["features"] == plat["features"]
    assert len(res.history) == res.epochs_run >= 1


def test_several_lenders_share_one_lender_slice(tmp_path):
    _ids, y, xg, xh = fate_hetero()
    train, test = _holdout()
    lenders, srcs, psi = split_lenders(3, train[:9000], y, xg, xh, seed=3)
    ch, _ = federation(srcs, "tiange", tmp_path)
    res = run_vertical(ch, "multi", lenders, "tiange", psi,
                       VerticalConfig(epochs=2, batch_size=1024, lr=0.08, val_fraction=0.1),
                       workdir=tmp_path / "coord")
    sl = _slices(tmp_path, [*lenders, "tiange"], "multi")
    w0 = np.array(sl[lenders[0]]["weights"])
    for n in lenders[1:]:  # every lender holds the same w_L, b and pooled scaler
        assert np.allclose(sl[n]["weights"], w0, atol=1e-6)
        assert sl[n]["intercept"] == pytest.approx(sl[lenders[0]]["intercept"], abs=1e-6)
        assert np.allclose(sl[n]["scaler"]["mean"], sl[lenders[0]]["scaler"]["mean"], atol=1e-6)
    pooled = xg[train[:9000]]
    assert np.allclose(sl[lenders[0]]["scaler"]["mean"], pooled.mean(0), atol=0.05)
    z = score_slices([sl[lenders[0]], sl["tiange"]], [xg[test], xh[test]])
    assert auc(y[test], z) > 0.70
    assert set(res.metrics) == set(lenders)


def _small(n_lenders: int, rows: int = 1200):
    _ids, y, xg, xh = fate_hetero()
    return split_lenders(n_lenders, np.arange(rows), y, xg, xh, seed=5)


def test_wire_carries_only_sealed_or_masked_values(tmp_path):
    """Asserted per message: every payload parses as frames; from a party, a CKKS frame (decryptable by
    the arbiter) decrypts only to masked values (median |v| > 1e6 although every true value is < 100),
    a float64 frame only ever goes *to* a party (masked sums and masked scores, also |v| > 1e6), a u128
    frame holds moments masked mod 2^128; a sealed frame does not parse as a CKKS vector. No float64 of a
    raw or standardized feature, a label, u_P, or a residual appears as 8 bytes in any payload, and
    params hold only counts, names, hashes, keys and the aggregate validation loss terms."""
    lenders, srcs, psi = _small(2)
    ch, _ = federation(srcs, "tiange", tmp_path, record=True)
    captured: dict[str, he.CkksSecretContext] = {}
    orig = he.CkksSecretContext.generate

    def spy(*a, **k):
        sk = orig(*a, **k)
        captured["sk"] = sk
        return sk

    he.CkksSecretContext.generate = spy  # type: ignore[method-assign]
    try:
        run_vertical(ch, "wire", lenders, "tiange", psi, VerticalConfig(epochs=1, batch_size=256, val_fraction=0.2),
                     workdir=tmp_path / "coord")
    finally:
        he.CkksSecretContext.generate = orig  # type: ignore[method-assign]
    sk = captured["sk"]
    forbidden: set[bytes] = set()
    for src in srcs.values():
        for t in src.tables.values():
            for v in np.asarray(t.X, dtype="<f8").ravel():
                if v != 0.0:
                    forbidden.add(struct.pack("<d", v))
    seen_kinds = set()
    for rec in ch.wire_log:
        seen_kinds.add(rec.kind)
        assert rec.kind in KINDS
        for key, val in rec.params.items():
            assert not isinstance(val, list | dict) or key in {"lenders", "psi_runs", "keys", "sealed_seed",
                                                                "train_rows", "rows", "features", "metrics",
                                                                "envelope_key"}
            if key == "envelope_key":  # a public key signed by the party's certificate, nothing else
                assert set(val) == {"party", "public", "signature", "cert"}
        if not rec.payload or (rec.kind == "vertical.setup" and rec.direction == "to_party"):
            continue
        for f in parse_frames(rec.payload):
            if f.type == F_CKKS:
                assert rec.direction == "from_party"
                vals = he.decrypt_vector(sk, he.EncryptedVector.from_bytes(sk, f.body))
                assert np.median(np.abs(vals)) > 1e6, (rec.kind, vals[:5])
            elif f.type == F_F64:
                assert rec.direction == "to_party"
                vals = np.frombuffer(f.body, dtype="<f8")
                assert np.median(np.abs(vals)) > 1e6, (rec.kind, vals[:5])
            elif f.type == F_SEALED:
                with pytest.raises(FedcreditError):
                    he.EncryptedVector.from_bytes(sk, f.body)
            else:
                assert f.type == F_U128
        data = rec.payload
        for i in range(0, len(data) - 7):
            assert data[i:i + 8] not in forbidden, rec.kind
    for kind in (FORWARD, RESIDUAL, BACKWARD, EVAL_LENDER, EVAL_PLATFORM):
        assert kind in seen_kinds
    # Validation: a lender sends the arbiter nothing it can open (only the sealed loss coefficients for
    # the platform); what the arbiter decrypts from the platform sums, per lender, to that lender's exact
    # validation log-loss (one number) and nothing more.
    replies = [{f.type for f in parse_frames(r.payload)} for r in ch.wire_log
               if r.kind == EVAL_LENDER and r.direction == "from_party" and r.payload]
    assert {F_SEALED} in replies  # per epoch: sealed loss coefficients only
    assert all(t in ({F_SEALED}, {F_CKKS}) for t in replies)  # final: [[z + m]], masked (checked above)
    ev = [r for r in ch.wire_log if r.kind == EVAL_PLATFORM and r.direction == "from_party" and r.payload]
    sums = [float(he.decrypt_vector(sk, he.EncryptedVector.from_bytes(sk, f.body)).sum())
            for f in parse_frames(ev[0].payload) if f.type == F_CKKS]
    sl = _slices(tmp_path, [*lenders, "tiange"], "wire")  # one epoch: the slices hold that epoch's weights
    for i, n in enumerate(lenders):
        t, tp = srcs[n].tables[psi[n]], srcs["tiange"].tables[psi[n]]
        _, val = split_rows(len(t.y), 0.2, 0, i)
        z = score_slices([sl[n], sl["tiange"]], [t.X[val], tp.X[val]])
        exact = float(np.sum(np.logaddexp(0.0, z) - t.y[val] * z))
        assert sums[i] == pytest.approx(exact, abs=1e-3 * len(val))


def test_party_dropping_mid_epoch_fails_the_run_naming_it_and_resume_continues(tmp_path):
    lenders, srcs, psi = _small(2, 1600)
    victim = lenders[1]
    calls = {"n": 0}
    ch_box = {}

    def hook(reg):
        inner = reg.get(RESIDUAL)

        def flaky(ctx, params):
            calls["n"] += 1
            if params["epoch"] == 1 and params["step"] == 1 and calls.get("drop", True):
                calls["drop"] = False
                threading.Thread(target=lambda: ch_box["ch"].disconnect(victim)).start()
                ctx.cancelled.wait(5)
            return inner(ctx, params)

        reg._handlers[RESIDUAL] = flaky

    ch, _ = federation(srcs, "tiange", tmp_path, hooks={victim: hook})
    ch_box["ch"] = ch
    cfg = VerticalConfig(epochs=3, batch_size=256, val_fraction=0.2, patience=5, timeout_s=30)
    with pytest.raises(PartyUnavailable) as err:
        run_vertical(ch, "drop", lenders, "tiange", psi, cfg, workdir=tmp_path / "coord")
    assert victim in str(err.value)
    ck = json.loads((tmp_path / "coord" / "drop" / "vertical.json").read_text())
    assert ck["epoch"] == 0 and len(ck["history"]) == 1
    ch.reconnect(victim)
    res = run_vertical(ch, "drop", [], "", {}, workdir=tmp_path / "coord", resume=True)
    assert [h["epoch"] for h in res.history] == [0, 1, 2]
    assert (tmp_path / victim / "models" / "drop" / "slice.json").exists()


def test_a_session_key_substituted_by_the_coordinator_is_refused(tmp_path):
    """The arbiter relays the parties' session keys; one it swaps for its own (to open the sealed [[u]],
    [[alpha]], [[beta]] it holds the CKKS key for) is refused by the peers with permission_denied."""
    import base64

    from fedcore.crypto.envelope import EnvelopePrivateKey
    from fedcore.errors import PartyTaskError

    mallory = EnvelopePrivateKey.generate()

    def swap_key(reg: HandlerRegistry) -> None:
        original = reg.get("vertical.setup")

        def setup(ctx, params):
            reply = original(ctx, params)
            forged = dict(reply.params)
            forged["envelope_key"] = {**dict(forged["envelope_key"]),
                                      "public": base64.b64encode(mallory.public_key().to_bytes()).decode()}
            return type(reply)(forged, reply.payload)

        reg._handlers["vertical.setup"] = setup

    lenders, srcs, psi = _small(2, rows=600)
    ch, _ = federation(srcs, "tiange", tmp_path, hooks={"tiange": swap_key})
    with pytest.raises(PartyTaskError) as err:
        run_vertical(ch, "swap", lenders, "tiange", psi, VerticalConfig(epochs=1, batch_size=256),
                     workdir=tmp_path / "coord")
    assert err.value.kind == "permission_denied"
