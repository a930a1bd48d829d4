"""Who may scrape ``/metrics``: HTTP basic auth checked against a stored password, and the TLS context.

The stored password follows Prometheus' ``web.yml`` habit of keeping a hash: a bcrypt hash (``$2b$…``,
``htpasswd -nbBC 10``), ``sha256:<hex>`` (``printf %s PASS | sha256sum``) or, when read from a file or a
variable that is itself protected, the plain password. Comparisons take constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ssl
import threading

_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


class ScrapeAuthError(ValueError):
    """The stored password or the TLS files cannot be used; the message names no secret."""


class BasicAuthCheck:
    """Checks ``Authorization: Basic …`` headers. bcrypt costs ~50-250 ms a check, so the last accepted header
    is remembered (as its SHA-256) and a Prometheus scraping every 15 s pays that once."""

    def __init__(self, user: str, stored: str) -> None:
        self.user = user
        self._stored = stored
        self._kind = "plain"
        if stored.startswith(_BCRYPT_PREFIXES):
            try:
                import bcrypt  # noqa: F401 -- checked here so a missing package fails at start, not per scrape
            except ImportError:
                raise ScrapeAuthError("metrics_basic_auth_password is a bcrypt hash but the bcrypt package is "
                                      "not installed (pip install 'gpufleet[agent]')") from None
            self._kind = "bcrypt"
        elif stored.startswith("sha256:"):
            digest = stored.removeprefix("sha256:").strip().lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ScrapeAuthError("metrics_basic_auth_password: sha256: needs 64 hex digits")
            self._kind, self._stored = "sha256", digest
        self._accepted: bytes | None = None
        self._lock = threading.Lock()

    def check(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        fingerprint = hashlib.sha256(header.encode()).digest()
        with self._lock:
            if self._accepted is not None and hmac.compare_digest(self._accepted, fingerprint):
                return True
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        ok = bool(sep) and hmac.compare_digest(user.encode(), self.user.encode()) and self._password_ok(password)
        if ok:
            with self._lock:
                self._accepted = fingerprint
        return ok

    def _password_ok(self, password: str) -> bool:
        if self._kind == "bcrypt":
            import bcrypt

            try:
                return bool(bcrypt.checkpw(password.encode(), self._stored.encode()))
            except ValueError:  # a malformed stored hash: nobody gets in
                return False
        if self._kind == "sha256":
            return hmac.compare_digest(hashlib.sha256(password.encode()).hexdigest(), self._stored)
        return hmac.compare_digest(password.encode(), self._stored.encode())


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for the certificate chain and key (PEM), TLS 1.2 or newer."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key, password=lambda: b"")  # never prompt on a tty
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or type(exc).__name__
        raise ScrapeAuthError(f"cannot load the /metrics certificate {cert} and key {key}: {reason}") from None
    return context
