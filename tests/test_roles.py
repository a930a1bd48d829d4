"""Least privilege on the real PostgreSQL: the agent, the dashboard and the controller work under
their roles, and what a role must not do is refused by the server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.errors import InsufficientPrivilege
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from alerts.config import default_config
from alerts.controller import Controller, Settings
from alerts.silences import create_silence, expire_silence
from db import audit, readmodels
from db.benchstore import save_run
from db.engine import make_engine, upgrade
from db.roles import Roles, apply, drop, statements
from gpufleet.cli import main
from planner.recommend import Recommendation, acknowledge


@pytest.fixture
def roles(pg_url: str) -> Iterator[tuple[Roles, dict[str, str]]]:
    """Login roles with names unique to this run (roles are cluster-wide), dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    names = Roles(agent=f"t_agent_{tag}", dashboard=f"t_dash_{tag}", controller=f"t_ctl_{tag}")
    admin = make_engine(pg_url)
    upgrade(admin)
    try:
        apply(admin, names, login=True)
        urls = {kind: make_url(pg_url).set(username=getattr(names, kind)).render_as_string(hide_password=False)
                for kind in ("agent", "dashboard", "controller")}
        yield names, urls
    finally:
        drop(admin, names)
        admin.dispose()


def refused(engine: Engine, sql: str) -> bool:
    try:
        with engine.begin() as conn:
            conn.execute(text(sql))
    except ProgrammingError as exc:
        assert isinstance(exc.orig, InsufficientPrivilege), exc  # "permission denied", "must be owner"
        return True
    return False


def test_agent_dashboard_and_controller_under_their_roles(roles, tmp_path: Path) -> None:
    names, urls = roles
    # The agent, as deployed: the real CLI, fake GPUs, its own role.
    rc = main(["agent", "run", "--db", urls["agent"], "--simulate", "xid79", "--interval", "0.2", "--cycles", "3",
               "--metrics-addr", "", "--spool-dir", str(tmp_path / "spool"), "--node-name", "roles-node"])
    assert rc == 0
    assert not list((tmp_path / "spool").rglob("*.batch.json"))  # every batch reached the store
    agent = make_engine(urls["agent"])
    dash = make_engine(urls["dashboard"])
    ctl = make_engine(urls["controller"])
    try:
        with agent.begin() as conn:  # benchmark results too
            node_id = conn.execute(text("SELECT id FROM nodes WHERE name = 'roles-node'")).scalar_one()
            save_run(conn, node_id=node_id, workload="gemm", started_at=time.time() - 5, finished_at=time.time(),
                     results=[{"metric": "tflops", "value": 1.5}])
        with dash.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM gpu_samples")).scalar() > 0
        now = time.time()
        inventory = readmodels.inventory(dash)
        assert inventory and {r["node"] for r in inventory} == {"roles-node"}
        series, _, _ = readmodels.state_series(dash, readmodels.Scope(), now - 3600, now + 60)
        assert series
        assert readmodels.bench_results(dash, readmodels.Scope(), now - 3600, now + 60)
        # The controller: rollups, rules, alert lifecycle, routing, retention (BRIN upkeep included).
        # Two hours on, so that the samples are past the rollups' grace period and pruned.
        controller = Controller(ctl, default_config(), settings=Settings(raw_retention_days=1e-9),
                                clock=lambda: time.time() + 7200)
        report = controller.cycle()
        assert report.leader
        with dash.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM gpu_rollups_1m")).scalar() > 0
            assert conn.execute(text("SELECT count(*) FROM node_rollups_1m")).scalar() > 0
            assert conn.execute(text("SELECT count(*) FROM gpu_samples")).scalar() == 0  # pruned
        # What each role must not do.
        assert refused(agent, "DELETE FROM events")
        assert refused(agent, "UPDATE nodes SET name = 'other'")
        assert refused(agent, "SELECT * FROM alerts")
        assert refused(agent, "INSERT INTO gpu_rollups_1m (gpu_id, ts, node_id, samples, ok_samples) "
                              "VALUES (1, 0, 1, 1, 1)")
        # The dashboard's operator actions, as its pages run them; the controller's audit entry.
        silence = create_silence(dash, ["node=roles-node"], 600, "maintenance", created_by="ops@example.com")
        assert expire_silence(dash, silence)
        rec = Recommendation(kind="drain", target="roles-node", title="Drain roles-node", evidence={}, gain=1.0,
                             gain_unit="GPUs", action="drain", severity="critical")
        with audit.action(dash, "ops@example.com", "recommendation.ack", "drain roles-node", source=audit.DASHBOARD):
            acknowledge(dash, rec, "ops@example.com")
        acknowledge(dash, rec, "ops@example.com", "again")  # replaces the first
        audit.record(ctl, "controller", "config.load", "alerts.yaml", {"rules": 1}, source=audit.CONTROLLER)
        with dash.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM audit_log")).scalar() == 2
        assert refused(dash, "DELETE FROM silences")
        assert refused(dash, "UPDATE silences SET matchers = '[]'")  # expire a silence, never rewrite one
        assert refused(dash, "DELETE FROM events")
        for engine in (dash, ctl):  # the audit log is insert-only
            assert refused(engine, "UPDATE audit_log SET actor = 'someone else'")
            assert refused(engine, "DELETE FROM audit_log")
        assert refused(dash, "UPDATE nodes SET cluster = 'x'")
        assert refused(ctl, "INSERT INTO gpu_samples (gpu_id, ts, node_id, status) VALUES (1, 0, 1, 'ok')")
        assert refused(ctl, "DROP TABLE events")
    finally:
        for engine in (agent, dash, ctl):
            engine.dispose()


def test_roles_command_prints_and_refuses_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "roles", "--db", "postgresql://u@db.example/fleet", "--agent-role", "nodes"]) == 0
    out = capsys.readouterr().out
    assert 'GRANT INSERT ON gpu_samples' in out and 'TO "nodes"' in out and 'DATABASE "fleet"' in out
    assert "DELETE" not in "\n".join(line for line in out.splitlines() if '"nodes"' in line and "GRANT" in line)
    assert main(["db", "roles", "--db", "sqlite:///x.db"]) == 2
    assert main(["db", "roles", "--db", "postgresql://u@h/d", "--agent-role", "Robert'); DROP"]) == 2
    err = capsys.readouterr().err
    assert err.count("gpufleet: error:") == 2 and "Traceback" not in err
    assert len(statements(Roles(), "d")) == len(statements(Roles(), "d", login=True)) - 3
