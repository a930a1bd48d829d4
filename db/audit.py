"""The audit log: who did what, when, through what, on what, and how it ended, for every operator action
(silencing alerts, acknowledging recommendations, starting benchmarks, importing data) and every
configuration change. Read by the dashboard's Audit page.

Insert-only by design: this module has no update and no delete, and the store refuses both (triggers,
migration 0006). Values under secret-looking keys in ``details`` are stored as ``<redacted>``, so a
caller that passes a configuration mapping cannot leak a password into the log by accident.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, RowMapping, func, insert, select

from db.models import AuditEntry, Base

OK, FAILED, DENIED = "ok", "failed", "denied"
OUTCOMES = (OK, FAILED, DENIED)
DASHBOARD, CLI, CONTROLLER = "dashboard", "cli", "controller"
REDACTED = "<redacted>"
SECRET_KEY = re.compile(r"secret|passw|token|credential|private|api_?key|cookie", re.IGNORECASE)
DEFAULT_LIMIT = 1000
TABLE = Base.metadata.tables[AuditEntry.__tablename__]


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    ts: float
    actor: str
    source: str
    action: str
    target: str | None
    outcome: str
    message: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def scrub(value: Any) -> Any:
    """``value`` as plain JSON data, with anything under a secret-looking key replaced by ``<redacted>``."""
    if isinstance(value, Mapping):
        return {str(k): REDACTED if SECRET_KEY.search(str(k)) else scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v) for v in value]
    return json.loads(json.dumps(value, default=str))


def record(engine: Engine, actor: str, action: str, target: str | None = None,
           details: Mapping[str, Any] | None = None, outcome: str = OK, *, source: str = DASHBOARD,
           message: str | None = None, now: float | None = None) -> int:
    """Append one entry; returns its id. ``actor``: the signed-in user's e-mail (or subject) or the OS user;
    ``action``: a dotted verb such as ``silence.create``; ``outcome``: ok, failed or denied."""
    if outcome not in OUTCOMES:
        raise ValueError(f"audit outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    if not actor:
        raise ValueError("an audit entry needs an actor")
    if not action or len(action) > 64:
        raise ValueError(f"an audit action is 1 to 64 characters, got {action!r}")
    row = {"ts": time.time() if now is None else now, "actor": actor[:255], "source": source[:32],
           "action": action, "target": target, "details": scrub(details or {}), "outcome": outcome,
           "message": message}
    with engine.begin() as conn:
        return int(conn.execute(insert(TABLE).returning(TABLE.c.id), row).scalar_one())


@dataclass
class Action:
    """What an audited block reports about itself: more details, and a one-line result."""

    details: dict[str, Any]
    message: str | None = None


@contextmanager
def action(engine: Engine, actor: str, verb: str, target: str | None, details: Mapping[str, Any] | None = None,
           *, source: str) -> Iterator[Action]:
    """Run the block as one audited action: recorded as ok when it ends, or as failed (with the error's
    first line) when it raises, the exception then going on. The block may add details and a message::

        with audit.action(engine, actor, "silence.create", "node=node-03", source=audit.CLI) as act:
            act.details["silence_id"] = create_silence(...)
    """
    act = Action(dict(details or {}))
    try:
        yield act
    except Exception as exc:
        text = str(exc).strip().splitlines()
        record(engine, actor, verb, target, act.details, FAILED, source=source,
               message=text[0] if text else type(exc).__name__)
        raise
    record(engine, actor, verb, target, act.details, OK, source=source, message=act.message)


def os_user() -> str:
    """The actor for command-line actions: the OS user and the host (``alice@login-01``)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (a bare container)
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def read(engine: Engine, *, start: float | None = None, end: float | None = None, actors: Sequence[str] = (),
         actions: Sequence[str] = (), sources: Sequence[str] = (), outcomes: Sequence[str] = (),
         search: str | None = None, limit: int = DEFAULT_LIMIT) -> list[Entry]:
    """Entries in ``[start, end]`` matching every given filter, newest first, at most ``limit``.
    ``search`` is a case-insensitive substring of the target or the message."""
    t = TABLE.c
    stmt = select(TABLE).order_by(t.ts.desc(), t.id.desc()).limit(limit)
    if start is not None:
        stmt = stmt.where(t.ts >= start)
    if end is not None:
        stmt = stmt.where(t.ts <= end)
    for column, wanted in ((t.actor, actors), (t.action, actions), (t.source, sources), (t.outcome, outcomes)):
        if wanted:
            stmt = stmt.where(column.in_(list(wanted)))
    if search:
        pattern = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(func.lower(t.target).like(pattern, escape="\\")
                          | func.lower(t.message).like(pattern, escape="\\"))
    with engine.connect() as conn:
        return [_entry(row) for row in conn.execute(stmt).mappings()]


def choices(engine: Engine) -> dict[str, list[str]]:
    """The distinct actors, actions and sources in the log, sorted (the Audit page's filter options)."""
    out: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for name, column in (("actors", TABLE.c.actor), ("actions", TABLE.c.action), ("sources", TABLE.c.source)):
            out[name] = sorted(conn.execute(select(column).distinct()).scalars())
    return out


def last(engine: Engine, action: str, target: str | None) -> Entry | None:
    """The newest entry for ``action`` on ``target``."""
    t = TABLE.c
    stmt = select(TABLE).where(t.action == action, t.target == target, t.outcome == OK).order_by(
        t.ts.desc(), t.id.desc()).limit(1)
    with engine.connect() as conn:
        row = conn.execute(stmt).mappings().first()
    return _entry(row) if row is not None else None


def record_change(engine: Engine, actor: str, action: str, target: str, details: Mapping[str, Any], *,
                  source: str, message: str | None = None, now: float | None = None) -> int | None:
    """Record a configuration load only when it differs from the last one recorded for ``target`` (so a
    restart with the same file adds nothing); returns the new entry's id, or None when nothing changed."""
    previous = last(engine, action, target)
    if previous is not None and previous.details == scrub(details):
        return None
    return record(engine, actor, action, target, details, OK, source=source, message=message, now=now)


def _entry(row: RowMapping) -> Entry:
    details = row["details"]
    if isinstance(details, str):  # some SQLite drivers hand JSON back as text
        details = json.loads(details)
    return Entry(int(row["id"]), float(row["ts"]), row["actor"], row["source"], row["action"], row["target"],
                 row["outcome"], row["message"], dict(details or {}))
