"""Scoring with a horizontal model at a lender it was trained for (``fedcredit party score --model RUN``).

A horizontal model is held whole by every lender that trained it (``HOME/models/<run>/<version>/``), so
it scores here with no request to the federation: the applicant's features come from the call (numbers
or category levels as text) or, missing, from this lender's own store by the applicant's id. The answer
has the probability of default, scorecard points and the decision from this node's bands; there is no
consortium query (no blacklist or loan counts, no consortium reason line).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedcore.errors import InvalidInput
from models.scorecard import Scorecard

from .evaluate import _latest_version, horizontal_probabilities
from .horizontal_encoding import encoding_from_names, stored_columns
from .scoring_batch import Applicant, ScoringSettings
from .store import Store

__all__ = ["is_horizontal", "score_horizontal"]


def is_horizontal(home: Path, model: str) -> bool:
    d = Path(home) / "models" / model
    return bool(model) and not (d / "slice.json").is_file() and d.is_dir() and any(d.glob("*/model.json"))


def score_horizontal(store: Store, home: Path, model: str, apps: Sequence[Applicant],
                     settings: ScoringSettings) -> list[dict[str, Any]]:
    from .reporting import load_model

    model_dir = Path(home) / "models"
    version = _latest_version(model_dir / model)
    _, meta = load_model(model_dir, model, version)
    names = [str(n) for n in meta.get("feature_names", [])]
    dataset = str(meta.get("params", {}).get("fc-dataset") or "")
    if not dataset:
        labelled = [d for d in store.datasets() if store.dataset_info(d).has_labels]
        if len(labelled) != 1:
            raise InvalidInput(f"model {model!r}: cannot tell which of this party's datasets it was trained on")
        dataset = labelled[0]
    names = stored_columns(encoding_from_names(store.dataset_info(dataset), names))  # the stored columns it reads
    filled: list[Applicant] = []
    ok = np.ones(len(apps), dtype=bool)
    for i, a in enumerate(apps):
        feats: dict[str, float | str] = dict(a.features or {})
        if any(n not in feats for n in names):
            rid = store.row_ids_for([a.id], a.id_kind or settings.id_kind)[0]
            if rid < 0:
                ok[i] = False
            else:
                _, x = store.feature_matrix(dataset, names, allow_local=True, row_ids=[int(rid)])
                if len(x) == 0:
                    ok[i] = False
                else:
                    feats = {**dict(zip(names, x[0].tolist(), strict=True)), **feats}
        filled.append(Applicant(a.id, a.id_kind, feats if ok[i] else dict.fromkeys(names, 0.0)))
    p = horizontal_probabilities(store, model_dir, model, version, filled)
    sc = Scorecard(settings.base_score, settings.base_odds, settings.pdo)
    pts = np.asarray(sc.points(p))
    rows: list[dict[str, Any]] = []
    for i, a in enumerate(apps):
        if not ok[i]:
            rows.append({"id": a.id, "status": "unknown_applicant", "model_id": model, "model_version": version,
                         "prob_default": None, "points": None, "decision": None, "rate_tier": None})
            continue
        decision, tier = "decline", "-"
        for b in sorted(settings.bands, key=lambda b: b.min_points):
            if pts[i] >= b.min_points:
                decision, tier = b.decision, b.rate_tier
        rows.append({"id": a.id, "status": "ok", "model_id": model, "model_version": version, "kind": "horizontal",
                     "prob_default": float(p[i]), "points": round(float(pts[i]), 2), "decision": decision,
                     "rate_tier": tier})
    return rows
