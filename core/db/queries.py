"""Named queries several parts of Billing Desk ask: one place to read what policy counts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from core.db.models import Action, Ticket
from core.domain import ActionKind, ActionStatus, TicketStatus

# Requested and not refused: these count against limits, issued or not.
IN_FLIGHT = tuple(s for s in ActionStatus if s.in_flight)
COUNTED = (*IN_FLIGHT, ActionStatus.SUCCEEDED)


def open_tickets_of(session: Session, customer_id: str, email: str | None) -> list[Ticket]:
    """Active tickets (open or pending the customer) about a Stripe customer: matched to it,
    or written from its address. Their categories are claims refund judgement reads."""
    about = Ticket.stripe_customer_id == customer_id
    if email:
        about = or_(about, func.lower(Ticket.requester_email) == email.strip().lower())
    active = Ticket.status.in_([s for s in TicketStatus if s.active])
    query = select(Ticket).where(active, about).order_by(Ticket.id)
    return list(session.scalars(query))


def actions_of(
    session: Session,
    customer_id: str,
    kinds: Sequence[ActionKind],
    *,
    since: datetime | None = None,
    statuses: Sequence[ActionStatus] = COUNTED,
    excluding: int | None = None,
) -> list[Action]:
    """A customer's actions of some kinds (counted ones by default), newest first."""
    query = (
        select(Action)
        .where(
            Action.stripe_customer_id == customer_id,
            Action.kind.in_([str(k) for k in kinds]),
            Action.status.in_([str(s) for s in statuses]),
        )
        .order_by(Action.id.desc())
    )
    if since is not None:
        query = query.where(Action.created_at >= since)
    if excluding is not None:
        query = query.where(Action.id != excluding)
    return list(session.scalars(query))


def in_flight_by_charge(
    session: Session, customer_id: str, *, excluding: int | None = None
) -> dict[str, int]:
    """Minor units requested on each of a customer's charges by refunds not yet issued.

    Counting them keeps cumulative refunds within the charge even while earlier requests wait.
    """
    found = actions_of(
        session, customer_id, [ActionKind.REFUND], statuses=IN_FLIGHT, excluding=excluding
    )
    totals: dict[str, int] = {}
    for action in found:
        if action.stripe_charge_id and action.amount:
            totals[action.stripe_charge_id] = totals.get(action.stripe_charge_id, 0) + action.amount
    return totals


def refunded_since(
    session: Session,
    customer_id: str,
    currency: str,
    since: datetime,
    *,
    excluding: int | None = None,
) -> int:
    """Minor units of a customer's refunds, issued or still in flight, requested since then."""
    found = actions_of(session, customer_id, [ActionKind.REFUND], since=since, excluding=excluding)
    return sum(a.amount or 0 for a in found if (a.currency or "").lower() == currency.lower())
