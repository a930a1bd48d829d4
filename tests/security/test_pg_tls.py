"""The agent's store over TLS: a throwaway PostgreSQL cluster of its own with ``ssl = on``, a certificate from a
CA made for the test, password authentication only over TLS; ``sslmode=verify-full`` with ``sslrootcert`` in the
URL query works, and a client trusting another CA is refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from agent.config import AgentConfig
from agent.daemon import build_agent
from collectors.fake_nvml import FakeNVML, load_scenario
from collectors.nvml import NvmlCollector
from db.engine import make_engine
from db.secrets import database_url, redact_url
from tests.conftest import free_port, missing
from tests.security.certs import Pki, make_pki

PASSWORD = "pg-tls-pass-81c4"
BIN_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin")


@dataclass(frozen=True)
class Cluster:
    port: int
    pki: Pki
    root: Path

    def url(self, host: str = "localhost", **query: str) -> str:
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return f"postgresql+psycopg://gpufleet@{host}:{self.port}/postgres" + (f"?{params}" if params else "")


def _tool(name: str) -> str:
    for folder in BIN_DIRS:
        if os.access(Path(folder) / name, os.X_OK):
            return str(Path(folder) / name)
    found = shutil.which(name)
    if found is None:
        missing(f"PostgreSQL's {name} is not installed")
    return str(found)


def _run(argv: list[str], as_postgres: bool) -> None:
    if as_postgres:  # PostgreSQL refuses to run as root
        argv = ["runuser", "-u", "postgres", "--", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[-3:]} failed: {done.stderr.strip()[-500:]}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    initdb, pg_ctl = _tool("initdb"), _tool("pg_ctl")
    as_postgres = os.getuid() == 0
    if as_postgres and (shutil.which("runuser") is None or _uid("postgres") is None):
        missing("running as root without a postgres user to run a throwaway PostgreSQL cluster as")
    root = Path(tempfile.mkdtemp(prefix="gpufleet-pgtls-"))
    try:
        pki = make_pki(root / "pki")
        (root / "pwfile").write_text(PASSWORD + "\n")
        if as_postgres:
            uid = _uid("postgres")
            assert uid is not None
            for path in [root, *root.rglob("*")]:
                os.chown(path, uid, -1)
        data = root / "data"
        _run([initdb, "-D", str(data), "-U", "gpufleet", f"--pwfile={root / 'pwfile'}", "--auth-local=trust",
              "--auth-host=scram-sha-256", "--no-sync", "--no-instructions", "-E", "UTF8"], as_postgres)
        port = free_port()
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(f"\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n"
                       f"ssl = on\nssl_cert_file = '{pki.cert}'\nssl_key_file = '{pki.key}'\n"
                       "fsync = off\nshared_buffers = 16MB\nmax_connections = 20\n")
        # Passwords only travel inside TLS; a connection without TLS is turned away before authentication.
        (data / "pg_hba.conf").write_text("local all all trust\n"
                                          "hostssl all all 127.0.0.1/32 scram-sha-256\n"
                                          "hostnossl all all 127.0.0.1/32 reject\n")
        _run([pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-t", "15", "start"], as_postgres)
        try:
            yield Cluster(port, pki, root)
        finally:
            _run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], as_postgres)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _uid(user: str) -> int | None:
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def test_agent_writes_over_verified_tls(cluster: Cluster, tmp_path: Path) -> None:
    password_file = tmp_path / "db-password"
    password_file.write_text(PASSWORD)
    plain = cluster.url(sslmode="verify-full", sslrootcert=str(cluster.pki.ca))
    url = database_url(plain, env={"GPUFLEET_DB_PASSWORD_FILE": str(password_file)})
    assert url is not None and PASSWORD in url and PASSWORD not in redact_url(url)
    cfg = AgentConfig(db_url=url, interval=0.1, node_name="tls-node", metrics_addr=None,
                      spool_dir=str(tmp_path / "spool"))
    agent = build_agent(cfg, collectors=[NvmlCollector(FakeNVML(load_scenario("healthy"), node_name="tls-node"))])
    agent.run(max_cycles=2)
    assert agent.spool.pending() == []  # written, not spooled
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM gpu_samples")).scalar_one() > 0
            ssl_on, version = conn.execute(text(
                "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")).one()
        assert ssl_on is True and version.startswith("TLS")
    finally:
        engine.dispose()


def _connect(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def test_a_server_signed_by_another_ca_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    other = make_pki(tmp_path / "other", "not the database's")
    url = database_url(cluster.url(sslmode="verify-full", sslrootcert=str(other.ca)),
                       env={"GPUFLEET_DB_PASSWORD": PASSWORD})
    assert url is not None
    with pytest.raises(OperationalError, match="certificate verify failed"):
        _connect(url)


def test_the_host_name_is_checked_and_plain_connections_are_refused(cluster: Cluster) -> None:
    env = {"GPUFLEET_DB_PASSWORD": PASSWORD}
    _connect(str(database_url(cluster.url("127.0.0.1", sslmode="verify-full", sslrootcert=str(cluster.pki.ca)),
                              env)))  # 127.0.0.1 is in the certificate's SAN
    # Reached by a name the certificate does not carry (hostaddr skips the lookup): verify-full refuses.
    wrong_name = cluster.url("127.0.0.1", sslmode="verify-full", sslrootcert=str(cluster.pki.ca)).replace(
        "@127.0.0.1:", "@db.invalid.test:") + "&hostaddr=127.0.0.1"
    with pytest.raises(OperationalError, match="server certificate for \"localhost\""):
        _connect(str(database_url(wrong_name, env)))
    with pytest.raises(OperationalError, match="no encryption|pg_hba"):
        _connect(str(database_url(cluster.url(sslmode="disable"), env)))
