"""The controller's alerting configuration (YAML): route tree, receivers, inhibit rules, delivery settings.

Shaped like Alertmanager's, with one integration per receiver. Every mistake is one line naming the file,
the line and the field. Secret values (URLs, which may carry tokens, the HMAC ``secret``, ``bearer_token``,
basic-auth ``password``) are given inline, as ``<field>_env: VARIABLE`` or as ``<field>_file: PATH`` and are
kept in :class:`Secret`, which never shows them in a repr, a log line or an error::

    external_url: https://gpufleet.example.com      # externalURL of webhook bodies (the dashboard)
    generator_url: "{external_url}/?node={node}"    # per alert; {fingerprint}, {rule} and labels
    resolved_lookback: 24h                          # resolved alerts older than this are not routed
    route:                                          # the root matches everything
      receiver: ops
      group_by: [alertname, node]                   # ['...'] groups by every label
      group_wait: 30s                               # before a new group's first notification
      group_interval: 5m                            # between notifications of a changed group
      repeat_interval: 4h                           # between repeats of an unchanged firing group
      routes:                                       # children inherit receiver, group_by and timings
        - matchers: ['severity="critical"']         # also match: {k: v} and match_re: {k: regex}
          receiver: pager
          continue: true                            # keep trying the next siblings
        - matchers: ['alertname=~"gpu_xid.*"']
          receiver: hardware
    receivers:
      - name: ops
        type: webhook                               # Alertmanager webhook body, version 4
        url: https://hooks.example.com/gpufleet
        secret_env: GPUFLEET_WEBHOOK_SECRET         # X-Gpufleet-Signature: sha256=HMAC(body)
        bearer_token_file: /etc/gpufleet/token      # or basic_auth: {username, password[_env|_file]}
        timeout: 10s
        send_resolved: true                         # default true (slack: false)
        max_alerts: 0                               # 0: all
      - name: hardware
        type: slack
        url_file: /etc/gpufleet/slack-url           # incoming-webhook URL
      - name: pager
        type: alertmanager                          # POST <url>/api/v2/alerts
        url: http://alertmanager:9093
        firing_ttl: 4h30m                           # endsAt of firing alerts = send time + this
      - name: nowhere                               # type: none (the default) delivers nothing
    inhibit_rules:                                  # omitted: node_down mutes its node's GPU alerts
      - source_matchers: ['alertname="node_down"']  # [] turns inhibition off
        target_matchers: ['gpu=~".+"']
        equal: [node]
    delivery:
      backoff_base: 1s
      backoff_max: 5m
      max_age: 24h                                  # then the notification is failed
      max_attempts: 0                               # 0: no limit (max_age still holds)
      claim_timeout: 2m                             # a crashed controller's claim is taken over after this
    controller: {}                                  # the controller's own settings, passed through
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from alerts.fields import ConfigError, Fields, Secret, load_yaml
from alerts.matchers import Matcher, MatcherError, matchers_string, parse_matcher

__all__ = ["AlertingConfig", "BasicAuth", "ConfigError", "InhibitRule", "Receiver", "RetryPolicy", "Route",
           "Secret", "default_config", "load_config", "parse_config"]

log = logging.getLogger(__name__)

RECEIVER_TYPES = ("webhook", "slack", "alertmanager", "none")
DEFAULT_GROUP_BY = ("alertname", "node")


@dataclass(frozen=True)
class BasicAuth:
    username: str
    password: Secret


@dataclass(frozen=True)
class Receiver:
    name: str
    type: str
    url: Secret | None = None
    send_resolved: bool = True
    timeout: float = 10.0
    secret: Secret | None = None  # HMAC-SHA256 key for X-Gpufleet-Signature
    bearer_token: Secret | None = None
    basic_auth: BasicAuth | None = None
    max_alerts: int = 0
    firing_ttl: float = 4.5 * 3600  # alertmanager: endsAt of a firing alert = send time + this

    @property
    def endpoint(self) -> str:
        """Scheme, host and port only: safe to show."""
        if self.url is None:
            return "-"
        parts = urlsplit(self.url.reveal())
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


@dataclass(frozen=True)
class Route:
    receiver: str
    group_by: tuple[str, ...] | None = DEFAULT_GROUP_BY  # None: every label (``group_by: ['...']``)
    group_wait: float = 30.0
    group_interval: float = 300.0
    repeat_interval: float = 4 * 3600.0
    matchers: tuple[Matcher, ...] = ()
    continue_: bool = False
    routes: tuple[Route, ...] = ()
    key: str = "{}"  # Alertmanager's route key, the first part of the groupKey
    id: str = "{}"  # unique per route (the key plus sibling positions)

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """Alertmanager's depth-first walk: the deepest matching routes, siblings tried in order until one
        matches without ``continue``; a route none of whose children match is itself the match."""
        if not all(m.matches(labels) for m in self.matchers):
            return []
        found: list[Route] = []
        for child in self.routes:
            matched = child.match(labels)
            found.extend(matched)
            if matched and not child.continue_:
                break
        return found or [self]

    def walk(self) -> list[Route]:
        return [self, *(r for child in self.routes for r in child.walk())]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        if self.group_by is None:
            return dict(labels)
        return {k: v for k, v in labels.items() if k in self.group_by}


@dataclass(frozen=True)
class InhibitRule:
    """While a firing alert matches ``source``, alerts matching ``target`` with the same ``equal`` labels are
    muted (an alert matching both sides does not inhibit itself)."""

    source_matchers: tuple[Matcher, ...]
    target_matchers: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()


# Without ``inhibit_rules`` in the file: a node that is down (the ``node_down`` rule of the shipped pack) mutes
# the alerts of its GPUs, which are symptoms of it.
# And a GPU's fatal XID (its cause) mutes the same GPU's lost and missing alerts (its symptoms), so
# a GPU falling off the bus pages once.
DEFAULT_INHIBIT_RULES: tuple[InhibitRule, ...] = (
    InhibitRule((parse_matcher('alertname="node_down"'),), (parse_matcher('gpu=~".+"'),), ("node",)),
    InhibitRule((parse_matcher('alertname=~"gpu_xid_fatal|gpu_lost"'),),
                (parse_matcher('alertname=~"gpu_lost|gpu_missing"'),), ("node", "gpu")),
)


@dataclass(frozen=True)
class RetryPolicy:
    """Outbox retries: ``min(backoff_max, backoff_base * 2**attempts) * jitter(0.5..1.5)`` between tries, until
    delivered, a non-retryable answer, ``max_attempts`` (None: no limit) or ``max_age`` seconds after creation."""

    backoff_base: float = 1.0
    backoff_max: float = 300.0
    max_age: float = 24 * 3600.0
    max_attempts: int | None = None
    claim_timeout: float = 120.0  # a claim older than this (a crashed controller) may be taken over


@dataclass(frozen=True)
class AlertingConfig:
    route: Route
    receivers: Mapping[str, Receiver]
    inhibit_rules: tuple[InhibitRule, ...] = DEFAULT_INHIBIT_RULES
    external_url: str = ""  # externalURL in webhook bodies (the dashboard's address)
    generator_url: str = ""  # template: {external_url} {fingerprint} {rule} and label names
    resolved_lookback: float = 24 * 3600.0  # resolved alerts older than this are not routed any more
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    controller: Mapping[str, Any] = field(default_factory=dict)  # the controller's own section, as written
    source: str = "<default>"

    def generator_url_for(self, fingerprint: str, rule: str, labels: Mapping[str, str]) -> str:
        return _expand(self.generator_url, {**labels, "external_url": self.external_url,
                                            "fingerprint": fingerprint, "rule": rule})


def default_config() -> AlertingConfig:
    """No file: everything is routed to ``default``, which delivers nowhere; the default inhibit rule holds."""
    return AlertingConfig(route=Route(receiver="default"), receivers={"default": Receiver("default", "none")})


def _expand(template: str, values: Mapping[str, str]) -> str:
    return re.sub(r"\{([a-zA-Z_][a-zA-Z0-9_]*)\}",
                  lambda m: (values.get(m.group(1), "") if m.group(1) == "external_url"
                             else quote(str(values.get(m.group(1), "")), safe="")), template)


_RECEIVER_FIELDS = {
    "webhook": ("url", "secret", "bearer_token", "basic_auth", "max_alerts", "send_resolved", "timeout"),
    "slack": ("url", "send_resolved", "timeout"),
    "alertmanager": ("url", "bearer_token", "basic_auth", "firing_ttl", "timeout"),
    "none": (),
}
_SECRETS = ("url", "secret", "bearer_token")


def _url(section: Fields, key: str, secret: Secret | None) -> tuple[Secret, BasicAuth | None]:
    """Check an http(s) URL without ever echoing it; credentials in it become basic auth."""
    if secret is None:
        raise section.error(key, "is required (or url_env / url_file)")
    try:
        parts = urlsplit(secret.reveal().strip())
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        raise section.error(key, "not a valid URL (bad port or brackets)") from None
    if parts.scheme not in ("http", "https"):
        raise section.error(key, "not a valid URL: expected http:// or https://")
    if not parts.hostname or not port_ok:
        raise section.error(key, "not a valid URL: no host" if not parts.hostname else "not a valid URL: bad port")
    auth = None
    if parts.username is not None:
        auth = BasicAuth(unquote(parts.username), Secret(unquote(parts.password or "")))
        netloc = parts.netloc.rpartition("@")[2]
        return Secret(urlunsplit(parts._replace(netloc=netloc))), auth
    return Secret(secret.reveal().strip()), auth


def _receiver(section: Fields) -> Receiver:
    name = section.text("name", required=True)
    kind = section.text("type", "none")
    assert name is not None and kind is not None
    if kind not in RECEIVER_TYPES:
        raise section.error("type", f"unknown receiver type {kind!r} (known: {', '.join(RECEIVER_TYPES)})")
    allowed = _RECEIVER_FIELDS[kind]
    known = ("name", "type", *allowed, *(f"{s}_{x}" for s in _SECRETS if s in allowed for x in ("env", "file")))
    section = Fields(section.data, section.path, section.source, section.line, known, section.env, section.base)
    if kind == "none":
        return Receiver(name, kind, send_resolved=False)
    url, auth = _url(section, "url", section.secret("url"))
    if section.has("basic_auth"):
        sub = section.sub("basic_auth", ("username", "password", "password_env", "password_file"))
        password = sub.secret("password")
        auth = BasicAuth(sub.text("username", required=True) or "", password or Secret(""))
    bearer = section.secret("bearer_token") if "bearer_token" in allowed else None
    if bearer is not None and auth is not None:
        raise section.error("bearer_token", "give either bearer_token or basic_auth, not both")
    return Receiver(
        name, kind, url=url,
        send_resolved=section.flag("send_resolved", kind != "slack") if kind != "alertmanager" else True,
        timeout=section.duration("timeout", 10.0, positive=True),
        secret=section.secret("secret") if kind == "webhook" else None,
        bearer_token=bearer, basic_auth=auth,
        max_alerts=section.integer("max_alerts", 0) or 0,
        firing_ttl=section.duration("firing_ttl", 4.5 * 3600, positive=True),
    )


_ROUTE_FIELDS = ("receiver", "group_by", "group_wait", "group_interval", "repeat_interval", "matchers", "match",
                 "match_re", "continue", "routes")


def _route(section: Fields, parent: Route | None, index: int, receivers: Mapping[str, Receiver]) -> Route:
    receiver = section.text("receiver", parent.receiver if parent else None, required=parent is None)
    assert receiver is not None
    if receiver not in receivers:
        raise section.error("receiver", f"unknown receiver {receiver!r} (known: {', '.join(sorted(receivers))})")
    matchers = list(section.matchers("matchers"))
    for legacy, op in (("match", "="), ("match_re", "=~")):
        if section.has(legacy):
            values = section.data[legacy]
            if not isinstance(values, dict):
                raise section.error(legacy, "expected a mapping of label: value")
            try:
                matchers += [Matcher(str(k), op, str(v)) for k, v in values.items()]
            except MatcherError as exc:
                raise section.error(legacy, str(exc)) from None
    if parent is None and (matchers or section.has("continue")):
        raise section.error("matchers" if matchers else "continue", "the root route matches every alert; put "
                            "matchers and continue on its child routes")
    group_by: tuple[str, ...] | None = parent.group_by if parent else DEFAULT_GROUP_BY
    listed = section.strings("group_by")
    if listed is not None:
        group_by = None if "..." in listed else tuple(listed)
    base = parent or Route(receiver=receiver)
    key = matchers_string(matchers)
    route = Route(
        receiver=receiver, group_by=group_by,
        group_wait=section.duration("group_wait", base.group_wait),
        group_interval=section.duration("group_interval", base.group_interval, positive=True),
        repeat_interval=section.duration("repeat_interval", base.repeat_interval, positive=True),
        matchers=tuple(matchers), continue_=section.flag("continue", False),
        key=f"{parent.key}/{key}" if parent else key,
        id=f"{parent.id}/{key}/{index}" if parent else key,
    )
    if section.has("routes"):
        children = section.data["routes"]
        if not isinstance(children, list):
            raise section.error("routes", "expected a list of routes")
        kids = tuple(_route(section.sub("routes", _ROUTE_FIELDS, i), route, i, receivers)
                     for i in range(len(children)))
        route = replace(route, routes=kids)
    receiver_cfg = receivers[receiver]
    if receiver_cfg.type == "alertmanager" and receiver_cfg.firing_ttl <= route.repeat_interval + route.group_interval:
        raise section.error("repeat_interval", f"receiver {receiver!r} forwards to Alertmanager with firing_ttl "
                            f"{receiver_cfg.firing_ttl:g}s, which must exceed repeat_interval + group_interval "
                            f"({route.repeat_interval + route.group_interval:g}s) or alerts resolve between repeats")
    return route


def _inhibit_rule(section: Fields) -> InhibitRule:
    source, target = section.matchers("source_matchers"), section.matchers("target_matchers")
    if not source or not target:
        raise section.error("source_matchers" if not source else "target_matchers", "needs at least one matcher")
    return InhibitRule(source, target, tuple(section.strings("equal") or ()))


_TOP = ("external_url", "generator_url", "resolved_lookback", "route", "receivers", "inhibit_rules", "delivery",
        "controller")


def parse_config(text: str, source: str = "<config>", *, env: Mapping[str, str] | None = None,
                 base_dir: str | Path | None = None) -> AlertingConfig:
    """Parse and validate YAML text; ``source`` names it in errors, ``base_dir`` anchors relative *_file paths."""
    data = load_yaml(text, source)
    if data is None:
        data = {}
    top = Fields(data, "", source, 1, _TOP, os.environ if env is None else env, Path(base_dir or "."))
    receivers: dict[str, Receiver] = {}
    items = top.data.get("receivers") or []
    if not isinstance(items, list):
        raise top.error("receivers", "expected a list of receivers")
    for i in range(len(items)):
        sub = top.sub("receivers", ("name", "type", *{f for fs in _RECEIVER_FIELDS.values() for f in fs},
                                    *(f"{s}_{x}" for s in _SECRETS for x in ("env", "file"))), i)
        receiver = _receiver(sub)
        if receiver.name in receivers:
            raise sub.error("name", f"duplicate receiver name {receiver.name!r}")
        receivers[receiver.name] = receiver
    if not top.has("route"):
        raise top.error("route", "is required (a root route with a receiver)")
    if not receivers:
        raise top.error("receivers", "at least one receiver is required")
    route = _route(top.sub("route", _ROUTE_FIELDS), None, 0, receivers)
    rules = DEFAULT_INHIBIT_RULES
    if "inhibit_rules" in top.data:
        listed = top.data["inhibit_rules"] or []
        if not isinstance(listed, list):
            raise top.error("inhibit_rules", "expected a list of rules")
        rules = tuple(_inhibit_rule(top.sub("inhibit_rules", ("source_matchers", "target_matchers", "equal"), i))
                      for i in range(len(listed)))
    retry = RetryPolicy()
    if top.has("delivery"):
        d = top.sub("delivery", ("backoff_base", "backoff_max", "max_age", "max_attempts", "claim_timeout"))
        retry = RetryPolicy(d.duration("backoff_base", 1.0, positive=True), d.duration("backoff_max", 300.0),
                            d.duration("max_age", 86400.0, positive=True), d.integer("max_attempts", None) or None,
                            d.duration("claim_timeout", 120.0, positive=True))
    controller = top.data.get("controller") or {}
    if not isinstance(controller, dict):
        raise top.error("controller", "expected a mapping of settings")
    external = top.text("external_url", "") or ""
    if external:
        _url(top, "external_url", Secret(external))
    config = AlertingConfig(
        route=route, receivers=receivers, inhibit_rules=rules, external_url=external.rstrip("/"),
        generator_url=top.text("generator_url", "") or "",
        resolved_lookback=top.duration("resolved_lookback", 86400.0, positive=True), retry=retry,
        controller=controller, source=source)
    log.info("alerting config %s: %d receivers, %d routes, %d inhibit rules", source, len(receivers),
             len(route.walk()), len(rules))
    return config


def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> AlertingConfig:
    """Read the file (``None``: :func:`default_config`); raises :class:`ConfigError`."""
    if path is None:
        return default_config()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read alerting config {path}: {exc.strerror}") from None
    return parse_config(text, str(path), env=env, base_dir=Path(path).parent)
