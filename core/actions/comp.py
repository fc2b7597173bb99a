"""Comps: a 100%-off coupon on a subscription. Policy limits their size and how many a
customer gets in a window (comps and free time together); above that a Support Lead approves."""

from __future__ import annotations

from collections.abc import Mapping
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
MAX_COMP_MONTHS = 12


class CompCoupon(AccountAction):
    """Make a subscription free once, or for some months."""

    kind = ActionKind.COMP_COUPON

    def terms(self, params: dict[str, Any]) -> dict[str, Any]:
        """A comp's size is its months (none: the next invoice only)."""
        return {"months": params.get("duration_in_months")}

    def propose(self, ask: Ask, form: Mapping[str, str]) -> Proposal:
        """A 100%-off coupon on one subscription."""
        context = ask.context
        sub = context.subscription_by_id(form.get("subscription_id"))
        months_raw = (form.get("months") or "").strip()
        months = int_field(form, "months", "Months", 1, MAX_COMP_MONTHS) if months_raw else None
        span = f"for {months} month(s)" if months else "on the next invoice"
        # Policy counts every comp of the customer however it is keyed: a repeat with a new
        # key is judged as the customer's second comp, never as a first.
        requested = Requested(
            self.kind,
            idempotency_key(self.kind, context.ticket.id, sub.id, months, sub.coupon_ids),
            params={"subscription_id": sub.id, "duration_in_months": months},
        )
        return Proposal(
            requested,
            f"Comp: 100% off {span}",
            f"{sub.id} ({sub.plan_name or 'subscription'}) of {who(context)}",
            self.judge(ask, requested),
        )

    def describe(self, action: Action) -> str:
        """``Comp sub_…: 100% off for 1 month(s)``."""
        params = params_of(action)
        months = params.get("duration_in_months")
        span = f"for {months} month(s)" if months else "for the next invoice"
        return f"Comp {params.get('subscription_id')}: 100% off {span}"

    def execute(self, action: Action, fx: Effects) -> Outcome:
        """Apply the coupon (its ID derives from the action's key, so a retry reuses it)."""
        self.allowed_now(action, fx)
        params = params_of(action)
        coupon, sub = fx.gateway.comp_subscription(
            params["subscription_id"],
            duration_in_months=params.get("duration_in_months"),
            idempotency_key=action.idempotency_key,
            request_key=stripe_key(action),
        )
        return Outcome(
            sub.id, f"Comp applied: coupon {coupon} (100% off) on subscription {sub.id}."
        )
