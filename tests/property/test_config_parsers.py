"""Every configuration parser, fed damaged and random input, returns its result or raises its own one-line error
class, never anything else (a traceback for the user)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import alerts
from agent.config import AgentConfig, ConfigError, load_config
from alerts.config import AlertingConfig, parse_config
from alerts.config import ConfigError as AlertingConfigError
from alerts.notify import check_url
from alerts.rulefile import RuleError
from alerts.rules import parse_rules
from tests.property.strategies import FAST, TEXT, damaged

AGENT_YAML = """\
db_url: sqlite:////tmp/x.db
interval: 5
node_name: gpu-01
cluster: prod
metrics_addr: 127.0.0.1:9403
filesystem_paths: [/, /data]
kernel_log: /dev/kmsg
interfaces_exclude: [lo, docker0]
auto_migrate: false
labels: {rack: r1, row: "2"}
process_privacy: full
spool_max_bytes: 1048576
"""

ALERTING_YAML = """\
external_url: https://gpufleet.example.com
generator_url: "{external_url}/?node={node}"
route:
  receiver: ops
  group_by: [alertname, node]
  group_wait: 30s
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      continue: true
    - match_re: {alertname: "gpu_xid.*"}
      receiver: chat
receivers:
  - name: ops
    type: webhook
    url: https://hooks.example.com/gpufleet
    secret_env: HOOK_SECRET
    max_alerts: 5
  - name: pager
    type: alertmanager
    url: http://alertmanager:9093
    basic_auth: {username: am, password: pw}
  - name: chat
    type: slack
    url: https://hooks.slack.com/services/T/B/X
inhibit_rules:
  - source_matchers: ['alertname="node_down"']
    target_matchers: ['gpu=~".+"']
    equal: [node]
delivery: {backoff_base: 1s, max_attempts: 3}
"""

RULES_YAML = (Path(alerts.__file__).parent / "default_rules.yaml").read_text()


@FAST
@given(damaged(AGENT_YAML))
def test_agent_config(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "agent.yaml"
        path.write_text(text)
        try:
            result = load_config(str(path), env={})
        except ConfigError as exc:
            assert "\n" not in str(exc).strip()
        else:
            assert isinstance(result, AgentConfig)


@FAST
@given(st.dictionaries(st.sampled_from(["GPUFLEET_INTERVAL", "GPUFLEET_METRICS_ADDR", "GPUFLEET_PROCESS_PRIVACY",
                                        "GPUFLEET_NODE_NAME", "GPUFLEET_METRICS_BASIC_AUTH_USER"]),
                       st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                               max_size=20)))
def test_agent_environment(env: dict[str, str]) -> None:
    try:
        assert isinstance(load_config(env=env), AgentConfig)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc), str(exc)


@FAST
@given(damaged(ALERTING_YAML))
def test_alerting_config(text: str) -> None:
    try:
        result = parse_config(text, "alerting.yaml", env={"HOOK_SECRET": "s"})
    except AlertingConfigError as exc:
        assert str(exc).startswith("alerting.yaml") and "\n" not in str(exc)
    else:
        assert isinstance(result, AlertingConfig)


@pytest.mark.parametrize("cut", [0.25, 0.5, 0.75])
def test_rule_file_cut_at_quarters(cut: float) -> None:
    try:
        parse_rules(RULES_YAML[: int(len(RULES_YAML) * cut)], "rules.yaml")
    except RuleError as exc:
        assert str(exc).startswith("rules.yaml") and "\n" not in str(exc).strip(), str(exc)


@FAST
@given(damaged(RULES_YAML))
def test_rule_file(text: str) -> None:
    try:
        rules = parse_rules(text, "rules.yaml")
    except RuleError as exc:
        assert "\n" not in str(exc).strip()
    else:
        assert isinstance(rules, list)


@FAST
@given(st.one_of(TEXT, st.builds(lambda s, h, p, rest: f"{s}://{h}{p}{rest}",
                                 st.sampled_from(["http", "https", "ftp", ""]),
                                 st.text(max_size=12), st.sampled_from(["", ":", ":0", ":99999", ":443", ":x"]),
                                 TEXT)))
def test_webhook_url(url: str) -> None:
    try:
        assert check_url(url) == url.strip()
    except ValueError as exc:
        assert str(exc).startswith("invalid URL")
