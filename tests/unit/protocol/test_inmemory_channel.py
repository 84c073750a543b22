"""The PartyChannel contract, on the in-memory implementation (the gRPC one is checked by the
integration tests with the same expectations)."""

import threading
import time

import pytest

from fedcore.errors import InvalidInput, PartyTaskError, PartyUnavailable, TaskTimeout
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role, Task, TaskReply
from fedcore.protocol.tasks import BLOB, ECHO, HandlerRegistry, register_diagnostics


@pytest.fixture
def channel():
    ch = InMemoryChannel(record_wire=True)
    started = threading.Event()
    stopped = threading.Event()

    def slow(ctx, params):
        started.set()
        try:
            while True:
                ctx.cancelled.wait(0.01)
                ctx.check_cancelled()
        finally:
            stopped.set()

    def fails(ctx, params):
        if params.get("after_slow_started"):
            started.wait(60)
        raise InvalidInput(f"column {params['col']!r} is not numeric")

    def crashes(ctx, params):
        raise RuntimeError("secret internal detail 123-45-6789")

    for name, role in (("yixin", Role.LENDER), ("tiange", Role.PLATFORM)):
        reg = HandlerRegistry()
        register_diagnostics(reg)
        reg.register("slow", slow)
        reg.register("fails", fails)
        reg.register("crashes", crashes)
        ch.add_party(name, role, reg)
    ch.slow_started, ch.slow_stopped = started, stopped
    yield ch
    ch.close()


def test_echo_round_trips_params_and_payload(channel):
    r = channel.run("yixin", Task(ECHO, {"n": 3, "s": "x"}, payload=[b"ab", b"cd"]))
    assert r.params == {"n": 3, "s": "x"} and r.read_payload() == b"abcd" and r.party == "yixin"


def test_payload_streams_lazily(channel):
    r = channel.run("tiange", Task(BLOB, {"bytes": 5_000_000}))
    sizes = [len(c) for c in r.chunks()]
    assert sum(sizes) == 5_000_000 and len(sizes) == 5


def test_handler_error_names_party_and_step(channel):
    with pytest.raises(PartyTaskError) as err:
        channel.run("yixin", Task("fails", {"col": "income"}))
    assert err.value.party == "yixin" and err.value.step == "fails" and err.value.kind == "invalid_input"
    assert "income" in str(err.value)


def test_unexpected_error_detail_stays_at_the_party(channel):
    with pytest.raises(PartyTaskError) as err:
        channel.run("yixin", Task("crashes"))
    assert err.value.kind == "internal" and "123-45" not in str(err.value)


def test_unknown_task_kind(channel):
    with pytest.raises(PartyTaskError) as err:
        channel.run("yixin", Task("rm -rf"))
    assert err.value.kind == "not_found"


def test_timeout_cancels_the_task_at_the_party(channel):
    # Whichever side sees the deadline first (the waiting coordinator or the party's own check), the
    # caller gets a TaskTimeout naming the party, and the handler at the party stops.
    with pytest.raises(TaskTimeout, match="yixin"):
        channel.run("yixin", Task("slow", timeout_s=0.2))
    assert channel.slow_stopped.wait(60)


def test_party_noticing_its_deadline_first_is_still_a_timeout(channel):
    # The race of the loaded machine made deterministic: the handler raises its deadline error before
    # the waiting side looks at the clock.
    reg = HandlerRegistry()

    def late(ctx, params):
        while time.monotonic() <= ctx.deadline:
            threading.Event().wait(0.01)
        ctx.check_cancelled()
        raise AssertionError("unreachable")

    reg.register("late", late)
    channel.add_party("cango", Role.LENDER, reg)
    handle = channel.submit("cango", Task("late", timeout_s=0.05))
    handle._future.result(timeout=60)  # the party has already answered with its deadline error
    with pytest.raises(TaskTimeout, match="cango"):
        handle.result()


def test_disconnect_fails_waiting_task_and_new_submits(channel):
    h = channel.submit("yixin", Task("slow", timeout_s=10))
    assert channel.slow_started.wait(60)
    channel.disconnect("yixin")
    with pytest.raises(PartyUnavailable, match="yixin"):
        h.result()
    with pytest.raises(PartyUnavailable):
        channel.submit("yixin", Task(ECHO))
    assert [p.online for p in channel.parties()] == [False, True]


def test_run_all_cancels_others_on_failure(channel):
    with pytest.raises(PartyTaskError):
        channel.run_all(
            {
                "yixin": Task("fails", {"col": "x", "after_slow_started": True}),
                "tiange": Task("slow", timeout_s=10),
            }
        )
    assert channel.slow_stopped.wait(60)


def test_wire_log_records_both_directions(channel):
    assert channel.run("yixin", Task(ECHO, {"a": 1}, payload=[b"xyz"])).read_payload() == b"xyz"
    dirs = [(w.direction, w.party, w.payload) for w in channel.wire_log]
    assert ("to_party", "yixin", b"xyz") in dirs and ("from_party", "yixin", b"xyz") in dirs


def test_handler_reply_without_payload(channel):
    reg = HandlerRegistry()
    reg.register("count", lambda ctx, p: TaskReply({"rows": 42}))
    channel.add_party("cango", Role.LENDER, reg)
    r = channel.run("cango", Task("count"))
    assert r.params == {"rows": 42} and r.read_payload() == b""
