"""Test support for routing and delivery: a store with the schema, alert rows, and a real HTTP receiver on a
free port whose behaviour a test scripts (down, failing, slow, healthy)."""

from __future__ import annotations

import http.server
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from alerts.payload import fingerprint
from db.engine import make_engine, upgrade
from db.models import Alert
from tests.conftest import free_port

T0 = 1_800_000_000.0


def store(url: str) -> Engine:
    engine = make_engine(url)
    upgrade(engine)
    return engine


def put_alert(engine: Engine, labels: dict[str, str], *, state: str = "firing", starts_at: float = T0,
              ends_at: float | None = None, annotations: dict[str, str] | None = None) -> str:
    """Insert or replace the row lifecycle would write; returns its fingerprint."""
    fp = fingerprint(labels)
    with Session(engine) as session, session.begin():
        session.merge(Alert(fingerprint=fp, rule=labels["alertname"], state=state, labels=labels,
                            annotations=annotations or {"summary": f"{labels['alertname']} on {labels.get('node')}"},
                            value=1.0, active_since=starts_at, starts_at=starts_at, ends_at=ends_at,
                            updated_at=ends_at or starts_at))
    return fp


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Behaviour:
    """What the receiver does with the next request: an HTTP status, optionally after a delay."""

    status: int = 200
    delay: float = 0.0
    body: bytes = b"ok"


class Receiver:
    """A real HTTP server in a thread. ``script(received_so_far) -> Behaviour`` decides each answer; only
    requests answered 2xx are kept in ``accepted``, every request in ``requests``."""

    def __init__(self, script: Callable[[list[Received]], Behaviour] | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.script = script or (lambda _seen: Behaviour())
        self.requests: list[Received] = []
        self.accepted: list[Received] = []
        self.lock = threading.Lock()
        self.server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait_accepted(self, n: int, timeout: float = 5.0) -> list[Received]:
        """The first ``n`` accepted requests, once the server thread has recorded them (it records
        after answering, so the client can see the answer a moment before the record exists)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.accepted) >= n:
                    return list(self.accepted[:n])
            time.sleep(0.01)
        raise AssertionError(f"{len(self.accepted)} accepted requests, expected {n}")

    def start(self) -> Receiver:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                item = Received(self.path, dict(self.headers.items()), self.rfile.read(length), time.time())
                with owner.lock:
                    owner.requests.append(item)
                    behaviour = owner.script(list(owner.requests))
                if behaviour.delay:
                    time.sleep(behaviour.delay)
                    if _peer_gone(self.connection):
                        return  # the client timed out: it was not delivered, and the client knows it
                try:
                    self.send_response(behaviour.status)
                    self.send_header("Content-Length", str(len(behaviour.body)))
                    self.end_headers()
                    self.wfile.write(behaviour.body)
                except OSError:
                    return  # the client gave up (timeout): nothing was delivered
                if 200 <= behaviour.status < 300:
                    with owner.lock:
                        owner.accepted.append(item)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def _peer_gone(conn: socket.socket) -> bool:
    readable, _, _ = select.select([conn], [], [], 0)
    if not readable:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def port_is_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@dataclass
class Recorder:
    """A fake HTTP client (the injected-client seam): records posts, answers from ``answers`` in turn."""

    answers: list[Any] = field(default_factory=list)
    calls: list[tuple[str, bytes, dict[str, str], float]] = field(default_factory=list)

    def post(self, url: str, body: bytes, headers: Any, timeout: float) -> Any:
        from alerts.notify import HttpResponse

        self.calls.append((url, body, dict(headers), timeout))
        answer = self.answers.pop(0) if self.answers else HttpResponse(200, b"ok")
        if isinstance(answer, Exception):
            raise answer
        return answer
