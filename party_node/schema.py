"""Dataset schema (a TOML file beside the data) and id normalization.

A schema tells ``fedcredit party ingest`` what a file holds::

    [dataset]
    name = "applications"            # stored dataset name: a-z, 0-9, '_' (table ds_<name>)
    id_column = "phone"
    id_kind = "phone"                # phone | national_id | opaque
    label_column = "default_12m"     # optional: lenders only; values 0/1, empty = not yet known
    label_bad = ["bad"]              # optional: a text label; these values are 1, others 0
    label_good = ["good"]            # optional with label_bad: then any other value is rejected
    delimiter = ","                  # CSV only
    federation_columns = ["age", "income", "city_tier"]   # the operator's whitelist

    [numeric]
    age = { missing = "reject" }                 # reject | mean | fill
    income = { missing = "mean" }
    down_payment_ratio = { missing = "fill", fill = 0.2 }

    [categorical]
    city_tier = { missing = "category" }         # category (-> "__missing__") | reject | fill
    term = { missing = "reject", vocabulary = ["12", "24", "36"] }   # fixed vocabulary
    purpose = { unseen = "other" }    # a level never seen maps to "other" (at ingest and scoring)

    [consent]                                    # purpose = column of 0/1, yes/no, true/false
    training = "consent_training"
    scoring = "consent_scoring"
    blacklist = "consent_blacklist"

    [flags]
    active_loan = "active_loan"
    fraud = "fraud_flag"

Feature names are the file's column names and become SQL column names, so they must be
identifier-like. Errors name the schema file and the key.

Id normalization (:func:`normalize_ids`) is vectorised and returns the normalized id or ``None`` for
an id that is invalid for its kind (the ingest rejects and counts such rows):

* ``phone``: spaces, dashes, dots and parentheses dropped; a ``+86`` / ``86`` / ``0086`` country prefix
  stripped (another ``+``/``00`` country code is invalid); valid iff a Chinese mobile number:
  11 digits, ``1[3-9]`` then 9 digits.
* ``national_id``: 18-character Chinese resident identity number: 17 digits and a check character
  (digit or ``X``, upper-cased), ISO 7064 MOD 11-2 checksum verified, birth month and day plausible.
* ``opaque``: NFC-normalized, surrounding whitespace stripped, non-empty, at most 128 characters.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fedcore.errors import ConfigError, NotFound

UNSEEN = "__unseen__"
MISSING = "__missing__"
PURPOSES = ("training", "scoring", "blacklist", "preapproval", "monitoring")
FLAGS = ("active_loan", "fraud")

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
COLUMN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
RESERVED_COLUMNS = frozenset({"row_id"})


class IdKind(StrEnum):
    PHONE = "phone"
    NATIONAL_ID = "national_id"
    OPAQUE = "opaque"


@dataclass(frozen=True)
class NumericSpec:
    name: str
    missing: str = "reject"  # reject | mean | fill
    fill: float | None = None


@dataclass(frozen=True)
class CategoricalSpec:
    name: str
    missing: str = "category"  # category | reject | fill
    fill: str | None = None
    vocabulary: tuple[str, ...] | None = None  # fixed vocabulary: other values -> __unseen__
    unseen: str | None = None  # a declared level that values never seen (ingest or scoring) map to


@dataclass(frozen=True)
class DatasetSchema:
    """A validated schema. ``source`` is the file it came from (for error messages)."""

    name: str
    id_column: str
    id_kind: IdKind
    numeric: tuple[NumericSpec, ...] = ()
    categorical: tuple[CategoricalSpec, ...] = ()
    label_column: str | None = None
    # text labels: values in label_bad are 1 (default); in label_good 0 (if empty, every other value is 0)
    label_bad: tuple[str, ...] = ()
    label_good: tuple[str, ...] = ()
    delimiter: str = ","
    federation_columns: tuple[str, ...] | None = None  # None: keep the stored whitelist (empty if new)
    consent: dict[str, str] = field(default_factory=dict)  # purpose -> column
    # purposes every row of this dataset consented to (recorded outside the file, e.g. in the contract)
    consent_all: tuple[str, ...] = ()
    flags: dict[str, str] = field(default_factory=dict)  # active_loan|fraud -> column
    source: str = "<schema>"

    @property
    def feature_names(self) -> list[str]:
        return [s.name for s in self.numeric] + [s.name for s in self.categorical]

    def feature_types(self) -> dict[str, str]:
        out = {s.name: "numeric" for s in self.numeric}
        out.update({s.name: "categorical" for s in self.categorical})
        return out

    def file_columns(self) -> list[str]:
        """Every column the file must have, in a stable order (id first)."""
        cols = [self.id_column]
        if self.label_column:
            cols.append(self.label_column)
        cols += self.feature_names
        cols += list(self.consent.values()) + list(self.flags.values())
        return list(dict.fromkeys(cols))

    def structure(self) -> dict[str, Any]:
        """What must stay the same when a dataset is re-ingested (JSON-able)."""
        return {
            "id_kind": str(self.id_kind),
            "features": [[n, t] for n, t in self.feature_types().items()],
            "has_labels": self.label_column is not None,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id_column": self.id_column,
            "id_kind": str(self.id_kind),
            "label_column": self.label_column,
            "label_bad": list(self.label_bad),
            "label_good": list(self.label_good),
            "numeric": [{"name": s.name, "missing": s.missing, "fill": s.fill} for s in self.numeric],
            "categorical": [
                {
                    "name": s.name,
                    "missing": s.missing,
                    "fill": s.fill,
                    "vocabulary": list(s.vocabulary) if s.vocabulary is not None else None,
                    "unseen": s.unseen,
                }
                for s in self.categorical
            ],
            "consent": dict(self.consent),
            "consent_all": list(self.consent_all),
            "flags": dict(self.flags),
        }


def _err(source: str, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {msg}")


def _column(source: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not COLUMN_RE.match(value):
        raise _err(source, key, f"{value!r} is not a valid column name (letters, digits, '_'; starts with a letter)")
    return value


def load_schema(path: Path) -> DatasetSchema:
    """Read and validate a schema TOML file."""
    if not path.is_file():
        raise NotFound(f"schema file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_schema(data, source=str(path))


def parse_schema(data: dict[str, Any], source: str = "<schema>") -> DatasetSchema:
    """Validate a schema given as a dict (the parsed TOML)."""
    unknown = set(data) - {"dataset", "numeric", "categorical", "consent", "flags"}
    if unknown:
        raise _err(source, sorted(unknown)[0], "unknown key")
    ds = data.get("dataset")
    if not isinstance(ds, dict):
        raise _err(source, "dataset", "missing [dataset] table")
    allowed = {"name", "id_column", "id_kind", "label_column", "label_bad", "label_good", "delimiter",
               "federation_columns", "consent_all"}
    for k in ds:
        if k not in allowed:
            raise _err(source, f"dataset.{k}", "unknown key")
    name = ds.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _err(source, "dataset.name", f"{name!r} must be 1-48 chars of a-z, 0-9, '_' starting with a letter")
    if "id_column" not in ds:
        raise _err(source, "dataset.id_column", "required")
    id_column = _column(source, "dataset.id_column", ds["id_column"])
    try:
        id_kind = IdKind(ds.get("id_kind", ""))
    except ValueError:
        raise _err(
            source, "dataset.id_kind", f"{ds.get('id_kind')!r} must be one of phone, national_id, opaque"
        ) from None
    label = ds.get("label_column")
    if label is not None:
        label = _column(source, "dataset.label_column", label)
    label_values: dict[str, tuple[str, ...]] = {}
    for lk in ("label_bad", "label_good"):
        raw = ds.get(lk, [])
        if not isinstance(raw, list) or not all(isinstance(v, str) and v.strip() for v in raw):
            raise _err(source, f"dataset.{lk}", "must be a list of non-empty strings")
        if raw and label is None:
            raise _err(source, f"dataset.{lk}", "needs a label_column")
        label_values[lk] = tuple(v.strip() for v in raw)
    if label_values["label_good"] and not label_values["label_bad"]:
        raise _err(source, "dataset.label_good", "needs label_bad (the values that mean default)")
    if set(label_values["label_bad"]) & set(label_values["label_good"]):
        raise _err(source, "dataset.label_good", "a value cannot be both bad and good")
    delimiter = ds.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n':
        raise _err(source, "dataset.delimiter", f"{delimiter!r} must be one character")

    numeric: list[NumericSpec] = []
    num_tab = data.get("numeric", {})
    if not isinstance(num_tab, dict):
        raise _err(source, "numeric", "must be a table")
    for col, spec in num_tab.items():
        key = f"numeric.{col}"
        _column(source, key, col)
        spec = spec if isinstance(spec, dict) else None
        if spec is None:
            raise _err(source, key, 'must be a table such as { missing = "reject" }')
        for k in spec:
            if k not in ("missing", "fill"):
                raise _err(source, f"{key}.{k}", "unknown key")
        missing = spec.get("missing", "reject")
        if missing not in ("reject", "mean", "fill"):
            raise _err(source, f"{key}.missing", f"{missing!r} must be reject, mean or fill")
        fill = spec.get("fill")
        if missing == "fill":
            if not isinstance(fill, int | float) or isinstance(fill, bool):
                raise _err(source, f"{key}.fill", 'a number is required when missing = "fill"')
            fill = float(fill)
        elif fill is not None:
            raise _err(source, f"{key}.fill", 'only allowed with missing = "fill"')
        numeric.append(NumericSpec(col, missing, fill))

    categorical: list[CategoricalSpec] = []
    cat_tab = data.get("categorical", {})
    if not isinstance(cat_tab, dict):
        raise _err(source, "categorical", "must be a table")
    for col, spec in cat_tab.items():
        key = f"categorical.{col}"
        _column(source, key, col)
        if not isinstance(spec, dict):
            raise _err(source, key, 'must be a table such as { missing = "category" }')
        for k in spec:
            if k not in ("missing", "fill", "vocabulary", "unseen"):
                raise _err(source, f"{key}.{k}", "unknown key")
        missing = spec.get("missing", "category")
        if missing not in ("category", "reject", "fill"):
            raise _err(source, f"{key}.missing", f"{missing!r} must be category, reject or fill")
        fill = spec.get("fill")
        if missing == "fill":
            if not isinstance(fill, str) or not fill.strip():
                raise _err(source, f"{key}.fill", 'a non-empty string is required when missing = "fill"')
            fill = fill.strip()
        elif fill is not None:
            raise _err(source, f"{key}.fill", 'only allowed with missing = "fill"')
        vocab = spec.get("vocabulary")
        if vocab is not None:
            if not isinstance(vocab, list) or not all(isinstance(v, str) and v.strip() for v in vocab):
                raise _err(source, f"{key}.vocabulary", "must be a list of non-empty strings")
            vocab = tuple(v.strip() for v in vocab)
            if len(set(vocab)) != len(vocab) or UNSEEN in vocab:
                raise _err(source, f"{key}.vocabulary", f"duplicate entries or the reserved {UNSEEN!r}")
        unseen = spec.get("unseen")
        if unseen is not None:
            if not isinstance(unseen, str) or not unseen.strip():
                raise _err(source, f"{key}.unseen", "must be a non-empty string (a level of the column)")
            unseen = unseen.strip()
            if vocab is not None and unseen not in vocab:
                raise _err(source, f"{key}.unseen", f"{unseen!r} is not in the vocabulary")
        categorical.append(CategoricalSpec(col, missing, fill, vocab, unseen))

    def _purpose_table(tab_name: str, allowed_keys: Sequence[str]) -> dict[str, str]:
        tab = data.get(tab_name, {})
        if not isinstance(tab, dict):
            raise _err(source, tab_name, "must be a table")
        out: dict[str, str] = {}
        for k, v in tab.items():
            if k not in allowed_keys:
                raise _err(source, f"{tab_name}.{k}", f"unknown key (expected one of {', '.join(allowed_keys)})")
            out[k] = _column(source, f"{tab_name}.{k}", v)
        return out

    consent = _purpose_table("consent", PURPOSES)
    flags = _purpose_table("flags", FLAGS)
    consent_all_raw = ds.get("consent_all", [])
    if not isinstance(consent_all_raw, list) or not all(p in PURPOSES for p in consent_all_raw):
        raise _err(source, "dataset.consent_all", f"must be a list of purposes ({', '.join(PURPOSES)})")
    for p in consent_all_raw:
        if p in consent:
            raise _err(source, "dataset.consent_all", f"{p!r} also has a consent column")
    consent_all = tuple(dict.fromkeys(consent_all_raw))

    features = [s.name for s in numeric] + [s.name for s in categorical]
    if len(set(features)) != len(features):
        dup = next(f for f in features if features.count(f) > 1)
        raise _err(source, dup, "declared both numeric and categorical")
    for f in features:
        if f in RESERVED_COLUMNS or f == id_column or f == label:
            raise _err(source, f, "a feature cannot be the id column, the label column or 'row_id'")
    fed = ds.get("federation_columns")
    fed_cols: tuple[str, ...] | None = None
    if fed is not None:
        if not isinstance(fed, list) or not all(isinstance(c, str) for c in fed):
            raise _err(source, "dataset.federation_columns", "must be a list of feature names")
        for c in fed:
            if c not in features:
                raise _err(source, "dataset.federation_columns", f"{c!r} is not a declared feature")
        fed_cols = tuple(dict.fromkeys(fed))
    return DatasetSchema(
        name=name,
        id_column=id_column,
        id_kind=id_kind,
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        label_column=label,
        label_bad=label_values["label_bad"],
        label_good=label_values["label_good"],
        delimiter=delimiter,
        federation_columns=fed_cols,
        consent=consent,
        consent_all=consent_all,
        flags=flags,
        source=source,
    )


# ---------------------------------------------------------------- id normalization

_PHONE_RE = r"^1[3-9][0-9]{9}$"
_NID_RE = r"^[0-9]{17}[0-9X]$"
_NID_WEIGHTS = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_NID_CHECK = np.frombuffer(b"10X98765432", dtype=np.uint8)


def national_id_check_char(first17: str) -> str:
    """The check character of a resident id from its first 17 digits (ISO 7064 MOD 11-2)."""
    s = sum(int(c) * int(w) for c, w in zip(first17, _NID_WEIGHTS, strict=True))
    return chr(_NID_CHECK[s % 11])


IdValues: TypeAlias = Sequence[Any] | pd.Series | np.ndarray | pa.Array | pa.ChunkedArray


def _as_str_series(values: IdValues) -> pd.Series:
    """An Arrow-backed string Series (so that regex work runs in pyarrow's C++ kernels)."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        arr = values if pa.types.is_string(values.type) else pc.cast(values, pa.string())
    else:
        items = values.tolist() if isinstance(values, pd.Series | np.ndarray) else list(values)
        arr = pa.array([None if v is None or v is pd.NA else str(v) for v in items], type=pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return pd.Series(arr, dtype=pd.ArrowDtype(pa.string()))


_SMALL = 64
_PHONE_CHARS = re.compile(r"\s*\+?[0-9 ()\-.]+\s*")
_PHONE_FULL = re.compile(_PHONE_RE)
_NID_FULL = re.compile(_NID_RE)


def _normalize_one(v: Any, kind: IdKind) -> str | None:
    """The per-value rules of :func:`normalize_ids` (for a few ids: a scoring request, say)."""
    if v is None or v is pd.NA:
        return None
    s = str(v)
    if kind is IdKind.PHONE:
        if not _PHONE_CHARS.fullmatch(s):
            return None
        intl = re.sub(r"[ ()\-.]", "", s.strip())
        if (intl.startswith("+") and not intl.startswith("+86")) or (
            intl.startswith("00") and not intl.startswith("0086")
        ):
            return None
        digits = re.sub(r"[^0-9]", "", s)
        if len(digits) == 13 and digits.startswith("86"):
            digits = digits[2:]
        elif len(digits) == 15 and digits.startswith("0086"):
            digits = digits[4:]
        return digits if _PHONE_FULL.match(digits) else None
    if kind is IdKind.NATIONAL_ID:
        up = s.strip().upper()
        if not _NID_FULL.match(up) or national_id_check_char(up[:17]) != up[17]:
            return None
        year, month, day = int(up[6:10]), int(up[10:12]), int(up[12:14])
        return up if 1 <= month <= 12 and 1 <= day <= 31 and 1900 <= year <= 2100 else None
    t = unicodedata.normalize("NFC", s).strip()
    return t if 0 < len(t) <= 128 else None


def normalize_ids(values: IdValues, kind: IdKind | str) -> list[str | None]:
    """Normalize raw ids of one kind; invalid ids become ``None``."""
    kind = IdKind(kind)
    if isinstance(values, list | tuple) and len(values) <= _SMALL:
        return [_normalize_one(v, kind) for v in values]
    s = _as_str_series(values).reset_index(drop=True)
    if kind is IdKind.PHONE:
        digits = s.str.replace(r"[^0-9]", "", regex=True)
        n = digits.str.len()
        digits = digits.where(~((n == 13) & digits.str.startswith("86")), digits.str.slice(2))
        digits = digits.where(~((n == 15) & digits.str.startswith("0086")), digits.str.slice(4))
        # a string made of digits and formatting only: letters make an id invalid, not silently dropped
        clean = s.str.fullmatch(r"\s*\+?[0-9 ()\-.]+\s*").fillna(False)
        # an explicit international prefix must be China's (+86 / 0086), not another country's
        intl = s.str.strip().str.replace(r"[ ()\-.]", "", regex=True)
        foreign = (intl.str.startswith("+") & ~intl.str.startswith("+86")) | (
            intl.str.startswith("00") & ~intl.str.startswith("0086")
        )
        clean = clean & ~foreign.fillna(False)
        ok = digits.str.fullmatch(_PHONE_RE).fillna(False) & clean
        return pa.array(digits.where(ok.astype(bool), None)).to_pylist()
    if kind is IdKind.NATIONAL_ID:
        up = s.str.strip().str.upper()
        ok = up.str.fullmatch(_NID_RE).fillna(False).to_numpy(dtype=bool)
        out: list[str | None] = [None] * len(up)
        idx = np.flatnonzero(ok)
        if len(idx):
            good = up.to_numpy(dtype=object)[idx]
            raw = np.frombuffer("".join(good).encode("ascii"), dtype=np.uint8).reshape(-1, 18)
            digits = raw[:, :17].astype(np.int64) - ord("0")
            check_ok = _NID_CHECK[(digits @ _NID_WEIGHTS) % 11] == raw[:, 17]
            month = digits[:, 10] * 10 + digits[:, 11]
            day = digits[:, 12] * 10 + digits[:, 13]
            year = digits[:, 6] * 1000 + digits[:, 7] * 100 + digits[:, 8] * 10 + digits[:, 9]
            date_ok = (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31) & (year >= 1900) & (year <= 2100)
            valid = check_ok & date_ok
            for j in np.flatnonzero(valid):
                out[idx[j]] = good[j]
        return out
    return _normalize_opaque(s)


def _normalize_opaque(s: pd.Series) -> list[str | None]:
    """NFC, stripped, 1 to 128 characters. Printable ASCII ids (NFC and ``str.strip`` reduce to trimming
    spaces there) are done in pyarrow's kernels; only the others go through Python one by one."""
    arr = pa.array(s, type=pa.string())
    plain = pc.fill_null(pc.match_substring_regex(arr, r"^[\x20-\x7e]*$"), True).to_numpy(zero_copy_only=False)
    t = pc.utf8_trim(arr, " ")
    n = pc.utf8_length(t)
    ok = pc.and_(pc.greater(n, 0), pc.less_equal(n, 128))
    res: list[str | None] = pc.if_else(ok, t, pa.scalar(None, pa.string())).to_pylist()
    for j in np.flatnonzero(~plain).tolist():
        res[j] = _normalize_text(arr[j].as_py())
    return res


def _normalize_text(v: Any) -> str | None:
    t = unicodedata.normalize("NFC", str(v)).strip()
    return t if 0 < len(t) <= 128 else None


def normalize_id(value: str, kind: IdKind | str) -> str | None:
    """Normalize one id (see :func:`normalize_ids`)."""
    return normalize_ids([value], kind)[0]


def id_problem(kind: IdKind | str) -> str:
    """Why an id of this kind was rejected (for reject reports)."""
    kind = IdKind(kind)
    if kind is IdKind.PHONE:
        return "not a valid Chinese mobile number (11 digits starting 13-19, optional +86)"
    if kind is IdKind.NATIONAL_ID:
        return "not a valid 18-character resident id (format, birth date or checksum)"
    return "empty or longer than 128 characters"
