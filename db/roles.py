"""Least-privilege PostgreSQL roles for the three kinds of client of one store.

- agent: inserts telemetry, events, heartbeats and benchmark results; reads and updates only the
  node and GPU rows its write path upserts, and reads the batch ids it deduplicates against.
- dashboard: reads; writes only what its operator actions do: silences (create, expire),
  recommendation acknowledgements, and audit entries.
- controller: reads; writes alerts, their routing and delivery state, health, leases and rollups;
  deletes what retention prunes; adds audit entries (a configuration it loads).

Neither may change or delete an audit entry: the log is insert-only for every role but the owner.

``statements`` renders the GRANTs from the models, so a table added by a migration is readable by
the dashboard and the controller once the roles are applied again, and writable by whoever the
lists below name. Applying revokes first, so the result is exactly what is printed. Tables not
named here (imports, planner output) are written by the schema owner (``gpufleet db upgrade``'s
user) or a role the operator grants them to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Engine, Integer, text

from db.engine import HEAD_TABLE
from db.models import HEARTBEATS, SAMPLE_TABLES, Base
from db.retention import OPTIONAL_TABLES, RAW_TABLES, ROLLUP_TABLES

AGENT_INSERTS = (*(t.name for t in SAMPLE_TABLES.values()), "events", HEARTBEATS.name, "ingested_batches",
                 "bench_runs", "bench_results", "nodes", "gpus")
# The write path looks nodes and GPUs up by name and uuid and dedupes batch ids. It also reads back
# the ids it inserts (INSERT … RETURNING needs SELECT on the returned column: granted on every serial
# id below) and ON CONFLICT needs SELECT on the conflict key.
AGENT_READS = ("nodes", "gpus", "ingested_batches", HEAD_TABLE)
AGENT_READS_COLUMNS = {"events": ("uid",), HEARTBEATS.name: ("node_id", "ts")}
# Columns the write path updates: everything it learns about a node or GPU, never the name, the
# uuid, the id or first_seen.
AGENT_UPDATES = {"nodes": ("id", "name", "first_seen"), "gpus": ("id", "uuid", "first_seen")}
# table -> privileges: the dashboard's operator actions (alerts.silences, planner.recommend.acknowledge,
# db.audit), nothing more.
DASHBOARD_WRITES = {"silences": "INSERT, UPDATE (starts_at, ends_at)",  # create; expire, not rewrite
                    "recommendation_acks": "INSERT, DELETE", "audit_log": "INSERT"}
CONTROLLER_INSERTS = ("audit_log",)
CONTROLLER_WRITES = ("alerts", "silences", "notification_groups", "notifications", "delivery_attempts",
                     "health_states", "leases", "rollup_state", *ROLLUP_TABLES)
CONTROLLER_DELETES = (*RAW_TABLES, *OPTIONAL_TABLES)
CONTROLLER_FUNCTIONS = ("gpufleet_brin_desummarize(regclass, bigint[])",)
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Roles:
    agent: str = "gpufleet_agent"
    dashboard: str = "gpufleet_dashboard"
    controller: str = "gpufleet_controller"

    def __post_init__(self) -> None:
        for kind, name in (("agent", self.agent), ("dashboard", self.dashboard), ("controller", self.controller)):
            if not _NAME.match(name):
                raise ValueError(f"{kind} role {name!r}: use lower-case letters, digits and _ (at most 63)")
        if len({self.agent, self.dashboard, self.controller}) != 3:
            raise ValueError("the agent, dashboard and controller roles must have three different names")


def _q(name: str) -> str:
    return f'"{name}"'


def _serial_ids(tables: tuple[str, ...]) -> list[tuple[str, str]]:
    """(table, column) of the serial integer ids of ``tables``."""
    out = []
    for name in tables:
        table = Base.metadata.tables.get(name)
        if table is None or len(table.primary_key) != 1:
            continue
        col = next(iter(table.primary_key.columns))
        if isinstance(col.type, Integer) and col.autoincrement in (True, "auto"):
            out.append((name, col.name))
    return out


def _sequences(tables: tuple[str, ...]) -> list[str]:
    """The sequences behind those ids (PostgreSQL names a serial's sequence so)."""
    return [f"{table}_{col}_seq" for table, col in _serial_ids(tables)]


def statements(roles: Roles, database: str, *, login: bool = False) -> list[str]:
    """The SQL that creates the roles (if missing) and grants exactly their privileges."""
    tables = sorted(Base.metadata.tables)
    everything = [HEAD_TABLE, *tables]
    out: list[str] = []
    for role in (roles.agent, roles.dashboard, roles.controller):
        out.append(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') "
                   f"THEN CREATE ROLE {_q(role)} NOLOGIN; END IF; END $$")
        if login:
            out.append(f"ALTER ROLE {_q(role)} LOGIN")
        out += [f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {_q(role)}",
                f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {_q(role)}",
                f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM {_q(role)}",
                f"GRANT CONNECT ON DATABASE {_q(database)} TO {_q(role)}",
                f"GRANT USAGE ON SCHEMA public TO {_q(role)}"]
    agent = _q(roles.agent)
    out.append(f"GRANT INSERT ON {', '.join(AGENT_INSERTS)} TO {agent}")
    out.append(f"GRANT SELECT ON {', '.join(AGENT_READS)} TO {agent}")
    read_columns = {**{t: (c,) for t, c in _serial_ids(AGENT_INSERTS) if t not in AGENT_READS}, **AGENT_READS_COLUMNS}
    for table, cols in read_columns.items():
        out.append(f"GRANT SELECT ({', '.join(cols)}) ON {table} TO {agent}")
    for table, fixed in AGENT_UPDATES.items():
        updated = [_q(c.name) for c in Base.metadata.tables[table].columns if c.name not in fixed]
        out.append(f"GRANT UPDATE ({', '.join(updated)}) ON {table} TO {agent}")
    out.append(f"GRANT USAGE ON SEQUENCE {', '.join(_sequences(AGENT_INSERTS))} TO {agent}")
    dashboard = _q(roles.dashboard)
    out.append(f"GRANT SELECT ON {', '.join(everything)} TO {dashboard}")
    out += [f"GRANT {privileges} ON {table} TO {dashboard}" for table, privileges in DASHBOARD_WRITES.items()]
    out.append(f"GRANT USAGE ON SEQUENCE {', '.join(_sequences(tuple(DASHBOARD_WRITES)))} TO {dashboard}")
    controller = _q(roles.controller)
    out.append(f"GRANT SELECT ON {', '.join(everything)} TO {controller}")
    writes = [t for t in CONTROLLER_WRITES if t in Base.metadata.tables]
    out.append(f"GRANT INSERT, UPDATE, DELETE ON {', '.join(writes)} TO {controller}")
    out.append(f"GRANT DELETE ON {', '.join(CONTROLLER_DELETES)} TO {controller}")
    out.append(f"GRANT INSERT ON {', '.join(CONTROLLER_INSERTS)} TO {controller}")
    out.append(f"GRANT USAGE ON SEQUENCE {', '.join(_sequences((*writes, *CONTROLLER_INSERTS)))} TO {controller}")
    out += [f"GRANT EXECUTE ON FUNCTION {fn} TO {controller}" for fn in CONTROLLER_FUNCTIONS]
    return out


def apply(engine: Engine, roles: Roles, *, login: bool = False) -> list[str]:
    """Run ``statements`` in one transaction on ``engine`` (a superuser or the schema owner with
    CREATEROLE); returns what was run."""
    if engine.dialect.name != "postgresql":
        raise ValueError("roles are a PostgreSQL feature: give a postgresql:// URL")
    database = engine.url.database
    if not database:
        raise ValueError("the URL names no database")
    sql = statements(roles, database, login=login)
    with engine.begin() as conn:
        for stmt in sql:
            conn.exec_driver_sql(stmt)
    return sql


def drop(engine: Engine, roles: Roles) -> None:
    """Take the roles' privileges in this database away and drop them (the tests' cleanup; roles
    are cluster-wide, so this fails while another database still grants them something)."""
    with engine.begin() as conn:
        for role in (roles.agent, roles.dashboard, roles.controller):
            exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar()
            if exists:
                conn.exec_driver_sql(f"DROP OWNED BY {_q(role)}")
                conn.exec_driver_sql(f"DROP ROLE {_q(role)}")
