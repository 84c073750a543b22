from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SnapshotAnnouncement(_message.Message):
    __slots__ = ("as_of",)
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    as_of: str
    def __init__(self, as_of: _Optional[str] = ...) -> None: ...

class SnapshotAnnounced(_message.Message):
    __slots__ = ("lenders",)
    LENDERS_FIELD_NUMBER: _ClassVar[int]
    lenders: int
    def __init__(self, lenders: _Optional[int] = ...) -> None: ...

class ProductMsg(_message.Message):
    __slots__ = ("kind", "amount", "term_months")
    KIND_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    TERM_MONTHS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    amount: float
    term_months: int
    def __init__(self, kind: _Optional[str] = ..., amount: _Optional[float] = ..., term_months: _Optional[int] = ...) -> None: ...

class PreapprovalRequest(_message.Message):
    __slots__ = ("pseudonym", "product", "lenders", "budget_ms", "announcement")
    PSEUDONYM_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    LENDERS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    ANNOUNCEMENT_FIELD_NUMBER: _ClassVar[int]
    pseudonym: bytes
    product: ProductMsg
    lenders: _containers.RepeatedScalarFieldContainer[str]
    budget_ms: int
    announcement: str
    def __init__(self, pseudonym: _Optional[bytes] = ..., product: _Optional[_Union[ProductMsg, _Mapping]] = ..., lenders: _Optional[_Iterable[str]] = ..., budget_ms: _Optional[int] = ..., announcement: _Optional[str] = ...) -> None: ...

class SealedOfferMsg(_message.Message):
    __slots__ = ("lender", "sealed")
    LENDER_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    lender: str
    sealed: str
    def __init__(self, lender: _Optional[str] = ..., sealed: _Optional[str] = ...) -> None: ...

class OfferMsg(_message.Message):
    __slots__ = ("lender", "product", "amount", "rate", "term_months", "valid_s")
    LENDER_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    TERM_MONTHS_FIELD_NUMBER: _ClassVar[int]
    VALID_S_FIELD_NUMBER: _ClassVar[int]
    lender: str
    product: str
    amount: float
    rate: float
    term_months: int
    valid_s: int
    def __init__(self, lender: _Optional[str] = ..., product: _Optional[str] = ..., amount: _Optional[float] = ..., rate: _Optional[float] = ..., term_months: _Optional[int] = ..., valid_s: _Optional[int] = ...) -> None: ...

class PreapprovalReply(_message.Message):
    __slots__ = ("request_id", "offers", "sealed")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OFFERS_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    offers: _containers.RepeatedCompositeFieldContainer[OfferMsg]
    sealed: _containers.RepeatedCompositeFieldContainer[SealedOfferMsg]
    def __init__(self, request_id: _Optional[str] = ..., offers: _Optional[_Iterable[_Union[OfferMsg, _Mapping]]] = ..., sealed: _Optional[_Iterable[_Union[SealedOfferMsg, _Mapping]]] = ...) -> None: ...

class LocalPreapprovalRequest(_message.Message):
    __slots__ = ("viewer_id", "id_kind", "product", "lenders", "budget_ms")
    VIEWER_ID_FIELD_NUMBER: _ClassVar[int]
    ID_KIND_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    LENDERS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    viewer_id: str
    id_kind: str
    product: ProductMsg
    lenders: _containers.RepeatedScalarFieldContainer[str]
    budget_ms: int
    def __init__(self, viewer_id: _Optional[str] = ..., id_kind: _Optional[str] = ..., product: _Optional[_Union[ProductMsg, _Mapping]] = ..., lenders: _Optional[_Iterable[str]] = ..., budget_ms: _Optional[int] = ...) -> None: ...
