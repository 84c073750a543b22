"""Distributing the federation's pseudonym key party to party, through the coordinator, which never
holds it.

Every party has a long-lived X25519 envelope key (``HOME/keys/envelope.key``) and announces its public
half signed with its TLS key, with its certificate attached; peers check the certificate against the
federation CA and the name, so a relaying coordinator cannot substitute a key without the CA's key
(see docs/threat_model.md for the admin-holds-the-CA caveat and the fingerprint check).

Messages::

    coordinator -> each party   keys.announce       party -> {envelope public key, signature, certificate,
                                                             fingerprint of its pseudonym key if it has one}
    coordinator -> creator      pseudonym.seal      the others' announcements -> one sealed envelope each
    coordinator -> each other   pseudonym.install   the creator's announcement + its envelope

The creator is a party that already holds the key (so pseudonyms stay stable when a party joins), or
the first party. Envelopes are sealed in auth mode (the creator's envelope key is mixed in) and bound to
(sender, recipient, "pseudonym-key").

**What each side learns**: parties learn the key (that is the point) and each other's public keys;
the coordinator learns public keys, certificates, envelope sizes and the key's fingerprint (a SHA-256
of the key, which does not help compute pseudonyms); an observer learns sizes.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fedcore.crypto.envelope import EnvelopeAad, EnvelopePrivateKey, EnvelopePublicKey, open_sealed, seal
from fedcore.crypto.pki import PrivateKey, sign_statement, verify_statement
from fedcore.errors import InvalidInput, ProtocolError
from fedcore.protocol.channel import PartyChannel
from fedcore.protocol.messages import JSONValue, Task, TaskReply
from fedcore.protocol.tasks import HandlerRegistry, TaskContext

log = logging.getLogger(__name__)

ANNOUNCE, SEAL, INSTALL = "keys.announce", "pseudonym.seal", "pseudonym.install"
ENVELOPE_KEY_CONTEXT = "envelope-key"
PURPOSE = "pseudonym-key"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: JSONValue, what: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (ValueError, TypeError):
        raise ProtocolError(f"{what} is not base64") from None


@dataclass(frozen=True)
class PartyIdentity:
    """What a party needs to take part: its name, TLS key and certificate, the CA, its envelope key."""

    name: str
    tls_key: PrivateKey
    cert_pem: bytes
    ca_pem: bytes
    envelope_key: EnvelopePrivateKey

    def announcement(self) -> dict[str, str]:
        pub = self.envelope_key.public_key().to_bytes()
        return {
            "party": self.name,
            "public": _b64(pub),
            "signature": _b64(sign_statement(self.tls_key, ENVELOPE_KEY_CONTEXT, self.name, pub)),
            "cert": self.cert_pem.decode(),
        }

    def verify(self, ann: Mapping[str, JSONValue], expected: str) -> EnvelopePublicKey:
        """A peer's envelope public key, if its announcement checks out against our CA."""
        if not isinstance(ann, Mapping) or ann.get("party") != expected:
            raise ProtocolError(f"announcement for {expected!r} is missing or names someone else")
        pub = _unb64(ann.get("public"), "envelope public key")
        verify_statement(self.ca_pem, str(ann.get("cert", "")).encode(), expected, ENVELOPE_KEY_CONTEXT, pub,
                         _unb64(ann.get("signature"), "signature"))
        return EnvelopePublicKey.from_bytes(pub)


class PseudonymKeyHolder(Protocol):
    """Where a party keeps its pseudonym key (the store recomputes pseudonyms on install)."""

    def current_key_raw(self) -> bytes | None: ...

    def install_key_raw(self, raw: bytes) -> tuple[str, int]:
        """Install the key; return (fingerprint, subjects re-pseudonymized)."""
        ...

    def fingerprint(self) -> str | None: ...


class KeyParty:
    def __init__(self, identity: PartyIdentity, holder: PseudonymKeyHolder,
                 new_key: Callable[[], bytes]) -> None:
        self._id = identity
        self._holder = holder
        self._new_key = new_key

    def register(self, registry: HandlerRegistry) -> None:
        registry.register(ANNOUNCE, self._announce)
        registry.register(SEAL, self._seal)
        registry.register(INSTALL, self._install)

    def _announce(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        return TaskReply({**self._id.announcement(), "key_fingerprint": self._holder.fingerprint() or ""})

    def _seal(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        recipients = params.get("recipients")
        if not isinstance(recipients, Mapping):
            raise InvalidInput("pseudonym.seal needs a map of recipients")
        raw = self._holder.current_key_raw()
        if raw is None:
            raw = self._new_key()
            fp, n = self._holder.install_key_raw(raw)
            log.info("created the federation pseudonym key %s (%d subjects)", fp[:16], n)
        envelopes = {}
        for name, ann in recipients.items():
            pub = self._id.verify(ann, str(name))
            aad = EnvelopeAad(sender=self._id.name, recipient=str(name), purpose=PURPOSE)
            envelopes[str(name)] = _b64(seal(pub, raw, aad, sender_key=self._id.envelope_key))
        return TaskReply({"envelopes": envelopes, "key_fingerprint": self._holder.fingerprint() or ""})

    def _install(self, ctx: TaskContext, params: Mapping[str, JSONValue]) -> TaskReply:
        sender_ann = params.get("sender")
        if not isinstance(sender_ann, Mapping):
            raise InvalidInput("pseudonym.install needs the sender's announcement")
        sender = str(sender_ann.get("party", ""))
        sender_pub = self._id.verify(sender_ann, sender)
        aad = EnvelopeAad(sender=sender, recipient=self._id.name, purpose=PURPOSE)
        raw = open_sealed(self._id.envelope_key, _unb64(params.get("envelope"), "envelope"), aad,
                          sender_pub=sender_pub)
        fp, n = self._holder.install_key_raw(raw)
        return TaskReply({"key_fingerprint": fp, "subjects": n})


def distribute_pseudonym_key(channel: PartyChannel, run_id: str, parties: list[str],
                             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Make sure every party in ``parties`` holds the same pseudonym key."""
    say = progress or (lambda m: None)
    if len(set(parties)) != len(parties) or len(parties) < 2:
        raise InvalidInput("pseudonym key distribution needs at least two distinct parties")
    anns = {p: dict(r.params) for p, r in
            channel.run_all({p: Task(ANNOUNCE, {}, run_id=run_id, timeout_s=30) for p in parties}).items()}
    held = {p: str(a.pop("key_fingerprint", "")) for p, a in anns.items()}
    fingerprints = {fp for fp in held.values() if fp}
    if len(fingerprints) > 1:
        raise InvalidInput("parties hold different pseudonym keys: "
                           + ", ".join(f"{p} {fp[:12]}" for p, fp in held.items() if fp))
    creator = next((p for p in parties if held[p]), parties[0])
    others = [p for p in parties if p != creator]
    say(f"{creator} seals the pseudonym key for {', '.join(others)}")
    sealed = channel.run(creator, Task(SEAL, {"recipients": {p: anns[p] for p in others}},
                                       run_id=run_id, timeout_s=120))
    envelopes = sealed.params.get("envelopes")
    if not isinstance(envelopes, Mapping) or set(envelopes) != set(others):
        raise ProtocolError(f"{creator} did not seal an envelope for every party")
    fp = str(sealed.params.get("key_fingerprint", ""))
    results = channel.run_all({p: Task(INSTALL, {"sender": anns[creator], "envelope": envelopes[p]},
                                       run_id=run_id, timeout_s=600) for p in others})
    for p, r in results.items():
        if r.params.get("key_fingerprint") != fp:
            raise ProtocolError(f"{p} installed a key with another fingerprint")
    say(f"all {len(parties)} parties hold pseudonym key {fp[:16]}")
    return {"creator": creator, "parties": parties, "key_fingerprint": fp}
