"""Horizontal trees: lenders with a shared schema; histograms summed under the leader's CKKS key at the
coordinator, which relays ciphertexts and masked vectors only."""

from __future__ import annotations

import numpy as np
import pytest

from fedcore.errors import InvalidInput
from fedcore.protocol.horizontal_trees.coordinator import HorizontalTreesConfig, run_horizontal_trees
from fedcore.protocol.horizontal_trees.party import LenderHTreeParty
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role
from fedcore.protocol.sealing import make_identities
from fedcore.protocol.tasks import HandlerRegistry
from models.gbdt import GBDTModel, GBDTParams, train
from models.metrics import auc

FEATURES = ("income", "arrears", "loan", "util")
SIZES = {"yixin": 900, "meili": 700, "cango": 800}
IDS = make_identities(list(SIZES))


def _lender(rng, n):
    x = {"income": rng.lognormal(8, 0.4, n), "arrears": rng.poisson(1.0, n).astype(float),
         "loan": rng.uniform(1, 50, n).round(1), "util": rng.uniform(0, 1, n)}  # fmt: skip
    x["income"][rng.random(n) < 0.1] = np.nan
    z = -1.5 + 0.8 * x["arrears"] + 1.2 * x["util"] - 0.3 * np.nan_to_num(np.log(x["income"]) - 8)
    return x, (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)


def _run(params, seed=0, record=False, val=0.0, levels=None):
    rng = np.random.default_rng(seed)
    data = {name: _lender(rng, n) for name, n in SIZES.items()}
    ch = InMemoryChannel(record_wire=record)
    parties = {}
    features = FEATURES
    for name, (x, y) in data.items():
        if levels is not None:  # a categorical feature: store codes, risky levels 2 and 4 (not a threshold)
            x["purpose"] = rng.integers(1, 6, len(y)).astype(float)
            y[np.isin(x["purpose"], (2.0, 4.0)) & (rng.random(len(y)) < 0.5)] = 1.0
            features = (*FEATURES, "purpose")
        reg = HandlerRegistry()
        parties[name] = LenderHTreeParty(name, x, y, IDS[name], val_mask=np.arange(len(y)) < val * len(y),
                                         categorical=None if levels is None else {"purpose": levels[name]})
        parties[name].register(reg)
        ch.add_party(name, Role.LENDER, reg)
    try:
        res = run_horizontal_trees(ch, HorizontalTreesConfig("h1", tuple(SIZES), features, params))
    finally:
        ch.close()
    return res, parties, data, ch


def test_horizontal_trees_grow_the_pooled_model():
    params = GBDTParams(n_trees=10, max_depth=3, max_bins=16, monotone={"arrears": 1})
    res, parties, data, _ = _run(params)
    cols = {f: np.concatenate([data[x][0][f] for x in SIZES]) for f in FEATURES}
    y = np.concatenate([data[x][1] for x in SIZES])
    # every lender keeps the same model with the same rules
    models = [p.model for p in parties.values()]
    assert all(m is not None for m in models)
    tables = [m.tables["lenders"].to_dict() for m in models]  # type: ignore[union-attr]
    assert all(t == tables[0] for t in tables)
    model: GBDTModel = models[0]  # type: ignore[assignment]
    assert len(model.trees) == len(res.trees) == 10
    # against the central learner on the pooled rows with the same (pooled) bin edges
    central = train(cols, y, params, mappers={"lenders": parties["yixin"].mapper}, owners=dict.fromkeys(FEATURES,
                    "lenders"), names=list(FEATURES))  # fmt: skip
    np.testing.assert_allclose(model.predict_proba(cols), central.predict_proba(cols), atol=2e-3)
    assert abs(auc(y, model.predict_proba(cols)) - auc(y, central.predict_proba(cols))) < 1e-3
    assert auc(y, model.predict_proba(cols)) > 0.7
    start = 0  # every lender's margin is the model's on its own rows
    for name, n in SIZES.items():
        own = model.margin({f: v[start : start + n] for f, v in cols.items()})
        np.testing.assert_allclose(parties[name].margin(), own, atol=1e-9)
        start += n
    # the monotone constraint holds
    grid = np.arange(0, 8, dtype=float)
    sweep = np.stack([model.margin({**{f: v[:50] for f, v in cols.items()}, "arrears": np.full(50, g)}) for g in grid])
    assert (np.diff(sweep, axis=0) >= -1e-12).all()
    assert res.bytes_per_lender > 0 and set(res.importance) <= set(FEATURES)


def test_wire_the_coordinator_sees_ciphertexts_and_masked_vectors_only():
    params = GBDTParams(n_trees=3, max_depth=3, max_bins=16)
    _, parties, data, ch = _run(params, seed=1, record=True)
    edges = {fb.upper for fb in parties["yixin"].mapper.features}  # type: ignore[union-attr]
    rules = [r.threshold for r in parties["yixin"].table.rules.values() if r.threshold != round(r.threshold)]
    assert len(rules) >= 3  # distinctive thresholds (not small whole numbers) to look for
    for r in ch.wire_log:
        text = repr(r.params)
        for th in rules:
            assert repr(th) not in text  # thresholds never travel
        for upper in edges:
            for e in upper:
                assert e == round(e) or repr(e) not in text
        if r.direction == "from_party" and r.kind == "htrees.hist":
            assert set(r.params) <= {"val_loss"}  # the histograms are only in the ciphertext payload
            # the leader's own sums never leave it; the others' travel as ciphertexts
            assert (r.payload == b"") == (r.party == "yixin")
        if r.direction == "from_party" and r.kind == "htrees.quant":
            assert set(r.params) == {"masked"}
    for _, y in data.values():  # no label count or row of any lender in clear
        assert all(repr(float(y.sum())) not in repr(r.params) for r in ch.wire_log if r.kind != "htrees.setup")


def test_inputs_are_checked_before_anything_is_sent():
    ch = InMemoryChannel(record_wire=True)
    with pytest.raises(InvalidInput, match="two or more"):
        run_horizontal_trees(ch, HorizontalTreesConfig("h", ("yixin",), FEATURES))
    with pytest.raises(InvalidInput, match="sticky_owners"):
        run_horizontal_trees(ch, HorizontalTreesConfig("h", ("yixin", "meili"), FEATURES,
                                                       GBDTParams(sticky_owners=("x",))))  # fmt: skip
    assert ch.wire_log == []
    ch.close()


@pytest.mark.parametrize("victim", ["yixin", "cango"])  # the leader, another lender
def test_a_lender_lost_mid_tree_fails_the_run_naming_it(victim):
    from fedcore.errors import PartyUnavailable

    rng = np.random.default_rng(4)
    ch = InMemoryChannel()
    calls = {"hist": 0}
    for name, n in SIZES.items():
        x, y = _lender(rng, n)
        inner = HandlerRegistry()
        LenderHTreeParty(name, x, y, IDS[name]).register(inner)
        if name != victim:
            ch.add_party(name, Role.LENDER, inner)
            continue

        def flaky(ctx, params, inner=inner, name=name):
            calls["hist"] += 1
            if calls["hist"] == 4:  # the link drops while the party builds a histogram
                ch.disconnect(name)
                ctx.cancelled.wait(timeout=60)
            return inner.get("htrees.hist")(ctx, params)

        reg = HandlerRegistry()
        for kind in inner.kinds():
            reg.register(kind, flaky if kind == "htrees.hist" else inner.get(kind))
        ch.add_party(name, Role.LENDER, reg)
    with pytest.raises(PartyUnavailable) as err:
        run_horizontal_trees(ch, HorizontalTreesConfig("h1", tuple(SIZES), FEATURES, GBDTParams(n_trees=3)))
    assert victim in str(err.value) and calls["hist"] == 4
    ch.close()


def test_early_stopping_keeps_the_best_pooled_validation_loss_and_rows_are_subsampled():
    params = GBDTParams(n_trees=40, max_depth=5, learning_rate=1.0, max_bins=16, early_stopping_rounds=3,
                        subsample=0.5, seed=2)  # fmt: skip
    res, parties, data, _ = _run(params, seed=3, val=0.3)
    keep = len(res.trees)
    assert keep < 40 and keep == int(np.argmin(res.val_loss))  # val_loss[i]: pooled, after i trees
    assert len(res.val_loss) == keep + 4  # stopped three trees after the best
    for name, p in parties.items():
        assert p.model is not None and len(p.model.trees) == keep
        x, y = data[name]
        val = np.arange(len(y)) < 0.3 * len(y)
        prob = p.model.predict_proba({f: v[val] for f, v in x.items()})
        assert p.metrics["auc"] == pytest.approx(auc(y[val], prob), abs=1e-12)  # the kept model's metrics
        assert p._run is not None and p._run.h is not None
        used = np.asarray(p._run.h)[~val] != 0  # the last tree's sample: about half of the training rows
        assert 0.4 < used.mean() < 0.6
    assert set(res.importance) <= set(FEATURES) and res.importance


def test_without_early_stopping_every_tree_is_kept_and_every_training_row_is_used():
    res, parties, _, _ = _run(GBDTParams(n_trees=4, max_depth=3, max_bins=16), seed=3, val=0.3)
    assert len(res.trees) == 4 and all(p.model is not None and len(p.model.trees) == 4 for p in parties.values())
    assert all((np.asarray(p._run.h)[~p.val] != 0).all() for p in parties.values())  # type: ignore[union-attr]


PURPOSES = ("__unseen__", "car", "home", "study", "business", "travel")


def test_categorical_features_split_on_level_sets_as_the_central_learner():
    params = GBDTParams(n_trees=4, max_depth=3, max_bins=16, categorical=("purpose",))
    levels = {**dict.fromkeys(SIZES, PURPOSES), "cango": (*PURPOSES, "__missing__")}  # one more level met
    _, parties, data, _ = _run(params, seed=2, levels=levels)
    model = parties["yixin"].model
    assert model is not None
    rules = [r for r in model.tables["lenders"].rules.values() if r.feature == "purpose"]
    assert rules and all(r.categorical for r in rules)
    assert {2.0, 4.0} in [set(r.left) for r in rules] + [set(r.right) for r in rules]
    feats = (*FEATURES, "purpose")
    cols = {f: np.concatenate([data[x][0][f] for x in SIZES]) for f in feats}
    y = np.concatenate([data[x][1] for x in SIZES])
    central = train(cols, y, params, mappers={"lenders": parties["yixin"].mapper},
                    owners=dict.fromkeys(feats, "lenders"), names=list(feats))  # fmt: skip
    np.testing.assert_allclose(model.predict_proba(cols), central.predict_proba(cols), atol=2e-3)
    with pytest.raises(InvalidInput, match=r"'cango' and 'meili'.*'purpose'"):
        _run(params, levels={**levels, "meili": ("__unseen__", "home", "car", *PURPOSES[3:])})
    with pytest.raises(InvalidInput, match=r"\['income'\] are not categorical"):
        _run(GBDTParams(n_trees=1, categorical=("income",)), levels=levels)
