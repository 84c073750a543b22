"""The histogram of the scores a requesting lender has served with each joint model.

Joint scoring keeps, next to the model's slice (``HOME/models/<model>/served_hist.json``), the counts
of the default probabilities it returned per score bin (:data:`~models.histograms.DEFAULT_BINS` bins,
no label, no subject, no time). ``report.histograms`` sends it, coarsened like every histogram, so
that the report shows the population stability of served scores against the validation scores.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

from models import histograms as hm

__all__ = ["SERVED_HIST", "record_served", "served_hist"]

SERVED_HIST = "served_hist.json"
_LOCK = threading.Lock()


def record_served(folder: Path, prob: np.ndarray) -> None:
    """Add served probabilities to ``folder``'s histogram (written atomically; a folder that does not
    exist, i.e. no stored slice, records nothing)."""
    p = np.asarray(prob, dtype=np.float64)
    p = p[np.isfinite(p)]
    if not folder.is_dir() or p.size == 0:
        return
    counts = hm.histogram(None, p, hm.DEFAULT_BINS).total
    path = folder / SERVED_HIST
    with _LOCK:
        old = served_hist(folder)
        if old is not None and old.bins == counts.size:
            counts = counts + old.total
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"bins": int(counts.size), "counts": [int(c) for c in counts]}))
        os.replace(tmp, path)


def served_hist(folder: Path) -> hm.Hist | None:
    """The served-score histogram of the model in ``folder`` (unlabelled: use ``.total``), or None."""
    path = folder / SERVED_HIST
    if not path.is_file():
        return None
    counts = np.asarray(json.loads(path.read_text())["counts"], dtype=np.float64)
    return hm.Hist(np.zeros_like(counts), counts)
