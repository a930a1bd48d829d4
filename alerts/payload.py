"""Alertmanager's webhook body (version "4"), byte for byte as Alertmanager 0.25 sends it, so every existing
Alertmanager receiver works unchanged: field order, Go's JSON string escaping (``<`` as ``\\u003c``, …) and
time format (RFC 3339 with trailing zeros dropped, ``0001-01-01T00:00:00Z`` for "not ended"), the receiver
name as ``regexp.QuoteMeta`` writes it, group keys, fingerprints, alert order and the trailing newline.

tests/alerts/test_alertmanager.py holds these against a real Alertmanager.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from functools import cmp_to_key, lru_cache
from typing import Any

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, what Alertmanager sends as endsAt of a firing alert
VERSION = "4"
ALERT_FIELDS = ("status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint")
BODY_FIELDS = ("receiver", "status", "alerts", "groupLabels", "commonLabels", "commonAnnotations", "externalURL",
               "version", "groupKey", "truncatedAlerts")

_FNV_OFFSET, _FNV_PRIME, _MASK = 14695981039346656037, 1099511628211, (1 << 64) - 1
_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def format_time(ts: float | None) -> str:
    """Epoch seconds → Go's RFC3339Nano in UTC. Stored times are floats, good to the microsecond, so the
    fraction stops there; trailing zeros are dropped as Go drops them."""
    if ts is None:
        return ZERO_TIME
    micros = round(ts * 1_000_000)
    seconds, fraction = divmod(micros, 1_000_000)
    text = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if fraction:
        text += "." + f"{fraction:06d}".rstrip("0")
    return text + "Z"


def parse_time(text: str) -> float | None:
    """RFC 3339 (any fraction, Z or offset) → epoch seconds; Go's zero time → None."""
    if text == ZERO_TIME:
        return None
    found = _TIME.fullmatch(text)
    if found is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    y, mo, d, h, mi, s, frac, zone = found.groups()
    base = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=timezone.utc).timestamp()
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        base -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return base + (int(frac) / 10 ** len(frac) if frac else 0.0)


def fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's alert fingerprint: FNV-1a 64 over the sorted label names and values, 16 hex digits.
    Memoised: the controller fingerprints every condition every cycle, and the same label sets recur."""
    key = tuple(sorted(labels.items()))
    found = _FINGERPRINTS.get(key)
    if found is None:
        if len(_FINGERPRINTS) >= _FINGERPRINT_CACHE:
            _FINGERPRINTS.clear()
        found = _FINGERPRINTS[key] = _fnv(key)
    return found


_FINGERPRINTS: dict[tuple[tuple[str, str], ...], str] = {}
_FINGERPRINT_CACHE = 200_000


def _fnv(items: tuple[tuple[str, str], ...]) -> str:
    value = _FNV_OFFSET
    for name, label_value in items:
        for part in (name, label_value):
            for byte in part.encode("utf-8") + b"\xff":
                value = ((value ^ byte) * _FNV_PRIME) & _MASK
    return f"{value:016x}"


@lru_cache(maxsize=65536)
def go_quote(text: str) -> str:
    """Go's ``%q`` (strconv.Quote) for the label values in a group key."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in _GO_SHORT:
            out.append(_GO_SHORT[ch])
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif code < 0x80 or 0xD800 <= code <= 0xDFFF:
            out.append(f"\\x{code:02x}" if code < 0x80 else "\\ufffd")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out) + '"'


_GO_SHORT = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def labelset_string(labels: Mapping[str, str]) -> str:
    """``{alertname="X", node="n1"}`` as Alertmanager 0.25 prints a label set (pairs sorted as strings)."""
    return "{" + ", ".join(sorted(f"{k}={go_quote(v)}" for k, v in labels.items())) + "}"


def group_key(route_key: str, group_labels: Mapping[str, str]) -> str:
    """The webhook's groupKey: ``{}/{severity="critical"}:{alertname="X", node="n1"}``."""
    return f"{route_key}:{labelset_string(group_labels)}"


def quote_meta(text: str) -> str:
    """Go's regexp.QuoteMeta, which Alertmanager applies to the receiver name in the body."""
    return re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", text)


def _labels_before(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    if len(a) != len(b):
        return len(a) < len(b)
    for name in sorted([*a, *b]):
        if name not in a:
            return True
        if name not in b:
            return False
        if a[name] != b[name]:
            return a[name] < b[name]
    return False


def _alert_less(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    la, lb = a["labels"], b["labels"]
    for key in ("job", "instance"):
        if key not in la and key not in lb:
            continue
        if key not in la:
            return False
        if key not in lb:
            return True
        if la[key] != lb[key]:
            return bool(la[key] < lb[key])
    return _labels_before(la, lb)


def sort_alerts(alerts: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Alertmanager's notification order: by job, then instance, then label set."""
    def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
        return -1 if _alert_less(a, b) else (1 if _alert_less(b, a) else 0)
    return sorted(alerts, key=cmp_to_key(compare))


def webhook_alert(*, labels: Mapping[str, str], annotations: Mapping[str, str], starts_at: float | None,
                  ends_at: float | None, resolved: bool, generator_url: str = "",
                  fingerprint_: str | None = None) -> dict[str, Any]:
    """One entry of ``alerts[]``; a firing alert's endsAt is Go's zero time, as Alertmanager sends it."""
    return {
        "status": "resolved" if resolved else "firing",
        "labels": {str(k): str(v) for k, v in labels.items()},
        "annotations": {str(k): str(v) for k, v in annotations.items()},
        "startsAt": format_time(starts_at),
        "endsAt": format_time(ends_at) if resolved else ZERO_TIME,
        "generatorURL": generator_url,
        "fingerprint": fingerprint_ or fingerprint(labels),
    }


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    common = dict(maps[0])
    for other in maps[1:]:
        common = {k: v for k, v in common.items() if other.get(k) == v}
    return common


def webhook_body(*, receiver: str, group_key_: str, group_labels: Mapping[str, str],
                 alerts: Iterable[Mapping[str, Any]], external_url: str = "", max_alerts: int = 0) -> dict[str, Any]:
    """The whole message: alerts sorted and truncated to ``max_alerts`` (0: all) as Alertmanager does."""
    ordered = sort_alerts(alerts)
    truncated = 0
    if max_alerts and len(ordered) > max_alerts:
        ordered, truncated = ordered[:max_alerts], len(ordered) - max_alerts
    firing = any(a["status"] == "firing" for a in ordered)
    return {
        "receiver": quote_meta(receiver),
        "status": "firing" if firing else "resolved",
        "alerts": [dict(a) for a in ordered],
        "groupLabels": dict(group_labels),
        "commonLabels": _common([a["labels"] for a in ordered]),
        "commonAnnotations": _common([a["annotations"] for a in ordered]),
        "externalURL": external_url,
        "version": VERSION,
        "groupKey": group_key_,
        "truncatedAlerts": truncated,
    }


# Go's encoding/json escapes these (HTML-safe mode, which json.Encoder uses), and control characters as \u00XX.
_GO_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "<": "\\u003c",
                    ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_JSON_SPECIAL = re.compile('["\\\\<>&\u2028\u2029\x00-\x1f\ud800-\udfff]')


def _go_json_char(found: re.Match[str]) -> str:
    ch = found.group()
    if ch in _GO_JSON_ESCAPES:
        return _GO_JSON_ESCAPES[ch]
    return "\\ufffd" if ord(ch) >= 0xD800 else f"\\u{ord(ch):04x}"


def go_string(text: str) -> str:
    return '"' + _GO_JSON_SPECIAL.sub(_go_json_char, text) + '"'


def _go_map(values: Mapping[str, Any]) -> str:
    return "{" + ",".join(f"{go_string(str(k))}:{go_string(str(values[k]))}" for k in sorted(values)) + "}"


def _go_alert(alert: Mapping[str, Any]) -> str:
    parts = []
    for name in ALERT_FIELDS:
        value = alert[name]
        parts.append(f'"{name}":' + (_go_map(value) if isinstance(value, Mapping) else go_string(str(value))))
    return "{" + ",".join(parts) + "}"


def encode_webhook(body: Mapping[str, Any]) -> bytes:
    """The exact bytes Alertmanager's json.Encoder writes for this body, newline included."""
    parts = []
    for name in BODY_FIELDS:
        value = body[name]
        if name == "alerts":
            text = "[" + ",".join(_go_alert(a) for a in value) + "]"
        elif name == "truncatedAlerts":
            text = str(int(value))
        elif isinstance(value, Mapping):
            text = _go_map(value)
        else:
            text = go_string(str(value))
        parts.append(f'"{name}":{text}')
    return ("{" + ",".join(parts) + "}\n").encode("utf-8")
