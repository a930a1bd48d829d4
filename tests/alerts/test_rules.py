"""Rule files: the default pack validates, and every mistake is one line naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerts import templates
from alerts.rules import (
    KINDS,
    Absence,
    EventMatch,
    RuleError,
    Threshold,
    load_default_rules,
    load_rules,
    parse_duration,
    parse_rules,
)

GOOD = """\
rules:
  - name: hot
    kind: threshold
    column: temperature_gpu_celsius
    op: ">"
    value: 85
    for: 5m
    severity: warning
    annotations:
      summary: "{node} GPU {gpu} at {value} °C"
"""


def error(text: str) -> str:
    with pytest.raises(RuleError) as info:
        parse_rules(text, "rules.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


def test_default_pack_covers_every_kind_and_validates() -> None:
    rules = load_default_rules()
    by_name = {r.name: r for r in rules}
    assert len(by_name) == len(rules)
    assert {r.kind for r in rules} == set(KINDS)
    for r in rules:
        assert r.severity in ("critical", "warning", "info")
        assert r.annotations.get("summary"), r.name
        assert r.annotations.get("description"), r.name
    assert by_name["gpu_temperature_high"].spec == Threshold("temperature_gpu_celsius", ">", 85.0)
    assert by_name["gpu_temperature_high"].for_seconds == 300
    assert by_name["gpu_power_capped"].spec == Threshold("power_watts", ">=", None, "power_limit_watts", 0.98)
    fatal = by_name["gpu_xid_fatal"].spec
    assert isinstance(fatal, EventMatch) and fatal.fatal is True and fatal.until_recovered
    repeated = by_name["gpu_xid_repeated"].spec
    assert isinstance(repeated, EventMatch) and repeated.resolutions == ("RESTART_APP",) and repeated.count == 3
    assert by_name["node_down"].spec == Absence("node", intervals=3, at_least=60)


def test_every_default_rule_is_commented() -> None:
    text = (Path(__file__).resolve().parents[2] / "alerts" / "default_rules.yaml").read_text()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("  - name: "):
            assert lines[i - 1].lstrip().startswith("#"), f"{line.strip()} has no comment above it"


def test_good_rule_and_file_loading(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    (rule,) = load_rules(path)
    assert rule.name == "hot" and rule.kind == "threshold" and rule.for_seconds == 300
    assert rule.annotations == {"summary": "{node} GPU {gpu} at {value} °C"}
    path.write_text(GOOD.replace("for: 5m", "for: five"))
    with pytest.raises(RuleError, match=rf"^{path} line 7: rules\[0\]\.for: expected a duration like 5m$"):
        load_rules(path)
    with pytest.raises(RuleError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")


@pytest.mark.parametrize(("text", "expected"), [
    (GOOD.replace("kind: threshold", "kind: thresold"),
     "rules.yaml line 3: rules[0].kind: expected one of threshold, rate, event, absence, bench, idle_allocated, "
     "not 'thresold'"),
    (GOOD.replace("for: 5m", "for: 5 minutes"), "rules.yaml line 7: rules[0].for: expected a duration like 5m"),
    (GOOD.replace("for: 5m", "for: 300"), "rules.yaml line 7: rules[0].for: expected a duration like 5m"),
    (GOOD.replace("temperature_gpu_celsius", "temperature_celsius"),
     "rules.yaml line 4: rules[0].column: unknown gpu_samples column 'temperature_celsius'"),
    (GOOD.replace("at {value}", "at {temp}"),
     "rules.yaml line 10: rules[0].annotations.summary: unknown placeholder {temp}"),
    (GOOD.replace("at {value}", "at {value.real}"),
     "rules.yaml line 10: rules[0].annotations.summary: placeholder {value.real} must be a plain name"),
    (GOOD.replace("at {value}", "at {value:.1f}"),
     "rules.yaml line 10: rules[0].annotations.summary: placeholder {value} takes no format spec"),
    ("rules:\n  name: hot\n", "rules.yaml line 2: rules: expected a list of rules under 'rules'"),
    ("- name: hot\n", "rules.yaml line 1: expected a mapping with a 'rules' list"),
    (GOOD.replace("    severity: warning\n", ""), "rules.yaml line 2: rules[0].severity: required field is missing"),
    (GOOD.replace("    for: 5m\n", "    for: 5m\n    treshold: 3\n"),
     "rules.yaml line 8: rules[0].treshold: unknown field"),
    (GOOD + GOOD.replace("rules:\n", ""), "rules.yaml line 11: rules[1].name: duplicate rule name 'hot'"),
    (GOOD.replace('    value: 85\n', ''), "rules.yaml line 2: rules[0].value: give either value or value_ref"),
    (GOOD.replace("    severity: warning\n", "    severity: warning\n    labels: {node: x}\n"),
     "rules.yaml line 9: rules[0].labels.node: this label is set by the evaluator"),
    ("rules: [\n", "rules.yaml line 2: not valid YAML"),
    ("rules:\n  - name: x\n    kind: event\n    severity: info\n    match: {code: 13}\n",
     "rules.yaml line 5: rules[0].match.kind: required field is missing"),
    ("rules:\n  - name: x\n    kind: event\n    severity: info\n    match: {kind: ecc, resolution: RESTART_APP}\n",
     "rules.yaml line 5: rules[0].match.resolution: resolution (the XID catalogue's bucket) needs kind: xid"),
    ("rules:\n  - name: x\n    kind: rate\n    severity: info\n    column: pcie_replay_total\n    value: 0\n",
     "rules.yaml line 2: rules[0].window: required field is missing"),
    ("rules:\n  - name: x\n    kind: absence\n    severity: info\n    target: gpu\n    annotations:\n"
     "      summary: '{interval}'\n",
     "rules.yaml line 7: rules[0].annotations.summary: unknown placeholder {interval}"),
])
def test_bad_rule_files_name_file_line_and_field(text: str, expected: str) -> None:
    assert error(text).startswith(expected)


def test_placeholders_are_checked_per_kind() -> None:
    # {xid} belongs to event rules: a threshold rule using it is a mistake caught at load time.
    assert "unknown placeholder {xid}" in error(GOOD.replace("at {value}", "XID {xid}"))
    ok = parse_rules("rules:\n  - name: x\n    kind: event\n    severity: critical\n    match: {kind: xid}\n"
                     "    annotations: {summary: 'XID {xid} {mnemonic}: {recommended_action}'}\n")
    assert ok[0].annotations["summary"] == "XID {xid} {mnemonic}: {recommended_action}"


def test_durations() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("1h30m") == 5400
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("500ms") == 0.5
    assert parse_duration(0) == 0
    for bad in ("5", "m5", "5 m", "", True, 5, None):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_render_is_safe_and_formats_values() -> None:
    assert templates.render("{node} GPU {gpu}: {value} °C, {missing}", {"node": "n1", "gpu": "0", "value": 88.123456,
                                                                        "missing": None}) == \
        "n1 GPU 0: 88.12 °C, unknown"
    assert templates.render("{{literal}} {value}", {"value": True}) == "{literal} true"
    assert templates.duration(5400) == "1h30m" and templates.duration(0) == "0s"
    assert [templates.fmt(v) for v in (10200.0, 750.1234, 0.79876, 3, None)] == ["10200", "750.1", "0.7988", "3",
                                                                                 "unknown"]
