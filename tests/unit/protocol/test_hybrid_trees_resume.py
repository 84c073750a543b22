"""A coordinator killed during a hybrid tree run resumes from its checkpoint after the last finished tree and
ends with the model of an uninterrupted run: the same trees (splits, references, leaf values to the bit),
rules at every owner, validation losses, importance and lender margins, whether the parties kept running
or restarted too. The finished trees are replayed without a histogram; changed party data is refused."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fedcore.errors import InvalidInput, NotFound
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.messages import Role
from fedcore.protocol.tasks import HandlerRegistry
from fedcore.protocol.trees.coordinator import HybridTreesConfig, resume_hybrid_trees, run_hybrid_trees
from fedcore.protocol.trees.party import LenderTreeParty, PlatformTreeParty
from models.gbdt import GBDTParams
from tests.unit.protocol.test_hybrid_trees import IDS, LENDER_FEATURES, SIZES, federation

PARAMS = GBDTParams(
    n_trees=6, max_depth=3, max_bins=16, categorical=("segment",), monotone={"arrears": 1},
    colsample_bytree=0.8, subsample=0.8, seed=4,
)  # fmt: skip


class Crash(Exception):
    """Not a FedcreditError: the driver dies as in a kill, without telling the parties."""


def _parties(seed: int = 12, flip: int = 0):
    lenders, tables = federation(seed)
    out = {}
    for i, (name, (cols, y)) in enumerate(lenders.items()):
        y = y.copy()
        y[:flip] = 1.0 - y[:flip]  # changed labels (a resume must refuse them)
        val = np.random.default_rng(i).random(len(y)) < 0.25
        out[name] = LenderTreeParty(name, cols, y, IDS[name], val_mask=val)
    out["tiange"] = PlatformTreeParty("tiange", tables, IDS["tiange"], categorical=("segment",))
    return out


def _channel(parties) -> InMemoryChannel:
    channel = InMemoryChannel(record_wire=True)
    for name, party in parties.items():
        reg = HandlerRegistry()
        party.register(reg)
        channel.add_party(name, Role.PLATFORM if name == "tiange" else Role.LENDER, reg)
    return channel


def _cfg(params: GBDTParams = PARAMS) -> HybridTreesConfig:
    data = {"psi_runs": {x: f"psi-{x}" for x in SIZES}, "version": "3"}
    return HybridTreesConfig("run1", tuple(SIZES), "tiange", LENDER_FEATURES, params, timeout_s=120, data=data)


def _die_at(tree: int):
    def progress(msg: str) -> None:
        if msg.startswith(f"tree {tree + 1}/"):
            raise Crash(msg)

    return progress


@pytest.fixture(scope="module")
def clean():
    parties = _parties()
    channel = _channel(parties)
    try:
        return run_hybrid_trees(channel, _cfg()), parties
    finally:
        channel.close()


def _same_model(a, b, pa, pb) -> None:
    assert len(a.trees) == len(b.trees) == PARAMS.n_trees
    for x, y in zip(a.trees, b.trees, strict=True):
        for field in ("left", "right", "owner", "ref", "value"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field), err_msg=field)
    assert a.val_loss == b.val_loss and a.base_score == b.base_score
    assert a.importance == b.importance and a.metrics == b.metrics
    for name in pa:
        assert pa[name].table.to_dict() == pb[name].table.to_dict(), name
        if name != "tiange":
            np.testing.assert_array_equal(pa[name].margin(), pb[name].margin(), err_msg=name)
            assert pa[name].model.to_dict() == pb[name].model.to_dict()
        else:
            assert pa[name].importance == pb[name].importance


@pytest.mark.parametrize(("done", "restart"), [(0, True), (3, True), (5, False)])
def test_resumed_run_equals_an_uninterrupted_run(clean, tmp_path: Path, done: int, restart: bool) -> None:
    ref, ref_parties = clean
    ckpt = tmp_path / "run1" / "trees.json"
    parties = _parties()
    channel = _channel(parties)
    with pytest.raises(Crash):
        run_hybrid_trees(channel, _cfg(), _die_at(done), checkpoint=ckpt)
    kept = json.loads(ckpt.read_text())
    assert len(kept["trees"]) == done and len(kept["splits"]) == done
    assert not {"threshold", "upper", "categories"} & set(json.dumps(kept["layout"]))  # no value of any party
    if restart:  # the parties' nodes restarted too: nothing of the first attempt survives in memory
        channel.close()
        parties = _parties()
        channel = _channel(parties)
    seen: list[str] = []
    start = len(channel.wire_log)
    cfg, res = resume_hybrid_trees(channel, ckpt, seen.append)
    channel.close()
    assert cfg == _cfg() and res.resumed_after == done
    assert seen[0] == f"resuming after tree {done}: replaying the finished trees' splits"
    assert seen[1] == f"tree {done + 1}/{PARAMS.n_trees}" and f"tree {done}/{PARAMS.n_trees}" not in seen
    hist_trees = {r.params["tree"] for r in channel.wire_log[start:]
                  if r.kind == "trees.hist" and r.direction == "to_party"}
    assert hist_trees == set(range(done, PARAMS.n_trees))  # finished trees replayed without any histogram
    _same_model(ref, res, ref_parties, parties)
    assert len(json.loads(ckpt.read_text())["trees"]) == PARAMS.n_trees


def test_a_resume_over_changed_data_or_without_a_checkpoint_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "trees.json"
    channel = _channel(_parties())
    with pytest.raises(Crash):
        run_hybrid_trees(channel, _cfg(), _die_at(2), checkpoint=ckpt)
    channel.close()
    channel = _channel(_parties(flip=40))  # a lender's labels changed since the run started
    with pytest.raises(InvalidInput, match="cannot resume"):
        resume_hybrid_trees(channel, ckpt)
    channel.close()
    with pytest.raises(NotFound, match="did not finish its setup"):
        resume_hybrid_trees(_channel(_parties()), tmp_path / "nothing.json")


def test_coordinator_resume_job_continues_a_tree_run(clean, tmp_path: Path) -> None:
    """`coordinator resume` of a `vertical` run with model gbdt (coordinator/jobs/vertical.py)."""
    from coordinator.jobs.trees import checkpoint_path
    from coordinator.jobs.vertical import vertical_resume

    ref, _ = clean
    msgs: list[str] = []
    channel = _channel(_parties())
    rc = SimpleNamespace(channel=channel, run_id="run1", params={"model": "gbdt"}, progress=msgs.append,
                         workdir=tmp_path, state=None)  # fmt: skip
    with pytest.raises(Crash):
        run_hybrid_trees(channel, _cfg(), _die_at(4), checkpoint=checkpoint_path(rc))  # type: ignore[arg-type]
    out = vertical_resume(rc)  # type: ignore[arg-type]
    channel.close()
    assert out["resumed_after_tree"] == 4 and out["trees"] == PARAMS.n_trees and out["version"] == "3"
    assert out["val_loss"] == ref.val_loss and out["importance"] == {"lenders": ref.importance["lenders"]}
    assert out["parties"]["tiange"]["role"] == "platform" and "summary_metrics" in out
    assert msgs[0].startswith("resuming after tree 4")


def test_horizontal_tree_runs_say_they_do_not_resume() -> None:
    from coordinator.jobs.train import train_resume

    rc = SimpleNamespace(run_id="train-1", params={"model": "gbdt", "kind": "horizontal"})
    with pytest.raises(InvalidInput, match="'train-1' trained horizontal trees, which do not resume"):
        train_resume(rc)  # type: ignore[arg-type]


def test_a_run_failed_by_a_lost_party_resumes_to_the_same_model(clean, tmp_path: Path) -> None:
    """A lender's link drops mid-tree: the run fails naming it; once it is back, the failed run resumes
    from the last finished tree to the uninterrupted run's model."""
    from fedcore.errors import PartyUnavailable

    ref, ref_parties = clean
    ckpt = tmp_path / "trees.json"
    parties = _parties()
    channel = _channel({k: v for k, v in parties.items() if k != "meili"})
    inner = HandlerRegistry()
    parties["meili"].register(inner)
    calls = {"hist": 0}

    def flaky_hist(ctx, params):
        calls["hist"] += 1
        if calls["hist"] == 8:  # the link drops while meili works on a histogram of a later tree
            channel.disconnect("meili")
            ctx.cancelled.wait(timeout=60)
        return inner.get("trees.hist")(ctx, params)

    reg = HandlerRegistry()
    for kind in inner.kinds():
        reg.register(kind, flaky_hist if kind == "trees.hist" else inner.get(kind))
    channel.add_party("meili", Role.LENDER, reg)
    with pytest.raises(PartyUnavailable, match="meili"):
        run_hybrid_trees(channel, _cfg(), checkpoint=ckpt)
    channel.close()
    done = len(json.loads(ckpt.read_text())["trees"])
    assert 1 <= done < PARAMS.n_trees
    parties = _parties()
    channel = _channel(parties)
    _, res = resume_hybrid_trees(channel, ckpt)
    channel.close()
    assert res.resumed_after == done
    _same_model(ref, res, ref_parties, parties)
