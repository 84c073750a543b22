"""Joint scoring with real party stores: store-backed contributions (consent, fraud, loans), the lender's
ScoringService (scorecard, reason codes, bands), audit at every party, the local gRPC and HTTP APIs."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from fedcredit.v1 import scoring_pb2, scoring_pb2_grpc

from fedcore.errors import InvalidInput, NotFound, PartyUnavailable
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role
from fedcore.protocol.scoring.coordinator import ScoringCoordinator
from fedcore.protocol.scoring.messages import ModelSlice
from fedcore.protocol.scoring.requester import LocalGateway, sigmoid
from fedcore.protocol.tasks import HandlerRegistry
from party_node.audit import AuditLog, verify
from party_node.ingest import ingest_file
from party_node.local_http import HttpApi
from party_node.pseudonym import PseudonymKey
from party_node.schema import parse_schema
from party_node.scoring import ScoringService, register_scoring_handlers
from party_node.scoring_api import scoring_routes, serve_local_grpc
from party_node.scoring_batch import Applicant, Band, ScoringSettings
from party_node.store import Store

N = 400
KEY = PseudonymKey(b"k" * 32)


def phone(i: int) -> str:
    return f"138{i:08d}"


def make_party(
    root: Path,
    name: str,
    rows: range,
    feats: list[str],
    rng: np.random.Generator,
    consent_every: int = 1,
    fraud_every: int = 0,
    loan_every: int = 0,
    intercept: float | None = None,
) -> tuple[Path, Store, ModelSlice, dict[str, np.ndarray]]:
    home = root / name
    home.mkdir()
    cols = ["phone", *feats, "c_scoring", "c_blacklist", "fraud", "loan"]
    x = rng.normal(3, 2, size=(len(rows), len(feats)))
    lines = [",".join(cols)]
    truth: dict[str, np.ndarray] = {}
    for j, i in enumerate(rows):
        consent = consent_every and (i % consent_every == 0)
        fraud = bool(fraud_every) and i % fraud_every == 0
        loan = bool(loan_every) and i % loan_every == 0
        vals = [
            phone(i),
            *(f"{v:.6f}" for v in x[j]),
            str(bool(consent)).lower(),
            "true",
            str(fraud).lower(),
            str(loan).lower(),
        ]
        lines.append(",".join(vals))
        truth[phone(i)] = np.array([*x[j], consent, fraud, loan], dtype=float)
    (home / "d.csv").write_text("\n".join(lines) + "\n")
    schema = parse_schema(
        {
            "dataset": {"name": "d", "id_column": "phone", "id_kind": "phone", "federation_columns": feats},
            "numeric": {f: {"missing": "reject"} for f in feats},
            "consent": {"scoring": "c_scoring", "blacklist": "c_blacklist"},
            "flags": {"fraud": "fraud", "active_loan": "loan"},
        }
    )
    store = Store.open(f"sqlite:///{home / 'store.db'}")
    ingest_file(store, home / "d.csv", schema)
    store.install_pseudonym_key(KEY)
    sl = ModelSlice(
        "m1", "7", name, "d", tuple(feats), rng.normal(0, 0.6, len(feats)), x.mean(axis=0), x.std(axis=0), intercept
    )
    (home / "models" / "m1").mkdir(parents=True)
    (home / "models" / "m1" / "slice.json").write_text(json.dumps(sl.to_dict()))
    return home, store, sl, truth


@pytest.fixture
def fed(tmp_path: Path):
    rng = np.random.default_rng(3)
    lender = make_party(tmp_path, "lender_a", range(N), ["income", "ltv", "age"], rng, intercept=-2.0)
    platform = make_party(
        tmp_path, "platform", range(0, N, 2), ["spend", "tips", "social", "freq"], rng, consent_every=3, fraud_every=10
    )
    other = make_party(tmp_path, "lender_b", range(100, N + 100), ["dti"], rng, fraud_every=7, loan_every=4)
    ch = InMemoryChannel()
    for (home, store, _, _), role in ((platform, Role.PLATFORM), (other, Role.LENDER)):
        reg = HandlerRegistry()
        register_scoring_handlers(reg, store, home)
        ch.add_party(home.name, role, reg)
    ch.add_party("lender_a", Role.LENDER, HandlerRegistry())
    coord = ScoringCoordinator(ch)
    settings = ScoringSettings(model_id="m1", bands=(Band(620, "approve", "A"), Band(560, "review", "C")))
    svc = ScoringService(lender[1], lender[0], LocalGateway(coord, "lender_a"), settings)
    yield {"svc": svc, "lender": lender, "platform": platform, "other": other, "ch": ch}
    for p in (lender, platform, other):
        p[1].close()
    ch.close()


def expected(fed, i: int) -> tuple[float, int, int]:
    _, _, own_sl, own_t = fed["lender"]
    z = own_sl.intercept + own_sl.partial_logit(own_t[phone(i)][None, :3])[0]
    hits = loans = 0
    for key, k in (("platform", 4), ("other", 1)):
        _, _, sl, t = fed[key]
        row = t.get(phone(i))
        if row is None:
            continue
        consent, fraud, loan = row[k:]
        if consent:
            z += sl.partial_logit(row[None, :k])[0]
            loans += int(loan)
        hits += int(fraud)  # blacklist consent is granted for everyone here
    return float(sigmoid(np.array(z))), hits, loans


def test_service_scores_match_plaintext_and_audit_everywhere(fed) -> None:
    svc: ScoringService = fed["svc"]
    batch = svc.score([Applicant(phone(i)) for i in range(N)])
    for i in range(N):
        p, hits, loans = expected(fed, i)
        assert abs(batch.prob_default[i] - p) < 1e-6, i
        assert batch.blacklist_hits[i] == hits and batch.active_loans[i] == loans, i
    row = batch.row(5)
    assert row["model_version"] == "7" and [r["feature"] for r in row["reasons"]].count("consortium_data") == 1
    assert row["decision"] in {"approve", "review", "decline"}
    assert all(r["logit_impact"] > 0 for r in row["reasons"] if r["feature"] != "consortium_data")
    impacts = [r["logit_impact"] for r in row["reasons"]]
    assert impacts == sorted(impacts, reverse=True)  # by impact, the consortium line placed by its size
    assert any(batch.row(i)["decision"] == "decline" and batch.blacklist_hits[i] > 0 for i in range(N))
    for key in ("lender", "platform", "other"):
        res = verify(fed[key][0] / "audit" / "scoring.log")
        assert res.ok and res.records == 1, (key, str(res))
    # features given by the loan system override the store; an unknown applicant gets neutral features
    b2 = svc.score(
        [Applicant("13999999999", features={"income": 1.0, "ltv": 9.0, "age": 3.0}), Applicant("13999999998")]
    )
    assert b2.own_data.tolist() == [True, False]
    assert b2.external_logit[0] == pytest.approx(0.0, abs=1e-6)


def test_service_bad_inputs(fed) -> None:
    svc: ScoringService = fed["svc"]
    with pytest.raises(InvalidInput, match="malformed"):
        svc.score([Applicant("12"), Applicant(phone(1))])
    svc.settings.max_request = 3
    with pytest.raises(InvalidInput, match="over the limit of 3"):
        svc.score([Applicant(phone(i)) for i in range(4)])
    with pytest.raises(InvalidInput, match="version"):
        svc.score([Applicant(phone(1))], model_version="6")
    with pytest.raises(InvalidInput, match="unknown features"):
        svc.score([Applicant(phone(1), features={"salary": 1.0})])
    fed["ch"].disconnect("platform")
    with pytest.raises(PartyUnavailable, match="platform"):
        svc.score([Applicant(phone(1))])
    b = svc.score([Applicant(phone(1))], allow_partial=True)
    assert b.row(0)["partial"] and b.row(0)["missing_parties"] == ["platform"]
    # the failed request is audited too, and the chain still verifies
    assert AuditLog.for_home(fed["lender"][0]).verify().ok


def test_batch_stream_progress_and_invalid_rows(fed) -> None:
    svc: ScoringService = fed["svc"]
    svc.settings.chunk = 150
    seen: list[tuple[int, int | None]] = []
    apps = [Applicant(phone(i)) for i in range(N)] + [Applicant("bad-id")]
    batches = list(svc.score_stream(apps, total=len(apps), progress=lambda d, t: seen.append((d, t))))
    assert [len(b) for b in batches] == [150, 150, 101]
    assert seen[-1] == (N + 1, N + 1)
    assert batches[-1].row(100)["status"] == "invalid_id"


TOKEN = "local-api-test-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


def test_local_grpc_and_http_api(fed) -> None:
    svc: ScoringService = fed["svc"]
    server, port = serve_local_grpc(svc, token=TOKEN)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
            stub = scoring_pb2_grpc.LocalScoringStub(chan)
            one = scoring_pb2.LocalScoreRequest(applicants=[scoring_pb2.Applicant(id=phone(4))])
            for meta in ((), (("authorization", "Bearer wrong"),)):
                with pytest.raises(grpc.RpcError) as info:
                    stub.Score(one, metadata=meta)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.RpcError) as info:
                    list(stub.ScoreBatch(one, metadata=meta))
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            resp = stub.Score(one, metadata=AUTH)
            assert resp.scores[0].status == "ok" and 300 < resp.scores[0].points < 900
            with pytest.raises(grpc.RpcError) as info:
                stub.Score(scoring_pb2.LocalScoreRequest(applicants=[scoring_pb2.Applicant(id="x")]), metadata=AUTH)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            prog = list(
                stub.ScoreBatch(
                    scoring_pb2.LocalScoreRequest(applicants=[scoring_pb2.Applicant(id=phone(i)) for i in range(20)]),
                    metadata=AUTH,
                )
            )
            assert prog[-1].done == 20 and sum(len(p.scores) for p in prog) == 20
            # reflection (no token needed to discover the service; v1alpha and v1)
            from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

            listing = next(reflection_pb2_grpc.ServerReflectionStub(chan).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
            names = {s.name for s in listing.list_services_response.service}
            assert "fedcredit.v1.LocalScoring" in names and "grpc.reflection.v1.ServerReflection" in names
    finally:
        server.stop(0)
    api = HttpApi(scoring_routes(svc), TOKEN)
    try:
        url = f"http://127.0.0.1:{api.port}/v1/score"
        hdr = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
        req = urllib.request.Request(url, json.dumps({"id": phone(8)}).encode(), hdr)
        with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 (loopback test)
            body = json.loads(r.read())
        assert body["scores"][0]["status"] == "ok"
        bad = urllib.request.Request(url, b'{"applicants": [{"id": "nope"}]}', hdr)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=60)  # noqa: S310
        assert err.value.code == 400 and "malformed" in json.loads(err.value.read())["message"]
        anon = urllib.request.Request(url, json.dumps({"id": phone(8)}).encode(), {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(anon, timeout=60)  # noqa: S310
        assert err.value.code == 401
    finally:
        api.stop()


def test_table_fast_path_matches_applicant_path(fed) -> None:
    from party_node.scoring_batch import ApplicantTable

    svc: ScoringService = fed["svc"]
    svc.settings.chunk = 128
    ids = [phone(i) for i in range(N)]
    x = np.stack([fed["lender"][3][p][:3] for p in ids])
    fast = np.concatenate([b.prob_default for b in svc.score_table(ApplicantTable(ids, "phone", x))])
    lookup = np.concatenate([b.prob_default for b in svc.score_table(ApplicantTable(ids, "phone"))])
    slow = svc.score([Applicant(p) for p in ids]).prob_default
    np.testing.assert_allclose(fast, slow, atol=1e-5)  # the CSV held 6 decimals
    np.testing.assert_allclose(lookup, slow, atol=1e-9)


def test_concurrent_calls_are_coalesced_and_errors_stay_per_caller(fed) -> None:
    from concurrent.futures import ThreadPoolExecutor

    svc: ScoringService = fed["svc"]
    ref = svc.score([Applicant(phone(i)) for i in range(40)], on_invalid="skip").prob_default  # not coalesced

    def one(i: int) -> object:
        try:
            return float(svc.score([Applicant(phone(i) if i != 7 else "bad")]).prob_default[0])
        except InvalidInput as exc:
            return exc

    before = svc._coalescer.batches_sent if svc._coalescer else 0
    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(one, range(40)))
    assert isinstance(got[7], InvalidInput) and "#0" in str(got[7])
    for i, v in enumerate(got):
        if i != 7:
            assert abs(v - ref[i]) < 1e-6, i  # type: ignore[operator]
    assert svc._coalescer is not None and svc._coalescer.batches_sent - before < 40
    assert verify(fed["lender"][0] / "audit" / "scoring.log").ok


def test_default_model_name_joint_resolves_to_the_newest_joint_model(fed, tmp_path) -> None:
    from party_node.scoring import JOINT_ALIAS

    svc: ScoringService = fed["svc"]
    svc.settings.model_id = JOINT_ALIAS  # the default of a fresh scoring.json
    assert svc.model().model_id == "m1"  # no model called "joint": the newest one this lender labels
    out = svc.score([Applicant(phone(3))])
    assert out.row(0)["model_id"] == "m1" and out.row(0)["status"] == "ok"
    gateway = LocalGateway(ScoringCoordinator(fed["ch"]), "lender_a")
    empty = ScoringService(fed["lender"][1], tmp_path / "nobody", gateway, ScoringSettings())
    with pytest.raises(NotFound, match="no joint model"):
        empty.model()
