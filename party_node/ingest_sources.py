"""The readers behind :func:`party_node.ingest.ingest_file`: CSV (pyarrow's streaming reader, in blocks)
and Parquet (row batches), with the header checks and the error messages that name a file, a data row
and a column.

Row numbers are 1-based *data rows* in both formats (the header is not counted): pyarrow's own
"Row #N" (which counts the header line) is translated before it reaches the operator.
"""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fedcore.errors import InvalidInput, NotFound
from party_node.schema import DatasetSchema

NULL_VALUES = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]
DELIMITERS = (",", ";", "\t", "|")


_ARROW_WHERE = re.compile(r"In CSV column #(\d+): Row #(\d+): (.*)")
_ARROW_ROW = re.compile(r"Row #(\d+): (.*)")


def fail(path: Path, msg: str) -> InvalidInput:
    return InvalidInput(f"{path}: {msg}")



def _column_keys(schema: DatasetSchema) -> dict[str, str]:
    """File column -> schema key that names it (for 'schema names unknown column' errors)."""
    keys: dict[str, str] = {schema.id_column: "dataset.id_column"}
    if schema.label_column:
        keys[schema.label_column] = "dataset.label_column"
    for s in schema.numeric:
        keys[s.name] = f"numeric.{s.name}"
    for c in schema.categorical:
        keys[c.name] = f"categorical.{c.name}"
    for p, col in schema.consent.items():
        keys.setdefault(col, f"consent.{p}")
    for p, col in schema.flags.items():
        keys.setdefault(col, f"flags.{p}")
    return keys


def check_columns(path: Path, schema: DatasetSchema, header: list[str], raw_header: str | None) -> None:
    dups = {h for h in header if header.count(h) > 1}
    if dups:
        raise fail(path, f"header names column {sorted(dups)[0]!r} more than once")
    if schema.id_column not in header:
        if raw_header is not None and len(header) <= 1:
            for d in DELIMITERS:
                if d != schema.delimiter and d in raw_header:
                    shown = "\\t" if d == "\t" else d
                    raise fail(
                        path,
                        f"wrong delimiter: line 1 has no {schema.delimiter!r} but looks {shown!r}-separated "
                        f'(set dataset.delimiter = "{shown}" in {schema.source})',
                    )
        raise fail(
            path,
            f"missing id column {schema.id_column!r} (dataset.id_column in {schema.source}); "
            f"header has: {', '.join(header[:12])}{' ...' if len(header) > 12 else ''}",
        )
    for col, key in _column_keys(schema).items():
        if col not in header:
            raise InvalidInput(f"{schema.source}: {key} names column {col!r}, which {path} does not have")


class CsvSource:
    def __init__(self, path: Path, schema: DatasetSchema, block_size: int) -> None:
        self.path = path
        self.schema = schema
        self.size = path.stat().st_size
        if self.size == 0:
            raise fail(path, "file is empty (no header, no data rows)")
        with path.open("rb") as f:
            first = f.readline(1 << 20)
            f.seek(max(0, self.size - 65536))
            self.tail = f.read()
        try:
            line = first.decode("utf-8-sig").rstrip("\r\n")
        except UnicodeDecodeError:
            raise fail(path, "line 1 is not UTF-8 text (is this a CSV file?)") from None
        if not line.strip():
            raise fail(path, "file is empty: line 1 has no header")
        header = next(csv.reader([line], delimiter=schema.delimiter))
        header = [h.strip() for h in header]
        check_columns(path, schema, header, line)
        self.header = header
        self.ends_with_newline = self.tail.endswith(b"\n")
        self.block_size = block_size
        self.invalid: list[Any] = []
        self.columns = schema.file_columns()
        self._done = 0

    def _on_invalid(self, row: Any) -> str:
        self.invalid.append(row)
        return "error"

    def done(self) -> int:
        # each batch is one block of the file; the reader itself reads ahead (up to ~32 blocks)
        return self._done

    def batches(self) -> Iterator[dict[str, pa.Array]]:
        s = self.schema
        ro = pacsv.ReadOptions(use_threads=False, block_size=self.block_size)
        po = pacsv.ParseOptions(delimiter=s.delimiter, invalid_row_handler=self._on_invalid)
        co = pacsv.ConvertOptions(
            column_types={c: pa.string() for c in self.columns},
            include_columns=self.columns,
            null_values=NULL_VALUES,
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        )
        with self.path.open("rb") as f:
            try:
                reader = pacsv.open_csv(f, read_options=ro, parse_options=po, convert_options=co)
                for batch in reader:
                    self._done = min(self.size, self._done + self.block_size)
                    yield {c: batch.column(c) for c in self.columns}
            except pa.ArrowInvalid as exc:
                raise self._explain(exc) from None

    def _explain(self, exc: Exception) -> InvalidInput:
        if self.invalid:
            bad = self.invalid[0]
            row = (bad.number - 1) if bad.number is not None else None
            where = f"data row {row}" if row is not None else "a row"
            last_line = self.tail.rstrip(b"\r\n").rsplit(b"\n", 1)[-1].decode("utf-8", "replace").rstrip("\r")
            if not self.ends_with_newline and bad.text.rstrip("\r") == last_line:
                return fail(
                    self.path,
                    f"file is cut off in the middle of {where} (the last line has {bad.actual_columns} of "
                    f"{bad.expected_columns} fields and no line end)",
                )
            return fail(self.path, f"{where} has {bad.actual_columns} fields, the header has {bad.expected_columns}")
        msg = str(exc).splitlines()[0]
        if "straddling object" in msg:  # a row longer than a block: find it and say where
            return self._long_row()
        m = _ARROW_WHERE.search(msg)
        if m:  # "In CSV column #2: Row #3: ..." counts the header as row 1 and columns from 0
            col, row, rest = int(m[1]), int(m[2]) - 1, m[3]
            name = self.header[col] if col < len(self.header) else f"#{col + 1}"
            return fail(self.path, f"data row {row}, column {name!r}: {rest}")
        m = _ARROW_ROW.search(msg)
        if m:
            msg = f"data row {int(m[1]) - 1}: {m[2]}"
        hint = "" if self.ends_with_newline else " (the file does not end with a line end: is it cut off?)"
        return fail(self.path, f"not valid CSV: {msg}{hint}")

    def _long_row(self) -> InvalidInput:
        """The first row that does not fit in a read block, and its longest cell (a second, slow pass
        over the file, made only on this error)."""
        csv.field_size_limit(sys.maxsize)
        with self.path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
            reader = csv.reader(f, delimiter=self.schema.delimiter)
            next(reader, None)
            for row_no, row in enumerate(reader, 1):
                sizes = [len(c.encode("utf-8")) for c in row]
                if sum(sizes) + len(row) >= self.block_size:
                    j = max(range(len(row)), key=sizes.__getitem__)
                    name = self.header[j] if j < len(self.header) else f"#{j + 1}"
                    return fail(
                        self.path,
                        f"data row {row_no}, column {name!r}: a cell of {sizes[j]} bytes; a row must be under "
                        f"{self.block_size >> 20 or 1} MiB ({self.block_size} bytes)",
                    )
        return fail(self.path, f"a row is longer than the {self.block_size}-byte read block")


class ParquetSource:
    def __init__(self, path: Path, schema: DatasetSchema, batch_rows: int) -> None:
        self.path = path
        self.schema = schema
        self.size = path.stat().st_size
        if self.size == 0:
            raise fail(path, "file is empty")
        try:
            self.pf = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise fail(path, f"not a valid Parquet file (cut off or corrupt?): {exc}") from None
        header = list(self.pf.schema_arrow.names)
        check_columns(path, schema, header, None)
        if self.pf.metadata.num_rows == 0:
            raise fail(path, "file has no data rows")
        self.total_rows = self.pf.metadata.num_rows
        self.batch_rows = batch_rows
        self.columns = schema.file_columns()
        self._done = 0

    def done(self) -> int:
        return self._done

    def batches(self) -> Iterator[dict[str, pa.Array]]:
        try:
            for batch in self.pf.iter_batches(batch_size=self.batch_rows, columns=self.columns):
                self._done += batch.num_rows
                yield {c: batch.column(c) for c in self.columns}
        except (pa.ArrowInvalid, OSError) as exc:
            raise fail(self.path, f"cannot read Parquet data (cut off or corrupt?): {exc}") from None


def is_parquet(path: Path) -> bool:
    if path.suffix.lower() in (".parquet", ".pq"):
        return True
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return False
    with path.open("rb") as f:
        return f.read(4) == b"PAR1"


def open_source(
    path: Path, schema: DatasetSchema, block_size: int, batch_rows: int
) -> tuple[CsvSource | ParquetSource, int]:
    """The reader of ``path`` (Parquet or CSV) and its progress total (rows for Parquet, bytes for CSV);
    NotFound when the file does not exist."""
    if not path.is_file():
        raise NotFound(f"data file {path} does not exist")
    if is_parquet(path):
        pq = ParquetSource(path, schema, batch_rows)
        return pq, pq.total_rows
    csv = CsvSource(path, schema, block_size)
    return csv, csv.size
