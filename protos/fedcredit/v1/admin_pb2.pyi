from google.protobuf import struct_pb2 as _struct_pb2
from fedcredit.v1 import link_pb2 as _link_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PartyStatus(_message.Message):
    __slots__ = ("name", "role", "status", "online", "last_seen_unix", "summary")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_UNIX_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: str
    status: str
    online: bool
    last_seen_unix: float
    summary: _link_pb2.DataSummary
    def __init__(self, name: _Optional[str] = ..., role: _Optional[str] = ..., status: _Optional[str] = ..., online: bool = ..., last_seen_unix: _Optional[float] = ..., summary: _Optional[_Union[_link_pb2.DataSummary, _Mapping]] = ...) -> None: ...

class ListPartiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPartiesResponse(_message.Message):
    __slots__ = ("parties",)
    PARTIES_FIELD_NUMBER: _ClassVar[int]
    parties: _containers.RepeatedCompositeFieldContainer[PartyStatus]
    def __init__(self, parties: _Optional[_Iterable[_Union[PartyStatus, _Mapping]]] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("party", "count", "payload_bytes", "timeout_s")
    PARTY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    party: str
    count: int
    payload_bytes: int
    timeout_s: float
    def __init__(self, party: _Optional[str] = ..., count: _Optional[int] = ..., payload_bytes: _Optional[int] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class ProbeResponse(_message.Message):
    __slots__ = ("rtt_ms", "bytes_received", "seconds", "payload_sha256")
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    rtt_ms: _containers.RepeatedScalarFieldContainer[float]
    bytes_received: int
    seconds: float
    payload_sha256: str
    def __init__(self, rtt_ms: _Optional[_Iterable[float]] = ..., bytes_received: _Optional[int] = ..., seconds: _Optional[float] = ..., payload_sha256: _Optional[str] = ...) -> None: ...

class StartRunRequest(_message.Message):
    __slots__ = ("kind", "params")
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    params: _struct_pb2.Struct
    def __init__(self, kind: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ResumeRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("run_id", "message", "done", "result", "status")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    message: str
    done: bool
    result: _struct_pb2.Struct
    status: str
    def __init__(self, run_id: _Optional[str] = ..., message: _Optional[str] = ..., done: bool = ..., result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., status: _Optional[str] = ...) -> None: ...

class RunInfo(_message.Message):
    __slots__ = ("run_id", "kind", "status", "params", "result", "created_unix", "updated_unix")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    kind: str
    status: str
    params: _struct_pb2.Struct
    result: _struct_pb2.Struct
    created_unix: float
    updated_unix: float
    def __init__(self, run_id: _Optional[str] = ..., kind: _Optional[str] = ..., status: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., created_unix: _Optional[float] = ..., updated_unix: _Optional[float] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunInfo]
    def __init__(self, runs: _Optional[_Iterable[_Union[RunInfo, _Mapping]]] = ...) -> None: ...
