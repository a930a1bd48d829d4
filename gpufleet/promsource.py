"""The Prometheus side of ``gpufleet import prometheus``: the server's HTTP API through
prometheus-api-client's session (short retries, errors as one line) and the decoding of its
``query_range`` answers, which is most of an import's work."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from collectors import dcgm
from gpufleet.cli import UserError

SELECTOR = '{__name__=~"' + "|".join(dcgm.METRICS) + '"}'
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")
_PROM_ERROR = re.compile(r'"error":"((?:[^"\\]|\\.)*)"')


def check_url(url: str) -> str:
    """The base URL, checked: http(s) with a host. Trailing slashes go, so ``/api/v1`` joins cleanly."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"invalid Prometheus URL {redact(url)!r}: expected e.g. http://prometheus:9090")
    return url.strip().rstrip("/")


def redact(url: str) -> str:
    """The URL without user and password: what is logged, printed and stored as the cursor's name."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:
        port = None
    return urlunsplit((parts.scheme, netloc + (f":{port}" if port else ""), parts.path, parts.query, ""))


class PromSource:
    """One Prometheus server, through prometheus-api-client's session: short retries (an unreachable
    server is one line within a second, not after the client's default back-off) and errors as one
    line. ``query_range`` is asked on that session directly, so that its answer is decoded here
    (``decode_series``) rather than by the client's ``.json()``."""

    def __init__(self, url: str, *, timeout: float = 120.0, session: requests.Session | None = None) -> None:
        self.url = check_url(url)
        self.name = redact(self.url)
        retry = Retry(total=2, backoff_factor=0.2, status_forcelist=(429, 502, 503, 504), allowed_methods=None)
        self.timeout = timeout
        self.session = session or requests.Session()
        self.client = PrometheusConnect(url=self.url, retry=retry, session=self.session, timeout=timeout,
                                        method="POST")

    def close(self) -> None:
        self.client.close()

    def _call(self, what: Callable[[], Any]) -> Any:
        try:
            return what()
        except PrometheusApiClientException as exc:
            found = _PROM_ERROR.search(str(exc))
            code = str(exc).split("(", 1)[0].replace("HTTP Status Code", "HTTP").strip()
            detail = found.group(1) if found else "is this a Prometheus server?"
            raise UserError(f"Prometheus at {self.name} answered {code}: {detail}") from None
        except (ValueError, KeyError, TypeError):  # a body that is not the API's JSON (requests' too)
            raise UserError(f"{self.name} did not answer like a Prometheus server") from None
        except requests.RequestException as exc:
            found = _ERRNO.search(str(exc))
            reason = found.group(1).strip() if found else type(exc).__name__
            raise UserError(f"cannot reach Prometheus at {self.name}: {reason}") from None

    def series_count(self, start: float, end: float) -> int:
        """How many mapped series exist over the range (index only, cheap): sizes the chunks."""
        start_dt = dt.datetime.fromtimestamp(start, dt.timezone.utc)
        end_dt = dt.datetime.fromtimestamp(end, dt.timezone.utc)
        return len(self._call(lambda: self.client.get_series(start_dt, end_dt, params={"match[]": SELECTOR})))

    def query_range(self, start: int, end: int, step: int) -> bytes:
        """Prometheus' answer for every mapped series on the grid ``start, start + step, …, end``, not
        yet decoded: the transfer alone, which a worker thread overlaps with the caller's work."""
        def query() -> bytes:
            r = self.session.post(f"{self.url}/api/v1/query_range", timeout=self.timeout,
                                  data={"query": SELECTOR, "start": start, "end": end, "step": step})
            if r.status_code != 200:  # worded as the client words it, for _call
                raise PrometheusApiClientException(f"HTTP Status Code {r.status_code} ({r.content!r})")
            return r.content

        return self._call(query)  # type: ignore[no-any-return]

    def decode(self, body: bytes) -> list[Series]:
        """The series of a ``query_range`` answer (``decode_series``), errors as one line."""
        return self._call(lambda: decode_series(body))  # type: ignore[no-any-return]


@dataclass(slots=True)
class Series:
    """One series of a ``query_range`` answer: its labels and ``(time, value)`` points, each value
    read from Prometheus' text as a float (NaN and infinities included)."""

    metric: dict[str, str]
    values: list[tuple[float, float]] = field(default_factory=list)


@dataclass(slots=True)
class _Data:
    result: list[Series]


@dataclass(slots=True)
class _Answer:
    data: _Data


try:  # msgspec (the prometheus extra) reads the values' text as floats while it decodes
    from msgspec import MsgspecError
    from msgspec.json import Decoder
except ImportError:  # pragma: no cover - the standard library's json and float() then
    _DECODER: Decoder[_Answer] | None = None
else:
    _DECODER = Decoder(_Answer, strict=False)


def decode_series(body: bytes) -> list[Series]:
    """The series of a ``query_range`` answer. Decoding is an import's largest cost: msgspec, where
    installed, reads the values' text as floats while it decodes, in about half the time of
    ``json.loads`` plus ``float()`` on every value. It takes ``NaN`` and ``-Inf`` but not ``+Inf``:
    an answer holding one, like any answer it refuses, is decoded the standard way."""
    if _DECODER is not None:
        try:
            return _DECODER.decode(body).data.result
        except MsgspecError:
            pass
    return [Series(s["metric"], [(t, float(v)) for t, v in s.get("values", ())])
            for s in json.loads(body)["data"]["result"]]
