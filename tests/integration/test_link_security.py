"""Who gets in: real gRPC with mutual TLS on loopback against an in-process coordinator server."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import grpc
import pytest
from fedcredit.v1 import admin_pb2, admin_pb2_grpc, link_pb2, link_pb2_grpc

from coordinator.config import load_coordinator_config
from coordinator.server import CoordinatorServer
from coordinator.state import StateStore
from fedcore.crypto.pki import CertificateAuthority, PrivateKey, cert_info, make_csr
from fedcore.grpc_options import secure_target_options
from fedcore.protocol.messages import DataSummary, Task
from fedcore.protocol.tasks import ECHO, HandlerRegistry, register_diagnostics
from party_node.config import load_party_config
from party_node.link import LinkClient, LinkCredentials
from tests.conftest import make_homes


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    homes = make_homes(
        tmp_path_factory.mktemp("sec"), {"yixin": "lender", "meili": "lender", "tiange": "platform"}
    )
    srv = CoordinatorServer(load_coordinator_config(homes.coordinator), port=0)
    srv.start()
    yield srv, homes
    srv.stop(0.5)


def creds_for(home: Path) -> tuple[bytes, bytes, bytes]:
    cfg = load_party_config(home)
    return cfg.tls.ca_cert.read_bytes(), cfg.tls.key.read_bytes(), cfg.tls.cert.read_bytes()


def channel(srv: CoordinatorServer, ca: bytes, key: bytes, cert: bytes) -> grpc.Channel:
    c = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.secure_channel(f"127.0.0.1:{srv.port}", c, options=secure_target_options("coordinator"))


def connect_status(ch: grpc.Channel) -> grpc.StatusCode:
    stub = link_pb2_grpc.PartyLinkStub(ch)
    reg = link_pb2.PartyMessage(register=link_pb2.Register())
    call = stub.Connect(iter([reg]), timeout=5)
    try:
        for msg in call:
            if msg.WhichOneof("body") == "registered":
                return grpc.StatusCode.OK
    except grpc.RpcError as err:
        return err.code()
    finally:
        ch.close()
    return grpc.StatusCode.OK


def list_parties_status(ch: grpc.Channel) -> grpc.StatusCode:
    try:
        admin_pb2_grpc.AdminStub(ch).ListParties(admin_pb2.ListPartiesRequest(), timeout=5)
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        return err.code()
    finally:
        ch.close()


def test_admitted_party_connects(server):
    srv, homes = server
    assert connect_status(channel(srv, *creds_for(homes.parties["yixin"]))) == grpc.StatusCode.OK


def test_certificate_from_another_ca_is_rejected_in_the_handshake(server):
    srv, homes = server
    other = CertificateAuthority.create()
    key = PrivateKey.generate()
    _, cert = other.sign_csr(make_csr(key, "yixin"))
    ca = creds_for(homes.parties["yixin"])[0]
    assert connect_status(channel(srv, ca, key.pem_for_local_tls(), cert)) == grpc.StatusCode.UNAVAILABLE


def test_expired_certificate_is_rejected(server):
    srv, homes = server
    cfg = load_coordinator_config(homes.coordinator)
    ca = CertificateAuthority.load(cfg.tls.ca_key, cfg.tls.ca_cert)
    key = PrivateKey.generate()
    _, cert = ca.sign_csr(make_csr(key, "yixin"), now=dt.datetime(2020, 1, 1, tzinfo=dt.UTC), valid_days=30)
    info = cert_info(cert)
    StateStore(cfg.coordinator.state).add_certificate(
        "yixin",
        serial=info.serial,
        fingerprint=info.fingerprint,
        not_before=info.not_before.timestamp(),
        not_after=info.not_after.timestamp(),
        actor="test",
    )
    status = connect_status(channel(srv, cfg.tls.ca_cert.read_bytes(), key.pem_for_local_tls(), cert))
    # TLS itself refuses the expired chain, before any RPC: the client sees UNAVAILABLE.
    assert status == grpc.StatusCode.UNAVAILABLE


def test_certificate_unknown_to_the_registry_is_unauthenticated(server):
    srv, homes = server
    cfg = load_coordinator_config(homes.coordinator)
    ca = CertificateAuthority.load(cfg.tls.ca_key, cfg.tls.ca_cert)
    key = PrivateKey.generate()
    _, cert = ca.sign_csr(make_csr(key, "ghost"))  # signed by our CA but never admitted
    ch = channel(srv, cfg.tls.ca_cert.read_bytes(), key.pem_for_local_tls(), cert)
    assert connect_status(ch) == grpc.StatusCode.UNAUTHENTICATED


def test_platform_and_lender_cannot_call_admin_rpcs(server):
    srv, homes = server
    assert (
        list_parties_status(channel(srv, *creds_for(homes.parties["tiange"])))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    assert (
        list_parties_status(channel(srv, *creds_for(homes.parties["yixin"])))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    cfg = load_coordinator_config(homes.coordinator)
    admin = (cfg.tls.ca_cert.read_bytes(), cfg.tls.admin_key.read_bytes(), cfg.tls.admin_cert.read_bytes())
    assert list_parties_status(channel(srv, *admin)) == grpc.StatusCode.OK
    # ... and the admin is not a party
    assert connect_status(channel(srv, *admin)) == grpc.StatusCode.PERMISSION_DENIED


def test_health_and_reflection_are_served(server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    srv, homes = server
    ch = channel(srv, *creds_for(homes.parties["yixin"]))
    resp = health_pb2_grpc.HealthStub(ch).Check(
        health_pb2.HealthCheckRequest(service="fedcredit.v1.PartyLink")
    )
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
    req = reflection_pb2.ServerReflectionRequest(list_services="")
    out = next(reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(iter([req])))
    names = {s.name for s in out.list_services_response.service}
    assert {"fedcredit.v1.PartyLink", "fedcredit.v1.Admin"} <= names
    ch.close()


def test_reflection_v1_is_served(server):
    """A v1 reflection client (grpcurl, Postman, current grpc tooling) lists services and gets the
    file descriptors. v1 messages are v1alpha's under a new package: same bytes on the wire."""
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    srv, homes = server
    ch = channel(srv, *creds_for(homes.parties["yixin"]))
    call = ch.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    reqs = [reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="fedcredit.v1.Scoring")]
    listed, files = list(call(iter(reqs), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {"fedcredit.v1.Scoring", "grpc.reflection.v1.ServerReflection"} <= names
    fd = descriptor_pb2.FileDescriptorProto.FromString(files.file_descriptor_response.file_descriptor_proto[0])
    assert fd.name == "fedcredit/v1/scoring.proto" and fd.options.go_package.endswith(";fedcreditv1")
    ch.close()


def _client(home: Path, port: int, name: str | None = None) -> LinkClient:
    cfg = load_party_config(home)
    reg = HandlerRegistry()
    register_diagnostics(reg)
    return LinkClient(
        name=name or cfg.party.name,
        address=f"127.0.0.1:{port}",
        server_name="coordinator",
        credentials=LinkCredentials(
            cfg.tls.ca_cert.read_bytes(), cfg.tls.cert.read_bytes(), cfg.tls.key.read_bytes()
        ),
        registry=reg,
        summary=DataSummary,
        heartbeat_s=0.3,
        reconnect_max_s=0.5,
    )


def test_no_party_can_register_under_another_name(server):
    srv, homes = server
    # meili's node, misconfigured (or malicious) to call itself yixin: the name comes from the certificate.
    client = _client(homes.parties["meili"], srv.port, name="yixin")
    t = threading.Thread(target=client.run, daemon=True)
    t.start()
    _wait_for_failures(client, 2)  # refused twice: a state, not a fixed sleep
    client.stop()
    assert not client.wait_registered(0)
    assert "meili" in client.status.last_error and "yixin" in client.status.last_error
    assert "yixin" not in srv.hub.online()


def test_revocation_cuts_the_live_link_and_keeps_it_out(server):
    srv, homes = server
    client = _client(homes.parties["meili"], srv.port)
    t = threading.Thread(target=client.run, daemon=True)
    t.start()
    assert srv.hub.wait_online(["meili"], 10)
    assert srv.hub.run("meili", Task(ECHO, {"x": 1}, timeout_s=5)).params == {"x": 1}
    StateStore(load_coordinator_config(homes.coordinator).coordinator.state).revoke(
        "meili", reason="test", actor="admin"
    )
    t0 = time.monotonic()
    while "meili" in srv.hub.online() and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    assert "meili" not in srv.hub.online()
    failures = client.status.failures
    _wait_for_failures(client, failures + 2)  # it kept retrying, and was refused each time
    assert "meili" not in srv.hub.online()
    assert "revoked" in client.status.last_error
    client.stop()
    assert connect_status(channel(srv, *creds_for(homes.parties["meili"]))) == grpc.StatusCode.UNAUTHENTICATED


def _wait_for_failures(client: LinkClient, n: int, limit_s: float = 120.0) -> None:
    end = time.monotonic() + limit_s
    while client.status.failures < n:
        assert time.monotonic() < end, f"only {client.status.failures} failed attempts"
        time.sleep(0.05)
