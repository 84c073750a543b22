"""ECDH-PSI over the in-memory channel: correctness, leakage on the wire, failure cleanup."""

from __future__ import annotations

import hashlib
import random
import threading

import numpy as np
import pytest

from fedcore.crypto.psi import hash_to_point
from fedcore.errors import CorruptResult, PartyTaskError, PartyUnavailable
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role, TaskReply
from fedcore.protocol.psi.coordinator import run_psi
from fedcore.protocol.psi.messages import BLIND, MATCH, POSITIONS, REBLIND, STAGE, alignment_digest
from fedcore.protocol.psi.party import PsiParty
from fedcore.protocol.tasks import HandlerRegistry


class MemoryParty:
    """SubjectSource + AlignmentSink in memory: ids by subject key, consent per purpose."""

    def __init__(self, ids: list[str], no_consent: set[str] = frozenset()) -> None:
        self.ids = ids
        self.no_consent = no_consent
        self.staged: dict[str, np.ndarray] = {}
        self.committed: dict[str, np.ndarray] = {}

    def subjects_for_psi(self, purpose):
        keep = [(k, v) for k, v in enumerate(self.ids) if v not in self.no_consent]
        return np.array([k for k, _ in keep], dtype=np.int64), [v.encode() for _, v in keep]

    def stage_alignment(self, run_id, keys):
        self.staged[run_id] = keys

    def commit_alignment(self, run_id):
        self.committed[run_id] = self.staged.pop(run_id)

    def drop_alignment(self, run_id):
        self.staged.pop(run_id, None)
        self.committed.pop(run_id, None)

    def aligned_ids(self, run_id):
        return [self.ids[k] for k in self.committed[run_id]]


def federation(sets: dict[str, MemoryParty], record: bool = False, hooks=None):
    ch = InMemoryChannel(record_wire=record)
    for name, party in sets.items():
        reg = HandlerRegistry()
        PsiParty(party, party, workers=0).register(reg)
        if hooks and name in hooks:
            hooks[name](reg)
        ch.add_party(name, Role.PLATFORM if name == "tiange" else Role.LENDER, reg)
    return ch


def rand_ids(rng: random.Random, n: int, prefix: str = "") -> list[str]:
    return [f"{prefix}{rng.randrange(10**11):011d}" for _ in range(n)]


@pytest.mark.parametrize("case", ["planted", "empty", "disjoint", "identical", "duplicates", "non_ascii", "one_empty"])
def test_pairwise_matches_plain_intersection(case):
    rng = random.Random(case)
    common = rand_ids(rng, 300, "c")
    a, b = rand_ids(rng, 500, "a") + common, rand_ids(rng, 400, "b") + common
    if case == "empty":
        a, b = [], []
    elif case == "one_empty":
        b = []
    elif case == "disjoint":
        a, b = rand_ids(rng, 200, "a"), rand_ids(rng, 200, "b")
    elif case == "identical":
        b = list(a)
    elif case == "duplicates":
        a = a + a[:50]
        b = b + b[-30:]
    elif case == "non_ascii":
        a = [*a, "张伟-110101199003077777", "Zoë", "🚗"]
        b = [*b, "张伟-110101199003077777", "Zoë", "zoe"]
    rng.shuffle(a)
    rng.shuffle(b)
    pa, pb = MemoryParty(a), MemoryParty(b)
    ch = federation({"yixin": pa, "tiange": pb})
    res = run_psi(ch, "run-1", ["yixin", "tiange"])
    expected = set(a) & set(b)
    assert res.intersection == len(expected)
    assert res.sizes == {"yixin": len(set(a)), "tiange": len(set(b))}
    # Both sides hold the same subjects, row by row in the same order.
    assert pa.aligned_ids("run-1") == pb.aligned_ids("run-1")
    assert set(pa.aligned_ids("run-1")) == expected


def test_only_consenting_subjects_take_part():
    rng = random.Random(1)
    common = rand_ids(rng, 100, "c")
    pa = MemoryParty(common + rand_ids(rng, 50), no_consent=set(common[:10]))
    pb = MemoryParty(common, no_consent=set(common[90:]))
    run_psi(federation({"yixin": pa, "tiange": pb}), "r", ["yixin", "tiange"])
    assert set(pa.aligned_ids("r")) == set(common[10:90])


def test_multi_party_intersection_and_followers_learn_only_the_global_set():
    rng = random.Random(2)
    core = rand_ids(rng, 120, "k")
    only_ab = rand_ids(rng, 40, "ab")
    a = core + only_ab + rand_ids(rng, 100)
    b = core + only_ab + rand_ids(rng, 100)
    c = core + rand_ids(rng, 100)
    parties = {"yixin": MemoryParty(a), "meili": MemoryParty(b), "tiange": MemoryParty(c)}
    res = run_psi(federation(parties), "m", ["tiange", "yixin", "meili"])
    assert res.intersection == 120
    rows = [parties[p].aligned_ids("m") for p in ("yixin", "meili", "tiange")]
    assert rows[0] == rows[1] == rows[2] and set(rows[0]) == set(core)


def test_cardinality_only_leaves_no_table():
    rng = random.Random(3)
    common = rand_ids(rng, 77)
    pa, pb = MemoryParty(common + rand_ids(rng, 20)), MemoryParty(common + rand_ids(rng, 30))
    res = run_psi(federation({"yixin": pa, "tiange": pb}), "c", ["yixin", "tiange"], cardinality_only=True)
    assert res.intersection == 77
    assert not pa.committed and not pb.committed and not pa.staged and not pb.staged


def test_wire_holds_no_id_no_hash_and_nothing_linkable_across_runs():
    rng = random.Random(4)
    common = rand_ids(rng, 200)
    a, b = common + rand_ids(rng, 100), common + rand_ids(rng, 100)
    ch = federation({"yixin": MemoryParty(a), "tiange": MemoryParty(b)}, record=True)
    run_psi(ch, "run-a", ["yixin", "tiange"])
    first = list(ch.wire_log)
    run_psi(ch, "run-b", ["yixin", "tiange"])
    second = ch.wire_log[len(first):]

    forbidden = set()
    for v in set(a) | set(b):
        raw = v.encode()
        forbidden |= {raw, hashlib.sha256(raw).digest(), hash_to_point(raw), hashlib.sha256(raw).digest()[:16]}

    def values(records):
        out = set()
        for r in records:
            assert not any(isinstance(p, str) and p in set(a) | set(b) for p in r.params.values())
            if r.kind in ("psi.positions", "psi.stage"):
                continue  # uint32 positions in a fresh shuffle: checked below by size only
            data = r.payload
            assert len(data) % 32 == 0
            out |= {data[i:i + 32] for i in range(0, len(data), 32)}
        return out

    v1, v2 = values(first), values(second)
    assert v1 and v2
    assert not ({p[:16] for p in v1} | v1) & forbidden
    assert not v1 & v2, "a relayed value repeats across runs: runs would be linkable"
    for r in first:  # no raw id inside any payload either
        assert not any(v.encode() in r.payload for v in common[:50])
    # Bytes per id per direction: 32 (the target is <= 48).
    blind_bytes = sum(len(r.payload) for r in first if r.kind == BLIND and r.direction == "from_party")
    assert blind_bytes == 32 * (len(set(a)) + len(set(b)))


def test_party_disconnecting_mid_run_fails_it_and_leaves_no_table():
    rng = random.Random(5)
    common = rand_ids(rng, 100)
    pa, pb = MemoryParty(common + rand_ids(rng, 10)), MemoryParty(common)
    holder: dict[str, InMemoryChannel] = {}

    def drop_on_match(reg: HandlerRegistry) -> None:
        original = reg.get(MATCH)

        def match(ctx, params):
            threading.Timer(0.0, lambda: holder["ch"].disconnect("tiange")).start()
            return original(ctx, params)

        reg._handlers[MATCH] = match

    ch = federation({"yixin": pa, "tiange": pb}, hooks={"yixin": drop_on_match})
    holder["ch"] = ch
    with pytest.raises((PartyUnavailable, PartyTaskError)) as err:
        run_psi(ch, "x", ["yixin", "tiange"])
    assert "tiange" in str(err.value)
    assert not pa.committed and not pa.staged and not pb.committed and not pb.staged


def test_bad_arguments():
    ch = federation({"yixin": MemoryParty(["1"]), "tiange": MemoryParty(["1"])})
    with pytest.raises(Exception, match="two distinct parties"):
        run_psi(ch, "r", ["yixin", "yixin"])
    with pytest.raises(Exception, match="purpose"):
        run_psi(ch, "r", ["yixin", "tiange"], purpose="marketing")


def test_process_pool_path_gives_the_same_result(monkeypatch):
    import fedcore.protocol.psi.party as psi_mod

    monkeypatch.setattr(psi_mod, "POOL_MIN_IDS", 0)
    rng = random.Random(6)
    common = rand_ids(rng, 3000)
    pa, pb = MemoryParty(common + rand_ids(rng, 2000)), MemoryParty(rand_ids(rng, 1000) + common)
    ch = InMemoryChannel()
    for name, party in (("yixin", pa), ("tiange", pb)):
        reg = HandlerRegistry()
        PsiParty(party, party, workers=2).register(reg)
        ch.add_party(name, Role.LENDER, reg)
    res = run_psi(ch, "p", ["yixin", "tiange"])
    assert res.intersection == 3000 and pa.aligned_ids("p") == pb.aligned_ids("p")


def _hook(kind: str, change):
    """A party hook that rewrites this party's reply to ``kind`` with ``change(ctx, reply)``."""

    def install(reg: HandlerRegistry) -> None:
        original = reg.get(kind)
        reg._handlers[kind] = lambda ctx, params: change(ctx, original(ctx, params))

    return install


def _truncated(ctx, reply, forge: bool):
    data = b"".join(reply.payload)
    half = data[: len(data) // 8 * 4]  # half of the uint32 positions
    params = dict(reply.params)
    if forge:  # a leader that also lies consistently about what it sends
        params = {"count": len(half) // 4, "digest": alignment_digest(ctx.run_id, np.frombuffer(half, "<u4"))}
    return TaskReply(params, [half])


@pytest.mark.parametrize("forge", [False, True])
def test_truncated_positions_fail_the_run_and_nobody_commits(forge):
    rng = random.Random(8)
    common = rand_ids(rng, 200)
    pa, pb = MemoryParty(common + rand_ids(rng, 20)), MemoryParty(common + rand_ids(rng, 5))
    hook = _hook(POSITIONS, lambda ctx, reply: _truncated(ctx, reply, forge))
    ch = federation({"yixin": pa, "tiange": pb}, hooks={"yixin": hook})
    with pytest.raises(CorruptResult) as err:
        run_psi(ch, "trunc", ["yixin", "tiange"])
    # without forging, the follower refuses what it received; with it, the leader refuses what was staged
    assert err.value.party == ("yixin" if not forge else "tiange")
    assert not pa.committed and not pa.staged and not pb.committed and not pb.staged


def test_follower_staging_something_else_is_caught_by_the_leader():
    rng = random.Random(9)
    common = rand_ids(rng, 50)
    pa, pb = MemoryParty(common), MemoryParty(common)
    lie = _hook(STAGE, lambda ctx, reply: TaskReply({**reply.params, "staged": reply.params["staged"] - 1}))
    ch = federation({"yixin": pa, "tiange": pb}, hooks={"tiange": lie})
    with pytest.raises(CorruptResult, match="tiange"):
        run_psi(ch, "lie", ["yixin", "tiange"])
    assert not pa.committed and not pb.committed and not pa.staged and not pb.staged


def test_garbage_reblinded_points_are_attributed_to_their_sender(caplog):
    rng = random.Random(10)
    common = rand_ids(rng, 30)
    pa, pb = MemoryParty(common), MemoryParty(common)
    junk = _hook(REBLIND, lambda ctx, reply: TaskReply(reply.params, [b"\x01" * 33]))
    ch = federation({"yixin": pa, "tiange": pb}, hooks={"tiange": junk})
    with caplog.at_level("WARNING", logger="fedcore.protocol.psi.coordinator"):
        with pytest.raises(CorruptResult) as err:
            run_psi(ch, "junk", ["yixin", "tiange"])
    assert err.value.party == "tiange" and err.value.step == REBLIND
    assert any("tiange" in r.getMessage() for r in caplog.records)
    assert not pa.committed and not pb.committed
