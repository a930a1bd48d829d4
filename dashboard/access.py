"""Who may reach the dashboard and who may act on it, as plain data (no Streamlit here).

Sign-in is Streamlit's OpenID Connect support (``st.login``), configured by the ``[auth]`` table of a
``secrets.toml``: written by ``gpufleet dashboard`` from its flags, or by hand in ``.streamlit/``. The
``[gpufleet]`` table of the same file holds the roles (an ID-token claim, an e-mail allow-list) and the
authenticating-proxy setting. Without sign-in the dashboard listens on loopback only, unless it is told
that it sits behind an authenticating proxy: ``check_bind`` enforces that before Streamlit starts.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tomllib

from db.secrets import SecretError, read_file

VIEWER, OPERATOR = "viewer", "operator"
SECTION = "gpufleet"
DEFAULT_OPERATOR_ROLE = "operator"
DEFAULT_PROXY_HEADER = "X-Forwarded-Email"
PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")
CALLBACK = "/oauth2callback"
MIN_COOKIE_SECRET = 32


class AccessError(ValueError):
    """A sign-in or bind setting the user has to fix; one line."""


@dataclass(frozen=True, slots=True)
class RolePolicy:
    """Who is an operator: whoever's ID token has ``operator_role`` in the claim ``role_claim`` (a string or
    a list; a dotted name reaches into nested claims, e.g. ``realm_access.roles``), or whose verified
    e-mail is in ``operator_emails``. Everyone else who signs in is a viewer."""

    role_claim: str | None = None
    operator_role: str = DEFAULT_OPERATOR_ROLE
    operator_emails: frozenset[str] = frozenset()

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> RolePolicy:
        emails = section.get("operator_emails") or ()
        if isinstance(emails, str):
            emails = emails.split(",")
        return cls(section.get("role_claim") or None, str(section.get("operator_role") or DEFAULT_OPERATOR_ROLE),
                   frozenset(e.strip().lower() for e in emails if e.strip()))

    @property
    def names_operators(self) -> bool:
        return bool(self.role_claim or self.operator_emails)

    def role_for(self, claims: Mapping[str, Any]) -> str:
        if self.role_claim:
            value = claim(claims, self.role_claim)
            values = [value] if isinstance(value, str) else value if isinstance(value, list | tuple) else []
            if self.operator_role in (str(v) for v in values):
                return OPERATOR
        email = claims.get("email")
        verified = claims.get("email_verified", True) not in (False, "false")
        if isinstance(email, str) and verified and email.strip().lower() in self.operator_emails:
            return OPERATOR
        return VIEWER


def claim(claims: Mapping[str, Any], name: str) -> Any:
    """The claim ``name``; ``a.b`` is claim ``b`` inside the object claim ``a`` (unless ``a.b`` itself exists)."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


@dataclass(frozen=True, slots=True)
class Access:
    """What the app enforces, read from the merged secrets."""

    providers: tuple[str | None, ...] = ()  # st.login providers; None is the default ([auth] itself)
    policy: RolePolicy = RolePolicy()
    behind_proxy: bool = False
    proxy_user_header: str = DEFAULT_PROXY_HEADER

    @classmethod
    def from_secrets(cls, secrets_: Mapping[str, Any]) -> Access:
        section = secrets_.get(SECTION) or {}
        return cls(providers(secrets_.get("auth") or {}), RolePolicy.from_section(section),
                   bool(section.get("behind_proxy", False)),
                   str(section.get("proxy_user_header") or DEFAULT_PROXY_HEADER))

    @property
    def sign_in(self) -> bool:
        return bool(self.providers)

    @property
    def mode(self) -> str:
        return "sign-in" if self.sign_in else "proxy" if self.behind_proxy else "local"


def providers(auth: Mapping[str, Any]) -> tuple[str | None, ...]:
    """The usable providers of an ``[auth]`` table: the default one when ``[auth]`` has the provider keys
    itself, and every ``[auth.NAME]`` that has them; none without ``redirect_uri`` and ``cookie_secret``."""
    if not auth.get("redirect_uri") or not auth.get("cookie_secret"):
        return ()
    found: list[str | None] = [None] if all(auth.get(k) for k in PROVIDER_KEYS) else []
    found += sorted(name for name, v in auth.items()
                    if isinstance(v, Mapping) and name != "client_kwargs" and all(v.get(k) for k in PROVIDER_KEYS))
    return tuple(found)


# -- the command line's side: flags -> secrets.toml, and the bind rule ------------------------------


@dataclass(frozen=True, slots=True)
class Flags:
    """``gpufleet dashboard``'s sign-in, role and proxy flags (None / empty: not given)."""

    metadata_url: str | None = None
    client_id: str | None = None
    client_secret_file: str | None = None
    redirect_uri: str | None = None
    cookie_secret_file: str | None = None
    operator_emails: Sequence[str] = ()
    role_claim: str | None = None
    operator_role: str | None = None
    behind_proxy: bool = False
    proxy_user_header: str | None = None


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def secrets_from_flags(flags: Flags, address: str, port: int) -> dict[str, dict[str, Any]]:
    """The secrets.toml tables the flags define (``auth``, ``gpufleet``; none when no flag is given).
    Reads the secret files; raises AccessError naming the flag at fault."""
    out: dict[str, dict[str, Any]] = {}
    oidc = (flags.metadata_url, flags.client_id, flags.client_secret_file)
    if any(oidc) or flags.redirect_uri or flags.cookie_secret_file:
        if not all(oidc):
            raise AccessError("sign-in needs --oidc-metadata-url, --oidc-client-id and --oidc-client-secret-file "
                              "together (see docs/SECURITY.md)")
        out["auth"] = {"redirect_uri": _redirect_uri(flags.redirect_uri, address, port),
                       "cookie_secret": _cookie_secret(flags.cookie_secret_file),
                       "client_id": flags.client_id, "client_secret": _read_secret("--oidc-client-secret-file",
                                                                                  flags.client_secret_file),
                       "server_metadata_url": _http_url("--oidc-metadata-url", flags.metadata_url)}
    emails = [e.strip().lower() for item in flags.operator_emails for e in item.split(",") if e.strip()]
    if bad := [e for e in emails if "@" not in e]:
        raise AccessError(f"--operator-emails: {bad[0]!r} is not an e-mail address")
    if flags.operator_role and not flags.role_claim:
        raise AccessError("--operator-role needs --role-claim (the ID-token claim that carries roles)")
    if flags.proxy_user_header and not flags.behind_proxy:
        raise AccessError("--proxy-user-header needs --behind-proxy")
    section: dict[str, Any] = {}
    if emails:
        section["operator_emails"] = sorted(set(emails))
    if flags.role_claim:
        section["role_claim"] = flags.role_claim
        section["operator_role"] = flags.operator_role or DEFAULT_OPERATOR_ROLE
    if flags.behind_proxy:
        section["behind_proxy"] = True
        section["proxy_user_header"] = flags.proxy_user_header or DEFAULT_PROXY_HEADER
    if section:
        out[SECTION] = section
    return out


def _redirect_uri(given: str | None, address: str, port: int) -> str:
    if given is None:
        if not is_loopback(address):
            raise AccessError(f"--redirect-uri is needed when the dashboard listens on {address}: the address "
                              f"browsers use, ending in {CALLBACK} (e.g. https://gpufleet.example.com{CALLBACK})")
        host = f"[{address.strip('[]')}]" if ":" in address else address
        return f"http://{host}:{port}{CALLBACK}"
    _http_url("--redirect-uri", given)
    if not given.rstrip("/").endswith(CALLBACK):
        raise AccessError(f"--redirect-uri must end in {CALLBACK} (Streamlit's callback path), got {given!r}")
    return given.rstrip("/")


def _http_url(flag: str, url: str | None) -> str:
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise AccessError(f"{flag}: expected an absolute http(s) URL, got {url!r}")
    return str(url)


def _read_secret(flag: str, path: str | None) -> str:
    """``db.secrets.read_file``, so the value is also masked in logs; its error as an AccessError."""
    try:
        return read_file(str(path), flag)
    except SecretError as exc:
        raise AccessError(str(exc)) from None


def _cookie_secret(path: str | None) -> str:
    """The secret that signs the identity cookie: from the file, else a random one for this run (everyone
    signs in again after a restart, and replicas cannot share sessions)."""
    if path is None:
        return secrets.token_urlsafe(32)
    value = _read_secret("--cookie-secret-file", path)
    if len(value) < MIN_COOKIE_SECRET:
        raise AccessError(f"--cookie-secret-file: the secret in {path} is {len(value)} characters; use at least "
                          f"{MIN_COOKIE_SECRET} random ones (e.g. openssl rand -hex 32 > {path})")
    return value


def candidate_files(app_dir: Path) -> list[Path]:
    """Where Streamlit looks for secrets.toml by default, in its order (later files win, table by table)."""
    places = [Path.home(), Path.cwd(), app_dir]
    return list(dict.fromkeys(p.resolve() / ".streamlit" / "secrets.toml" for p in places))


def load_files(paths: Iterable[Path]) -> dict[str, Any]:
    """The existing files merged as Streamlit merges them (top-level tables replaced by later files)."""
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            merged.update(tomllib.loads(path.read_text()))
        except OSError as exc:
            raise AccessError(f"cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise AccessError(f"{path} is not valid TOML: {exc}") from None
    return merged


def check_bind(address: str, access: Access) -> None:
    """An unauthenticated dashboard listens on loopback only, unless an authenticating proxy is in front."""
    if access.sign_in or access.behind_proxy or is_loopback(address):
        return
    raise AccessError(f"refusing to serve the dashboard on {address} without sign-in: configure sign-in "
                      "(--oidc-metadata-url, --oidc-client-id, --oidc-client-secret-file; see docs/SECURITY.md), "
                      "or add --behind-proxy if an authenticating proxy is the only way in")


def to_toml(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML for tables of strings, booleans and lists of strings (all ``secrets_from_flags`` makes): JSON
    string syntax is TOML's basic-string syntax once DEL is escaped too."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v), ensure_ascii=False).replace("\x7f", "\\u007f")

    lines: list[str] = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{json.dumps(str(k))} = {value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)


def write_private(text: str, folder: Path | None = None) -> Path:
    """Write ``text`` to ``secrets.toml`` in a new private folder (0700; the file 0600, created so, never
    readable by others even for a moment); the caller removes the folder."""
    where = Path(tempfile.mkdtemp(prefix="gpufleet-dashboard-", dir=folder))
    path = where / "secrets.toml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def describe(secrets_: Mapping[str, Any], address: str, port: int) -> dict[str, Any]:
    """The access settings worth auditing, without any secret: mode, providers (metadata URL, client id),
    redirect URI, roles, proxy."""
    access = Access.from_secrets(secrets_)
    auth = secrets_.get("auth") or {}
    provs = {name or "default": {k: (auth if name is None else auth[name]).get(k)
                                 for k in ("server_metadata_url", "client_id")} for name in access.providers}
    return {"address": f"{address}:{port}", "mode": access.mode, "providers": provs,
            "redirect_uri": auth.get("redirect_uri") if access.sign_in else None,
            "operator_emails": sorted(access.policy.operator_emails), "role_claim": access.policy.role_claim,
            "operator_role": access.policy.operator_role if access.policy.role_claim else None,
            "proxy_user_header": access.proxy_user_header if access.mode == "proxy" else None}
