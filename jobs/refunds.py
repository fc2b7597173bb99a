"""issue_refund: carry out a requested refund in Stripe, exactly once, and record it."""

from __future__ import annotations

import logging

from core import actions
from core.db import session_scope
from core.db.models import Action
from core.domain import ActionStatus, RefundReason
from core.errors import BillingDeskError
from core.helpdesks import helpdesk_for_ticket
from core.policy import Verdict
from core.policy.guardrails import recheck_refund
from jobs import queues, runtime
from jobs.emails import send_refund_confirmation

log = logging.getLogger(__name__)


def issue_refund(action_id: int) -> str:
    """Issue the refund of an action; safe to run any number of times."""
    rt = runtime.current()
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        if action is None:
            log.error("refund action %s does not exist", action_id)
            return "missing"
        status, key = action.status, action.idempotency_key
        charge_id, amount = action.stripe_charge_id, actions.action_amount(action)
        reason, ticket_id = RefundReason(action.reason), action.ticket_id
        # Automation always confirms and closes; an agent chooses in the sidebar.
        confirm_and_close = (action.params or {}).get("confirm_and_close", True)
    if status in (ActionStatus.FAILED, ActionStatus.REJECTED, ActionStatus.PENDING_APPROVAL):
        return str(status)
    if status == ActionStatus.QUEUED:
        assert charge_id is not None
        try:
            refund = rt.gateway.find_refund(charge_id, key)
            if refund is None:
                # The charge is checked again now: it may have been disputed or refunded
                # elsewhere since the action was requested (and approved, where needed).
                charge = rt.gateway.get_charge(charge_id)
                disputes = rt.gateway.list_disputes(charge_id) if charge.disputed else []
                decision = recheck_refund(charge, amount, disputes, rt.policy)
                if decision.verdict is Verdict.DENY:
                    _fail(rt, action_id, f"Refund not issued: {decision.reason}")
                    return "denied"
                refund = rt.gateway.refund(
                    charge_id,
                    amount,
                    reason,
                    idempotency_key=key,
                    metadata={"action_id": str(action_id), "ticket_id": str(ticket_id or "")},
                )
        except BillingDeskError as exc:
            if exc.retryable:
                raise
            _fail(rt, action_id, f"Stripe refused the refund: {exc}")
            return "failed"
        with session_scope(rt.session_factory) as session:
            action = session.get(Action, action_id)
            assert action is not None
            actions.record_refund_succeeded(session, action, refund)
            if ticket_id is not None:
                approval = f" Approved by {action.decided_by}." if action.decided_by else ""
                helpdesk_for_ticket(session, ticket_id, rt.settings).add_internal_note(
                    ticket_id,
                    f"Refund {refund.id} issued: {refund.amount} on charge {charge_id} "
                    f"(reason: {reason}). Requested by {action.requested_by}.{approval}",
                    author="billing-desk",
                )
    if not confirm_and_close:
        return "succeeded"
    # Reached also when a previous run recorded success but died before enqueueing.
    queues.enqueue_once(
        rt.queue(queues.ACTIONS),
        send_refund_confirmation,
        action_id,
        job_id=f"refund-confirmation-{action_id}",
    )
    return "succeeded"


def _fail(rt: runtime.Runtime, action_id: int, reason: str) -> None:
    """Mark the action failed with a reason and tell the ticket's agents."""
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        assert action is not None
        actions.record_action_failed(session, action, reason)
        if action.ticket_id is not None:
            helpdesk_for_ticket(session, action.ticket_id, rt.settings).add_internal_note(
                action.ticket_id, reason, author="billing-desk"
            )
