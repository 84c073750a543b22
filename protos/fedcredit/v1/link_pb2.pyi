from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeatureInfo(_message.Message):
    __slots__ = ("name", "dtype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ...) -> None: ...

class TableSummary(_message.Message):
    __slots__ = ("name", "rows", "features", "has_labels", "label_rows")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    HAS_LABELS_FIELD_NUMBER: _ClassVar[int]
    LABEL_ROWS_FIELD_NUMBER: _ClassVar[int]
    name: str
    rows: int
    features: _containers.RepeatedCompositeFieldContainer[FeatureInfo]
    has_labels: bool
    label_rows: int
    def __init__(self, name: _Optional[str] = ..., rows: _Optional[int] = ..., features: _Optional[_Iterable[_Union[FeatureInfo, _Mapping]]] = ..., has_labels: bool = ..., label_rows: _Optional[int] = ...) -> None: ...

class DataSummary(_message.Message):
    __slots__ = ("tables",)
    TABLES_FIELD_NUMBER: _ClassVar[int]
    tables: _containers.RepeatedCompositeFieldContainer[TableSummary]
    def __init__(self, tables: _Optional[_Iterable[_Union[TableSummary, _Mapping]]] = ...) -> None: ...

class Register(_message.Message):
    __slots__ = ("summary", "software_version")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    summary: DataSummary
    software_version: str
    def __init__(self, summary: _Optional[_Union[DataSummary, _Mapping]] = ..., software_version: _Optional[str] = ...) -> None: ...

class Registered(_message.Message):
    __slots__ = ("party", "role", "heartbeat_interval_s")
    PARTY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    party: str
    role: str
    heartbeat_interval_s: float
    def __init__(self, party: _Optional[str] = ..., role: _Optional[str] = ..., heartbeat_interval_s: _Optional[float] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("sent_unix_ms",)
    SENT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    sent_unix_ms: int
    def __init__(self, sent_unix_ms: _Optional[int] = ...) -> None: ...

class TaskHeader(_message.Message):
    __slots__ = ("task_id", "kind", "run_id", "params", "timeout_s", "has_payload")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    HAS_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    kind: str
    run_id: str
    params: _struct_pb2.Struct
    timeout_s: float
    has_payload: bool
    def __init__(self, task_id: _Optional[str] = ..., kind: _Optional[str] = ..., run_id: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., timeout_s: _Optional[float] = ..., has_payload: bool = ...) -> None: ...

class PayloadChunk(_message.Message):
    __slots__ = ("task_id", "data", "last")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    data: bytes
    last: bool
    def __init__(self, task_id: _Optional[str] = ..., data: _Optional[bytes] = ..., last: bool = ...) -> None: ...

class CancelTask(_message.Message):
    __slots__ = ("task_id", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class TaskResultHeader(_message.Message):
    __slots__ = ("task_id", "params", "has_payload")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    HAS_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    params: _struct_pb2.Struct
    has_payload: bool
    def __init__(self, task_id: _Optional[str] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., has_payload: bool = ...) -> None: ...

class TaskError(_message.Message):
    __slots__ = ("task_id", "code", "step", "message")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    code: str
    step: str
    message: str
    def __init__(self, task_id: _Optional[str] = ..., code: _Optional[str] = ..., step: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class PartyMessage(_message.Message):
    __slots__ = ("register", "heartbeat", "result", "chunk", "error")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    register: Register
    heartbeat: Heartbeat
    result: TaskResultHeader
    chunk: PayloadChunk
    error: TaskError
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., result: _Optional[_Union[TaskResultHeader, _Mapping]] = ..., chunk: _Optional[_Union[PayloadChunk, _Mapping]] = ..., error: _Optional[_Union[TaskError, _Mapping]] = ...) -> None: ...

class CoordinatorMessage(_message.Message):
    __slots__ = ("registered", "task", "chunk", "cancel", "heartbeat_ack")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_ACK_FIELD_NUMBER: _ClassVar[int]
    registered: Registered
    task: TaskHeader
    chunk: PayloadChunk
    cancel: CancelTask
    heartbeat_ack: Heartbeat
    def __init__(self, registered: _Optional[_Union[Registered, _Mapping]] = ..., task: _Optional[_Union[TaskHeader, _Mapping]] = ..., chunk: _Optional[_Union[PayloadChunk, _Mapping]] = ..., cancel: _Optional[_Union[CancelTask, _Mapping]] = ..., heartbeat_ack: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...
