"""Annotation templates: ``str.format`` placeholders over a fixed, per-kind set of names.

Templates are checked when the rules load (an unknown name is an error naming the field) and
rendered with ``format_map`` on plain strings only: no attribute or index access, no conversions,
no format specs, so a rule file cannot reach into Python objects. Unknown values render as
``unknown``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from functools import lru_cache

UNKNOWN = "unknown"

_COMMON = frozenset({"alertname", "severity", "node", "value", "threshold", "for"})
_GPU = frozenset({"gpu", "uuid", "model"})

# The names each rule kind (or absence target) fills in.
PLACEHOLDERS: dict[str, frozenset[str]] = {
    "threshold": _COMMON | _GPU | {"column"},
    "rate": _COMMON | _GPU | {"column", "window"},
    "event": _COMMON | _GPU | {"kind", "code", "xid", "mnemonic", "resolution", "category", "recommended_action",
                               "message", "count", "window"},
    "absence.node": _COMMON | {"interval", "last_seen"},
    "absence.gpu": _COMMON | _GPU | {"window", "last_seen"},
    "bench": _COMMON | _GPU | {"workload", "metric", "unit", "median", "ratio", "peers"},
    "idle_allocated": _COMMON | _GPU | {"holder", "job_id", "user", "source"},
}


class TemplateError(ValueError):
    """A template that cannot be rendered safely; the message says why."""


def placeholders(template: str) -> list[str]:
    """The names ``template`` uses, in order; raises ``TemplateError`` on anything but ``{name}``."""
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # unbalanced braces
        raise TemplateError(f"{exc} (write {{{{ and }}}} for literal braces)") from exc
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if not field.isidentifier():
            raise TemplateError(f"placeholder {{{field}}} must be a plain name like {{node}}")
        if spec or conversion:
            raise TemplateError(f"placeholder {{{field}}} takes no format spec or conversion")
        names.append(field)
    return names


def check(template: str, kind: str) -> None:
    """Raise ``TemplateError`` when ``template`` uses a name that rules of ``kind`` do not fill."""
    allowed = PLACEHOLDERS[kind]
    for name in placeholders(template):
        if name not in allowed:
            raise TemplateError(f"unknown placeholder {{{name}}}; {kind} rules know "
                                + ", ".join(f"{{{n}}}" for n in sorted(allowed)))


def fmt(value: object) -> str:
    """A value as annotation text: numbers with 4 significant digits (whole from 1000 up), None as
    ``unknown``."""
    if value is None:
        return UNKNOWN
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if value != value:
            return UNKNOWN
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def duration(seconds: float) -> str:
    """Seconds as a short duration: ``90`` → ``1m30s``, ``3600`` → ``1h``."""
    s = int(round(seconds))
    if s == 0:
        return "0s"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out += f"{s // size}{unit}"
            s %= size
    return out


class _Context(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return UNKNOWN


@lru_cache(maxsize=1024)
def _names(template: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(placeholders(template)))


def render(template: str, context: Mapping[str, object]) -> str:
    """``template`` with its placeholders filled from ``context`` (already checked at load time).
    Only the names the template uses are formatted, and a rendering is remembered by the values it
    used: a rule renders thousands of conditions a cycle, nearly all as in the cycle before."""
    names = _names(template)
    if not names:
        return template
    values = [context.get(k) for k in names]
    key = (template, *values, *map(type, values))  # True, 1 and 1.0 are equal keys but render apart
    try:
        return _RENDERED[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable value: render without remembering
        return template.format_map(_Context({k: fmt(context[k]) for k in names if k in context}))
    if len(_RENDERED) >= _RENDER_CACHE:
        _RENDERED.clear()
    out = _RENDERED[key] = template.format_map(_Context({k: fmt(context[k]) for k in names if k in context}))
    return out


_RENDERED: dict[tuple[object, ...], str] = {}
_RENDER_CACHE = 100_000
