"""Cancel a subscription: at period end (the playbook's preferred option) or now."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from core.actions import account
from core.actions.base import (
    ActionType,
    Asking,
    Effects,
    Outcome,
    Proposal,
    Requested,
    StepRefused,
    idempotency_key,
    params_of,
)
from core.billing_context import BillingContext
from core.db.models import Action
from core.domain import ActionKind
from core.policy import Decision, PolicyConfig, judge_action


class CancelSubscription(ActionType):
    """Stop a subscription billing."""

    kind = ActionKind.CANCEL_SUBSCRIPTION

    def propose(
        self,
        context: BillingContext,
        form: Mapping[str, str],
        asking: Asking,
        config: PolicyConfig,
        now: datetime,
    ) -> Proposal:
        """Cancel one of the customer's subscriptions, at period end unless asked otherwise."""
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
            f"{sub.id} of {account.who(context)}",
            self.judge(context, requested, asking, config, now),
        )

    def judge(
        self,
        context: BillingContext,
        requested: Requested,
        asking: Asking,
        config: PolicyConfig,
        now: datetime,
    ) -> Decision:
        """Identity first: cancelling changes what the customer is billed."""
        return judge_action(account.context_question(self.kind, context, asking), config)

    def describe(self, action: Action) -> str:
        """``Cancel sub_… at period end``."""
        params = params_of(action)
        when = "at period end" if params.get("at_period_end", True) else "immediately"
        return f"Cancel {params.get('subscription_id')} {when}"

    def execute(self, action: Action, fx: Effects) -> Outcome:
        """Cancel in Stripe under the action's key (a retry changes nothing twice)."""
        with fx.transaction() as session:
            question = account.worker_question(action, fx, session, months=None, days=None)
        decision = judge_action(question, fx.policy)
        if not decision.allowed:
            raise StepRefused(decision)
        params = params_of(action)
        sub = fx.gateway.cancel_subscription(
            params["subscription_id"],
            at_period_end=bool(params.get("at_period_end", True)),
            idempotency_key=action.idempotency_key,
        )
        if sub.cancel_at_period_end and sub.current_period_end:
            when = f"at period end ({sub.current_period_end:%d %b %Y})"
        else:
            when = f"immediately (status {sub.status})"
        return Outcome(sub.id, f"Subscription {sub.id} cancelled {when}.")
