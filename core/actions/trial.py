"""Free time: move a subscription's trial end. Policy limits the days and how many grants a
customer gets in a window (comps and free time together); above that a Support Lead approves."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from core.actions.account import AccountAction, who
from core.actions.base import (
    Ask,
    Effects,
    Outcome,
    Proposal,
    Requested,
    idempotency_key,
    int_field,
    params_of,
    stripe_key,
)
from core.db.models import Action
from core.domain import ActionKind

# What the form accepts at all; policy decides what an agent may give alone.
MAX_COMP_DAYS = 365


class ExtendTrial(AccountAction):
    """Give free days by moving the subscription's trial end."""

    kind = ActionKind.EXTEND_TRIAL

    def terms(self, params: dict[str, Any]) -> dict[str, Any]:
        """Free time's size is its days."""
        return {"days": params.get("days")}

    def propose(self, ask: Ask, form: Mapping[str, str]) -> Proposal:
        """Move the trial end of one subscription by N days."""
        context = ask.context
        sub = context.subscription_by_id(form.get("subscription_id"))
        days = int_field(form, "days", "Days", 1, MAX_COMP_DAYS)
        # Free days start where the customer's paid (or trial) time ends, never in the past.
        base = max(d for d in (sub.trial_end, sub.current_period_end, ask.now) if d is not None)
        until = base + timedelta(days=days)
        requested = Requested(
            self.kind,
            idempotency_key(
                self.kind, context.ticket.id, sub.id, days, sub.trial_end, sub.current_period_end
            ),
            params={
                "subscription_id": sub.id,
                "days": days,
                "trial_end": int(until.timestamp()),
                "trial_end_date": f"{until:%d %b %Y}",
            },
        )
        return Proposal(
            requested,
            f"Free time: trial end moved to {until:%d %b %Y} (+{days} days)",
            f"{sub.id} of {who(context)}",
            self.judge(ask, requested),
        )

    def describe(self, action: Action) -> str:
        """``Move the trial end of sub_… to 01 Jan 2027 (+30 days)``."""
        params = params_of(action)
        sub, until = params.get("subscription_id"), params.get("trial_end_date")
        return f"Move the trial end of {sub} to {until} (+{params.get('days')} days)"

    def execute(self, action: Action, fx: Effects) -> Outcome:
        """Set the trial end in Stripe under the action's key, without prorating."""
        self.allowed_now(action, fx)
        params = params_of(action)
        until = datetime.fromtimestamp(int(params["trial_end"]), UTC)
        sub = fx.gateway.set_trial_end(
            params["subscription_id"], trial_end=until, idempotency_key=stripe_key(action)
        )
        return Outcome(
            sub.id, f"Trial end of {sub.id} moved to {until:%d %b %Y} (+{params.get('days')} days)."
        )
