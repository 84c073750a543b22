"""Party side of evaluation reports: the :data:`~models.histograms.REPORT_TASK` handler.

For a model this party holds (``<model dir>/<run>/<version>/``, saved by horizontal training), the
handler scores the party's own training and validation splits (the same deterministic split the run
used) and answers with **counts per score bin by label** only: no score, row or identifier of any
subject leaves the party. Optionally, a ``scoring_scores(run, version)`` callable supplies the
probabilities this party's recent scoring traffic got (the scoring service's own log), returned as an
unlabelled histogram for population stability; without it the reply says there is none.

Wire it with::

    register_report_handlers(registry, store_data_provider(store), model_dir=config.home / "models")
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedcore.errors import InvalidInput, NotFound
from fedcore.protocol.horizontal.env import DataProvider
from fedcore.protocol.messages import JSONValue, TaskReply
from fedcore.protocol.tasks import HandlerRegistry, TaskContext
from fedcore.protocol.trees.messages import LENDERS_OWNER
from models import histograms as hm
from party_node.served import served_hist

__all__ = ["ScoringScores", "load_model", "register_report_handlers", "score_splits", "tree_doc"]

ScoringScores = Callable[[str, str], "np.ndarray | None"]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:64] or "x"


def load_model(model_dir: Path, run: str, version: str) -> tuple[Any, dict[str, Any]]:
    """The stored model (a torch module) and its metadata (params, scaler, feature names)."""
    from models.nets import build_model, set_weights

    d = Path(model_dir) / _safe(run) / _safe(version)
    if not (d / "model.json").is_file() or not (d / "weights.npz").is_file():
        raise NotFound(f"this party holds no model {run!r} version {version!r}")
    meta = dict(json.loads((d / "model.json").read_text()))
    with np.load(d / "weights.npz") as z:
        weights = [z[f"arr_{i}"] for i in range(len(z.files))]
    from fedcore.protocol.horizontal import TrainParams

    p = TrainParams.from_config(meta["params"])
    n_features = len(meta.get("scaler", {}).get("mean", [])) or len(meta.get("feature_names", []))
    model = build_model(p.model, n_features, **p.model_kwargs)  # type: ignore[arg-type]
    set_weights(model, weights)
    model.eval()
    return model, meta


def score_splits(
    model_dir: Path, data_provider: DataProvider, run: str, version: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(p_train, y_train, p_val, y_val)``: the model's probabilities on this party's own splits."""
    from models.train import Scaler, predict_proba

    doc = tree_doc(Path(model_dir) / _safe(run))
    if doc is not None:  # a horizontal tree model: the same train/validation split the run used
        if doc.get("kind") != "horizontal-gbdt":
            raise NotFound(f"model {run!r} is a {doc.get('kind')} model: its report needs the other parties' splits")
        from models.gbdt import GBDTModel

        gbdt = GBDTModel.from_dict(doc["model"])
        Xtr, ytr, Xva, yva, names = data_provider({"fc-dataset": doc.get("dataset", ""), "fc-seed": doc.get("seed", 0),
                                                   "fc-val-fraction": doc.get("val_fraction", 0.2),
                                                   "fc-encoding": "codes"})  # fmt: skip

        def proba(x: Any) -> np.ndarray:
            arr = np.asarray(x, dtype=np.float64)
            return gbdt.predict_proba({f: arr[:, j] for j, f in enumerate(names)})

        return proba(Xtr), np.asarray(ytr).astype(np.int64), proba(Xva), np.asarray(yva).astype(np.int64)
    model, meta = load_model(model_dir, run, version)
    Xtr, ytr, Xva, yva, names = data_provider(dict(meta["params"]))
    if list(names) != [str(n) for n in meta.get("feature_names", names)]:  # a model trained on codes
        Xtr, ytr, Xva, yva, _ = data_provider({**dict(meta["params"]), "fc-encoding": "codes"})
    scaler = Scaler.from_dict(meta["scaler"])
    ptr = predict_proba(model, scaler.transform(np.asarray(Xtr, dtype=np.float64)))
    pva = predict_proba(model, scaler.transform(np.asarray(Xva, dtype=np.float64)))
    return ptr, np.asarray(ytr).astype(np.int64), pva, np.asarray(yva).astype(np.int64)


def tree_doc(folder: Path) -> dict[str, Any] | None:
    """The tree model this party keeps in ``folder`` (``gbdt.json``, see :mod:`party_node.trees`), if any."""
    path = folder / "gbdt.json"
    return dict(json.loads(path.read_text())) if path.is_file() else None


def _joint_reply(folder: Path, run: str, min_rows: int) -> TaskReply:
    """A joint (vertical) model: the best model's validation histogram this lender kept at the end of
    training (its training rows were never scored jointly, so there is no training histogram) and the
    histogram of the scores it has served with the model (:mod:`party_node.served`)."""
    from fedcore.protocol.vertical.party import VALIDATION_HIST

    path = folder / VALIDATION_HIST
    if not path.is_file():
        raise NotFound(f"this party holds no validation scores of joint model {run!r} (only its lenders do)")
    data = json.loads(path.read_text())
    if int(data.get("n_val", 0)) < min_rows:
        raise InvalidInput(f"{hm.REPORT_TASK}: fewer than {min_rows} validation rows; refusing to report")
    served = served_hist(folder)  # the scores this lender has served with the model, if any
    scoring = (hm.coarsen(served).to_params() if served is not None and served.n >= min_rows else None)
    val = hm.coarsen(hm.Hist.from_params(data["val"])).to_params()  # as every histogram that leaves a party
    return TaskReply(params={"val": val, "train": None, "scoring": scoring, "n_val": int(data["n_val"]), "n_train": 0})


def register_report_handlers(
    registry: HandlerRegistry,
    data_provider: DataProvider,
    *,
    model_dir: Path,
    scoring_scores: ScoringScores | None = None,
    min_rows: int = 20,
) -> None:
    """Install the :data:`~models.histograms.REPORT_TASK` handler.

    Params: ``model_run``, ``version``, ``bins`` (default 1000). Reply params: ``val`` and ``train``
    histograms (``{"bad": [...], "good": [...]}``), ``scoring`` (an unlabelled histogram or ``None``),
    ``n_val``, ``n_train``. A split with fewer than ``min_rows`` rows is refused (small counts say too
    much about individuals), and every histogram is :func:`~models.histograms.coarsen`-ed first: each
    non-empty bin holds at least :data:`~models.histograms.MIN_BIN_COUNT` subjects.
    """

    def handle(ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        run, version = params.get("model_run"), params.get("version", "1")
        bins = params.get("bins", hm.DEFAULT_BINS)
        if not isinstance(run, str) or not run or not isinstance(version, str):
            raise InvalidInput(f"{hm.REPORT_TASK}: 'model_run' and 'version' must be strings")
        if not isinstance(bins, int | float) or int(bins) != bins:
            raise InvalidInput(f"{hm.REPORT_TASK}: 'bins' must be an integer")
        folder = Path(model_dir) / _safe(run)
        tree = tree_doc(folder)
        importance: dict[str, JSONValue] = {}
        if tree is not None:  # a tree model: this party's own gain importance goes with its counts
            if tree.get("role") != "lender":
                raise NotFound(f"this party holds no labels of tree model {run!r} (only its lenders report)")
            own = dict(tree["model"].get("importance", {}).get(LENDERS_OWNER, {}))
            importance = {"importance": {str(k): float(v) for k, v in own.items()}}
        if (folder / "slice.json").is_file() or (tree or {}).get("kind") == "hybrid-gbdt":
            reply = _joint_reply(folder, run, min_rows)
            return TaskReply(params={**reply.params, **importance})
        ptr, ytr, pva, yva = score_splits(model_dir, data_provider, run, version)
        ctx.check_cancelled()
        if len(yva) < min_rows or len(ytr) < min_rows:
            raise InvalidInput(f"{hm.REPORT_TASK}: fewer than {min_rows} rows in a split; refusing to report")
        scoring: JSONValue = None
        if scoring_scores is not None:
            s = scoring_scores(run, version)
            if s is not None and len(s) >= min_rows:
                scoring = hm.coarsen(hm.histogram(None, s, int(bins))).to_params()
        # sparse bins are merged here, before anything leaves the party (no bin describes < 10 subjects)
        return TaskReply(params={
            "val": hm.coarsen(hm.histogram(yva, pva, int(bins))).to_params(),
            "train": hm.coarsen(hm.histogram(ytr, ptr, int(bins))).to_params(),
            "scoring": scoring,
            "n_val": len(yva),
            "n_train": len(ytr),
            **importance,
        })

    registry.register(hm.REPORT_TASK, handle)
