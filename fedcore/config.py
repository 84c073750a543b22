"""Loading TOML configuration with environment overrides, validated on load.

Each role declares its configuration as pydantic models (``coordinator.config``,
``party_node.config``). :func:`load_config` reads the TOML file, applies environment overrides of the
form ``FEDCREDIT_<SECTION>__<KEY>=value`` (values parsed as TOML scalars when they parse, else taken as
strings), validates, and raises :class:`~fedcore.errors.ConfigError` naming the file and the key.
Relative paths in the file are resolved against the file's folder by the role models.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import pydantic

from fedcore.errors import ConfigError, NotFound

ENV_PREFIX = "FEDCREDIT_"

M = TypeVar("M", bound=pydantic.BaseModel)


class Section(pydantic.BaseModel):
    """Base of every config section: unknown keys are errors, not silently ignored."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, validate_default=True)


class RootConfig(pydantic.BaseModel):
    """Base of a role's whole config file: missing sections are validated from ``{}`` so that their
    defaults (relative paths included) go through the same validators as explicit values, and
    ``home`` is the folder the file lives in."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    home: Path = Path(".")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _fill_sections(cls, data: object, info: pydantic.ValidationInfo) -> object:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, field in cls.model_fields.items():
            if name == "home":
                continue
            ann = field.annotation
            if (
                name not in data
                and isinstance(ann, type)
                and issubclass(ann, Section)
                and not field.is_required()
            ):
                data[name] = {}
        if "home" not in data:
            data["home"] = (info.context or {}).get("base_dir", Path("."))
        return data


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Collect ``FEDCREDIT_SECTION__KEY`` variables as ``{section: {key: value}}``."""
    env = os.environ if environ is None else environ
    out: dict[str, dict[str, Any]] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].partition("__")
        if not section or not key:
            continue
        out.setdefault(section.lower(), {})[key.lower()] = _parse_env_value(raw)
    return out


def _describe(err: pydantic.ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {msg}{more}"


def load_config(
    path: Path, model: type[M], environ: Mapping[str, str] | None = None, base_dir: Path | None = None
) -> M:
    """Load ``path`` into ``model``; raise ConfigError naming the file and key on any problem."""
    if not path.is_file():
        raise NotFound(f"config file {path} does not exist")
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for section, values in env_overrides(environ).items():
        target = data.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{path}: {section}: expected a table, got {type(target).__name__}")
        target.update(values)
    try:
        return model.model_validate(data, context={"base_dir": base_dir or path.parent.resolve()})
    except pydantic.ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None


def check_listen(value: str, allow_empty: bool = False) -> str:
    """Validate a ``HOST:PORT`` listen address (empty allowed, meaning "off", when ``allow_empty``)."""
    if allow_empty and not value:
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(
            "must be HOST:PORT with a port between 0 and 65535" + (", or empty (off)" if allow_empty else "")
        )
    return value


def resolve_path(value: Path, info: pydantic.ValidationInfo) -> Path:
    """Resolve a relative path against the config file's folder (passed as validation context)."""
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return (Path(base) / value).resolve()
    return value


def dump_toml(data: Mapping[str, Mapping[str, Any]]) -> str:
    """Render a two-level mapping as TOML (enough for our config files; no dependency needed)."""
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")
