"""`coordinator train --run-config FILE.toml`: the file's parameters, typed errors naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.jobs.trees import gbdt_params
from coordinator.run_config import load_run_config
from fedcore.errors import InvalidInput


def test_a_run_config_gives_every_training_parameter(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        'parties = "yixin, tiange"\nkind = "vertical"\nmodel = "gbdt"\nval_fraction = 0.25\n'
        "[gbdt]\nn_trees = 50\nmax_depth = 4\nmonotone = { arrears = 1 }\n"
    )
    cfg = load_run_config(path)
    assert cfg["parties"] == ["yixin", "tiange"] and cfg["model"] == "gbdt" and cfg["val_fraction"] == 0.25
    params = gbdt_params({**cfg["gbdt"], "max_bins": 16.0})  # numbers come back from the admin API as floats
    assert (params.n_trees, params.max_depth, params.max_bins, params.monotone) == (50, 4, 16, {"arrears": 1})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("parties = [\n", "not valid TOML"),
        ("epochz = 3\n", r"unknown key\(s\) \['epochz'\]"),
        ("[gbdt]\ndepth = 3\n", r"unknown key\(s\) \['depth'\] in \[gbdt\]"),
        ("[gbdt]\nmonotone = { arrears = 2 }\n", "monotone"),
        ("parties = [1, 2]\n", "'parties' must be a list"),
    ],
)
def test_a_bad_run_config_names_the_file_and_the_key(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=match) as err:
        load_run_config(path)
    assert str(path) in str(err.value)


def test_a_fractional_tree_count_is_refused():
    with pytest.raises(InvalidInput, match="n_trees"):
        gbdt_params({"n_trees": 2.5})
    with pytest.raises(InvalidInput, match=r"missing\.toml"):
        load_run_config(Path("/nonexistent/missing.toml"))
