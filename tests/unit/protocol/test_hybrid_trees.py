"""Hybrid trees (lenders + platform) over the in-memory channel: the same trees as the central learner,
and what crosses the wire."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from fedcore.errors import InvalidInput, PartyTaskError, PartyUnavailable, ProtocolError
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role
from fedcore.protocol.sealing import make_identities
from fedcore.protocol.tasks import HandlerRegistry
from fedcore.protocol.trees.coordinator import HybridTreesConfig, run_hybrid_trees
from fedcore.protocol.trees.messages import LENDERS_OWNER, decode_arrays, from_fixed
from fedcore.protocol.trees.party import LenderTreeParty, PlatformTreeParty
from fedcore.wire.convert import params_to_struct
from models.gbdt import GBDTModel, GBDTParams, train

LENDER_FEATURES = ("income", "arrears", "loan", "term")
PLATFORM_FEATURES = ("spend", "tips", "active", "segment")
SIZES = {"yixin": 500, "meili": 350, "cango": 420}
IDS = make_identities([*SIZES, "tiange"])


def federation(seed: int = 0):
    rng = np.random.default_rng(seed)
    lenders, platform_tables = {}, {}
    for name, n in SIZES.items():
        lx = {
            "income": rng.lognormal(8, 0.4, n), "arrears": rng.poisson(1.0, n).astype(float),
            "loan": rng.uniform(1, 50, n).round(1), "term": rng.choice([12.0, 24.0, 36.0], n),
        }  # fmt: skip
        lx["income"][rng.random(n) < 0.1] = np.nan
        px = {
            "spend": rng.gamma(2.0, 1.0, n), "tips": rng.normal(0, 1, n),
            "active": rng.integers(0, 30, n).astype(float), "segment": rng.integers(0, 5, n).astype(float),
        }  # fmt: skip
        px["tips"][rng.random(n) < 0.2] = np.nan
        z = -1.2 + 0.7 * lx["arrears"] - 0.05 * px["active"] + 0.6 * (px["segment"] == 3) + 0.4 * px["spend"]
        y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
        lenders[name] = (lx, y)
        platform_tables[name] = px
    return lenders, platform_tables


def run(params: GBDTParams, seed: int = 0, record: bool = False):
    lenders, tables = federation(seed)
    channel = InMemoryChannel(record_wire=record)
    parties = {}
    for name, (cols, y) in lenders.items():
        reg = HandlerRegistry()
        parties[name] = LenderTreeParty(name, cols, y, IDS[name])
        parties[name].register(reg)
        channel.add_party(name, Role.LENDER, reg)
    reg = HandlerRegistry()
    platform = PlatformTreeParty("tiange", tables, IDS["tiange"], categorical=("segment",))
    platform.register(reg)
    channel.add_party("tiange", Role.PLATFORM, reg)
    cfg = HybridTreesConfig("run1", tuple(SIZES), "tiange", LENDER_FEATURES, params)
    try:
        result = run_hybrid_trees(channel, cfg)
    finally:
        channel.close()
    return result, parties, platform, lenders, tables, channel


def central(params: GBDTParams, parties, platform, lenders, tables):
    cols = {f: np.concatenate([lenders[x][0][f] for x in SIZES]) for f in LENDER_FEATURES}
    cols.update({f: np.concatenate([tables[x][f] for x in SIZES]) for f in PLATFORM_FEATURES})
    y = np.concatenate([lenders[x][1] for x in SIZES])
    owners = {**{f: LENDERS_OWNER for f in LENDER_FEATURES}, **{f: "tiange" for f in PLATFORM_FEATURES}}
    first = parties[next(iter(SIZES))]
    ref_params = GBDTParams(**{**params.to_dict(), "sticky_owners": ("tiange",), "first_tree_owners": (LENDERS_OWNER,)})
    model = train(
        cols, y, ref_params, owners=owners, names=[*LENDER_FEATURES, *PLATFORM_FEATURES],
        mappers={LENDERS_OWNER: first.mapper, "tiange": platform.mapper},
    )  # fmt: skip
    return model, cols, y


PARAMS = GBDTParams(n_trees=6, max_depth=3, learning_rate=0.3, max_bins=16, categorical=("segment",))


CONSTRAINED = GBDTParams(
    n_trees=5, max_depth=4, max_bins=16, categorical=("segment",), monotone={"arrears": 1, "active": -1},
    colsample_bytree=0.7, reg_lambda=2.0, min_child_weight=0.5, gamma=0.01, seed=3,
)  # fmt: skip


@pytest.mark.parametrize("params", [PARAMS, CONSTRAINED], ids=["plain", "monotone-colsample"])
def test_protocol_grows_the_central_learners_trees(params):
    result, parties, platform, lenders, tables, _ = run(params)
    model, cols, _ = central(params, parties, platform, lenders, tables)
    assert result.owners == model.owners
    assert result.base_score == model.base_score
    assert len(result.trees) == len(model.trees) == params.n_trees
    assert len(result.tree_s) == params.n_trees and min(result.tree_s) > 0 and result.setup_s > 0  # timings
    for ours, ref in zip(result.trees, model.trees, strict=True):
        np.testing.assert_array_equal(ours.left, ref.left)
        np.testing.assert_array_equal(ours.owner, ref.owner)
        np.testing.assert_array_equal(ours.ref, ref.ref)
        np.testing.assert_array_equal(ours.value, ref.value)  # fixed point reproduces the histograms exactly
    lender_tables = [p.table.to_dict() for p in parties.values()]
    assert all(t == lender_tables[0] for t in lender_tables)
    assert lender_tables[0] == model.tables[LENDERS_OWNER].to_dict()
    assert platform.table.to_dict() == model.tables["tiange"].to_dict()
    assert (model.trees[0].owner[model.trees[0].left >= 0] == 0).all()  # first tree: lender features only
    assert any((t.owner == 1).any() for t in result.trees)  # the platform's features are used
    fed = GBDTModel(result.owners, result.trees, result.base_score,
                    {LENDERS_OWNER: parties["yixin"].table, "tiange": platform.table})  # fmt: skip
    np.testing.assert_array_equal(fed.margin(cols), model.margin(cols))
    for feat, sign in params.monotone.items():  # the constraints hold on the federated model itself
        grid = np.linspace(np.nanmin(cols[feat]), np.nanmax(cols[feat]), 25)
        sweep = np.stack([fed.margin({**{f: v[:60] for f, v in cols.items()}, feat: np.full(60, g)}) for g in grid])
        assert (sign * np.diff(sweep, axis=0) >= -1e-12).all(), feat
    # each party gets its own gain importance only; lenders keep the released model with their rules
    assert platform.importance == result.importance["tiange"] == model.importance_of("tiange")
    assert set(platform.importance) <= set(PLATFORM_FEATURES)
    assert [t.left.tolist() for t in platform.shapes] == [t.left.tolist() for t in result.trees]
    assert platform.owners == result.owners and not any(t.value.any() for t in platform.shapes)
    for p in parties.values():
        assert p.model is not None and p.model.importance_of(LENDERS_OWNER) == model.importance_of(LENDERS_OWNER)
        assert json.loads(json.dumps(p.model.to_dict()))["tables"].keys() == {LENDERS_OWNER}
        np.testing.assert_array_equal(p.model.trees[-1].value, model.trees[-1].value)
    # every lender's margins are the joint model's on its own rows
    start = 0
    central_margin = model.margin(cols)
    for name, n in SIZES.items():
        np.testing.assert_array_equal(parties[name].margin(), central_margin[start : start + n])
        start += n


def _received(channel, party):
    """Everything that reached ``party``: params as JSON text and payload bytes."""
    recs = [r for r in channel.wire_log if r.direction == "to_party" and r.party == party]
    return json.dumps([r.params for r in recs], default=str), b"".join(r.payload for r in recs), recs


def _from(channel, party):
    recs = [r for r in channel.wire_log if r.direction == "from_party" and r.party == party]
    return json.dumps([r.params for r in recs], default=str), b"".join(r.payload for r in recs), recs


def _distinctive(rule) -> bool:
    """A threshold whose 8 bytes / repr cannot turn up by chance (not a small whole number)."""
    return not rule.categorical and rule.threshold != round(rule.threshold)


def test_wire_platform_gets_no_labels_or_gradients_and_thresholds_stay_with_owners():
    params = GBDTParams(n_trees=3, max_depth=3, max_bins=16, categorical=("segment",))
    _, parties, platform, _, _, channel = run(params, seed=1, record=True)
    # Platform: only task parameters, tree numbers, node ids, bin indices, sealed seeds: no payload at all
    text, payload, recs = _received(channel, "tiange")
    assert payload == b""
    assert {r.kind for r in recs} <= {"trees.setup", "trees.begin", "trees.hist", "trees.split", "trees.finish"}
    for r in recs:
        assert not {"y", "labels", "g", "h", "gradients", "leaf_values", "arrays"} & set(r.params)
    # Lenders: no platform bins, features or thresholds; split instructions name lender features only
    for name in SIZES:
        text, payload, recs = _received(channel, name)
        for r in recs:
            for entry in r.params.get("arrays", []):  # the only arrays: a platform subtree's leaf values
                assert entry[0].startswith("sub") and entry[1] == "float64" and entry[2] == [SIZES[name]]
            if r.kind == "trees.split":
                assert all(0 <= s["feature"] < len(LENDER_FEATURES) for s in r.params["splits"])
        for rule in platform.table.rules.values():
            if _distinctive(rule):
                assert repr(rule.threshold) not in text
                assert np.float64(rule.threshold).tobytes() not in payload
        for f in PLATFORM_FEATURES:
            assert f not in text
    # Thresholds never leave their owner: no rule value appears in anything the coordinator receives
    everything = [_from(channel, x) for x in [*SIZES, "tiange"]]
    checked = 0
    for table in (platform.table, parties["yixin"].table):
        for rule in table.rules.values():
            if not _distinctive(rule):
                continue
            checked += 1
            for text, payload, _ in everything:
                assert repr(rule.threshold) not in text
                assert np.float64(rule.threshold).tobytes() not in payload
    assert checked >= 5


TO_PARTY_KEYS = {
    "trees.setup": {"run_id", "lenders", "platform", "max_bins", "features", "subsample", "seed"},
    "trees.keys": {"run_id", "keys"},
    "trees.bins": {"run_id", "sealed", "levels"},
    "trees.edges": {"run_id", "sum"},
    "trees.begin": {"run_id", "tree", "leaf_values", "arrays", "sealed_seeds"},
    "trees.hist": {"run_id", "tree", "nodes", "features", "values_for", "items", "recipes"},
    "trees.split": {"run_id", "tree", "splits"},
    "trees.eval": {"run_id", "leaf_values", "arrays"},
    "trees.finish": {"run_id", "trees", "owners", "importance", "shapes"},
}
FROM_PARTY_KEYS = {
    "trees.setup": {"rows", "env_key", "features", "arrays", "categorical"},
    "trees.keys": {"sealed"},
    "trees.bins": {"masked"},
    "trees.edges": {"n_bins", "base_score"},
    "trees.begin": {"sealed_seed", "val_loss"},
    "trees.hist": {"arrays"},
    "trees.split": {"refs"},
    "trees.eval": {"val_loss"},
    "trees.finish": {"metrics"},
}


def test_wire_every_message_carries_only_the_stated_fields():
    params = GBDTParams(n_trees=3, max_depth=3, max_bins=16, categorical=("segment",))
    _, _, _, _, _, channel = run(params, seed=4, record=True)
    for r in channel.wire_log:
        allowed = TO_PARTY_KEYS if r.direction == "to_party" else FROM_PARTY_KEYS
        assert set(r.params) <= allowed[r.kind], (r.direction, r.party, r.kind, set(r.params))
        params_to_struct(r.params)  # plain JSON values only: what the gRPC link carries
        if r.direction == "to_party" and r.party == "tiange":
            assert not {"leaf_values", "arrays", "sum", "values_for", "trees"} & set(r.params)
            for shape in r.params.get("shapes", []):  # tree shapes for scoring: never a leaf value
                assert not any(shape["value"])
        if r.direction == "from_party" and r.party == "tiange" and r.kind == "trees.hist":
            assert [a[0] for a in r.params["arrays"]] == ["pg", "ph"]
        if r.direction == "from_party" and r.party == "tiange" and r.kind == "trees.setup":
            assert [set(f) for f in r.params["features"]] == [{"name", "n_bins", "categorical"}] * 4


def test_wire_coordinator_sees_only_masked_per_row_values():
    params = GBDTParams(n_trees=2, max_depth=2, max_bins=16, categorical=("segment",))
    channel = run(params, seed=2, record=True)[-1]
    per_row = []
    for r in channel.wire_log:
        if r.direction == "from_party" and r.kind == "trees.hist" and r.party in SIZES and r.params.get("arrays"):
            arrays = decode_arrays(r.params["arrays"], r.payload, "test")
            per_row += [v for k, v in arrays.items() if k.startswith("v")]
    assert per_row
    for v in per_row:
        # clear fixed-point gradients sit within +-2^32; masked values are uniform over Z_2^64
        assert (np.abs(from_fixed(v)) > 1.0).mean() > 0.99
        top = (v >> np.uint64(63)).astype(float)
        assert 0.35 < top.mean() < 0.65
    # the lender histograms arrive masked too (pairwise masks cancel only in the sum over lenders)
    hists = [
        decode_arrays(r.params["arrays"], r.payload, "t")["hg"]
        for r in channel.wire_log
        if r.direction == "from_party" and r.kind == "trees.hist" and r.party in SIZES
    ]
    assert all((np.abs(from_fixed(h)) > 1e3).mean() > 0.99 for h in hists)


def test_a_lender_with_a_bad_label_fails_the_run_naming_it():
    lenders, tables = federation(3)
    cols, y = lenders["meili"]
    y = y.copy()
    y[7] = 2.0
    channel = InMemoryChannel()
    for name in SIZES:
        reg = HandlerRegistry()
        c, yy = (cols, y) if name == "meili" else lenders[name]
        LenderTreeParty(name, c, yy, IDS[name]).register(reg)
        channel.add_party(name, Role.LENDER, reg)
    reg = HandlerRegistry()
    PlatformTreeParty("tiange", tables, IDS["tiange"]).register(reg)
    channel.add_party("tiange", Role.PLATFORM, reg)
    cfg = HybridTreesConfig("run1", tuple(SIZES), "tiange", LENDER_FEATURES, GBDTParams(n_trees=1))
    with pytest.raises(PartyTaskError, match="meili") as err:
        run_hybrid_trees(channel, cfg)
    assert "row 7" in str(err.value)
    channel.close()


@pytest.mark.parametrize("victim", ["tiange", "meili"])
def test_a_party_lost_mid_tree_fails_the_run_naming_it(victim):
    lenders, tables = federation(5)
    channel = InMemoryChannel()
    calls = {"hist": 0}

    def add(name, role, party):
        inner = HandlerRegistry()
        party.register(inner)
        if name != victim:
            channel.add_party(name, role, inner)
            return

        def flaky_hist(ctx, params):
            calls["hist"] += 1
            if calls["hist"] == 3:  # the link drops while the party works on a histogram
                channel.disconnect(name)
                ctx.cancelled.wait(timeout=60)
            return inner.get("trees.hist")(ctx, params)

        reg = HandlerRegistry()
        for kind in inner.kinds():
            reg.register(kind, flaky_hist if kind == "trees.hist" else inner.get(kind))
        channel.add_party(name, role, reg)

    for name, (cols, y) in lenders.items():
        add(name, Role.LENDER, LenderTreeParty(name, cols, y, IDS[name]))
    add("tiange", Role.PLATFORM, PlatformTreeParty("tiange", tables, IDS["tiange"]))
    cfg = HybridTreesConfig("run1", tuple(SIZES), "tiange", LENDER_FEATURES, GBDTParams(n_trees=4))
    with pytest.raises(PartyUnavailable) as err:
        run_hybrid_trees(channel, cfg)
    assert victim in str(err.value)
    assert calls["hist"] == 3
    channel.close()


def test_all_missing_and_constant_features_are_never_split_on():
    lenders, tables = federation(6)
    channel = InMemoryChannel()
    parties = {}
    for name, (cols, y) in lenders.items():
        cols = {**cols, "empty": np.full(len(y), np.nan)}
        parties[name] = LenderTreeParty(name, cols, y, IDS[name])
        reg = HandlerRegistry()
        parties[name].register(reg)
        channel.add_party(name, Role.LENDER, reg)
    tables = {x: {**t, "const": np.ones(SIZES[x])} for x, t in tables.items()}
    platform = PlatformTreeParty("tiange", tables, IDS["tiange"], categorical=("segment",))
    reg = HandlerRegistry()
    platform.register(reg)
    channel.add_party("tiange", Role.PLATFORM, reg)
    params = GBDTParams(n_trees=4, max_depth=3, max_bins=16, categorical=("segment",))
    cfg = HybridTreesConfig("run1", tuple(SIZES), "tiange", (*LENDER_FEATURES, "empty"), params)
    result = run_hybrid_trees(channel, cfg)
    channel.close()
    specs = {s.name: s for s in result.layout.features}
    assert specs["empty"].n_bins == 1 and specs["const"].n_bins == 1
    assert "empty" not in parties["yixin"].table.features() and "const" not in platform.table.features()
    assert parties["yixin"].table.features() and platform.table.features()


def _channel(lenders, tables, record=False):
    channel = InMemoryChannel(record_wire=record)
    for name, (cols, y) in lenders.items():
        reg = HandlerRegistry()
        LenderTreeParty(name, cols, y, IDS[name]).register(reg)
        channel.add_party(name, Role.LENDER, reg)
    reg = HandlerRegistry()
    PlatformTreeParty("tiange", tables, IDS["tiange"]).register(reg)
    channel.add_party("tiange", Role.PLATFORM, reg)
    return channel


def test_misaligned_or_incomplete_tables_fail_naming_the_party():
    lenders, tables = federation(7)
    short = {**tables, "cango": {c: v[:-1] for c, v in tables["cango"].items()}}
    channel = _channel(lenders, short)
    cfg = HybridTreesConfig("run1", tuple(SIZES), "tiange", LENDER_FEATURES, GBDTParams(n_trees=1))
    with pytest.raises(ProtocolError, match="cango"):
        run_hybrid_trees(channel, cfg)
    channel.close()
    channel = _channel(lenders, tables)
    cfg = HybridTreesConfig("run1", tuple(SIZES), "tiange", (*LENDER_FEATURES, "salary"), GBDTParams(n_trees=1))
    with pytest.raises(PartyTaskError, match="salary"):
        run_hybrid_trees(channel, cfg)
    channel.close()
    channel = _channel(lenders, tables, record=True)
    with pytest.raises(InvalidInput, match="lender feature"):
        run_hybrid_trees(channel, HybridTreesConfig("r", tuple(SIZES), "tiange", ()))
    assert channel.wire_log == []  # refused before anything is sent
    channel.close()


def _tampered(channel, kind, edit):
    real_submit = channel.submit

    def submit(party, task):
        if task.kind == kind:
            task = type(task)(task.kind, edit(party, dict(task.params)), task.run_id, task.timeout_s, task.payload)
        return real_submit(party, task)

    channel.submit = submit


def test_a_key_announcement_swapped_by_the_coordinator_is_refused():
    """A relaying coordinator that puts its own key (certified by another CA) in place of meili's run key
    gets no seed sealed to it: the lenders refuse with permission_denied before sealing anything."""
    from fedcore.crypto.envelope import EnvelopePrivateKey

    lenders, tables = federation(8)
    channel = _channel(lenders, tables)
    forged = make_identities(["meili"])["meili"]

    def swap(party, params):
        params["keys"] = {**dict(params["keys"]), "meili": forged.announcement(EnvelopePrivateKey.generate())}
        return params

    _tampered(channel, "trees.keys", swap)
    cfg = HybridTreesConfig("run1", tuple(SIZES), "tiange", LENDER_FEATURES, GBDTParams(n_trees=1))
    with pytest.raises(PartyTaskError, match="permission_denied") as err:
        run_hybrid_trees(channel, cfg)
    assert "meili" in str(err.value)
    channel.close()


def test_a_tree_seed_relabelled_by_the_coordinator_is_refused():
    """The coordinator hands the platform yixin's sealed tree seed as if it came from cango (so cango's
    masks would be yixin's): the sealing binds the sender, and the platform refuses."""
    lenders, tables = federation(9)
    channel = _channel(lenders, tables)

    def relabel(party, params):
        seeds = dict(params["sealed_seeds"])
        seeds["cango"] = {**dict(seeds["yixin"]), "sender": "cango"}
        params["sealed_seeds"] = seeds
        return params

    _tampered(channel, "trees.begin", lambda p, params: relabel(p, params) if "sealed_seeds" in params else params)
    cfg = HybridTreesConfig("run1", tuple(SIZES), "tiange", LENDER_FEATURES, GBDTParams(n_trees=1))
    with pytest.raises(PartyTaskError, match="permission_denied") as err:
        run_hybrid_trees(channel, cfg)
    assert "tiange" in str(err.value)
    channel.close()


def test_validation_rows_early_stopping_keeps_the_best_trees_and_lenders_report_metrics():
    """Validation rows carry no gradient; the pooled validation loss per tree picks the kept trees, and
    each lender's reported metrics are those of the released model on its validation rows."""
    from models.metrics import evaluate

    lenders, tables = federation(11)
    channel = InMemoryChannel()
    parties = {}
    for i, (name, (cols, y)) in enumerate(lenders.items()):
        val = np.random.default_rng(i).random(len(y)) < 0.3
        parties[name] = LenderTreeParty(name, cols, y, IDS[name], val_mask=val)
        reg = HandlerRegistry()
        parties[name].register(reg)
        channel.add_party(name, Role.LENDER, reg)
    platform = PlatformTreeParty("tiange", tables, IDS["tiange"], categorical=("segment",))
    reg = HandlerRegistry()
    platform.register(reg)
    channel.add_party("tiange", Role.PLATFORM, reg)
    params = GBDTParams(
        n_trees=40,
        max_depth=4,
        learning_rate=1.0,
        max_bins=16,
        min_child_weight=0.0,
        reg_lambda=0.0,
        categorical=("segment",),
        early_stopping_rounds=3,
    )  # overfits fast
    result = run_hybrid_trees(channel, HybridTreesConfig("run1", tuple(SIZES), "tiange", LENDER_FEATURES, params))
    channel.close()
    keep = len(result.trees)
    assert keep < params.n_trees  # stopped early
    assert len(result.val_loss) == keep + 1 + params.early_stopping_rounds or len(result.val_loss) == params.n_trees + 1
    assert result.val_loss[keep] == min(result.val_loss)
    fed = GBDTModel(result.owners, result.trees, result.base_score,
                    {LENDERS_OWNER: parties["yixin"].table, "tiange": platform.table})  # fmt: skip
    for name, (cols, y) in lenders.items():
        val = parties[name].val
        p = fed.predict_proba({**{f: v[val] for f, v in cols.items()}, **{f: v[val] for f, v in tables[name].items()}})
        want = evaluate(y[val], p)
        assert result.metrics[name]["auc"] == pytest.approx(want["auc"], abs=1e-12)
        assert result.metrics[name]["n"] == val.sum()
        assert parties[name].model is not None and len(parties[name].model.trees) == keep


PURPOSES = ("__unseen__", "car", "home", "study", "business", "travel")  # the shared schema's levels


def _categorical_run(vocabularies, seed: int = 7):
    lenders, tables = federation(seed)
    rng = np.random.default_rng(seed)
    channel = InMemoryChannel(record_wire=True)
    parties = {}
    for name, (cols, y) in lenders.items():
        cols["purpose"] = rng.integers(1, len(PURPOSES), len(y)).astype(float)  # store codes of the levels
        y[np.isin(cols["purpose"], (2.0, 4.0)) & (rng.random(len(y)) < 0.6)] = 1.0  # no threshold splits 2, 4 off
        reg = HandlerRegistry()
        parties[name] = LenderTreeParty(name, cols, y, IDS[name], categorical={"purpose": vocabularies[name]})
        parties[name].register(reg)
        channel.add_party(name, Role.LENDER, reg)
    platform = PlatformTreeParty("tiange", tables, IDS["tiange"], categorical=("segment",))
    reg = HandlerRegistry()
    platform.register(reg)
    channel.add_party("tiange", Role.PLATFORM, reg)
    params = GBDTParams(n_trees=3, max_depth=2, max_bins=16, categorical=("segment", "purpose"))
    cfg = HybridTreesConfig("run1", tuple(SIZES), "tiange", (*LENDER_FEATURES, "purpose"), params)
    try:
        return run_hybrid_trees(channel, cfg), parties, platform, lenders, tables, params, channel
    finally:
        channel.close()


def test_categorical_lender_features_split_on_category_sets_as_the_central_learner():
    result, parties, platform, lenders, tables, params, channel = _categorical_run(dict.fromkeys(SIZES, PURPOSES))
    # on the wire: a digest of the levels (lenders must agree on them), never a level name
    setup = [r.params["categorical"] for r in channel.wire_log if r.kind == "trees.setup"
             and r.direction == "from_party" and r.party != "tiange"]  # fmt: skip
    assert len(setup) == 3 and all(set(c) == {"purpose"} and len(c["purpose"]) == len(PURPOSES) for c in setup)
    assert not any(level in repr(r.params) for r in channel.wire_log for level in PURPOSES[1:])
    rules = [r for r in parties["yixin"].table.rules.values() if r.feature == "purpose"]
    assert rules and all(r.categorical for r in rules)  # a set of levels, not a threshold on the codes
    assert {2.0, 4.0} in [set(r.left) for r in rules] + [set(r.right) for r in rules]
    feats = (*LENDER_FEATURES, "purpose")
    cols = {f: np.concatenate([lenders[x][0][f] for x in SIZES]) for f in feats}
    cols.update({f: np.concatenate([tables[x][f] for x in SIZES]) for f in PLATFORM_FEATURES})
    y = np.concatenate([lenders[x][1] for x in SIZES])
    ref = GBDTParams(**{**params.to_dict(), "sticky_owners": ("tiange",), "first_tree_owners": (LENDERS_OWNER,)})
    owners = {**dict.fromkeys(feats, LENDERS_OWNER), **dict.fromkeys(PLATFORM_FEATURES, "tiange")}
    model = train(cols, y, ref, owners=owners, names=[*feats, *PLATFORM_FEATURES],
                  mappers={LENDERS_OWNER: parties["yixin"].mapper, "tiange": platform.mapper})  # fmt: skip
    for ours, want in zip(result.trees, model.trees, strict=True):
        np.testing.assert_array_equal(ours.value, want.value)
    assert parties["yixin"].table.to_dict() == model.tables[LENDERS_OWNER].to_dict()
    # an unseen level (code 0) or a missing value follows the learned default direction
    fed = GBDTModel(result.owners, result.trees, result.base_score,
                    {LENDERS_OWNER: parties["yixin"].table, "tiange": platform.table})  # fmt: skip
    some = {f: v[:50] for f, v in cols.items()}
    unseen = fed.margin({**some, "purpose": np.zeros(50)})
    np.testing.assert_array_equal(unseen, fed.margin({**some, "purpose": np.full(50, np.nan)}))
    assert not np.array_equal(unseen, fed.margin(some))


def test_a_lender_that_met_one_more_level_agrees_with_the_others():
    # ingest appends a level the schema did not declare, such as __missing__, after the declared ones
    result, parties, *_ = _categorical_run({**dict.fromkeys(SIZES, PURPOSES), "meili": (*PURPOSES, "__missing__")})
    assert parties["meili"].mapper == parties["yixin"].mapper and result.trees


def test_lenders_with_different_category_levels_fail_naming_both():
    other = (*PURPOSES[:3], "school", *PURPOSES[4:])
    with pytest.raises(InvalidInput, match=r"'yixin' and 'meili'.*'purpose'"):
        _categorical_run({"yixin": PURPOSES, "meili": other, "cango": PURPOSES})


def test_row_subsampling_each_lender_leaves_its_unsampled_rows_out_of_the_histograms():
    params = GBDTParams(n_trees=4, max_depth=3, max_bins=16, subsample=0.5, seed=5, categorical=("segment",))
    result, parties, *_ = run(params)
    full, *_ = run(dataclasses.replace(params, subsample=1.0))
    assert len(result.trees) == 4 and any(
        not np.array_equal(a.value, b.value) for a, b in zip(result.trees, full.trees, strict=True))
    samples = []
    for p in parties.values():
        assert p._run is not None and p._run.h is not None
        used = p._run.h != 0  # the last tree's own sample of this lender's rows
        assert 0.4 < used.mean() < 0.6
        samples.append(used[:300])
    assert not np.array_equal(samples[0], samples[1])  # each lender draws its own
