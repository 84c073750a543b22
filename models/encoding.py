"""Encoders built from binnings: WOE (one column per feature) or one-hot (one column per bin).

Both take raw values as a party stores or receives them: numbers, numeric strings, raw category
strings, missing (``None``/NaN/blank). Missing goes to the missing bin; an unseen category goes to the
binning's declared fallback bin, or is an error naming the feature, row and level when none is
declared. Both serialize to JSON (:meth:`to_json` / :meth:`from_json`), so the encoder travels with
the model it was trained for and nothing is pickled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcore.errors import InvalidInput
from models.binning import Binning, binning_from_dict

__all__ = ["OneHotEncoder", "WoeEncoder"]

Columns = Mapping[str, Sequence[object] | np.ndarray]
"""Raw data by feature name: a dict of columns or a pandas DataFrame."""


def _column(data: Columns, feature: str) -> Sequence[object] | np.ndarray:
    try:
        col = data[feature]
    except KeyError:
        raise InvalidInput(f"column {feature!r} is missing from the data") from None
    values = getattr(col, "to_numpy", None)
    return values() if callable(values) else col  # type: ignore[no-any-return]


def _n_rows(data: Columns, features: Sequence[str]) -> int:
    lengths = {f: len(_column(data, f)) for f in features}
    if len(set(lengths.values())) > 1:
        raise InvalidInput(f"columns have different lengths: {lengths}")
    return next(iter(lengths.values()), 0)


@dataclass(frozen=True)
class WoeEncoder:
    """Maps each feature's raw values to the WOE of their bin."""

    binnings: tuple[Binning, ...]
    woe: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        if len(self.binnings) != len(self.woe):
            raise InvalidInput(f"{len(self.binnings)} binnings but {len(self.woe)} WOE vectors")
        for b, w in zip(self.binnings, self.woe, strict=True):
            if len(w) != b.n_bins:
                raise InvalidInput(f"feature {b.feature!r}: {b.n_bins} bins but {len(w)} WOE values")
        names = [b.feature for b in self.binnings]
        if len(set(names)) != len(names):
            raise InvalidInput(f"duplicate feature names in {names}")

    @property
    def features(self) -> list[str]:
        return [b.feature for b in self.binnings]

    def transform(self, data: Columns) -> np.ndarray:
        """Rows x features float64 matrix of WOE values."""
        n = _n_rows(data, self.features)
        out = np.empty((n, len(self.binnings)), dtype=np.float64)
        for j, (b, w) in enumerate(zip(self.binnings, self.woe, strict=True)):
            out[:, j] = np.asarray(w, dtype=np.float64)[b.assign(_column(data, b.feature))]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoding": "woe",
            "features": [
                {"binning": b.to_dict(), "woe": list(w)} for b, w in zip(self.binnings, self.woe, strict=True)
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WoeEncoder:
        try:
            d = json.loads(text)
            if d.get("encoding") != "woe":
                raise InvalidInput(f"not a WOE encoder: encoding {d.get('encoding')!r}")
            feats = d["features"]
            return cls(
                tuple(binning_from_dict(f["binning"]) for f in feats),
                tuple(tuple(float(v) for v in f["woe"]) for f in feats),
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise InvalidInput(f"WOE encoder JSON is malformed: {e}") from e


@dataclass(frozen=True)
class OneHotEncoder:
    """One 0/1 column per bin; with ``drop_first`` the first bin of each feature is the reference
    (no column), which a logistic model with an intercept needs to stay identifiable."""

    binnings: tuple[Binning, ...]
    drop_first: bool = True

    def column_names(self) -> list[str]:
        start = 1 if self.drop_first else 0
        return [f"{b.feature}={lab}" for b in self.binnings for lab in b.labels()[start:]]

    def transform(self, data: Columns) -> np.ndarray:
        n = _n_rows(data, [b.feature for b in self.binnings])
        blocks = []
        for b in self.binnings:
            idx = b.assign(_column(data, b.feature))
            block = np.zeros((n, b.n_bins), dtype=np.float64)
            block[np.arange(n), idx] = 1.0
            blocks.append(block[:, 1:] if self.drop_first else block)
        return np.hstack(blocks) if blocks else np.empty((n, 0))

    def to_json(self) -> str:
        return json.dumps(
            {"encoding": "onehot", "drop_first": self.drop_first, "binnings": [b.to_dict() for b in self.binnings]},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> OneHotEncoder:
        try:
            d = json.loads(text)
            if d.get("encoding") != "onehot":
                raise InvalidInput(f"not a one-hot encoder: encoding {d.get('encoding')!r}")
            return cls(tuple(binning_from_dict(b) for b in d["binnings"]), bool(d["drop_first"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise InvalidInput(f"one-hot encoder JSON is malformed: {e}") from e
