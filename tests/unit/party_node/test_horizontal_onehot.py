"""Horizontal models take categorical columns as level indicators from the declared vocabulary: the same
columns at every lender whatever order its rows brought the levels in; a lender trains on them (HE
aggregation, in-process) and scores raw level strings and store look-ups the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedcore.errors import InvalidInput
from fedcore.protocol.horizontal.coordinator import HorizontalJob
from fedcore.protocol.horizontal.party import register_training_handlers
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role
from fedcore.protocol.sealing import make_identities
from fedcore.protocol.tasks import HandlerRegistry
from party_node.evaluate import horizontal_probabilities
from party_node.horizontal_encoding import encoding_from_names
from party_node.horizontal_scoring import score_horizontal
from party_node.ingest import ingest_file
from party_node.schema import parse_schema
from party_node.scoring_batch import Applicant, ScoringSettings
from party_node.store import Store
from party_node.training_data import store_data_provider

LEVELS = ["car", "furniture", "education", "business"]
RISK = {"car": 0.0, "furniture": 1.5, "education": -1.0, "business": 2.0}


def _lender(tmp: Path, name: str, order: list[str], seed: int, vocabulary: bool = True) -> Store:
    rng = np.random.default_rng(seed)
    n = 600
    lines = ["id,y,income,purpose"]
    for i in range(n):
        lv = order[i % 4] if i < 4 else order[int(rng.integers(0, 4))]  # first appearance in `order`
        inc = rng.normal(3, 1)
        y = int(rng.random() < 1 / (1 + np.exp(-(-2 + RISK[lv] - 0.5 * (inc - 3)))))
        lines.append(f"{name}{i},{y},{inc:.4f},{lv}")
    (tmp / f"{name}.csv").write_text("\n".join(lines) + "\n")
    cat = {"missing": "category", **({"vocabulary": LEVELS} if vocabulary else {})}
    schema = parse_schema({"dataset": {"name": "d", "id_column": "id", "id_kind": "opaque", "label_column": "y",
                                       "federation_columns": ["income", "purpose"], "consent_all": ["training"]},
                           "numeric": {"income": {"missing": "reject"}}, "categorical": {"purpose": cat}})
    store = Store.open(f"sqlite:///{tmp / (name + '.db')}")
    ingest_file(store, tmp / f"{name}.csv", schema)
    return store


def test_declared_levels_become_the_same_indicator_columns_at_every_lender(tmp_path: Path) -> None:
    a = _lender(tmp_path, "a", LEVELS, 1)
    b = _lender(tmp_path, "b", list(reversed(LEVELS)), 2)
    xa, _, _, _, na = store_data_provider(a)({})
    xb, _, _, _, nb = store_data_provider(b)({})
    assert na == nb == ["income", "purpose=furniture", "purpose=education", "purpose=business"]
    assert set(np.unique(xa[:, 1:])) <= {0.0, 1.0} and np.all(xa[:, 1:].sum(axis=1) <= 1)
    # an indicator means the same level at both lenders: it is set exactly on that level's rows
    for x, store in ((xa, a), (xb, b)):
        xs = store_data_provider(store)({"fc-encoding": "codes"})[0]
        vocab = store.dataset_info("d").vocabularies["purpose"]
        biz = np.array([vocab[int(c)] == "business" for c in xs[:, 1]])
        assert biz.sum() > 0 and np.array_equal(x[:, 3] == 1.0, biz)
    # trees keep the codes
    _, _, _, _, codes = store_data_provider(a)({"fc-encoding": "codes"})
    assert codes == ["income", "purpose"]
    # without a declared vocabulary the lenders' codes stay (documented: declare it)
    c = _lender(tmp_path, "c", LEVELS, 3, vocabulary=False)
    assert store_data_provider(c)({})[4] == ["income", "purpose"]
    with pytest.raises(InvalidInput, match="model column 'colour=red' is not a column of dataset 'd'"):
        encoding_from_names(a.dataset_info("d"), ["income", "colour=red"])
    for s in (a, b, c):
        s.close()


def test_a_horizontal_model_on_indicators_trains_and_scores_raw_levels(tmp_path: Path) -> None:
    stores = {"bank-a": _lender(tmp_path, "a", LEVELS, 1), "bank-b": _lender(tmp_path, "b", list(reversed(LEVELS)), 2)}
    ch = InMemoryChannel()
    ids = make_identities(list(stores))
    for name, store in stores.items():
        reg = HandlerRegistry()
        register_training_handlers(reg, store_data_provider(store), party=name, identity=ids[name],
                                   model_dir=tmp_path / name / "models")
        ch.add_party(name, Role.LENDER, reg)
    job = HorizontalJob(ch, tmp_path / "coord", list(stores), model="logistic", rounds=6, secure="he")
    rec = job.run()
    ch.close()
    store = stores["bank-b"]
    apps = [Applicant("x", "opaque", {"income": 3.0, "purpose": lv}) for lv in LEVELS]
    p = horizontal_probabilities(store, tmp_path / "bank-b" / "models", job.run_id, None, apps)
    # riskier declared levels score higher, in the order of their true effect
    order = np.argsort(p)
    assert [LEVELS[i] for i in order] == sorted(LEVELS, key=RISK.__getitem__)
    # the same applicant at the other lender (other codes for the same levels) gets the same probability
    pa = horizontal_probabilities(stores["bank-a"], tmp_path / "bank-a" / "models", job.run_id, None, apps)
    np.testing.assert_allclose(pa, p, atol=1e-6)
    # store look-up by id encodes the stored code the same way
    rows = score_horizontal(store, tmp_path / "bank-b", job.run_id, [Applicant("b7", "opaque")], ScoringSettings())
    _, x = store.feature_matrix("d", ["income", "purpose"], row_ids=store.row_ids_for(["b7"], "opaque"))
    level = store.dataset_info("d").vocabularies["purpose"][int(x[0, 1])]
    want = horizontal_probabilities(store, tmp_path / "bank-b" / "models", job.run_id, None,
                                    [Applicant("b7", "opaque", {"income": float(x[0, 0]), "purpose": level})])
    assert rows[0]["status"] == "ok" and rows[0]["prob_default"] == pytest.approx(float(want[0]), abs=1e-6)
    assert rec.best_round is not None
    for s in stores.values():
        s.close()
