"""A lease in the store, so that of several controllers on one store exactly one leads.

The holder renews before ``expires_at``; a standby takes over once the lease has expired. Both
steps are single conditional statements, safe on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from sqlalchemy import Engine, insert, or_, update
from sqlalchemy.exc import IntegrityError

from db.models import Lease


def acquire(engine: Engine, name: str, holder: str, ttl: float, now: float) -> bool:
    """Take or renew lease ``name`` for ``holder`` until ``now + ttl``; False if another holds it."""
    with engine.begin() as conn:
        renewed = conn.execute(
            update(Lease).where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
            .values(holder=holder, expires_at=now + ttl)
        ).rowcount
        if renewed:
            return True
    try:
        with engine.begin() as conn:
            conn.execute(insert(Lease).values(name=name, holder=holder, expires_at=now + ttl))
        return True
    except IntegrityError:  # another controller inserted it first
        return False


def release(engine: Engine, name: str, holder: str) -> None:
    """Give the lease up (on a clean shutdown), so a standby need not wait for it to expire."""
    with engine.begin() as conn:
        conn.execute(update(Lease).where(Lease.name == name, Lease.holder == holder).values(expires_at=0.0))
