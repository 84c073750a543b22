"""A party node's configuration (``party.toml`` in the party's home folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pydantic

from fedcore.config import RootConfig, Section, load_config, resolve_path
from fedcore.errors import InvalidInput
from fedcore.protocol.messages import check_name
from fedcore.telemetry import MetricsSettings

ResolvedPath = Annotated[Path, pydantic.AfterValidator(resolve_path)]


class PartySection(Section):
    name: str

    @pydantic.field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        try:
            return check_name(v)
        except InvalidInput as exc:
            raise ValueError(str(exc)) from None


class CoordinatorAddress(Section):
    address: str = "127.0.0.1:7443"
    # Name the coordinator's certificate carries (TLS target name override).
    server_name: str = "coordinator"


class TlsFiles(Section):
    ca_cert: ResolvedPath = Path("tls/ca.pem")
    cert: ResolvedPath = Path("tls/party.crt")
    key: ResolvedPath = Path("keys/party.key")


class LinkSettings(Section):
    heartbeat_s: float = pydantic.Field(default=1.0, gt=0, le=60)
    reconnect_initial_s: float = pydantic.Field(default=0.2, gt=0, le=60)
    reconnect_max_s: float = pydantic.Field(default=2.0, gt=0, le=300)
    chunk_bytes: int = pydantic.Field(default=1 << 20, ge=1024, le=4 << 20)
    max_parallel_tasks: int = pydantic.Field(default=8, ge=1, le=256)


class ComputeSettings(Section):
    # "local": a process pool on this machine; "ray": the party's Ray cluster (pip install 'fedcredit[ray]').
    backend: Literal["local", "ray"] = "local"
    # Address of the party's Ray cluster (host:port of its head, or "auto"); "" starts one in-process.
    ray_address: str = ""
    # Workers for CPU-heavy protocol steps (PSI blinding); unset: one per core (Ray: per cluster CPU);
    # 0: in-process (local backend only).
    workers: int | None = pydantic.Field(default=None, ge=0, le=256)


class StoreSettings(Section):
    # Any SQLAlchemy URL; a relative sqlite path is relative to the party's home folder.
    url: str = "sqlite:///store.db"


class LogSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    json_format: bool = False


class PartyConfig(RootConfig):
    party: PartySection
    coordinator: CoordinatorAddress = CoordinatorAddress()
    tls: TlsFiles = TlsFiles()
    link: LinkSettings = LinkSettings()
    store: StoreSettings = StoreSettings()
    compute: ComputeSettings = ComputeSettings()
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()

    def store_url(self) -> str:
        """The store URL with a relative SQLite path made absolute against the home folder."""
        url = self.store.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
            return prefix + str((self.home / url[len(prefix) :]).resolve())
        return url


CONFIG_FILE = "party.toml"


def load_party_config(home: Path) -> PartyConfig:
    """Load ``HOME/party.toml`` with environment overrides."""
    return load_config(home / CONFIG_FILE, PartyConfig)
