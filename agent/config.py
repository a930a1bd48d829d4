"""Agent settings: defaults, then a YAML file, then ``GPUFLEET_*`` environment variables, then flags.

No file is needed; every setting has a default that works on a single machine.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml


class ConfigError(Exception):
    """A configuration problem, phrased as one line for the user."""


@dataclass(slots=True)
class AgentConfig:
    db_url: str | None = None
    interval: float = 10.0
    node_name: str = field(default_factory=socket.gethostname)
    cluster: str | None = None
    metrics_addr: str | None = "127.0.0.1:9403"  # None or "" turns /metrics off
    spool_dir: str = ""
    spool_max_bytes: int = 1 << 30
    simulate: str | None = None
    simulate_seed: int = 0
    filesystem_paths: list[str] = field(default_factory=lambda: ["/"])
    kernel_log: str | None = "/dev/kmsg"
    interfaces_exclude: list[str] = field(default_factory=lambda: ["lo"])
    auto_migrate: bool = True
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.spool_dir:
            base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
            self.spool_dir = str(base / "gpufleet" / "spool")


_ENV = {
    "GPUFLEET_DB_URL": "db_url",
    "GPUFLEET_INTERVAL": "interval",
    "GPUFLEET_NODE_NAME": "node_name",
    "GPUFLEET_CLUSTER": "cluster",
    "GPUFLEET_METRICS_ADDR": "metrics_addr",
    "GPUFLEET_SPOOL_DIR": "spool_dir",
    "GPUFLEET_SIMULATE": "simulate",
}


def _coerce(name: str, value: Any, source: str) -> Any:
    kinds = {f.name: f.type for f in fields(AgentConfig)}
    kind = str(kinds[name])
    try:
        if kind.startswith("float"):
            number = float(value)
            if name == "interval" and not 0.05 <= number <= 3600:
                raise ValueError("must be between 0.05 and 3600 seconds")
            return number
        if kind.startswith("int"):
            return int(value)
        if kind.startswith("bool"):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind.startswith("list"):
            if isinstance(value, str):
                return [v for v in value.split(",") if v]
            if not isinstance(value, list):
                raise ValueError("expected a list")
            return [str(v) for v in value]
        if kind.startswith("dict"):
            if not isinstance(value, dict):
                raise ValueError("expected a mapping")
            return {str(k): str(v) for k, v in value.items()}
        return None if value is None else str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {name}: {exc}") from exc


def load_config(path: str | None = None, *, env: dict[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> AgentConfig:
    """Build the configuration; raises ConfigError with the file and field on bad input."""
    cfg = AgentConfig()
    known = {f.name for f in fields(AgentConfig)}
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"config file {path}{where}: not valid YAML") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path}: expected a mapping of settings at the top level")
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise ConfigError(f"config file {path}: unknown setting {key!r} "
                                  f"(known: {', '.join(sorted(known))})")
            setattr(cfg, name, _coerce(name, value, f"config file {path}"))
    environ = os.environ if env is None else env
    for var, name in _ENV.items():
        if environ.get(var):
            setattr(cfg, name, _coerce(name, environ[var], f"environment variable {var}"))
    for name, value in (overrides or {}).items():
        if value is not None:
            setattr(cfg, name, _coerce(name, value, f"--{name.replace('_', '-')}"))
    if cfg.metrics_addr:
        parse_addr(cfg.metrics_addr)
    return cfg


def parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"metrics address {addr!r}: expected HOST:PORT, e.g. 127.0.0.1:9403")
    return host.strip("[]") or "127.0.0.1", int(port)
