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

from agent.benchsched import BenchConfig, BenchConfigError, parse_bench_config
from db.secrets import SecretError, read_file, read_secret


class ConfigError(Exception):
    """A configuration problem, phrased as one line for the user."""


@dataclass(slots=True)
class AgentConfig:
    db_url: str | None = field(default=None, repr=False)  # may carry a password
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
    # /metrics over HTTPS when both are set; basic auth when both are set (the password may be a bcrypt hash,
    # ``sha256:<hex>`` or plain). Secrets never show in a repr.
    metrics_tls_cert: str | None = None
    metrics_tls_key: str | None = None
    metrics_basic_auth_user: str | None = None
    metrics_basic_auth_password: str | None = field(default=None, repr=False)
    # Who runs what on a GPU: ``full`` (user: command line), ``pseudonymize`` (keyed HMAC-SHA256 tokens, the
    # same on every node that shares the key) or ``off`` (no per-process rows at all).
    process_privacy: str = "full"
    process_privacy_key: str | None = field(default=None, repr=False)
    bench: BenchConfig = field(default_factory=BenchConfig)  # the ``bench:`` section: scheduled benchmarks

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
    **{f"GPUFLEET_{name.upper()}": name for name in (
        "metrics_tls_cert", "metrics_tls_key", "metrics_basic_auth_user", "metrics_basic_auth_password",
        "process_privacy", "process_privacy_key")},
}
# Settings that are secrets: also read from ``<setting>_file`` in the file and ``GPUFLEET_<SETTING>_FILE``.
SECRET_SETTINGS = ("db_url", "metrics_basic_auth_password", "process_privacy_key")
PROCESS_PRIVACY = ("full", "pseudonymize", "off")


def _coerce(name: str, value: Any, source: str) -> Any:
    if name == "bench":
        try:
            return parse_bench_config(value, source)
        except BenchConfigError as exc:
            raise ConfigError(str(exc)) from None
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
            if name.removesuffix("_file") in SECRET_SETTINGS and name.endswith("_file"):
                name, value = name.removesuffix("_file"), _secret_file(value, f"config file {path}: {key}")
            if name not in known:
                raise ConfigError(f"config file {path}: unknown setting {key!r} "
                                  f"(known: {', '.join(sorted(known))})")
            setattr(cfg, name, _coerce(name, value, f"config file {path}"))
    environ = os.environ if env is None else env
    for var, name in _ENV.items():
        try:
            value = read_secret(var, environ) if name in SECRET_SETTINGS else environ.get(var)
        except SecretError as exc:
            raise ConfigError(str(exc)) from None
        if value:
            setattr(cfg, name, _coerce(name, value, f"environment variable {var}"))
    for name, value in (overrides or {}).items():
        if value is not None:
            setattr(cfg, name, _coerce(name, value, f"--{name.replace('_', '-')}"))
    if cfg.metrics_addr:
        parse_addr(cfg.metrics_addr)
    _check_security(cfg)
    return cfg


def _secret_file(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what}: expected the path of a file")
    try:
        return read_file(value, what)
    except SecretError as exc:
        raise ConfigError(str(exc)) from None


def _check_security(cfg: AgentConfig) -> None:
    """Settings that only make sense together, checked before anything starts."""
    for a, b in (("metrics_tls_cert", "metrics_tls_key"), ("metrics_basic_auth_user", "metrics_basic_auth_password")):
        if bool(getattr(cfg, a)) != bool(getattr(cfg, b)):
            given, wanting = (a, b) if getattr(cfg, a) else (b, a)
            raise ConfigError(f"{given} is set but {wanting} is not: give both or neither")
    for name in ("metrics_tls_cert", "metrics_tls_key"):
        value = getattr(cfg, name)
        if value and not Path(value).is_file():
            raise ConfigError(f"{name}: no such file {value}")
    if cfg.process_privacy not in PROCESS_PRIVACY:
        raise ConfigError(f"process_privacy: {cfg.process_privacy!r} is not one of {', '.join(PROCESS_PRIVACY)}")
    if cfg.process_privacy == "pseudonymize" and len(cfg.process_privacy_key or "") < 16:
        raise ConfigError("process_privacy: pseudonymize needs process_privacy_key (GPUFLEET_PROCESS_PRIVACY_KEY "
                          "or GPUFLEET_PROCESS_PRIVACY_KEY_FILE) of at least 16 characters")


def parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"metrics address {addr!r}: expected HOST:PORT, e.g. 127.0.0.1:9403")
    return host.strip("[]") or "127.0.0.1", int(port)
