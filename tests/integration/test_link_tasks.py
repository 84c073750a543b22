"""Task semantics over the real gRPC link (mutual TLS, loopback), the same contract the in-memory
channel keeps: ids, timeouts, cancellation, typed errors naming party and step, payloads both ways."""

from __future__ import annotations

import threading
import time

import pytest

from coordinator.config import load_coordinator_config
from coordinator.server import CoordinatorServer
from fedcore.errors import InvalidInput, PartyTaskError, PartyUnavailable, TaskTimeout
from fedcore.protocol.messages import DataSummary, Task, TaskReply
from fedcore.protocol.tasks import ECHO, HandlerRegistry, register_diagnostics
from party_node.config import load_party_config
from party_node.link import LinkClient, LinkCredentials
from tests.conftest import make_homes

EVENTS: dict[str, threading.Event] = {"slow_started": threading.Event(), "slow_cancelled": threading.Event()}


def slow(ctx, params):
    EVENTS["slow_started"].set()
    while not ctx.cancelled.wait(0.01):
        pass
    EVENTS["slow_cancelled"].set()
    ctx.check_cancelled()
    return TaskReply()


def fails(ctx, params):
    raise InvalidInput(f"dataset {params['ds']!r} has no label column")


def crashes(ctx, params):
    raise RuntimeError("/home/secret/path")


def sums(ctx, params):
    total = sum(len(c) for c in ctx.payload)
    return TaskReply({"received": total})


@pytest.fixture(scope="module")
def link(tmp_path_factory):
    homes = make_homes(tmp_path_factory.mktemp("tasks"), {"yixin": "lender"})
    srv = CoordinatorServer(load_coordinator_config(homes.coordinator), port=0)
    srv.start()
    cfg = load_party_config(homes.parties["yixin"])
    reg = HandlerRegistry()
    register_diagnostics(reg)
    for kind, fn in (("slow", slow), ("fails", fails), ("crashes", crashes), ("sums", sums)):
        reg.register(kind, fn)
    client = LinkClient(
        name="yixin", address=f"127.0.0.1:{srv.port}", server_name="coordinator",
        credentials=LinkCredentials(cfg.tls.ca_cert.read_bytes(), cfg.tls.cert.read_bytes(), cfg.tls.key.read_bytes()),
        registry=reg, summary=DataSummary, heartbeat_s=0.3, chunk_bytes=64 * 1024,
    )
    t = threading.Thread(target=client.run, daemon=True)
    t.start()
    assert srv.hub.wait_online(["yixin"], 10)
    yield srv.hub
    client.stop()
    srv.stop(0.5)


def test_payload_goes_to_the_party_in_chunks(link):
    data = [b"x" * 200_000, b"y" * 5, b"z" * 70_000]
    r = link.run("yixin", Task("sums", payload=data, timeout_s=10))
    assert r.params == {"received": 270_005}


def test_echo_with_payload_round_trip(link):
    r = link.run("yixin", Task(ECHO, {"a": [1, 2.5, "s"], "b": {"c": True}}, payload=[b"\x00\xff" * 1000]))
    assert r.params == {"a": [1, 2.5, "s"], "b": {"c": True}}
    assert r.read_payload() == b"\x00\xff" * 1000


def test_error_at_the_party_is_typed_and_names_party_and_step(link):
    with pytest.raises(PartyTaskError) as err:
        link.run("yixin", Task("fails", {"ds": "applications"}, timeout_s=5))
    assert (err.value.party, err.value.step, err.value.kind) == ("yixin", "fails", "invalid_input")
    assert "no label column" in str(err.value)
    with pytest.raises(PartyTaskError) as err:
        link.run("yixin", Task("crashes", timeout_s=5))
    assert err.value.kind == "internal" and "/home/secret" not in str(err.value)


def test_timeout_cancels_at_the_party(link):
    EVENTS["slow_started"].clear()
    EVENTS["slow_cancelled"].clear()
    t0 = time.monotonic()
    with pytest.raises(TaskTimeout, match="'yixin' did not finish step 'slow'"):
        link.run("yixin", Task("slow", timeout_s=0.5))
    assert time.monotonic() - t0 < 2
    assert EVENTS["slow_cancelled"].wait(3)


def test_explicit_cancel(link):
    EVENTS["slow_started"].clear()
    EVENTS["slow_cancelled"].clear()
    h = link.submit("yixin", Task("slow", timeout_s=30))
    assert EVENTS["slow_started"].wait(3)
    h.cancel("admin changed their mind")
    assert EVENTS["slow_cancelled"].wait(3)


def test_task_ids_are_unique_and_concurrent_tasks_complete(link):
    handles = [link.submit("yixin", Task(ECHO, {"i": i})) for i in range(50)]
    assert len({h.task_id for h in handles}) == 50
    assert [h.result().params["i"] for h in handles] == list(range(50))


def test_unknown_party(link):
    with pytest.raises(PartyUnavailable, match="ghost"):
        link.submit("ghost", Task(ECHO))
