"""Dashboard sign-in and roles: role resolution (ID-token claim, e-mail allow-list), the sign-in flags
and the secrets file they become, the bind rule, and what each kind of visitor sees and may do in the
real app (AppTest with a faked ``st.user``). The full OpenID Connect flow is in ``test_oidc_e2e.py``."""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomllib
from sqlalchemy import create_engine, text
from streamlit.testing.v1 import AppTest

from dashboard import access, server
from dashboard.access import OPERATOR, VIEWER, Access, AccessError, Flags, RolePolicy
from dashboard.auth import resolve_user
from gpufleet import cli, dashboardcli
from tests.dashboard import seed
from tests.dashboard.conftest import APP

ALERTS = "views/alerts.py"
OPS, VIEWS = "ops@example.com", "viewer@example.com"
SIGN_IN = {"auth": {"redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": "c" * 40,
                    "client_id": "gpufleet", "client_secret": "s3cret",
                    "server_metadata_url": "http://127.0.0.1:9400/.well-known/openid-configuration"},
           "gpufleet": {"operator_emails": [OPS]}}


# -- role resolution ----------------------------------------------------------------------------


@pytest.mark.parametrize(("claims", "role"), [
    ({"groups": ["staff", "gpufleet-operators"]}, OPERATOR),
    ({"groups": "gpufleet-operators"}, OPERATOR),
    ({"groups": ["staff"]}, VIEWER),
    ({"groups": "gpufleet-operators-2"}, VIEWER),
    ({"realm_access": {"roles": ["gpufleet-operators"]}}, VIEWER),  # another claim
    ({}, VIEWER),
])
def test_role_from_a_claim(claims: dict[str, Any], role: str) -> None:
    assert RolePolicy(role_claim="groups", operator_role="gpufleet-operators").role_for(claims) == role


def test_a_dotted_role_claim_reaches_into_nested_claims() -> None:
    policy = RolePolicy(role_claim="realm_access.roles", operator_role="operator")
    assert policy.role_for({"realm_access": {"roles": ["operator"]}}) == OPERATOR
    assert policy.role_for({"realm_access": {"roles": ["viewer"]}}) == VIEWER
    assert policy.role_for({"realm_access": ["operator"]}) == VIEWER


@pytest.mark.parametrize(("claims", "role"), [
    ({"email": OPS}, OPERATOR),
    ({"email": "Ops@Example.COM", "email_verified": True}, OPERATOR),
    ({"email": OPS, "email_verified": False}, VIEWER),  # an unverified address proves nothing
    ({"email": VIEWS}, VIEWER),
    ({"sub": OPS}, VIEWER),
])
def test_role_from_the_email_allow_list(claims: dict[str, Any], role: str) -> None:
    policy = RolePolicy.from_section({"operator_emails": [" OPS@example.com "]})
    assert policy.role_for(claims) == role


def test_either_rule_makes_an_operator() -> None:
    policy = RolePolicy.from_section({"operator_emails": "a@x.org, b@x.org", "role_claim": "roles"})
    assert policy.operator_role == "operator" and policy.operator_emails == {"a@x.org", "b@x.org"}
    assert policy.role_for({"email": "b@x.org"}) == OPERATOR
    assert policy.role_for({"email": "c@x.org", "roles": ["operator"]}) == OPERATOR
    assert policy.role_for({"email": "c@x.org", "roles": ["viewer"]}) == VIEWER
    assert not RolePolicy().names_operators and policy.names_operators


def test_providers_need_redirect_uri_and_cookie_secret() -> None:
    assert access.providers(SIGN_IN["auth"]) == (None,)
    assert access.providers({**SIGN_IN["auth"], "cookie_secret": ""}) == ()
    named = {"redirect_uri": "x", "cookie_secret": "y", "corp": {k: "v" for k in access.PROVIDER_KEYS},
             "half": {"client_id": "v"}, "client_kwargs": {k: "v" for k in access.PROVIDER_KEYS}}
    assert access.providers(named) == ("corp",)
    assert Access.from_secrets(SIGN_IN).mode == "sign-in"
    assert Access.from_secrets({"gpufleet": {"behind_proxy": True}}).mode == "proxy"
    assert Access.from_secrets({}).mode == "local"


# -- who the session's user is, per mode ----------------------------------------------------------


def test_signed_in_user_from_the_id_token() -> None:
    acc = Access.from_secrets(SIGN_IN)
    user = resolve_user(acc, {"is_logged_in": True, "sub": "u1", "email": OPS, "name": "Olga", "origin": "x"}, {},
                        "10.0.0.7")
    assert user is not None and (user.name, user.email, user.role, user.actor) == ("Olga", OPS, OPERATOR, OPS)
    viewer = resolve_user(acc, {"is_logged_in": True, "sub": "u2"}, {}, None)
    assert viewer is not None and (viewer.role, viewer.actor, viewer.can_act) == (VIEWER, "u2", False)
    assert resolve_user(acc, {"is_logged_in": False}, {}, None) is None
    assert resolve_user(acc, {"email": OPS}, {}, None) is None  # no sign-in, no user


def test_proxy_user_from_its_header() -> None:
    acc = Access.from_secrets({"gpufleet": {"behind_proxy": True, "operator_emails": [OPS],
                                            "proxy_user_header": "X-Auth-Request-Email"}})
    ops = resolve_user(acc, {}, {"x-auth-request-email": OPS}, "10.0.0.2")
    assert ops is not None and ops.role == OPERATOR and ops.actor == OPS
    other = resolve_user(acc, {}, {"X-Auth-Request-Email": VIEWS}, "10.0.0.2")
    assert other is not None and other.role == VIEWER
    assert resolve_user(acc, {}, {"X-Forwarded-Email": OPS}, "10.0.0.2") is None  # not the configured header


@pytest.mark.parametrize(("headers", "ip", "role"), [
    ({}, None, OPERATOR),
    ({"Host": "127.0.0.1:8501", "Origin": "http://localhost:8501"}, None, OPERATOR),
    ({"Host": "[::1]:8501", "Origin": "http://[::1]:8501"}, None, OPERATOR),
    ({}, "192.168.1.20", VIEWER),
    ({"X-Forwarded-For": "203.0.113.9"}, None, VIEWER),
    ({"X-Auth-Request-Email": OPS}, None, VIEWER),
    # a proxy on this machine that passes no forwarding header: the browser's Origin or Host gives it away
    ({"Host": "127.0.0.1:8501", "Origin": "https://gpufleet.example.com"}, None, VIEWER),
    ({"Host": "gpufleet.example.com"}, None, VIEWER),
])
def test_local_mode_trusts_only_a_browser_on_this_machine(headers: dict[str, str], ip: str | None, role: str) -> None:
    user = resolve_user(Access(), {}, headers, ip)
    assert user is not None and user.role == role and "@" in user.actor  # the OS user@host


# -- flags, secrets file, bind rule -----------------------------------------------------------------


@pytest.fixture
def secret_files(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "client").write_text("client-s3cret\n")
    (tmp_path / "cookie").write_text("k" * 40 + "\n")
    return str(tmp_path / "client"), str(tmp_path / "cookie")


def _flags(client: str, cookie: str | None, **kw: Any) -> Flags:
    return Flags("https://id.example.com/.well-known/openid-configuration", "gpufleet", client,
                 cookie_secret_file=cookie, **kw)


def test_flags_make_the_auth_and_role_tables(secret_files: tuple[str, str]) -> None:
    client, cookie = secret_files
    tables = access.secrets_from_flags(_flags(client, cookie, operator_emails=("A@x.org,b@x.org", "c@x.org"),
                                              role_claim="groups"), "127.0.0.1", 8600)
    assert tables["auth"] == {"redirect_uri": "http://127.0.0.1:8600/oauth2callback", "cookie_secret": "k" * 40,
                              "client_id": "gpufleet", "client_secret": "client-s3cret",
                              "server_metadata_url": "https://id.example.com/.well-known/openid-configuration"}
    assert tables["gpufleet"] == {"operator_emails": ["a@x.org", "b@x.org", "c@x.org"], "role_claim": "groups",
                                  "operator_role": "operator"}
    public = access.secrets_from_flags(_flags(client, None, redirect_uri="https://gpu.example.com/oauth2callback"),
                                       "0.0.0.0", 8501)["auth"]
    assert public["redirect_uri"] == "https://gpu.example.com/oauth2callback"
    assert len(public["cookie_secret"]) >= 32  # random for this run
    assert access.secrets_from_flags(Flags(), "127.0.0.1", 8501) == {}
    proxy = access.secrets_from_flags(Flags(behind_proxy=True), "0.0.0.0", 8501)
    assert proxy == {"gpufleet": {"behind_proxy": True, "proxy_user_header": "X-Forwarded-Email"}}
    assert access.secrets_from_flags(_flags(client, None), "::1", 8501)["auth"]["redirect_uri"] == \
        "http://[::1]:8501/oauth2callback"


@pytest.mark.parametrize(("change", "message"), [
    ({"client_id": None}, "together"),
    ({"metadata_url": "id.example.com"}, "--oidc-metadata-url: expected an absolute http(s) URL"),
    ({"redirect_uri": "https://gpu.example.com/"}, "must end in /oauth2callback"),
    ({"client_secret_file": "/nonexistent/secret"}, "cannot read /nonexistent/secret"),
    ({"cookie": "short"}, "use at least 32"),
    ({"operator_emails": ("ops",)}, "is not an e-mail address"),
    ({"operator_role": "admins"}, "--operator-role needs --role-claim"),
    ({"proxy_user_header": "X-User"}, "--proxy-user-header needs --behind-proxy"),
    ({"address": "0.0.0.0"}, "--redirect-uri is needed"),
])
def test_bad_flags_are_one_line_errors(secret_files: tuple[str, str], tmp_path: Path, change: dict[str, Any],
                                       message: str) -> None:
    client, cookie = secret_files
    change = dict(change)
    (tmp_path / "short").write_text("tooshort")
    values = {"metadata_url": "https://id.example.com/.well-known/openid-configuration", "client_id": "gpufleet",
              "client_secret_file": client, "cookie_secret_file": cookie}
    address = change.pop("address", "127.0.0.1")
    if "cookie" in change:
        values["cookie_secret_file"] = str(tmp_path / change.pop("cookie"))
    with pytest.raises(AccessError, match=re.escape(message)) as err:
        access.secrets_from_flags(Flags(**{**values, **change}), address, 8501)
    assert "\n" not in str(err.value)


def test_toml_round_trips_awkward_values() -> None:
    awkward = 'quote " backslash \\ newline \n tab \t del \x7f nul \x00 unicode é 😀 [x] = "y"'
    tables = {"auth": {"client_secret": awkward, "redirect_uri": "http://h/oauth2callback"},
              "gpufleet": {"operator_emails": ["a@x.org", awkward], "behind_proxy": True}}
    assert tomllib.loads(access.to_toml(tables)) == tables


def test_the_secrets_file_is_private(tmp_path: Path) -> None:
    path = access.write_private('[auth]\n"client_secret" = "x"\n', tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize(("address", "acc", "ok"), [
    ("127.0.0.1", Access(), True),
    ("localhost", Access(), True),
    ("::1", Access(), True),
    ("127.0.0.2", Access(), True),
    ("0.0.0.0", Access(), False),
    ("10.1.2.3", Access(), False),
    ("gpu-dash.example.com", Access(), False),
    ("0.0.0.0", Access.from_secrets(SIGN_IN), True),
    ("0.0.0.0", Access(behind_proxy=True), True),
])
def test_bind_rule(address: str, acc: Access, ok: bool) -> None:
    if ok:
        access.check_bind(address, acc)
    else:
        with pytest.raises(AccessError, match=f"refusing to serve the dashboard on {address} without sign-in"):
            access.check_bind(address, acc)


def test_cli_refuses_a_public_address_without_sign_in(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .streamlit/secrets.toml here
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cli.main(["dashboard", "--address", "0.0.0.0", "--db", f"sqlite:///{tmp_path / 's.db'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpufleet: error: refusing to serve the dashboard on 0.0.0.0")
    assert cli.main(["dashboard", "--oidc-client-id", "x", "--db", f"sqlite:///{tmp_path / 's.db'}"]) == 2
    assert capsys.readouterr().err.strip().startswith("gpufleet: error: sign-in needs --oidc-metadata-url")
    assert not (tmp_path / "s.db").exists()


def test_cli_passes_sign_in_to_streamlit_in_a_private_file(tmp_path: Path, secret_files: tuple[str, str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    client, cookie = secret_files
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / ".streamlit").mkdir()
    own = tmp_path / ".streamlit" / "secrets.toml"
    own.write_text('[gpufleet]\noperator_emails = ["old@x.org"]\n[other]\nkey = "kept"\n')
    args = cli.build_parser().parse_args([
        "dashboard", "--address", "0.0.0.0", "--oidc-metadata-url", "https://id.example.com/.well-known/x",
        "--oidc-client-id", "gpufleet", "--oidc-client-secret-file", client, "--cookie-secret-file", cookie,
        "--redirect-uri", "https://gpu.example.com/oauth2callback", "--operator-emails", OPS])
    with dashboardcli.secrets_files(args, f"sqlite:///{tmp_path / 'none.db'}") as files:
        assert files[0] == own and len(files) == 2
        ours = files[1]
        assert stat.S_IMODE(ours.stat().st_mode) == 0o600
        written = tomllib.loads(ours.read_text())
        assert written["auth"]["client_secret"] == "client-s3cret"
        assert written["gpufleet"] == {"operator_emails": [OPS]}
        cmd = server.command(None, 8501, "0.0.0.0", files)
        assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "--secrets.files"] == [str(own), str(ours)]
        assert "client-s3cret" not in " ".join(cmd)
    assert not ours.exists() and not ours.parent.exists()


# -- what each visitor sees in the app (AppTest, faked st.user) ------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('auth') / 'store.db'}"
    engine = seed.seed(url)
    seed.seed_alerting(engine)
    engine.dispose()
    return url


@pytest.fixture
def app_env(store: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("GPUFLEET_DB_URL", store)
    monkeypatch.setenv("GPUFLEET_DASHBOARD_NOW", str(seed.NOW))
    yield store


def _app(user: dict[str, Any], secrets: dict[str, Any] | None = None, path: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.secrets = dict(SIGN_IN if secrets is None else secrets)
    at.user = user
    at.run()
    if path:
        at.switch_page(path).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at: AppTest) -> str:
    return " ".join(str(el.value) for kind in ("markdown", "caption", "title", "subheader", "info", "error")
                    for el in at.get(kind))


def test_an_anonymous_visitor_sees_only_the_sign_in_page(app_env: str) -> None:
    at = _app({"is_logged_in": False})
    assert [b.label for b in at.button] == ["Sign in"]
    assert not at.metric and not at.dataframe and not at.get("plotly_chart") and not at.multiselect
    assert [t.value for t in at.title] == ["gpufleet"]


def test_a_viewer_sees_the_alerts_page_without_actions(app_env: str) -> None:
    at = _app({"is_logged_in": True, "sub": "v1", "email": VIEWS, "name": "Vic"}, path=ALERTS)
    assert at.metric and any(s.value == "Silences" for s in at.subheader)
    assert "Vic (viewer@example.com)" in _texts(at) and "· viewer" in _texts(at)
    labels = [b.label for b in at.button]
    assert "Silence" not in labels and "Expire" not in labels and "Sign out" in labels
    assert not at.text_input and not at.get("expandable")


def test_an_operator_silences_from_the_page_and_it_is_audited(app_env: str) -> None:
    at = _app({"is_logged_in": True, "sub": "o1", "email": OPS, "name": "Olga"}, path=ALERTS)
    assert "· operator" in _texts(at)
    at.text_input(key="silence_matchers").input('node=node-a alertname=~"gpu_xid.*"')
    at.text_input(key="silence_duration").input("30m")
    at.text_input(key="silence_comment").input("reseating GPU 2")
    at.button(key="silence_create").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("created for 30m" in s.value for s in at.success)
    engine = create_engine(app_env)
    with engine.connect() as conn:
        silence = conn.execute(text("SELECT id, created_by, ends_at - starts_at FROM silences "
                                    "WHERE comment = 'reseating GPU 2'")).one()
        entry = conn.execute(text("SELECT actor, source, action, target, outcome, details FROM audit_log "
                                  "WHERE action = 'silence.create' AND actor = :a"), {"a": OPS}).one()
    engine.dispose()
    assert (silence.created_by, silence[2]) == (OPS, 1800.0)
    assert (entry.source, entry.target, entry.outcome) == ("dashboard", "node=node-a alertname=~gpu_xid.*", "ok")
    assert f'"silence_id": {silence.id}' in entry.details


def test_an_operators_bad_silence_is_audited_as_failed(app_env: str) -> None:
    at = _app({"is_logged_in": True, "email": OPS}, path=ALERTS)
    at.text_input(key="silence_matchers").input("node")
    at.button(key="silence_create").click().run()
    assert at.error and not at.success
    engine = create_engine(app_env)
    with engine.connect() as conn:
        outcome = conn.execute(text("SELECT outcome, message FROM audit_log WHERE target = 'node'")).one()
    engine.dispose()
    assert outcome.outcome == "failed" and outcome.message


def _act() -> None:  # an AppTest script: a page that tries an operator action
    import streamlit as st

    from dashboard import auth

    try:
        with auth.audited("bench.run", "node-a", {"suite": "quick"}) as act:
            act.message = "started"
        st.success("ran")
    except PermissionError as exc:
        st.error(str(exc))


def test_a_viewers_action_is_refused_and_recorded_as_denied(app_env: str) -> None:
    at = AppTest.from_function(_act, default_timeout=30)
    at.secrets = dict(SIGN_IN)
    at.user = {"is_logged_in": True, "email": VIEWS}
    at.run()
    assert [e.value for e in at.error] == ["only operators may do this"]
    at.user = {"is_logged_in": True, "email": OPS}
    at.run()
    assert [s.value for s in at.success] == ["ran"]
    engine = create_engine(app_env)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT actor, outcome, message FROM audit_log WHERE action = 'bench.run' "
                                 "ORDER BY id")).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(VIEWS, "denied", "only operators may do this"), (OPS, "ok", "started")]


def test_without_sign_in_there_is_no_gate(app_env: str) -> None:
    # AppTest's connection is not a loopback one, so this visitor is a viewer (resolve_user is tested above).
    at = _app({}, secrets={}, path=ALERTS)
    assert at.metric and "Local session as" in _texts(at)
    assert "Sign in" not in [b.label for b in at.button] and "Sign out" not in [b.label for b in at.button]
