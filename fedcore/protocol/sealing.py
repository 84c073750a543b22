"""The one way a protocol hands a secret to peers through a coordinator that must only relay it.

Every protocol that relays a secret (the pseudonym key, horizontal training's CKKS secret context,
vertical training's lenders' seed and sealed ciphertexts) uses :func:`seal_to_peers` and
:func:`open_from_peer`; nothing else seals secrets between parties.

1. Each recipient *announces* an X25519 public key (its long-lived envelope key, or a fresh one per
   run) signed with its TLS private key, its certificate attached (:meth:`PartyIdentity.announcement`).
2. The sender checks each announcement against the federation CA certificate and the name it expects
   (:func:`verify_announcement`), then seals with HPKE (RFC 9180, base mode, DHKEM(X25519,
   HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305; ``cryptography``'s implementation). The HPKE ``info``
   binds sender, recipient and purpose (which includes the run id). The sender signs
   ``recipient || ciphertext`` with its TLS key, so the recipient knows who made the secret.
3. The recipient checks the sender's signature and certificate, then opens.

``trust_relay=True`` (with a bare name instead of a :class:`PartyIdentity`) skips the certificate
checks: only for Flower's own deployment (``flwr run``), where parties hold no fedcredit certificate and
the operator opts in per node (``unbound-keys``); a fedcredit party node never does.

A key or envelope a relaying coordinator substituted, an unsigned announcement, a certificate from
another CA or for another name: all raise :class:`~fedcore.errors.PermissionDenied` (code
``permission_denied``). A ciphertext that does not open raises
:class:`~fedcore.crypto.envelope.InvalidEnvelope`.

**What each side learns**: the recipient learns the secret and that the named sender made it; the
coordinator learns public keys, certificates, signatures, ciphertext sizes (secret + 48 bytes) and who
sends to whom. Caveat (docs/threat_model.md): whoever holds the CA key can issue certificates and so
substitute keys.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from fedcore.crypto.envelope import EnvelopePrivateKey, EnvelopePublicKey, InvalidEnvelope
from fedcore.crypto.pki import CertificateAuthority, PrivateKey, sign_statement, verify_statement
from fedcore.errors import InvalidInput, PermissionDenied, ProtocolError
from fedcore.protocol.messages import JSONValue

__all__ = [
    "PartyIdentity",
    "make_identities",
    "open_for",
    "open_from_peer",
    "seal_for",
    "seal_to_peers",
    "unbound_announcement",
    "verify_announcement",
]

ANNOUNCE_CONTEXT = "envelope-key"
SEAL_CONTEXT = "sealed"
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(value: JSONValue, what: str) -> bytes:
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

    def announcement(self, key: EnvelopePrivateKey | None = None) -> dict[str, str]:
        """The public half of ``key`` (default: the long-lived envelope key), signed with the TLS key."""
        pub = (key or self.envelope_key).public_key().to_bytes()
        return {
            "party": self.name,
            "public": b64(pub),
            "signature": b64(sign_statement(self.tls_key, ANNOUNCE_CONTEXT, self.name, pub)),
            "cert": self.cert_pem.decode(),
        }

    def verify(self, ann: Mapping[str, JSONValue], expected: str) -> EnvelopePublicKey:
        return verify_announcement(self.ca_pem, ann, expected)


def unbound_announcement(name: str, key: EnvelopePrivateKey) -> dict[str, str]:
    """An announcement bound to nothing (``trust_relay`` deployments only)."""
    return {"party": name, "public": b64(key.public_key().to_bytes())}


def verify_announcement(ca_pem: bytes | None, ann: Mapping[str, JSONValue], expected: str) -> EnvelopePublicKey:
    """``expected``'s public key from its announcement; PermissionDenied unless its certificate (from
    ``ca_pem``, for ``expected``) signed it."""
    if not isinstance(ann, Mapping) or ann.get("party") != expected:
        raise PermissionDenied(f"key announcement for {expected!r} is missing or names someone else")
    if ca_pem is None:  # trust_relay
        return EnvelopePublicKey.from_bytes(unb64(ann.get("public"), "envelope public key"))
    if not ann.get("signature") or not ann.get("cert"):
        raise PermissionDenied(f"key announcement of {expected!r} is not signed")
    pub = unb64(ann.get("public"), "envelope public key")
    try:
        verify_statement(ca_pem, str(ann["cert"]).encode(), expected, ANNOUNCE_CONTEXT, pub,
                         unb64(ann["signature"], "signature"))
    except InvalidInput as e:
        raise PermissionDenied(f"key announcement of {expected!r} refused: {e}") from None
    return EnvelopePublicKey.from_bytes(pub)


def _info(purpose: str, sender: str, recipient: str) -> bytes:
    return b"\x00".join((b"fedcredit/seal/v1", purpose.encode(), sender.encode(), recipient.encode()))


def seal_for(pub: EnvelopePublicKey, data: bytes, purpose: str, sender: str, recipient: str) -> bytes:
    """HPKE to a key already verified with :func:`verify_announcement` (bulk data of a session whose keys
    were bound at its start; :func:`seal_to_peers` for secrets)."""
    raw = X25519PublicKey.from_public_bytes(pub.to_bytes())
    return SUITE.encrypt(data, raw, info=_info(purpose, sender, recipient))


def open_for(key: EnvelopePrivateKey, data: bytes, purpose: str, sender: str, recipient: str) -> bytes:
    return _open(key, data, _info(purpose, sender, recipient))


def seal_to_peers(identity: PartyIdentity | str, announcements: Mapping[str, Mapping[str, JSONValue]],
                  secret: bytes, purpose: str, *, trust_relay: bool = False) -> dict[str, dict[str, str]]:
    """Seal ``secret`` to each named peer whose announcement checks out; one sealed payload per peer.

    ``purpose`` names the protocol step and run (e.g. ``"pseudonym-key/run-1"``): a payload does not open
    for another purpose, sender or recipient."""
    me = _check_mode(identity, trust_relay)
    out: dict[str, dict[str, str]] = {}
    for name, ann in announcements.items():
        ca = identity.ca_pem if isinstance(identity, PartyIdentity) else None
        pub = verify_announcement(ca, ann, str(name))
        ct = seal_for(pub, secret, purpose, me, str(name))
        out[str(name)] = {"sender": me, "ciphertext": b64(ct)}
        if isinstance(identity, PartyIdentity):
            sig = sign_statement(identity.tls_key, f"{SEAL_CONTEXT}:{purpose}", me, str(name).encode() + b"\x00" + ct)
            out[str(name)] |= {"signature": b64(sig), "cert": identity.cert_pem.decode()}
    return out


def _check_mode(identity: PartyIdentity | str, trust_relay: bool) -> str:
    if isinstance(identity, PartyIdentity):
        return identity.name
    if not trust_relay:
        raise PermissionDenied("sealing to peers needs this party's certificate (or an explicit trust_relay)")
    return identity


def open_from_peer(identity: PartyIdentity | str, sealed: Mapping[str, JSONValue], sender: str, purpose: str,
                   key: EnvelopePrivateKey | None = None, *, trust_relay: bool = False) -> bytes:
    """Open a payload :func:`seal_to_peers` made for us; PermissionDenied unless ``sender`` signed it."""
    me = _check_mode(identity, trust_relay)
    if not isinstance(sealed, Mapping) or sealed.get("sender") != sender:
        raise PermissionDenied(f"sealed payload does not come from {sender!r}")
    ct = unb64(sealed.get("ciphertext"), "sealed ciphertext")
    if not isinstance(identity, PartyIdentity):
        if key is None:
            raise InvalidInput("open_from_peer without a PartyIdentity needs the key")
        return _open(key, ct, _info(purpose, sender, me))
    if not sealed.get("signature") or not sealed.get("cert"):
        raise PermissionDenied(f"sealed payload from {sender!r} is not signed")
    try:
        verify_statement(identity.ca_pem, str(sealed["cert"]).encode(), sender, f"{SEAL_CONTEXT}:{purpose}",
                         identity.name.encode() + b"\x00" + ct, unb64(sealed["signature"], "signature"))
    except InvalidInput as e:
        raise PermissionDenied(f"sealed payload from {sender!r} refused: {e}") from None
    return _open(key or identity.envelope_key, ct, _info(purpose, sender, me))


def _open(key: EnvelopePrivateKey, ct: bytes, info: bytes) -> bytes:
    try:
        return SUITE.decrypt(ct, key.raw_x25519(), info=info)
    except (InvalidTag, ValueError):
        raise InvalidEnvelope() from None


def make_identities(names: list[str], ca: CertificateAuthority | None = None) -> dict[str, PartyIdentity]:
    """Identities from ``ca`` (default: a fresh one), for in-process federations (tests, benchmarks)."""
    from fedcore.crypto.pki import make_csr

    ca = ca or CertificateAuthority.create()
    out = {}
    for name in names:
        key = PrivateKey.generate()
        _, cert = ca.sign_csr(make_csr(key, name))
        out[name] = PartyIdentity(name, key, cert, ca.cert_pem(), EnvelopePrivateKey.generate())
    return out
