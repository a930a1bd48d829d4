"""The agent never loses or duplicates a collected sample: store down, store locked, agent killed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from agent.config import AgentConfig
from agent.daemon import build_agent
from collectors.fake_nvml import FakeNVML, load_scenario
from collectors.nvml import NvmlCollector
from db.engine import current_revision, make_engine
from db.models import GpuSample, IngestedBatch
from tests.conftest import binary, missing

GPUS = 2


def start_agent(tmp_path: Path, url: str, interval: float = 0.1):
    cfg = AgentConfig(db_url=url, interval=interval, node_name="outage-node", metrics_addr=None,
                      spool_dir=str(tmp_path / "spool"))
    fake = FakeNVML(load_scenario("healthy"), node_name="outage-node", gpu_count=GPUS)
    agent = build_agent(cfg, collectors=[NvmlCollector(fake)])
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    return agent, thread


def wait_for(predicate, timeout: float = 30.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def stored(url: str) -> tuple[int, int, int]:
    """(GPU sample rows, distinct timestamps, ingested batches)."""
    engine = make_engine(url)
    try:
        if current_revision(engine) is None:  # the agent has not finished creating the schema
            return 0, 0, 0
        with engine.connect() as conn:
            rows = conn.execute(select(func.count()).select_from(GpuSample)).scalar_one()
            distinct = conn.execute(select(func.count(func.distinct(GpuSample.ts)))).scalar_one()
            batches = conn.execute(select(func.count()).select_from(IngestedBatch)).scalar_one()
    finally:
        engine.dispose()
    return rows, distinct, batches


def finish(agent, thread) -> None:
    agent.stop()
    thread.join(timeout=30)
    assert not thread.is_alive()


def assert_every_cycle_once(agent, url: str) -> None:
    assert agent.spool.pending() == []
    rows, distinct, batches = stored(url)
    assert batches == agent.cycles
    assert distinct == agent.cycles
    assert rows == agent.cycles * GPUS


def test_sqlite_locked_by_another_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    agent, thread = start_agent(tmp_path, url)
    assert wait_for(lambda: agent.store.written_batches >= 3)
    locker = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({str(tmp_path / 'store.db')!r}, isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(4); c.execute('COMMIT')\n")],
        stdout=subprocess.PIPE, text=True)
    assert locker.stdout.readline().strip() == "locked"
    cycles_at_lock = agent.cycles
    assert wait_for(lambda: agent.store.total_failures >= 1, timeout=10)
    assert len(agent.spool.pending()) >= 1  # collection went on into the spool
    locker.wait(timeout=30)
    assert wait_for(lambda: agent.cycles > cycles_at_lock + 40 and not agent.spool.pending(), timeout=30)
    finish(agent, thread)
    assert_every_cycle_once(agent, url)
    with sqlite3.connect(tmp_path / "store.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _pg_ctl(action: str) -> None:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or not binary("pg_ctlcluster"):
        missing("pg_ctlcluster not available to stop and start PostgreSQL")
    cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", action]
    if action == "stop":
        cmd += ["-m", "fast"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)


def test_postgres_stopped_and_started(tmp_path: Path, pg_url: str) -> None:
    if os.geteuid() != 0:
        missing("stopping PostgreSQL needs root")
    agent, thread = start_agent(tmp_path, pg_url)
    try:
        assert wait_for(lambda: agent.store.written_batches >= 3)
        _pg_ctl("stop")
        try:
            before = agent.cycles
            assert wait_for(lambda: agent.store.total_failures >= 1, timeout=20)
            time.sleep(4)
            assert agent.cycles > before + 10  # collection never waited for the store
            assert len(agent.spool.pending()) >= 5
        finally:
            _pg_ctl("start")
        assert wait_for(lambda: not agent.spool.pending() and agent.store.failures == 0, timeout=60)
    finally:
        finish(agent, thread)
    assert_every_cycle_once(agent, pg_url)


def _agent_cmd(tmp_path: Path, url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gpufleet", "agent", "run", "--simulate", "healthy", "--interval", "0.05",
            "--db", url, "--spool-dir", str(tmp_path / "spool"), "--metrics-addr", "", "--node-name", "k",
            *extra]


def test_sigkill_mid_write_then_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    proc = subprocess.Popen(_agent_cmd(tmp_path, url), stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: (tmp_path / "store.db").exists() and stored(url)[2] >= 20, timeout=60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    with sqlite3.connect(tmp_path / "store.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    spooled = {p.name.split("-", 1)[1].split(".")[0] for p in (tmp_path / "spool").glob("*.batch.json")}
    before = stored(url)
    done = subprocess.run(_agent_cmd(tmp_path, url, "--cycles", "20"), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    rows, distinct, batches = stored(url)
    assert batches >= before[2] + 20  # the restarted agent continued
    assert rows == distinct * 8 and batches == distinct  # no duplicate, no half batch
    assert not list((tmp_path / "spool").glob("*.batch.json"))
    engine = make_engine(url)
    with engine.connect() as conn:
        ids = set(conn.execute(text("select batch_id from ingested_batches")).scalars())
    engine.dispose()
    assert spooled <= ids  # what was spooled at the kill was written after the restart


def test_sigterm_flushes_and_exits_cleanly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    proc = subprocess.Popen(_agent_cmd(tmp_path, url), stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: (tmp_path / "store.db").exists() and stored(url)[2] >= 5, timeout=60)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "received SIGTERM" in err
    assert not list((tmp_path / "spool").glob("*.batch.json"))
    rows, distinct, batches = stored(url)
    assert rows == distinct * 8 and batches == distinct


@pytest.mark.parametrize("interval", [0.2])
def test_schedule_does_not_drift(tmp_path: Path, interval: float) -> None:
    """A cycle that takes most of the interval does not push later cycles back."""
    times: list[float] = []

    class Slow:
        name = "slow"

        def check(self) -> bool:
            return True

        def collect(self) -> list:
            times.append(time.monotonic())
            time.sleep(interval * 0.6)
            return []

        def close(self) -> None:
            pass

    cfg = AgentConfig(db_url=None, interval=interval, metrics_addr=None, spool_dir=str(tmp_path / "s"))
    agent = build_agent(cfg, collectors=[Slow()], with_store=False)
    agent.run(max_cycles=10)
    offsets = [t - times[0] - i * interval for i, t in enumerate(times)]
    assert max(abs(o) for o in offsets) < interval / 2  # with drift, 10 cycles would be 1.2 s late
