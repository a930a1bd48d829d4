"""Reading a rule file: YAML whose every field knows its line, and typed access to a rule's
fields that fails with one line naming the file, the line and the field::

    rules.yaml line 12: rules[3].for: expected a duration like 5m
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NoReturn

import yaml

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


class RuleError(ValueError):
    """A rule file that cannot be used; the message is one line: ``FILE line N: FIELD: problem``."""


def parse_duration(text: Any) -> float:
    """Prometheus-style durations (``90s``, ``5m``, ``1h30m``, ``7d``) or ``0``, in seconds: the one
    duration parser (``alerts.fields.parse_duration`` adds bare seconds for the alerting config)."""
    if text == 0 and not isinstance(text, bool):
        return 0.0
    if not isinstance(text, str) or not _DURATION.match(text.strip()):
        raise ValueError("expected a duration like 5m")
    return sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text.strip()))


class Document:
    """A YAML document as plain Python values plus the line of every field (by path)."""

    def __init__(self, text: str, filename: str) -> None:
        self.filename = filename
        self.lines: dict[str, int] = {}
        try:
            loader = yaml.SafeLoader(text)  # reads the text: a control character fails here already
        except yaml.YAMLError as exc:
            raise RuleError(f"{filename}: not valid YAML: {str(exc).splitlines()[0]}") from None
        try:
            node = loader.get_single_node()
            self.data = None if node is None else self._value(loader, node, "")
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = f" line {mark.line + 1}" if mark else ""
            raise RuleError(f"{filename}{line}: not valid YAML: {exc.problem or exc.context}") from None
        except yaml.YAMLError as exc:
            raise RuleError(f"{filename}: not valid YAML: {str(exc).splitlines()[0]}") from None
        finally:
            loader.dispose()

    def _value(self, loader: yaml.SafeLoader, node: yaml.Node, path: str) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                sub = f"{path}.{key}" if path else str(key)
                if key in out:
                    self.lines[sub] = key_node.start_mark.line + 1
                    self.fail(sub, "duplicate key")
                out[key] = self._value(loader, value_node, sub)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._value(loader, v, f"{path}[{i}]") for i, v in enumerate(node.value)]
        return loader.construct_object(node, deep=True)

    def line(self, path: str) -> int:
        """The line of ``path``, or of its nearest parent that exists (for missing fields)."""
        while path and path not in self.lines:
            if path.endswith("]"):
                path = re.sub(r"\[\d+\]$", "", path)
            else:
                path = path.rsplit(".", 1)[0] if "." in path else ""
        return self.lines.get(path, 1)

    def fail(self, path: str, message: str) -> NoReturn:
        where = f"{path}: " if path else ""
        raise RuleError(f"{self.filename} line {self.line(path)}: {where}{message}")


class Fields:
    """Typed access to one rule's mapping, failing with the field's path and line."""

    def __init__(self, doc: Document, path: str, data: dict[str, Any]) -> None:
        self.doc, self.path, self.data = doc, path, data
        self.used: set[str] = set()

    def fail(self, name: str, message: str) -> NoReturn:
        self.doc.fail(f"{self.path}.{name}" if name else self.path, message)

    def get(self, name: str, default: Any = None, *, required: bool = False) -> Any:
        self.used.add(name)
        if name not in self.data or self.data[name] is None:
            if required:
                self.fail(name, "required field is missing")
            return default
        return self.data[name]

    def string(self, name: str, default: str | None = None, *, required: bool = False,
               choices: tuple[str, ...] = ()) -> Any:
        v = self.get(name, default, required=required)
        if v is None:
            return None
        if not isinstance(v, str) or not v:
            self.fail(name, "expected a non-empty string")
        if choices and v not in choices:
            self.fail(name, f"expected one of {', '.join(choices)}, not {v!r}")
        return v

    def number(self, name: str, default: float | None = None, *, required: bool = False,
               check: Callable[[float], bool] | None = None, what: str = "a number") -> Any:
        v = self.get(name, default, required=required)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or (check is not None and not check(float(v))):
            self.fail(name, f"expected {what}")
        return float(v)

    def duration(self, name: str, default: float | None = None, *, required: bool = False) -> Any:
        v = self.get(name, None, required=required)
        if v is None:
            return default
        try:
            return parse_duration(v)
        except ValueError as exc:
            self.fail(name, str(exc))

    def boolean(self, name: str, default: bool | None = None) -> Any:
        v = self.get(name, default)
        if v is not None and not isinstance(v, bool):
            self.fail(name, "expected true or false")
        return v

    def strings(self, name: str) -> tuple[str, ...]:
        """A string (or number) or a list of them, as a tuple of strings."""
        v = self.get(name)
        if v is None:
            return ()
        items = v if isinstance(v, list) else [v]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, str | int):
                self.fail(name, "expected a string or a list of strings")
        return tuple(str(i) for i in items)

    def mapping(self, name: str) -> dict[str, Any]:
        v = self.get(name, {})
        if not isinstance(v, dict):
            self.fail(name, "expected a mapping")
        return v

    def finish(self) -> None:
        for key in self.data:
            if key not in self.used:
                self.fail(str(key), "unknown field")
