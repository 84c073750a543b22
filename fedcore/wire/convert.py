"""Protobuf <-> domain conversion. The only module (with the servicers that call it) that touches
generated message classes for domain data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedcredit.v1 import link_pb2
from google.protobuf import json_format, struct_pb2

from fedcore.errors import ProtocolError
from fedcore.protocol.messages import DataSummary, FeatureInfo, JSONValue, TableSummary


def summary_to_proto(summary: DataSummary) -> link_pb2.DataSummary:
    return link_pb2.DataSummary(
        tables=[
            link_pb2.TableSummary(
                name=t.name,
                rows=t.rows,
                features=[link_pb2.FeatureInfo(name=f.name, dtype=f.dtype) for f in t.features],
                has_labels=t.has_labels,
                label_rows=t.label_rows,
            )
            for t in summary.tables
        ]
    )


def summary_from_proto(msg: link_pb2.DataSummary) -> DataSummary:
    return DataSummary(
        tables=tuple(
            TableSummary(
                name=t.name,
                rows=int(t.rows),
                features=tuple(FeatureInfo(f.name, f.dtype) for f in t.features),
                has_labels=t.has_labels,
                label_rows=int(t.label_rows),
            )
            for t in msg.tables
        )
    )


def params_to_struct(params: Mapping[str, JSONValue]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    try:
        s.update(dict(params))
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"task parameters are not JSON-like: {exc}") from None
    return s


def _intify(value: Any) -> Any:
    # Struct stores numbers as doubles; give integral values back as int.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, list):
        return [_intify(v) for v in value]
    if isinstance(value, dict):
        return {k: _intify(v) for k, v in value.items()}
    return value


def params_from_struct(msg: struct_pb2.Struct) -> dict[str, JSONValue]:
    data = json_format.MessageToDict(msg)
    return {k: _intify(v) for k, v in data.items()}
