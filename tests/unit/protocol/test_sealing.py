"""seal_to_peers / open_from_peer: round trip, binding to sender, recipient and purpose, tamper, and the
certificate checks that refuse a substituted, unsigned or foreign key with PermissionDenied."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives import hpke

from fedcore.crypto.envelope import EnvelopePrivateKey, InvalidEnvelope
from fedcore.crypto.pki import CertificateAuthority
from fedcore.errors import PermissionDenied
from fedcore.protocol.sealing import (
    SUITE,
    _info,
    make_identities,
    open_for,
    open_from_peer,
    seal_for,
    seal_to_peers,
    unbound_announcement,
)

CA = CertificateAuthority.create()
IDS = make_identities(["yixin", "meili", "cango"], CA)


def ann(name: str, key: EnvelopePrivateKey | None = None) -> dict[str, str]:
    return IDS[name].announcement(key)


def test_round_trip_and_what_the_relay_sees() -> None:
    secret = os.urandom(32)
    sealed = seal_to_peers(IDS["yixin"], {"meili": ann("meili"), "cango": ann("cango")}, secret, "p/run-1")
    assert set(sealed) == {"meili", "cango"}
    for name, payload in sealed.items():
        assert set(payload) == {"sender", "ciphertext", "signature", "cert"}
        ct = base64.b64decode(payload["ciphertext"])
        assert len(ct) == len(secret) + 48 and secret not in ct  # 32-byte encapsulated key + 16-byte tag
        assert open_from_peer(IDS[name], payload, "yixin", "p/run-1") == secret


def test_it_is_rfc9180_hpke_from_cryptography() -> None:
    """The ciphertext opens with cryptography's HPKE directly (no home-made construction)."""
    key = EnvelopePrivateKey.generate()
    ct = seal_for(key.public_key(), b"m", "p", "yixin", "meili")
    assert SUITE.decrypt(ct, key.raw_x25519(), info=_info("p", "yixin", "meili")) == b"m"
    assert isinstance(SUITE, hpke.Suite)


def test_bound_to_purpose_recipient_and_sender() -> None:
    payload = seal_to_peers(IDS["yixin"], {"meili": ann("meili")}, b"s", "p/run-1")["meili"]
    with pytest.raises(PermissionDenied):
        open_from_peer(IDS["meili"], payload, "yixin", "p/run-2")  # signed for another purpose
    key = EnvelopePrivateKey.generate()
    with pytest.raises(InvalidEnvelope):  # below the signature too: HPKE's info binds the purpose
        open_for(key, seal_for(key.public_key(), b"s", "p/run-1", "yixin", "meili"), "p/run-2", "yixin", "meili")
    with pytest.raises(PermissionDenied):
        open_from_peer(IDS["cango"], payload, "yixin", "p/run-1")  # signed for meili
    with pytest.raises(PermissionDenied):
        open_from_peer(IDS["meili"], payload, "cango", "p/run-1")  # not from cango


def test_every_flipped_byte_of_the_ciphertext_is_refused() -> None:
    payload = seal_to_peers(IDS["yixin"], {"meili": ann("meili")}, b"secret", "p")["meili"]
    ct = base64.b64decode(payload["ciphertext"])
    for i in range(len(ct)):
        bad = bytearray(ct)
        bad[i] ^= 1
        with pytest.raises(PermissionDenied):  # the sender's signature covers the ciphertext
            open_from_peer(IDS["meili"], {**payload, "ciphertext": base64.b64encode(bytes(bad)).decode()},
                           "yixin", "p")
    key = EnvelopePrivateKey.generate()
    raw = seal_for(key.public_key(), b"secret", "p", "a", "b")
    with pytest.raises(InvalidEnvelope):
        open_for(key, raw[:-1] + bytes([raw[-1] ^ 1]), "p", "a", "b")


def test_substituted_unsigned_or_foreign_keys_are_refused() -> None:
    mallory = EnvelopePrivateKey.generate()
    swapped = {**ann("meili"), "public": base64.b64encode(mallory.public_key().to_bytes()).decode()}
    foreign = make_identities(["meili"])["meili"].announcement()  # a valid certificate from another CA
    for bad in (swapped, unbound_announcement("meili", mallory), foreign, {**ann("cango"), "party": "meili"}):
        with pytest.raises(PermissionDenied):
            seal_to_peers(IDS["yixin"], {"meili": bad}, b"s", "p")


def test_an_envelope_the_relay_made_is_refused() -> None:
    relay = make_identities(["coordinator"], CA)["coordinator"]
    forged = seal_to_peers(relay, {"meili": ann("meili")}, b"evil", "p")["meili"]
    with pytest.raises(PermissionDenied):
        open_from_peer(IDS["meili"], {**forged, "sender": "yixin"}, "yixin", "p")
    unsigned = {k: v for k, v in forged.items() if k not in ("signature", "cert")} | {"sender": "yixin"}
    with pytest.raises(PermissionDenied):
        open_from_peer(IDS["meili"], unsigned, "yixin", "p")


def test_unbound_mode_needs_an_explicit_opt_in() -> None:
    key = EnvelopePrivateKey.generate()
    with pytest.raises(PermissionDenied):
        seal_to_peers("node-1", {"node-2": unbound_announcement("node-2", key)}, b"s", "p")
    sealed = seal_to_peers("node-1", {"node-2": unbound_announcement("node-2", key)}, b"s", "p", trust_relay=True)
    assert open_from_peer("node-2", sealed["node-2"], "node-1", "p", key, trust_relay=True) == b"s"
