"""The coordinator's configuration (``coordinator.toml`` in its home folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pydantic

from fedcore.config import RootConfig, Section, check_listen, load_config, resolve_path

from .dashboard import DashboardSettings

ResolvedPath = Annotated[Path, pydantic.AfterValidator(resolve_path)]


class CoordinatorSection(Section):
    name: str = "coordinator"
    listen: str = "127.0.0.1:7443"
    # Host names / IPs the server certificate is valid for (what parties dial).
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
    state: ResolvedPath = Path("state.db")
    # A PostgreSQL URL (postgresql+psycopg://user@host/db) puts the registry there instead of `state`.
    state_url: str = ""
    # Where `coordinator serve` writes the port it bound (useful with port 0).
    port_file: ResolvedPath = Path("run/coordinator.port")
    max_workers: int = pydantic.Field(default=64, ge=8, le=1024)
    # Concurrent RPCs (calls and streams) one party's certificate may hold; capped at a quarter of
    # the server's slots so that one party can never take the admin's or the other parties' slots.
    max_rpcs_per_party: int = pydantic.Field(default=16, ge=2, le=1024)

    def registry(self) -> Path | str:
        """Where the registry lives: ``state_url`` when set, else the SQLite file ``state``."""
        return self.state_url or self.state

    @pydantic.field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        return check_listen(v)


class TlsFiles(Section):
    ca_cert: ResolvedPath = Path("tls/ca.pem")
    ca_key: ResolvedPath = Path("keys/ca.key")
    cert: ResolvedPath = Path("tls/coordinator.crt")
    key: ResolvedPath = Path("keys/coordinator.key")
    admin_cert: ResolvedPath = Path("admin/admin.crt")
    admin_key: ResolvedPath = Path("admin/admin.key")


class LinkSettings(Section):
    heartbeat_s: float = pydantic.Field(default=1.0, gt=0, le=60)
    missed_heartbeats: int = pydantic.Field(default=3, ge=1, le=100)
    chunk_bytes: int = pydantic.Field(default=1 << 20, ge=1024, le=4 << 20)
    # How often the server re-reads revocations from the state store.
    revocation_poll_s: float = pydantic.Field(default=0.5, gt=0, le=60)
    # A connection that has not sent its Register message by then is closed.
    registration_timeout_s: float = pydantic.Field(default=10.0, gt=0, le=600)


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    json_format: bool = False


class CoordinatorConfig(RootConfig):
    coordinator: CoordinatorSection = CoordinatorSection()
    tls: TlsFiles = TlsFiles()
    link: LinkSettings = LinkSettings()
    log: LogSettings = LogSettings()
    dashboard: DashboardSettings = DashboardSettings()


CONFIG_FILE = "coordinator.toml"


def load_coordinator_config(home: Path) -> CoordinatorConfig:
    return load_config(home / CONFIG_FILE, CoordinatorConfig)
