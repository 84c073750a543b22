"""The one place that maps fedcredit errors to gRPC status codes and back.

Like Flower's ``supercore/error``: each error code has a gRPC status; what goes on the wire is a fixed
public message per code plus the error's own one-line message when the error is one we raised on
purpose (a :class:`~fedcore.errors.FedcreditError`); unexpected exceptions are logged here and the peer
gets only ``internal error``. The error's code travels in the trailing metadata (:data:`CODE_KEY`), so
a client decides by code, never by message text: it maps the code (or, failing that, the status) to one
of our own types, never rebuilding a type a peer named.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import grpc

from fedcore import errors as e

log = logging.getLogger(__name__)

STATUS_OF: dict[str, grpc.StatusCode] = {
    e.FedcreditError.code: grpc.StatusCode.INTERNAL,
    e.InvalidInput.code: grpc.StatusCode.INVALID_ARGUMENT,
    e.ConfigError.code: grpc.StatusCode.INVALID_ARGUMENT,
    e.NotFound.code: grpc.StatusCode.NOT_FOUND,
    e.AlreadyExists.code: grpc.StatusCode.ALREADY_EXISTS,
    e.Unauthenticated.code: grpc.StatusCode.UNAUTHENTICATED,
    e.PermissionDenied.code: grpc.StatusCode.PERMISSION_DENIED,
    e.Unavailable.code: grpc.StatusCode.UNAVAILABLE,
    e.DeadlineExceeded.code: grpc.StatusCode.DEADLINE_EXCEEDED,
    e.Cancelled.code: grpc.StatusCode.CANCELLED,
    e.ProtocolError.code: grpc.StatusCode.FAILED_PRECONDITION,
    e.PartyTaskError.code: grpc.StatusCode.ABORTED,
    e.ContextUnknown.code: grpc.StatusCode.NOT_FOUND,
}
CODE_KEY = "fedcredit-error-code"
ERROR_OF_CODE: dict[str, type[e.FedcreditError]] = {t.code: t for t in e.ERROR_TYPES if t is not e.PartyTaskError}

ERROR_OF_STATUS: dict[grpc.StatusCode, type[e.FedcreditError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: e.InvalidInput,
    grpc.StatusCode.NOT_FOUND: e.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: e.AlreadyExists,
    grpc.StatusCode.UNAUTHENTICATED: e.Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: e.PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: e.Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: e.DeadlineExceeded,
    grpc.StatusCode.CANCELLED: e.Cancelled,
    grpc.StatusCode.FAILED_PRECONDITION: e.ProtocolError,
}


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and public message for an exception raised in a servicer."""
    if isinstance(exc, e.FedcreditError):
        return STATUS_OF.get(exc.code, grpc.StatusCode.INTERNAL), str(exc)
    log.error("unexpected error in a servicer", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error (see the coordinator's log)"


def abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    """End the call with ``exc``'s status, message and (for our own errors) its code in the trailers."""
    code, message = status_of(exc)
    if isinstance(exc, e.FedcreditError):
        context.set_trailing_metadata(((CODE_KEY, exc.code),))
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover


F = TypeVar("F", bound=Callable[..., Any])


def servicer_errors(fn: F) -> F:
    """Decorate a unary servicer method: typed errors become their status; others become INTERNAL."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except Exception as exc:
            abort(context, exc)

    return wrapper  # type: ignore[return-value]


def from_rpc_error(err: grpc.RpcError, what: str) -> e.FedcreditError:
    """Our own error type for a failed call, with a message saying what failed."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    cls = ERROR_OF_STATUS.get(code, e.FedcreditError)
    sent = error_code(err)
    if sent in ERROR_OF_CODE and STATUS_OF.get(sent) == code:  # the code must agree with the status
        cls = ERROR_OF_CODE[sent]
    out = cls.__new__(cls)
    e.FedcreditError.__init__(out, f"{what}: {details or code.name.lower()}")
    return out


def error_code(err: grpc.RpcError) -> str | None:
    """The fedcredit error code a peer put in the trailing metadata, if any."""
    trailers: Any = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    for item in trailers or ():
        key, value = item[0], item[1]
        if key == CODE_KEY:
            return str(value)
    return None
