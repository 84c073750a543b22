"""Who is calling, and may they? One interceptor for every RPC of the coordinator.

The TLS layer has already checked that the client certificate chains to the federation CA and is
within its validity period (gRPC rejects the handshake otherwise, so the client sees UNAVAILABLE).
This interceptor then:

1. takes the certificate's serial and checks it against the registry: unknown or revoked serials get
   UNAUTHENTICATED;
2. looks up the principal's role in the registry and checks it against :data:`RPC_ROLES`; a role not
   allowed for the method gets PERMISSION_DENIED; methods not listed are denied.

Servicers call :func:`identity_of` to learn the caller's name and role; they never parse certificates.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from fedcore.crypto.pki import cert_info
from fedcore.errors import FedcreditError, PermissionDenied, Unauthenticated
from fedcore.protocol.messages import Role
from fedcore.wire.errors import status_of

from .state import StateStore

log = logging.getLogger(__name__)

ANY = frozenset(Role)
PARTIES = frozenset({Role.LENDER, Role.PLATFORM})
ADMIN = frozenset({Role.ADMIN})

# Which roles may call which method. Anything not listed is denied.
RPC_ROLES: dict[str, frozenset[Role]] = {
    "/fedcredit.v1.PartyLink/Connect": PARTIES,
    "/fedcredit.v1.Admin/ListParties": ADMIN,
    "/fedcredit.v1.Admin/Probe": ADMIN,
    "/fedcredit.v1.Admin/StartRun": ADMIN,
    "/fedcredit.v1.Admin/ResumeRun": ADMIN,
    "/fedcredit.v1.Admin/ListRuns": ADMIN,
    "/fedcredit.v1.Scoring/Score": frozenset({Role.LENDER}),
    "/fedcredit.v1.Preapproval/Request": frozenset({Role.PLATFORM}),
    "/fedcredit.v1.Preapproval/AnnounceSnapshot": frozenset({Role.PLATFORM}),
    "/grpc.health.v1.Health/Check": ANY,
    "/grpc.health.v1.Health/Watch": ANY,
    "/grpc.health.v1.Health/List": ANY,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": ANY,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": ANY,
}


@dataclass(frozen=True)
class Identity:
    name: str
    role: Role
    serial: str


@functools.lru_cache(maxsize=1024)
def _parse(pem: bytes) -> tuple[str, str, dt.datetime]:
    info = cert_info(pem, "client certificate")
    return info.name, info.serial, info.not_after


def identity_of(context: grpc.ServicerContext, state: StateStore) -> Identity:
    """Authenticate the caller of ``context`` against the registry (raises Unauthenticated)."""
    auth = context.auth_context()
    pems: Any = auth.get("x509_pem_cert") or []
    if not pems:
        raise Unauthenticated("no client certificate")
    first = pems[0]
    name, serial, not_after = _parse(first if isinstance(first, bytes) else bytes(first))
    if not_after < dt.datetime.now(dt.UTC):
        raise Unauthenticated(f"certificate of {name!r} expired at {not_after.isoformat()}")
    owner = state.certificate_owner(serial)
    if owner is None:
        raise Unauthenticated(f"certificate of {name!r} is not registered with this coordinator")
    owner_name, revoked = owner
    if revoked:
        raise Unauthenticated(f"certificate of {owner_name!r} is revoked")
    principal = state.principal(owner_name)
    if principal is None or owner_name != name:
        raise Unauthenticated(f"certificate name {name!r} does not match the registry")
    if principal.status != "admitted":
        raise Unauthenticated(f"{name!r} is revoked")
    return Identity(name, principal.role, serial)


def authorize(method: str, identity: Identity) -> None:
    allowed = RPC_ROLES.get(method)
    if allowed is None or identity.role not in allowed:
        raise PermissionDenied(f"{identity.role.value} {identity.name!r} may not call {method}")


class PrincipalLimiter:
    """Concurrent RPCs (unary calls and streams alike) per party principal. A slot is taken when the
    call is authorized and given back when the RPC terminates, however it ends. The admin is not
    limited: it is one trusted principal, and the slots the parties cannot take are its reserve."""

    def __init__(self, per_party: int) -> None:
        self.per_party = per_party
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    def acquire(self, identity: Identity) -> Callable[[], None] | None:
        """A release function, or None when the principal already holds all its slots."""
        if identity.role == Role.ADMIN:
            return lambda: None
        name = identity.name
        with self._lock:
            if self._held.get(name, 0) >= self.per_party:
                return None
            self._held[name] = self._held.get(name, 0) + 1
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            with self._lock:
                left = self._held.get(name, 1) - 1
                if left:
                    self._held[name] = left
                else:
                    self._held.pop(name, None)

        return release

    def held(self, name: str) -> int:
        with self._lock:
            return self._held.get(name, 0)


class AuthInterceptor(grpc.ServerInterceptor):
    """Wraps every method handler with the registry check above and the per-principal RPC limit."""

    def __init__(self, state: StateStore, max_rpcs_per_party: int = 16) -> None:
        self._state = state
        self.limiter = PrincipalLimiter(max_rpcs_per_party)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method  # type: ignore[attr-defined]

        def guard(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    identity = identity_of(context, self._state)
                    authorize(method, identity)
                except FedcreditError as exc:
                    code, message = status_of(exc)
                    log.warning("denied %s: %s", method, message)
                    context.abort(code, message)
                release = self.limiter.acquire(identity)
                if release is None:
                    log.warning("refused %s to %s: it already holds %d concurrent RPCs", method, identity.name,
                                self.limiter.per_party)
                    context.abort(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"{identity.name!r} already holds {self.limiter.per_party} concurrent calls and streams",
                    )
                if not context.add_callback(release):  # the RPC already ended
                    release()
                return behavior(request, context)

            return wrapped

        h: Any = handler
        if h.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                guard(h.unary_unary), h.request_deserializer, h.response_serializer
            )
        if h.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                guard(h.unary_stream), h.request_deserializer, h.response_serializer
            )
        if h.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                guard(h.stream_unary), h.request_deserializer, h.response_serializer
            )
        return grpc.stream_stream_rpc_method_handler(
            guard(h.stream_stream), h.request_deserializer, h.response_serializer
        )
