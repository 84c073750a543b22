"""Pre-approval's task kind and the product, quote and request/result formats (JSON-able, no pickle)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedcore.errors import InvalidInput, ProtocolError
from fedcore.protocol.messages import JSONValue, check_name
from fedcore.protocol.scoring.groups import Standing
from fedcore.protocol.scoring.messages import PSEUDONYM_BYTES, JointResponse

OFFER = "preapproval.offer"
SNAPSHOT = "monitoring.snapshot"  # the platform announces a new behaviour snapshot to the lenders
PURPOSE = "preapproval"
SEAL_PURPOSE = "preapproval-offer"  # + "/<request id>": a sealed offer opens for that request only
MAX_SEALED_CHARS = 16_384
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DEFAULT_BUDGET_MS = 1500
MAX_BUDGET_MS = 30_000
MAX_LENDERS = 32
_KIND = re.compile(r"^[a-z][a-z0-9_]{1,31}$")


@dataclass(frozen=True)
class Product:
    """What the viewer asks for: a product kind (e.g. ``car_loan``), an amount and a term."""

    kind: str
    amount: float
    term_months: int = 36

    def __post_init__(self) -> None:
        if not _KIND.match(self.kind):
            raise InvalidInput(f"product.kind {self.kind!r} must be 2-32 of a-z, 0-9, '_' (e.g. car_loan)")
        if not (isinstance(self.amount, int | float) and math.isfinite(self.amount) and self.amount > 0):
            raise InvalidInput(f"product.amount must be a positive number, got {self.amount!r}")
        if not (isinstance(self.term_months, int) and 1 <= self.term_months <= 120):
            raise InvalidInput(f"product.term_months must be an integer in 1..120, got {self.term_months!r}")

    def to_dict(self) -> dict[str, JSONValue]:
        return {"kind": self.kind, "amount": float(self.amount), "term_months": self.term_months}

    @classmethod
    def from_dict(cls, d: Mapping[str, JSONValue], where: str = "product") -> Product:
        if not isinstance(d, Mapping):
            raise InvalidInput(f"{where} must be an object with kind and amount")
        try:
            amount = d["amount"]
            if isinstance(amount, bool) or not isinstance(amount, int | float):
                raise InvalidInput(f"{where}.amount must be a number")
            term = d.get("term_months", 36)
            if isinstance(term, bool) or not isinstance(term, int):
                raise InvalidInput(f"{where}.term_months must be an integer")
            return cls(str(d["kind"]), float(amount), term)
        except KeyError as exc:
            raise InvalidInput(f"{where} needs {exc.args[0]!r}") from None


@dataclass(frozen=True)
class Quote:
    """A lender's answer: an offer (``amount`` > 0) or a decline (``None`` is used for decline)."""

    amount: float
    rate: float
    term_months: int
    valid_s: int = 1800

    def to_params(self) -> dict[str, JSONValue]:
        return {"decision": "offer", "amount": self.amount, "rate": self.rate,
                "term_months": self.term_months, "valid_s": self.valid_s}


@dataclass(frozen=True)
class Offer:
    """What the platform receives per offering lender: terms only."""

    lender: str
    product: str
    amount: float
    rate: float
    term_months: int
    valid_s: int

    def to_dict(self) -> dict[str, JSONValue]:
        return {"lender": self.lender, "product": self.product, "amount": self.amount, "rate": self.rate,
                "term_months": self.term_months, "valid_s": self.valid_s}

    @classmethod
    def from_dict(cls, d: Mapping[str, JSONValue]) -> Offer:
        try:
            return cls(str(d["lender"]), str(d["product"]), float(d["amount"]), float(d["rate"]),
                       int(d["term_months"]), int(d["valid_s"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed offer ({exc})") from None


@dataclass(frozen=True)
class SealedOffer:
    """An offer sealed by ``lender`` to the platform (:mod:`fedcore.protocol.sealing`): what the
    coordinator relays; only the platform opens it (to the terms of :meth:`Quote.to_params`)."""

    lender: str
    sealed: dict[str, str]

    @classmethod
    def check(cls, lender: str, sealed: object) -> SealedOffer:
        if (not isinstance(sealed, Mapping) or not all(isinstance(v, str) for v in sealed.values())
                or sum(len(v) for v in sealed.values()) > MAX_SEALED_CHARS or "ciphertext" not in sealed):
            raise ProtocolError(f"lender {lender!r} sent a malformed sealed offer")
        return cls(lender, {str(k): str(v) for k, v in sealed.items()})


@dataclass(frozen=True)
class Prefetched:
    """The sum the coordinator computed for a lender's standing request (:class:`Standing`), carried in
    its offer task: ``params["joint"]`` is :meth:`to_params`, the payload is the pseudonym followed by
    the ciphertext (nothing when no member contributed)."""

    standing: Standing
    response: JointResponse

    def to_params(self) -> dict[str, JSONValue]:
        r = self.response
        return {"standing": self.standing.to_params(), "request_id": r.request_id, "contributors": r.contributors,
                "missing": list(r.missing)}

    @classmethod
    def from_task(cls, d: object, ciphertext: bytes) -> Prefetched:
        """Parse the offer task's ``joint`` field and the ciphertext after the pseudonym; malformed raises."""
        if not isinstance(d, Mapping):
            raise ProtocolError("the offer task's joint sum is not an object")
        standing = Standing.from_params(d.get("standing"), "coordinator")
        missing = d.get("missing")
        contributors = d.get("contributors")
        if (not isinstance(missing, list) or not all(isinstance(m, str) for m in missing)
                or isinstance(contributors, bool) or not isinstance(contributors, int) or contributors < 0):
            raise ProtocolError("the offer task's joint sum has malformed contributors or missing parties")
        if bool(ciphertext) != (contributors > 0):
            raise ProtocolError("the offer task's joint sum does not match its contributor count")
        resp = JointResponse(str(d.get("request_id", "")), 1, standing.queries, ciphertext or None, contributors,
                             tuple(str(m) for m in missing))
        return cls(standing, resp)


def seal_purpose(request_id: str) -> str:
    return f"{SEAL_PURPOSE}/{request_id}"


SEALED_TERMS_BYTES = 256  # every sealed offer's plaintext is this long: its size tells the relay nothing


def padded_terms(quote: Quote) -> bytes:
    """The terms as JSON padded with spaces to :data:`SEALED_TERMS_BYTES` (JSON ignores the trailing
    spaces): a longer amount or rate must not give a longer ciphertext at the coordinator."""
    data = json.dumps(quote.to_params()).encode()
    if len(data) > SEALED_TERMS_BYTES:
        raise ProtocolError(f"offer terms of {len(data)} bytes are over the {SEALED_TERMS_BYTES}-byte sealed size")
    return data.ljust(SEALED_TERMS_BYTES, b" ")


def check_snapshot_date(as_of: str) -> str:
    if not isinstance(as_of, str) or not _DATE.match(as_of):
        raise InvalidInput(f"as_of must be a date YYYY-MM-DD, got {as_of!r}")
    return as_of


def offer_from_reply(lender: str, product: Product, params: Mapping[str, JSONValue]) -> Offer | SealedOffer | None:
    """A lender's task reply as an :class:`Offer`, a :class:`SealedOffer` (the terms sealed to the
    platform) or ``None`` (declined). Malformed replies raise."""
    decision = params.get("decision")
    if decision == "decline":
        return None
    if decision != "offer":
        raise ProtocolError(f"lender {lender!r} answered {decision!r}, not offer/decline")
    if "sealed" in params:
        return SealedOffer.check(lender, params["sealed"])
    try:
        amount, rate = float(params["amount"]), float(params["rate"])
        term, valid = int(params["term_months"]), int(params.get("valid_s", 1800))
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"lender {lender!r} sent a malformed offer ({exc})") from None
    if not (math.isfinite(amount) and amount > 0 and math.isfinite(rate) and 0 <= rate < 1 and term > 0):
        raise ProtocolError(f"lender {lender!r} sent offer terms out of range")
    return Offer(lender, product.kind, amount, rate, term, valid)


@dataclass(frozen=True)
class PreapprovalRequest:
    """What the platform's node sends the coordinator."""

    pseudonym: bytes
    product: Product
    lenders: tuple[str, ...]
    budget_ms: int = DEFAULT_BUDGET_MS
    # the platform's signed envelope-key announcement: lenders seal their offers to it (None: in clear)
    announcement: Mapping[str, JSONValue] | None = None

    def __post_init__(self) -> None:
        if len(self.pseudonym) != PSEUDONYM_BYTES:
            raise InvalidInput(f"pseudonym must be {PSEUDONYM_BYTES} bytes, got {len(self.pseudonym)}")
        check_lenders(self.lenders)
        if not (isinstance(self.budget_ms, int) and 50 <= self.budget_ms <= MAX_BUDGET_MS):
            raise InvalidInput(f"budget_ms must be an integer in 50..{MAX_BUDGET_MS}, got {self.budget_ms!r}")


def check_lenders(lenders: Sequence[str]) -> tuple[str, ...]:
    names = tuple(lenders)
    if not names:
        raise InvalidInput("lenders: name at least one lender taking part")
    if len(names) > MAX_LENDERS or len(set(names)) != len(names):
        raise InvalidInput(f"lenders: up to {MAX_LENDERS} distinct names, got {list(names)}")
    for n in names:
        check_name(n, "lender name")
    return names


@dataclass(frozen=True)
class PreapprovalResult:
    """What the platform receives: a request id and the offers (declines and silence are absent); from
    the coordinator, offers are ``sealed`` to the platform and its node opens them into ``offers``."""

    request_id: str
    offers: tuple[Offer, ...]
    sealed: tuple[SealedOffer, ...] = ()

    def to_dict(self) -> dict[str, JSONValue]:
        return {"request_id": self.request_id, "offers": [o.to_dict() for o in self.offers]}
