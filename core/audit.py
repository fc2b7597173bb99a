"""The append-only audit trail: rows are added, never changed or removed.

The database holds us to it (migration 0009): triggers refuse every UPDATE, DELETE and, on
PostgreSQL, TRUNCATE of ``audit_events``, so this module's ``record`` is the only way in and
nothing can rewrite what it wrote. See SECURITY.md.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from core.db.models import AuditEvent


def record(
    session: Session,
    *,
    actor: str,
    event: str,
    ticket_id: int | None = None,
    action_id: int | None = None,
    stripe_customer_id: str | None = None,
    **detail: Any,
) -> AuditEvent:
    """Append one audit event to the session (committed with the caller's transaction)."""
    entry = AuditEvent(
        actor=actor,
        event=event,
        ticket_id=ticket_id,
        action_id=action_id,
        stripe_customer_id=stripe_customer_id,
        detail=detail,
    )
    session.add(entry)
    return entry
