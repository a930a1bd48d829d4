"""Reading a YAML configuration with line numbers, so that every mistake is one line naming the file, the
line and the field (``alerting.yaml line 12: route.receiver: unknown receiver 'pager'``), and :class:`Secret`
for the values that must never show up in a repr, a log line or an error.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from alerts.matchers import Matcher, MatcherError, parse_matcher
from alerts.rulefile import parse_duration as prometheus_duration
from db.secrets import SecretError, read_file, remember


class ConfigError(Exception):
    """A configuration problem, phrased as one line: ``FILE line N: FIELD: problem``."""


class Secret:
    """A value that must not leak: ``repr``/``str`` show ``***``; :meth:`reveal` gives it to the one caller
    that needs it (an HTTP header, an HMAC key)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(Secret)


class _Tag:
    """Line numbers for mappings and sequences, kept by the loader below."""

    line = 0
    lines: dict[Any, int]


class _Map(dict[Any, Any], _Tag):
    pass


class _List(list[Any], _Tag):
    pass


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    result = _Map()
    result.line, result.lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.MarkedYAMLError(problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    return result


def _construct_list(loader: _Loader, node: yaml.SequenceNode) -> _List:
    result = _List(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.lines = {i: child.start_mark.line + 1 for i, child in enumerate(node.value)}
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_list)


def load_yaml(text: str, source: str) -> Any:
    """Mappings and lists that know their line numbers; a syntax error is a one-line ConfigError."""
    try:  # _Loader is a SafeLoader subclass: the warning below about an unsafe load does not apply
        return yaml.load(text, Loader=_Loader)  # noqa: S506  # nosec B506
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{source}{where}: not valid YAML ({problem})") from None


def parse_duration(value: Any) -> float:
    """``30s``, ``5m``, ``1h30m``, ``500ms``, ``2d`` (Prometheus style, ``alerts.rulefile``) or, unlike
    rule files, a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 4h")
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    try:
        return prometheus_duration(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration such as 30s, 5m or 4h") from None


class Fields:
    """One mapping of the file, with its field path and line numbers, for one-line errors."""

    def __init__(self, data: Any, path: str, source: str, line: int | None, known: tuple[str, ...],
                 env: Mapping[str, str], base: Path) -> None:
        self.path, self.source, self.env, self.base = path, source, env, base
        self.line = getattr(data, "line", None) or line
        if not isinstance(data, dict):
            raise self.error(None, "expected a mapping of fields")
        self.data = data
        for key in data:
            if key not in known:
                raise self.error(key, f"unknown field (known: {', '.join(known)})")

    def where(self, key: Any) -> str:
        line = getattr(self.data, "lines", {}).get(key, self.line) if key is not None else self.line
        return f"{self.source} line {line}" if line else self.source

    def name(self, key: Any) -> str:
        if key is None:
            return self.path or "top level"
        return f"{self.path}.{key}" if self.path else str(key)

    def error(self, key: Any, problem: str) -> ConfigError:
        return ConfigError(f"{self.where(key)}: {self.name(key)}: {problem}")

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def sub(self, key: str, known: tuple[str, ...], index: int | None = None) -> Fields:
        value = self.data[key] if index is None else self.data[key][index]
        lines = getattr(self.data, "lines", {}) if index is None else getattr(self.data[key], "lines", {})
        path = self.name(key) + (f"[{index}]" if index is not None else "")
        return Fields(value, path, self.source, lines.get(key if index is None else index), known, self.env,
                        self.base)

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        if not self.has(key):
            if required:
                raise self.error(key, "is required")
            return default
        value = self.data[key]
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise self.error(key, "expected a string")
        return str(value)

    def duration(self, key: str, default: float, *, positive: bool = False) -> float:
        if not self.has(key):
            return default
        try:
            seconds = parse_duration(self.data[key])
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        if seconds < 0 or (positive and seconds == 0):
            raise self.error(key, "must be greater than zero" if positive else "must not be negative")
        return seconds

    def flag(self, key: str, default: bool) -> bool:
        if not self.has(key):
            return default
        if not isinstance(self.data[key], bool):
            raise self.error(key, "expected true or false")
        return bool(self.data[key])

    def integer(self, key: str, default: int | None) -> int | None:
        if not self.has(key):
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(key, "expected a whole number, 0 or more")
        return int(value)

    def strings(self, key: str) -> list[str] | None:
        if not self.has(key):
            return None
        value = self.data[key]
        if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
            raise self.error(key, "expected a list of strings")
        return [str(v) for v in value]

    def matchers(self, key: str) -> tuple[Matcher, ...]:
        try:
            return tuple(parse_matcher(t) for t in self.strings(key) or [])
        except MatcherError as exc:
            raise self.error(key, str(exc)) from None

    def secret(self, key: str) -> Secret | None:
        """``key``, ``key_env`` (an environment variable's name) or ``key_file`` (a file's path)."""
        given = [k for k in (key, f"{key}_env", f"{key}_file") if self.has(k)]
        if len(given) > 1:
            raise self.error(given[1], f"give only one of {key}, {key}_env and {key}_file")
        if not given:
            return None
        name = given[0]
        reference = self.text(name)
        assert reference is not None
        if name == key:
            return Secret(reference)
        if name.endswith("_env"):
            if reference not in self.env:
                raise self.error(name, f"environment variable {reference} is not set")
            return Secret(remember(self.env[reference].strip()) or "")
        path = self.base / Path(reference).expanduser()
        try:  # the store's secret reader: an empty file is an error, and the value is masked in logs
            return Secret(read_file(path, name))
        except SecretError as exc:
            raise self.error(name, str(exc).removeprefix(f"{name}: ")) from None
