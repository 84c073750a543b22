"""Pre-approval end to end in one process with real stores and real joint scoring: offers follow each
lender's pricing of the joint PD; the platform sees offers only; each lender sees only its request;
no consent, an offline lender, a lender past the budget; audit at every party."""

from __future__ import annotations

import base64
import hashlib
import json
import threading

import numpy as np
import pytest

from fedcore.errors import InvalidInput, PermissionDenied
from fedcore.protocol.messages import Role, TaskReply
from fedcore.protocol.preapproval.messages import (
    OFFER,
    SEALED_TERMS_BYTES,
    PreapprovalRequest,
    Product,
    Quote,
    padded_terms,
)
from fedcore.protocol.scoring.requester import sigmoid
from fedcore.protocol.tasks import HandlerRegistry
from party_node.pricing import parse_policy
from party_node.pseudonym import PseudonymKey
from party_node.scoring import register_scoring_handlers

KEY = PseudonymKey(b"r" * 32)  # the fixture federation's key


def phone(i: int) -> str:
    return f"139{i:08d}"

CAR = Product("car_loan", 150_000.0, 36)


def expected_pd(fed, lender: str, i: int) -> float:
    z = float(fed.lenders[lender].slice.intercept)
    for p in (fed.platform, *fed.lenders.values()):
        x = p.x.get(phone(i))
        if x is not None:
            z += float(p.slice.partial_logit(x[None, :])[0])
    return float(sigmoid(np.array([z]))[0])


def audit_events(party) -> list[dict]:
    path = party.home / "audit" / "scoring.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_offers_follow_each_lenders_pricing_of_the_joint_pd(fed):
    policy = parse_policy(fed.policy)
    checked = 0
    for i in (10, 120, 210, 260):  # known to different subsets of lenders; all consented (even)
        result = fed.preapproval.preapprove(phone(i), CAR, ["lender_a", "lender_b", "lender_c"])
        got = {o.lender: o for o in result.offers}
        for lender in fed.lenders:
            want = policy.decide(CAR, expected_pd(fed, lender, i), 0, 0)
            if want is None:
                assert lender not in got
            else:
                o = got[lender]
                assert (o.amount, o.rate, o.term_months, o.valid_s) == (want.amount, want.rate, 36, 1200)
                checked += 1
    assert checked >= 3  # the fixture's data gives offers at several lenders


def test_a_viewer_unknown_to_a_lender_scores_on_the_others_data(fed):
    i = 260  # not in lender_a's store; on the platform and at lender_b, lender_c
    assert fed.lenders["lender_a"].x.get(phone(i)) is None
    pd_a = expected_pd(fed, "lender_a", i)
    no_platform = float(sigmoid(np.array([fed.lenders["lender_a"].slice.intercept]))[0])
    assert abs(pd_a - no_platform) > 1e-3  # the others' data moved the PD
    result = fed.preapproval.preapprove(phone(i), CAR, ["lender_a"])
    want = parse_policy(fed.policy).decide(CAR, pd_a, 0, 0)
    assert [o.rate for o in result.offers] == ([want.rate] if want else [])


def test_platform_view_holds_offers_only_and_each_lender_sees_only_its_request(fed):
    result = fed.preapproval.preapprove(phone(10), CAR, ["lender_a", "lender_b", "lender_c"])
    view = json.dumps(result.to_dict())
    for word in ("prob", "pd", "points", "score", "reason", "decline", "logit", "blacklist"):
        assert word not in view.lower()
    for o in result.to_dict()["offers"]:
        assert set(o) == {"lender", "product", "amount", "rate", "term_months", "valid_s"}
    pseudo = KEY.pseudonymize(["13900000010"], "phone")[0]
    to_lenders = [r for r in fed.channel.wire_log if r.kind == OFFER and r.direction == "to_party"]
    assert sorted(r.party for r in to_lenders) == ["lender_a", "lender_b", "lender_c"]
    for r in to_lenders:
        assert r.payload == pseudo  # the pseudonym only, never the raw id
        text = json.dumps(r.params)
        assert "13900000010" not in text
        assert not any(other in text for other in fed.lenders if other != r.party)
    replies = [r for r in fed.channel.wire_log if r.kind == OFFER and r.direction == "from_party"]
    for r in replies:  # offers sealed to the platform: a decision and a sealed envelope, no terms
        assert set(r.params) <= {"decision", "sealed", "standing"}
        # for the coordinator only: the request the lender would make next time (what its scoring call showed)
        fp = fed.services[r.party].requester.keys.for_values(3).fingerprint()
        assert r.params["standing"] == {"model_id": "m1", "model_version": "1",
                                        "queries": ["score", "blacklist", "loans"], "fingerprint": fp}


def test_the_coordinator_relays_offers_sealed_to_the_platform_and_sees_no_terms(fed):
    seen = []
    gateway = fed.preapproval.gateway
    real = gateway.preapprove
    gateway.preapprove = lambda req: seen.append(real(req)) or seen[-1]  # what the coordinator returns
    result = fed.preapproval.preapprove(phone(10), CAR, ["lender_a", "lender_b", "lender_c"])
    assert result.offers  # the platform opened them
    at_c = seen[0]
    assert at_c.offers == () and {s.lender for s in at_c.sealed} == {o.lender for o in result.offers}
    terms = [f"{o.amount:g}" for o in result.offers] + [str(o.rate) for o in result.offers]
    replies = [r for r in fed.channel.wire_log if r.kind == OFFER and r.direction == "from_party"]
    assert replies and all(r.params["decision"] in ("offer", "decline") for r in replies)
    for r in replies:
        text = json.dumps(r.params)
        assert not any(t in text for t in terms) and "amount" not in text and "rate" not in text
    # the sealed terms' size tells the coordinator nothing: every ciphertext has the same length
    sizes = {len(base64.b64decode(r.params["sealed"]["ciphertext"])) for r in replies if "sealed" in r.params}
    assert len(sizes) == 1
    # what the coordinator was asked to relay: the platform's signed key, which it cannot open with
    asks = [r for r in fed.channel.wire_log if r.kind == OFFER and r.direction == "to_party"]
    assert all(r.params["platform"] == "platform" and r.params["announcement"]["party"] == "platform" for r in asks)


def test_sealed_terms_have_one_size_whatever_the_amount_and_rate():
    short, long = Quote(5000.0, 0.05, 6, 60), Quote(123456.78901234567, 0.07250000000000001, 360, 86400)
    assert len(padded_terms(short)) == len(padded_terms(long)) == SEALED_TERMS_BYTES
    assert json.loads(padded_terms(long)) == long.to_params()  # the padding is JSON whitespace


def test_a_sealed_offer_opens_only_for_its_request_at_the_platform(fed):
    from fedcore.protocol.preapproval.messages import PreapprovalResult

    gateway = fed.preapproval.gateway
    real = gateway.preapprove
    first = real(PreapprovalRequest(KEY.pseudonymize([phone(10)], "phone")[0], CAR, ("lender_a", "lender_b"),
                                    30_000, fed.identities["platform"].announcement()))
    assert first.sealed
    # a coordinator replaying those sealed offers into another request, or swapping their senders
    replayed = PreapprovalResult("0" * 16, (), first.sealed)
    swapped = PreapprovalResult(first.request_id, (), tuple(type(s)("lender_c", s.sealed) for s in first.sealed))
    for fake in (replayed, swapped):
        gateway.preapprove = lambda req, fake=fake: fake
        assert fed.preapproval.preapprove(phone(10), CAR, ["lender_a", "lender_b"]).offers == ()
    events = [e for e in audit_events(fed.platform) if e["event"] == "preapproval_request"]
    assert events[-1]["unopened"] == ["lender_c"] * len(first.sealed)


def test_viewer_without_consent_is_refused_before_anything_leaves(fed):
    with pytest.raises(PermissionDenied, match="preapproval"):
        fed.preapproval.preapprove(phone(11), CAR, ["lender_a", "lender_b"])  # odd: no consent
    with pytest.raises(PermissionDenied):
        fed.preapproval.preapprove(phone(9999), CAR, ["lender_a"])  # unknown to the platform
    assert not [r for r in fed.channel.wire_log if r.kind == OFFER]
    events = [e for e in audit_events(fed.platform) if e["event"] == "preapproval_request"]
    assert [e["outcome"] for e in events] == ["no_consent", "no_consent"]


def test_offline_lender_is_left_out(fed):
    fed.channel.disconnect("lender_c")
    result = fed.preapproval.preapprove(phone(210), CAR, ["lender_a", "lender_b", "lender_c"])
    assert "lender_c" not in {o.lender for o in result.offers}
    assert {o.lender for o in result.offers} <= {"lender_a", "lender_b"}
    assert result.offers  # the others still answered (210 scores in band at one of them at least)


def test_lender_past_the_budget_is_left_out_not_waited_for(fed):
    release = threading.Event()
    started = threading.Event()

    def slow(ctx, params):
        started.set()
        release.wait(60)
        return TaskReply({"decision": "offer", "amount": 1.0, "rate": 0.01, "term_months": 36, "valid_s": 60})

    reg = HandlerRegistry()
    reg.register(OFFER, slow)
    c = fed.lenders["lender_c"]  # it contributes to the others' joint scores like any member
    register_scoring_handlers(reg, c.store, c.home)
    fed.channel.add_party("slowpoke", Role.LENDER, reg)
    try:
        result = fed.preapproval.preapprove(phone(10), CAR, ["lender_a", "slowpoke"], budget_ms=10_000)
        assert started.is_set() and not release.is_set()  # returned while the slow lender still worked
        assert "slowpoke" not in {o.lender for o in result.offers}
        assert "lender_a" in {o.lender for o in result.offers}
    finally:
        release.set()


def test_blacklisted_viewer_gets_no_offer_from_lenders_that_decline_on_fraud(fed):
    result = fed.preapproval.preapprove(phone(150), CAR, ["lender_a", "lender_c"])  # on lender_b's fraud list
    assert result.offers == ()


def test_every_party_audits_its_step(fed):
    result = fed.preapproval.preapprove(phone(120), CAR, ["lender_a", "lender_b"])
    pseudo_hash = hashlib.sha256(KEY.pseudonymize(["13900000120"], "phone")[0]).hexdigest()
    plat = [e for e in audit_events(fed.platform) if e["event"] == "preapproval_request"]
    assert plat[-1]["request_id"] == result.request_id and plat[-1]["outcome"] == "ok"
    assert any(pseudo_hash in json.dumps(e) for e in plat)
    assert any(e["event"] == "score_contribution" for e in audit_events(fed.platform))
    for name in ("lender_a", "lender_b"):
        ev = audit_events(fed.lenders[name])
        offers = [e for e in ev if e["event"] == "preapproval_offer"]
        assert offers and pseudo_hash in json.dumps(offers[-1])
        assert any(e["event"] == "score_request" and "preapproval" in json.dumps(e) for e in ev)
    assert not any(e["event"] == "preapproval_offer" for e in audit_events(fed.lenders["lender_c"]))


def test_bad_requests_are_refused_with_the_field_named(fed):
    with pytest.raises(InvalidInput, match=r"product\.amount"):
        Product("car_loan", -5.0)
    with pytest.raises(InvalidInput, match="not an admitted lender"):
        fed.preapproval.preapprove(phone(10), CAR, ["lender_a", "nobody"])
    with pytest.raises(InvalidInput, match="lenders"):
        fed.preapproval.preapprove(phone(10), CAR, [])
    with pytest.raises(PermissionDenied, match="platform"):
        fed.coordinator.request("lender_a", PreapprovalRequest(b"x" * 16, CAR, ("lender_b",)))
    with pytest.raises(InvalidInput, match="budget_ms"):
        PreapprovalRequest(b"x" * 16, CAR, ("lender_b",), budget_ms=5)
