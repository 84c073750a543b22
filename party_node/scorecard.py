"""A party's scorecard of a joint logistic model: the points table of ITS OWN features.

The joint model is ``logit(PD) = intercept + sum over parties and features of w * (x - mean) / std``
(one-hot categoricals: one weight per level indicator). With the scaling of the scoring settings
(``base_score``, ``base_odds``, ``pdo``; :class:`models.scorecard.Scorecard`), a feature's bin gets
``points = -factor * (its logit contribution)`` and the label holder's base points are
``offset - factor * intercept`` (:func:`models.points.points_table`, coefficient 1 per feature and the
bin's logit contribution in the ``woe`` slot). An applicant's score is the base points plus one bin's
points per feature over every party's table.

- Categorical features: one bin per declared level, points exact.
- Numeric features: the bins of this party's newest ``coordinator binning`` run (its optimal binning),
  else quantile bins of its own rows. The model is linear in the value, so a bin's points use the
  MEAN contribution of this party's rows in the bin (an empty bin: its midpoint). That is an
  approximation unless every row of a bin has one value; each row of the table says which (``exact``).
- Missing values score as the population mean (as joint scoring does): 0 points.
- A WOE-encoded model (``--encoding woe``) is the classic scorecard: its bins are the binning run's that
  the slice keeps, each bin's contribution is ``w * (woe - mean) / std``, and every row is exact.

Only this party's slice, store and binning are read; nothing leaves the node. The platform's slice
has no intercept, so its table has no base points (they are the label holder's).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedcore.errors import InvalidInput, NotFound
from fedcore.protocol.scoring.messages import ModelSlice
from models.binning import Binning, CategoricalBinning, NumericBinning, binning_from_dict
from models.encoding import WoeEncoder
from models.points import PointsTable, points_table
from models.scorecard import Scorecard

from .binning import load_result
from .store import Store

__all__ = ["PartyScorecard", "party_scorecard"]

FIELDS = ["variable", "bin", "logit", "points", "count", "exact"]


@dataclass(frozen=True)
class PartyScorecard:
    """The points table of one party's features of a joint model (base points when it holds the intercept)."""

    model_id: str
    party: str
    basepoints: float | None
    table: PointsTable
    exact: dict[str, bool]  # feature -> every bin's points are exact
    binning_run: str | None

    def records(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        if self.basepoints is not None:
            rows.append({"variable": "basepoints", "bin": "", "logit": None, "points": self.basepoints,
                         "count": None, "exact": True})
        for r in self.table.rows:
            rows.append({"variable": r.variable, "bin": r.bin, "logit": r.woe, "points": r.points,
                         "count": r.count, "exact": self.exact[r.variable]})
        return rows

    def to_json(self) -> str:
        return json.dumps({
            "model_id": self.model_id, "party": self.party, "scaling": self.table.scorecard.to_dict(),
            "basepoints": self.basepoints, "binning_run": self.binning_run,
            "note": "points = -factor * logit contribution of the bin; numeric bins not marked exact use the "
                    "mean contribution of this party's rows in the bin; missing scores 0 points",
            "rows": self.records(),
        }, indent=1)

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=FIELDS)
        w.writeheader()
        for rec in self.records():
            w.writerow({k: "" if v is None else v for k, v in rec.items()})
        return buf.getvalue()


def _stored_binnings(home: Path, run_id: str | None) -> tuple[dict[str, NumericBinning], str | None]:
    try:
        res = load_result(home, run_id)
    except NotFound:
        if run_id is not None:
            raise
        return {}, None
    out: dict[str, NumericBinning] = {}
    for f, d in res.get("features", {}).items():
        b = binning_from_dict(d["optimal"]["binning"])
        if isinstance(b, NumericBinning):
            out[f] = b
    return out, str(res.get("run_id", run_id))


def _quantile_binning(feature: str, x: np.ndarray, n_bins: int) -> NumericBinning:
    v = x[np.isfinite(x)]
    if len(v) == 0:
        return NumericBinning(feature, ())
    cuts = np.unique(np.quantile(v, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return NumericBinning(feature, tuple(float(c) for c in cuts if c > v.min()))


def _numeric_values(sl: ModelSlice, j: int, b: NumericBinning, x: np.ndarray, contrib: np.ndarray
                    ) -> tuple[list[float], list[int], bool]:
    idx = b.assign(x)
    edges = [-math.inf, *b.cuts, math.inf]
    vals, counts, exact = [], [], True
    for k in range(b.n_bins):
        hit = idx == k
        counts.append(int(hit.sum()))
        if k == b.missing_bin:
            vals.append(0.0)
            continue
        if hit.any():
            c = contrib[hit]
            vals.append(float(c.mean()))
            exact = exact and bool(np.ptp(c) <= 1e-9 * max(1.0, float(np.abs(c).max())))
            continue
        lo, hi = edges[k], edges[k + 1]
        rep = (lo + hi) / 2 if math.isfinite(lo) and math.isfinite(hi) else (lo if math.isfinite(lo) else hi)
        row = sl.neutral().copy()
        row[j] = 0.0 if not math.isfinite(rep) else rep
        vals.append(float(sl.contributions(row[None, :])[0, j]))
        exact = False
    return vals, counts, exact


def party_scorecard(home: Path, store: Store, model_id: str, scorecard: Scorecard, *,
                    binning_run: str | None = None, n_bins: int = 10, digits: int | None = None) -> PartyScorecard:
    """This party's points table of joint model ``model_id`` (see the module docstring).

    Raises NotFound naming the model when this party holds no slice of it."""
    if n_bins < 2:
        raise InvalidInput(f"--bins must be at least 2, got {n_bins}")
    sl = ModelSlice.load(Path(home) / "models", model_id)
    info = store.dataset_info(sl.dataset)
    _, X = store.feature_matrix(sl.dataset, list(sl.features), allow_local=True)
    X = np.asarray(X, dtype=np.float64)
    if sl.woe is not None:
        own = sl.encoding.get("binning_run") if sl.encoding else None
        if binning_run is not None and binning_run != own:
            raise InvalidInput(f"model {model_id!r} is WOE-encoded with the bins of binning run {own!r}; its points"
                               f" use those bins, not run {binning_run!r}'s")
        return _woe_scorecard(sl, X, scorecard, digits)
    stored, run = _stored_binnings(Path(home), binning_run)
    binnings: list[Binning] = []
    values: list[tuple[float, ...]] = []
    counts: list[list[int]] = []
    exact: dict[str, bool] = {}
    used_stored = False
    for j, f in enumerate(sl.features):
        if info.features.get(f) == "categorical":
            vocab = list(info.vocabularies[f])
            rows = np.tile(sl.neutral(), (len(vocab), 1))
            rows[:, j] = np.arange(len(vocab), dtype=np.float64)
            per_level = sl.contributions(rows)[:, j] if vocab else np.zeros(0)
            binnings.append(CategoricalBinning(f, tuple((str(v),) for v in vocab)))
            values.append((*(float(v) for v in per_level), 0.0))
            counts.append([*(int((X[:, j] == k).sum()) for k in range(len(vocab))), int(np.isnan(X[:, j]).sum())])
            exact[f] = True
            continue
        col = X[:, j]
        b = stored.get(f)
        used_stored = used_stored or b is not None
        nb = b if b is not None else _quantile_binning(f, col, n_bins)
        ok = np.isfinite(col)
        contrib = np.zeros(len(col))
        contrib[ok] = sl.contributions(_with_column(sl, j, col[ok]))[:, j]
        vals, cnt, ex = _numeric_values(sl, j, nb, col, contrib)
        binnings.append(nb)
        values.append(tuple(vals))
        counts.append(cnt)
        exact[f] = ex
    enc = WoeEncoder(tuple(binnings), tuple(values))
    table = points_table(enc, np.ones(len(binnings)), sl.intercept or 0.0, scorecard, counts=counts, digits=digits)
    base = table.basepoints if sl.intercept is not None else None
    return PartyScorecard(sl.model_id, sl.party, base, table, exact, run if used_stored else None)


def _woe_scorecard(sl: ModelSlice, X: np.ndarray, scorecard: Scorecard, digits: int | None) -> PartyScorecard:
    """The classic scorecard of a WOE-encoded slice: the slice's own bins, each bin's exact contribution."""
    assert sl.woe is not None
    enc = sl.woe.encoder
    values: list[tuple[float, ...]] = []
    counts: list[list[int]] = []
    idx = sl.woe.bins(X)
    for j, (b, w) in enumerate(zip(enc.binnings, enc.woe, strict=True)):
        contrib = (np.asarray(w, dtype=np.float64) - sl.mean[j]) / sl.std[j] * sl.weights[j]
        contrib[b.missing_bin] = 0.0  # no value: neutral, as joint scoring treats it
        values.append(tuple(float(v) for v in contrib))
        counts.append(np.bincount(idx[idx[:, j] >= 0, j], minlength=b.n_bins).tolist())
    table = points_table(WoeEncoder(enc.binnings, tuple(values)), np.ones(len(values)), sl.intercept or 0.0,
                         scorecard, counts=counts, digits=digits)
    base = table.basepoints if sl.intercept is not None else None
    run = sl.encoding.get("binning_run") if sl.encoding else None
    return PartyScorecard(sl.model_id, sl.party, base, table, dict.fromkeys(sl.features, True),
                          None if run is None else str(run))


def _with_column(sl: ModelSlice, j: int, col: np.ndarray) -> np.ndarray:
    rows = np.tile(sl.neutral(), (len(col), 1))
    rows[:, j] = col
    return rows


def scorecard_from_settings(settings: Any) -> Scorecard:
    """The scaling of the node's scoring settings (``base_score``, ``base_odds``, ``pdo``)."""
    return Scorecard(settings.base_score, settings.base_odds, settings.pdo)
