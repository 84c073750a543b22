"""Categorical columns of horizontal models as level indicators (one-hot), the same at every lender.

Lenders train a horizontal model on a shared schema without seeing each other's data, so the levels
come from the schema, not from the rows: a categorical column with a declared ``vocabulary`` becomes one
0/1 column per declared level but the first (the reference), named ``column=level``; a level a lender
never stored is a column of zeros there. Rare, unseen (mapped to the declared ``unseen`` level at
ingest and scoring) and missing-as-category values follow the store's coding. A categorical column
without a declared vocabulary stays as the store's codes (numbered by first appearance at each lender,
so declare the vocabulary: the codes mean different levels at different lenders).

The model keeps the encoded names (``feature_names``), and :func:`encoding_from_names` rebuilds the
encoding from them at scoring, so a model trained on codes before this existed still scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedcore.errors import InvalidInput

from .store import DatasetInfo

__all__ = ["Column", "apply_encoding", "encoding_from_names", "onehot_encoding"]

Column = tuple[str, str, float | None]
"""(model column name, stored column, level code or None for the stored value as it is)."""


def _code(info: DatasetInfo, column: str, level: str) -> float:
    vocab = info.vocabularies.get(column, [])
    return float(vocab.index(level)) if level in vocab else -1.0  # -1: never stored here, never set


def onehot_encoding(info: DatasetInfo, columns: Sequence[str]) -> list[Column]:
    """The model columns of stored ``columns`` (see the module docstring)."""
    declared = {c["name"]: c.get("vocabulary") for c in info.schema.get("categorical", [])}
    out: list[Column] = []
    for c in columns:
        levels = declared.get(c) if info.features.get(c) == "categorical" else None
        if not levels:
            out.append((c, c, None))
            continue
        out.extend((f"{c}={lv}", c, _code(info, c, str(lv))) for lv in levels[1:])
    return out


def encoding_from_names(info: DatasetInfo, names: Sequence[str]) -> list[Column]:
    """The encoding a model's ``feature_names`` stand for at this lender (InvalidInput naming a column
    that is not in the dataset)."""
    out: list[Column] = []
    for n in names:
        if n in info.features:
            out.append((n, n, None))
            continue
        col, sep, level = n.partition("=")
        if not sep or info.features.get(col) != "categorical":
            raise InvalidInput(f"model column {n!r} is not a column of dataset {info.name!r}")
        out.append((n, col, _code(info, col, level)))
    return out


def stored_columns(enc: Sequence[Column]) -> list[str]:
    """The stored columns an encoding reads, in first-use order."""
    return list(dict.fromkeys(c for _, c, _ in enc))


def apply_encoding(enc: Sequence[Column], x: np.ndarray, columns: Sequence[str]) -> np.ndarray:
    """Stored values (rows x ``columns``) -> the model's columns."""
    pos = {c: j for j, c in enumerate(columns)}
    x = np.asarray(x, dtype=np.float64)
    out = np.empty((x.shape[0], len(enc)))
    for k, (_, col, code) in enumerate(enc):
        v = x[:, pos[col]]
        out[:, k] = v if code is None else (v == code).astype(np.float64)
    return out
