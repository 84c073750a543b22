"""The Flower ServerApp for `flwr run` (the same driver on Flower's own grid)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedcore.protocol import horizontal as hz
from fedcore.protocol.horizontal.checkpoints import FileCheckpointStore
from fedcore.protocol.horizontal.coordinator import Hooks, JobSpec, run_horizontal

log = logging.getLogger(__name__)


server_app = ServerApp()


def spec_from_run_config(rc: Mapping[str, Any]) -> JobSpec:
    """Build a :class:`JobSpec` from a Flower run config (``[tool.flwr.app.config]``)."""
    model = str(rc.get("model", "logistic"))
    defaults = {"lr": 1e-2, "local_epochs": 1} if model == "logistic" else {"lr": 3e-3, "local_epochs": 2}
    params = hz.TrainParams(
        run=str(rc.get("run-name", "flwr-run")),
        model=model,
        secure=str(rc.get("secure", "he")),
        lr=float(rc.get("lr", defaults["lr"])),
        local_epochs=int(rc.get("local-epochs", defaults["local_epochs"])),
        seed=int(rc.get("seed", 0)),
        val_fraction=float(rc.get("val-fraction", 0.2)),
    )
    return JobSpec(
        run_id=params.run,
        parties=(),
        rounds=int(rc.get("rounds", 3)),
        strategy=str(rc.get("strategy", "fedavg")),
        min_parties=int(rc.get("min-parties", 2)),
        params=params,
        round_timeout_s=float(rc.get("round-timeout", 600.0)),
    )


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    spec = spec_from_run_config(context.run_config)
    n_wait = 0
    while len(list(grid.get_node_ids())) < spec.min_parties and n_wait < 120:
        time.sleep(1.0)
        n_wait += 1
    ckdir = context.run_config.get("checkpoint-dir")
    store = FileCheckpointStore(Path(str(ckdir))) if ckdir else None
    record = run_horizontal(grid, spec, Hooks(store, lambda r: log.warning("round %d: %s", r.round, r.evaluate)))
    out = context.run_config.get("result-file")
    if out:
        Path(str(out)).write_text(json.dumps(record.to_dict(), indent=2))
