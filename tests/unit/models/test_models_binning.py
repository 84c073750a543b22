"""Binnings, fine pre-binning and the mergeable quantile sketch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedcore.errors import InvalidInput
from models.binning import CategoricalBinning, NumericBinning, binning_from_dict
from models.prebinning import (
    LevelCounts,
    QuantileSketch,
    categorical_prebinning,
    equal_frequency_cuts,
    numeric_prebinning,
)


def test_numeric_bins_are_left_closed_with_missing_last():
    b = NumericBinning("income", (1.0, 2.5))
    idx = b.assign([0.5, 1.0, 2.4999, 2.5, 9, None, float("nan"), "", " 2.0 ", "3"])
    assert idx.tolist() == [0, 1, 1, 2, 2, 3, 3, 3, 1, 2]
    assert b.labels() == ["[-inf, 1)", "[1, 2.5)", "[2.5, inf)", "missing"]
    assert b.n_bins == 4 and b.missing_bin == 3


def test_numeric_bad_value_names_feature_and_row():
    with pytest.raises(InvalidInput, match=r"feature 'income' row 2: 'abc' is not a number"):
        NumericBinning("income", (1.0,)).assign([1, 2, "abc"])
    with pytest.raises(InvalidInput, match="strictly increasing"):
        NumericBinning("income", (2.0, 1.0))
    with pytest.raises(InvalidInput, match="infinite"):
        NumericBinning("income", (1.0,)).assign(np.array([1.0, np.inf]))


def test_categorical_fallback_and_unseen():
    b = CategoricalBinning("city", (("tier1",), ("tier2", "tier3")), fallback=1)
    assert b.assign(["tier1", "tier3", None, "mars", " tier2 "]).tolist() == [0, 1, 2, 1, 1]
    strict = CategoricalBinning("city", (("tier1",),), fallback=None)
    with pytest.raises(InvalidInput, match=r"feature 'city' row 1: unseen level 'mars'"):
        strict.assign(["tier1", "mars"])
    with pytest.raises(InvalidInput, match="in two groups"):
        CategoricalBinning("city", (("a",), ("a", "b")))


def test_integral_floats_match_string_levels():
    b = CategoricalBinning("edu", (("1",), ("2",)), fallback=2)
    assert b.assign([1.0, 2, "2", 3.5]).tolist() == [0, 1, 1, 2]


def test_binning_json_round_trip():
    for b in (NumericBinning("x", (0.5, 3.0)), CategoricalBinning("c", (("a", "b"), ("z",)), fallback=0)):
        back = binning_from_dict(json.loads(json.dumps(b.to_dict())))
        assert back == b
    with pytest.raises(InvalidInput, match="unknown kind"):
        binning_from_dict({"kind": "tree", "feature": "x"})


def test_merged_numeric_and_categorical():
    b = NumericBinning("x", (1.0, 2.0, 3.0, 4.0))
    assert b.merged([0, 2, 3]).cuts == (2.0, 3.0)
    c = CategoricalBinning("c", (("a",), ("b",), ("c",)), fallback=2)
    m = c.merged([[0, 2], [1]])
    assert m.groups == (("a", "c"), ("b",)) and m.fallback == 0


def test_sketch_is_exact_for_few_distinct_values():
    x = np.repeat([1.0, 2.0, 3.0, 4.0], [10, 20, 30, 40])
    s = QuantileSketch.of(x)
    assert equal_frequency_cuts(s, 4) == (2.0, 3.0, 4.0)
    assert s.quantiles([0.1, 0.3, 0.6, 1.0]).tolist() == [1.0, 2.0, 3.0, 4.0]


def test_merged_sketches_give_the_pooled_quantiles():
    rng = np.random.default_rng(7)
    parts = [rng.lognormal(i, 1.0, 20_000) for i in range(3)]  # non-IID lenders
    size = 512
    merged = QuantileSketch.of(parts[0], size)
    for p in parts[1:]:
        merged = merged.merge(QuantileSketch.of(p, size))
    assert len(merged.values) <= size and merged.total == 60_000
    pooled = np.sort(np.concatenate(parts))
    qs = np.arange(1, 20) / 20
    got = merged.quantiles(qs)
    ranks = np.searchsorted(pooled, got) / len(pooled)
    assert np.max(np.abs(ranks - qs)) < 3 / size
    again = QuantileSketch.from_dict(json.loads(json.dumps(merged.to_dict())))
    assert np.array_equal(again.quantiles(qs), got)


def test_numeric_prebinning_equal_frequency_and_missing():
    rng = np.random.default_rng(1)
    x = rng.normal(size=10_000).astype(object)
    x[:500] = None
    b = numeric_prebinning("x", x, n_bins=10)
    counts = np.bincount(b.assign(x), minlength=b.n_bins)
    assert len(b.cuts) == 9 and counts[-1] == 500
    assert np.all(np.abs(counts[:-1] - 950) <= 2)


def test_categorical_prebinning_merges_rare_levels():
    vals = ["a"] * 500 + ["b"] * 300 + ["c"] * 195 + ["d"] * 3 + ["e"] * 2 + [None] * 7
    b = categorical_prebinning("c", vals, min_fraction=0.01)
    assert b.groups == (("a",), ("b",), ("c",), ("d", "e"))
    assert b.fallback == 3  # unseen -> the rare bin
    assert b.assign(["zzz"]).tolist() == [3]
    none_rare = categorical_prebinning("c", ["a", "b"], min_fraction=0.0)
    assert none_rare.fallback == none_rare.missing_bin
    assert categorical_prebinning("c", vals, unseen="error").fallback is None
    pooled = LevelCounts.of(vals[:400]) + LevelCounts.of(vals[400:])
    assert categorical_prebinning("c", level_counts=pooled) == b
