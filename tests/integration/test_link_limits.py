"""What one party with a valid certificate cannot do to the others, against a real coordinator (mutual
TLS on loopback): exhaust the RPC slots, register an oversized summary, knock a live node off by
connecting under its name, or hold a connection open without registering."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import grpc
import pytest
from fedcredit.v1 import link_pb2, link_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coordinator.config import load_coordinator_config
from coordinator.server import CoordinatorServer
from fedcore.wire.convert import summary_to_proto
from tests.conftest import Homes, make_homes
from tests.integration.test_link_security import channel, creds_for, list_parties_status

PER_PARTY = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CoordinatorServer, Homes]]:
    homes = make_homes(tmp_path_factory.mktemp("limits"), {"yixin": "lender", "meili": "lender"})
    cfg = load_coordinator_config(homes.coordinator)
    cfg = cfg.model_copy(update={
        "coordinator": cfg.coordinator.model_copy(update={"max_workers": 24, "max_rpcs_per_party": PER_PARTY}),
        "link": cfg.link.model_copy(update={"registration_timeout_s": 1.0}),
    })
    srv = CoordinatorServer(cfg, port=0)
    srv.start()
    yield srv, homes
    srv.stop(0.5)


def admin_channel(srv: CoordinatorServer) -> grpc.Channel:
    tls = srv.config.tls
    return channel(srv, tls.ca_cert.read_bytes(), tls.admin_key.read_bytes(), tls.admin_cert.read_bytes())


def open_watch(ch: grpc.Channel) -> tuple[grpc.StatusCode, object]:
    """A long-lived health stream: (OK, call) once the server answered, or (refusal code, None)."""
    call = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""))
    try:
        next(call)
        return grpc.StatusCode.OK, call
    except grpc.RpcError as err:
        return err.code(), None


def test_finished_calls_give_their_slot_back(server: tuple[CoordinatorServer, Homes]) -> None:
    srv, homes = server
    ch = channel(srv, *creds_for(homes.parties["meili"]))
    stub = health_pb2_grpc.HealthStub(ch)
    for _ in range(PER_PARTY * 5):  # sequential unary calls, many more than the concurrent limit
        assert stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status == 1
    ch.close()
    while srv.auth.limiter.held("meili"):
        threading.Event().wait(0.01)


def test_one_party_cannot_take_every_rpc_slot(server: tuple[CoordinatorServer, Homes]) -> None:
    """The coordinator has 20 slots; a party opening 24 streams gets its 4 and is refused the rest,
    while the admin and the other parties are still served."""
    srv, homes = server
    ch = channel(srv, *creds_for(homes.parties["yixin"]))
    results = [open_watch(ch) for _ in range(24)]
    codes = [c for c, _ in results]
    assert codes.count(grpc.StatusCode.OK) == PER_PARTY
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 24 - PER_PARTY
    assert list_parties_status(admin_channel(srv)) == grpc.StatusCode.OK
    other = channel(srv, *creds_for(homes.parties["meili"]))
    code, call = open_watch(other)
    assert code == grpc.StatusCode.OK
    call.cancel()  # type: ignore[attr-defined]
    # a slot comes back when its stream ends
    results[0][1].cancel()  # type: ignore[attr-defined]
    while srv.auth.limiter.held("yixin") >= PER_PARTY:
        threading.Event().wait(0.01)
    code, call = open_watch(ch)
    assert code == grpc.StatusCode.OK
    for _, c in results:
        if c is not None:
            c.cancel()  # type: ignore[attr-defined]
    call.cancel()  # type: ignore[attr-defined]
    ch.close()
    other.close()


class Stream:
    """A hand-driven party link: send messages, read the coordinator's answers."""

    def __init__(self, ch: grpc.Channel) -> None:
        self.q: queue.Queue[link_pb2.PartyMessage | None] = queue.Queue()
        self.call = link_pb2_grpc.PartyLinkStub(ch).Connect(self._requests())

    def _requests(self) -> Iterator[link_pb2.PartyMessage]:
        while (m := self.q.get()) is not None:
            yield m

    def register(self, summary: object = None) -> None:
        msg = link_pb2.Register(summary=summary) if summary is not None else link_pb2.Register()
        self.q.put(link_pb2.PartyMessage(register=msg))

    def first(self) -> grpc.StatusCode:
        try:
            for msg in self.call:
                if msg.WhichOneof("body") == "registered":
                    return grpc.StatusCode.OK
        except grpc.RpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    def close(self) -> None:
        self.q.put(None)
        self.call.cancel()


def test_oversized_summary_is_refused(server: tuple[CoordinatorServer, Homes]) -> None:
    from fedcore.protocol.messages import DataSummary, FeatureInfo, TableSummary

    srv, homes = server
    feats = tuple(FeatureInfo(f"feature_{i:06d}_" + "x" * 40, "numeric") for i in range(20_000))
    big = summary_to_proto(DataSummary(tables=(TableSummary("apps", 10, feats, True),)))
    assert big.ByteSize() > 1 << 20
    s = Stream(channel(srv, *creds_for(homes.parties["meili"])))
    s.register(big)
    assert s.first() == grpc.StatusCode.INVALID_ARGUMENT
    s.close()
    assert "meili" not in srv.hub.online()
    principal = srv.state.principal("meili")
    assert principal is not None and len(principal.summary_json) < 1 << 20


def test_second_link_under_a_live_name_is_refused_and_the_first_kept(server: tuple[CoordinatorServer, Homes]) -> None:
    srv, homes = server
    creds = creds_for(homes.parties["yixin"])
    first = Stream(channel(srv, *creds))
    first.register()
    it = iter(first.call)
    assert next(it).WhichOneof("body") == "registered"
    for _ in range(5):
        second = Stream(channel(srv, *creds))
        second.register()
        assert second.first() == grpc.StatusCode.ALREADY_EXISTS
        second.close()
    assert "yixin" in srv.hub.online()
    assert srv.hub._sessions["yixin"].closed.is_set() is False
    first.close()
    while "yixin" in srv.hub.online():  # once the live link is gone, the name may connect again
        threading.Event().wait(0.01)
    again = Stream(channel(srv, *creds))
    again.register()
    assert again.first() == grpc.StatusCode.OK
    again.close()


def test_connection_that_never_registers_is_closed(server: tuple[CoordinatorServer, Homes]) -> None:
    srv, homes = server
    s = Stream(channel(srv, *creds_for(homes.parties["meili"])))
    code = s.first()  # never sends Register: the coordinator ends the call after its deadline
    assert code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED), code
    s.close()
    while srv.auth.limiter.held("meili"):
        threading.Event().wait(0.01)


def test_second_party_serve_on_one_home_refused_first_keeps_running(tmp_path) -> None:
    import json
    import os
    import subprocess
    import sys

    homes = make_homes(tmp_path, {"yixin": "lender"})  # no coordinator: the node keeps dialling
    home = homes.parties["yixin"]
    env = {**os.environ, "FEDCREDIT_HOME": str(home)}
    cmd = [sys.executable, "-m", "fedcore.cli", "party", "serve"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        status = home / "run" / "status.json"
        while not (status.is_file() and json.loads(status.read_text() or "{}").get("pid") == first.pid):
            assert first.poll() is None
            threading.Event().wait(0.05)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 1 and len(lines) == 1, second.stderr
        assert "already served by another party node" in lines[0] and f"pid {first.pid}" in lines[0]
        assert first.poll() is None
        assert json.loads(status.read_text())["pid"] == first.pid
    finally:
        first.terminate()
        first.wait(60)
