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

__all__ = ["OneHotEncoder", "StoredWoe", "WoeEncoder"]

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


@dataclass(frozen=True)
class StoredWoe:
    """A :class:`WoeEncoder` over a party store's values: numbers, and category codes (indices into the
    vocabulary the store had at training, ``vocabularies[feature]``). A code outside that vocabulary
    (a level first stored after training) and a level the binning never saw go to the bin of the
    schema's declared ``unseen`` level (``unseen[feature]``), else to the binning's fallback bin, else to
    the missing bin. NaN, the scoring service's "no value" (the applicant is
    not in the store), stays NaN: the model treats it as neutral."""

    encoder: WoeEncoder
    vocabularies: Mapping[str, Sequence[str]]
    unseen: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        lookup: list[np.ndarray | None] = []  # categorical: bin per code, the last for codes past the vocabulary
        for b in self.encoder.binnings:
            if b.kind != "categorical":
                lookup.append(None)
                continue
            vocab = self.vocabularies.get(b.feature)
            if vocab is None:
                raise InvalidInput(f"WOE encoder: categorical feature {b.feature!r} has no vocabulary")
            fb = b.missing_bin if b.fallback is None else b.fallback  # type: ignore[union-attr]
            declared = (self.unseen or {}).get(b.feature)
            fb = fb if declared is None else _bin_or(b, declared, fb)
            lookup.append(np.asarray([*(_bin_or(b, lv, fb) for lv in vocab), fb], dtype=np.int64))
        object.__setattr__(self, "_lookup", lookup)

    @property
    def features(self) -> list[str]:
        return self.encoder.features

    def bins(self, x: np.ndarray) -> np.ndarray:
        """Rows x features of stored values -> bin index (int64; -1 where the value is NaN)."""
        x = np.asarray(x, dtype=np.float64)
        out = np.full(x.shape, -1, dtype=np.int64)
        lookup: list[np.ndarray | None] = self._lookup  # type: ignore[attr-defined]
        for j, (b, lk) in enumerate(zip(self.encoder.binnings, lookup, strict=True)):
            col = x[:, j]
            ok = ~np.isnan(col)
            if lk is None:
                out[ok, j] = b.assign(col[ok])
            else:
                codes = col[ok].astype(np.int64)
                out[ok, j] = lk[np.where((codes >= 0) & (codes < len(lk) - 1), codes, len(lk) - 1)]
        return out

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Rows x features of stored values -> WOE values (NaN stays NaN)."""
        idx = self.bins(x)
        out = np.full(idx.shape, np.nan)
        for j, w in enumerate(self.encoder.woe):
            ok = idx[:, j] >= 0
            out[ok, j] = np.asarray(w, dtype=np.float64)[idx[ok, j]]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**self.encoder.to_dict(), "vocabularies": {f: list(v) for f, v in self.vocabularies.items()},
                "unseen": dict(self.unseen or {})}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StoredWoe:
        try:
            vocab = {str(f): [str(v) for v in levels] for f, levels in dict(d.get("vocabularies") or {}).items()}
            unseen = {str(f): str(v) for f, v in dict(d.get("unseen") or {}).items()}
            enc = WoeEncoder.from_json(json.dumps({"encoding": d.get("encoding"), "features": d["features"]}))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InvalidInput(f"WOE encoding is malformed: {e}") from e
        return cls(enc, vocab, unseen)


def _bin_or(b: Binning, level: str, fallback: int) -> int:
    try:
        return int(b.assign([level])[0])
    except InvalidInput:
        return fallback
