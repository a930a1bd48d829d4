"""``/metrics`` over HTTPS with basic auth: real TLS handshakes against a throwaway CA, 401 without credentials."""

from __future__ import annotations

import base64
import hashlib
import http.client
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import AgentConfig, ConfigError, load_config
from agent.daemon import AgentError, build_agent, serve_metrics
from agent.scrape_auth import BasicAuthCheck, ScrapeAuthError
from collectors.fake_nvml import FakeNVML, load_scenario
from collectors.nvml import NvmlCollector
from tests.conftest import free_port
from tests.security.certs import Pki, make_pki

PASSWORD = "scrape-pass-3e8a"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _stored(form: str) -> str:
    if form == "plain":
        return PASSWORD
    if form == "sha256":
        return "sha256:" + hashlib.sha256(PASSWORD.encode()).hexdigest()
    bcrypt = pytest.importorskip("bcrypt")
    return str(bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode())


def _serve(tmp_path: Path, pki: Pki, stored: str) -> tuple[object, int]:
    port = free_port()
    cfg = AgentConfig(interval=1, node_name="tls-node", metrics_addr=f"127.0.0.1:{port}",
                      spool_dir=str(tmp_path / "spool"), metrics_tls_cert=str(pki.cert),
                      metrics_tls_key=str(pki.key), metrics_basic_auth_user="prometheus",
                      metrics_basic_auth_password=stored)
    agent = build_agent(cfg, collectors=[NvmlCollector(FakeNVML(load_scenario("healthy"), node_name="tls-node"))],
                        with_store=False)
    agent.collect()
    return serve_metrics(agent, cfg.metrics_addr or "", cfg), port


@pytest.fixture(params=["plain", "sha256", "bcrypt"])
def server(request: pytest.FixtureRequest, tmp_path: Path, pki: Pki) -> Iterator[int]:
    metrics, port = _serve(tmp_path, pki, _stored(request.param))
    yield port
    metrics.shutdown()  # type: ignore[attr-defined]


def _get(port: int, ca: Path, auth: tuple[str, str] | None) -> tuple[int, dict[str, str], bytes]:
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        conn.request("GET", "/metrics", headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_https_scrape_needs_the_password(server: int, pki: Pki) -> None:
    status, headers, _ = _get(server, pki.ca, None)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic ")
    assert _get(server, pki.ca, ("prometheus", "wrong"))[0] == 401
    assert _get(server, pki.ca, ("someone", PASSWORD))[0] == 401
    status, _, body = _get(server, pki.ca, ("prometheus", PASSWORD))
    assert status == 200
    assert b"gpufleet_gpu_power_watts{" in body
    assert _get(server, pki.ca, ("prometheus", PASSWORD))[0] == 200  # the remembered header


def test_plain_http_and_an_untrusted_ca_get_nothing(tmp_path: Path, pki: Pki) -> None:
    metrics, port = _serve(tmp_path, pki, PASSWORD)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            conn.request("GET", "/metrics")
            conn.getresponse()
        conn.close()
        other = make_pki(tmp_path / "other", "someone else")
        with pytest.raises(ssl.SSLCertVerificationError):
            _get(port, other.ca, ("prometheus", PASSWORD))
        assert _get(port, pki.ca, ("prometheus", PASSWORD))[0] == 200  # the server survived both
    finally:
        metrics.shutdown()  # type: ignore[attr-defined]


def test_settings_from_the_environment_and_files(tmp_path: Path, pki: Pki) -> None:
    secret = tmp_path / "metrics-password"
    secret.write_text(PASSWORD + "\n")
    cfg = load_config(env={"GPUFLEET_METRICS_TLS_CERT": str(pki.cert), "GPUFLEET_METRICS_TLS_KEY": str(pki.key),
                           "GPUFLEET_METRICS_BASIC_AUTH_USER": "prometheus",
                           "GPUFLEET_METRICS_BASIC_AUTH_PASSWORD_FILE": str(secret)})
    assert cfg.metrics_basic_auth_password == PASSWORD
    assert PASSWORD not in repr(cfg)
    with pytest.raises(ConfigError, match="metrics_tls_key is not"):
        load_config(env={"GPUFLEET_METRICS_TLS_CERT": str(pki.cert)})
    with pytest.raises(ConfigError, match="metrics_basic_auth_user is not"):
        load_config(env={"GPUFLEET_METRICS_BASIC_AUTH_PASSWORD": PASSWORD})


def test_a_key_that_does_not_match_is_one_line(tmp_path: Path, pki: Pki) -> None:
    other = make_pki(tmp_path / "other")
    cfg = AgentConfig(metrics_addr=f"127.0.0.1:{free_port()}", spool_dir=str(tmp_path / "spool"),
                      metrics_tls_cert=str(pki.cert), metrics_tls_key=str(other.key))
    agent = build_agent(cfg, collectors=[], with_store=False)
    with pytest.raises(AgentError, match="cannot load the /metrics certificate"):
        serve_metrics(agent, cfg.metrics_addr or "", cfg)


def test_stored_password_forms() -> None:
    def header(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    with pytest.raises(ScrapeAuthError, match="64 hex digits"):
        BasicAuthCheck("u", "sha256:abc")
    check = BasicAuthCheck("u", "sha256:" + hashlib.sha256(b"p:w").hexdigest())
    assert check.check(header("u", "p:w"))  # a colon belongs to the password, not the user
    for bad in (None, "", "Bearer x", "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(),
                header("u", "p"), header("u2", "p:w")):
        assert not check.check(bad)
