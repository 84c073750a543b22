"""Domain messages shared by the coordinator and the parties.

These are plain dataclasses; :mod:`fedcore.wire` converts them to and from protobuf. Protocol code
only ever sees these types, never generated protobuf classes or gRPC objects.

Task parameters are JSON-like scalars, lists and maps (they travel as ``google.protobuf.Struct``);
bulk data (blinded points, ciphertexts, model weights) travels as a payload: a stream of byte chunks
whose content is a schema'd protobuf message or a documented binary layout, never pickle.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

JSONValue = Any  # str | int | float | bool | None | list[JSONValue] | dict[str, JSONValue]


class Role(StrEnum):
    """What a principal may do: admins administer; lenders hold labels; the platform holds behaviour data."""

    ADMIN = "admin"
    LENDER = "lender"
    PLATFORM = "platform"


PARTY_ROLES = (Role.LENDER, Role.PLATFORM)


@dataclass(frozen=True)
class FeatureInfo:
    """One column the operator allows the federation to use: its name and type, never its values."""

    name: str
    dtype: str  # "numeric" | "categorical"


@dataclass(frozen=True)
class TableSummary:
    """What a party registers about one data set: names, types and counts only."""

    name: str
    rows: int
    features: tuple[FeatureInfo, ...] = ()
    has_labels: bool = False
    label_rows: int = 0


@dataclass(frozen=True)
class DataSummary:
    tables: tuple[TableSummary, ...] = ()


@dataclass(frozen=True)
class PartyInfo:
    """A party as the coordinator sees it."""

    name: str
    role: Role
    online: bool = False
    last_seen: float | None = None  # unix seconds
    summary: DataSummary = field(default_factory=DataSummary)


@dataclass(frozen=True)
class Task:
    """A declarative instruction to a party: which step (``kind``), for which run, with which parameters.

    ``payload`` is an optional iterable of byte chunks sent after the header; it is consumed once.
    """

    kind: str
    params: Mapping[str, JSONValue] = field(default_factory=dict)
    run_id: str = ""
    timeout_s: float = 60.0
    payload: Iterable[bytes] | None = None


@dataclass(frozen=True)
class TaskReply:
    """What a party's handler returns: parameters and an optional payload stream (consumed once)."""

    params: Mapping[str, JSONValue] = field(default_factory=dict)
    payload: Iterable[bytes] | None = None


@dataclass
class TaskResult:
    """A reply as the coordinator receives it. ``chunks()`` streams the payload; read it once."""

    party: str
    kind: str
    params: Mapping[str, JSONValue]
    _chunks: Iterator[bytes] = field(default_factory=lambda: iter(()))

    def chunks(self) -> Iterator[bytes]:
        return self._chunks

    def read_payload(self) -> bytes:
        """Collect the whole payload in memory (only for payloads known to be small)."""
        return b"".join(self._chunks)


NAME_PATTERN = r"^[a-z][a-z0-9_-]{1,31}$"


def check_name(name: str, what: str = "party name") -> str:
    """Return ``name`` if it is a valid principal name (2-32 of a-z, 0-9, '-', '_'; starts with a letter)."""
    import re

    from fedcore.errors import InvalidInput

    if not re.match(NAME_PATTERN, name):
        raise InvalidInput(
            f"{what} {name!r} is not valid: use 2-32 characters of a-z, 0-9, '-' or '_',"
            " starting with a letter"
        )
    return name
