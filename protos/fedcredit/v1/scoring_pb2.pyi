from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JointScoreRequest(_message.Message):
    __slots__ = ("model_id", "model_version", "queries", "pseudonyms", "context_fingerprint", "public_context", "allow_partial", "timeout_s", "tree_input", "group")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    PSEUDONYMS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    TREE_INPUT_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_version: str
    queries: _containers.RepeatedScalarFieldContainer[str]
    pseudonyms: bytes
    context_fingerprint: str
    public_context: bytes
    allow_partial: bool
    timeout_s: float
    tree_input: bytes
    group: str
    def __init__(self, model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., queries: _Optional[_Iterable[str]] = ..., pseudonyms: _Optional[bytes] = ..., context_fingerprint: _Optional[str] = ..., public_context: _Optional[bytes] = ..., allow_partial: bool = ..., timeout_s: _Optional[float] = ..., tree_input: _Optional[bytes] = ..., group: _Optional[str] = ...) -> None: ...

class JointScoreHeader(_message.Message):
    __slots__ = ("request_id", "n", "queries", "contributors", "missing", "has_ciphertext")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    HAS_CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    n: int
    queries: _containers.RepeatedScalarFieldContainer[str]
    contributors: int
    missing: _containers.RepeatedScalarFieldContainer[str]
    has_ciphertext: bool
    def __init__(self, request_id: _Optional[str] = ..., n: _Optional[int] = ..., queries: _Optional[_Iterable[str]] = ..., contributors: _Optional[int] = ..., missing: _Optional[_Iterable[str]] = ..., has_ciphertext: bool = ...) -> None: ...

class JointScoreChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: JointScoreHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[JointScoreHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Applicant(_message.Message):
    __slots__ = ("id", "id_kind", "features", "categories")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class CategoriesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    ID_KIND_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    id: str
    id_kind: str
    features: _containers.ScalarMap[str, float]
    categories: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., id_kind: _Optional[str] = ..., features: _Optional[_Mapping[str, float]] = ..., categories: _Optional[_Mapping[str, str]] = ...) -> None: ...

class LocalScoreRequest(_message.Message):
    __slots__ = ("applicants", "model_id", "queries", "allow_partial", "model_version")
    APPLICANTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    applicants: _containers.RepeatedCompositeFieldContainer[Applicant]
    model_id: str
    queries: _containers.RepeatedScalarFieldContainer[str]
    allow_partial: bool
    model_version: str
    def __init__(self, applicants: _Optional[_Iterable[_Union[Applicant, _Mapping]]] = ..., model_id: _Optional[str] = ..., queries: _Optional[_Iterable[str]] = ..., allow_partial: bool = ..., model_version: _Optional[str] = ...) -> None: ...

class ReasonCodeMsg(_message.Message):
    __slots__ = ("feature", "logit_impact")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    LOGIT_IMPACT_FIELD_NUMBER: _ClassVar[int]
    feature: str
    logit_impact: float
    def __init__(self, feature: _Optional[str] = ..., logit_impact: _Optional[float] = ...) -> None: ...

class ApplicantScore(_message.Message):
    __slots__ = ("id", "status", "prob_default", "points", "reasons", "decision", "rate_tier", "blacklist_hits", "active_loans_elsewhere", "partial", "missing_parties", "model_id", "model_version", "request_id", "own_data", "external_logit")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROB_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RATE_TIER_FIELD_NUMBER: _ClassVar[int]
    BLACKLIST_HITS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_LOANS_ELSEWHERE_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    MISSING_PARTIES_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OWN_DATA_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_LOGIT_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: str
    prob_default: float
    points: float
    reasons: _containers.RepeatedCompositeFieldContainer[ReasonCodeMsg]
    decision: str
    rate_tier: str
    blacklist_hits: int
    active_loans_elsewhere: int
    partial: bool
    missing_parties: _containers.RepeatedScalarFieldContainer[str]
    model_id: str
    model_version: str
    request_id: str
    own_data: bool
    external_logit: float
    def __init__(self, id: _Optional[str] = ..., status: _Optional[str] = ..., prob_default: _Optional[float] = ..., points: _Optional[float] = ..., reasons: _Optional[_Iterable[_Union[ReasonCodeMsg, _Mapping]]] = ..., decision: _Optional[str] = ..., rate_tier: _Optional[str] = ..., blacklist_hits: _Optional[int] = ..., active_loans_elsewhere: _Optional[int] = ..., partial: bool = ..., missing_parties: _Optional[_Iterable[str]] = ..., model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., request_id: _Optional[str] = ..., own_data: bool = ..., external_logit: _Optional[float] = ...) -> None: ...

class LocalScoreResponse(_message.Message):
    __slots__ = ("scores",)
    SCORES_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedCompositeFieldContainer[ApplicantScore]
    def __init__(self, scores: _Optional[_Iterable[_Union[ApplicantScore, _Mapping]]] = ...) -> None: ...

class LocalScoreProgress(_message.Message):
    __slots__ = ("done", "total", "scores")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    scores: _containers.RepeatedCompositeFieldContainer[ApplicantScore]
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ..., scores: _Optional[_Iterable[_Union[ApplicantScore, _Mapping]]] = ...) -> None: ...
