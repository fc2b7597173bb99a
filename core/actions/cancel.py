"""Cancel a subscription: at period end (the playbook's preferred option) or now."""

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
)
from core.db.models import Action
from core.domain import ActionKind


class CancelSubscription(AccountAction):
    """Stop a subscription billing; identity first, since it changes what the customer pays."""

    kind = ActionKind.CANCEL_SUBSCRIPTION

    def propose(self, ask: Ask, form: Mapping[str, str]) -> Proposal:
        """Cancel one of the customer's subscriptions, at period end unless asked otherwise."""
        context = ask.context
        sub = context.subscription_by_id(form.get("subscription_id"))
        at_period_end = form.get("mode", "at_period_end") != "now"
        if at_period_end and sub.current_period_end:
            when = f"at period end ({sub.current_period_end:%d %b %Y})"
        elif at_period_end:
            when = "at period end"
        else:
            when = "immediately (no further access)"
        requested = Requested(
            self.kind,
            idempotency_key(
                self.kind,
                context.ticket.id,
                sub.id,
                at_period_end,
                sub.status,
                sub.cancel_at_period_end,
            ),
            params={"subscription_id": sub.id, "at_period_end": at_period_end},
        )
        return Proposal(
            requested,
            f"Cancel {sub.plan_name or 'subscription'} {when}",
            f"{sub.id} of {who(context)}",
            self.judge(ask, requested),
        )

    def describe(self, action: Action) -> str:
        """``Cancel sub_… at period end``."""
        params = params_of(action)
        when = "at period end" if params.get("at_period_end", True) else "immediately"
        return f"Cancel {params.get('subscription_id')} {when}"

    def execute(self, action: Action, fx: Effects) -> Outcome:
        """Cancel in Stripe under the action's key (a retry changes nothing twice)."""
        self.allowed_now(action, fx)
        params = params_of(action)
        sub = fx.gateway.cancel_subscription(
            params["subscription_id"],
            at_period_end=bool(params.get("at_period_end", True)),
            idempotency_key=stripe_key(action),
        )
        if sub.cancel_at_period_end and sub.current_period_end:
            when = f"at period end ({sub.current_period_end:%d %b %Y})"
        else:
            when = f"immediately (status {sub.status})"
        return Outcome(sub.id, f"Subscription {sub.id} cancelled {when}.")
