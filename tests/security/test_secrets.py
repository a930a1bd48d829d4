"""Secrets from variables and ``*_FILE`` files, redaction, and the end-to-end promise: after an agent and a controller
have run with known secrets, no log line, ``/metrics`` body, error message or stored row contains any of them."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import MetaData, select

from agent.config import ConfigError, load_config
from alerts.notify import verify
from db.engine import StoreError, make_engine, resolve_url
from db.secrets import RedactingFilter, SecretError, database_url, endpoint, mask, read_secret, redact_url, remember
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_read_secret_from_variable_or_file(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_text("from-a-file\n")
    assert read_secret("X", {"X": "direct "}) == "direct"
    assert read_secret("X", {"X_FILE": str(path)}) == "from-a-file"
    assert read_secret("X", {}) is None
    with pytest.raises(SecretError, match="both X and X_FILE"):
        read_secret("X", {"X": "a", "X_FILE": str(path)})
    with pytest.raises(SecretError, match=r"X_FILE: cannot read .*missing: No such file") as info:
        read_secret("X", {"X_FILE": str(tmp_path / "missing")})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SecretError, match="is empty"):
        read_secret("X", {"X_FILE": str(empty)})
    assert "from-a-file" not in str(info.value)


def test_database_url_merges_the_password(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("p@ss/w:rd\n")
    base = "postgresql+psycopg://agent@db.example:5432/gpufleet?sslmode=verify-full&sslrootcert=/etc/ca.pem"
    merged = database_url(base, {"GPUFLEET_DB_PASSWORD_FILE": str(pw)})
    assert merged is not None
    from sqlalchemy.engine import make_url

    parsed = make_url(merged)
    assert parsed.password == "p@ss/w:rd" and parsed.query == {"sslmode": "verify-full", "sslrootcert": "/etc/ca.pem"}
    # A URL that carries its own password keeps it; SQLite has none to take.
    own = "postgresql+psycopg://agent:own-pass@db.example/gpufleet"
    assert database_url(own, {"GPUFLEET_DB_PASSWORD": "other"}) == own
    assert database_url("sqlite:///x.db", {"GPUFLEET_DB_PASSWORD": "other"}) == "sqlite:///x.db"
    url_file = tmp_path / "url"
    url_file.write_text(base + "\n")
    assert database_url(None, {"GPUFLEET_DB_URL_FILE": str(url_file)}) == base
    assert database_url(None, {}) is None


def test_resolve_url_errors_are_store_errors(tmp_path: Path) -> None:
    os.environ["GPUFLEET_DB_URL_FILE"] = str(tmp_path / "nowhere")  # resolve_url reads the process environment
    try:
        with pytest.raises(StoreError, match="GPUFLEET_DB_URL_FILE: cannot read"):
            resolve_url(None)
    finally:
        del os.environ["GPUFLEET_DB_URL_FILE"]


def test_redaction() -> None:
    assert redact_url("postgresql+psycopg://u:hunter22@h/db?sslmode=require&password=qq11") == \
        "postgresql+psycopg://u:***@h/db?password=***&sslmode=require"
    assert redact_url("not a url") == "<unparseable URL>"
    assert endpoint("https://hooks.slack.com/services/T0/B0/XYZ?token=abc") == "https://hooks.slack.com/…"
    assert endpoint("http://user:pw@[::1]:9093") == "http://[::1]:9093"
    assert endpoint("nonsense") == "<invalid URL>"
    remember("remembered-secret-1")
    assert mask("a remembered-secret-1 b") == "a *** b"


def test_log_filter_masks_messages_and_tracebacks() -> None:
    remember("tb-secret-99")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("gpufleet.test.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("connect to %s failed", "postgresql://u:tb-secret-99@h/db")
        try:
            raise ValueError("bad token tb-secret-99")
        except ValueError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "tb-secret-99" not in out
    assert "postgresql://u:***@h/db" in out and "ValueError: bad token ***" in out


def test_agent_config_reads_secret_files(tmp_path: Path) -> None:
    url_file = tmp_path / "db-url"
    url_file.write_text("postgresql+psycopg://a:cfg-secret-77@h/db\n")
    conf = tmp_path / "agent.yaml"
    conf.write_text(f"db_url_file: {url_file}\n")
    cfg = load_config(str(conf), env={})
    assert cfg.db_url == "postgresql+psycopg://a:cfg-secret-77@h/db"
    assert "cfg-secret-77" not in repr(cfg)
    assert load_config(env={"GPUFLEET_DB_URL_FILE": str(url_file)}).db_url == cfg.db_url
    with pytest.raises(ConfigError, match="GPUFLEET_DB_URL_FILE: cannot read"):
        load_config(env={"GPUFLEET_DB_URL_FILE": str(tmp_path / "missing")})
    conf.write_text("db_url_file: [1]\n")
    with pytest.raises(ConfigError, match="expected the path of a file"):
        load_config(str(conf), env={})


# --- end to end --------------------------------------------------------------------------------------------------

SECRETS = {
    "db_password": "dbpass-7f3a9c2e51",
    "metrics_password": "metricspass-4b8d1e",
    "privacy_key": "privkey-0123456789abcdef",
    "webhook_token": "hooktoken-9c1e5a77",
    "hmac": "hmacsecret-2d4f6a8c",
    "bearer": "bearertoken-6e0b3d",
}


class EchoReceiver:
    """A webhook receiver that fails every delivery with a body echoing the path and the Authorization header:
    whatever the notifier stores or logs of the answer would leak them unless it scrubs them."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                requests.append((self.path, dict(self.headers), body))
                echo = f"no route {self.path} for {self.headers.get('Authorization')}".encode()
                self.send_response(500)
                self.send_header("Content-Length", str(len(echo)))
                self.end_headers()
                self.wfile.write(echo)

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUFLEET_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``gpufleet -v ARGS`` (debug logging: the most there is to leak), stdout and stderr together."""
    return subprocess.Popen([sys.executable, "-m", "gpufleet", "-v", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def _scrape(port: int, password: str) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={
        "Authorization": "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode()})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _store_text(url: str) -> str:
    """Every row of every table, as text: what the dashboard pages and the audit log are built from."""
    engine = make_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    out = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            out += [repr(tuple(row)) for row in conn.execute(select(table))]
    engine.dispose()
    return "\n".join(out)


@pytest.mark.service
def test_no_secret_leaks_from_agent_controller_or_errors(pg_url: str, tmp_path: Path) -> None:
    files = {name: tmp_path / name for name in SECRETS}
    for name, value in SECRETS.items():
        files[name].write_text(value + "\n")
    receiver = EchoReceiver()
    (tmp_path / "webhook-url").write_text(f"http://127.0.0.1:{receiver.port}/hooks/{SECRETS['webhook_token']}\n")
    (tmp_path / "agent.yaml").write_text(f"process_privacy: pseudonymize\nprocess_privacy_key_file: "
                                         f"{files['privacy_key']}\nmetrics_basic_auth_user: prometheus\n"
                                         f"metrics_basic_auth_password_file: {files['metrics_password']}\n")
    (tmp_path / "alerting.yaml").write_text(f"""
route: {{receiver: ops, group_wait: 0s, group_interval: 1s}}
receivers:
  - name: ops
    type: webhook
    url_file: webhook-url
    secret_file: {files['hmac']}
    bearer_token_env: HOOK_BEARER
delivery: {{backoff_base: 0.2s, backoff_max: 0.5s}}
controller: {{evaluation_interval: 0.5s, lease_ttl: 5s}}
""")
    env = _env({"GPUFLEET_DB_URL": pg_url, "GPUFLEET_DB_PASSWORD_FILE": str(files["db_password"]),
                "HOOK_BEARER": SECRETS["bearer"]})
    closed = f"postgresql+psycopg://gpufleet@127.0.0.1:{free_port()}/gpufleet"  # nothing listens there
    port = free_port()
    # Four real processes side by side (about 15 s: the scenario's XID 79 comes 5 s into the agent's run):
    # an agent with /metrics behind basic auth, the controller delivering its alert, and two that fail.
    runs = {
        "agent": _start("agent", "run", "--config", str(tmp_path / "agent.yaml"), "--simulate", "xid79", "--interval",
                        "0.5", "--cycles", "14", "--node-name", "leak-node", "--metrics-addr", f"127.0.0.1:{port}",
                        "--spool-dir", str(tmp_path / "spool"), env=env),
        "controller": _start("controller", "run", "--config", str(tmp_path / "alerting.yaml"), "--cycles", "22",
                             env=env),
        "db info": _start("db", "info", "--db", closed, env=env),
        "agent, store down": _start("agent", "run", "--simulate", "healthy", "--interval", "0.2", "--cycles", "2",
                                    "--metrics-addr", "", "--spool-dir", str(tmp_path / "spool2"),
                                    env={**env, "GPUFLEET_DB_URL": closed}),
    }
    bodies = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(s == 200 and "gpufleet_gpu_up" in b for s, b in bodies):
        try:
            bodies += [_scrape(port, SECRETS["metrics_password"]), _scrape(port, "wrong")]
        except OSError:
            time.sleep(0.2)
    out = {name: run.communicate(timeout=90)[0] for name, run in runs.items()}
    codes = {name: run.returncode for name, run in runs.items()}
    receiver.server.shutdown()
    assert codes == {"agent": 0, "controller": 0, "db info": 2, "agent, store down": 0}, out
    assert any(s == 200 for s, _ in bodies) and any(s == 401 for s, _ in bodies), bodies
    # The secrets were used: the receiver saw the signed body, the bearer token and the token in the path.
    assert receiver.requests, out["controller"]
    path, headers, body = receiver.requests[0]
    assert SECRETS["webhook_token"] in path and headers["Authorization"] == f"Bearer {SECRETS['bearer']}"
    assert verify(body, headers.get("X-Gpufleet-Signature"), SECRETS["hmac"])
    assert "delivery: ops: HTTP 500: no route *** for Bearer ***" in out["controller"]  # logged, scrubbed
    assert "gpufleet: error: cannot reach the store" in out["db info"]
    assert "kept in the spool" in out["agent, store down"]
    shown = [*out.values(), json.dumps(bodies), _store_text(pg_url)]
    for name, value in SECRETS.items():
        for text in shown:
            assert value not in text, f"{name} leaked: …{text[max(0, text.find(value) - 200):text.find(value) + 50]}"
