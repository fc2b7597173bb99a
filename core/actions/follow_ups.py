"""The steps a plan takes after its main action: confirm a refund to the customer by email, and
close the ticket with its resolution. Plans bring them; agents never propose them alone."""

from __future__ import annotations

from sqlalchemy import select

from core.actions.base import ActionType, Effects, Outcome, params_of
from core.db.models import Action, Plan, TicketMessage
from core.domain import ActionKind, ActionStatus, MessageKind, Money
from core.errors import BillingDeskError

REFUND_TEMPLATE = "refund_confirmation"


class ConfirmRefund(ActionType):
    """Email the customer the refund amount, its Stripe ID and the timeline."""

    kind = ActionKind.CONFIRM_REFUND

    def describe(self, action: Action) -> str:
        """``Email the refund confirmation to …``."""
        return f"Email the refund confirmation to {params_of(action).get('to')}"

    def execute(self, action: Action, fx: Effects) -> Outcome:
        """Send the confirmation of the plan's issued refund, once."""
        with fx.transaction() as session:
            refund = session.scalar(
                select(Action).where(
                    Action.plan_id == action.plan_id,
                    Action.kind == ActionKind.REFUND,
                    Action.status == ActionStatus.SUCCEEDED,
                )
            )
            if refund is None or refund.amount is None or refund.currency is None:
                raise BillingDeskError("there is no issued refund in this plan to confirm")
            amount, refund_id = Money(refund.amount, refund.currency), refund.stripe_object_id
        sent = fx.send_customer_email(
            action,
            template=REFUND_TEMPLATE,
            subject="Your refund has been issued",
            context={"amount": str(amount), "refund_id": refund_id},
            to=str(params_of(action)["to"]),
        )
        return Outcome(None, None, {"email": sent})


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
            fx.helpdesk(session, action.ticket_id).close(
                action.ticket_id,
                resolution=str(params_of(action)["resolution"]),
                actor=action.requested_by,
            )
        return Outcome(None, None)
