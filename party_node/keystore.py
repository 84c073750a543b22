"""A party's long-lived keys beside its TLS key: the envelope key (X25519, for sealed boxes from
peers) and the federation pseudonym key (received from a peer, never from the coordinator)."""

from __future__ import annotations

from pathlib import Path

from fedcore.crypto.envelope import EnvelopePrivateKey
from fedcore.crypto.pki import PrivateKey
from fedcore.protocol.sealing import PartyIdentity

from .config import PartyConfig
from .pseudonym import PseudonymKey, default_key_path
from .store import Store


def envelope_key_path(home: Path) -> Path:
    return home / "keys" / "envelope.key"


def load_or_create_envelope_key(home: Path) -> EnvelopePrivateKey:
    path = envelope_key_path(home)
    if path.exists():
        return EnvelopePrivateKey.load(path)
    key = EnvelopePrivateKey.generate()
    key.save(path)
    return key


def party_identity(config: PartyConfig) -> PartyIdentity:
    return PartyIdentity(
        name=config.party.name,
        tls_key=PrivateKey.load(config.tls.key),
        cert_pem=config.tls.cert.read_bytes(),
        ca_pem=config.tls.ca_cert.read_bytes(),
        envelope_key=load_or_create_envelope_key(config.home),
    )


def load_pseudonym_key(home: Path) -> PseudonymKey | None:
    path = default_key_path(home)
    return PseudonymKey.load(path) if path.exists() else None


class StorePseudonymHolder:
    """Keeps the pseudonym key in ``HOME/keys/pseudonym.key`` (0600) and in the store's pseudonyms."""

    def __init__(self, store: Store, home: Path) -> None:
        self._store = store
        self._path = default_key_path(home)

    def current_key_raw(self) -> bytes | None:
        key = load_pseudonym_key(self._path.parent.parent)
        return key.export_raw() if key is not None else None

    def fingerprint(self) -> str | None:
        key = load_pseudonym_key(self._path.parent.parent)
        return key.fingerprint() if key is not None else None

    def install_key_raw(self, raw: bytes) -> tuple[str, int]:
        key = PseudonymKey.from_raw(raw)
        n = self._store.install_pseudonym_key(key)
        key.export_to_file(self._path)
        return key.fingerprint(), n


def new_pseudonym_key() -> bytes:
    return PseudonymKey.generate().export_raw()
