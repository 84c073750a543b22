"""A coordinator crash in vertical training, then resume, gives the model of an uninterrupted run: same
weights at every party and same validation losses, up to the CKKS noise and masks that differ between any
two runs (about 1e-6 here; resuming from the wrong state differed by 5e-2). A crash right after the first
epoch was the case that failed: the parties read ``resume_epoch=0`` as "no resume" and restarted from zero."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedcore.protocol.vertical.coordinator import EpochReport, VerticalConfig, VerticalResult, run_vertical
from tests.unit.protocol.test_vertical_training import _small, federation


class Crash(Exception):
    """Not a FedcreditError: the driver dies as in a kill, without aborting the parties."""


def _weights(root: Path, names: list[str], run: str) -> dict[str, np.ndarray]:
    out = {}
    for n in names:
        doc = json.loads((root / n / "models" / run / "slice.json").read_text())
        out[n] = np.array([doc.get("intercept", 0.0), *doc["weights"]])
    return out


CFG = VerticalConfig(epochs=4, batch_size=256, val_fraction=0.2, patience=10, timeout_s=120, seed=3)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, VerticalResult]:
    """The run without a crash: the same for every crash point, so trained once for the module."""
    root = tmp_path_factory.mktemp("clean")
    lenders, srcs, psi = _small(2, 1600)
    ch, _ = federation(srcs, "tiange", root)
    clean = run_vertical(ch, "r", lenders, "tiange", psi, CFG, workdir=root / "coord")
    ch.close()
    return root, clean


@pytest.mark.parametrize("crash_after", [0, 1])
def test_resumed_run_equals_uninterrupted_run(tmp_path: Path, crash_after: int,
                                              uninterrupted: tuple[Path, VerticalResult]) -> None:
    lenders, srcs, psi = _small(2, 1600)
    root_a, clean = uninterrupted
    ch, _ = federation(srcs, "tiange", tmp_path / "b")

    def die(report: EpochReport) -> None:
        if report.epoch == crash_after:
            raise Crash(f"coordinator killed after epoch {report.epoch}")

    with pytest.raises(Crash):
        run_vertical(ch, "r", lenders, "tiange", psi, CFG, workdir=tmp_path / "b" / "coord", on_epoch=die)
    resumed = run_vertical(ch, "r", [], "", {}, workdir=tmp_path / "b" / "coord", resume=True)
    ch.close()

    assert [h["epoch"] for h in resumed.history] == [h["epoch"] for h in clean.history] == [0, 1, 2, 3]
    np.testing.assert_allclose([h["val_loss"] for h in resumed.history], [h["val_loss"] for h in clean.history],
                               atol=1e-5)
    names = [*lenders, "tiange"]
    wa, wb = _weights(root_a, names, "r"), _weights(tmp_path / "b", names, "r")
    for n in names:
        np.testing.assert_allclose(wb[n], wa[n], atol=1e-5, err_msg=n)
    assert resumed.best_epoch == clean.best_epoch
    for n in lenders:
        assert abs(resumed.metrics[n]["auc"] - clean.metrics[n]["auc"]) < 1e-4, n


@pytest.mark.parametrize("garbage", [b"\x07" * 40, b""])
def test_a_malformed_reply_is_attributed_to_its_party(tmp_path: Path, garbage: bytes) -> None:
    from fedcore.errors import CorruptResult
    from fedcore.protocol.messages import TaskReply
    from fedcore.protocol.vertical.messages import FORWARD

    def hook(reg) -> None:
        reg._handlers[FORWARD] = lambda ctx, params: TaskReply({}, [garbage])

    lenders, srcs, psi = _small(1, 600)
    ch, _ = federation(srcs, "tiange", tmp_path, hooks={"tiange": hook})
    with pytest.raises(CorruptResult) as err:
        run_vertical(ch, "g", lenders, "tiange", psi, VerticalConfig(epochs=1, batch_size=256, timeout_s=120),
                     workdir=tmp_path / "coord")
    assert err.value.party == "tiange" and err.value.step == FORWARD
    assert not any((tmp_path / n / "models" / "g").exists() for n in [*lenders, "tiange"])
    ch.close()
