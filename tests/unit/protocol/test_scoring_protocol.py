"""Joint HE scoring, blacklist and multi-lending over the in-memory channel: correctness against the
plaintext joint model, what the coordinator sees on the wire, offline parties, bad inputs."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import pytest

from fedcore.crypto.he import CkksPublicContext, EncryptedVector, NoSecretKeyError, decrypt_vector
from fedcore.errors import (
    CorruptResult,
    DeadlineExceeded,
    InvalidInput,
    NotFound,
    PartyTaskError,
    PartyUnavailable,
    PermissionDenied,
    RateLimited,
)
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role, TaskReply
from fedcore.protocol.scoring.coordinator import ScoringCoordinator
from fedcore.protocol.scoring.messages import CONTRIBUTE, ModelSlice, unpack_task_payload
from fedcore.protocol.scoring.party import ArrayContributions, ScoringParty
from fedcore.protocol.scoring.requester import KeyRing, LocalGateway, Requester, sigmoid
from fedcore.protocol.tasks import HandlerRegistry, TaskContext

MODEL = "joint-v"
VERSION = "3"


def pseudo(i: int) -> bytes:
    return hashlib.sha256(b"p%d" % i).digest()[:16]


class Audit:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict]] = []

    def append(self, event: str, fields: Mapping) -> None:
        self.records.append((event, dict(fields)))

    def append_many(self, event: str, many: list) -> None:
        for fields in many:
            self.append(event, fields)


def make_slice(rng: np.random.Generator, party: str, k: int, intercept: float | None = None) -> ModelSlice:
    return ModelSlice(
        MODEL,
        VERSION,
        party,
        f"{party}-data",
        tuple(f"{party}_f{j}" for j in range(k)),
        rng.normal(0, 0.5, k),
        rng.normal(5, 2, k),
        rng.uniform(0.5, 3, k),
        intercept,
    )


class Fed:
    """A requester 'lender_a', contributors 'platform' and 'lender_b', ground truth in plaintext."""

    def __init__(self, n: int = 10_000, seed: int = 7, record: bool = False, masked_max_values: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.n = n
        self.ids = [pseudo(i) for i in range(n)]
        self.own = make_slice(rng, "lender_a", 4, intercept=-1.3)
        self.ch = InMemoryChannel(record_wire=record)
        self.truth_ext = np.zeros(n)
        self.fraud_count = np.zeros(n, dtype=int)
        self.loan_count = np.zeros(n, dtype=int)
        self.audits: dict[str, Audit] = {}
        for name, role, k, cover in (("platform", Role.PLATFORM, 6, 0.8), ("lender_b", Role.LENDER, 3, 0.3)):
            sl = make_slice(rng, name, k)
            known = rng.random(n) < cover  # the rest are unknown there, or did not consent
            x = rng.normal(sl.mean, sl.std, size=(n, k))
            fraud = rng.random(n) < 0.05
            loans = rng.random(n) < 0.2
            self.truth_ext += np.where(known, sl.partial_logit(x), 0.0)
            self.fraud_count += fraud
            self.loan_count += loans
            src = ArrayContributions.build(
                [sl],
                {MODEL: ([p for p, kn in zip(self.ids, known, strict=True) if kn], x[known])},
                fraud=[p for p, f in zip(self.ids, fraud, strict=True) if f],
                loans=[p for p, f in zip(self.ids, loans, strict=True) if f],
            )
            reg = HandlerRegistry()
            self.audits[name] = Audit()
            ScoringParty(src, self.audits[name]).register(reg)
            self.ch.add_party(name, role, reg)
        self.ch.add_party("lender_a", Role.LENDER, HandlerRegistry())
        self.coord = ScoringCoordinator(self.ch)
        # CKKS for every request here unless asked (masked sums of small requests: test_masked_sums.py)
        self.req = Requester(LocalGateway(self.coord, "lender_a"), KeyRing(masked_max_values=masked_max_values))
        self.own_x = rng.normal(self.own.mean, self.own.std, size=(n, 4))


def test_joint_score_matches_plaintext_model_10k() -> None:
    fed = Fed(10_000)
    out = fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION, queries=("score", "blacklist", "loans"))
    assert out.contributors == 2 and out.missing == ()
    assert out.external_logit is not None and fed.own.intercept is not None
    own = fed.own.partial_logit(fed.own_x) + fed.own.intercept
    p_he = sigmoid(own + out.external_logit)
    p_plain = sigmoid(own + fed.truth_ext)
    err = float(np.max(np.abs(p_he - p_plain)))
    assert err < 1e-4, err
    assert float(np.max(np.abs(out.external_logit - fed.truth_ext))) < 1e-5
    np.testing.assert_array_equal(out.blacklist_hits, fed.fraud_count)
    np.testing.assert_array_equal(out.active_loans, fed.loan_count)
    # every contributor recorded the request, without learning who asked
    for audit in fed.audits.values():
        ((event, rec),) = audit.records
        assert event == "score_contribution" and rec["n"] == 10_000 and rec["outcome"] == "ok"
        assert "lender_a" not in repr(rec)


def test_wire_holds_only_pseudonyms_context_and_ciphertexts() -> None:
    fed = Fed(300, record=True)
    fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION, queries=("score", "blacklist"))
    fed.req.query(fed.ids[:5], model_id=MODEL, model_version=VERSION)  # second request: context is cached
    to_party = [r for r in fed.ch.wire_log if r.direction == "to_party"]
    from_party = [r for r in fed.ch.wire_log if r.direction == "from_party"]
    assert {r.kind for r in fed.ch.wire_log} == {CONTRIBUTE}
    allowed_params = {"request_id", "model_id", "model_version", "queries", "n", "fingerprint"}
    key = fed.req.keys.current()
    for i, r in enumerate(to_party):
        assert set(r.params) == allowed_params
        assert "lender_a" not in repr(r.params)  # parties are not told who asked
        ctx, packed = unpack_task_payload(r.payload)
        if i < 2:
            assert ctx is not None and CkksPublicContext.from_bytes(ctx).fingerprint() == key.fingerprint()
        else:
            assert ctx is None  # cached by fingerprint
        assert packed == b"".join(fed.ids if i < 2 else fed.ids[:5])
    pub = key.public_context()
    for r in from_party:
        assert set(r.params) == {"n"}
        vec = EncryptedVector.from_bytes(pub, r.payload)  # a ciphertext under the requester's key
        with pytest.raises(NoSecretKeyError):
            decrypt_vector(pub, vec)  # type: ignore[arg-type]
        # no plaintext value (partial logit, 0/1 flag) appears in the bytes as float64
        assert np.float64(1.0).tobytes() not in r.payload[:4096]
    # a different key cannot decrypt it either (a wrong key gives an error, never a value)
    other = KeyRing().current()
    with pytest.raises(Exception):  # noqa: B017
        decrypt_vector(other, EncryptedVector.from_bytes(pub, from_party[0].payload))


def test_offline_party_is_named_or_flagged() -> None:
    fed = Fed(50)
    fed.ch.disconnect("lender_b")
    with pytest.raises(PartyUnavailable, match="lender_b"):
        fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION)
    out = fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION, allow_partial=True)
    assert out.missing == ("lender_b",) and out.contributors == 1


def test_unresponsive_party_times_out_naming_it() -> None:
    fed = Fed(20)

    def slow(ctx: TaskContext, params: Mapping) -> TaskReply:
        ctx.cancelled.wait(120)  # answers only once the coordinator gave up and cancelled the task
        return TaskReply({})

    reg = HandlerRegistry()
    reg.register(CONTRIBUTE, slow)
    fed.ch.add_party("sleepy", Role.LENDER, reg)
    with pytest.raises(DeadlineExceeded, match="sleepy"):
        fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION, timeout_s=0.5)
    out = fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION, timeout_s=0.5, allow_partial=True)
    assert out.missing == ("sleepy",) and out.contributors == 2


def add_mallory(fed: Fed, reply) -> None:
    """A party 'mallory' that knows nobody (its contribution would be zeros) and answers ``reply(good)``
    instead of its honest bytes ``good``."""
    honest = ScoringParty(ArrayContributions.build([make_slice(np.random.default_rng(0), "mallory", 2)], {}))

    def garbage(ctx: TaskContext, params: Mapping) -> TaskReply:
        good = b"".join(honest._contribute(ctx, params).payload or [])
        return TaskReply({}, payload=[reply(good)])

    reg = HandlerRegistry()
    reg.register(CONTRIBUTE, garbage)
    fed.ch.add_party("mallory", Role.LENDER, reg)


@pytest.mark.parametrize(
    "reply",
    [
        lambda good: b"\x00garbage" * 50,  # not a ciphertext at all
        lambda good: good[: len(good) // 2],  # truncated
        lambda good: good[:-64] + bytes(64),  # right header, damaged ciphertext body
    ],
)
def test_corrupt_contribution_is_attributed_and_dropped_when_partial_allowed(reply, caplog) -> None:
    fed = Fed(40)
    add_mallory(fed, reply)
    with pytest.raises(CorruptResult, match="mallory") as err:
        fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION, queries=("score",))
    assert err.value.party == "mallory" and err.value.step == CONTRIBUTE
    caplog.clear()
    with caplog.at_level("WARNING", logger="fedcore.protocol.scoring.coordinator"):
        out = fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION, queries=("score",), allow_partial=True)
    assert out.missing == ("mallory",) and out.contributors == 2
    assert out.external_logit is not None
    np.testing.assert_allclose(out.external_logit, fed.truth_ext[:40], atol=1e-4)
    assert any("mallory" in r.getMessage() for r in caplog.records)


def test_model_version_mismatch_names_party() -> None:
    fed = Fed(20)
    with pytest.raises(PartyTaskError, match="version") as info:
        fed.req.query(fed.ids, model_id=MODEL, model_version="2")
    assert info.value.party in {"platform", "lender_b"}


def test_bad_requests() -> None:
    fed = Fed(20)
    fed.coord.max_batch = 10
    with pytest.raises(InvalidInput, match="over the limit of 10"):
        fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION)
    with pytest.raises(InvalidInput, match="pseudonym 0"):
        fed.req.query([b"short"], model_id=MODEL, model_version=VERSION)
    with pytest.raises(InvalidInput, match="queries"):
        fed.req.query(fed.ids[:2], model_id=MODEL, model_version=VERSION, queries=("salary",))
    platform_gateway = Requester(LocalGateway(fed.coord, "platform"))
    with pytest.raises(PermissionDenied):
        platform_gateway.query(fed.ids[:2], model_id=MODEL, model_version=VERSION)


def test_key_rotation_resends_context() -> None:
    fed = Fed(10, record=True)
    now = [0.0]
    fed.req.keys = KeyRing(rotate_s=60, clock=lambda: now[0], masked_max_values=0)
    fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION)
    first = fed.req.keys.current().fingerprint()
    now[0] = 61.0
    fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION)
    assert fed.req.keys.current().fingerprint() != first and fed.req.keys.rotations == 2
    sent = [unpack_task_payload(r.payload)[0] for r in fed.ch.wire_log if r.direction == "to_party"]
    assert sum(c is not None for c in sent) == 4  # each of 2 parties got each of 2 contexts once


def test_coordinator_without_cached_context_asks_for_it() -> None:
    fed = Fed(10)
    fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION)
    fed.coord._contexts = type(fed.coord._contexts)()  # coordinator restarted: cache empty
    fed.coord._sent.clear()
    out = fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION)
    assert out.contributors == 2


def test_party_restart_loses_context_and_coordinator_resends() -> None:
    fed = Fed(10)
    fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION)
    fed.coord._sent.clear()
    fed.coord._sent["platform"] = {fed.req.keys.current().fingerprint()}
    # simulate a restarted platform: a new handler with an empty cache
    rng = np.random.default_rng(1)
    src = ArrayContributions.build([make_slice(rng, "platform", 6)], {})
    reg = HandlerRegistry()
    ScoringParty(src).register(reg)
    fed.ch.add_party("platform", Role.PLATFORM, reg)
    out = fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION)
    assert out.contributors == 2


def test_unknown_model_at_party() -> None:
    fed = Fed(10)
    with pytest.raises(PartyTaskError) as info:
        fed.req.query(fed.ids, model_id="nope", model_version=VERSION)
    assert info.value.kind == NotFound.code


def test_coalescing_merges_concurrent_small_queries() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from fedcore.coalesce import Coalescer

    fed = Fed(64)

    def run(key: tuple[str, str], merged: list[bytes], callers: int) -> object:
        return fed.req.query(merged, model_id=key[0], model_version=key[1], queries=("score", "loans"))

    def cut(out: object, a: int, b: int) -> object:
        return type(out)(**{k: (v[a:b] if isinstance(v, np.ndarray) else v) for k, v in vars(out).items()})

    co = Coalescer(run, cut, max_merged=4096, inflight=1)

    def one(i: int) -> float:
        out = co.submit([fed.ids[i]], (MODEL, VERSION), 600.0)
        assert out.external_logit is not None and out.active_loans is not None
        assert int(out.active_loans[0]) == fed.loan_count[i]
        return float(out.external_logit[0])

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(one, range(64)))
    np.testing.assert_allclose(got, fed.truth_ext, atol=1e-5)
    assert co.batches_sent < 64
    with pytest.raises(PartyTaskError, match="version"):
        co.submit([fed.ids[0]], (MODEL, "9"), 600.0)
    co.close()


def test_requester_is_rate_limited_per_minute_naming_it() -> None:
    fed = Fed(60)
    now = [0.0]
    fed.coord = ScoringCoordinator(fed.ch, rate_per_minute=100, clock=lambda: now[0])
    fed.req = Requester(LocalGateway(fed.coord, "lender_a"))
    fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION, queries=("loans",))
    with pytest.raises(RateLimited, match=r"lender_a.*100 applicants per minute"):
        fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION, queries=("loans",))
    now[0] = 15.0  # a quarter of a minute refills 25: 40 + 25 = 65 >= 60
    out = fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION, queries=("loans",))
    assert out.contributors == 2


def test_contributors_see_one_fingerprint_per_requester_key_as_documented() -> None:
    # The stated leak (docs/scoring.md, "Linkability"): requests under one key carry one fingerprint;
    # after a rotation they carry another, and nothing else on the task names the requester.
    fed = Fed(20, record=True)
    now = [0.0]
    keys = KeyRing(rotate_s=60, clock=lambda: now[0], masked_max_values=0)
    fed.req = Requester(LocalGateway(fed.coord, "lender_a"), keys)
    for t in (0.0, 1.0, 61.0):
        now[0] = t
        fed.req.query(fed.ids, model_id=MODEL, model_version=VERSION)
    fps = [r.params["fingerprint"] for r in fed.ch.wire_log if r.direction == "to_party" and r.party == "platform"]
    assert len(fps) == 3 and fps[0] == fps[1] != fps[2]
    assert not any("lender_a" in repr(r.params) for r in fed.ch.wire_log)


def test_sorted_table_single_and_batch_lookups_agree_and_flags_need_no_values():
    from fedcore.protocol.scoring.party import HASH_MIN_QUERY, SortedTable

    rng = np.random.default_rng(1)
    keys = np.frombuffer(rng.bytes(16 * 20_000), dtype="S16")
    flags = SortedTable(keys)
    assert flags.values is None  # presence only: no per-entry value array
    scored = SortedTable(keys, np.arange(len(keys), dtype=np.float64) + 1)
    unknown = np.frombuffer(rng.bytes(16 * 3), dtype="S16")
    batch = np.concatenate([keys[::3], unknown])
    assert len(batch) >= HASH_MIN_QUERY  # the hash-index path
    big = scored.lookup(batch)
    one_by_one = np.array([scored.lookup(batch[i : i + 1])[0] for i in range(0, len(batch), 97)])
    np.testing.assert_array_equal(big[::97], one_by_one)  # the binary-search path gives the same
    np.testing.assert_array_equal(big[:-3], np.arange(0, len(keys), 3) + 1.0)
    assert big[-3:].tolist() == [0.0, 0.0, 0.0]
    assert flags.lookup(keys[5:6]).tolist() == [1.0] and flags.lookup(unknown).tolist() == [0.0] * 3


class CountingSource:
    """A contributor's data that counts its partial-logit lookups."""

    def __init__(self, inner: ArrayContributions) -> None:
        self.inner = inner
        self.lookups = 0

    def model_version(self, model_id: str) -> str:
        return self.inner.model_version(model_id)

    def partial_logits(self, model_id: str, pseudonyms: np.ndarray) -> np.ndarray:
        self.lookups += 1
        return self.inner.partial_logits(model_id, pseudonyms)

    def fraud_flags(self, pseudonyms: np.ndarray) -> np.ndarray:
        return self.inner.fraud_flags(pseudonyms)

    def loan_flags(self, pseudonyms: np.ndarray) -> np.ndarray:
        return self.inner.loan_flags(pseudonyms)


def test_member_asked_about_one_viewer_under_several_keys_looks_up_once_encrypts_and_audits_each() -> None:
    """A pre-approval makes each member answer one request per asked lender for the same viewer: the
    values are looked up once, each answer is under its own requester's key and each is audited."""
    rng = np.random.default_rng(3)
    sl = make_slice(rng, "platform", 3)
    ids = [pseudo(i) for i in range(4)]
    x = rng.normal(sl.mean, sl.std, size=(4, 3))
    src = CountingSource(ArrayContributions.build([sl], {MODEL: (ids, x)}))
    audit = Audit()
    ch = InMemoryChannel()
    reg = HandlerRegistry()
    ScoringParty(src, audit).register(reg)
    ch.add_party("platform", Role.PLATFORM, reg)
    lenders = ("l1", "l2", "l3")
    for name in lenders:  # lenders that hold no one of this model
        r = HandlerRegistry()
        ScoringParty(ArrayContributions.build([make_slice(rng, name, 1)], {})).register(r)
        ch.add_party(name, Role.LENDER, r)
    coord = ScoringCoordinator(ch)
    requesters = {n: Requester(LocalGateway(coord, n)) for n in lenders}
    want = float(sl.partial_logit(x[1:2])[0])
    for req in requesters.values():
        out = req.query([ids[1]], model_id=MODEL, model_version=VERSION)
        assert out.external_logit is not None and abs(float(out.external_logit[0]) - want) < 1e-5
    fps = {r.keys.current().fingerprint() for r in requesters.values()}
    assert len(fps) == 3  # three keys: each lender decrypts only its own answer
    assert src.lookups == 1
    assert [e for e, _ in audit.records] == ["score_contribution"] * 3
    out = requesters["l1"].query([ids[2]], model_id=MODEL, model_version=VERSION)  # another viewer: looked up
    assert out.external_logit is not None
    assert abs(float(out.external_logit[0]) - float(sl.partial_logit(x[2:3])[0])) < 1e-5
    assert src.lookups == 2
