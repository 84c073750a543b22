"""Joint scoring over real mutual-TLS gRPC on loopback: the requester's node calls the coordinator's
``Scoring/Score`` with its certificate, the coordinator fans out over the party links and sums.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from coordinator.config import load_coordinator_config
from coordinator.server import CoordinatorServer
from coordinator.state import StateStore
from fedcore.errors import PermissionDenied, Unauthenticated
from fedcore.protocol.messages import DataSummary
from fedcore.protocol.scoring.messages import ModelSlice
from fedcore.protocol.scoring.party import ArrayContributions, ScoringParty
from fedcore.protocol.scoring.requester import Requester, sigmoid
from fedcore.protocol.tasks import HandlerRegistry
from party_node.config import load_party_config
from party_node.link import LinkClient, LinkCredentials
from party_node.scoring import GrpcGateway
from tests.conftest import Homes, make_homes

N = 5000


def pseudo(i: int) -> bytes:
    return hashlib.sha256(b"g%d" % i).digest()[:16]


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    homes = make_homes(tmp_path_factory.mktemp("scoring"), {"yixin": "lender", "meili": "lender", "tiange": "platform"})
    srv = CoordinatorServer(load_coordinator_config(homes.coordinator))
    srv.start()
    rng = np.random.default_rng(5)
    truth = np.zeros(N)
    clients = []
    for name in ("meili", "tiange"):
        k = 3
        sl = ModelSlice(
            "m", "1", name, "d", tuple(f"f{j}" for j in range(k)), rng.normal(0, 1, k), np.zeros(k), np.ones(k)
        )
        x = rng.normal(0, 1, (N, k))
        known = rng.random(N) < 0.7
        truth += np.where(known, sl.partial_logit(x), 0.0)
        src = ArrayContributions.build([sl], {"m": ([pseudo(i) for i in np.flatnonzero(known)], x[known])})
        reg = HandlerRegistry()
        ScoringParty(src).register(reg)
        cfg = load_party_config(homes.parties[name])
        c = LinkClient(
            name=name,
            address=f"127.0.0.1:{srv.port}",
            server_name="coordinator",
            credentials=LinkCredentials(
                cfg.tls.ca_cert.read_bytes(), cfg.tls.cert.read_bytes(), cfg.tls.key.read_bytes()
            ),
            registry=reg,
            summary=DataSummary,
            heartbeat_s=0.3,
        )
        threading.Thread(target=c.run, daemon=True).start()
        clients.append(c)
    assert srv.hub.wait_online(["meili", "tiange"], 15)
    yield {"homes": homes, "srv": srv, "truth": truth, "clients": clients}
    for c in clients:
        c.stop()
    srv.stop(0.5)


def gateway(homes: Homes, name: str, port: int) -> GrpcGateway:
    cfg = load_party_config(homes.parties[name])
    return GrpcGateway(
        f"127.0.0.1:{port}",
        "coordinator",
        cfg.tls.ca_cert.read_bytes(),
        cfg.tls.cert.read_bytes(),
        cfg.tls.key.read_bytes(),
    )


def test_joint_score_over_grpc_matches_plaintext(fed: dict) -> None:
    gw = gateway(fed["homes"], "yixin", fed["srv"].port)
    req = Requester(gw)
    ids = [pseudo(i) for i in range(N)]
    out = req.query(ids, model_id="m", model_version="1")
    assert out.contributors == 2 and out.external_logit is not None
    assert np.max(np.abs(sigmoid(out.external_logit - 1) - sigmoid(fed["truth"] - 1))) < 1e-4
    out2 = req.query(ids[:3], model_id="m", model_version="1")  # context cached at the coordinator now
    assert out2.external_logit is not None
    np.testing.assert_allclose(out2.external_logit, fed["truth"][:3], atol=1e-5)
    gw.close()
    # the coordinator's audit counts applicants (not the bytes of their 16-byte pseudonyms)
    counts = [e.detail["applicants"] for e in fed["srv"].state.audit_log() if e.action == "score"]
    assert counts[-2:] == [N, 3]


def test_platform_may_not_request_scores(fed: dict) -> None:
    gw = gateway(fed["homes"], "tiange", fed["srv"].port)
    with pytest.raises(PermissionDenied):
        Requester(gw).query([pseudo(1)], model_id="m", model_version="1")
    gw.close()


def test_expired_requester_certificate_is_refused(fed: dict) -> None:
    """A lender whose certificate expired cannot even open the connection to ask for scores."""
    import datetime as dt

    from fedcore.crypto.pki import CertificateAuthority, PrivateKey, cert_info, make_csr
    from fedcore.errors import Unavailable

    homes = fed["homes"]
    cfg = load_coordinator_config(homes.coordinator)
    ca = CertificateAuthority.load(cfg.tls.ca_key, cfg.tls.ca_cert)
    key = PrivateKey.generate()
    _, cert = ca.sign_csr(make_csr(key, "meili"), now=dt.datetime(2020, 1, 1, tzinfo=dt.UTC), valid_days=30)
    info = cert_info(cert)
    state = StateStore(cfg.coordinator.state)
    try:
        state.add_certificate("meili", serial=info.serial, fingerprint=info.fingerprint,
                              not_before=info.not_before.timestamp(), not_after=info.not_after.timestamp(), actor="t")
    finally:
        state.close()
    gw = GrpcGateway(f"127.0.0.1:{fed['srv'].port}", "coordinator", cfg.tls.ca_cert.read_bytes(), cert,
                     key.pem_for_local_tls())
    with pytest.raises(Unavailable):
        Requester(gw).query([pseudo(1)], model_id="m", model_version="1", timeout_s=5)
    gw.close()


def test_revoked_requester_is_refused(fed: dict) -> None:
    homes = fed["homes"]
    gw = gateway(homes, "yixin", fed["srv"].port)
    state = StateStore(load_coordinator_config(homes.coordinator).coordinator.state)
    try:
        state.revoke("yixin", reason="test", actor="admin")
    finally:
        state.close()
    with pytest.raises(Unauthenticated, match="revoked"):
        Requester(gw).query([pseudo(1)], model_id="m", model_version="1")
    gw.close()


def test_cli_score_id_and_file_then_audit_verify(fed: dict, tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from party_node.pseudonym import PseudonymKey
    from party_node.scoring_cli import app
    from party_node.store import Store

    home = fed["homes"].parties["meili"]  # a lender that has not been revoked by the test above
    key = PseudonymKey(b"q" * 32)
    key.export_to_file(home / "keys" / "pseudonym.key")
    cfg = load_party_config(home)
    Store.open(cfg.store_url(), pseudonym_key=key).close()
    sl = ModelSlice("m", "1", "meili", "d", ("a", "b"), np.array([0.5, -0.2]), np.zeros(2), np.ones(2), -1.0)
    (home / "models" / "m").mkdir(parents=True, exist_ok=True)
    (home / "models" / "m" / "slice.json").write_text(json.dumps(sl.to_dict()))
    (home / "scoring.json").write_text(json.dumps({"model_id": "m", "chunk": 2}))
    runner = CliRunner()
    res = runner.invoke(
        app, ["score", "--home", str(home), "--id", "13800000001", "--feature", "a=1.5", "--feature", "b=0"]
    )
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout.strip().splitlines()[-1])
    assert row["status"] == "ok" and row["model_version"] == "1" and row["own_data"] is True
    assert abs(row["prob_default"] - float(sigmoid(np.array(-1.0 + 0.75)))) < 1e-4
    csv = tmp_path / "apps.csv"
    csv.write_text("id,a,b\n13800000001,1,2\n13800000002,0,0\nnot-a-phone,1,1\n")
    out = tmp_path / "out.jsonl"
    res = runner.invoke(app, ["score", "--home", str(home), "--file", str(csv), "--out", str(out), "--kind", "phone"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok", "ok", "invalid_id"]
    assert "scored 3/3" in res.output
    bad = runner.invoke(app, ["score", "--home", str(home), "--id", "12"])
    assert bad.exit_code == 1 and "malformed" in bad.output
    ok = runner.invoke(app, ["audit", "verify", "--home", str(home)])
    assert ok.exit_code == 0 and "OK" in ok.output
