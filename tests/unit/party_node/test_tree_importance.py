"""Gain importance of a tree model reaches each party for its own features only (on the wire), is kept in
the party's model file, and `fedcredit party importance` prints it at the lender and at the platform."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcore.errors import InvalidInput, NotFound
from fedcore.protocol.trees.messages import LENDERS_OWNER
from models.gbdt import GBDTParams
from party_node.importance_cli import own_importance
from party_node.trees import StoreTreeParty
from tests.unit.protocol.test_hybrid_trees import IDS, LENDER_FEATURES, PLATFORM_FEATURES, run

PARAMS = GBDTParams(n_trees=4, max_depth=3, max_bins=16, categorical=("segment",))


@pytest.fixture(scope="module")
def trained():
    return run(PARAMS, seed=2, record=True)


def test_wire_each_party_receives_the_importance_of_its_own_features_only(trained):
    result, *_, channel = trained
    assert set(result.importance[LENDERS_OWNER]) and set(result.importance["tiange"])  # both own features used
    for r in channel.wire_log:
        text = json.dumps(r.params, default=str)
        if r.direction == "from_party":
            assert "importance" not in text  # the parties report none (the coordinator computes the gains)
            continue
        if r.kind != "trees.finish":
            assert "importance" not in r.params
            continue
        own = set(PLATFORM_FEATURES) if r.party == "tiange" else set(LENDER_FEATURES)
        assert set(r.params["importance"]) <= own and r.params["importance"], (r.party, r.params["importance"])
        others = (set(LENDER_FEATURES) | set(PLATFORM_FEATURES)) - own
        assert not others & set(text.replace('"', " ").split()), r.party  # no other party's feature name at all
        expected = result.importance["tiange" if r.party == "tiange" else LENDERS_OWNER]
        assert r.params["importance"] == pytest.approx(expected)


def _write(home: Path, name: str, party) -> None:
    """The model file the node writes at ``trees.finish`` (:meth:`StoreTreeParty._save`, the real code)."""
    node = StoreTreeParty(name, None, None, home, IDS[name])  # type: ignore[arg-type]
    node._party = party
    role = "platform" if name == "tiange" else "lender"
    node._save({"run_id": "run1", "model_id": "run1", "role": role, "version": "1", "dataset": "d",
                "features": list(PLATFORM_FEATURES if role == "platform" else LENDER_FEATURES)})  # fmt: skip


def test_each_party_reads_its_own_importance_from_its_model_file(trained, tmp_path):
    result, parties, platform, *_ = trained
    _write(tmp_path / "yixin", "yixin", parties["yixin"])
    _write(tmp_path / "tiange", "tiange", platform)
    lender = own_importance(tmp_path / "yixin" / "models", "run1")
    plat = own_importance(tmp_path / "tiange" / "models", "run1")
    assert lender["role"] == "lender" and lender["importance"] == pytest.approx(result.importance[LENDERS_OWNER])
    assert plat["role"] == "platform" and plat["importance"] == pytest.approx(result.importance["tiange"])
    assert list(plat["importance"].values()) == sorted(plat["importance"].values(), reverse=True)
    assert set(lender["importance"]) <= set(LENDER_FEATURES) and set(plat["importance"]) <= set(PLATFORM_FEATURES)
    for name in ("yixin", "tiange"):  # the other party's features appear nowhere in a party's model file
        text = (tmp_path / name / "models" / "run1" / "gbdt.json").read_text()
        others = PLATFORM_FEATURES if name == "yixin" else LENDER_FEATURES
        assert not any(f'"{f}"' in text for f in others), name


def test_no_tree_model_or_a_linear_one_is_a_clear_error(tmp_path):
    with pytest.raises(NotFound, match="model 'ghost': this party keeps no tree model"):
        own_importance(tmp_path, "ghost")
    (tmp_path / "lin").mkdir()
    (tmp_path / "lin" / "slice.json").write_text("{}")
    with pytest.raises(InvalidInput, match="'lin' is a linear model"):
        own_importance(tmp_path, "lin")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "gbdt.json").write_text('{"role": "lender"}')
    with pytest.raises(InvalidInput, match="not a tree model this node wrote"):
        own_importance(tmp_path, "bad")


def test_cli_prints_the_platforms_own_importance(trained, tmp_path, capsys):
    from fedcore.cli import main
    from tests.conftest import make_homes

    result, _, platform, *_ = trained
    homes = make_homes(tmp_path, {"tiange": "platform"})
    home = homes.parties["tiange"]
    _write(home, "tiange", platform)

    def cli(*args: str) -> int:
        try:
            main(list(args))
        except SystemExit as ex:
            return int(ex.code or 0)
        return 0

    assert cli("party", "importance", "run1", "--json", "--home", str(home)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["role"] == "platform" and out["importance"] == pytest.approx(result.importance["tiange"])
    assert cli("party", "importance", "run1", "--home", str(home)) == 0
    text = capsys.readouterr().out
    assert "at tiange (platform)" in text
    assert all(f in text for f in result.importance["tiange"]) and not any(f in text for f in LENDER_FEATURES)
    assert cli("party", "importance", "other-run", "--home", str(home)) != 0
    assert "error: model 'other-run': this party keeps no tree model" in capsys.readouterr().err
