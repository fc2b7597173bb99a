"""Use-cases shared by the sidebar and the automation: request an action, record its outcome.

Database and policy only: the Stripe call itself happens in a job, which then records here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import agents, audit
from core.db.models import Action, Agent, utcnow
from core.domain import ActionKind, ActionStatus, Charge, Money, Refund, RefundReason, Role
from core.errors import Forbidden, InvalidInput, PolicyDenied
from core.policy.refunds import Decision, Verdict


def _audit(
    session: Session, action: Action, event: str, actor: str | None = None, **detail: Any
) -> None:
    """Audit an event of an action, with the action's ticket and customer."""
    audit.record(
        session,
        actor=actor or action.requested_by,
        event=f"{action.kind}.{event}",
        ticket_id=action.ticket_id,
        action_id=action.id,
        stripe_customer_id=action.stripe_customer_id,
        **detail,
    )


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


def in_flight_refunds(session: Session, charge_id: str) -> int:
    """Minor units requested on a charge by refunds not yet issued (queued or awaiting approval).

    Counting them keeps cumulative refunds within the charge even while earlier requests wait.
    """
    total = session.scalar(
        select(func.coalesce(func.sum(Action.amount), 0)).where(
            Action.stripe_charge_id == charge_id,
            Action.kind == ActionKind.REFUND,
            Action.status.in_([ActionStatus.QUEUED, ActionStatus.PENDING_APPROVAL]),
        )
    )
    return int(total or 0)


def in_flight_by_charge(session: Session, customer_id: str) -> dict[str, int]:
    """``in_flight_refunds`` for every charge of a customer, in one query."""
    rows = session.execute(
        select(Action.stripe_charge_id, func.sum(Action.amount))
        .where(
            Action.stripe_customer_id == customer_id,
            Action.kind == ActionKind.REFUND,
            Action.status.in_([ActionStatus.QUEUED, ActionStatus.PENDING_APPROVAL]),
        )
        .group_by(Action.stripe_charge_id)
    )
    return {charge_id: int(total or 0) for charge_id, total in rows if charge_id}


def request_action(
    session: Session,
    *,
    kind: ActionKind,
    idempotency_key: str,
    ticket_id: int | None,
    requested_by: str,
    decision: Decision,
    customer_id: str | None = None,
    charge_id: str | None = None,
    amount: Money | None = None,
    reason: str | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[Action, bool]:
    """Record an action once per key: queued, or awaiting approval when policy says so.

    Returns the action and whether this call created it; a repeated key (a double click, a
    second tab, a retried request) returns the first action unchanged. A refusal raises
    PolicyDenied with policy's reason.
    """
    existing = action_by_key(session, idempotency_key)
    if existing is not None:
        return existing, False
    if decision.verdict is Verdict.DENY:
        raise PolicyDenied(decision.reason)
    pending = decision.verdict is Verdict.NEEDS_APPROVAL
    action = Action(
        kind=kind,
        status=ActionStatus.PENDING_APPROVAL if pending else ActionStatus.QUEUED,
        idempotency_key=idempotency_key,
        ticket_id=ticket_id,
        requested_by=requested_by,
        stripe_customer_id=customer_id,
        stripe_charge_id=charge_id,
        amount=amount.amount if amount else None,
        currency=amount.currency if amount else None,
        reason=reason,
        policy_reason=decision.reason,
        params={**(params or {}), "approvals_after": [str(r) for r in decision.then]}
        if pending and decision.then
        else params or {},
        approval_role=decision.approval_role if pending else None,
    )
    try:
        with session.begin_nested():
            session.add(action)
    except IntegrityError:
        # Another process requested the same action between our read and our insert.
        winner = action_by_key(session, idempotency_key)
        assert winner is not None
        return winner, False
    _audit(
        session,
        action,
        "requested",
        summary=describe(action),
        policy=decision.reason,
        status=str(action.status),
    )
    return action, True


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
    """Record a refund automation decided to issue, once per key."""
    action, _ = request_action(
        session,
        kind=ActionKind.REFUND,
        idempotency_key=idempotency_key,
        ticket_id=ticket_id,
        requested_by=requested_by,
        decision=Decision(Verdict.ALLOW, policy_reason),
        customer_id=charge.customer_id,
        charge_id=charge.id,
        amount=amount,
        reason=reason,
    )
    return action


def decide(session: Session, action: Action, approver: Agent, *, approve: bool, note: str) -> None:
    """A lead (or the role policy named) approves or rejects a pending action; audited.

    Nobody approves their own request: the approval is the second pair of eyes.
    """
    if action.status != ActionStatus.PENDING_APPROVAL:
        raise InvalidInput(f"This action is {action.status}, not awaiting approval.")
    required = Role(action.approval_role or Role.SUPPORT_LEAD)
    if not agents.satisfies(Role(approver.role), required):
        raise Forbidden(f"{approver.email} ({approver.role}) cannot approve for {required}")
    if approver.email.lower() == action.requested_by.lower():
        raise Forbidden("an agent cannot approve their own request")
    if any(g.startswith(f"{approver.email} (") for g in (action.params or {}).get("approvals", [])):
        raise Forbidden("each approval must come from a different person")
    params = dict(action.params or {})
    given = [*params.get("approvals", []), f"{approver.email} ({required.label})"]
    # Later steps the approver's own role already covers (an admin covers them all).
    remaining = [
        Role(r)
        for r in params.get("approvals_after", [])
        if not agents.satisfies(Role(approver.role), Role(r))
    ]
    _audit(
        session,
        action,
        "approved" if approve else "rejected",
        actor=approver.email,
        summary=describe(action),
        role=str(required),
        note=note.strip() or None,
    )
    if approve and remaining:
        # A new dict: SQLAlchemy's JSON column only notices reassignment.
        action.params = {
            **params,
            "approvals": given,
            "approvals_after": [str(r) for r in remaining[1:]],
        }
        action.approval_role = remaining[0]
        return
    action.params = {**params, "approvals": given if approve else params.get("approvals", [])}
    action.status = ActionStatus.QUEUED if approve else ActionStatus.REJECTED
    action.decided_by = approver.email
    action.decided_at = utcnow()
    action.decision_note = note.strip() or None
    if not approve:
        action.completed_at = action.decided_at


def record_succeeded(
    session: Session, action: Action, stripe_object_id: str | None, **detail: Any
) -> None:
    """Mark a non-refund action done, keeping the Stripe object it touched, and audit it."""
    action.status = ActionStatus.SUCCEEDED
    action.stripe_object_id = stripe_object_id
    action.error = None
    action.completed_at = utcnow()
    _audit(
        session,
        action,
        "succeeded",
        summary=describe(action),
        stripe_object=stripe_object_id,
        **detail,
    )


def describe(action: Action) -> str:
    """One line saying what the action does, for notes, the audit trail and the sidebar."""
    params = action.params or {}
    kind = ActionKind(action.kind)
    if kind is ActionKind.REFUND:
        what = "Prorated refund" if params.get("prorated") else "Refund"
        return f"{what} of {action_amount(action)} on {action.stripe_charge_id} ({action.reason})"
    if kind is ActionKind.CANCEL_SUBSCRIPTION:
        when = "at period end" if params.get("at_period_end", True) else "immediately"
        return f"Cancel {params.get('subscription_id')} {when}"
    if kind is ActionKind.COMP_COUPON:
        months = params.get("duration_in_months")
        span = f"for {months} month(s)" if months else "for the next invoice"
        return f"Comp {params.get('subscription_id')}: 100% off {span}"
    if kind is ActionKind.EXTEND_TRIAL:
        sub, until = params.get("subscription_id"), params.get("trial_end_date")
        return f"Move the trial end of {sub} to {until} (+{params.get('days')} days)"
    if kind is ActionKind.SEND_UPDATE_CARD_LINK:
        return f"Email an update-payment-method link to {params.get('email')}"
    if kind is ActionKind.FLAG_FRAUD:
        return f"Flag {action.stripe_customer_id} as possible fraud and escalate to Security"
    if kind is ActionKind.ESCALATE:
        return f"Escalate to {params.get('target_label', params.get('target'))}"
    return "Internal note"


def record_refund_succeeded(session: Session, action: Action, refund: Refund) -> None:
    """Mark a refund action done, keeping Stripe's refund ID, and audit it."""
    record_succeeded(
        session,
        action,
        refund.id,
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
    _audit(session, action, "failed", error=error)


def action_amount(action: Action) -> Money:
    """The money an action moves."""
    if action.amount is None or action.currency is None:
        raise ValueError(f"action {action.id} has no amount")
    return Money(action.amount, action.currency)
