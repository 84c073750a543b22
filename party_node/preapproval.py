"""Pre-approval at a party node (protocol :mod:`fedcore.protocol.preapproval`).

Lender side: :class:`JointOfferSource` scores the viewer's pseudonym jointly (the lender's
:class:`~party_node.scoring.ScoringService` and its requester; a viewer unknown to the lender scores at
the population mean of its features, i.e. on the others' data) and prices it with the lender's
:class:`~party_node.pricing.PricingPolicy` (``HOME/pricing.toml``). :func:`register_preapproval_handlers`
adds the ``preapproval.offer`` handler when the lender has a policy.

Platform side: :class:`PreapprovalService` checks the viewer's consent for ``preapproval``,
pseudonymizes the id, audits, and asks the coordinator (``Preapproval/Request``) through a
:class:`PreapprovalGateway`. Its settings live in ``HOME/preapproval.json`` (local API addresses, the
id kind, the default budget).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import grpc
import numpy as np
from fedcredit.v1 import preapproval_pb2, preapproval_pb2_grpc

from fedcore.errors import ConfigError, FedcreditError, InvalidInput, NotFound, PermissionDenied
from fedcore.grpc_options import CLIENT_OPTIONS, secure_target_options
from fedcore.protocol.messages import JSONValue
from fedcore.protocol.preapproval.messages import (
    DEFAULT_BUDGET_MS,
    PURPOSE,
    Offer,
    PreapprovalRequest,
    PreapprovalResult,
    Prefetched,
    Product,
    Quote,
    SealedOffer,
    check_lenders,
    offer_from_reply,
    seal_purpose,
)
from fedcore.protocol.preapproval.party import PreapprovalLender
from fedcore.protocol.scoring.groups import Standing
from fedcore.protocol.scoring.messages import QUERIES, ModelSlice
from fedcore.protocol.scoring.requester import sigmoid
from fedcore.protocol.sealing import PartyIdentity, open_from_peer
from fedcore.protocol.tasks import HandlerRegistry
from fedcore.wire.errors import from_rpc_error

from .audit import AuditLog
from .pricing import POLICY_FILE, PricingPolicy, load_policy
from .schema import IdKind, normalize_id
from .scoring import ScoringService
from .store import Store

# ---- lender side -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JointScore:
    """One subject's joint score at the lender (stays at the lender)."""

    prob_default: float
    blacklist_hits: int
    active_loans: int
    own_data: bool
    contributors: int


def joint_score(service: ScoringService, pseudonym: bytes, model_id: str | None, timeout_s: float,
                caller: str, group: str = "", prefetched: Prefetched | None = None) -> JointScore:
    """Score one pseudonym jointly: own features from the store (the mean if unknown here) plus the
    consortium's encrypted sum. Audited at the lender as a ``score_request`` like any other. ``group``:
    the pre-approval this score is for (the coordinator may group its lenders' scores). ``prefetched``:
    the sum the coordinator made for the lender's standing request, used if it is for this model and the
    current key (audited with ``prefetched``), else the lender asks as usual."""
    sl = service.model(model_id)
    x = sl.mean.copy()
    own = False
    rid = int(service.store.row_ids_for_pseudonyms([pseudonym])[0])
    if rid >= 0:
        rids, mat = service._own_matrix(sl)
        pos = int(np.searchsorted(rids, rid)) if len(rids) else 0
        if len(rids) and pos < len(rids) and rids[pos] == rid:
            x, own = mat[pos].copy(), True
    logit = float(sl.intercept or 0.0) + float(sl.contributions(x[None, :]).sum())
    record: dict[str, JSONValue] = {"caller": caller, "model_id": sl.model_id, "model_version": sl.version,
                                    "queries": list(QUERIES), "n": 1, "invalid": 0,
                                    "pseudonyms_sha256": hashlib.sha256(pseudonym).hexdigest()}
    ahead = _standing(service, sl)
    key = None
    if prefetched is not None and prefetched.standing == ahead:
        key = service.requester.keys.by_fingerprint(ahead.fingerprint)
    try:
        if key is not None and prefetched is not None:
            out = service.requester.decode(prefetched.response, key, 1, QUERIES, sl.version)
            record["prefetched"] = True
        else:
            out = service.requester.query(pseudonym, model_id=sl.model_id, model_version=sl.version,
                                          queries=QUERIES, allow_partial=True, timeout_s=max(0.05, timeout_s),
                                          group=group)
    except FedcreditError as exc:
        service.audit.append("score_request", {**record, "outcome": exc.code})
        raise
    service.audit.append("score_request", {**record, "outcome": "ok", "request_id": out.request_id,
                                           "contributors": out.contributors, "missing": list(out.missing)})
    if out.external_logit is not None:
        logit += float(out.external_logit[0])
    bl = int(out.blacklist_hits[0]) if out.blacklist_hits is not None else 0
    loans = int(out.active_loans[0]) if out.active_loans is not None else 0
    return JointScore(float(sigmoid(np.array([logit]))[0]), bl, loans, own, out.contributors)


def _standing(service: ScoringService, sl: ModelSlice) -> Standing:
    """The joint request this lender makes for a pre-approval now (model, version, queries, key)."""
    return Standing(sl.model_id, sl.version, QUERIES, service.requester.keys.for_values(len(QUERIES)).fingerprint())


class JointOfferSource:
    """The lender's :class:`~fedcore.protocol.preapproval.party.OfferSource`: joint score + pricing."""

    def __init__(self, service: ScoringService, policy: PricingPolicy) -> None:
        self.service = service
        self.policy = policy

    def quote(self, pseudonym: bytes, product: Product, request_id: str, deadline: float,
              prefetched: Prefetched | None = None) -> Quote | None:
        if product.kind not in self.policy.products:
            return None  # not a product this lender offers: no need to score
        timeout = deadline - time.monotonic() - 0.05
        s = joint_score(self.service, pseudonym, self.policy.model_id, timeout, f"preapproval {request_id}",
                        group=request_id, prefetched=prefetched if self.policy.prefetch else None)
        return self.policy.decide(product, s.prob_default, s.blacklist_hits, s.active_loans)

    def standing(self, product: Product) -> Standing | None:
        """The coordinator may score the next viewer for ``product``'s kind ahead for this lender: only
        for a kind it offers, and only if its policy allows prefetch."""
        if not self.policy.prefetch or product.kind not in self.policy.products:
            return None
        return _standing(self.service, self.service.model(self.policy.model_id))


def register_preapproval_handlers(registry: HandlerRegistry, home: Path, service_factory: Any,
                                  identity: PartyIdentity | None = None) -> None:
    """Add ``preapproval.offer``. The policy is ``HOME/pricing.toml``, re-read when it changes (a lender
    can reprice without a restart); a malformed one fails here, at start-up, and at each request after
    an edit. Without a policy the lender answers ``not_found`` and is left out of every offer list.

    ``service_factory()`` builds the lender's :class:`ScoringService` (lazily, on the first request)."""
    path = home / POLICY_FILE
    load_policy(home)  # validate now: a malformed policy stops the node at start-up
    holder: list[ScoringService] = []
    cache: dict[float, PricingPolicy] = {}

    class _Reloading:
        def quote(self, pseudonym: bytes, product: Product, request_id: str, deadline: float,
                  prefetched: Prefetched | None = None) -> Quote | None:
            return self.source().quote(pseudonym, product, request_id, deadline, prefetched)

        def standing(self, product: Product) -> Standing | None:
            return self.source().standing(product)

        def source(self) -> JointOfferSource:
            try:
                mtime = path.stat().st_mtime
            except OSError:
                raise NotFound("this lender has no pricing policy (HOME/pricing.toml)") from None
            if mtime not in cache:
                pol = load_policy(home)
                if pol is None:
                    raise NotFound("this lender has no pricing policy (HOME/pricing.toml)")
                cache.clear()
                cache[mtime] = pol
            if not holder:
                holder.append(service_factory())
            return JointOfferSource(holder[0], cache[mtime])

    PreapprovalLender(_Reloading(), AuditLog.for_home(home), identity).register(registry)


# ---- platform side ---------------------------------------------------------------------------------------


class PreapprovalGateway(Protocol):
    def preapprove(self, request: PreapprovalRequest) -> PreapprovalResult: ...

    def announce_snapshot(self, as_of: str) -> int: ...


def product_msg(p: Product) -> preapproval_pb2.ProductMsg:
    return preapproval_pb2.ProductMsg(kind=p.kind, amount=p.amount, term_months=p.term_months)


def product_from_msg(m: preapproval_pb2.ProductMsg) -> Product:
    return Product(m.kind, float(m.amount), int(m.term_months) or 36)


def result_to_msg(r: PreapprovalResult) -> preapproval_pb2.PreapprovalReply:
    return preapproval_pb2.PreapprovalReply(request_id=r.request_id, offers=[
        preapproval_pb2.OfferMsg(lender=o.lender, product=o.product, amount=o.amount, rate=o.rate,
                                 term_months=o.term_months, valid_s=o.valid_s) for o in r.offers],
        sealed=[preapproval_pb2.SealedOfferMsg(lender=s.lender, sealed=json.dumps(s.sealed)) for s in r.sealed])


def result_from_msg(m: preapproval_pb2.PreapprovalReply) -> PreapprovalResult:
    sealed = []
    for s in m.sealed:
        try:
            sealed.append(SealedOffer.check(s.lender, json.loads(s.sealed)))
        except ValueError:
            sealed.append(SealedOffer(s.lender, {}))  # opens to nothing: dropped by the platform
    return PreapprovalResult(m.request_id, tuple(
        Offer(o.lender, o.product, o.amount, o.rate, o.term_months, o.valid_s) for o in m.offers), tuple(sealed))


class GrpcPreapprovalGateway:
    """Calls the coordinator's ``Preapproval/Request`` with the platform's mTLS certificate."""

    def __init__(self, address: str, server_name: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
        creds = grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem)
        options = [*CLIENT_OPTIONS, *secure_target_options(server_name)]
        self._channel = grpc.secure_channel(address, creds, options=options)
        self._stub = preapproval_pb2_grpc.PreapprovalStub(self._channel)

    def preapprove(self, request: PreapprovalRequest) -> PreapprovalResult:
        ann = json.dumps(dict(request.announcement)) if request.announcement is not None else ""
        msg = preapproval_pb2.PreapprovalRequest(pseudonym=request.pseudonym, product=product_msg(request.product),
                                                 lenders=list(request.lenders), budget_ms=request.budget_ms,
                                                 announcement=ann)
        try:
            return result_from_msg(self._stub.Request(msg, timeout=request.budget_ms / 1000.0 + 5.0))
        except grpc.RpcError as err:
            raise from_rpc_error(err, "pre-approval request") from None

    def announce_snapshot(self, as_of: str) -> int:
        try:
            reply = self._stub.AnnounceSnapshot(preapproval_pb2.SnapshotAnnouncement(as_of=as_of), timeout=30.0)
        except grpc.RpcError as err:
            raise from_rpc_error(err, "snapshot announcement") from None
        return int(reply.lenders)

    def close(self) -> None:
        self._channel.close()


SETTINGS_FILE = "preapproval.json"


@dataclass(frozen=True)
class PreapprovalSettings:
    id_kind: str = IdKind.PHONE.value
    budget_ms: int = DEFAULT_BUDGET_MS
    grpc_listen: str = ""  # the platform application's local API (empty: off)
    http_listen: str = ""

    @classmethod
    def load(cls, home: Path) -> PreapprovalSettings | None:
        path = home / SETTINGS_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from None
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or set(data) - known:
            raise ConfigError(f"{path}: must be an object with fields among {sorted(known)}")
        st = cls(**data)
        try:
            IdKind(st.id_kind)
        except ValueError:
            raise ConfigError(f"{path}: id_kind {st.id_kind!r} is not phone, national_id or opaque") from None
        if not isinstance(st.budget_ms, int) or not 50 <= st.budget_ms <= 30_000:
            raise ConfigError(f"{path}: budget_ms must be an integer in 50..30000")
        return st


class PreapprovalService:
    """The platform's entry point: consent check, pseudonym, audit, coordinator request; offers only.

    With an ``identity`` (a party node always has one) the request carries the platform's signed
    envelope key and the lenders seal their offers to it; this service opens them (an offer that does
    not open, or whose terms are malformed, is dropped and audited)."""

    def __init__(self, store: Store, home: Path, gateway: PreapprovalGateway,
                 settings: PreapprovalSettings | None = None, audit: AuditLog | None = None,
                 identity: PartyIdentity | None = None) -> None:
        self.store = store
        self.gateway = gateway
        self.settings = settings or PreapprovalSettings()
        self.audit = audit or AuditLog.for_home(home)
        self.identity = identity
        self._announcement = identity.announcement() if identity is not None else None

    def preapprove(self, viewer_id: str, product: Product, lenders: list[str] | tuple[str, ...],
                   id_kind: str = "", budget_ms: int = 0) -> PreapprovalResult:
        kind = id_kind or self.settings.id_kind
        try:
            IdKind(kind)
        except ValueError:
            raise InvalidInput(f"id_kind {kind!r} is not phone, national_id or opaque") from None
        names = check_lenders(lenders)
        norm = normalize_id(viewer_id, kind)
        if norm is None:
            raise InvalidInput(f"viewer_id is not a valid {kind} id")
        key = self.store.pseudonym_key
        if key is None:
            raise NotFound("no pseudonym key is installed at this node (run the key distribution first)")
        pseudonym = key.pseudonymize([norm], kind)[0]
        record: dict[str, JSONValue] = {"pseudonym_sha256": hashlib.sha256(pseudonym).hexdigest(),
                                        "product": product.to_dict(), "lenders": list(names)}
        rid = int(self.store.row_ids_for([norm], kind)[0])
        if rid < 0 or not self.store.has_consent(rid, PURPOSE):
            self.audit.append("preapproval_request", {**record, "outcome": "no_consent"})
            raise PermissionDenied("the viewer has no recorded consent for purpose 'preapproval'")
        req = PreapprovalRequest(pseudonym, product, names, budget_ms or self.settings.budget_ms, self._announcement)
        try:
            result = self.gateway.preapprove(req)
        except FedcreditError as exc:
            self.audit.append("preapproval_request", {**record, "outcome": exc.code})
            raise
        offers, bad = self._open(result, product)
        self.audit.append("preapproval_request", {**record, "outcome": "ok", "request_id": result.request_id,
                                                  "offers": [o.lender for o in offers],
                                                  **({"unopened": bad} if bad else {})})
        return PreapprovalResult(result.request_id, offers)

    def _open(self, result: PreapprovalResult, product: Product) -> tuple[tuple[Offer, ...], list[str]]:
        """The offers in clear: the relayed sealed ones opened (sender checked) and their terms checked."""
        offers, bad = list(result.offers), []
        for s in result.sealed:
            try:
                if self.identity is None:
                    raise PermissionDenied("sealed offer but no identity to open it with")
                terms = json.loads(open_from_peer(self.identity, s.sealed, s.lender, seal_purpose(result.request_id)))
                offer = offer_from_reply(s.lender, product, terms)
            except (FedcreditError, ValueError):
                bad.append(s.lender)
                continue
            if isinstance(offer, Offer):
                offers.append(offer)
        return tuple(offers), bad

    def announce_snapshot(self, as_of: str) -> int:
        """Tell the lenders (through the coordinator) that a snapshot dated ``as_of`` is loaded here."""
        n = self.gateway.announce_snapshot(as_of)
        self.audit.append("snapshot_announce", {"as_of": as_of, "lenders": n})
        return n


def build_platform_service(config: Any, store: Store, settings: PreapprovalSettings) -> PreapprovalService:
    tls = config.tls
    gateway = GrpcPreapprovalGateway(config.coordinator.address, config.coordinator.server_name,
                                     tls.ca_cert.read_bytes(), tls.cert.read_bytes(), tls.key.read_bytes())
    from .keystore import party_identity

    return PreapprovalService(store, config.home, gateway, settings, identity=party_identity(config))
