"""A party operator's offline operations on the party's home folder: make the key and CSR, install the
startup kit the admin returns. The private key is created here and never leaves this folder."""

from __future__ import annotations

import tomllib
from pathlib import Path

from fedcore.atomic_dir import building
from fedcore.config import dump_toml
from fedcore.crypto.pki import PrivateKey, cert_info, key_matches_cert, load_cert, make_csr
from fedcore.errors import AlreadyExists, InvalidInput, NotFound
from fedcore.protocol.messages import check_name

from .config import CONFIG_FILE, PartyConfig, load_party_config

CSR_FILE = "party.csr"
KIT_CONFIG = "kit.toml"


def init_home(home: Path, name: str) -> Path:
    """Create the party's key and CSR in ``home``; returns the CSR path to send to the admin."""
    check_name(name)
    if (home / CONFIG_FILE).exists():
        raise AlreadyExists(f"{home / CONFIG_FILE} exists: this folder already holds a party node")
    with building(home) as tmp:
        (tmp / CONFIG_FILE).write_text(dump_toml({"party": {"name": name}}), encoding="utf-8")
        config = load_party_config(tmp)
        key = PrivateKey.generate()
        key.save(config.tls.key)
        (tmp / CSR_FILE).write_bytes(make_csr(key, name))
    return home / CSR_FILE


def install_kit(home: Path, kit: Path) -> PartyConfig:
    """Check the admin's startup kit against this node's key and install it."""
    config = load_party_config(home)
    for f in ("ca.pem", "party.crt", KIT_CONFIG):
        if not (kit / f).is_file():
            raise NotFound(f"startup kit {kit} has no {f}")
    try:
        kit_cfg = tomllib.loads((kit / KIT_CONFIG).read_text(encoding="utf-8"))
        kit_name = kit_cfg["party"]["name"]
        address = kit_cfg["coordinator"]["address"]
        server_name = kit_cfg["coordinator"]["server_name"]
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{kit / KIT_CONFIG}: not a valid kit file ({exc})") from None
    if kit_name != config.party.name:
        raise InvalidInput(f"startup kit {kit} is for {kit_name!r}, but this node is {config.party.name!r}")
    cert_pem = (kit / "party.crt").read_bytes()
    ca_pem = (kit / "ca.pem").read_bytes()
    info = cert_info(cert_pem, str(kit / "party.crt"))
    ca = load_cert(ca_pem, str(kit / "ca.pem"))
    try:
        load_cert(cert_pem).verify_directly_issued_by(ca)
    except Exception:
        raise InvalidInput(f"{kit / 'party.crt'} was not issued by {kit / 'ca.pem'}") from None
    if info.name != config.party.name:
        raise InvalidInput(f"{kit / 'party.crt'} names {info.name!r}, not {config.party.name!r}")
    if not key_matches_cert(PrivateKey.load(config.tls.key), cert_pem):
        raise InvalidInput(f"{kit / 'party.crt'} does not match this node's key {config.tls.key}")
    config.tls.ca_cert.parent.mkdir(parents=True, exist_ok=True)
    config.tls.cert.parent.mkdir(parents=True, exist_ok=True)
    config.tls.ca_cert.write_bytes(ca_pem)
    config.tls.cert.write_bytes(cert_pem)
    raw = tomllib.loads((home / CONFIG_FILE).read_text(encoding="utf-8"))
    raw["coordinator"] = {**raw.get("coordinator", {}), "address": address, "server_name": server_name}
    (home / CONFIG_FILE).write_text(dump_toml(raw), encoding="utf-8")
    return load_party_config(home)
