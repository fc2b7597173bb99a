"""Escalations as work: a team's queue, picked up by one of its people, resolved with the
ticket, and breached when nobody picked it up in time (the SLA check in jobs.schedule)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit
from core.db.models import Escalation, utcnow
from core.domain import EscalationStatus, EscalationTarget, Role

# Who works each team's queue: the role whose people pick its escalations up. Admins work
# every queue; the Engineering teams have no role of their own here, so admins take them.
TEAM_ROLES: dict[EscalationTarget, frozenset[Role]] = {
    EscalationTarget.SUPPORT_LEAD: frozenset([Role.SUPPORT_LEAD, Role.ADMIN]),
    EscalationTarget.FINANCE: frozenset([Role.FINANCE, Role.ADMIN]),
    EscalationTarget.SECURITY: frozenset([Role.SECURITY, Role.ADMIN]),
    EscalationTarget.ACCOUNT_MANAGER: frozenset([Role.ACCOUNT_MANAGER, Role.ADMIN]),
    EscalationTarget.ENGINEERING_PLATFORM: frozenset([Role.ADMIN]),
    EscalationTarget.ENGINEERING_CRITICAL: frozenset([Role.ADMIN]),
}


def teams_of(role: Role) -> tuple[EscalationTarget, ...]:
    """The team queues a person of ``role`` works."""
    return tuple(team for team, roles in TEAM_ROLES.items() if role in roles)


def open_escalations(session: Session, ticket_id: int) -> Sequence[Escalation]:
    """The ticket's escalations still waiting for their team."""
    return session.scalars(
        select(Escalation)
        .where(Escalation.ticket_id == ticket_id, Escalation.status == EscalationStatus.OPEN)
        .order_by(Escalation.due_at)
    ).all()


def pick_up(session: Session, ticket_id: int, by: str, role: Role) -> list[Escalation]:
    """A person works the ticket (assigns it to themselves, replies, changes its status): the
    escalations to the teams their role works are picked up, and their SLA is met."""
    now = utcnow()
    picked = []
    for escalation in open_escalations(session, ticket_id):
        if role in TEAM_ROLES[EscalationTarget(escalation.target)]:
            escalation.status = EscalationStatus.PICKED_UP
            escalation.picked_up_by, escalation.picked_up_at = by, now
            picked.append(escalation)
            audit.record(
                session,
                actor=by,
                event="escalation.picked_up",
                ticket_id=ticket_id,
                escalation=escalation.id,
                target=escalation.target,
                late=escalation.due_at < now,
            )
    return picked


def resolve(session: Session, ticket_id: int, by: str) -> None:
    """The ticket is solved or closed: nothing of it waits for a team any more."""
    now = utcnow()
    for escalation in session.scalars(
        select(Escalation).where(
            Escalation.ticket_id == ticket_id,
            Escalation.status.in_([EscalationStatus.OPEN, EscalationStatus.PICKED_UP]),
        )
    ):
        escalation.status = EscalationStatus.RESOLVED
        escalation.resolved_at = now
        audit.record(
            session, actor=by, event="escalation.resolved", ticket_id=ticket_id, id=escalation.id
        )


def due_breaches(session: Session, now: datetime) -> Sequence[Escalation]:
    """Escalations past their due time, not picked up, and not yet found breached."""
    return session.scalars(
        select(Escalation)
        .where(
            Escalation.status == EscalationStatus.OPEN,
            Escalation.due_at <= now,
            Escalation.breached_at.is_(None),
        )
        .order_by(Escalation.due_at)
    ).all()
