"""Joint scoring with a hybrid tree model: each owner evaluates its own splits, the requester gets the
joint margin (equal to the model's central prediction); the coordinator and the platform see only masked
or sealed values (:mod:`fedcore.protocol.scoring.trees`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from fedcore.crypto.envelope import EnvelopePrivateKey
from fedcore.errors import PermissionDenied
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role
from fedcore.protocol.scoring.coordinator import ScoringCoordinator
from fedcore.protocol.scoring.messages import unpack_task_payload_full
from fedcore.protocol.scoring.party import ArrayContributions, ScoringParty
from fedcore.protocol.scoring.requester import LocalGateway, TreeRequester, sigmoid
from fedcore.protocol.scoring.trees import (
    REQUESTER,
    RING,
    ArrayTreeContributions,
    TreePlan,
    leaf_values,
    sealing_purpose,
    unpack_sealed_and,
    unpack_tree_input,
)
from fedcore.protocol.sealing import make_identities, open_for
from fedcore.protocol.tasks import HandlerRegistry
from models.gbdt import GBDTParams, train

LENDER = ("arrears", "income")
PLATFORM = ("spend", "active", "segment")


def _pseudo(i: int) -> bytes:
    return hashlib.sha256(f"p{i}".encode()).digest()[:16]


@pytest.fixture(scope="module")
def fed():
    rng = np.random.default_rng(0)
    n = 1200
    cols = {"arrears": rng.poisson(1.0, n).astype(float), "income": rng.lognormal(8, 0.4, n),
            "spend": rng.gamma(2.0, 1.0, n), "active": rng.integers(0, 30, n).astype(float),
            "segment": rng.integers(0, 5, n).astype(float)}  # fmt: skip
    cols["spend"][rng.random(n) < 0.1] = np.nan
    z = -1.0 + 0.8 * cols["arrears"] - 0.06 * cols["active"] + 0.5 * (cols["segment"] == 3)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    owners = {**dict.fromkeys(LENDER, "lenders"), **dict.fromkeys(PLATFORM, "tiange")}
    params = GBDTParams(n_trees=12, max_depth=3, max_bins=16, categorical=("segment",),
                        sticky_owners=("tiange",), first_tree_owners=("lenders",))  # fmt: skip
    model = train(cols, y, params, owners=owners, names=[*LENDER, *PLATFORM])
    ps = [_pseudo(i) for i in range(n)]
    known = np.arange(n) % 7 != 0  # the platform does not know (or has no consent for) every 7th person
    req, ch = _federation(model, cols, ps, known)
    yield model, cols, ps, known, req, ch
    ch.close()


def _federation(model, cols, ps, known):
    platform_src = ArrayTreeContributions.build(
        "m1", "3", [_shape(t) for t in model.trees], model.owners, model.tables["tiange"],
        [p for p, k in zip(ps, known, strict=True) if k], {f: cols[f][known] for f in PLATFORM},
    )  # fmt: skip
    ch = InMemoryChannel(record_wire=True)
    audit: list = []
    ids = make_identities(["tiange", "meili", "yixin"])
    ch.scoring_parties = {}  # the tests' handle on each party's handler
    for name, role, trees in (("tiange", Role.PLATFORM, platform_src), ("meili", Role.LENDER, None)):
        reg = HandlerRegistry()
        party = ScoringParty(ArrayContributions.build([], {}), _Audit(audit), trees=trees, identity=ids[name])
        party.register(reg)
        ch.scoring_parties[name] = party
        ch.add_party(name, role, reg)
    ch.add_party("yixin", Role.LENDER, HandlerRegistry())
    return TreeRequester(LocalGateway(ScoringCoordinator(ch), "yixin", ids["yixin"].ca_pem)), ch


class _Audit:
    def __init__(self, out: list) -> None:
        self.out = out

    def append(self, event, fields):
        self.out.append((event, dict(fields)))

    def append_many(self, event, many):
        for fields in many:
            self.append(event, fields)


def _shape(tree):
    from models.gbdt.tree import Tree

    d = tree.to_dict()
    return Tree.from_dict({**d, "value": [0.0] * tree.n_nodes})  # the platform holds no leaf value


def _mask(model, cols, rows):
    """The lender's feature columns for ``rows``."""
    return {f: cols[f][rows] for f in LENDER}


def _plan(model):
    return TreePlan.of(model.trees, model.owners, model.tables["lenders"], model.base_score)


def _score(fed, rows, version="3"):
    model, cols, ps, _, req, _ = fed
    packed = b"".join(ps[i] for i in rows)
    return req.query(packed, _plan(model), _mask(model, cols, rows), model_id="m1", model_version=version)


def test_the_joint_tree_score_equals_the_models_central_prediction(fed):
    model, cols, _, known, _, _ = fed
    rows = np.arange(0, 1200, 3)
    margin, resp = _score(fed, rows)
    assert resp.contributors == 1  # the other lender holds no platform split and adds nothing
    view = {f: v[rows].copy() for f, v in cols.items()}
    for f in PLATFORM:  # an applicant the platform does not know: its features are missing
        view[f][~known[rows]] = np.nan
    np.testing.assert_allclose(sigmoid(margin), model.predict_proba(view), atol=1e-6)
    assert (~known[rows]).any() and known[rows].any()


def test_a_version_mismatch_is_refused_naming_the_versions(fed):
    from fedcore.errors import PartyTaskError

    with pytest.raises(PartyTaskError, match="version"):
        _score(fed, np.array([0, 1]), version="2")


def test_an_unseen_category_at_scoring_is_treated_as_missing(fed):
    """The platform's categorical 'segment' holds a value never seen in training: the joint score is the
    model's with that value missing."""
    model, cols, ps, known, _, _ = fed
    rows = np.flatnonzero(known)[:20]
    changed = {**cols, "segment": cols["segment"].copy()}
    changed["segment"][rows] = 99.0
    req, ch = _federation(model, changed, ps, known)
    try:
        margin, _ = req.query(b"".join(ps[i] for i in rows), _plan(model), _mask(model, cols, rows), model_id="m1",
                              model_version="3")  # fmt: skip
    finally:
        ch.close()
    view = {f: v[rows] for f, v in cols.items()}
    expect = model.predict_proba({**view, "segment": np.full(len(rows), np.nan)})
    np.testing.assert_allclose(sigmoid(margin), expect, atol=1e-6)
    assert any(r.categorical and r.feature == "segment" for r in model.tables["tiange"].rules.values())


class _Recording:
    """The coordinator's side of the requester's link: records (and may rewrite) what crosses it."""

    def __init__(self, inner, rewrite=None) -> None:
        self.inner, self.rewrite, self.log = inner, rewrite, []
        self.ca_pem = inner.ca_pem

    def joint(self, request):
        resp = self.inner.joint(request)
        if self.rewrite is not None:
            resp = self.rewrite(request, resp)
        self.log.append((request, resp))
        return resp


def _with_gateway(req, gw):
    return TreeRequester(gw)  # a fresh requester (process): it asks for the platform's key first


def _bits(u: np.ndarray) -> float:
    """Mean of the bits of ring values (0.5 for uniform ones)."""
    return float(np.unpackbits(np.ascontiguousarray(u, dtype=RING).view(np.uint8)).mean())


def _fixed(plan, values):
    return np.round(np.asarray(values) * 2.0**plan.frac_bits).astype(np.int64).astype(RING)


def test_the_coordinator_sees_only_masked_tables_rotated_picks_and_sealed_bytes(fed):
    model, cols, ps, known, req, ch = fed
    rec = _Recording(req._gateway)
    requester = _with_gateway(req, rec)
    rows = np.arange(0, 600)
    ch.wire_log.clear()
    margin, _ = requester.query(b"".join(ps[i] for i in rows), _plan(model), _mask(model, cols, rows),
                                model_id="m1", model_version="3")  # fmt: skip
    plan = _plan(model)
    lay = plan.layout
    assert lay.platform == "tiange" and lay.n_regions > 0
    (ann_req, ann_resp), (score_req, score_resp) = rec.log  # the first request of a process asks for the key
    assert ann_req.pseudonyms == b"" and json.loads(ann_resp.ciphertext)["party"] == "tiange"
    spec = unpack_tree_input(score_req.tree_input)
    tables = np.frombuffer(spec.tables, dtype=RING).reshape(len(rows), lay.width)
    # the requester's tables are uniform: they show neither its leaf values (in fixed point) nor the zeros of
    # the regions it does not reach, beyond the chance hits of 32-bit uniform values
    clear = _fixed(plan, leaf_values(model.trees))
    assert np.isin(tables, clear).mean() < 1e-3 and (tables == 0).mean() < 1e-3
    assert abs(_bits(tables) - 0.5) < 0.01
    assert score_req.fingerprint == "" and score_req.public_context is None
    # the platform's picks, as the coordinator sees them, are rotated: they match its true picks no more
    # often than chance
    reply = next(r for r in ch.wire_log if r.direction == "from_party" and "layout" in r.params)
    sealed_y, raw = unpack_sealed_and(reply.payload)
    chat = np.frombuffer(raw, dtype=np.uint8).reshape(len(rows), lay.n_regions)
    _, true = fed_platform(fed).tree_picks("m1", np.array([ps[i] for i in rows], dtype="S16"))
    chance = float(np.mean(1.0 / lay.sizes))
    assert (chat < lay.sizes).all() and abs((chat == true).mean() - chance) < 0.05
    # y travels sealed (to the requester's fresh key, inside the input sealed to the platform): the
    # coordinator's z alone is uniform, not the margin
    assert len(sealed_y) > RING.itemsize * len(rows) and reply.params.keys() == {"n", "layout"}
    z = np.frombuffer(unpack_sealed_and(score_resp.ciphertext)[1], dtype=RING)
    assert abs(_bits(z) - 0.5) < 0.02
    expect = {f: v[rows].copy() for f, v in cols.items()}
    for f in PLATFORM:
        expect[f][~known[rows]] = np.nan
    # fixed point: 2^-frac_bits per leaf, one leaf per tree
    assert plan.frac_bits >= 24
    np.testing.assert_allclose(margin, model.margin(expect), atol=len(model.trees) * 2.0 ** -plan.frac_bits)


def fed_platform(fed):
    model, cols, ps, known, _, _ = fed
    return ArrayTreeContributions.build(
        "m1", "3", [_shape(t) for t in model.trees], model.owners, model.tables["tiange"],
        [p for p, k in zip(ps, known, strict=True) if k], {f: cols[f][known] for f in PLATFORM},
    )  # fmt: skip


def test_the_platform_receives_no_leaf_value_score_or_lender_mask(fed):
    model, _, ps, _, _, ch = fed
    rows = np.arange(40)
    ch.wire_log.clear()
    margin, _ = _score(fed, rows)
    to_platform = [r for r in ch.wire_log if r.direction == "to_party"]
    assert {r.party for r in to_platform} == {"tiange"}  # the other lender is not asked at all
    (task,) = to_platform
    assert set(task.params) == {"request_id", "model_id", "model_version", "queries", "n", "seed_s", "layout"}
    # the payload is the pseudonyms and the sealed seed and reply key: nothing that grows with the leaves
    _, sealed, pseudos = unpack_task_payload_full(task.payload)
    assert pseudos == b"".join(ps[i] for i in rows) and len(sealed) < 160
    plan = _plan(model)
    words = np.frombuffer(task.payload[: len(task.payload) // 4 * 4], dtype=RING)
    clear = np.concatenate([_fixed(plan, leaf_values(model.trees)), _fixed(plan, margin - plan.base_score)])
    assert not np.isin(words, clear[clear > 1 << 16]).any()  # (small values could be pseudonym bytes)
    # what the platform opens is a seed and a public key: 64 bytes, the same for any lender mask
    key = ch.scoring_parties["tiange"]._identity.envelope_key
    opened = open_for(key, sealed, sealing_purpose("m1", "3", _sha(pseudos)), REQUESTER, "tiange")
    assert len(opened) == 64


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_platform_key_swapped_by_the_coordinator_is_refused(fed):
    """The coordinator answers the key request with its own key (unsigned, signed under another CA, or a
    signed announcement with another key in it): the requester refuses to seal to it."""
    model, cols, ps, _, req, _ = fed
    stranger = make_identities(["tiange"])["tiange"]  # a certificate for the name, from another CA
    genuine = json.loads(req._gateway.joint(_announce_request()).ciphertext)
    forged = [
        {"party": "tiange", "public": stranger.announcement()["public"]},
        stranger.announcement(),
        {**genuine, "public": stranger.announcement()["public"]},
    ]
    for ann in forged:
        gw = _Recording(req._gateway, lambda r, resp, a=ann: _replace(resp, a) if not r.pseudonyms else resp)
        with pytest.raises(PermissionDenied):
            _with_gateway(req, gw).query(ps[0], _plan(model), _mask(model, cols, np.array([0])), model_id="m1",
                                         model_version="3")  # fmt: skip
        assert all(not r.pseudonyms for r, _ in gw.log)  # nothing was sealed to the forged key and sent


def test_a_sealed_input_that_does_not_open_is_refused_and_a_new_key_fetched(fed):
    """The platform changed its envelope key: its refusal makes the requester fetch the new key once."""
    model, cols, ps, _, req, ch = fed
    rows = np.arange(5)
    first, _ = _score(fed, rows)
    party = ch.scoring_parties["tiange"]
    old = party._identity
    party._identity = dataclasses.replace(old, envelope_key=EnvelopePrivateKey.generate())
    try:
        rec = _Recording(req._gateway)
        requester = TreeRequester(rec)
        requester._keys = dict(req._keys)  # the key it had: now stale
        again, _ = requester.query(b"".join(ps[i] for i in rows), _plan(model), _mask(model, cols, rows),
                                   model_id="m1", model_version="3")  # fmt: skip
    finally:
        party._identity = old
    np.testing.assert_array_equal(first, again)
    # the refused request never returned (so it is not in the log); then the key request, then the score
    assert [bool(r.pseudonyms) for r, _ in rec.log] == [False, True]


def _announce_request():
    from fedcore.protocol.scoring.messages import JointRequest
    from fedcore.protocol.scoring.trees import ANNOUNCE, TreeInput, pack_tree_input

    return JointRequest("m1", "3", ("tree",), b"", "", None, False, 30.0,
                        pack_tree_input(TreeInput(ANNOUNCE, "tiange", np.zeros(0, dtype=np.int64))))  # fmt: skip


def _replace(resp, ann):
    return dataclasses.replace(resp, ciphertext=json.dumps(ann).encode())


def test_numeric_splits_with_missing_values_score_through_threshold_ranks():
    """Both owners with numeric features only (their split codes come from threshold ranks, not from
    per-rule bits), missing values at both and ties at thresholds: the central margin."""
    rng = np.random.default_rng(3)
    n = 900
    cols = {"arrears": rng.poisson(1.0, n).astype(float), "income": rng.lognormal(8, 0.4, n),
            "spend": rng.gamma(2.0, 1.0, n).round(1), "active": rng.integers(0, 30, n).astype(float)}  # fmt: skip
    cols["spend"][rng.random(n) < 0.15] = np.nan
    cols["income"][rng.random(n) < 0.1] = np.nan
    y = (rng.random(n) < 1 / (1 + np.exp(-(-1.0 + 0.8 * cols["arrears"] - 0.06 * cols["active"])))).astype(float)
    owners = {"arrears": "lenders", "income": "lenders", "spend": "tiange", "active": "tiange"}
    params = GBDTParams(n_trees=10, max_depth=3, max_bins=16, sticky_owners=("tiange",), first_tree_owners=("lenders",))
    model = train(cols, y, params, owners=owners, names=list(cols))
    ps = [_pseudo(i) for i in range(n)]
    known = np.ones(n, dtype=bool)
    plat = {f: cols[f] for f in ("spend", "active")}
    src = ArrayTreeContributions.build("m1", "3", [_shape(t) for t in model.trees], model.owners,
                                       model.tables["tiange"], ps, plat)  # fmt: skip
    assert src.layout.n_regions and not any(r.categorical for r in model.tables["tiange"].rules.values())
    req, ch = _federation(model, {**cols, "segment": np.zeros(n)}, ps, known)
    ch.scoring_parties["tiange"]._trees = src  # the numeric-only platform
    try:
        rows = np.arange(0, n, 2)
        plan = _plan(model)
        margin, _ = req.query(b"".join(ps[i] for i in rows), plan, {f: cols[f][rows] for f in ("arrears", "income")},
                              model_id="m1", model_version="3")  # fmt: skip
    finally:
        ch.close()
    expect = model.margin({f: v[rows] for f, v in cols.items()})
    np.testing.assert_allclose(margin, expect, atol=len(model.trees) * 2.0 ** -plan.frac_bits)
