"""Confirm an issued refund to the customer by email: the amount, the Stripe refund ID and the
timeline (Servinix: "Send the customer a confirmation email"). A plan brings it after its
refund; agents never propose it alone."""

from __future__ import annotations

from sqlalchemy import select

from core.actions.base import ActionType, Effects, Outcome, params_of
from core.db.models import Action
from core.domain import ActionKind, ActionStatus, Money
from core.errors import BillingDeskError

REFUND_TEMPLATE = "refund_confirmation"
PRORATED_TEMPLATE = "prorated_refund_confirmation"


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
            prorated = params_of(refund).get("prorated") or {}
        context = {"amount": str(amount), "refund_id": refund_id}
        template = REFUND_TEMPLATE
        if prorated.get("explanation"):
            # Servinix: a prorated refund for the time after the cancellation, worked out.
            template = PRORATED_TEMPLATE
            context["explanation"] = prorated["explanation"]
        sent = fx.send_customer_email(
            action,
            template=template,
            subject="Your refund has been issued",
            context=context,
            to=str(params_of(action)["to"]),
        )
        return Outcome(None, None, {"email": sent})
