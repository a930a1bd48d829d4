"""The audit log on SQLite and PostgreSQL: record and read (filters, newest first), secrets kept out,
insert-only in the store itself, and the entries the command line writes: ``alerts silence`` and its
expiry as the OS user, the controller's configuration load (when it changes, by hash, never a secret)
and the dashboard's sign-in settings."""

from __future__ import annotations

import getpass
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from db import audit
from db.engine import make_engine, upgrade
from gpufleet import cli, dashboardcli
from tests.conftest import migrated

T0 = 1_764_000_000.0
SECRET = "hunter2-do-not-log-me"


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    with migrated(store_url) as eng:
        yield eng


def _rows(engine: Engine, where: str = "1=1") -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT * FROM audit_log WHERE {where} ORDER BY id")).all()


def test_record_and_read_newest_first_with_filters(engine: Engine) -> None:
    a = audit.record(engine, "ops@example.com", "silence.create", "node=node-03", {"duration_s": 3600.0},
                     now=T0, message="silence 1 created")
    b = audit.record(engine, "alice@login-01", "silence.expire", "silence 1", source=audit.CLI, now=T0 + 60)
    c = audit.record(engine, "vic@example.com", "bench.run", "node-03", {"suite": "quick"}, audit.DENIED,
                     now=T0 + 120, message="only operators may do this")
    d = audit.record(engine, "ops@example.com", "import.prometheus", "100% of node_03", None, audit.FAILED,
                     now=T0 + 180, message="Connection refused")
    entries = audit.read(engine)
    assert [e.id for e in entries] == [d, c, b, a]
    first = entries[-1]
    assert (first.ts, first.actor, first.source, first.action, first.target, first.outcome, first.message,
            first.details) == (T0, "ops@example.com", "dashboard", "silence.create", "node=node-03", "ok",
                               "silence 1 created", {"duration_s": 3600.0})
    ids = lambda **kw: [e.id for e in audit.read(engine, **kw)]  # noqa: E731
    assert ids(actors=["ops@example.com"]) == [d, a]
    assert ids(actions=["silence.create", "silence.expire"]) == [b, a]
    assert ids(outcomes=["denied", "failed"]) == [d, c]
    assert ids(sources=["cli"]) == [b]
    assert ids(start=T0 + 60, end=T0 + 120) == [c, b]
    assert ids(search="NODE-03") == [c, a]  # target, case-insensitive
    assert ids(search="refused") == [d]  # message
    assert ids(search="100%") == [d] and ids(search="_") == [d]  # wildcards are literal
    assert ids(limit=2) == [d, c]
    assert audit.choices(engine) == {"actors": ["alice@login-01", "ops@example.com", "vic@example.com"],
                                     "actions": ["bench.run", "import.prometheus", "silence.create",
                                                 "silence.expire"],
                                     "sources": ["cli", "dashboard"]}


def test_secrets_never_reach_the_log(engine: Engine) -> None:
    audit.record(engine, "ops@example.com", "config.load", "receivers", {
        "url": "https://hooks.example.com", "secret": SECRET, "basic_auth": {"username": "u", "password": SECRET},
        "receivers": [{"bearer_token": SECRET, "name": "ops"}], "API_KEY": SECRET, "when": Path("/etc/x")})
    entry = audit.read(engine)[0]
    assert entry.details == {"url": "https://hooks.example.com", "secret": "<redacted>",
                             "basic_auth": {"username": "u", "password": "<redacted>"},
                             "receivers": [{"bearer_token": "<redacted>", "name": "ops"}], "API_KEY": "<redacted>",
                             "when": "/etc/x"}
    assert SECRET not in json.dumps([tuple(r) for r in _rows(engine)], default=str)


@pytest.mark.parametrize("statement", ["UPDATE audit_log SET outcome = 'ok'", "DELETE FROM audit_log"])
def test_the_store_refuses_to_change_or_delete_entries(engine: Engine, statement: str) -> None:
    audit.record(engine, "vic@example.com", "bench.run", "node-03", outcome=audit.DENIED)
    with pytest.raises(DBAPIError, match="insert-only"), engine.begin() as conn:
        conn.execute(text(statement))
    assert [r.outcome for r in _rows(engine)] == ["denied"]


def test_postgresql_refuses_truncate(pg_url: str) -> None:
    eng = make_engine(pg_url)
    upgrade(eng)
    audit.record(eng, "a@x.org", "silence.create", "node=n")
    with pytest.raises(DBAPIError, match="insert-only"), eng.begin() as conn:
        conn.execute(text("TRUNCATE audit_log"))
    assert len(_rows(eng)) == 1
    eng.dispose()


def test_bad_entries_are_refused(engine: Engine) -> None:
    for kwargs in ({"outcome": "maybe"}, {"actor": ""}, {"action": "x" * 65}):
        args = {"actor": "a@x.org", "action": "silence.create", **kwargs}
        with pytest.raises(ValueError):
            audit.record(engine, args.pop("actor"), args.pop("action"), **args)
    assert _rows(engine) == []


def test_an_audited_block_records_ok_or_failed(engine: Engine) -> None:
    with audit.action(engine, "ops@example.com", "silence.create", "node=n1", {"comment": "c"},
                      source=audit.DASHBOARD) as act:
        act.details["silence_id"] = 7
        act.message = "silence 7 created"
    with pytest.raises(RuntimeError), audit.action(engine, "ops@example.com", "silence.expire", "silence 9",
                                                   source=audit.DASHBOARD):
        raise RuntimeError("no silence with id 9\nmore detail")
    ok, failed = audit.read(engine)[::-1]
    assert (ok.outcome, ok.message, ok.details) == ("ok", "silence 7 created", {"comment": "c", "silence_id": 7})
    assert (failed.outcome, failed.message) == ("failed", "no silence with id 9")


def test_a_configuration_is_recorded_only_when_it_changes(engine: Engine) -> None:
    first = audit.record_change(engine, "root@ctl", "config.load", "alerting config /etc/a.yaml",
                                {"sha256": {"/etc/a.yaml": "aa"}}, source=audit.CONTROLLER)
    same = audit.record_change(engine, "root@ctl-2", "config.load", "alerting config /etc/a.yaml",
                               {"sha256": {"/etc/a.yaml": "aa"}}, source=audit.CONTROLLER)
    changed = audit.record_change(engine, "root@ctl", "config.load", "alerting config /etc/a.yaml",
                                  {"sha256": {"/etc/a.yaml": "bb"}}, source=audit.CONTROLLER)
    back = audit.record_change(engine, "root@ctl", "config.load", "alerting config /etc/a.yaml",
                               {"sha256": {"/etc/a.yaml": "aa"}}, source=audit.CONTROLLER)
    assert first is not None and same is None and changed is not None and back is not None


# -- the command line ---------------------------------------------------------------------------


def _cli(*argv: str) -> int:
    return cli.main(list(argv))


def test_cli_silence_and_expire_are_audited_as_the_os_user(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    actor = audit.os_user()
    assert actor.startswith(getpass.getuser() + "@")
    assert _cli("alerts", "silence", "node=node-03", "--duration", "1h", "--comment", "fan swap",
                "--db", store_url) == 0
    sid = int(capsys.readouterr().out.split()[1])
    assert _cli("alerts", "silence", "--expire", str(sid), "--db", store_url) == 0
    assert _cli("alerts", "silence", "--expire", str(sid), "--db", store_url) == 2  # already expired
    assert _cli("alerts", "silence", "--expire", "999", "--db", store_url) == 2  # no such silence
    assert _cli("alerts", "silence", "node", "--db", store_url) == 2  # a bad matcher
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("gpufleet: error: ") for line in err)
    eng = make_engine(store_url)
    entries = audit.read(eng)[::-1]
    with eng.connect() as conn:
        created_by = conn.execute(text("SELECT created_by FROM silences WHERE id = :i"), {"i": sid}).scalar_one()
    eng.dispose()
    assert [(e.actor, e.source, e.action, e.target, e.outcome) for e in entries] == [
        (actor, "cli", "silence.create", "node=node-03", "ok"),
        (actor, "cli", "silence.expire", f"silence {sid}", "ok"),
        (actor, "cli", "silence.expire", f"silence {sid}", "failed"),
        (actor, "cli", "silence.expire", "silence 999", "failed"),
        (actor, "cli", "silence.create", "node", "failed"),
    ]
    assert entries[0].details == {"duration_s": 3600.0, "comment": "fan swap", "author": None, "silence_id": sid}
    assert entries[0].message == f"silence {sid} created for 1h"
    assert entries[2].message == f"no active silence {sid}" and entries[3].message == "no silence with id 999"
    assert created_by == actor  # no --author: the OS user


def test_controller_config_load_is_audited_by_hash_when_it_changes(sqlite_url: str, tmp_path: Path) -> None:
    config = tmp_path / "alerting.yaml"

    def write(url: str) -> None:
        config.write_text(f"route: {{receiver: ops}}\nreceivers:\n  - name: ops\n    type: webhook\n"
                          f"    url: {url}\n    secret: {SECRET}\n")

    write("https://hooks.example.com/a")
    for _ in range(2):
        assert _cli("controller", "run", "--config", str(config), "--once", "--db", sqlite_url) == 0
    write("https://hooks.example.com/b")
    assert _cli("controller", "run", "--config", str(config), "--once", "--db", sqlite_url) == 0
    eng = make_engine(sqlite_url)
    entries = audit.read(eng, actions=["config.load"])[::-1]
    dump = json.dumps([tuple(r) for r in _rows(eng)], default=str)
    eng.dispose()
    assert len(entries) == 2  # the second start had the same file
    assert entries[1].details["sha256"] == {str(config.resolve()): hashlib.sha256(config.read_bytes()).hexdigest()}
    assert entries[0].details["sha256"] != entries[1].details["sha256"]
    assert (entries[1].source, entries[1].target, entries[1].details["receivers"]) == (
        "controller", f"alerting config {config.resolve()}", ["ops"])
    assert SECRET not in dump and "hooks.example.com" not in dump


def test_dashboard_access_settings_are_audited_when_they_change(sqlite_url: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    eng = make_engine(sqlite_url)
    upgrade(eng)
    (tmp_path / "client").write_text(SECRET)

    def start(*extra: str) -> None:
        args = cli.build_parser().parse_args([
            "dashboard", "--oidc-metadata-url", "https://id.example.com/.well-known/openid-configuration",
            "--oidc-client-id", "gpufleet", "--oidc-client-secret-file", str(tmp_path / "client"), *extra])
        with dashboardcli.secrets_files(args, sqlite_url):
            pass

    start("--operator-emails", "a@x.org")
    start("--operator-emails", "a@x.org")  # a random cookie secret each start is not a change
    start("--operator-emails", "a@x.org,b@x.org")
    entries = audit.read(eng, actions=["config.load"])[::-1]
    dump = json.dumps([tuple(r) for r in _rows(eng)], default=str)
    eng.dispose()
    assert [e.details["operator_emails"] for e in entries] == [["a@x.org"], ["a@x.org", "b@x.org"]]
    assert entries[0].details["mode"] == "sign-in" and entries[0].target == "dashboard on 127.0.0.1:8501"
    assert entries[0].details["providers"] == {"default": {
        "server_metadata_url": "https://id.example.com/.well-known/openid-configuration", "client_id": "gpufleet"}}
    assert SECRET not in dump


# -- the Audit page (AppTest, through the real router) ---------------------------------------------


@pytest.fixture
def audited_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    from tests.dashboard import seed

    url = f"sqlite:///{tmp_path / 'store.db'}"
    eng = seed.seed(url)
    monkeypatch.setenv("GPUFLEET_DB_URL", url)
    monkeypatch.setenv("GPUFLEET_DASHBOARD_NOW", str(seed.NOW))
    yield eng
    eng.dispose()


def _audit_page() -> Any:
    from streamlit.testing.v1 import AppTest

    from tests.dashboard.conftest import APP

    at = AppTest.from_file(str(APP), default_timeout=30).run()
    at.switch_page("views/audit.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_audit_page_lists_newest_first_filters_and_offers_no_edit(audited_store: Engine) -> None:
    from tests.dashboard import seed

    audit.record(audited_store, "ops@example.com", "silence.create", "node=node-a", {"silence_id": 3},
                 now=seed.NOW - 3000, message="silence 3 created for 1h")
    audit.record(audited_store, "vic@example.com", "bench.run", "node-b", None, audit.DENIED, now=seed.NOW - 2000)
    audit.record(audited_store, "alice@login-01", "silence.expire", "silence 3", source=audit.CLI, now=seed.NOW - 1000)
    audit.record(audited_store, "old@example.com", "silence.create", "node=x", now=seed.NOW - 86400)  # out of range
    at = _audit_page()
    table = at.dataframe[0].value
    assert table["who"].tolist() == ["alice@login-01", "vic@example.com", "ops@example.com"]
    assert table["via"].tolist() == ["cli", "dashboard", "dashboard"]
    assert table["outcome"].tolist() == ["ok", "denied", "ok"]
    assert table.iloc[2]["details"] == "silence_id=3" and table.iloc[2]["result"] == "silence 3 created for 1h"
    assert at.get("plotly_chart")
    assert not at.button and not at.get("data_editor")  # nothing here changes the log
    at.multiselect(key="audit_outcome").select("denied").run()
    assert at.dataframe[0].value["who"].tolist() == ["vic@example.com"]
    at.multiselect(key="audit_outcome").unselect("denied").run()
    at.text_input(key="audit_search").input("SILENCE 3").run()
    assert at.dataframe[0].value["action"].tolist() == ["silence.expire", "silence.create"]


def test_audit_page_on_an_empty_log_and_an_old_schema(audited_store: Engine) -> None:
    at = _audit_page()
    assert not at.dataframe and at.get("plotly_chart")
    assert any("No action or configuration change" in c.value for c in at.caption)
    with audited_store.begin() as conn:
        conn.execute(text("DROP TABLE audit_log"))
    at = _audit_page()
    assert any("gpufleet db upgrade" in i.value for i in at.info)
