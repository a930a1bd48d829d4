"""The alerting configuration: the documented example loads; every mistake is one line naming the file, the
line and the field; secrets come from the file, the environment or a file and never show."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

import alerts.config
from alerts.config import ConfigError, Secret, default_config, load_config, parse_config
from alerts.fields import parse_duration
from alerts.notify import HttpResponse, WebhookNotifier, build_notifiers, sample_body
from tests.alerts.harness import Recorder

GOOD = """\
route:
  receiver: ops
receivers:
  - name: ops
    type: webhook
    url: https://hooks.example.com/gpufleet
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "alerting.yaml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env=env or {})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "alerting.yaml"))
    return message.removeprefix(str(tmp_path / "alerting.yaml"))


def test_the_documented_example_loads(tmp_path: Path) -> None:
    doc = alerts.config.__doc__ or ""
    example = "\n".join(line[4:] for line in doc.split("::", 1)[1].splitlines() if line.startswith("    "))
    (tmp_path / "token").write_text("t0ken\n")
    (tmp_path / "slack-url").write_text("https://hooks.slack.com/services/T0/B0/XyZ\n")
    example = example.replace("/etc/gpufleet/", f"{tmp_path}/")
    cfg = parse_config(example, "example.yaml", env={"GPUFLEET_WEBHOOK_SECRET": "hmac-key"})
    assert set(cfg.receivers) == {"ops", "hardware", "pager", "nowhere"}
    ops = cfg.receivers["ops"]
    assert ops.secret == Secret("hmac-key") and ops.bearer_token == Secret("t0ken") and ops.timeout == 10
    assert cfg.receivers["hardware"].url == Secret("https://hooks.slack.com/services/T0/B0/XyZ")
    assert cfg.receivers["hardware"].send_resolved is False and cfg.receivers["nowhere"].type == "none"
    assert cfg.receivers["pager"].firing_ttl == 4.5 * 3600
    critical, xid = cfg.route.routes
    assert critical.receiver == "pager" and critical.continue_ and critical.key == '{}/{severity="critical"}'
    assert (critical.group_wait, critical.group_interval, critical.repeat_interval) == (30, 300, 4 * 3600)
    assert xid.group_by == ("alertname", "node")
    assert cfg.external_url == "https://gpufleet.example.com"
    assert cfg.generator_url_for("abc", "r", {"node": "n 1"}) == "https://gpufleet.example.com/?node=n%201"
    assert cfg.retry.max_attempts is None and cfg.retry.max_age == 86400 and cfg.retry.claim_timeout == 120
    assert cfg.inhibit_rules[0].equal == ("node",)


def test_defaults_without_a_file() -> None:
    cfg = load_config(None)
    assert cfg == default_config()
    assert cfg.route.receiver == "default" and cfg.receivers["default"].type == "none"
    assert (cfg.route.group_by, cfg.route.group_wait, cfg.route.group_interval, cfg.route.repeat_interval) == (
        ("alertname", "node"), 30, 300, 4 * 3600)
    assert [str(m) for m in cfg.inhibit_rules[0].source_matchers] == ['alertname="node_down"']
    assert build_notifiers(cfg) == {}


def test_children_inherit_and_group_by_everything(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD.replace("  receiver: ops\n", """\
  receiver: ops
  group_by: ['...']
  group_wait: 1m
  repeat_interval: 1h30m
  routes:
    - match_re: {node: "n.*"}
      group_interval: 10s
      routes:
        - matchers: [gpu!=""]
          group_by: [gpu]
""")))
    child = cfg.route.routes[0]
    grandchild = child.routes[0]
    assert child.group_by is None and child.group_wait == 60 and child.repeat_interval == 5400
    assert (grandchild.group_by, grandchild.group_interval, grandchild.receiver) == (("gpu",), 10, "ops")
    assert grandchild.key == '{}/{node=~"n.*"}/{gpu!=""}' and grandchild.id == '{}/{node=~"n.*"}/0/{gpu!=""}/0'
    assert cfg.route.group_labels({"a": "1", "b": "2"}) == {"a": "1", "b": "2"}


@pytest.mark.parametrize(("text", "expected"), [
    ("route: [receiver: ops\n", " line 2: not valid YAML (expected ',' or ']'"),
    ("route:\n  receiver: ops\n\treceivers: []\n", " line 3: not valid YAML"),
    (GOOD.replace("type: webhook", "type: pagerduty"),
     " line 5: receivers[0].type: unknown receiver type 'pagerduty' (known: webhook, slack, alertmanager, none)"),
    (GOOD.replace("https://hooks.example.com/gpufleet", "hooks.example.com/gpufleet"),
     " line 6: receivers[0].url: not a valid URL: expected http:// or https://"),
    (GOOD.replace("https://hooks.example.com/gpufleet", "https://:99999/x"),
     " line 6: receivers[0].url: not a valid URL (bad port or brackets)"),
    (GOOD.replace("  receiver: ops", "  receiver: pager"),
     " line 2: route.receiver: unknown receiver 'pager' (known: ops)"),
    (GOOD.replace("  receiver: ops", "  receiver: ops\n  routes:\n    - receiver: opz\n      matchers: [a=b]"),
     " line 4: route.routes[0].receiver: unknown receiver 'opz' (known: ops)"),
    (GOOD.replace("  receiver: ops", "  receiver: ops\n  routes:\n    - matchers: ['a=~(']"),
     " line 4: route.routes[0].matchers: invalid matcher 'a=~(': invalid regular expression '(' for a"),
    (GOOD.replace("  receiver: ops", "  receiver: ops\n  group_wait: soon"),
     " line 3: route.group_wait: 'soon' is not a duration such as 30s, 5m or 4h"),
    (GOOD.replace("  receiver: ops", "  recever: ops"), " line 2: route.recever: unknown field (known: receiver, "),
    (GOOD.replace("    type: webhook", "    type: webhook\n    max_alerts: -1"),
     " line 6: receivers[0].max_alerts: expected a whole number, 0 or more"),
    (GOOD.replace("    type: webhook", "    type: slack\n    secret: x"),
     " line 6: receivers[0].secret: unknown field"),
    (GOOD + "  - name: ops\n", " line 7: receivers[1].name: duplicate receiver name 'ops'"),
    (GOOD.replace("  receiver: ops", "  receiver: ops\n  matchers: [a=b]"),
     " line 3: route.matchers: the root route matches every alert"),
    (GOOD + "inhibit_rules:\n  - target_matchers: [gpu=~.+]\n",
     " line 8: inhibit_rules[0].source_matchers: needs at least one matcher"),
    (GOOD + "surprise: 1\n", " line 7: surprise: unknown field (known: external_url, "),
    ("receivers: []\n", " line 1: route: is required"),
    (GOOD.replace("type: webhook\n    url: https://hooks.example.com/gpufleet",
                  "type: alertmanager\n    url: http://am:9093\n    firing_ttl: 1h"),
     " line 2: route.repeat_interval: receiver 'ops' forwards to Alertmanager with firing_ttl 3600s"),
    (GOOD.replace("    url: https://hooks.example.com/gpufleet", "    url_env: HOOK_URL"),
     " line 6: receivers[0].url_env: environment variable HOOK_URL is not set"),
    (GOOD.replace("    url: https://hooks.example.com/gpufleet", "    url_file: nope.txt"),
     " line 6: receivers[0].url_file: cannot read "),
    (GOOD + "    secret: a\n    secret_env: B\n", " line 8: receivers[0].secret_env: give only one of secret, "),
    (GOOD.replace("route:", "route:\n  receiver: ops\n  receiver: ops", 1), " line 3: not valid YAML (duplicate key"),
])
def test_mistakes_are_one_line_with_file_line_and_field(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text).startswith(expected)


def test_secret_files_go_through_the_store_secret_reader(tmp_path: Path) -> None:
    """An empty secret file is an error (not an empty HMAC key), and a file's secret is masked in logs."""
    from db.secrets import mask

    (tmp_path / "empty").write_text("\n")
    text = GOOD + "    secret_file: empty\n"
    with pytest.raises(ConfigError, match=r"receivers\[0\]\.secret_file: .*empty is empty"):
        parse_config(text, "alerting.yaml", base_dir=tmp_path)
    (tmp_path / "key").write_text("hmac-key-7f3a9c2e11\n")
    cfg = parse_config(GOOD + "    secret_file: key\n", "alerting.yaml", base_dir=tmp_path)
    assert cfg.receivers["ops"].secret is not None
    assert "hmac-key-7f3a9c2e11" not in mask("signed with hmac-key-7f3a9c2e11")


def test_secrets_from_file_env_and_inline_never_show(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "pw").write_text("file-password-123\n")
    text = """\
route: {receiver: hook}
receivers:
  - name: hook
    type: webhook
    url_env: HOOK_URL
    secret: inline-hmac-456
    basic_auth: {username: bot, password_file: pw}
  - name: chat
    type: slack
    url: https://user:url-password-789@hooks.slack.example/services/ZZZ-slack-token
"""
    env = {"HOOK_URL": "https://hooks.example/env-token-000"}
    secrets = ["file-password-123", "inline-hmac-456", "env-token-000", "url-password-789", "ZZZ-slack-token"]
    caplog.set_level(logging.DEBUG)
    cfg = load_config(write(tmp_path, text), env=env)
    hook, chat = cfg.receivers["hook"], cfg.receivers["chat"]
    assert hook.basic_auth is not None and hook.basic_auth.password.reveal() == "file-password-123"
    assert hook.url is not None and hook.url.reveal() == "https://hooks.example/env-token-000"
    assert chat.basic_auth is not None and chat.basic_auth.password.reveal() == "url-password-789"
    assert chat.url is not None and "url-password" not in chat.url.reveal()  # credentials moved out of the URL
    assert hook.endpoint == "https://hooks.example"
    client = Recorder([HttpResponse(400, b"bad token env-token-000 for /env-token-000"),
                       HttpResponse(500, b"")])
    note = SimpleNamespace(payload=sample_body(0.0))
    failed = WebhookNotifier(hook, client).send(note)
    assert failed.error is not None and failed.error.startswith("HTTP 400: bad token ***")
    shown = " ".join([repr(cfg), str(cfg), repr(hook), str(hook.secret), failed.error, caplog.text])
    assert "Secret('***')" in shown and "alerting config" in caplog.text
    for secret in secrets:
        assert secret not in shown
    with pytest.raises(ConfigError) as info:
        parse_config(text.replace("type: slack", "type: slack\n    timeout: soon"), "x.yaml", env=env,
                     base_dir=tmp_path)
    for secret in secrets:
        assert secret not in str(info.value)


def test_durations() -> None:
    assert parse_duration("1h30m") == 5400 and parse_duration("500ms") == 0.5 and parse_duration(12) == 12
    assert parse_duration("2d") == 172800 and parse_duration("1.5") == 1.5
    for bad in ("", "5 minutes", "m5", True):
        with pytest.raises(ValueError):
            parse_duration(bad)
