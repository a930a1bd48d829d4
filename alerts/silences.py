"""Silences: label matchers that mute matching alerts for a while (as Alertmanager's), kept in the store.

``gpufleet alerts silence`` creates, lists and expires them; routing reads the active ones.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from alerts.matchers import Matcher, MatcherError, parse_matcher
from db.models import Silence

__all__ = ["MatcherError", "SilenceInfo", "active_silences", "create_silence", "expire_silence", "is_silenced",
           "list_silences", "parse_matcher"]


@dataclass(frozen=True)
class SilenceInfo:
    id: int
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str | None
    comment: str | None
    created_at: float
    state: str  # active | pending | expired

    @property
    def matchers_text(self) -> list[str]:
        return [str(m) for m in self.matchers]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


def _info(row: Silence, now: float) -> SilenceInfo:
    state = "expired" if row.ends_at <= now else ("pending" if row.starts_at > now else "active")
    return SilenceInfo(row.id, tuple(Matcher.from_json(m) for m in row.matchers), row.starts_at, row.ends_at,
                       row.created_by, row.comment, row.created_at, state)


def create_silence(engine: Engine, matchers: Sequence[str | Matcher], duration_s: float, comment: str | None = None,
                   created_by: str | None = None, *, now: float | None = None) -> int:
    """Silence alerts matching every one of ``matchers`` (``node=node-03``, ``alertname=~"gpu_xid.*"``) for
    ``duration_s`` seconds from now; returns the silence's id. Raises ValueError (MatcherError for a bad
    matcher) with one line."""
    if not matchers:
        raise ValueError("a silence needs at least one matcher, e.g. node=node-03")
    parsed = [m if isinstance(m, Matcher) else parse_matcher(m) for m in matchers]
    if all(m.matches({}) for m in parsed):
        raise ValueError("these matchers also match alerts without those labels, so the silence would mute "
                         "every alert; add a matcher that needs a label value (e.g. node=node-03)")
    if not duration_s > 0:
        raise ValueError(f"the duration must be positive, got {duration_s:g} s")
    now = time.time() if now is None else now
    row = Silence(matchers=[m.to_json() for m in parsed], starts_at=now, ends_at=now + duration_s,
                  created_by=created_by, comment=comment, created_at=now)
    with Session(engine) as session, session.begin():
        session.add(row)
        session.flush()
        return int(row.id)


def list_silences(engine: Engine, include_expired: bool = False, *, now: float | None = None) -> list[SilenceInfo]:
    """Active (and pending) silences, newest first; with ``include_expired`` the expired ones too."""
    now = time.time() if now is None else now
    stmt = select(Silence).order_by(Silence.created_at.desc(), Silence.id.desc())
    if not include_expired:
        stmt = stmt.where(Silence.ends_at > now)
    with Session(engine) as session:
        return [_info(row, now) for row in session.scalars(stmt)]


def expire_silence(engine: Engine, silence_id: int, *, now: float | None = None) -> bool:
    """End the silence now. True if it was active or pending, False if it had already expired; ValueError
    if there is no such silence."""
    now = time.time() if now is None else now
    with Session(engine) as session, session.begin():
        row = session.get(Silence, silence_id)
        if row is None:
            raise ValueError(f"no silence with id {silence_id}")
        if row.ends_at <= now:
            return False
        session.execute(update(Silence).where(Silence.id == silence_id)
                        .values(ends_at=now, starts_at=min(row.starts_at, now)))
        return True


def active_silences(session: Session, now: float) -> list[SilenceInfo]:
    rows = session.scalars(select(Silence).where(Silence.starts_at <= now, Silence.ends_at > now))
    return [_info(row, now) for row in rows]


def is_silenced(labels: Mapping[str, str], silences: Sequence[SilenceInfo]) -> list[int]:
    """The ids of the silences that mute an alert with these labels."""
    return [s.id for s in silences if s.matches(labels)]
