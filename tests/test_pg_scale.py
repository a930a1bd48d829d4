"""PostgreSQL at fleet scale: BRIN indexes on sample tables, the connection pool's settings, and an
agent that loses its server connections keeps every sample."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from agent.config import AgentConfig
from agent.daemon import build_agent
from collectors.fake_nvml import FakeNVML, load_scenario
from collectors.nvml import NvmlCollector
from db.engine import PING_BYPASS_SECONDS, StoreError, make_engine, upgrade
from db.models import SAMPLE_TABLES, GpuSample, IngestedBatch

GPUS = 2


def index_methods(engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT i.relname, a.amname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "JOIN pg_am a ON a.oid = i.relam WHERE i.relname LIKE 'ix\\_%\\_ts'")).all()
    return dict(rows)


def test_sample_tables_have_brin_indexes_on_postgres(pg_url: str) -> None:
    engine = make_engine(pg_url)
    upgrade(engine)
    methods = index_methods(engine)
    for table in SAMPLE_TABLES.values():
        assert methods[f"ix_{table.name}_ts"] == "brin"
    assert methods["ix_gpu_rollups_1m_ts"] == "btree" and methods["ix_events_ts"] == "btree"
    with engine.connect() as conn:
        options = conn.execute(text("SELECT reloptions FROM pg_class WHERE relname = 'ix_gpu_samples_ts'")).scalar()
    assert options == ["autosummarize=on"]
    engine.dispose()


def test_inventory_tables_leave_room_for_in_place_last_seen_updates(pg_url: str) -> None:
    engine = make_engine(pg_url)
    upgrade(engine)
    with engine.connect() as conn:
        options = dict(conn.execute(text(
            "SELECT relname, reloptions FROM pg_class WHERE relname IN ('gpus', 'nodes')")).all())
    engine.dispose()
    assert options == {"gpus": ["fillfactor=50"], "nodes": ["fillfactor=50"]}


def test_pool_settings_and_overrides(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(pg_url)
    assert engine.pool._recycle == 1800  # type: ignore[attr-defined]
    assert engine.pool.size() == 5  # type: ignore[attr-defined]
    with engine.connect() as conn:
        assert conn.execute(text("SHOW application_name")).scalar() == "gpufleet"
    engine.dispose()
    monkeypatch.setenv("GPUFLEET_DB_POOL_SIZE", "2")
    monkeypatch.setenv("GPUFLEET_DB_POOL_RECYCLE", "60")
    engine = make_engine(pg_url + "?application_name=node-07")
    assert engine.pool.size() == 2 and engine.pool._recycle == 60  # type: ignore[attr-defined]
    with engine.connect() as conn:
        assert conn.execute(text("SHOW application_name")).scalar() == "node-07"
    engine.dispose()
    monkeypatch.setenv("GPUFLEET_DB_MAX_OVERFLOW", "many")
    with pytest.raises(StoreError, match="GPUFLEET_DB_MAX_OVERFLOW"):
        make_engine(pg_url)


def test_agent_keeps_every_sample_when_its_connections_are_killed(pg_url: str, tmp_path: Path) -> None:
    """What a server restart or failover does to an agent's pool, without stopping the shared server:
    every backend of the agent is terminated, twice; the pool reconnects and nothing is lost."""
    url = pg_url + "?application_name=killed-agent"
    cfg = AgentConfig(db_url=url, interval=0.1, node_name="killed", metrics_addr=None,
                      spool_dir=str(tmp_path / "spool"))
    agent = build_agent(cfg, collectors=[NvmlCollector(FakeNVML(load_scenario("healthy"), node_name="killed",
                                                                gpu_count=GPUS))])
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    admin = make_engine(pg_url)
    try:
        for _ in range(2):
            deadline = time.monotonic() + 20
            while (agent.store is None or agent.store.written_batches < agent.cycles // 2 + 3) \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            with admin.connect() as conn:
                killed = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                           "WHERE application_name = 'killed-agent'")).scalar()
            assert killed >= 1
            time.sleep(0.5)
    finally:
        agent.stop()
        thread.join(timeout=30)
    assert agent.store is not None and not agent.spool.pending()
    with admin.connect() as conn:
        rows = conn.execute(select(func.count()).select_from(GpuSample)).scalar_one()
        batches = conn.execute(select(func.count()).select_from(IngestedBatch)).scalar_one()
    admin.dispose()
    assert batches == agent.cycles and rows == agent.cycles * GPUS


def test_connections_are_pinged_unless_just_used(pg_url: str) -> None:
    """A connection back in the pool for longer than PING_BYPASS_SECONDS is pinged before use, and
    replaced when its backend is gone; one checked in a moment ago is handed out as it is."""
    engine = make_engine(pg_url)
    pings = []
    ping = engine.dialect.do_ping
    engine.dialect.do_ping = lambda conn: pings.append(1) or ping(conn)  # type: ignore[method-assign]
    admin = make_engine(pg_url)
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with engine.connect() as conn:  # straight after: no ping
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == pid
        assert not pings  # a new connection, then one just checked in: neither is pinged
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        time.sleep(PING_BYPASS_SECONDS + 0.2)
        with engine.connect() as conn:  # pinged, found dead, replaced: no error here
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != pid
        assert pings
    finally:
        engine.dispose()
        admin.dispose()


def test_a_ping_failing_without_a_disconnect_replaces_that_connection_only(pg_url: str) -> None:
    """A dead server stales the whole pool (as pool_pre_ping); a ping that fails otherwise costs only
    the connection it ran on, and the checkout still hands out a working one."""
    engine = make_engine(pg_url)
    ping = engine.dialect.do_ping
    failures = [ValueError("not a disconnect")]

    def flaky(conn: Any) -> bool:
        if failures:
            raise failures.pop()
        return ping(conn)

    try:
        with engine.connect() as a, engine.connect() as b:  # two pooled connections
            pid_a = a.execute(text("SELECT pg_backend_pid()")).scalar()
            pid_b = b.execute(text("SELECT pg_backend_pid()")).scalar()
        time.sleep(PING_BYPASS_SECONDS + 0.2)
        engine.dialect.do_ping = flaky  # type: ignore[method-assign,assignment]
        with engine.connect() as c, engine.connect() as d:
            pids = {conn.execute(text("SELECT pg_backend_pid()")).scalar() for conn in (c, d)}
        assert not failures
        assert len(pids & {pid_a, pid_b}) == 1  # one replaced, the other kept
    finally:
        engine.dispose()
