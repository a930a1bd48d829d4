"""Opening a store: URL handling, engine settings per backend, and schema migrations."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, InvalidatePoolError, NoSuchModuleError

from db.secrets import SecretError, database_url, redact_url

MIGRATIONS = Path(__file__).with_name("migrations")
HEAD_TABLE = "alembic_version"


class StoreError(Exception):
    """A store problem worth one clear line to the user (bad URL, unreachable server, old schema)."""


def default_url() -> str:
    """SQLite in the user's data directory (``$XDG_DATA_HOME/gpufleet/gpufleet.db``)."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return f"sqlite:///{base / 'gpufleet' / 'gpufleet.db'}"


def resolve_url(url: str | None) -> str:
    """The URL to use: the argument, else ``GPUFLEET_DB_URL`` (or ``_FILE``), else the default SQLite file; with
    ``GPUFLEET_DB_PASSWORD`` (or ``_FILE``) merged in when the URL has no password (``db.secrets``)."""
    try:
        return database_url(url) or default_url()
    except SecretError as exc:
        raise StoreError(str(exc)) from None


def parse_url(url: str) -> URL:
    """Parse and normalise: plain ``postgresql://`` and ``postgres://`` get the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"invalid database URL {redact(url)!r}: expected e.g. sqlite:///path/to.db "
                         "or postgresql+psycopg://user@host/db") from exc
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        parsed.get_dialect()
    except NoSuchModuleError as exc:
        raise StoreError(f"unknown database driver {parsed.drivername!r} in {redact(url)!r}") from exc
    except ImportError as exc:
        raise StoreError(f"the driver for {parsed.drivername} is not installed ({exc.name}): "
                         "pip install 'gpufleet[postgres]'") from exc
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(f"unsupported database {parsed.get_backend_name()!r} in {redact(url)!r}: "
                         "use sqlite or postgresql")
    return parsed


def redact(url: str | URL) -> str:
    """The URL with any password (also ``?password=``) hidden, safe for logs and error messages."""
    return redact_url(url)


def make_engine(url: str | None = None, *, busy_timeout_ms: int = 2000, **kwargs: Any) -> Engine:
    """An engine for ``url`` with the settings gpufleet relies on.

    SQLite: WAL journal, ``synchronous=NORMAL`` (durable across application crashes, which is what
    the agent's spool needs) and a short busy timeout, so a locked file makes the writer spool
    instead of stalling the collection loop. The parent folder is created.
    PostgreSQL: psycopg 3 and a pool that survives a server restart: a ping tests a connection
    before handing it out (unless it was in use half a second ago: ``_ping_unless_just_used``),
    connections are recycled every half hour (a backend does not live for ever behind a proxy or
    PgBouncer), TCP keepalives notice a server that vanished
    mid-statement, and ``application_name`` names the process in ``pg_stat_activity``. Pool size,
    overflow and recycle come from ``GPUFLEET_DB_POOL_SIZE``, ``GPUFLEET_DB_MAX_OVERFLOW`` and
    ``GPUFLEET_DB_POOL_RECYCLE`` when set (see docs/SCALING.md); ``kwargs`` override everything.
    """
    parsed = parse_url(resolve_url(url))
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder for {database}: {exc.strerror}") from exc
        engine = create_engine(parsed, connect_args={"timeout": busy_timeout_ms / 1000}, **kwargs)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cur.close()

        return engine
    for name, (env, default) in POOL_SETTINGS.items():
        kwargs.setdefault(name, _env_int(env, default))
    ping = "pool_pre_ping" not in kwargs  # pinged below, unless the caller chose
    kwargs.setdefault("pool_timeout", 10)
    connect_args = {k: v for k, v in PG_CONNECT_ARGS.items() if k not in parsed.query}
    connect_args.update(kwargs.pop("connect_args", {}))
    engine = create_engine(parsed, connect_args=connect_args, **kwargs)
    if ping:
        _ping_unless_just_used(engine)
    return engine


PING_BYPASS_SECONDS = 0.5  # HikariCP's aliveBypassWindowMs: a connection this fresh is not pinged


def _ping_unless_just_used(engine: Engine) -> None:
    """``pool_pre_ping``, except for a connection checked in less than ``PING_BYPASS_SECONDS`` ago
    (an agent draining its spool, a controller cycle's queries): the ping is a round trip per
    transaction there, for a connection that was just seen alive. A server that went away within
    that window fails that one transaction, which the pool then replaces (the agent keeps the
    batch in its spool and writes it again)."""

    @event.listens_for(engine, "connect")
    def _connected(_dbapi_conn: Any, record: Any) -> None:
        record.info["gpufleet_checked_in"] = time.monotonic()  # just made: alive, no ping needed

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        used = record.info.get("gpufleet_checked_in")
        if used is not None and time.monotonic() - used < PING_BYPASS_SECONDS:
            return
        dialect = engine.dialect
        try:
            dialect.do_ping(dbapi_conn)
        except Exception as exc:
            if isinstance(exc, dialect.loaded_dbapi.Error) and dialect.is_disconnect(exc, dbapi_conn, None):
                # As pool_pre_ping: the whole pool is stale after a server restart, not just this one.
                raise InvalidatePoolError(f"ping failed: {exc}") from exc
            raise DisconnectionError(f"ping failed: {exc}") from exc  # this connection only: the pool retries

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info["gpufleet_checked_in"] = time.monotonic()


# create_engine setting -> (environment variable, default). An agent's writer uses one connection at
# a time, so the pool stays at one per agent; the dashboard and controller use a few.
POOL_SETTINGS = {
    "pool_size": ("GPUFLEET_DB_POOL_SIZE", 5),
    "max_overflow": ("GPUFLEET_DB_MAX_OVERFLOW", 5),
    "pool_recycle": ("GPUFLEET_DB_POOL_RECYCLE", 1800),
}
# libpq settings unless the URL's query names them (``?sslmode=verify-full&application_name=…``).
PG_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 5,
    "application_name": "gpufleet",
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise StoreError(f"{name}={raw!r}: expected a whole number") from None


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (Alembic)."""
    from alembic import command

    command.upgrade(_alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def ensure_schema(engine: Engine, *, migrate: bool = True) -> None:
    """Make sure the schema is current: upgrade it when allowed, else say what to run."""
    current = current_revision(engine)
    if current == head_revision():
        return
    if not migrate:
        raise StoreError(f"the store's schema is at {current or 'nothing'}, this gpufleet needs "
                         f"{head_revision()}: run 'gpufleet db upgrade --db URL'")
    upgrade(engine)


def table_names(engine: Engine) -> list[str]:
    return sorted(inspect(engine).get_table_names())


def upsert(bind: Any, table: Any) -> Any:
    """An INSERT with ``on_conflict_do_nothing`` / ``on_conflict_do_update`` for ``bind``'s dialect
    (PostgreSQL or SQLite; ``bind`` is an engine, a connection, or the dialect's name)."""
    name = bind if isinstance(bind, str) else bind.dialect.name
    return (postgresql.insert if name == "postgresql" else sqlite.insert)(table)
