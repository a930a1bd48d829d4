"""Who is looking at the dashboard and whether they may act, for the router and every page.

Three modes, from the secrets Streamlit reads (``dashboard.access``):

- **sign-in** (OpenID Connect through ``st.login``): an anonymous visitor sees only the sign-in page; the
  role comes from the ID token (a claim, or the e-mail allow-list).
- **behind an authenticating proxy**: the user is the e-mail in the proxy's header (``X-Forwarded-Email``
  by default); operators by the allow-list. No header, no dashboard.
- **neither**: the dashboard listens on loopback only, and a browser on this machine acts as the OS user
  who started it (as ``gpufleet alerts silence`` would). Anyone else, e.g. through a proxy the dashboard
  was not told about, is a viewer.

Pages ask ``can_act()`` before drawing an action, and run the action inside ``audited(...)``, which
checks again (a viewer's crafted request is refused and recorded as denied) and writes the audit log.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import streamlit as st

from dashboard import access, data
from db import audit

FORWARDED = ("x-forwarded-for", "x-real-ip", "forwarded")
# st.user keys that Streamlit adds to the ID token's claims.
_NOT_CLAIMS = ("is_logged_in", "origin", "provider", "tokens")


@dataclass(frozen=True, slots=True)
class User:
    name: str
    email: str | None
    role: str
    subject: str | None = None

    @property
    def actor(self) -> str:
        """How the audit log names this user: the e-mail, else the subject, else the name."""
        return self.email or self.subject or self.name

    @property
    def can_act(self) -> bool:
        return self.role == access.OPERATOR


def settings() -> access.Access:
    """The access settings in this app's secrets (none: the local mode)."""
    try:
        secrets = st.secrets.to_dict()
    except FileNotFoundError:  # no secrets.toml anywhere
        return access.Access()
    return access.Access.from_secrets(secrets)


def user_from_claims(claims: Mapping[str, Any], policy: access.RolePolicy) -> User:
    """A signed-in user from the ID token's claims (as ``st.user`` holds them)."""
    claims = {k: v for k, v in claims.items() if k not in _NOT_CLAIMS}
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    subject = str(claims["sub"]) if claims.get("sub") is not None else None
    name = str(claims.get("name") or claims.get("preferred_username") or email or subject or "unknown")
    return User(name, email, policy.role_for(claims), subject)


def resolve_user(acc: access.Access, user_info: Mapping[str, Any], headers: Mapping[str, str],
                 remote_ip: str | None) -> User | None:
    """The session's user from what Streamlit knows about it: ``st.user`` (sign-in), the request headers
    (proxy) or where the connection comes from (local; ``remote_ip`` is None on loopback)."""
    if acc.sign_in:
        return user_from_claims(user_info, acc.policy) if user_info.get("is_logged_in") else None
    headers = {k.lower(): v for k, v in headers.items()}
    if acc.behind_proxy:
        email = headers.get(acc.proxy_user_header.lower(), "").strip()
        return User(email, email, acc.policy.role_for({"email": email})) if email else None
    return User(audit.os_user(), None, access.OPERATOR if _direct_local(headers, remote_ip) else access.VIEWER)


def _direct_local(headers: Mapping[str, str], remote_ip: str | None) -> bool:
    """A browser on this machine talking to the dashboard directly: a loopback connection, no proxy
    header, and Host and Origin (every browser sends Origin on the WebSocket) naming a loopback address.
    A proxy on this machine that the dashboard was not told about still shows the public Origin."""
    if remote_ip is not None or any(h in FORWARDED or h.startswith(("x-forwarded-", "x-auth-request-"))
                                    for h in headers):
        return False
    host, origin = headers.get("host"), headers.get("origin")
    return (host is None or access.is_loopback(urlsplit(f"//{host}").hostname or "")) and \
        (origin is None or access.is_loopback(urlsplit(origin).hostname or ""))


def current_user() -> User | None:
    """The user of this session, or None when nobody has signed in (or the proxy named nobody)."""
    return resolve_user(settings(), st.user.to_dict(), dict(st.context.headers.items()), st.context.ip_address)


def can_act() -> bool:
    """Whether this session's user may act (silence alerts, acknowledge, start benchmarks, import)."""
    user = current_user()
    return user is not None and user.can_act


@contextmanager
def audited(verb: str, target: str | None, details: Mapping[str, Any] | None = None) -> Iterator[audit.Action]:
    """Run an operator action from a page and record it in the audit log (ok or failed); a user who may
    not act gets PermissionError, recorded as denied. See ``db.audit.action``."""
    engine = data.engine(data.store_url())
    user = current_user()
    if user is None or not user.can_act:
        audit.record(engine, user.actor if user else "anonymous", verb, target, details, audit.DENIED,
                     source=audit.DASHBOARD, message="only operators may do this")
        raise PermissionError("only operators may do this")
    with audit.action(engine, user.actor, verb, target, details, source=audit.DASHBOARD) as act:
        yield act


def gate() -> User:
    """The router's first call: the user, or (for an anonymous visitor) the sign-in page and a stop."""
    acc = settings()
    user = current_user()
    if user is not None:
        return user
    st.title("gpufleet")
    if acc.sign_in:
        st.write("Sign in to see the fleet.")
        for provider in acc.providers:
            if st.button("Sign in" if provider is None else f"Sign in with {provider}", type="primary",
                         key=f"sign_in_{provider or 'default'}"):
                st.login(provider)
    else:
        st.error(f"The authenticating proxy in front of this dashboard did not say who you are (no "
                 f"{acc.proxy_user_header} header).")
    st.stop()


def user_box(user: User) -> None:
    """Who is signed in, with what role, and the sign-out button (sidebar)."""
    acc = settings()
    how = {"sign-in": "Signed in as", "proxy": "Signed in (proxy) as", "local": "Local session as"}[acc.mode]
    who = f"{user.name} ({user.email})" if user.email and user.email != user.name else user.name
    with st.sidebar:
        st.caption(f":material/person: {how} **{who}** · {user.role}")
        if acc.sign_in and st.button("Sign out", key="sign_out", icon=":material/logout:"):
            st.logout()
