"""A pre-approval's joint scores grouped into one task per member (fedcore.protocol.scoring.groups): the
same offers as ungrouped scoring, one task per member holding no part of its own request and no lender's
name, per-part failures kept to their part, and a group never waits for a lender that will not score."""

from __future__ import annotations

import json
import threading

import pytest

from fedcore.crypto.he import CkksSecretContext
from fedcore.errors import ProtocolError
from fedcore.protocol.messages import Role, TaskReply
from fedcore.protocol.preapproval.messages import OFFER, Product
from fedcore.protocol.scoring.groups import Part, ScoreGroups
from fedcore.protocol.scoring.messages import (
    CONTRIBUTE,
    CONTRIBUTE_GROUP,
    SCORING_CKKS,
    JointRequest,
    pack_group_payload,
    unpack_group_payload,
)
from fedcore.protocol.tasks import HandlerRegistry
from party_node.pseudonym import PseudonymKey
from party_node.scoring import register_scoring_handlers

KEY = PseudonymKey(b"r" * 32)
CAR = Product("car_loan", 150_000.0, 36)
LENDERS = ["lender_a", "lender_b", "lender_c"]


def phone(i: int) -> str:
    return f"139{i:08d}"


def freeze(fed) -> ScoreGroups:
    """Groups whose window never ends (a frozen clock): they leave only when every asked lender joined
    or withdrew, so that a loaded machine cannot make a test's lenders miss their group."""
    frozen = ScoreGroups(clock=lambda: 0.0)
    fed.coordinator._groups = frozen
    for svc in fed.services.values():
        svc.requester._gateway.coordinator._groups = frozen  # type: ignore[attr-defined]
    fed.groups = frozen
    return frozen


def fail_grouped_part_at_platform(fed, lender: str) -> HandlerRegistry:
    """Restart the platform so that it answers ``lender``'s part of every grouped task with an error (it
    names a model version the platform lacks); its ungrouped tasks stay honest. Returns the honest
    handlers."""
    fp = fed.services[lender].requester.keys.for_values(3).fingerprint()  # one viewer, three queries
    inner = HandlerRegistry()
    register_scoring_handlers(inner, fed.platform.store, fed.platform.home)

    def tamper(ctx, params):
        parts = [dict(p, model_version="9") if p["fingerprint"] == fp else p for p in params["parts"]]
        return inner.get(CONTRIBUTE_GROUP)(ctx, {**params, "parts": parts})

    reg = HandlerRegistry()
    reg.register(CONTRIBUTE, inner.get(CONTRIBUTE))
    reg.register(CONTRIBUTE_GROUP, tamper)
    fed.channel.disconnect("platform")
    fed.channel.add_party("platform", Role.PLATFORM, reg)
    return inner


def tasks(fed, kind: str) -> list:
    return [r for r in fed.channel.wire_log if r.kind == kind and r.direction == "to_party"]


def test_grouped_offers_equal_ungrouped_offers_with_one_task_per_member(fed):
    freeze(fed)
    grouped = {i: fed.preapproval.preapprove(phone(i), CAR, LENDERS).offers for i in (10, 120, 210, 260)}
    group_tasks = tasks(fed, CONTRIBUTE_GROUP)
    assert not tasks(fed, CONTRIBUTE)  # every contribution went grouped
    assert len(group_tasks) == 4 * 4  # four requests x (platform + three lenders), not 4 x 3 x 3
    for t in group_tasks:
        parts = t.params["parts"]
        asked_by = len(LENDERS) - (t.party in LENDERS)  # a lender gets no part of its own request
        assert len(parts) == asked_by
        for part in parts:
            assert set(part) == {"request_id", "model_id", "model_version", "queries", "n", "fingerprint"}
        assert not any(name in repr(t.params) for name in LENDERS)  # no part names its lender
    # the same federation without grouping (nor prefetch, which groups too) gives the same offers
    fed.coordinator._groups = None
    fed.coordinator._scores = None
    for i, offers in grouped.items():
        assert fed.preapproval.preapprove(phone(i), CAR, LENDERS).offers == offers
    assert len(tasks(fed, CONTRIBUTE)) == 4 * 3 * 3


def test_every_part_is_audited_at_the_member_as_its_own_request(fed):
    freeze(fed)
    fed.preapproval.preapprove(phone(120), CAR, LENDERS)
    ids = {p["request_id"] for t in tasks(fed, CONTRIBUTE_GROUP) if t.party == "platform" for p in t.params["parts"]}
    log = (fed.platform.home / "audit" / "scoring.log").read_text().splitlines()
    audited = {json.loads(line)["request_id"] for line in log if '"score_contribution"' in line}
    assert len(ids) == 3 and ids <= audited


def test_a_part_that_fails_at_a_member_fails_only_its_lenders_score(fed):
    freeze(fed)
    fed.coordinator._scores = None  # the lenders' own grouped calls (a failed prefetch falls back: test_prefetch)
    ungrouped_offers = {}
    fed.coordinator._groups = None
    for o in fed.preapproval.preapprove(phone(120), CAR, LENDERS).offers:
        ungrouped_offers[o.lender] = o
    fed.coordinator._groups = fed.groups
    fail_grouped_part_at_platform(fed, "lender_b")
    fed.preapproval.preapprove(phone(10), CAR, LENDERS)  # the new platform caches the lenders' contexts
    result = fed.preapproval.preapprove(phone(120), CAR, LENDERS)
    replies = [r for r in fed.channel.wire_log if r.kind == CONTRIBUTE_GROUP and r.direction == "from_party"
               and r.party == "platform"]
    assert sorted(replies[-1].params["outcomes"]) == ["invalid_input", "ok", "ok"]
    got = {o.lender: o for o in result.offers}
    assert "lender_b" not in got  # its score failed: no offer, as with an ungrouped failure
    assert {k: v for k, v in ungrouped_offers.items() if k != "lender_b"} == got
    assert got  # the fixture's data gives at least one of lender_a, lender_c an offer for 120


def test_a_member_that_lost_its_contexts_gets_its_part_again_alone(fed):
    freeze(fed)
    fed.preapproval.preapprove(phone(10), CAR, LENDERS)  # every member caches every lender's context
    fed.channel.disconnect("platform")
    reg = HandlerRegistry()
    register_scoring_handlers(reg, fed.platform.store, fed.platform.home)  # a restarted platform: empty cache
    fed.channel.add_party("platform", Role.PLATFORM, reg)
    before = len(tasks(fed, CONTRIBUTE))
    again = fed.preapproval.preapprove(phone(10), CAR, LENDERS)
    assert len(tasks(fed, CONTRIBUTE)) - before == 3  # each lender's part resent alone, with its context
    fed.coordinator._groups = None
    assert fed.preapproval.preapprove(phone(10), CAR, LENDERS).offers == again.offers


def test_a_lender_that_ends_without_scoring_releases_the_group(fed):
    freeze(fed)  # the group's window never ends, so only the withdrawal can release the others
    reg = HandlerRegistry()
    reg.register(OFFER, lambda ctx, params: TaskReply({"decision": "decline"}))  # does not offer: no score
    c = fed.lenders["lender_c"]
    register_scoring_handlers(reg, c.store, c.home)
    fed.channel.add_party("picky", Role.LENDER, reg)
    result = fed.preapproval.preapprove(phone(120), CAR, ["lender_a", "lender_b", "picky"], budget_ms=30_000)
    assert "picky" not in {o.lender for o in result.offers}
    group_tasks = tasks(fed, CONTRIBUTE_GROUP)
    assert group_tasks and all(len(t.params["parts"]) <= 2 for t in group_tasks)


def _part(requester: str, pseudonyms: bytes = b"p" * 16) -> Part:
    key = CkksSecretContext.generate(SCORING_CKKS)
    pub = key.public_context()
    req = JointRequest("m1", "1", ("score",), pseudonyms, pub.fingerprint(), None, True, 10.0, group="g")
    return Part(requester, req, pub, {"request_id": requester}, 0.0)


def test_groups_admit_only_expected_lenders_with_the_same_pseudonyms():
    now = [0.0]
    groups = ScoreGroups(clock=lambda: now[0])
    groups.expect("g", ["a", "b", "c"], window_s=1.0)
    assert groups.join("g", _part("x")) == (False, None)  # not asked in this pre-approval
    assert groups.join("other", _part("a")) == (False, None)  # no such group
    out: dict[str, tuple] = {}
    t = threading.Thread(target=lambda: out.setdefault("a", groups.join("g", _part("a"))))
    t.start()
    while "g" not in groups._groups or not groups._groups["g"].parts:
        t.join(0.001)
    assert groups.join("g", _part("b", b"q" * 16)) == (False, None)  # another viewer: scored alone
    groups.withdraw("g", "c")
    groups.withdraw("g", "b")  # neither will join: a runs the group alone
    t.join(60)
    grouped, parts = out["a"]
    assert grouped and [p.requester for p in parts] == ["a"]
    assert groups.join("g", _part("b")) == (False, None)  # the group left: a late request goes alone


def test_a_group_leaves_when_its_window_ends():
    now = [0.0]
    groups = ScoreGroups(clock=lambda: now[0])
    a, b = _part("a"), _part("b")
    groups.expect("g", ["a", "b"], window_s=0.5)
    out: dict[str, tuple] = {}
    t = threading.Thread(target=lambda: out.setdefault("a", groups.join("g", a)))
    t.start()
    while "g" not in groups._groups or not groups._groups["g"].parts:
        t.join(0.001)
    now[0] = 1.0  # b never came and the window ended: a leaves with whoever is in, itself
    t.join(60)
    grouped, parts = out["a"]
    assert grouped and parts is not None and [p.requester for p in parts] == ["a"]
    assert groups.join("g", b) == (False, None)
    groups.expect("h", ["a", "b"], window_s=0.5)
    now[0] = 2.0  # nobody joined in time: the group is dropped
    assert groups.join("h", a) == (False, None)
    assert groups.expect("solo", ["a"], window_s=1.0) is None and groups.join("solo", a) == (False, None)


def test_grouped_payload_round_trip_and_a_truncated_one_is_refused():
    data = pack_group_payload(b"p" * 32, [b"ctx-a", None, b"ctx-c"])
    assert unpack_group_payload(data, 3) == ([b"ctx-a", None, b"ctx-c"], b"p" * 32)
    with pytest.raises(ProtocolError):
        unpack_group_payload(data[:12], 3)
    with pytest.raises(ProtocolError):
        unpack_group_payload(data, 2)
