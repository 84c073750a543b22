"""``--encoding woe`` for the joint logistic model on real stores: a federated binning run leaves each
party its own bins and WOE; vertical training encodes each party's columns with them; the slices keep
the encoding, so joint scoring of raw category strings (and of an unseen level, through the declared
fallback) applies the same transform, and the party's points table is the classic scorecard (exact)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedcore.errors import InvalidInput, NotFound
from fedcore.protocol.binning.coordinator import BinningSettings, run_binning
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role
from fedcore.protocol.scoring.coordinator import ScoringCoordinator
from fedcore.protocol.scoring.messages import ModelSlice
from fedcore.protocol.scoring.requester import LocalGateway
from fedcore.protocol.sealing import make_identities
from fedcore.protocol.tasks import HandlerRegistry
from fedcore.protocol.vertical.coordinator import VerticalConfig, run_vertical
from fedcore.protocol.vertical.numerics import split_rows
from models.scorecard import Scorecard
from party_node.alignment import StoreAlignment
from party_node.binning import load_result, register_binning_handlers
from party_node.ingest import ingest_file
from party_node.pseudonym import PseudonymKey
from party_node.schema import parse_schema
from party_node.scorecard import party_scorecard
from party_node.scoring import ScoringService, register_scoring_handlers
from party_node.scoring_batch import Applicant, ScoringSettings
from party_node.store import Store
from party_node.vertical import StoreVerticalSource, register_vertical_handlers

KEY = PseudonymKey(b"w" * 32)
PURPOSES = ["car", "furniture", "education", "business", "other"]
SEGMENTS = ["gold", "silver", "bronze"]
N = 1200


def phone(i: int) -> str:
    return f"139{i:08d}"


def _ingest(home: Path, name: str, header: str, lines: list[str], schema: dict) -> Store:
    home.mkdir(parents=True)
    (home / f"{name}.csv").write_text(header + "\n" + "\n".join(lines) + "\n")
    store = Store.open(f"sqlite:///{home / 'store.db'}")
    ingest_file(store, home / f"{name}.csv", parse_schema(schema))
    store.install_pseudonym_key(KEY)
    return store


def _align(store: Store, run: str) -> StoreAlignment:
    al = StoreAlignment(store)
    keys, ids = al.subjects_for_psi("training")
    by_id = {i.decode().split(":", 1)[1]: int(k) for k, i in zip(keys, ids, strict=True)}
    al.stage_alignment(run, np.array([by_id[phone(i)] for i in range(N)], dtype=np.int64))
    al.commit_alignment(run)
    return al


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("woe")
    rng = np.random.default_rng(21)
    purpose = rng.integers(0, len(PURPOSES), N)
    segment = rng.integers(0, len(SEGMENTS), N)
    income, spend = rng.normal(3, 1, N), rng.normal(0, 1, N)
    logit = -1.5 - 0.8 * (income - 3) + np.array([1.2, 0.0, -0.6, 0.8, 0.2])[purpose] \
        + 0.9 * spend + np.array([-1.0, 0.0, 1.0])[segment]
    y = rng.random(N) < 1 / (1 + np.exp(-logit))
    consent = ["training", "scoring", "blacklist"]
    lender = _ingest(tmp / "bank", "d", "phone,status,income,purpose",
                     [f"{phone(i)},{'bad' if y[i] else 'good'},{income[i]:.5f},{PURPOSES[purpose[i]]}"
                      for i in range(N)],
                     {"dataset": {"name": "d", "id_column": "phone", "id_kind": "phone", "label_column": "status",
                                  "label_bad": ["bad"], "federation_columns": ["income", "purpose"],
                                  "consent_all": consent},
                      "numeric": {"income": {"missing": "reject"}},
                      "categorical": {"purpose": {"missing": "category", "unseen": "other"}}})
    platform = _ingest(tmp / "tiange", "p", "phone,spend,segment",
                       [f"{phone(i)},{spend[i]:.5f},{SEGMENTS[segment[i]]}" for i in range(N)],
                       {"dataset": {"name": "p", "id_column": "phone", "id_kind": "phone",
                                    "federation_columns": ["spend", "segment"], "consent_all": consent},
                        "numeric": {"spend": {"missing": "reject"}},
                        "categorical": {"segment": {"missing": "category"}}})
    stores = {"bank": lender, "tiange": platform}
    ch = InMemoryChannel()
    ids = make_identities(list(stores))
    for name, store in stores.items():
        reg = HandlerRegistry()
        al = _align(store, "psi-1")
        register_binning_handlers(reg, store, al, tmp / name, name, ids[name])
        register_vertical_handlers(reg, store, al, tmp / name, name, ids[name])
        if name == "tiange":
            register_scoring_handlers(reg, store, tmp / name)
        ch.add_party(name, Role.PLATFORM if name == "tiange" else Role.LENDER, reg)
    # one lender: the platform learns that lender's pooled counts (min_lenders=1, as --min-lenders allows)
    run_binning(ch, ["bank"], "tiange", BinningSettings(min_lenders=1, max_bins=5), run_id="bin-1",
                data_params={"psi_runs": {"bank": "psi-1"}})
    cfg = VerticalConfig(epochs=8, lr=0.1, encoding="woe", binning_run="bin-1")
    res = run_vertical(ch, "woe-1", ["bank"], "tiange", {"bank": "psi-1"}, cfg, workdir=tmp / "coord")
    service = ScoringService(lender, tmp / "bank", LocalGateway(ScoringCoordinator(ch), "bank"),
                             ScoringSettings(model_id="woe-1"))
    yield {"tmp": tmp, "stores": stores, "res": res, "service": service, "ch": ch}
    ch.close()
    for s in stores.values():
        s.close()


def _slice(fed, party: str) -> ModelSlice:
    return ModelSlice.load(fed["tmp"] / party / "models", "woe-1")


def test_each_party_trains_on_the_woe_of_its_own_bins_and_the_slice_keeps_them(fed) -> None:
    assert fed["res"].metrics["bank"]["auc"] > 0.7
    for party, feats in (("bank", ("income", "purpose")), ("tiange", ("spend", "segment"))):
        sl = _slice(fed, party)
        assert sl.features == feats and sl.woe is not None and sl.columns is None
        assert sl.encoding is not None and sl.encoding["binning_run"] == "bin-1"
        detail = load_result(fed["tmp"] / party, "bin-1")["features"]
        for b, w in zip(sl.woe.encoder.binnings, sl.woe.encoder.woe, strict=True):
            opt = detail[b.feature]["optimal"]
            assert b.to_dict() == opt["binning"] and list(w) == [x["woe"] for x in opt["bins"]]
        # the training scaler is that of the WOE values: the mean WOE of the training rows (PSI order)
        store = fed["stores"][party]
        _, x = store.feature_matrix(sl.dataset, list(sl.features), purpose="training")
        train, _ = split_rows(N, 0.2, 0, 0)
        np.testing.assert_allclose(sl.woe.transform(x)[train].mean(axis=0), sl.mean, atol=1e-9)
    # a riskier purpose (car: +1.2) has a higher WOE than a safer one (education: -0.6); positive weight
    sl = _slice(fed, "bank")
    store = fed["stores"]["bank"]
    codes = store.encode_categories("d", "purpose", ["car", "education"])
    woe = sl.woe.transform(np.array([[3.0, codes[0]], [3.0, codes[1]]]))[:, 1]
    assert woe[0] > woe[1] and sl.weights[1] > 0


def test_joint_scoring_of_raw_levels_applies_the_woe_at_every_party(fed) -> None:
    service, store = fed["service"], fed["stores"]["bank"]
    lsl, psl = _slice(fed, "bank"), _slice(fed, "tiange")
    i = 7
    got = service.score([Applicant(phone(i), "phone", {"income": 2.5, "purpose": "education"})])
    code = store.encode_categories("d", "purpose", ["education"])[0]
    own = lsl.intercept + lsl.partial_logit(np.array([[2.5, code]]))[0]
    pstore = fed["stores"]["tiange"]
    rids, px = pstore.feature_matrix("p", ["spend", "segment"], purpose="scoring")
    prow = px[int(np.searchsorted(rids, pstore.row_ids_for([phone(i)], "phone")[0]))]
    plat = psl.partial_logit(prow[None, :])[0]
    assert got.prob_default[0] == pytest.approx(1 / (1 + np.exp(-(own + plat))), abs=1e-6)
    # a level never seen goes to the declared fallback ("other"), as at ingest
    boat = service.score([Applicant(phone(i), "phone", {"income": 2.5, "purpose": "boat"})])
    other = service.score([Applicant(phone(i), "phone", {"income": 2.5, "purpose": "other"})])
    assert boat.prob_default[0] == pytest.approx(other.prob_default[0], abs=1e-9)
    assert abs(boat.prob_default[0] - got.prob_default[0]) > 1e-4
    # a code past the training vocabulary (a level stored after training) also takes the fallback bin
    k = len(store.dataset_info("d").vocabularies["purpose"])
    z = lsl.woe.transform(np.array([[2.5, float(k + 3)], [2.5, float(store.encode_categories("d", "purpose",
                                                                                          ["other"])[0])]]))
    assert z[0, 1] == z[1, 1]


def test_batch_grpc_and_http_scoring_of_raw_levels_match_the_service(fed) -> None:
    import urllib.request

    import grpc
    from fedcredit.v1 import scoring_pb2, scoring_pb2_grpc

    from party_node.local_http import HttpApi
    from party_node.scoring_api import scoring_routes, serve_local_grpc

    service = fed["service"]
    apps = [Applicant(phone(i), "phone", {"income": 2.0 + i / 10, "purpose": PURPOSES[i % 5]}) for i in range(6)]
    want = service.score(apps).prob_default
    batches = list(service.score_stream(apps, total=len(apps)))
    np.testing.assert_allclose(np.concatenate([b.prob_default for b in batches]), want, atol=1e-9)
    token = "local-api-test-token-0123456789"
    server, port = serve_local_grpc(service, token=token)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
            resp = scoring_pb2_grpc.LocalScoringStub(chan).Score(scoring_pb2.LocalScoreRequest(applicants=[
                scoring_pb2.Applicant(id=phone(1), id_kind="phone", features={"income": 2.1},
                                      categories={"purpose": PURPOSES[1]})]),
                metadata=(("authorization", f"Bearer {token}"),))
        assert resp.scores[0].prob_default == pytest.approx(want[1], abs=1e-6)
    finally:
        server.stop(None)
    api = HttpApi(scoring_routes(service), token)
    try:
        body = json.dumps({"applicants": [{"id": phone(2), "id_kind": "phone",
                                           "features": {"income": 2.2, "purpose": PURPOSES[2]}}]})
        req = urllib.request.Request(f"http://127.0.0.1:{api.port}/v1/score", body.encode(),
                                     {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310 (loopback test)
            got = json.loads(r.read())
        assert got["scores"][0]["prob_default"] == pytest.approx(want[2], abs=1e-6)
    finally:
        api.stop()


def test_points_table_of_a_woe_model_is_the_exact_classic_scorecard(fed) -> None:
    sc = Scorecard(600, 50, 20)
    lsl = _slice(fed, "bank")
    card = party_scorecard(fed["tmp"] / "bank", fed["stores"]["bank"], "woe-1", sc)
    assert card.binning_run == "bin-1" and all(card.exact.values()) and card.basepoints is not None
    rows = card.records()
    assert {r["variable"] for r in rows} == {"basepoints", "income", "purpose"}  # its own features only
    # one applicant's own-side points = base points + one bin's points per feature
    code = fed["stores"]["bank"].encode_categories("d", "purpose", ["car"])[0]
    x = np.array([[2.2, code]])
    bins = lsl.woe.bins(x)[0]
    labels = {f: [r for r in rows if r["variable"] == f] for f in ("income", "purpose")}
    total = card.basepoints + labels["income"][bins[0]]["points"] + labels["purpose"][bins[1]]["points"]
    want = sc.offset - sc.factor * (lsl.intercept + lsl.partial_logit(x)[0])
    assert total == pytest.approx(want, abs=1e-9)
    counts = sum(int(r["count"]) for r in labels["purpose"])
    assert counts == N
    pcard = party_scorecard(fed["tmp"] / "tiange", fed["stores"]["tiange"], "woe-1", sc)
    assert pcard.basepoints is None and {r["variable"] for r in pcard.records()} == {"spend", "segment"}


def test_woe_encoding_errors_name_the_missing_run_or_feature(fed, tmp_path) -> None:
    store = fed["stores"]["bank"]
    src = StoreVerticalSource(store, StoreAlignment(store), fed["tmp"] / "bank")
    with pytest.raises(NotFound, match="no binning run nope"):
        src.vertical_table("psi-1", None, labels=True, encoding="woe", binning_run="nope")
    doc = json.loads((fed["tmp"] / "bank" / "binning" / "bin-1.json").read_text())
    doc["features"].pop("purpose")
    (tmp_path / "binning").mkdir()
    (tmp_path / "binning" / "bin-2.json").write_text(json.dumps(doc))
    src2 = StoreVerticalSource(store, StoreAlignment(store), tmp_path)
    with pytest.raises(InvalidInput, match="feature 'purpose' of dataset 'd' is not in binning run 'bin-2'"):
        src2.vertical_table("psi-1", None, labels=True, encoding="woe", binning_run="bin-2")
    with pytest.raises(InvalidInput, match="encoding 'woe' needs the binning run"):
        VerticalConfig(encoding="woe").check()
    with pytest.raises(InvalidInput, match="encoding 'ordinal' is not one of onehot, woe"):
        VerticalConfig(encoding="ordinal").check()
