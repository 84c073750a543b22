"""Decision bands set from the model, not fixed numbers: the cut-offs that give target approval rates on
the model's own validation score distribution (the histogram a lender keeps of a joint model's best
epoch, ``HOME/models/<run>/validation_hist.json``), optionally capped so the approved bad rate stays under
a target (:mod:`models.bands`). Used when ``HOME/scoring.json`` sets no fixed ``bands``.

Targets are cumulative approval rates, safest first: with the defaults the safest 50% of validation
applicants get tier A, the next 30% tier B (80% approved), the next 10% review, the rest decline.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedcore.errors import InvalidInput, NotFound
from fedcore.protocol.vertical.party import VALIDATION_HIST
from models import histograms as hm
from models.bands import cutoff_for_approval, cutoff_for_bad_rate
from models.scorecard import Scorecard

from .scoring_batch import Band

__all__ = ["DEFAULT_TARGETS", "bands_from_histogram", "model_bands"]

DEFAULT_TARGETS: tuple[tuple[float, str, str], ...] = ((0.5, "approve", "A"), (0.8, "approve", "B"),
                                                       (0.9, "review", "C"))


def bands_from_histogram(h: hm.Hist, scorecard: Scorecard,
                         targets: Sequence[tuple[float, str, str]] = DEFAULT_TARGETS,
                         max_bad_rate: float | None = None) -> tuple[Band, ...]:
    """Bands whose lower points bound approves the target share of the histogram's rows (safest first);
    ``max_bad_rate`` caps the approve tiers where the approved bad rate would pass it."""
    total = h.total
    if total.sum() <= 0:
        raise InvalidInput("the validation histogram is empty: cannot set bands from it")
    if any(b[0] <= a[0] for a, b in itertools.pairwise(targets)) or not all(0 < t[0] <= 1 for t in targets):
        raise InvalidInput(f"band approval targets must increase within (0, 1], got {[t[0] for t in targets]}")
    cap = cutoff_for_bad_rate(total, h.bad, max_bad_rate) if max_bad_rate is not None else h.bins
    out = []
    for target, decision, tier in targets:
        k = cutoff_for_approval(total, target)
        if decision == "approve":
            k = min(k, cap)
        pd_cut = min(k / h.bins, 1.0)  # approve PD below the upper edge of the k-th safest bin
        out.append(Band(float(scorecard.points(pd_cut)), decision, tier))
    out.append(Band(-math.inf, "decline", "-"))
    return tuple(out)


def model_bands(model_dir: Path, model_id: str, scorecard: Scorecard,
                targets: Sequence[tuple[float, str, str]] = DEFAULT_TARGETS,
                max_bad_rate: float | None = None) -> tuple[Band, ...] | None:
    """Bands from the model's validation histogram at this node, or ``None`` if it has none."""
    path = Path(model_dir) / model_id / VALIDATION_HIST
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    h = hm.Hist(np.asarray(d["val"]["bad"], float), np.asarray(d["val"]["good"], float))
    return bands_from_histogram(h, scorecard, targets, max_bad_rate)


def newest_joint_model(models_dir: Path) -> str:
    """What the default model name ``joint`` means when no model is called that: the newest vertical
    model whose slice at this party holds the intercept (this party is its label holder)."""
    slices = sorted(models_dir.glob("*/slice.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in slices:
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("intercept") is not None:
                return path.parent.name
        except (OSError, ValueError):
            continue
    raise NotFound(
        f"no joint model at this party yet ({models_dir} holds no slice with an intercept): "
        "train one with `fedcredit coordinator train --kind vertical`"
    )
