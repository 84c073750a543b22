"""Prefetched pre-approval scores (fedcore.protocol.scoring.groups, "standing requests"): after a lender
has scored a product kind, the coordinator makes that lender's joint request for the next viewer itself
and hands the sum over in the lender's offer task. The same offers as the lender's own call; the sum is
under the lender's own key only; never for a lender that did not score the kind or opted out; a stale
key, a failed part or the rate limit falls back to (or is charged like) the lender's own call."""

from __future__ import annotations

import json

import pytest

from fedcore.errors import ConfigError, ProtocolError
from fedcore.protocol.messages import Role
from fedcore.protocol.preapproval.messages import OFFER, Prefetched, Product
from fedcore.protocol.preapproval.party import PreapprovalLender
from fedcore.protocol.scoring.groups import Standing
from fedcore.protocol.scoring.messages import CONTRIBUTE, CONTRIBUTE_GROUP
from fedcore.protocol.tasks import HandlerRegistry
from party_node.audit import AuditLog
from party_node.preapproval import JointOfferSource
from party_node.pricing import parse_policy
from party_node.scoring import register_scoring_handlers
from tests.unit.realtime.test_grouped_scoring import CAR, KEY, LENDERS, fail_grouped_part_at_platform, freeze, phone

STANDING = {"model_id": "m1", "model_version": "1", "queries": ["score"], "fingerprint": "ab"}


def wire(fed, kind: str, direction: str = "to_party", since: int = 0) -> list:
    return [r for r in fed.channel.wire_log[since:] if r.kind == kind and r.direction == direction]


def score_records(fed, lender: str) -> list[dict]:
    lines = (fed.lenders[lender].home / "audit" / "scoring.log").read_text().splitlines()
    return [rec for rec in map(json.loads, lines) if rec["event"] == "score_request"]


def fingerprint(fed, lender: str) -> str:
    return fed.services[lender].requester.keys.for_values(3).fingerprint()  # one viewer, three queries


def test_the_next_preapproval_is_prefetched_with_the_same_offers_and_sums_under_each_lenders_key(fed):
    freeze(fed)  # a loaded machine cannot split the first, unprefetched request's scores
    fed.preapproval.preapprove(phone(10), CAR, LENDERS)  # each lender scores car loans once itself
    mark = len(fed.channel.wire_log)
    pre = {i: fed.preapproval.preapprove(phone(i), CAR, LENDERS).offers for i in (120, 210, 260)}
    offers = wire(fed, OFFER, since=mark)
    assert len(offers) == 9
    pseudos = {KEY.pseudonymize([phone(i)], "phone")[0] for i in pre}
    for r in offers:  # the lender's own sum only: under its key, for its model, no other lender named
        joint = r.params["joint"]
        assert joint["standing"] == {"model_id": "m1", "model_version": "1",
                                     "queries": ["score", "blacklist", "loans"],
                                     "fingerprint": fingerprint(fed, r.party)}
        assert joint["contributors"] == 3 and joint["missing"] == []
        assert r.payload[:16] in pseudos and len(r.payload) > 16  # the pseudonym, then the ciphertext
        text = json.dumps(r.params)
        assert not any(other in text or fingerprint(fed, other) in text for other in LENDERS if other != r.party)
    # the members got one grouped task each per pre-approval, parts as ungrouped tasks carry; no lender asked
    group = wire(fed, CONTRIBUTE_GROUP, since=mark)
    assert len(group) == 3 * 4 and not wire(fed, CONTRIBUTE, since=mark)
    for t in group:
        assert len(t.params["parts"]) == len(LENDERS) - (t.party in LENDERS)
        for part in t.params["parts"]:
            assert set(part) == {"request_id", "model_id", "model_version", "queries", "n", "fingerprint"}
    for lender in LENDERS:  # audited at the lender as its score request, marked prefetched
        recs = score_records(fed, lender)
        assert [r.get("prefetched", False) for r in recs] == [False, True, True, True]
        assert all(r["outcome"] == "ok" and r["contributors"] == 3 for r in recs)
    fed.coordinator._scores = None  # the lenders' own calls give the same offers
    for i, want in pre.items():
        assert fed.preapproval.preapprove(phone(i), CAR, LENDERS).offers == want
    assert sum(1 for o in pre.values() for _ in o) >= 3


def test_no_sum_for_a_lender_that_never_scored_the_kind_or_does_not_offer_it(fed):
    freeze(fed)
    fed.preapproval.preapprove(phone(10), CAR, ["lender_a"])  # only lender_a has scored car loans
    mark = len(fed.channel.wire_log)
    fed.preapproval.preapprove(phone(120), CAR, LENDERS)
    joint = {r.party: "joint" in r.params for r in wire(fed, OFFER, since=mark)}
    assert joint == {"lender_a": True, "lender_b": False, "lender_c": False}
    # a kind no lender offers: declined unscored, no standing request, never a sum
    bike = Product("motorbike", 20_000.0, 24)
    for i in (30, 40):
        mark = len(fed.channel.wire_log)
        assert fed.preapproval.preapprove(phone(i), bike, LENDERS).offers == ()
        assert not any("joint" in r.params for r in wire(fed, OFFER, since=mark))
        assert not any("standing" in r.params for r in wire(fed, OFFER, "from_party", since=mark))
        assert not wire(fed, CONTRIBUTE_GROUP, since=mark)


def test_a_lender_that_opts_out_ends_its_standing_request(fed):
    freeze(fed)
    fed.preapproval.preapprove(phone(10), CAR, LENDERS)
    # lender_c's risk team sets prefetch = false: its node restarts with the new policy
    reg = HandlerRegistry()
    register_scoring_handlers(reg, fed.lenders["lender_c"].store, fed.lenders["lender_c"].home)
    policy = parse_policy({**fed.policy, "policy": {**fed.policy["policy"], "prefetch": False}})
    audit = AuditLog.for_home(fed.lenders["lender_c"].home)
    lender = PreapprovalLender(JointOfferSource(fed.services["lender_c"], policy), audit, fed.identities["lender_c"])
    lender.register(reg)
    fed.channel.disconnect("lender_c")
    fed.channel.add_party("lender_c", Role.LENDER, reg)
    got = []
    for i in (120, 210, 260):
        mark = len(fed.channel.wire_log)
        got.append(fed.preapproval.preapprove(phone(i), CAR, LENDERS))
        joint = {r.party: "joint" in r.params for r in wire(fed, OFFER, since=mark)}
        # the first still carries the sum made from the old standing request (unused); the reply ends it
        assert joint == {"lender_a": True, "lender_b": True, "lender_c": i == 120}
    recs = score_records(fed, "lender_c")
    assert [r.get("prefetched", False) for r in recs] == [False, False, False, False]
    assert any(o.lender == "lender_c" for r in got for o in r.offers)  # it still offers, from its own calls


def test_a_rotated_key_falls_back_to_the_lenders_own_call_and_renews_the_standing_request(fed):
    freeze(fed)
    fed.preapproval.preapprove(phone(10), CAR, LENDERS)
    old = fingerprint(fed, "lender_a")
    fed.services["lender_a"].requester.keys._mask = None  # the lender's key rotates
    new = fingerprint(fed, "lender_a")
    assert new != old
    mark = len(fed.channel.wire_log)
    first = fed.preapproval.preapprove(phone(120), CAR, LENDERS)
    sent = {r.party: r.params["joint"]["standing"]["fingerprint"] for r in wire(fed, OFFER, since=mark)}
    assert sent["lender_a"] == old  # made under the old key: the lender cannot use it
    second = fed.preapproval.preapprove(phone(120), CAR, LENDERS)
    recs = score_records(fed, "lender_a")
    assert [r.get("prefetched", False) for r in recs] == [False, False, True]
    assert first.offers == second.offers


def test_a_prefetched_part_that_fails_falls_back_to_the_lenders_own_call(fed):
    freeze(fed)
    fed.preapproval.preapprove(phone(10), CAR, LENDERS)
    inner = fail_grouped_part_at_platform(fed, "lender_b")  # the platform fails lender_b's part
    fed.preapproval.preapprove(phone(20), CAR, LENDERS)  # the new platform caches the lenders' contexts
    mark = len(fed.channel.wire_log)
    result = fed.preapproval.preapprove(phone(120), CAR, LENDERS)
    joint = {r.party: "joint" in r.params for r in wire(fed, OFFER, since=mark)}
    assert joint == {"lender_a": True, "lender_b": False, "lender_c": True}
    assert len(wire(fed, CONTRIBUTE, since=mark)) == 3  # lender_b's own call, to each other member
    assert score_records(fed, "lender_b")[-1].get("prefetched", False) is False
    fed.coordinator._scores = None
    fed.channel.disconnect("platform")
    fed.channel.add_party("platform", Role.PLATFORM, inner)
    assert fed.preapproval.preapprove(phone(120), CAR, LENDERS).offers == result.offers


def test_a_prefetch_is_charged_to_the_lenders_rate_limit(fed):
    freeze(fed)
    scores = fed.coordinator._scores
    scores.rate_per_minute, scores._clock = 2, lambda: 0.0  # two applicants, never refilled
    fed.preapproval.preapprove(phone(10), CAR, LENDERS)  # each lender's own call: one left
    second = fed.preapproval.preapprove(phone(120), CAR, LENDERS)  # prefetched: none left
    assert [r.get("prefetched", False) for r in score_records(fed, "lender_a")] == [False, True]
    assert second.offers
    mark = len(fed.channel.wire_log)
    third = fed.preapproval.preapprove(phone(210), CAR, LENDERS)
    assert not any("joint" in r.params for r in wire(fed, OFFER, since=mark))  # over the limit: not made
    assert third.offers == ()  # and the lenders' own calls are refused too
    assert score_records(fed, "lender_a")[-1]["outcome"] == "unavailable"  # RateLimited is Unavailable


def test_prefetch_in_the_pricing_policy_must_be_true_or_false(fed):
    with pytest.raises(ConfigError, match=r"policy\.prefetch must be true or false"):
        parse_policy({**fed.policy, "policy": {"prefetch": "yes"}})
    assert parse_policy(fed.policy).prefetch is True


def test_a_lender_offline_after_its_first_score_is_left_out_and_missing_from_the_others_sums(fed):
    freeze(fed)
    fed.preapproval.preapprove(phone(10), CAR, LENDERS)
    fed.channel.disconnect("lender_c")
    mark = len(fed.channel.wire_log)
    result = fed.preapproval.preapprove(phone(120), CAR, LENDERS)
    sent = {r.party: r.params["joint"] for r in wire(fed, OFFER, since=mark)}
    assert set(sent) == {"lender_a", "lender_b"}  # no task, and no part, for the offline lender
    for joint in sent.values():  # the platform and the other asked lender contributed
        assert joint["contributors"] == 2 and joint["missing"] == ["lender_c"]
    assert {o.lender for o in result.offers} <= {"lender_a", "lender_b"}
    assert all(len(t.params["parts"]) <= 2 for t in wire(fed, CONTRIBUTE_GROUP, since=mark))


@pytest.mark.parametrize("bad", [
    None, [], {"model_id": "m1"},
    {"model_id": "m1", "model_version": "1", "queries": "score", "fingerprint": "ab"},
    {"model_id": "m1", "model_version": "1", "queries": ["rating"], "fingerprint": "ab"},
    {"model_id": "m1", "model_version": "1", "queries": ["tree"], "fingerprint": "ab"},
    {"model_id": "m1", "model_version": "1", "queries": ["score"], "fingerprint": ""},
    {"model_id": "m1", "model_version": "1", "queries": ["score"], "fingerprint": "f" * 2000},
])
def test_a_malformed_standing_request_is_refused_and_ends_the_old_one(fed, bad):
    with pytest.raises(ProtocolError, match="lender_a"):
        Standing.from_params(bad, "lender_a")
    freeze(fed)
    fed.preapproval.preapprove(phone(10), CAR, ["lender_a"])
    assert fed.coordinator._standing_for(["lender_a"], "car_loan")
    fed.coordinator._keep_standing("lender_a", "car_loan", {"decision": "decline", "standing": bad})
    assert not fed.coordinator._standing_for(["lender_a"], "car_loan")  # never prefetched from garbage


@pytest.mark.parametrize(("joint", "ciphertext", "match"), [
    ("x", b"", "not an object"),
    ({"standing": {"model_id": "m1"}}, b"", "malformed standing"),
    ({"standing": STANDING, "contributors": -1, "missing": []}, b"", "contributors"),
    ({"standing": STANDING, "contributors": 2, "missing": "lender_b"}, b"c", "contributors"),
    ({"standing": STANDING, "contributors": 2, "missing": []}, b"", "contributor count"),
    ({"standing": STANDING, "contributors": 0, "missing": []}, b"c", "contributor count"),
])
def test_a_malformed_prefetched_sum_fails_the_offer_task_with_a_protocol_error(joint, ciphertext, match):
    with pytest.raises(ProtocolError, match=match):
        Prefetched.from_task(joint, ciphertext)
