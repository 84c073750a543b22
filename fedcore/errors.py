"""The few typed errors of fedcredit.

Every error a user or a peer can meet is one of these. Each has a stable ``code`` (used on the wire
and in logs) and a message meant for the person who has to act on it: it names the file, row, column,
field, party or step that was wrong. Mapping to gRPC status happens in one place,
:mod:`fedcore.wire.errors`; nothing else decides status codes.
"""

from __future__ import annotations


class FedcreditError(Exception):
    """Base of every expected error. ``str(err)`` is one clear line."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(FedcreditError):
    """Bad input from a user or a file: a malformed config, a bad CSV row, a bad CSR."""

    code = "invalid_input"


class ConfigError(InvalidInput):
    """A configuration file or environment override that does not validate; names the key."""

    code = "invalid_config"


class NotFound(FedcreditError):
    """A named thing (party, run, model, file) does not exist."""

    code = "not_found"


class AlreadyExists(FedcreditError):
    """Creating something whose name is taken (admitting a party twice, say)."""

    code = "already_exists"


class Unauthenticated(FedcreditError):
    """The caller's identity could not be established or is no longer valid (revoked certificate)."""

    code = "unauthenticated"


class PermissionDenied(FedcreditError):
    """The caller is known but its role may not do this."""

    code = "permission_denied"


class Unavailable(FedcreditError):
    """A party or the coordinator cannot be reached right now."""

    code = "unavailable"


class DeadlineExceeded(FedcreditError):
    """A task or call did not finish within its timeout."""

    code = "deadline_exceeded"


class Cancelled(FedcreditError):
    """A task was cancelled before it finished."""

    code = "cancelled"


class ProtocolError(FedcreditError):
    """A peer sent something that breaks the protocol (wrong message, bad ciphertext, bad point)."""

    code = "protocol_error"


class RateLimited(Unavailable):
    """A caller asked for more than its share (names the caller and the limit); try again later."""


class CorruptResult(ProtocolError):
    """A party's result does not parse or does not fit the step (garbage ciphertext, wrong length,
    truncated positions). Names the party and the step; travels as ``protocol_error``."""

    def __init__(self, party: str, step: str, detail: str) -> None:
        self.party = party
        self.step = step
        self.detail = detail
        super().__init__(f"party {party!r} sent a corrupt result in step {step!r}: {detail}")


class PartyTaskError(FedcreditError):
    """A task failed at a party. Names the party and the step (the task kind).

    ``kind`` is the error code the party reported, always one of :data:`ERROR_CODES`; the party's own
    message is kept as plain text and never turned back into an exception type.
    """

    code = "party_task_failed"

    def __init__(self, party: str, step: str, kind: str, detail: str) -> None:
        self.party = party
        self.step = step
        self.kind = kind if kind in ERROR_CODES else "internal"
        self.detail = detail
        super().__init__(f"party {party!r} failed step {step!r} ({self.kind}): {detail}")


class ContextUnknown(NotFound):
    """A party does not hold the requester's CKKS public context (it restarted): resend it."""

    code = "context_unknown"

    def __init__(self, fingerprint: str) -> None:
        super().__init__(f"CKKS context {fingerprint[:16]}... unknown (resend with the public context)")


ERROR_TYPES: tuple[type[FedcreditError], ...] = (
    FedcreditError,
    InvalidInput,
    ConfigError,
    NotFound,
    AlreadyExists,
    Unauthenticated,
    PermissionDenied,
    Unavailable,
    DeadlineExceeded,
    Cancelled,
    ProtocolError,
    PartyTaskError,
    ContextUnknown,
)
ERROR_CODES: frozenset[str] = frozenset(t.code for t in ERROR_TYPES)


class PartyUnavailable(Unavailable):
    """A party is not connected, or its link dropped while a task was running."""

    def __init__(self, party: str, detail: str = "not connected") -> None:
        self.party = party
        super().__init__(f"party {party!r} is unavailable: {detail}")


class TaskTimeout(DeadlineExceeded):
    """A task sent to a party did not finish in time."""

    def __init__(self, party: str, step: str, timeout_s: float) -> None:
        self.party = party
        self.step = step
        super().__init__(f"party {party!r} did not finish step {step!r} within {timeout_s:g} s")
