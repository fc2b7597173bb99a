"""Use-cases shared by the sidebar and the automation: request an action, record its outcome.

Database and policy only: the Stripe call itself happens in a job, which then records here.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import audit
from core.db.models import Action, utcnow
from core.domain import ActionKind, ActionStatus, Charge, Money, Refund, RefundReason


def action_by_key(session: Session, idempotency_key: str) -> Action | None:
    """The action with this idempotency key, if one was ever requested."""
    return session.scalar(select(Action).where(Action.idempotency_key == idempotency_key))


def queued_action_ids(session: Session, ticket_id: int) -> list[int]:
    """IDs of the ticket's actions waiting for a worker, oldest first."""
    return list(
        session.scalars(
            select(Action.id)
            .where(Action.ticket_id == ticket_id, Action.status == ActionStatus.QUEUED)
            .order_by(Action.id)
        )
    )


def recent_refunds(
    session: Session, customer_id: str, since: datetime, excluding_ticket: int | None = None
) -> list[Action]:
    """Refund actions for a customer requested since a time, newest first."""
    query = (
        select(Action)
        .where(
            Action.stripe_customer_id == customer_id,
            Action.kind == ActionKind.REFUND,
            Action.created_at >= since,
        )
        .order_by(Action.id.desc())
    )
    if excluding_ticket is not None:
        query = query.where(Action.ticket_id != excluding_ticket)
    return list(session.scalars(query))


def request_refund(
    session: Session,
    *,
    idempotency_key: str,
    ticket_id: int | None,
    charge: Charge,
    amount: Money,
    reason: RefundReason,
    requested_by: str,
    policy_reason: str,
) -> Action:
    """Record a refund to be issued, once per key; a repeated key returns the first action."""
    existing = action_by_key(session, idempotency_key)
    if existing is not None:
        return existing
    action = Action(
        kind=ActionKind.REFUND,
        status=ActionStatus.QUEUED,
        idempotency_key=idempotency_key,
        ticket_id=ticket_id,
        requested_by=requested_by,
        stripe_customer_id=charge.customer_id,
        stripe_charge_id=charge.id,
        amount=amount.amount,
        currency=amount.currency,
        reason=reason,
        policy_reason=policy_reason,
    )
    try:
        with session.begin_nested():
            session.add(action)
    except IntegrityError:
        # Another process requested the same action between our read and our insert.
        winner = action_by_key(session, idempotency_key)
        assert winner is not None
        return winner
    audit.record(
        session,
        actor=requested_by,
        event="refund.requested",
        ticket_id=ticket_id,
        action_id=action.id,
        stripe_customer_id=charge.customer_id,
        charge=charge.id,
        amount=amount.amount,
        currency=amount.currency,
        reason=str(reason),
        policy=policy_reason,
    )
    return action


def record_refund_succeeded(session: Session, action: Action, refund: Refund) -> None:
    """Mark a refund action done, keeping Stripe's refund ID, and audit it."""
    action.status = ActionStatus.SUCCEEDED
    action.stripe_object_id = refund.id
    action.error = None
    action.completed_at = utcnow()
    audit.record(
        session,
        actor=action.requested_by,
        event="refund.succeeded",
        ticket_id=action.ticket_id,
        action_id=action.id,
        stripe_customer_id=action.stripe_customer_id,
        refund=refund.id,
        charge=refund.charge_id,
        amount=refund.amount.amount,
        currency=refund.amount.currency,
    )


def record_action_failed(session: Session, action: Action, error: str) -> None:
    """Mark an action failed with a reason an agent can act on, and audit it."""
    action.status = ActionStatus.FAILED
    action.error = error
    action.completed_at = utcnow()
    audit.record(
        session,
        actor=action.requested_by,
        event=f"{action.kind}.failed",
        ticket_id=action.ticket_id,
        action_id=action.id,
        stripe_customer_id=action.stripe_customer_id,
        error=error,
    )


def action_amount(action: Action) -> Money:
    """The money an action moves."""
    if action.amount is None or action.currency is None:
        raise ValueError(f"action {action.id} has no amount")
    return Money(action.amount, action.currency)
