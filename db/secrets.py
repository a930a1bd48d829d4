"""Secrets from the environment or from files, and redaction of everything that is shown or logged.

Services get their secrets the way systemd and Kubernetes hand them over: a variable (``EnvironmentFile=``,
``envFrom: secretRef``) or a file (``LoadCredential=``, a mounted Secret), named by ``<NAME>_FILE``. Every value
read here is remembered, so that :class:`RedactingFilter` can mask it should it ever reach a log line, and
:func:`mask` can scrub it from an error text before that text is shown or stored.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MASK = "***"
# Query parameters of a store URL that carry a credential rather than a setting (libpq's names).
_SECRET_QUERY = frozenset({"password", "sslpassword", "passfile_contents", "token", "secret", "api_key"})
_MIN_REMEMBERED = 4  # shorter values would mask ordinary words and digits in log lines

_remembered: set[str] = set()
_lock = threading.Lock()


class SecretError(Exception):
    """A secret could not be read; the message names the variable or file, never the value."""


def remember(value: str | None) -> str | None:
    """Add ``value`` to the values :func:`mask` and :class:`RedactingFilter` hide; returns it."""
    if value and len(value) >= _MIN_REMEMBERED:
        with _lock:
            _remembered.add(value)
    return value


def mask(text: str) -> str:
    """``text`` with every remembered secret replaced by ``***`` (longest first, so no fragment remains)."""
    with _lock:
        values = sorted(_remembered, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    return text


def read_file(path: str | Path, what: str) -> str:
    """The file's content without surrounding whitespace (a trailing newline is not part of a password)."""
    try:
        value = Path(path).expanduser().read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a text file"
        raise SecretError(f"{what}: cannot read {path}: {reason}") from None
    if not value:
        raise SecretError(f"{what}: {path} is empty")
    return str(remember(value))


def read_secret(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The value of variable ``name``, or the content of the file named by ``name_FILE``; None if neither is set.

    Both set is an error rather than a silent preference: one of them is stale."""
    environ = os.environ if env is None else env
    direct, path = environ.get(name), environ.get(f"{name}_FILE")
    if direct and path:
        raise SecretError(f"both {name} and {name}_FILE are set: keep one")
    if path:
        return read_file(path, f"{name}_FILE")
    return remember(direct.strip()) if direct else None


def database_url(url: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The store URL: ``url``, else ``GPUFLEET_DB_URL`` / ``GPUFLEET_DB_URL_FILE``; with the password of
    ``GPUFLEET_DB_PASSWORD`` / ``GPUFLEET_DB_PASSWORD_FILE`` merged in when the URL carries none (as libpq
    does with ``PGPASSWORD``). None when nothing is configured."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = url or read_secret("GPUFLEET_DB_URL", env)
    if not url:
        return None
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # the caller reports an unparseable URL, redacted
    remember(parsed.password if isinstance(parsed.password, str) else None)
    for key in _SECRET_QUERY & set(parsed.query):
        value = parsed.query[key]
        remember(value if isinstance(value, str) else None)
    password = read_secret("GPUFLEET_DB_PASSWORD", env)
    if password and parsed.password is None and parsed.get_backend_name() != "sqlite":
        return parsed.set(password=password).render_as_string(hide_password=False)
    return url


def redact_url(url: Any) -> str:
    """A store URL safe to show: password and credential query values replaced by ``***``."""
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = url if isinstance(url, URL) else make_url(str(url))
    except ArgumentError:
        return "<unparseable URL>"
    hidden = {k: MASK for k in parsed.query if k.lower() in _SECRET_QUERY}
    if hidden:
        parsed = parsed.update_query_dict(hidden)
    return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", MASK)  # the query is URL-encoded


def endpoint(url: str) -> str:
    """An HTTP URL reduced to what may be shown: ``scheme://host[:port]/…`` (paths and queries of webhook URLs
    often are the token)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    if not parts.scheme or not parts.hostname:
        return "<invalid URL>"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "") + rest


class RedactingFilter(logging.Filter):
    """Masks remembered secrets in every record that passes a handler: the last line of defence should a
    secret reach a log call, an exception text or a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        with _lock:
            empty = not _remembered
        if empty:
            return True
        message = record.getMessage()
        scrubbed = mask(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text, record.exc_info = mask(text), None
        elif record.exc_text:
            record.exc_text = mask(record.exc_text)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Attach one :class:`RedactingFilter` to every handler of ``logger`` (default: the root logger)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
