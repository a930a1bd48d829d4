"""``gpufleet dashboard``'s sign-in, role and proxy flags: checked, turned into the secrets file Streamlit
reads (a private temporary folder, removed on exit), the bind rule enforced before Streamlit starts, and a
change of these settings recorded in the audit log. The rules themselves are in ``dashboard.access``."""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dashboard.access import Access

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sign-in and roles (docs/SECURITY.md; also read from .streamlit/secrets.toml)")
    g.add_argument("--oidc-metadata-url", metavar="URL",
                   help="OpenID Connect discovery URL (…/.well-known/openid-configuration): turns sign-in on")
    g.add_argument("--oidc-client-id", metavar="ID", help="the dashboard's client id at the provider")
    g.add_argument("--oidc-client-secret-file", metavar="FILE", help="file holding the client secret")
    g.add_argument("--redirect-uri", metavar="URL", help="the dashboard's address as browsers see it, ending in "
                   "/oauth2callback (default on loopback: http://ADDRESS:PORT/oauth2callback)")
    g.add_argument("--cookie-secret-file", metavar="FILE", help="secret that signs the identity cookie, at least "
                   "32 characters (default: random, so sessions end when the dashboard restarts)")
    g.add_argument("--operator-emails", action="append", default=[], metavar="A,B",
                   help="e-mail addresses that may act (silence alerts, start benchmarks, import); repeatable")
    g.add_argument("--role-claim", metavar="NAME", help="ID-token claim holding roles or groups (e.g. groups, "
                   "realm_access.roles); an operator has --operator-role in it")
    g.add_argument("--operator-role", metavar="VALUE", help="the role or group of operators (default: operator)")
    g.add_argument("--behind-proxy", action="store_true", help="an authenticating proxy (oauth2-proxy, …) is the "
                   "only way in: allow another --address without sign-in; the user is the proxy's e-mail header")
    g.add_argument("--proxy-user-header", metavar="NAME", help="the proxy's user e-mail header "
                   "(default X-Forwarded-Email)")


@contextmanager
def secrets_files(args: argparse.Namespace, db_url: str) -> Iterator[list[Path]]:
    """The secrets files Streamlit is to read, once the flags and the bind rule are checked (UserError
    otherwise); the one written from the flags is removed when the block ends."""
    from dashboard import access, server
    from gpufleet.cli import UserError

    flags = access.Flags(args.oidc_metadata_url, args.oidc_client_id, args.oidc_client_secret_file,
                         args.redirect_uri, args.cookie_secret_file, tuple(args.operator_emails), args.role_claim,
                         args.operator_role, args.behind_proxy, args.proxy_user_header)
    try:
        tables = access.secrets_from_flags(flags, args.address, args.port)
        existing = [p for p in access.candidate_files(server.app_path().parent) if p.is_file()]
        merged = {**access.load_files(existing), **tables}
        settings = access.Access.from_secrets(merged)
        access.check_bind(args.address, settings)
    except access.AccessError as exc:
        raise UserError(str(exc)) from None
    print(f"access: {_describe(settings)}", file=sys.stderr, flush=True)
    _audit(db_url, access.describe(merged, args.address, args.port), f"dashboard on {args.address}:{args.port}",
           settings.mode)
    if not tables:
        yield existing
        return
    path = access.write_private(access.to_toml(tables))
    try:
        yield [*existing, path]
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


def _describe(settings: Access) -> str:
    if settings.sign_in:
        who = "operators by role or e-mail" if settings.policy.names_operators else \
            "nobody is an operator (add --operator-emails or --role-claim)"
        return f"sign-in required (OpenID Connect); {who}"
    if settings.behind_proxy:
        return f"behind an authenticating proxy (user from {settings.proxy_user_header})"
    return "no sign-in: loopback only, a local visitor acts as the OS user"


def _audit(db_url: str, details: Mapping[str, Any], target: str, mode: str) -> None:
    """Record the access settings when they changed since this dashboard last started. A store that does
    not exist yet or has no audit table is left alone (the dashboard says what to run)."""
    from sqlalchemy.exc import SQLAlchemyError

    from db import audit
    from db.engine import make_engine, parse_url, table_names

    parsed = parse_url(db_url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:" \
            and not Path(parsed.database).expanduser().exists():
        return
    engine = make_engine(db_url)
    try:
        if "audit_log" in table_names(engine):
            audit.record_change(engine, audit.os_user(), "config.load", target, details, source=audit.CLI,
                                message=f"dashboard access: {mode}")
    except SQLAlchemyError as exc:
        log.warning("audit log not written: %s", str(exc).splitlines()[0])
    finally:
        engine.dispose()
