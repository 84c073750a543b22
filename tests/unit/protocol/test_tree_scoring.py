"""Joint scoring with a hybrid tree model: each owner evaluates its own splits, the requester gets the
joint margin (equal to the model's central prediction) and sees only masked slots."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fedcore.errors import PermissionDenied
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role
from fedcore.protocol.scoring.coordinator import ScoringCoordinator
from fedcore.protocol.scoring.party import ArrayContributions, ScoringParty
from fedcore.protocol.scoring.requester import LocalGateway, TreeRequester, sigmoid
from fedcore.protocol.scoring.trees import ArrayTreeContributions, TreePlan, leaf_values, unpack_tree_input
from fedcore.protocol.sealing import make_identities
from fedcore.protocol.tasks import HandlerRegistry
from fedcore.protocol.trees.messages import to_fixed
from models.gbdt import GBDTParams, train
from models.gbdt.tree import owner_directions, reachable_leaves

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
    for name, role, trees in (("tiange", Role.PLATFORM, platform_src), ("meili", Role.LENDER, None)):
        reg = HandlerRegistry()
        ScoringParty(ArrayContributions.build([], {}), _Audit(audit), trees=trees, identity=ids[name]).register(reg)
        ch.add_party(name, role, reg)
    ch.add_party("yixin", Role.LENDER, HandlerRegistry())
    return TreeRequester(LocalGateway(ScoringCoordinator(ch), "yixin", ids["yixin"].ca_pem)), ch


class _Audit:
    def __init__(self, out: list) -> None:
        self.out = out

    def append(self, event, fields):
        self.out.append((event, dict(fields)))


def _shape(tree):
    from models.gbdt.tree import Tree

    d = tree.to_dict()
    return Tree.from_dict({**d, "value": [0.0] * tree.n_nodes})  # the platform holds no leaf value


def _mask(model, cols, rows):
    bits = owner_directions(model.tables["lenders"], {f: cols[f][rows] for f in LENDER})
    return reachable_leaves(model.trees, model.owners, "lenders", bits)


def _plan(model):
    return TreePlan.of(model.trees, model.owners, "lenders", model.base_score)


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
