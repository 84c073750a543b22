"""Categorical data end to end at a lender: text labels with a declared mapping, a declared fallback for
unseen levels, and raw category strings at every scoring entry point (service / CLI ``--feature``, batch
file, gRPC, HTTP) giving exactly the score of the level's stored code."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from fedcredit.v1 import scoring_pb2, scoring_pb2_grpc

from fedcore.errors import ConfigError, InvalidInput
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role
from fedcore.protocol.scoring.coordinator import ScoringCoordinator
from fedcore.protocol.scoring.messages import ModelSlice
from fedcore.protocol.scoring.requester import LocalGateway
from fedcore.protocol.tasks import HandlerRegistry
from party_node.ingest import ingest_file
from party_node.local_http import HttpApi
from party_node.pseudonym import PseudonymKey
from party_node.schema import parse_schema
from party_node.scoring import ScoringService, register_scoring_handlers
from party_node.scoring_api import parse_json_request, scoring_routes, serve_local_grpc
from party_node.scoring_batch import Applicant, ScoringSettings
from party_node.scoring_cli import _parse_features, read_applicants, read_table
from party_node.served import served_hist
from party_node.store import Store

KEY = PseudonymKey(b"k" * 32)
PURPOSES = ["car", "furniture", "education", "other"]


def phone(i: int) -> str:
    return f"138{i:08d}"


def lender_schema(**label: object) -> dict:
    return {
        "dataset": {"name": "d", "id_column": "phone", "id_kind": "phone", "label_column": "status",
                    "federation_columns": ["income", "purpose"], "consent_all": ["training", "scoring", "blacklist"],
                    **label},
        "numeric": {"income": {"missing": "reject"}},
        "categorical": {"purpose": {"missing": "category", "unseen": "other"}},
    }


def write_lender(home: Path, n: int, rng: np.random.Generator) -> Path:
    lines = ["phone,status,income,purpose"]
    for i in range(n):
        lines.append(f"{phone(i)},{'bad' if i % 5 == 0 else 'good'},{rng.normal(3, 1):.5f},{PURPOSES[i % 4]}")
    (home / "d.csv").write_text("\n".join(lines) + "\n")
    return home / "d.csv"


def test_text_labels_map_as_declared_and_other_values_are_rejected_when_good_is_declared(tmp_path: Path) -> None:
    f = write_lender(tmp_path, 20, np.random.default_rng(0))
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        ingest_file(store, f, parse_schema(lender_schema(label_bad=["bad"])))
        _, y = store.labels("d")
        assert y.tolist() == [1 if i % 5 == 0 else 0 for i in range(20)]
    text = f.read_text().replace(f"{phone(3)},good", f"{phone(3)},unknown")
    f.write_text(text)
    with Store.open(f"sqlite:///{tmp_path / 's2.db'}") as store:
        with pytest.raises(InvalidInput, match=r"column 'status': label must be one of 'bad', 'good'"):
            ingest_file(store, f, parse_schema(lender_schema(label_bad=["bad"], label_good=["good"])), max_rejects=0)
    with pytest.raises(ConfigError, match="label_good"):
        parse_schema(lender_schema(label_bad=["bad"], label_good=["bad"]))
    with pytest.raises(ConfigError, match="label_column"):
        parse_schema({"dataset": {"name": "d", "id_column": "p", "id_kind": "phone", "label_bad": ["x"]}})


def test_unseen_level_at_ingest_with_a_fixed_vocabulary_maps_to_the_declared_fallback(tmp_path: Path) -> None:
    schema = lender_schema()
    schema["categorical"]["purpose"] = {"vocabulary": ["car", "other"], "unseen": "other"}
    f = write_lender(tmp_path, 8, np.random.default_rng(0))
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        ingest_file(store, f, parse_schema({**schema, "dataset": {**schema["dataset"], "label_bad": ["bad"]}}))
        vocab = store.dataset_info("d").vocabularies["purpose"]
        _, x = store.feature_matrix("d", ["purpose"])
        # furniture and education were never declared: they are "other"
        assert [vocab[int(c)] for c in x[:, 0]] == ["car", "other", "other", "other"] * 2
    with pytest.raises(ConfigError, match="not in the vocabulary"):
        schema["categorical"]["purpose"] = {"vocabulary": ["car"], "unseen": "other"}
        parse_schema(schema)


@pytest.fixture
def svc(tmp_path: Path):
    rng = np.random.default_rng(5)
    home = tmp_path / "lender"
    home.mkdir()
    store = Store.open(f"sqlite:///{home / 'store.db'}")
    ingest_file(store, write_lender(home, 40, rng), parse_schema(lender_schema(label_bad=["bad"])))
    store.install_pseudonym_key(KEY)
    sl = ModelSlice("m1", "1", "lender", "d", ("income", "purpose"), np.array([0.4, 0.7]), np.array([3.0, 2.0]),
                    np.array([1.0, 1.0]), -2.0)
    (home / "models" / "m1").mkdir(parents=True)
    (home / "models" / "m1" / "slice.json").write_text(json.dumps(sl.to_dict()))
    ch = InMemoryChannel()
    ch.add_party("lender", Role.LENDER, HandlerRegistry())
    phome = tmp_path / "platform"
    phome.mkdir()
    pstore = Store.open(f"sqlite:///{phome / 'store.db'}")
    (phome / "p.csv").write_text("phone,spend\n" + "".join(f"{phone(i)},{rng.normal():.4f}\n" for i in range(40)))
    ingest_file(pstore, phome / "p.csv", parse_schema({
        "dataset": {"name": "p", "id_column": "phone", "id_kind": "phone", "federation_columns": ["spend"],
                    "consent_all": ["training", "scoring", "blacklist"]},
        "numeric": {"spend": {"missing": "reject"}}}))
    pstore.install_pseudonym_key(KEY)
    psl = ModelSlice("m1", "1", "platform", "p", ("spend",), np.array([0.3]), np.array([0.0]), np.array([1.0]), None)
    (phome / "models" / "m1").mkdir(parents=True)
    (phome / "models" / "m1" / "slice.json").write_text(json.dumps(psl.to_dict()))
    reg = HandlerRegistry()
    register_scoring_handlers(reg, pstore, phome)
    ch.add_party("platform", Role.PLATFORM, reg)
    service = ScoringService(store, home, LocalGateway(ScoringCoordinator(ch), "lender"),
                             ScoringSettings(model_id="m1"))
    yield service, store, tmp_path
    store.close()
    pstore.close()
    ch.close()


def code(store: Store, level: str) -> float:
    return float(store.encode_categories("d", "purpose", [level])[0])


def test_raw_levels_score_as_their_codes_at_the_service_and_cli(svc) -> None:
    service, store, _ = svc
    feats = _parse_features(["income=2.5", "purpose=education"])
    assert feats == {"income": 2.5, "purpose": "education"}
    raw = service.score([Applicant("13999999999", features=feats)])
    coded = service.score([Applicant("13999999999", features={"income": 2.5, "purpose": code(store, "education")})])
    assert raw.prob_default[0] == pytest.approx(coded.prob_default[0], abs=1e-6)
    other = service.score([Applicant("13999999999", features={"income": 2.5, "purpose": "car"})])
    assert abs(other.prob_default[0] - raw.prob_default[0]) > 1e-3  # the level matters
    # A level never seen scores as the declared fallback ("other").
    boat = service.score([Applicant("13999999999", features={"income": 2.5, "purpose": "boat"})])
    fallback = service.score([Applicant("13999999999", features={"income": 2.5, "purpose": "other"})])
    assert boat.prob_default[0] == pytest.approx(fallback.prob_default[0], abs=1e-6)
    served = served_hist(service.home / "models" / "m1")  # every served score counted for stability
    assert served is not None and served.n == 5
    with pytest.raises(InvalidInput, match=r"applicant 0: feature 'income' is numeric; 'high' is not a number"):
        service.score([Applicant("13999999999", features={"income": "high", "purpose": "car"})])
    with pytest.raises(InvalidInput, match="NAME=VALUE"):
        _parse_features(["purpose="])


def test_raw_levels_in_a_batch_file(svc) -> None:
    service, store, tmp = svc
    f = tmp / "apps.csv"
    f.write_text(f"id,income,purpose\n{phone(1)},2.0,car\n{phone(2)},2.0,furniture\n")
    assert read_table(f, ("income", "purpose"), "phone") is None  # text cells: the per-row reader
    apps = read_applicants(f, "phone")
    [batch] = list(service.score_stream(apps, total=2))
    coded = service.score([Applicant(phone(1), "phone", {"income": 2.0, "purpose": code(store, "car")}),
                           Applicant(phone(2), "phone", {"income": 2.0, "purpose": code(store, "furniture")})])
    assert batch.prob_default.tolist() == pytest.approx(coded.prob_default.tolist(), abs=1e-6)


def test_raw_levels_over_grpc_and_http(svc) -> None:
    service, store, _ = svc
    want = service.score([Applicant("13999999999", features={"income": 1.5, "purpose": code(store, "car")})])
    token = "local-api-test-token-0123456789"
    server, port = serve_local_grpc(service, token=token)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
            stub = scoring_pb2_grpc.LocalScoringStub(chan)
            resp = stub.Score(scoring_pb2.LocalScoreRequest(applicants=[scoring_pb2.Applicant(
                id="13999999999", features={"income": 1.5}, categories={"purpose": "car"})]),
                metadata=(("authorization", f"Bearer {token}"),))
            assert resp.scores[0].prob_default == pytest.approx(want.prob_default[0], abs=1e-6)
    finally:
        server.stop(None)
    apps, _ = parse_json_request({"applicants": [{"id": "13999999999", "features": {"income": 1.5, "purpose": "car"}}]})
    assert apps[0].features == {"income": 1.5, "purpose": "car"}
    api = HttpApi(scoring_routes(service), token)
    try:
        body = json.dumps({"applicants": [{"id": "13999999999", "features": {"income": 1.5, "purpose": "car"}}]})
        req = urllib.request.Request(f"http://127.0.0.1:{api.port}/v1/score", body.encode(),
                                     {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 (loopback test)
            got = json.loads(r.read())
        assert got["scores"][0]["prob_default"] == pytest.approx(want.prob_default[0], abs=1e-6)
    finally:
        api.stop()


def test_party_evaluate_of_a_joint_model_goes_through_joint_scoring(svc) -> None:
    from sklearn.metrics import roc_auc_score

    from party_node.evaluate import evaluate_file

    service, store, tmp = svc
    f = tmp / "holdout.csv"
    rows = [f"{phone(i)},{'bad' if i % 3 == 0 else 'good'},{1.0 + i / 10:.2f},{PURPOSES[i % 4]}" for i in range(30)]
    f.write_text("phone,status,income,purpose\n" + "\n".join(rows) + "\n")
    ev = evaluate_file(tmp / "lender", store, lambda: service, "m1", f, id_column="phone", label_column="status",
                       kind="phone", label_bad=("bad",), label_good=("good",))
    assert ev.kind == "joint" and len(ev.y) == 30 and ev.y.sum() == 10
    direct = service.score([Applicant(phone(i), "phone", {"income": 1.0 + i / 10, "purpose": PURPOSES[i % 4]})
                            for i in range(30)])
    np.testing.assert_allclose(ev.p, direct.prob_default, atol=1e-6)
    assert abs(ev.metrics["auc"] - roc_auc_score(ev.y, ev.p)) < 1e-12
    f.write_text("phone,status,income,purpose\n" + rows[0] + "\n" + rows[1].replace("good", "maybe") + "\n")
    with pytest.raises(InvalidInput, match=r"row 3, column 'status': label 'maybe'"):
        evaluate_file(tmp / "lender", store, lambda: service, "m1", f, id_column="phone", label_column="status",
                      kind="phone", label_bad=("bad",), label_good=("good",))


def test_onehot_encoding_for_the_joint_model_and_its_slice(svc) -> None:
    from fedcore.protocol.vertical.session import Table
    from party_node.vertical import onehot_table

    _, store, _ = svc
    _, x = store.feature_matrix("d", ["income", "purpose"], allow_local=True)
    t = onehot_table(store, Table(x, ["income", "purpose"], "d"))
    # four equally common levels: the first seen is the reference, the other three get indicators
    assert t.features[0] == "income" and sorted(t.features[1:]) == ["purpose=education", "purpose=furniture",
                                                                    "purpose=other"]
    assert t.base_features == ["income", "purpose"] and t.columns is not None and t.columns[0] == (0, None)
    assert np.all(t.X[:, 1:].sum(axis=1) <= 1)
    # the lenders' shared schema declares no vocabulary for purpose: lenders keep its codes (they could
    # not agree on levels from their own data)
    shared = onehot_table(store, Table(x, ["income", "purpose"], "d"), shared=True)
    assert shared.features == ["income", "purpose"] and shared.columns == [(0, None), (1, None)]
    w = np.array([0.5, 1.0, -2.0, 0.3])
    mean, std = t.X.mean(axis=0), t.X.std(axis=0)
    sl = ModelSlice("m", "1", "p", "d", ("income", "purpose"), w, mean, std, -1.0, tuple(t.columns))
    back = ModelSlice.from_dict(json.loads(json.dumps(sl.to_dict())))
    expected = ((t.X - mean) / std * w).sum(axis=1)
    np.testing.assert_allclose(back.partial_logit(x), expected, atol=1e-12)
    contrib = back.contributions(x)
    assert contrib.shape == (len(x), 2)  # one reason line per stored feature, levels summed
    np.testing.assert_allclose(back.contributions(back.neutral()[None, :]), 0.0, atol=1e-12)
