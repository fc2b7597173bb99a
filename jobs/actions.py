"""execute_action: carry out an agent's confirmed action on a worker, once, and note it.

Refunds go through ``issue_refund`` (shared with automation). Every other kind runs here:
each Stripe write carries the action's idempotency key, so a retried or re-run job changes
nothing twice, and the outcome lands on the Action row, in the audit trail and on the ticket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rq import Queue

from core import actions
from core.db import session_scope
from core.db.models import Action, Escalation, Ticket, utcnow
from core.domain import ActionKind, ActionStatus, EscalationTarget, Role
from core.errors import BillingDeskError
from core.helpdesks import helpdesk_for_ticket
from core.policy.escalations import sla_due, sla_text
from jobs import queues, runtime
from jobs.emails import send_update_card_link
from jobs.refunds import issue_refund

log = logging.getLogger(__name__)


def enqueue_action(queue: Queue, action_id: int) -> None:
    """Queue an action for a worker (once per action)."""
    queues.enqueue_once(queue, execute_action, action_id, job_id=f"action-{action_id}")


def enqueue_decision_note(queue: Queue, action: Action) -> None:
    """Queue the ticket note for an action's approval state (once per state)."""
    state = "decided" if action.decided_by else f"pending-{action.approval_role}"
    queues.enqueue_once(queue, note_decision, action.id, job_id=f"note-{state}-{action.id}")


def execute_action(action_id: int) -> str:
    """Run a queued action; safe to run any number of times."""
    rt = runtime.current()
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        if action is None:
            log.error("action %s does not exist", action_id)
            return "missing"
        kind, status = ActionKind(action.kind), ActionStatus(action.status)
    if kind is ActionKind.REFUND:
        return issue_refund(action_id)
    if status is not ActionStatus.QUEUED:
        return str(status)
    handler = _HANDLERS[kind]
    try:
        stripe_object, note = handler(rt, action_id)
    except BillingDeskError as exc:
        if exc.retryable:
            raise
        _record(rt, action_id, None, f"{kind} failed: {exc}", failed=True)
        return "failed"
    _record(rt, action_id, stripe_object, note)
    if kind is ActionKind.SEND_UPDATE_CARD_LINK:
        queues.enqueue_once(
            rt.queue(queues.ACTIONS),
            send_update_card_link,
            action_id,
            job_id=f"update-card-link-{action_id}",
        )
    return "succeeded"


def _record(
    rt: runtime.Runtime, action_id: int, stripe_object: str | None, note: str, failed: bool = False
) -> None:
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        assert action is not None
        if failed:
            actions.record_action_failed(session, action, note)
        else:
            actions.record_succeeded(session, action, stripe_object)
        if action.ticket_id is not None:
            approval = (
                f" Approved by {action.decided_by}." if action.decided_by and not failed else ""
            )
            helpdesk_for_ticket(session, action.ticket_id, rt.settings).add_internal_note(
                action.ticket_id,
                f"{note} Requested by {action.requested_by}.{approval}",
                author="billing-desk",
            )


def _params(rt: runtime.Runtime, action_id: int) -> tuple[Action, dict[str, Any]]:
    """The action (detached, for reading) and its parameters."""
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        assert action is not None
        session.expunge(action)
    return action, dict(action.params or {})


def _cancel(rt: runtime.Runtime, action_id: int) -> tuple[str | None, str]:
    action, params = _params(rt, action_id)
    sub = rt.gateway.cancel_subscription(
        params["subscription_id"],
        at_period_end=bool(params.get("at_period_end", True)),
        idempotency_key=action.idempotency_key,
    )
    if sub.cancel_at_period_end and sub.current_period_end:
        when = f"at period end ({sub.current_period_end:%d %b %Y})"
    else:
        when = f"immediately (status {sub.status})"
    return sub.id, f"Subscription {sub.id} cancelled {when}."


def _comp(rt: runtime.Runtime, action_id: int) -> tuple[str | None, str]:
    action, params = _params(rt, action_id)
    coupon, sub = rt.gateway.comp_subscription(
        params["subscription_id"],
        duration_in_months=params.get("duration_in_months"),
        idempotency_key=action.idempotency_key,
    )
    return sub.id, f"Comp applied: coupon {coupon} (100% off) on subscription {sub.id}."


def _extend_trial(rt: runtime.Runtime, action_id: int) -> tuple[str | None, str]:
    action, params = _params(rt, action_id)
    until = datetime.fromtimestamp(int(params["trial_end"]), UTC)
    sub = rt.gateway.set_trial_end(
        params["subscription_id"], trial_end=until, idempotency_key=action.idempotency_key
    )
    return sub.id, f"Trial end of {sub.id} moved to {until:%d %b %Y} (+{params.get('days')} days)."


def _update_card_link(rt: runtime.Runtime, action_id: int) -> tuple[str | None, str]:
    _, params = _params(rt, action_id)
    return None, f"Update-payment-method link emailed to {params.get('email')}."


def _escalate(
    rt: runtime.Runtime, action_id: int, target: EscalationTarget, reason: str
) -> Escalation:
    """Open the escalation once per action, with its SLA."""
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        assert action is not None
        existing = session.query(Escalation).filter_by(action_id=action_id).one_or_none()
        if existing is not None:
            session.expunge(existing)
            return existing
        now = utcnow()
        escalation = Escalation(
            ticket_id=action.ticket_id,
            action_id=action_id,
            target=str(target),
            reason=reason,
            requested_by=action.requested_by,
            stripe_customer_id=action.stripe_customer_id,
            created_at=now,
            due_at=sla_due(target, now, rt.policy),
        )
        session.add(escalation)
        session.flush()
        session.expunge(escalation)
        return escalation


def _flag_fraud(rt: runtime.Runtime, action_id: int) -> tuple[str | None, str]:
    action, params = _params(rt, action_id)
    assert action.stripe_customer_id is not None
    customer = rt.gateway.flag_fraud(
        action.stripe_customer_id,
        reason=params.get("text", ""),
        flagged_by=action.requested_by,
        idempotency_key=action.idempotency_key,
    )
    escalation = _escalate(rt, action_id, EscalationTarget.SECURITY, params.get("text", ""))
    return customer.id, (
        f"Customer {customer.id} flagged as possible fraud in Stripe; escalated to "
        f"{sla_text(EscalationTarget.SECURITY, rt.policy)}, due {escalation.due_at:%d %b %H:%M} "
        f"UTC. Reason: {params.get('text')}"
    )


def _escalate_action(rt: runtime.Runtime, action_id: int) -> tuple[str | None, str]:
    _, params = _params(rt, action_id)
    target = EscalationTarget(params["target"])
    escalation = _escalate(rt, action_id, target, params.get("text", ""))
    return None, (
        f"Escalated to {sla_text(target, rt.policy)}, due {escalation.due_at:%d %b %H:%M} UTC. "
        f"Reason: {params.get('text')}"
    )


def _note(rt: runtime.Runtime, action_id: int) -> tuple[str | None, str]:
    _, params = _params(rt, action_id)
    return None, f"Note: {params.get('text')}"


_HANDLERS: dict[ActionKind, Callable[[runtime.Runtime, int], tuple[str | None, str]]] = {
    ActionKind.CANCEL_SUBSCRIPTION: _cancel,
    ActionKind.COMP_COUPON: _comp,
    ActionKind.EXTEND_TRIAL: _extend_trial,
    ActionKind.SEND_UPDATE_CARD_LINK: _update_card_link,
    ActionKind.FLAG_FRAUD: _flag_fraud,
    ActionKind.ESCALATE: _escalate_action,
    ActionKind.NOTE: _note,
}


def note_decision(action_id: int) -> str:
    """Document an approval request, approval or rejection on the ticket."""
    rt = runtime.current()
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        if action is None or action.ticket_id is None:
            return "nothing to note"
        summary = actions.describe(action)
        given = (action.params or {}).get("approvals", [])
        if action.decided_by is None:
            so_far = f" Approved so far by {', '.join(given)}." if given else ""
            text = (
                f"Approval needed: {summary}, requested by {action.requested_by}. "
                f"Waiting for {Role(action.approval_role or 'support_lead').label}.{so_far} "
                f"Policy: {action.policy_reason}"
            )
        else:
            verb = "rejected" if action.status == ActionStatus.REJECTED else "approved"
            extra = f" Note: {action.decision_note}" if action.decision_note else ""
            if verb == "approved" and len(given) > 1:
                extra = f" Approvals: {', '.join(given)}.{extra}"
            at = f"{action.decided_at:%Y-%m-%d %H:%M} UTC"
            text = (
                f"{summary} {verb} by {action.decided_by} at {at} "
                f"(requested by {action.requested_by}).{extra}"
            )
        ticket = session.get(Ticket, action.ticket_id)
        assert ticket is not None
        helpdesk_for_ticket(session, ticket.id, rt.settings).add_internal_note(
            ticket.id, text, author="billing-desk"
        )
    return "noted"
