"""Alembic environment: runs against the engine ``db.engine.upgrade`` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    engine = config.attributes.get("engine")
    if engine is None:  # plain `alembic` command line with sqlalchemy.url set
        engine = engine_from_config(config.get_section(config.config_ini_section) or {},
                                    prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Agents and the controller starting together on a fresh database: one migrates, the others
            # wait here and then find the schema current (the lock ends with this transaction).
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7260419335)")
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        context.run_migrations()


run_migrations()
