"""A monotone constraint on a categorical feature (categories have no order) or on a feature the model does
not have is refused with an error naming the feature, in both tree protocols and before any party work at
the coordinator's job: never silently ignored."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fedcore.errors import InvalidInput
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import DataSummary, FeatureInfo, PartyInfo, Role, TableSummary
from fedcore.protocol.tasks import HandlerRegistry
from fedcore.protocol.trees.coordinator import HybridTreesConfig, run_hybrid_trees
from fedcore.protocol.trees.party import LenderTreeParty, PlatformTreeParty
from models.gbdt import GBDTParams
from models.gbdt.params import check_monotone
from tests.unit.protocol import test_horizontal_trees as htest
from tests.unit.protocol.test_hybrid_trees import IDS, LENDER_FEATURES, SIZES, federation

LEVELS = ("__unseen__", "car", "home", "study", "business", "travel")


def _hybrid(params: GBDTParams, seen: list | None = None):
    """The hybrid federation with a lender feature ``purpose`` and a platform feature ``segment`` that the
    parties' data declares categorical (the parameters do not say so)."""
    lenders, tables = federation(3)
    rng = np.random.default_rng(3)
    channel = InMemoryChannel(record_wire=True)
    if seen is not None:
        seen.append(channel)
    for name, (cols, y) in lenders.items():
        cols["purpose"] = rng.integers(1, len(LEVELS), len(y)).astype(float)
        reg = HandlerRegistry()
        LenderTreeParty(name, cols, y, IDS[name], categorical={"purpose": LEVELS}).register(reg)
        channel.add_party(name, Role.LENDER, reg)
    reg = HandlerRegistry()
    PlatformTreeParty("tiange", tables, IDS["tiange"], categorical=("segment",)).register(reg)
    channel.add_party("tiange", Role.PLATFORM, reg)
    cfg = HybridTreesConfig("run1", tuple(SIZES), "tiange", (*LENDER_FEATURES, "purpose"), params)
    try:
        return run_hybrid_trees(channel, cfg), channel
    finally:
        channel.close()


@pytest.mark.parametrize(("feature", "needle"), [
    ("purpose", "feature 'purpose' is categorical"),  # a lender feature, categorical in the lenders' schema
    ("segment", "feature 'segment' is categorical"),  # a platform feature, categorical in the platform's data
    ("salary", "['salary'] are not features of this model"),
])  # fmt: skip
def test_hybrid_trees_refuse_a_monotone_constraint_they_cannot_honour(feature, needle):
    params = GBDTParams(n_trees=2, max_depth=2, max_bins=16, monotone={"arrears": 1, feature: -1})
    with pytest.raises(InvalidInput) as err:
        _hybrid(params)
    assert needle in str(err.value)
    _, channel = _hybrid(GBDTParams(n_trees=1, max_depth=2, max_bins=16, monotone={"arrears": 1, feature: 0}))
    assert any(r.kind == "trees.finish" for r in channel.wire_log)  # sign 0 is no constraint: the run goes on


def test_refused_at_setup_before_any_key_or_tree():
    seen: list = []
    with pytest.raises(InvalidInput, match="segment"):
        _hybrid(GBDTParams(n_trees=2, max_depth=2, max_bins=16, monotone={"segment": 1}), seen)
    assert {r.kind for r in seen[0].wire_log} == {"trees.setup"}


def test_horizontal_trees_refuse_a_monotone_constraint_on_a_categorical_feature():
    levels = dict.fromkeys(htest.SIZES, LEVELS)
    with pytest.raises(InvalidInput, match="feature 'purpose' is categorical in the lenders' schema"):
        htest._run(GBDTParams(n_trees=1, max_depth=2, max_bins=16, monotone={"purpose": 1}), levels=levels)
    with pytest.raises(InvalidInput, match=r"\['util2'\] are not features"):
        htest._run(GBDTParams(n_trees=1, max_depth=2, max_bins=16, monotone={"util2": 1}))


def test_check_monotone_itself():
    check_monotone({"a": 1, "b": 0, "c": -1}, {"a": False, "b": True, "c": False})
    with pytest.raises(InvalidInput, match="'b' is categorical in the schema"):
        check_monotone({"b": 1}, {"b": True}, "the schema")


def _rc(monotone, platform_tables=True):
    lender = TableSummary("apps", 10, (FeatureInfo("arrears", "numeric"), FeatureInfo("purpose", "categorical")),
                          has_labels=True)  # fmt: skip
    behaviour = TableSummary("beh", 10, (FeatureInfo("spend", "numeric"), FeatureInfo("segment", "categorical")))
    parties = [PartyInfo("yixin", Role.LENDER, True, summary=DataSummary((lender,))),
               PartyInfo("tiange", Role.PLATFORM, True,
                         summary=DataSummary((behaviour,) if platform_tables else ()))]  # fmt: skip
    channel = SimpleNamespace(parties=lambda: parties)
    return SimpleNamespace(params={"gbdt": {"monotone": monotone}}, channel=channel)


def test_the_job_refuses_from_the_registered_summaries_before_psi():
    from coordinator.jobs.trees import gbdt_precheck

    gbdt_precheck(_rc({"arrears": 1, "spend": -1}), ["yixin"], "tiange")  # type: ignore[arg-type]
    for feat in ("purpose", "segment"):
        with pytest.raises(InvalidInput, match=f"'{feat}' is categorical in the registered data summaries"):
            gbdt_precheck(_rc({feat: 1}), ["yixin"], "tiange")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="salary"):
        gbdt_precheck(_rc({"salary": 1}), ["yixin"], "tiange")  # type: ignore[arg-type]
    gbdt_precheck(_rc({"salary": 1}, platform_tables=False), ["yixin"], "tiange")  # type: ignore[arg-type]
