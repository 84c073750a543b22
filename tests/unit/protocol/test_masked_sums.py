"""Masked sums for small joint scoring requests (fedcore.protocol.scoring.masked): exact against the
plaintext joint model; what the coordinator, the members and the requester see on the wire matches the
module's statement; bad answers are attributed; bigger requests stay on CKKS."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from fedcore.crypto.he import CkksPublicContext
from fedcore.crypto.masks import from_fixed, to_fixed
from fedcore.errors import CorruptResult, InvalidInput, ProtocolError
from fedcore.protocol.messages import Role
from fedcore.protocol.scoring import masked
from fedcore.protocol.scoring.masked import MASKED_MAX_VALUES, SEAL_BYTES, MaskContributor, MaskKey, MaskSecret
from fedcore.protocol.scoring.messages import CONTRIBUTE, JointRequest, unpack_task_payload
from fedcore.protocol.scoring.party import ArrayContributions, ScoringParty
from fedcore.protocol.scoring.requester import KeyRing
from fedcore.protocol.tasks import HandlerRegistry
from fedcore.secret import SecretLeakError
from tests.unit.protocol.test_scoring_protocol import MODEL, VERSION, Fed, add_mallory, make_slice

ALL = ("score", "blacklist", "loans")


def masked_fed(n: int = 40, record: bool = False) -> Fed:
    return Fed(n, record=record, masked_max_values=MASKED_MAX_VALUES)


def test_a_small_request_is_an_exact_masked_sum_of_the_plaintext_values() -> None:
    fed = masked_fed()
    out = fed.req.query(fed.ids[:16], model_id=MODEL, model_version=VERSION, queries=ALL)  # 48 values
    assert out.contributors == 2 and out.missing == ()
    assert out.external_logit is not None
    # fixed point at 2^-32 per member: exact to 1e-9 (CKKS: about 1e-6)
    np.testing.assert_allclose(out.external_logit, fed.truth_ext[:16], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(out.blacklist_hits, fed.fraud_count[:16])
    np.testing.assert_array_equal(out.active_loans, fed.loan_count[:16])


def test_the_wire_holds_only_the_requesters_public_key_masked_values_and_sealed_seeds() -> None:
    fed = masked_fed(record=True)
    fed.req.query(fed.ids[:5], model_id=MODEL, model_version=VERSION, queries=("score",))
    fed.req.query(fed.ids[:5], model_id=MODEL, model_version=VERSION, queries=("score",))  # same values again
    key = fed.req.keys.mask()
    to_party = [r for r in fed.ch.wire_log if r.direction == "to_party"]
    from_party = [r for r in fed.ch.wire_log if r.direction == "from_party"]
    assert {r.kind for r in fed.ch.wire_log} == {CONTRIBUTE} and len(to_party) == len(from_party) == 4
    for i, r in enumerate(to_party):
        # members get the same fields as for CKKS, and are not told who asked
        assert set(r.params) == {"request_id", "model_id", "model_version", "queries", "n", "fingerprint"}
        assert r.params["fingerprint"] == key.fingerprint() and "lender_a" not in repr(r.params)
        ctx, packed = unpack_task_payload(r.payload)
        # the public key only (36 bytes), the first time; then cached by fingerprint
        assert ctx == (key.public_context().serialize() if i < 2 else None)
        assert packed == b"".join(fed.ids[:5])
    by_party: dict[str, list[masked.MaskedPart]] = {}
    for r in from_party:
        assert set(r.params) == {"n"}
        assert len(r.payload) == 4 + SEAL_BYTES + 8 * 5
        by_party.setdefault(r.party, []).append(masked.parse_contribution(r.payload, 5))
    rids = [str(r.params["request_id"]) for r in to_party]
    plain = np.zeros(5)
    for first, second in by_party.values():
        # the same values answered twice: fresh nonces, so neither answer nor their difference shows them
        pub, nonce, tag = first.head[:32], first.head[32:48], first.head[48:]
        assert second.head[:32] == pub and second.head[32:48] != nonce
        assert not np.array_equal(first.values, second.values)
        assert not np.array_equal(first.values - second.values, np.zeros(5, dtype=np.uint64))
        # only the requester's key derives the seed (another key fails the tag)
        with pytest.raises(ProtocolError, match="not made for this request"):
            MaskSecret.generate().seed(pub, nonce, tag, rids[0])
        # with it, masked value - mask = the party's plaintext value in fixed point
        seed = key.seed(pub, nonce, tag, rids[0])
        plain += from_fixed(first.values - masked._mask(seed, 5))
    np.testing.assert_allclose(plain, fed.truth_ext[:5], rtol=0, atol=1e-9)


def test_the_requester_gets_the_sum_and_one_sealed_seed_per_contributor_bound_to_its_request() -> None:
    fed = masked_fed()
    key = fed.req.keys.mask()
    req = JointRequest(MODEL, VERSION, ("score",), b"".join(fed.ids[:3]), key.fingerprint(),
                       key.public_context().serialize())
    a, b = fed.coord.score("lender_a", req), fed.coord.score("lender_a", req)
    assert a.ciphertext is not None and b.ciphertext is not None and a.contributors == 2
    assert len(a.ciphertext) == 6 + 2 * SEAL_BYTES + 8 * 3  # the sum and two heads: no single answer
    np.testing.assert_allclose(masked.open_sum(key, a.ciphertext, 3, a.request_id, 2), fed.truth_ext[:3], atol=1e-9)
    with pytest.raises(ProtocolError, match="not made for this request"):  # a sum relayed for another request
        masked.open_sum(key, a.ciphertext, 3, b.request_id, 2)
    with pytest.raises(ProtocolError, match="contributors"):
        masked.open_sum(key, a.ciphertext, 3, a.request_id, 1)
    with pytest.raises(ProtocolError, match="contributors and length"):
        masked.open_sum(key, a.ciphertext[:-8], 3, a.request_id, 2)
    with pytest.raises(ProtocolError, match="not a masked sum"):
        masked.open_sum(key, b"FCSR" + bytes(40), 3, a.request_id, 2)


@pytest.mark.parametrize(
    "reply",
    [
        lambda good: b"\x00garbage" * 5,  # not a masked answer
        lambda good: good[:-8],  # one value short
        lambda good: good + bytes(8),  # one value too many
    ],
)
def test_a_corrupt_masked_answer_is_attributed_and_dropped_when_partial_allowed(reply) -> None:
    fed = masked_fed()
    add_mallory(fed, reply)
    with pytest.raises(CorruptResult, match="mallory"):
        fed.req.query(fed.ids[:4], model_id=MODEL, model_version=VERSION, queries=("score",))
    out = fed.req.query(fed.ids[:4], model_id=MODEL, model_version=VERSION, queries=("score",), allow_partial=True)
    assert out.missing == ("mallory",) and out.contributors == 2
    np.testing.assert_allclose(out.external_logit, fed.truth_ext[:4], atol=1e-9)


def test_bigger_requests_and_a_zero_threshold_use_ckks() -> None:
    fed = masked_fed(100, record=True)
    fed.req.query(fed.ids[:22], model_id=MODEL, model_version=VERSION, queries=ALL)  # 66 values > 64
    fed.req.keys = KeyRing(masked_max_values=0)
    fed.req.query(fed.ids[:1], model_id=MODEL, model_version=VERSION, queries=("score",))
    contexts = [unpack_task_payload(r.payload)[0] for r in fed.ch.wire_log if r.direction == "to_party"]
    assert len(contexts) == 4 and all(c is not None and not MaskKey.is_one(c) for c in contexts)
    assert all(isinstance(CkksPublicContext.from_bytes(c or b""), CkksPublicContext) for c in contexts)
    with pytest.raises(InvalidInput, match="masked_max_values"):
        KeyRing(masked_max_values=-1)


def test_a_restarted_member_gets_the_masked_key_again() -> None:
    fed = masked_fed()
    fed.req.query(fed.ids[:2], model_id=MODEL, model_version=VERSION)
    reg = HandlerRegistry()  # a restarted platform: an empty key cache
    ScoringParty(ArrayContributions.build([make_slice(np.random.default_rng(1), "platform", 6)], {})).register(reg)
    fed.ch.add_party("platform", Role.PLATFORM, reg)
    out = fed.req.query(fed.ids[:2], model_id=MODEL, model_version=VERSION)
    assert out.contributors == 2


def test_values_a_masked_sum_cannot_carry_are_refused_and_keys_are_checked() -> None:
    pub = MaskSecret.generate().public_context()
    for bad in (np.array([np.nan]), np.array([2.0**30]), np.array([-np.inf])):
        with pytest.raises(InvalidInput, match="masked sum"):
            MaskContributor().contribute(pub, bad, "r1")
    with pytest.raises(ProtocolError, match="masked-sum key"):
        MaskKey.from_bytes(b"FCMK" + bytes(31))
    with pytest.raises(ProtocolError, match="small-order"):
        MaskKey.from_bytes(b"FCMK" + bytes(32))  # the zero point
    with pytest.raises(ProtocolError, match="unusable peer key"):  # a contribution naming a small-order key
        MaskSecret.generate().seed(bytes(32), bytes(16), bytes(16), "r1")
    for secret in (MaskSecret.generate(), MaskContributor()):
        with pytest.raises(SecretLeakError):
            pickle.dumps(secret)
    assert MaskKey.from_bytes(pub.serialize()).fingerprint() == pub.fingerprint()
    assert to_fixed(np.array([1.5]))[0] == np.uint64(3 << 31)


def test_a_contributor_key_rotates_and_both_keys_open() -> None:
    now = [0.0]
    member = MaskContributor(rotate_s=60, clock=lambda: now[0])
    key = MaskSecret.generate()
    parts = [masked.parse_contribution(member.contribute(key.public_context(), np.array([0.25, -2.0]), "r1"), 2)]
    now[0] = 61.0
    parts.append(masked.parse_contribution(member.contribute(key.public_context(), np.array([1.0, 1.0]), "r1"), 2))
    assert parts[0].head[:32] != parts[1].head[:32]  # a new key pair after rotate_s
    np.testing.assert_array_equal(masked.open_sum(key, masked.total(parts), 2, "r1", 2), [1.25, -1.0])


@pytest.mark.parametrize("bad", [-1, "64", 1.5, True])
def test_a_party_setting_that_is_not_a_count_is_refused_naming_the_file_and_field(bad, tmp_path: Path) -> None:
    from party_node.scoring import load_settings
    from party_node.scoring_batch import ScoringSettings

    assert ScoringSettings.from_mapping({}).masked_max_values == MASKED_MAX_VALUES
    assert ScoringSettings.from_mapping({"masked_max_values": 0}).masked_max_values == 0  # always CKKS
    (tmp_path / "scoring.json").write_text(json.dumps({"masked_max_values": bad}))
    with pytest.raises(InvalidInput, match=r"scoring\.json: masked_max_values must be a whole number"):
        load_settings(tmp_path)


@pytest.mark.parametrize("length", [1, 256, 257, 1000])  # SHAKE-256 masks up to 256 values, ChaCha20 past them
def test_masks_of_any_length_cancel_exactly(length: int) -> None:
    key, members = MaskSecret.generate(), [MaskContributor(), MaskContributor()]
    rng = np.random.default_rng(length)
    values = [np.round(rng.normal(0, 3, length), 6) for _ in members]
    parts = [masked.parse_contribution(m.contribute(key.public_context(), v, "r7"), length)
             for m, v in zip(members, values, strict=True)]
    got = masked.open_sum(key, masked.total(parts), length, "r7", 2)
    np.testing.assert_allclose(got, values[0] + values[1], rtol=0, atol=1e-9)
    assert not np.allclose(from_fixed(parts[0].values), values[0], atol=1.0)  # masked on the wire
