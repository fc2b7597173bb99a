"""Close the ticket with the plan's resolution (Servinix: 'Close the support ticket with status
"Resolved — Refund issued."'). A plan brings it as its last step."""

from __future__ import annotations

from sqlalchemy import select

from core.actions.base import ActionType, Effects, Outcome, params_of
from core.db.models import Action, Plan, TicketMessage
from core.domain import ActionKind, MessageKind


class CloseTicket(ActionType):
    """Close the ticket with the plan's resolution, e.g. "Resolved — Refund issued"."""

    kind = ActionKind.CLOSE

    def describe(self, action: Action) -> str:
        """``Close the ticket: Resolved — Refund issued``."""
        return f"Close the ticket: {params_of(action).get('resolution')}"

    def execute(self, action: Action, fx: Effects) -> Outcome:
        """Close it (closing twice changes nothing), unless the customer wrote again since
        the plan began: then an agent reads that first."""
        assert action.ticket_id is not None
        with fx.transaction() as session:
            plan = session.get(Plan, action.plan_id) if action.plan_id else None
            if plan is not None:
                wrote_again = session.scalar(
                    select(TicketMessage.id)
                    .where(
                        TicketMessage.ticket_id == action.ticket_id,
                        TicketMessage.kind == MessageKind.INBOUND,
                        TicketMessage.created_at > plan.created_at,
                    )
                    .limit(1)
                )
                if wrote_again is not None:
                    return Outcome(
                        None,
                        "Not closed: the customer wrote again after this plan began; an agent "
                        "reads that first.",
                    )
            left_open = fx.helpdesk(session, action.ticket_id).close(
                action.ticket_id,
                resolution=str(params_of(action)["resolution"]),
                actor=action.requested_by,
            )
        return Outcome(None, left_open)
