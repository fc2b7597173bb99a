"""Signed-in browsers of the built-in helpdesk, recorded on the server so they can be ended.

A signed cookie alone stays valid until it expires, whatever happens on the server: a copy
taken before sign-out would still work. So the cookie carries only a random session id and
every request checks its record here. Sign-out revokes that record; deactivating an agent
revokes all of theirs. Only the id's SHA-256 is stored: this table signs nobody in.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.db.models import Agent, AgentSession, utcnow

# last_seen_at is refreshed at most this often: an exact time is not worth a write per request.
TOUCH_EVERY = timedelta(minutes=1)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def start(session: Session, agent: Agent, now: datetime | None = None) -> tuple[str, AgentSession]:
    """A new session for the agent: the random id for the cookie, and its record."""
    now = now or utcnow()
    session_id = secrets.token_urlsafe(32)
    record = AgentSession(
        token_hash=_digest(session_id), agent_id=agent.id, created_at=now, last_seen_at=now
    )
    session.add(record)
    session.flush()
    return session_id, record


def find_live(session: Session, session_id: str | None) -> AgentSession | None:
    """The record behind a cookie's session id, if it is neither revoked nor its agent gone."""
    if not session_id:
        return None
    record = session.scalar(
        select(AgentSession).where(AgentSession.token_hash == _digest(session_id))
    )
    if record is None or record.revoked_at is not None or not record.agent.active:
        return None
    return record


def is_live(session: Session, record_id: object, agent_id: int) -> bool:
    """True when the session record ``record_id`` is the agent's and still live."""
    record = session.get(AgentSession, record_id) if isinstance(record_id, int) else None
    return (
        record is not None
        and record.agent_id == agent_id
        and record.revoked_at is None
        and record.agent.active
    )


def needs_touch(record: AgentSession, now: datetime | None = None) -> bool:
    """True when the record's last_seen_at is old enough to be worth updating."""
    return (now or utcnow()) - record.last_seen_at >= TOUCH_EVERY


def touch(session: Session, record_id: int, now: datetime | None = None) -> None:
    """Note that the session was just used."""
    session.execute(
        update(AgentSession)
        .where(AgentSession.id == record_id)
        .values(last_seen_at=now or utcnow())
    )


def revoke(record: AgentSession, now: datetime | None = None) -> None:
    """End one session (sign-out)."""
    if record.revoked_at is None:
        record.revoked_at = now or utcnow()


def revoke_all(session: Session, agent: Agent, now: datetime | None = None) -> int:
    """End every live session of the agent; how many there were."""
    result = session.execute(
        update(AgentSession)
        .where(AgentSession.agent_id == agent.id, AgentSession.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)
