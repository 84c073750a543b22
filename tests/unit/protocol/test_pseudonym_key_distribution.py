"""The pseudonym key goes party to party in sealed envelopes; the coordinator only relays."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest

from fedcore.crypto.envelope import EnvelopePrivateKey
from fedcore.crypto.pki import CertificateAuthority, PrivateKey, make_csr
from fedcore.errors import InvalidInput, PartyTaskError
from fedcore.protocol.inmemory import InMemoryChannel
from fedcore.protocol.keys.coordinator import distribute_pseudonym_key
from fedcore.protocol.keys.messages import ANNOUNCE, INSTALL
from fedcore.protocol.keys.party import KeyParty
from fedcore.protocol.messages import Role, Task
from fedcore.protocol.sealing import PartyIdentity
from fedcore.protocol.tasks import HandlerRegistry


class Holder:
    def __init__(self, raw: bytes | None = None) -> None:
        self.raw = raw

    def current_key_raw(self):
        return self.raw

    def fingerprint(self):
        return hashlib.sha256(self.raw).hexdigest() if self.raw else None

    def install_key_raw(self, raw):
        self.raw = raw
        return self.fingerprint(), 0


@pytest.fixture(scope="module")
def ca():
    return CertificateAuthority.create()


def identity(ca, name, other_ca=None):
    key = PrivateKey.generate()
    _, cert = (other_ca or ca).sign_csr(make_csr(key, name))
    return PartyIdentity(name, key, cert, ca.cert_pem(), EnvelopePrivateKey.generate())


def federation(ca, holders, identities=None, wrap=None):
    ch = InMemoryChannel(record_wire=True)
    for name, holder in holders.items():
        reg = HandlerRegistry()
        ident = (identities or {}).get(name) or identity(ca, name)
        KeyParty(ident, holder, lambda: os.urandom(32)).register(reg)
        if wrap and name in wrap:
            wrap[name](reg)
        ch.add_party(name, Role.LENDER, reg)
    return ch


def test_all_parties_end_with_the_same_key_and_it_never_crosses_in_clear(ca):
    holders = {n: Holder() for n in ("yixin", "meili", "tiange")}
    ch = federation(ca, holders)
    res = distribute_pseudonym_key(ch, "k1", list(holders))
    raws = {h.raw for h in holders.values()}
    assert len(raws) == 1 and None not in raws
    key = raws.pop()
    assert res["key_fingerprint"] == hashlib.sha256(key).hexdigest()
    for rec in ch.wire_log:
        blob = repr(rec.params).encode() + rec.payload
        assert key not in blob and base64.b64encode(key) not in blob and key.hex().encode() not in blob


def test_an_existing_key_is_kept_so_pseudonyms_stay_stable(ca):
    existing = os.urandom(32)
    holders = {"yixin": Holder(), "meili": Holder(existing), "cango": Holder()}
    res = distribute_pseudonym_key(federation(ca, holders), "k2", list(holders))
    assert res["creator"] == "meili" and all(h.raw == existing for h in holders.values())


def test_parties_with_different_keys_are_refused(ca):
    holders = {"yixin": Holder(os.urandom(32)), "meili": Holder(os.urandom(32))}
    with pytest.raises(InvalidInput, match="different pseudonym keys"):
        distribute_pseudonym_key(federation(ca, holders), "k3", list(holders))


def test_a_key_substituted_by_the_relay_is_rejected(ca):
    """A coordinator that swaps a recipient's envelope key for its own gets a refusal, not the key."""
    holders = {"yixin": Holder(), "meili": Holder()}
    mallory = EnvelopePrivateKey.generate()

    def tamper(reg: HandlerRegistry) -> None:
        original = reg.get(ANNOUNCE)

        def announce(ctx, params):
            reply = original(ctx, params)
            forged = dict(reply.params)
            forged["public"] = base64.b64encode(mallory.public_key().to_bytes()).decode()
            return type(reply)(forged)

        reg._handlers[ANNOUNCE] = announce

    ch = federation(ca, holders, wrap={"meili": tamper})
    with pytest.raises(PartyTaskError, match="bad signature") as err:
        distribute_pseudonym_key(ch, "k4", ["yixin", "meili"])
    assert err.value.kind == "permission_denied"
    assert holders["meili"].raw is None


def test_an_envelope_made_by_the_relay_is_refused(ca):
    """A coordinator that seals its own key to the recipient's genuine public key is refused: the
    envelope is not signed by the sender's certificate."""
    from fedcore.protocol.sealing import seal_to_peers

    holders = {"yixin": Holder(os.urandom(32)), "meili": Holder()}
    ch = federation(ca, holders)
    ann = dict(ch.run("meili", Task(ANNOUNCE)).params)
    ann.pop("key_fingerprint")
    relay = identity(ca, "coordinator")  # a valid certificate, but not the sender's
    forged = seal_to_peers(relay, {"meili": ann}, os.urandom(32), "pseudonym-key/k7")["meili"]
    forged["sender"] = "yixin"
    with pytest.raises(PartyTaskError) as err:
        ch.run("meili", Task(INSTALL, {"sender": "yixin", "envelope": forged}, run_id="k7"))
    assert err.value.kind == "permission_denied"
    assert holders["meili"].raw is None


def test_certificate_from_another_ca_is_rejected(ca):
    rogue = CertificateAuthority.create()
    holders = {"yixin": Holder(), "meili": Holder()}
    ch = federation(ca, holders, identities={"meili": identity(ca, "meili", other_ca=rogue)})
    with pytest.raises(PartyTaskError, match="not from this federation's CA"):
        distribute_pseudonym_key(ch, "k5", ["yixin", "meili"])


def test_envelope_for_someone_else_cannot_be_opened(ca):
    holders = {"yixin": Holder(os.urandom(32)), "meili": Holder(), "cango": Holder()}
    ch = federation(ca, holders)
    anns = {p: dict(ch.run(p, Task(ANNOUNCE)).params) for p in holders}
    sealed = ch.run("yixin", Task("pseudonym.seal", {"recipients": {"meili": anns["meili"]}}))
    env = sealed.params["envelopes"]["meili"]
    with pytest.raises(PartyTaskError, match=r"pseudonym\.install"):
        ch.run("cango", Task(INSTALL, {"sender": "yixin", "envelope": env}))
    assert holders["cango"].raw is None
