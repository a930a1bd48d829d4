"""Silences and their matchers: parsing with clear errors, Alertmanager's matching, create / list / expire."""

from __future__ import annotations

import pytest

from alerts.matchers import Matcher, MatcherError, matchers_string, parse_matcher
from alerts.silences import create_silence, expire_silence, is_silenced, list_silences
from tests.alerts.harness import T0, store


@pytest.mark.parametrize(("text", "name", "op", "value"), [
    ("node=node-03", "node", "=", "node-03"),
    (" node = node-03 ", "node", "=", "node-03"),
    ('alertname=~"Xid.*"', "alertname", "=~", "Xid.*"),
    ("alertname=~Xid.*", "alertname", "=~", "Xid.*"),
    ('severity!="info"', "severity", "!=", "info"),
    ("gpu!~[0-3]", "gpu", "!~", "[0-3]"),
    ('summary="say \\"hi\\" \\\\ now"', "summary", "=", 'say "hi" \\ now'),
    ("model=", "model", "=", ""),
])
def test_parse_matcher(text: str, name: str, op: str, value: str) -> None:
    matcher = parse_matcher(text)
    assert (matcher.name, matcher.op, matcher.value) == (name, op, value)
    assert parse_matcher(str(matcher)) == matcher  # the printed form reads back


@pytest.mark.parametrize(("text", "problem"), [
    ("node", "expected NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX"),
    ("=x", "expected NAME=VALUE"),
    ("3node=x", "expected NAME=VALUE"),
    ('node=a"b', "quote the whole value"),
    ('node="x', "unterminated quoted value"),
    ("alertname=~Xid(", "invalid regular expression 'Xid('"),
])
def test_bad_matchers_are_one_clear_line(text: str, problem: str) -> None:
    with pytest.raises(MatcherError) as info:
        parse_matcher(text)
    assert problem in str(info.value) and "\n" not in str(info.value) and repr(text) in str(info.value)


def test_matching_is_alertmanagers() -> None:
    labels = {"alertname": "gpu_xid_fatal", "node": "node-03", "gpu": "1"}
    assert parse_matcher("alertname=~gpu_xid.*").matches(labels)
    assert not parse_matcher("alertname=~xid").matches(labels)  # anchored: a substring is not a match
    assert parse_matcher("team!=ml").matches(labels)  # absent label is the empty string
    assert parse_matcher('team=""').matches(labels) and not parse_matcher("team=~.+").matches(labels)
    assert parse_matcher("gpu!~[2-7]").matches(labels) and not parse_matcher("gpu!~[0-3]").matches(labels)
    assert Matcher.from_json(parse_matcher("gpu!~[0-3]").to_json()) == parse_matcher("gpu!~[0-3]")
    assert parse_matcher("a=~x").to_json() == {"name": "a", "value": "x", "isRegex": True, "isEqual": True}
    assert matchers_string([parse_matcher("z=1"), Matcher("a", "=", 'q\\"\n')]) == '{a="q\\\\\\"\\n",z="1"}'


def test_create_list_expire(store_url: str) -> None:
    engine = store(store_url)
    first = create_silence(engine, ["node=node-03", 'alertname=~"gpu_xid.*"'], 3600, "reseating GPU 1", "alice",
                           now=T0)
    second = create_silence(engine, ["node=node-04"], 60, None, None, now=T0 + 1)
    active = list_silences(engine, now=T0 + 30)
    assert [s.id for s in active] == [second, first]
    assert active[1].matchers_text == ['node="node-03"', 'alertname=~"gpu_xid.*"']
    assert (active[1].comment, active[1].created_by, active[1].state) == ("reseating GPU 1", "alice", "active")
    assert active[1].ends_at == T0 + 3600
    assert is_silenced({"alertname": "gpu_xid_fatal", "node": "node-03"}, active) == [first]
    assert is_silenced({"alertname": "gpu_lost", "node": "node-03"}, active) == []
    assert [s.id for s in list_silences(engine, now=T0 + 61)] == [first]  # the 60 s one ran out
    assert [s.state for s in list_silences(engine, include_expired=True, now=T0 + 61)] == ["expired", "active"]
    assert expire_silence(engine, first, now=T0 + 100) is True
    assert expire_silence(engine, first, now=T0 + 200) is False
    assert list_silences(engine, now=T0 + 100) == []
    gone = list_silences(engine, include_expired=True, now=T0 + 100)
    assert gone[1].ends_at == T0 + 100 and gone[1].state == "expired"
    with pytest.raises(ValueError, match="no silence with id 999"):
        expire_silence(engine, 999)
    engine.dispose()


def test_silences_that_would_mute_everything_or_nothing_are_refused(sqlite_url: str) -> None:
    engine = store(sqlite_url)
    with pytest.raises(ValueError, match="every alert"):
        create_silence(engine, ["team!=ml"], 60, "", "")
    with pytest.raises(ValueError, match="at least one matcher"):
        create_silence(engine, [], 60, "", "")
    with pytest.raises(ValueError, match="duration must be positive"):
        create_silence(engine, ["node=a"], 0, "", "")
    with pytest.raises(MatcherError, match="invalid matcher 'node'"):
        create_silence(engine, ["node"], 60, "", "")
    assert list_silences(engine, include_expired=True) == []
