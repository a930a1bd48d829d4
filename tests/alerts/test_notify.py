"""Receivers: the exact webhook bytes (a body captured from Alertmanager 0.25 itself), HMAC signatures, auth,
how answers are classified for retrying, Slack and Alertmanager shapes, and ``send_test`` against a real
HTTP server."""

from __future__ import annotations

import base64
import json
import time
from types import SimpleNamespace

import pytest

from alerts.config import BasicAuth, Receiver, Secret
from alerts.matchers import matchers_string, parse_matchers
from alerts.notify import (
    SIGNATURE_HEADER,
    AlertmanagerNotifier,
    HttpResponse,
    SlackNotifier,
    TransportError,
    UrllibClient,
    WebhookNotifier,
    sample_body,
    send_test,
    sign,
    slack_message,
    verify,
)
from alerts.payload import encode_webhook, fingerprint, format_time, group_key, parse_time, webhook_alert, webhook_body
from tests.alerts.harness import Behaviour, Recorder, port_is_closed
from tests.alerts.harness import Receiver as HttpReceiver
from tests.conftest import free_port

# Sent by prometheus-alertmanager 0.25.0 (Debian) to a webhook receiver named "hook.x" for two alerts posted
# through its v2 API, route matchers ['severity="critical"', 'node=~"n.*"'], group_by [alertname, node, node2],
# --web.external-url=http://gpufleet.test:9093. It pins the details: QuoteMeta'd receiver, HTML-safe escapes,
# \u0008 for backspace, raw DEL, trimmed fractions, the zero endsAt, Go's label-set order in groupKey, the
# alert order (fewer labels first) and the trailing newline.
CAPTURED = (
    b'{"receiver":"hook\\\\.x","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"X\\u003c\\u0026'
    b'\\u003e","node":"n1","node2":"z","severity":"critical"},"annotations":{"summary":"a\\u0008b\\u0001c\\u2028d '
    b'\xc3\xa9 \\"q\\" \\\\ \x7f"},"startsAt":"2026-01-02T03:04:05.1234Z","endsAt":"0001-01-01T00:00:00Z",'
    b'"generatorURL":"http://g/?a=1\\u0026b=2","fingerprint":"d624c2d143cc4c37"},{"status":"firing","labels":'
    b'{"alertname":"X\\u003c\\u0026\\u003e","gpu":"3","node":"n1","node2":"z","severity":"critical"},"annotations":'
    b'{"summary":"other"},"startsAt":"2026-01-02T03:04:05Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"",'
    b'"fingerprint":"bb6346c55357e592"}],"groupLabels":{"alertname":"X\\u003c\\u0026\\u003e","node":"n1","node2":'
    b'"z"},"commonLabels":{"alertname":"X\\u003c\\u0026\\u003e","node":"n1","node2":"z","severity":"critical"},'
    b'"commonAnnotations":{},"externalURL":"http://gpufleet.test:9093","version":"4","groupKey":"{}/{node=~\\"n.*'
    b'\\",severity=\\"critical\\"}:{alertname=\\"X\\u003c\\u0026\\u003e\\", node2=\\"z\\", node=\\"n1\\"}",'
    b'"truncatedAlerts":0}\n'
)


def test_webhook_body_is_byte_for_byte_alertmanagers() -> None:
    first = {"alertname": "X<&>", "node": "n1", "node2": "z", "severity": "critical"}
    second = {**first, "gpu": "3"}
    alerts = [
        webhook_alert(labels=second, annotations={"summary": "other"}, starts_at=parse_time("2026-01-02T03:04:05Z"),
                      ends_at=None, resolved=False),
        webhook_alert(labels=first, annotations={"summary": 'a\bb\x01c\u2028d é "q" \\ \x7f'},
                      starts_at=parse_time("2026-01-02T03:04:05.1234Z"), ends_at=None, resolved=False,
                      generator_url="http://g/?a=1&b=2"),
    ]
    route_key = "{}/" + matchers_string(parse_matchers(['severity="critical"', 'node=~"n.*"']))
    group = {"alertname": "X<&>", "node": "n1", "node2": "z"}
    body = webhook_body(receiver="hook.x", group_key_=group_key(route_key, group), group_labels=group, alerts=alerts,
                        external_url="http://gpufleet.test:9093")
    assert encode_webhook(body) == CAPTURED
    assert json.loads(CAPTURED) == body
    assert fingerprint(first) == "d624c2d143cc4c37"


def test_times_are_gos_rfc3339nano() -> None:
    assert format_time(None) == "0001-01-01T00:00:00Z"
    assert format_time(1_767_323_045.0) == "2026-01-02T03:04:05Z"
    assert format_time(1_767_323_045.5) == "2026-01-02T03:04:05.5Z"
    assert format_time(1_767_323_045.123456) == "2026-01-02T03:04:05.123456Z"
    assert parse_time("2026-01-02T05:04:05.25+02:00") == 1_767_323_045.25
    assert parse_time("0001-01-01T00:00:00Z") is None


def note(body: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(id=1, payload=body or sample_body(1_767_323_045.0))


def hook(**kw) -> Receiver:
    return Receiver("hook", "webhook", url=Secret("https://hooks.example/in/T0KEN-abcdef"), timeout=3, **kw)


def test_webhook_posts_the_exact_body_signed_with_auth() -> None:
    client = Recorder()
    delivery = WebhookNotifier(hook(secret=Secret("k3y"), bearer_token=Secret("tok-123")), client).send(note())
    assert delivery.ok and delivery.http_status == 200 and delivery.error is None and delivery.latency_seconds >= 0
    url, body, headers, timeout = client.calls[0]
    assert (url, timeout) == ("https://hooks.example/in/T0KEN-abcdef", 3)
    assert body == encode_webhook(note().payload)
    assert verify(body, headers[SIGNATURE_HEADER], "k3y") and not verify(body + b" ", headers[SIGNATURE_HEADER], "k3y")
    assert headers[SIGNATURE_HEADER] == sign(body, "k3y") and headers["Authorization"] == "Bearer tok-123"
    assert headers["Content-Type"] == "application/json" and headers["User-Agent"].startswith("gpufleet")
    WebhookNotifier(hook(basic_auth=BasicAuth("bot", Secret("pw"))), client).send(note())
    assert client.calls[1][2]["Authorization"] == "Basic " + base64.b64encode(b"bot:pw").decode()
    assert SIGNATURE_HEADER not in client.calls[1][2]


@pytest.mark.parametrize(("answer", "retryable", "error"), [
    (HttpResponse(500, b"boom"), True, "HTTP 500: boom"),
    (HttpResponse(503, b""), True, "HTTP 503"),
    (HttpResponse(429, b"slow down"), True, "HTTP 429: slow down"),
    (HttpResponse(400, b"x" * 300), False, "HTTP 400: " + "x" * 200),
    (HttpResponse(404, b"no such hook /in/T0KEN-abcdef"), False, "HTTP 404: no such hook ***"),
    (HttpResponse(302, b""), False, "HTTP 302"),
    (TransportError("connection refused"), True, "connection refused"),
    (TransportError("timed out after 3 s"), True, "timed out after 3 s"),
])
def test_answers_are_classified(answer, retryable: bool, error: str) -> None:
    delivery = WebhookNotifier(hook(), Recorder([answer])).send(note())
    assert not delivery.ok and delivery.retryable is retryable
    assert delivery.error == error
    assert delivery.http_status == (None if isinstance(answer, Exception) else answer.status)


def test_slack_message_summarises_the_group() -> None:
    labels = {"alertname": "gpu_xid_fatal", "node": "n1", "gpu": "2"}
    alerts = [webhook_alert(labels=labels, annotations={"summary": "XID 79 on GPU 2"}, starts_at=0, ends_at=None,
                            resolved=False),
              webhook_alert(labels={**labels, "gpu": "5"}, annotations={}, starts_at=0, ends_at=10, resolved=True)]
    body = webhook_body(receiver="chat", group_key_="{}:{}", group_labels={"alertname": "gpu_xid_fatal", "node": "n1"},
                        alerts=alerts, external_url="http://dash")
    message = slack_message(body)
    assert message["text"].startswith(":red_circle: [FIRING:1] alertname=gpu_xid_fatal, node=n1")
    assert "1 firing, 1 resolved" in message["text"]
    assert [b["type"] for b in message["blocks"]] == ["header", "section", "context"]
    section = message["blocks"][1]["text"]["text"]
    assert "*gpu_xid_fatal* (firing) XID 79 on GPU 2 `gpu=2`" in section and "(resolved)" in section
    client = Recorder()
    assert SlackNotifier(Receiver("chat", "slack", url=Secret("https://hooks.slack/x")), client).send(note(body)).ok
    assert json.loads(client.calls[0][1]) == message


def test_alertmanager_receiver_posts_v2_alerts() -> None:
    labels = {"alertname": "gpu_lost", "node": "n1", "gpu": "0"}
    alerts = [webhook_alert(labels=labels, annotations={"summary": "s"}, starts_at=100.0, ends_at=None,
                            resolved=False, generator_url="http://dash/?node=n1"),
              webhook_alert(labels={**labels, "gpu": "1"}, annotations={}, starts_at=100.0, ends_at=200.0,
                            resolved=True)]
    body = webhook_body(receiver="am", group_key_="{}:{}", group_labels={}, alerts=alerts)
    client = Recorder()
    receiver = Receiver("am", "alertmanager", url=Secret("http://am:9093/"), firing_ttl=600)
    assert AlertmanagerNotifier(receiver, client, wall=lambda: 1000.0).send(note(body)).ok
    url, sent, _, _ = client.calls[0]
    assert url == "http://am:9093/api/v2/alerts"
    assert json.loads(sent) == [
        {"labels": labels, "annotations": {"summary": "s"}, "startsAt": format_time(100.0),
         "endsAt": format_time(1600.0), "generatorURL": "http://dash/?node=n1"},
        {"labels": {**labels, "gpu": "1"}, "annotations": {}, "startsAt": format_time(100.0),
         "endsAt": format_time(200.0), "generatorURL": ""},
    ]


def test_send_test_against_a_real_server() -> None:
    server = HttpReceiver().start()
    try:
        delivery = send_test(server.url, secret="s3cret", timeout=5)
        assert delivery.ok and delivery.http_status == 200
        got = server.wait_accepted(1)[0]
        assert got.path == "/hook" and verify(got.body, got.headers[SIGNATURE_HEADER], "s3cret")
        body = json.loads(got.body)
        assert body["alerts"][0]["labels"]["alertname"] == "GpufleetTest" and body["version"] == "4"
        assert send_test(server.url.replace("http://", "http://bot:p%40ss@"), timeout=5).ok
        second = server.wait_accepted(2)[1]
        assert second.headers["Authorization"] == "Basic " + base64.b64encode(b"bot:p@ss").decode()
        assert SIGNATURE_HEADER not in second.headers
    finally:
        server.stop()


@pytest.mark.parametrize(("url", "problem"), [
    ("hooks.example.com/x", "must start with http:// or https://"),
    ("ftp://hooks.example.com/x", "must start with http:// or https://"),
    ("http:///x", "no host name"),
    ("http://h:99999999/x", "bad port"),
])
def test_send_test_refuses_malformed_urls(url: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        send_test(url)
    assert str(info.value) == f"invalid URL: {problem}"


def test_real_client_classifies_refused_and_slow_receivers() -> None:
    port = free_port()
    assert port_is_closed(port)
    refused = send_test(f"http://127.0.0.1:{port}/x", timeout=2)
    assert (refused.ok, refused.retryable, refused.error, refused.http_status) == (False, True, "connection refused",
                                                                                   None)
    slow = HttpReceiver(lambda _seen: Behaviour(200, delay=1.5)).start()
    try:
        started = time.monotonic()
        late = send_test(slow.url, timeout=0.5)
        assert time.monotonic() - started < 1.4
        assert (late.ok, late.retryable, late.error) == (False, True, "timed out after 0.5 s")
        assert slow.accepted == []
    finally:
        slow.stop()
    failing = HttpReceiver(lambda _seen: Behaviour(422, body=b'{"error":"bad alert"}')).start()
    try:
        answer = UrllibClient().post(failing.url, b"{}", {"Content-Type": "application/json"}, 2)
        assert answer == HttpResponse(422, b'{"error":"bad alert"}')
    finally:
        failing.stop()
