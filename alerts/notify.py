"""Receivers: a notifier is ``send(notification) -> Delivery``. Three kinds, all from the same stored webhook
body: ``webhook`` (the Alertmanager body, version 4, byte for byte, optionally signed with
``X-Gpufleet-Signature: sha256=<HMAC-SHA256 of the body>``), ``slack`` (an incoming webhook: text and blocks)
and ``alertmanager`` (the alerts POSTed to ``<url>/api/v2/alerts``).

HTTP goes through an injected client (:class:`HttpClient`; :class:`UrllibClient` in production). Answers are
classified for the outbox: connection errors, timeouts, 5xx and 429 are worth retrying; other 4xx are not.
Error texts never carry a URL, a header or a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from alerts import payload
from alerts.config import AlertingConfig, BasicAuth, Receiver, Secret

SIGNATURE_HEADER = "X-Gpufleet-Signature"
SLACK_MAX_ALERTS = 10


def _user_agent() -> str:
    try:
        return f"gpufleet/{version('gpufleet')}"
    except PackageNotFoundError:  # pragma: no cover - a source checkout that is not installed
        return "gpufleet"


USER_AGENT = _user_agent()


@dataclass(frozen=True)
class Delivery:
    ok: bool
    http_status: int | None = None
    retryable: bool = False
    error: str | None = None
    latency_seconds: float | None = None


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""


class TransportError(Exception):
    """No HTTP answer (refused, reset, timed out, DNS); the message is safe to store and show."""


class HttpClient(Protocol):
    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> HttpResponse: ...


class HasPayload(Protocol):
    @property
    def payload(self) -> dict[str, Any]: ...


class Notifier(Protocol):
    def send(self, notification: HasPayload) -> Delivery: ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a POST must not silently turn into a GET elsewhere; 3xx is reported as it is


class UrllibClient:
    """The production client: the standard library, no redirects, proxies from the environment."""

    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(_NoRedirect())

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> HttpResponse:
        request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return HttpResponse(response.status, response.read(4096))
        except urllib.error.HTTPError as exc:
            try:
                text = exc.read(4096)
            except OSError:
                text = b""
            return HttpResponse(exc.code, text)
        except urllib.error.URLError as exc:
            raise TransportError(_describe(exc.reason, timeout)) from None
        except (OSError, ValueError) as exc:
            raise TransportError(_describe(exc, timeout)) from None


def _describe(reason: object, timeout: float) -> str:
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"timed out after {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ConnectionResetError):
        return "connection reset"
    if isinstance(reason, socket.gaierror):
        return "host name not resolved"
    if isinstance(reason, OSError):
        return f"connection failed ({type(reason).__name__}{f', errno {reason.errno}' if reason.errno else ''})"
    return f"request failed ({type(reason).__name__})"


def sign(body: bytes, secret: Secret | str) -> str:
    """The signature header value: ``sha256=<hex HMAC-SHA256 of the exact body bytes>``."""
    key = secret.reveal() if isinstance(secret, Secret) else secret
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, header: str | None, secret: str) -> bool:
    """For receivers (and tests): does the header match the body under this secret?"""
    return header is not None and hmac.compare_digest(header, sign(body, secret))


class HttpNotifier:
    """The common part: headers and auth, one POST, classification, scrubbing secrets from error text."""

    def __init__(self, receiver: Receiver, client: HttpClient, clock: Any = time.monotonic) -> None:
        self.receiver, self.client, self.clock = receiver, client, clock

    def target(self) -> str:
        assert self.receiver.url is not None
        return self.receiver.url.reveal()

    def render(self, notification: HasPayload) -> tuple[bytes, dict[str, str]]:
        raise NotImplementedError

    def send(self, notification: HasPayload) -> Delivery:
        body, headers = self.render(notification)
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
        if self.receiver.bearer_token is not None:
            headers["Authorization"] = "Bearer " + self.receiver.bearer_token.reveal()
        elif self.receiver.basic_auth is not None:
            pair = f"{self.receiver.basic_auth.username}:{self.receiver.basic_auth.password.reveal()}"
            headers["Authorization"] = "Basic " + b64encode(pair.encode()).decode()
        started = self.clock()
        try:
            response = self.client.post(self.target(), body, headers, self.receiver.timeout)
        except TransportError as exc:
            return Delivery(False, None, True, self._scrub(str(exc)), self.clock() - started)
        latency = self.clock() - started
        if 200 <= response.status < 300:
            return Delivery(True, response.status, False, None, latency)
        text = response.body[:200].decode("utf-8", "replace").strip()
        retryable = response.status >= 500 or response.status == 429
        error = f"HTTP {response.status}: {text}" if text else f"HTTP {response.status}"
        return Delivery(False, response.status, retryable, self._scrub(error), latency)

    def _scrub(self, text: str) -> str:
        """Hide anything secret an error text might echo: secrets, the URL, and its longer path segments and
        query values (webhook URLs often carry their token there)."""
        secrets = [s.reveal() for s in (self.receiver.secret, self.receiver.bearer_token,
                                        self.receiver.basic_auth.password if self.receiver.basic_auth else None)
                   if s is not None and len(s.reveal()) >= 4]
        if self.receiver.url is not None:
            parts = urlsplit(self.receiver.url.reveal())
            pieces = [parts.path, *parts.path.split("/"), *(value for _, value in parse_qsl(parts.query))]
            secrets += [self.receiver.url.reveal(), *(p for p in pieces if len(p) >= 8)]
        for value in sorted(set(secrets), key=len, reverse=True):
            text = text.replace(value, "***")
        return text


class WebhookNotifier(HttpNotifier):
    def render(self, notification: HasPayload) -> tuple[bytes, dict[str, str]]:
        body = payload.encode_webhook(notification.payload)
        headers = {SIGNATURE_HEADER: sign(body, self.receiver.secret)} if self.receiver.secret else {}
        return body, headers


def slack_message(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Slack incoming-webhook message summarising one notification: a text fallback and blocks."""
    alerts = body["alerts"]
    firing = [a for a in alerts if a["status"] == "firing"]
    resolved = [a for a in alerts if a["status"] == "resolved"]
    group = ", ".join(f"{k}={v}" for k, v in sorted(body["groupLabels"].items())) or "all alerts"
    icon = ":red_circle:" if body["status"] == "firing" else ":large_green_circle:"
    title = f"{icon} [{body['status'].upper()}{f':{len(firing)}' if firing else ''}] {group}"
    lines = []
    for alert in alerts[:SLACK_MAX_ALERTS]:
        note = alert["annotations"].get("summary") or alert["annotations"].get("description") or ""
        where = ", ".join(f"{k}={v}" for k, v in sorted(alert["labels"].items()) if k not in body["groupLabels"])
        mark = "resolved" if alert["status"] == "resolved" else "firing"
        lines.append(f"• *{alert['labels'].get('alertname', '')}* ({mark}) {note}" + (f" `{where}`" if where else ""))
    if len(alerts) > SLACK_MAX_ALERTS:
        lines.append(f"… and {len(alerts) - SLACK_MAX_ALERTS} more")
    counts = f"{len(firing)} firing, {len(resolved)} resolved"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:3000] or counts}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": counts + (
            f" · <{body['externalURL']}|gpufleet>" if body.get("externalURL") else "")}]},
    ]
    return {"text": f"{title} ({counts})", "blocks": blocks}


class SlackNotifier(HttpNotifier):
    def render(self, notification: HasPayload) -> tuple[bytes, dict[str, str]]:
        return json.dumps(slack_message(notification.payload)).encode(), {}


def alertmanager_alerts(body: Mapping[str, Any], now: float, firing_ttl: float) -> list[dict[str, Any]]:
    """The alerts in Alertmanager's v2 API shape. A firing alert ends ``firing_ttl`` from now unless
    repeated; a resolved one carries its real end."""
    out = []
    for alert in body["alerts"]:
        ends = alert["endsAt"] if alert["status"] == "resolved" else payload.format_time(now + firing_ttl)
        out.append({"labels": alert["labels"], "annotations": alert["annotations"], "startsAt": alert["startsAt"],
                    "endsAt": ends, "generatorURL": alert["generatorURL"]})
    return out


class AlertmanagerNotifier(HttpNotifier):
    def __init__(self, receiver: Receiver, client: HttpClient, clock: Any = time.monotonic,
                 wall: Any = time.time) -> None:
        super().__init__(receiver, client, clock)
        self.wall = wall

    def target(self) -> str:
        return super().target().rstrip("/") + "/api/v2/alerts"

    def render(self, notification: HasPayload) -> tuple[bytes, dict[str, str]]:
        alerts = alertmanager_alerts(notification.payload, self.wall(), self.receiver.firing_ttl)
        return json.dumps(alerts).encode(), {}


NOTIFIERS: dict[str, type[HttpNotifier]] = {"webhook": WebhookNotifier, "slack": SlackNotifier,
                                            "alertmanager": AlertmanagerNotifier}


def build_notifiers(config: AlertingConfig, client: HttpClient | None = None) -> dict[str, Notifier]:
    """One notifier per receiver that delivers somewhere (``type: none`` has none), keyed by receiver name."""
    client = client or UrllibClient()
    return {name: NOTIFIERS[r.type](r, client) for name, r in config.receivers.items() if r.type in NOTIFIERS}


def check_url(url: str) -> str:
    """A usable http(s) URL or ValueError with one line (which does not repeat the URL: it may hold a token)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError("invalid URL: bad port") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("invalid URL: must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("invalid URL: no host name")
    if port == 0:
        raise ValueError("invalid URL: bad port")
    return url.strip()


@dataclass
class _Sample:
    payload: dict[str, Any]


def sample_body(now: float | None = None, receiver: str = "test") -> dict[str, Any]:
    """A one-alert webhook body for ``gpufleet alerts test``."""
    now = time.time() if now is None else now
    labels = {"alertname": "GpufleetTest", "node": "test-node", "severity": "info"}
    alert = payload.webhook_alert(labels=labels, annotations={
        "summary": "gpufleet test notification", "description": "Sent by 'gpufleet alerts test'; no action needed."},
        starts_at=now, ends_at=None, resolved=False)
    group = {"alertname": "GpufleetTest", "node": "test-node"}
    return payload.webhook_body(receiver=receiver, group_key_=payload.group_key("{}", group), group_labels=group,
                                alerts=[alert])


def send_test(url: str, secret: str | None = None, timeout: float = 10, *,
              client: HttpClient | None = None) -> Delivery:
    """POST a sample alert (Alertmanager webhook body, signed when ``secret`` is given) to ``url``."""
    parts = urlsplit(check_url(url))
    auth = None
    if parts.username is not None:  # credentials in the URL become basic auth, as in the config file
        auth = BasicAuth(unquote(parts.username), Secret(unquote(parts.password or "")))
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    receiver = Receiver("test", "webhook", url=Secret(urlunsplit(parts)), timeout=timeout, basic_auth=auth,
                        secret=Secret(secret) if secret else None)
    return WebhookNotifier(receiver, client or UrllibClient()).send(_Sample(sample_body()))
