"""close_after_refund: close a ticket whose refund is issued and confirmed, as the playbook says."""

from __future__ import annotations

from core.db import session_scope
from core.db.models import Action
from core.domain import RESOLUTION_REFUND_ISSUED, ActionStatus
from core.helpdesks import helpdesk_for_ticket
from jobs import runtime


def close_after_refund(action_id: int) -> str:
    """Close the action's ticket "Resolved — Refund issued"; closing twice changes nothing."""
    rt = runtime.current()
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        if action is None or action.status != ActionStatus.SUCCEEDED or action.ticket_id is None:
            return "nothing to close"
        helpdesk_for_ticket(session, action.ticket_id, rt.settings).close(
            action.ticket_id, resolution=RESOLUTION_REFUND_ISSUED, actor=action.requested_by
        )
    return "closed"
