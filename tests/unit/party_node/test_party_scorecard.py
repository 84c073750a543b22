"""``party scorecard``: a party's points table of a joint logistic model reproduces the model's score
(base points + one bin's points per feature) and holds this party's features only."""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedcore.errors import NotFound
from fedcore.protocol.scoring.messages import ModelSlice
from models.scorecard import Scorecard
from party_node.ingest import ingest_file
from party_node.schema import parse_schema
from party_node.scorecard import party_scorecard
from party_node.store import Store

PURPOSES = ["car", "furniture", "education", "other"]
WOE = [-0.8, -0.1, 0.35, 1.2]  # a WOE-binned feature: one WOE value per bin
SC = Scorecard(600, 50, 20)


def lender(home: Path, n: int = 60) -> tuple[Path, Store]:
    rng = np.random.default_rng(3)
    lines = ["id,status,income_woe,purpose,other"]
    for i in range(n):
        lines.append(f"a{i},{'bad' if i % 5 == 0 else 'good'},{WOE[int(rng.integers(4))]},{PURPOSES[i % 4]},"
                     f"{rng.normal():.4f}")
    (home / "d.csv").write_text("\n".join(lines) + "\n")
    store = Store.open(f"sqlite:///{home / 's.db'}")
    ingest_file(store, home / "d.csv", parse_schema({
        "dataset": {"name": "d", "id_column": "id", "id_kind": "opaque", "label_column": "status",
                    "label_bad": ["bad"], "federation_columns": ["income_woe", "purpose", "other"],
                    "consent_all": ["training", "scoring"]},
        "numeric": {"income_woe": {}, "other": {}},
        "categorical": {"purpose": {"missing": "category"}},
    }))
    return home / "d.csv", store


def write_slice(home: Path, features: tuple[str, ...], w: list[float], columns: list | None,
                intercept: float | None = -1.3) -> ModelSlice:
    k = len(w)
    sl = ModelSlice("m1", "1", "lender", "d", features, np.array(w), np.linspace(0.1, 0.4, k),
                    np.linspace(0.9, 1.3, k), intercept,
                    None if columns is None else tuple((j, c) for j, c in columns))
    (home / "models" / "m1").mkdir(parents=True, exist_ok=True)
    (home / "models" / "m1" / "slice.json").write_text(json.dumps(sl.to_dict()))
    return sl


def write_binning(home: Path) -> None:
    cuts = [(a + b) / 2 for a, b in itertools.pairwise(WOE)]
    body = {"run_id": "b1", "party": "lender", "role": "lender", "features": {"income_woe": {
        "optimal": {"binning": {"kind": "numeric", "feature": "income_woe", "cuts": cuts}, "bins": []}}}}
    (home / "binning").mkdir(exist_ok=True)
    (home / "binning" / "b1.json").write_text(json.dumps(body))


def test_points_plus_base_reproduce_the_score_of_a_woe_binned_logistic_model(tmp_path: Path) -> None:
    f, store = lender(tmp_path)
    write_binning(tmp_path)
    with store:
        info = store.dataset_info("d")
        vocab = info.vocabularies["purpose"]
        codes = [float(vocab.index(p)) for p in ("furniture", "education", "other")]
        sl = write_slice(tmp_path, ("income_woe", "purpose"), [0.9, 0.5, -0.4, 0.8],
                         [(0, None), (1, codes[0]), (1, codes[1]), (1, codes[2])])
        card = party_scorecard(tmp_path, store, "m1", SC)
        _, X = store.feature_matrix("d", ["income_woe", "purpose"], allow_local=True)
    raw = pd.read_csv(f)
    want = SC.points_from_logit(sl.intercept + sl.partial_logit(X))
    got = card.table.score({"income_woe": raw["income_woe"].to_numpy(), "purpose": raw["purpose"].astype(str)})
    assert np.allclose(got, want, atol=1e-9)
    assert card.basepoints == pytest.approx(SC.offset - SC.factor * -1.3)
    assert card.exact == {"income_woe": True, "purpose": True} and card.binning_run == "b1"
    # rounded to 2 digits the sum stays within rounding of the model's score
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as again:
        rounded = party_scorecard(tmp_path, again, "m1", SC, digits=2)
    got2 = rounded.table.score({"income_woe": raw["income_woe"].to_numpy(), "purpose": raw["purpose"].astype(str)})
    assert np.max(np.abs(got2 - want)) <= 0.005 * 3 + 1e-9


def test_export_has_only_this_partys_features_and_marks_quantile_bins_approximate(tmp_path: Path) -> None:
    _, store = lender(tmp_path)
    with store:
        write_slice(tmp_path, ("other",), [0.7], None, intercept=None)  # a platform-like slice: no intercept
        card = party_scorecard(tmp_path, store, "m1", SC, n_bins=5)
    rows = list(csv.DictReader(io.StringIO(card.to_csv())))
    assert {r["variable"] for r in rows} == {"other"}  # no base points, no other party's features
    assert len(rows) == 6 and rows[-1]["bin"] == "missing" and float(rows[-1]["points"]) == 0.0
    assert all(r["exact"] == "False" for r in rows)
    assert sum(int(r["count"]) for r in rows) == 60
    pts = [float(r["points"]) for r in rows[:-1]]
    assert pts == sorted(pts, reverse=True)  # a positive weight on risk: points fall as the value grows
    doc = json.loads(card.to_json())
    assert doc["basepoints"] is None and doc["scaling"]["pdo"] == 20 and "mean contribution" in doc["note"]


def test_unknown_model_is_not_found_naming_it(tmp_path: Path) -> None:
    _, store = lender(tmp_path)
    with store, pytest.raises(NotFound, match="model 'ghost' has no slice"):
        party_scorecard(tmp_path, store, "ghost", SC)


def test_cli_exports_json_with_the_nodes_scoring_scaling(tmp_path: Path) -> None:
    from fedcore.cli import main
    from party_node.data_cli import open_store
    from tests.conftest import make_homes

    home = make_homes(tmp_path, {"yixin": "lender"}).parties["yixin"]
    lender(tmp_path)[1].close()
    with open_store(home, None) as store:
        ingest_file(store, tmp_path / "d.csv", parse_schema({
            "dataset": {"name": "d", "id_column": "id", "id_kind": "opaque", "label_column": "status",
                        "label_bad": ["bad"], "federation_columns": ["other"], "consent_all": ["training"]},
            "numeric": {"other": {}, "income_woe": {}}, "categorical": {"purpose": {}}}))
    write_slice(home, ("other",), [0.5], None)
    (home / "scoring.json").write_text(json.dumps({"base_score": 500, "base_odds": 20, "pdo": 40}))
    out = tmp_path / "card.json"
    main(["party", "scorecard", "m1", "--format", "json", "--out", str(out), "--home", str(home)])
    doc = json.loads(out.read_text())
    assert doc["scaling"] == Scorecard(500, 20, 40).to_dict()
    assert doc["basepoints"] == pytest.approx(Scorecard(500, 20, 40).offset - Scorecard(500, 20, 40).factor * -1.3)
    assert {r["variable"] for r in doc["rows"]} == {"basepoints", "other"}
