"""Flag a customer as possible fraud in Stripe, which escalates to Security (Servinix: "Treat
as potential fraud. Immediately flag the account and escalate to the Security team.")."""

from __future__ import annotations

from collections.abc import Mapping

from core.actions.account import AccountAction, who
from core.actions.base import (
    Ask,
    Effects,
    Outcome,
    Proposal,
    Requested,
    idempotency_key,
    params_of,
    stripe_key,
    text_field,
)
from core.actions.escalate import open_escalation
from core.db.models import Action
from core.domain import ActionKind, EscalationTarget
from core.errors import InvalidInput
from core.policy import sla_text


class FlagFraud(AccountAction):
    """Mark the customer as possible fraud in Stripe, and escalate to Security."""

    kind = ActionKind.FLAG_FRAUD

    def propose(self, ask: Ask, form: Mapping[str, str]) -> Proposal:
        """Flag the context's customer, with the reason."""
        context = ask.context
        if context.customer is None:
            raise InvalidInput("Choose the customer first.")
        why = text_field(form, "text", "The reason")
        requested = Requested(
            self.kind,
            idempotency_key(self.kind, context.ticket.id, context.customer.id, why),
            params={"text": why},
        )
        return Proposal(
            requested,
            "Flag as possible fraud and escalate to Security",
            who(context),
            self.judge(ask, requested),
            details=(sla_text(EscalationTarget.SECURITY, ask.config),),
        )

    def describe(self, action: Action) -> str:
        """``Flag cus_… as possible fraud and escalate to Security``."""
        return f"Flag {action.stripe_customer_id} as possible fraud and escalate to Security"

    def execute(self, action: Action, fx: Effects) -> Outcome:
        """Write the flag into the customer's Stripe metadata, then open the escalation."""
        params = params_of(action)
        assert action.stripe_customer_id is not None
        customer = fx.gateway.flag_fraud(
            action.stripe_customer_id,
            reason=params.get("text", ""),
            flagged_by=action.requested_by,
            idempotency_key=stripe_key(action),
        )
        target = EscalationTarget.SECURITY
        escalation, notice = open_escalation(action, fx, target, params.get("text", ""))
        return Outcome(
            customer.id,
            f"Customer {customer.id} flagged as possible fraud in Stripe; escalated to "
            f"{sla_text(target, fx.policy)}, due {escalation.due_at:%d %b %H:%M} UTC; the "
            f"team's notice: {notice}. Reason: {params.get('text')}",
        )
