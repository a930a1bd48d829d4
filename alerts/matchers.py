"""Label matchers as Alertmanager writes them (``name="value"``, ``!=``, ``=~``, ``!~``): parsing, matching, and
the text and JSON forms that route keys, inhibit rules and silences use.

A label an alert does not have matches as the empty string, and regular expressions are anchored at both
ends, both as in Alertmanager.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
OPERATORS = ("=", "!=", "=~", "!~")  # Alertmanager's MatchType order, which sorts route matchers
_SYNTAX = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*")
_HELP = "expected NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX"


class MatcherError(ValueError):
    """A matcher that cannot be parsed, phrased as one line."""


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False, hash=False)

    def __post_init__(self) -> None:
        if not LABEL_NAME.fullmatch(self.name):
            raise MatcherError(f"invalid label name {self.name!r}: letters, digits and _ only, not starting "
                               "with a digit")
        if self.op not in OPERATORS:
            raise MatcherError(f"invalid operator {self.op!r}: {_HELP}")
        if self.op in ("=~", "!~"):
            try:
                object.__setattr__(self, "_regex", re.compile(f"(?:{self.value})"))
            except re.error as exc:
                raise MatcherError(f"invalid regular expression {self.value!r} for {self.name}: {exc}") from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.name, "")
        if self._regex is not None:
            found = self._regex.fullmatch(value) is not None
            return found if self.op == "=~" else not found
        return (value == self.value) if self.op == "=" else (value != self.value)

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'

    def sort_key(self) -> tuple[str, str, int]:
        return (self.name, self.value, OPERATORS.index(self.op))

    def to_json(self) -> dict[str, Any]:
        """The silence matcher shape of Alertmanager's API: name, value, isRegex, isEqual."""
        return {"name": self.name, "value": self.value, "isRegex": self.op in ("=~", "!~"),
                "isEqual": self.op in ("=", "=~")}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Matcher:
        regex, equal = bool(data.get("isRegex")), bool(data.get("isEqual", True))
        op = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}[(regex, equal)]
        return cls(str(data["name"]), op, str(data["value"]))


def parse_matcher(text: str) -> Matcher:
    """``node=node-03``, ``alertname=~"Xid.*"``, ``severity!="info"`` → a Matcher (MatcherError if malformed)."""
    if not isinstance(text, str):
        raise MatcherError(f"invalid matcher {text!r}: {_HELP}")
    found = _SYNTAX.fullmatch(text)
    if found is None:
        raise MatcherError(f"invalid matcher {text!r}: {_HELP}")
    name, op, value = found.groups()
    if value.startswith('"'):
        inner = value[1:-1]
        if len(value) < 2 or not value.endswith('"') or (len(inner) - len(inner.rstrip("\\"))) % 2:
            raise MatcherError(f"invalid matcher {text!r}: unterminated quoted value")
        value = _unquote(inner)
    elif '"' in value:
        raise MatcherError(f"invalid matcher {text!r}: quote the whole value, e.g. {name}{op}\"...\"")
    try:
        return Matcher(name, op, value)
    except MatcherError as exc:
        raise MatcherError(f"invalid matcher {text!r}: {exc}") from None


def _unquote(body: str) -> str:
    out: list[str] = []
    chars = iter(body)
    for ch in chars:
        if ch != "\\":
            out.append(ch)
            continue
        nxt = next(chars, "")
        out.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}.get(nxt, "\\" + nxt))
    return "".join(out)


def parse_matchers(texts: Iterable[str]) -> list[Matcher]:
    return [parse_matcher(t) for t in texts]


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)


def matchers_string(matchers: Iterable[Matcher]) -> str:
    """``{name="v",other=~"x"}``, sorted as Alertmanager sorts a route's matchers (its route key part)."""
    return "{" + ",".join(str(m) for m in sorted(matchers, key=Matcher.sort_key)) + "}"
