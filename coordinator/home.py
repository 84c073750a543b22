"""The coordinator admin's offline operations on the coordinator's home folder: create the federation
(CA, server and admin certificates, state), admit a party from its CSR into a startup kit, revoke.

Each operation either completes or leaves the home folder and the registry as they were.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fedcore.atomic_dir import building
from fedcore.config import dump_toml
from fedcore.crypto.pki import CertificateAuthority, PrivateKey, cert_info
from fedcore.errors import AlreadyExists, InvalidInput, NotFound
from fedcore.protocol.messages import PARTY_ROLES, Role

from .config import CONFIG_FILE, CoordinatorConfig, load_coordinator_config
from .state import StateStore

KIT_CONFIG = "kit.toml"
ADMIN_NAME = "admin"


def init_home(
    home: Path,
    *,
    listen: str = "127.0.0.1:7443",
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    name: str = "coordinator",
    state_url: str = "",
) -> CoordinatorConfig:
    """Create a new federation in ``home`` (absent or empty); all or nothing."""
    if (home / CONFIG_FILE).exists():
        raise AlreadyExists(f"{home / CONFIG_FILE} exists: this folder already holds a coordinator")
    with building(home) as tmp:
        (tmp / CONFIG_FILE).write_text(
            dump_toml(
                {"coordinator": {"name": name, "listen": listen, "hosts": list(hosts)}
                 | ({"state_url": state_url} if state_url else {})}
            ),
            encoding="utf-8",
        )
        config = load_coordinator_config(tmp)
        tls = config.tls
        ca = CertificateAuthority.create()
        ca.save(tls.ca_key, tls.ca_cert)
        server_key = PrivateKey.generate()
        server_key.save(tls.key)
        tls.cert.write_bytes(ca.issue(name, server_key.public_key(), server_hosts=hosts, valid_days=825))
        admin_key = PrivateKey.generate()
        admin_key.save(tls.admin_key)
        admin_pem = ca.issue(ADMIN_NAME, admin_key.public_key())
        tls.admin_cert.write_bytes(admin_pem)
        state = StateStore(config.coordinator.registry())
        _register(state, ADMIN_NAME, Role.ADMIN, admin_pem, actor="init")
        state.close()
    return load_coordinator_config(home)


def _register(state: StateStore, name: str, role: Role, pem: bytes, actor: str) -> None:
    info = cert_info(pem)
    state.admit(
        name,
        role,
        serial=info.serial,
        fingerprint=info.fingerprint,
        not_before=info.not_before.timestamp(),
        not_after=info.not_after.timestamp(),
        actor=actor,
    )


@dataclass(frozen=True)
class Kit:
    name: str
    role: Role
    path: Path


def admit(
    config: CoordinatorConfig, csr_path: Path, role: Role, out_dir: Path, *, valid_days: int = 365
) -> Kit:
    """Sign a party's CSR, record it in the registry and write its startup kit to ``out_dir/NAME``."""
    if role not in PARTY_ROLES:
        raise InvalidInput(
            f"role must be one of {', '.join(r.value for r in PARTY_ROLES)}, not {role.value!r}"
        )
    try:
        csr = csr_path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"CSR file {csr_path} does not exist") from None
    except IsADirectoryError:
        raise InvalidInput(f"{csr_path} is a folder, not a CSR file") from None
    ca = CertificateAuthority.load(config.tls.ca_key, config.tls.ca_cert)
    name, cert_pem = ca.sign_csr(csr, source=str(csr_path), valid_days=valid_days)
    state = StateStore(config.coordinator.registry(), create=False)
    if state.principal(name) is not None:
        raise AlreadyExists(
            f"{csr_path}: a party named {name!r} is already admitted (revoked names stay taken)"
        )
    kit_dir = out_dir / name
    if kit_dir.exists():
        raise AlreadyExists(f"kit folder {kit_dir} already exists")
    # Build the kit in a temporary folder and move it in place only after the registry accepts it.
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out_dir))
    try:
        (tmp / "ca.pem").write_bytes(config.tls.ca_cert.read_bytes())
        (tmp / "party.crt").write_bytes(cert_pem)
        (tmp / KIT_CONFIG).write_text(
            dump_toml(
                {
                    "party": {"name": name, "role": role.value},
                    "coordinator": {
                        "address": _dial_address(config),
                        "server_name": config.coordinator.name,
                    },
                }
            ),
            encoding="utf-8",
        )
        _register(state, name, role, cert_pem, actor=ADMIN_NAME)
        tmp.rename(kit_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Kit(name, role, kit_dir)


def _dial_address(config: CoordinatorConfig) -> str:
    host, _, port = config.coordinator.listen.rpartition(":")
    if host in ("0.0.0.0", "[::]", "::"):
        host = config.coordinator.hosts[0]
    return f"{host}:{port}"


def revoke(config: CoordinatorConfig, name: str, reason: str = "revoked by the admin") -> list[str]:
    """Revoke every certificate of ``name``; a running coordinator cuts its link within a second."""
    if name == ADMIN_NAME:
        raise InvalidInput("the admin principal cannot be revoked this way")
    return StateStore(config.coordinator.registry(), create=False).revoke(name, reason=reason, actor=ADMIN_NAME)
