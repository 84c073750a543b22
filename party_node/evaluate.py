"""``fedcredit party evaluate MODEL --file holdout.csv``: a lender's own labelled file against a model.

A horizontal model (``HOME/models/<run>/<version>/``, saved at every lender it was trained for, or a
horizontal tree model's ``gbdt.json``: the file must then hold every feature) is scored here, locally:
nothing leaves the node. A joint model (``HOME/models/<run>/slice.json``, or a hybrid tree model) is
scored through joint scoring, as a live applicant would be (the other parties see what any scoring
request shows them; see :mod:`fedcore.protocol.scoring`). The file holds an id column, the label
column (0/1, or the text values the dataset's schema declares) and, optionally, the model's features
(numbers, or category levels as text); a joint model looks absent features up in the store.
Metrics: AUC, KS (the one pooled definition of :mod:`models.metrics`), Gini, bad rate at 80% approval.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedcore.errors import InvalidInput, NotFound
from models.metrics import evaluate

from .categories import encode_raw
from .horizontal_encoding import apply_encoding, encoding_from_names, stored_columns
from .reporting import tree_doc
from .scoring_batch import Applicant
from .store import Store

__all__ = ["Evaluation", "evaluate_file", "read_labelled"]


@dataclass(frozen=True)
class Evaluation:
    model: str
    kind: str  # "horizontal" | "joint"
    ids: list[str]
    y: np.ndarray
    p: np.ndarray
    metrics: dict[str, float]

    def summary(self) -> dict[str, Any]:
        m = dict(self.metrics)
        m["gini"] = 2 * m["auc"] - 1
        return {"model": self.model, "kind": self.kind, **m}


def _label(v: str, line: int, path: Path, col: str, bad: tuple[str, ...], good: tuple[str, ...]) -> int:
    t = v.strip()
    if bad:
        if t in bad:
            return 1
        if not good or t in good:
            return 0
        raise InvalidInput(f"{path}, row {line}, column {col!r}: label {t!r} is not one of {[*bad, *good]}")
    if t in ("0", "1", "0.0", "1.0"):
        return int(float(t))
    raise InvalidInput(f"{path}, row {line}, column {col!r}: label {t!r} must be 0 or 1")


def read_labelled(path: Path, id_column: str, label_column: str, kind: str, bad: tuple[str, ...] = (),
                  good: tuple[str, ...] = ()) -> tuple[list[Applicant], np.ndarray]:
    """Applicants (with the file's other columns as features, numbers or text) and their labels."""
    if not path.is_file():
        raise InvalidInput(f"{path} does not exist")
    apps: list[Applicant] = []
    ys: list[int] = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for need in (id_column, label_column):
            if reader.fieldnames is None or need not in reader.fieldnames:
                raise InvalidInput(f"{path}: needs a column {need!r}")
        for line, row in enumerate(reader, 2):
            lab = row.get(label_column)
            if lab is None or lab.strip() == "":
                continue  # outcome not yet known
            ys.append(_label(lab, line, path, label_column, bad, good))
            feats: dict[str, float | str] = {}
            for k, v in row.items():
                if k is None:
                    raise InvalidInput(f"{path}, row {line}: more fields than the header has columns")
                if k in (id_column, label_column, "id_kind") or v is None or v == "":
                    continue
                try:
                    feats[k] = float(v)
                except ValueError:
                    feats[k] = v.strip()
            apps.append(Applicant(row[id_column] or "", row.get("id_kind") or kind, feats or None))
    y = np.asarray(ys, dtype=np.int64)
    if len(y) == 0 or y.min() == y.max():
        raise InvalidInput(f"{path}: the labelled rows need both outcomes (0 and 1) to evaluate a model")
    return apps, y


def _latest_version(d: Path) -> str:
    versions = [p.name for p in d.iterdir() if (p / "model.json").is_file()] if d.is_dir() else []
    if not versions:
        raise NotFound(f"this party holds no model {d.name!r} (no {d}/<version>/model.json or slice.json)")
    return sorted(versions, key=lambda v: (len(v), v))[-1]


def horizontal_probabilities(store: Store, model_dir: Path, model: str, version: str | None,
                             apps: list[Applicant]) -> np.ndarray:
    """The horizontal model's probabilities for ``apps``, scored at this node (features from the file)."""
    from models.train import Scaler, predict_proba

    from .reporting import load_model

    version = version or _latest_version(model_dir / model)
    net, meta = load_model(model_dir, model, version)
    names = [str(n) for n in meta.get("feature_names", [])]
    dataset = str(meta.get("params", {}).get("fc-dataset") or "")
    if not dataset:
        labelled = [d for d in store.datasets() if store.dataset_info(d).has_labels]
        dataset = labelled[0] if len(labelled) == 1 else ""
    if dataset and any(isinstance(v, str) for a in apps for v in (a.features or {}).values()):
        apps = encode_raw(store, dataset, apps)
    enc = encoding_from_names(store.dataset_info(dataset), names) if dataset else [(n, n, None) for n in names]
    cols = stored_columns(enc)
    X = apply_encoding(enc, _given(apps, cols, model), cols)
    return predict_proba(net, Scaler.from_dict(meta["scaler"]).transform(X))


def _given(apps: list[Applicant], names: list[str], model: str) -> np.ndarray:
    """The features the applicants carry (numbers, category codes), in ``names`` order; all are needed."""
    X = np.empty((len(apps), len(names)))
    for i, a in enumerate(apps):
        feats = a.features or {}
        missing = [n for n in names if n not in feats]
        if missing:
            raise InvalidInput(f"applicant {i} ({a.id!r}): no value for feature(s) {missing} of model {model!r}")
        for j, n in enumerate(names):
            v = feats[n]
            if isinstance(v, str):
                raise InvalidInput(f"applicant {i}: feature {n!r}: {v!r} is not a number")
            X[i, j] = float(v)
    return X


def _tree_probabilities(service: Any, store: Store, tree: dict[str, Any], model: str, apps: list[Applicant],
                        path: Path) -> np.ndarray:
    apps = encode_raw(store, str(tree["dataset"]), apps)  # category levels given as text -> the store's codes
    step = service.settings.max_request
    batches = [service.score(apps[a : a + step], model_id=model, queries=("score",), allow_partial=False,
                             on_invalid="skip", caller="evaluate") for a in range(0, len(apps), step)]  # fmt: skip
    status = np.concatenate([b.status for b in batches])
    bad = np.flatnonzero(status != "ok")
    if len(bad):
        raise InvalidInput(f"{path}: {len(bad)} applicant id(s) could not be scored (first: data row {bad[0] + 1})")
    return np.concatenate([b.prob_default for b in batches]).astype(np.float64)


def evaluate_file(home: Path, store: Store, service_factory: Any, model: str, path: Path, *,
                  id_column: str = "id", label_column: str = "y", kind: str = "", version: str | None = None,
                  label_bad: tuple[str, ...] = (), label_good: tuple[str, ...] = ()) -> Evaluation:
    """Score the labelled file with the model and compute the metrics (see the module docstring)."""
    apps, y = read_labelled(path, id_column, label_column, kind, label_bad, label_good)
    model_dir = Path(home) / "models"
    tree = tree_doc(model_dir / model) if model else None
    if tree is not None:  # a tree model: joint scoring (hybrid) or local (horizontal), as `party score` does
        if tree.get("role") != "lender":
            raise InvalidInput(f"model {model!r}: this party is its {tree.get('role')}, only its lenders evaluate it")
        mkind = "horizontal" if tree.get("kind") == "horizontal-gbdt" else "joint"
        if mkind == "horizontal":  # held whole here: scored locally on the file's features
            from models.gbdt import GBDTModel

            names = [str(f) for f in tree["features"]]
            X = _given(encode_raw(store, str(tree["dataset"]), apps), names, model)
            p = GBDTModel.from_dict(tree["model"]).predict_proba({f: X[:, j] for j, f in enumerate(names)})
        else:
            p = _tree_probabilities(service_factory(), store, tree, model, apps, path)
    elif (model_dir / model / "slice.json").is_file():
        service = service_factory()
        batches = list(service.score_stream(apps, total=len(apps), model_id=model, allow_partial=False))
        p = np.concatenate([b.prob_default for b in batches]).astype(np.float64)
        status = np.concatenate([b.status for b in batches])
        bad = np.flatnonzero(status != "ok")
        if len(bad):
            raise InvalidInput(f"{path}: {len(bad)} applicant id(s) could not be scored (first: data row {bad[0] + 1})")
        mkind = "joint"
    else:
        p = horizontal_probabilities(store, model_dir, model, version, apps)
        mkind = "horizontal"
    return Evaluation(model, mkind, [a.id for a in apps], y, p, evaluate(y, p))
