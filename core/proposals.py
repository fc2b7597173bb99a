"""From an agent's form to a checked, confirmable proposal, and from a confirmed one to an Action.

A proposal says exactly what will happen (amount and target), what policy thinks of it, and
carries an idempotency key derived from the request *and the state it was made against*: two
tabs or a double click on the same refund share one key, while a second partial refund made
after the first one landed gets a new key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from core.billing_context import BillingContext, ChargeView
from core.domain import (
    ActionKind,
    Category,
    EscalationTarget,
    Money,
    RefundReason,
    Role,
    Subscription,
)
from core.errors import InvalidInput
from core.policy.config import PolicyConfig
from core.policy.escalations import sla_text
from core.policy.guardrails import RefundAsk, check_account_action, check_refund
from core.policy.proration import prorated_refund
from core.policy.refunds import Decision

MAX_TEXT = 2000
MAX_COMP_DAYS = 365
MAX_COMP_MONTHS = 12


@dataclass(frozen=True)
class Proposal:
    """An action ready for the agent's confirmation."""

    kind: ActionKind
    title: str
    target: str
    decision: Decision
    idempotency_key: str
    amount: Money | None = None
    charge_id: str | None = None
    reason: str | None = None
    details: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)

    def to_intent(self) -> dict[str, Any]:
        """What the confirmation form carries back (signed by the web layer)."""
        return {
            "kind": str(self.kind),
            "key": self.idempotency_key,
            "charge": self.charge_id,
            "amount": self.amount.amount if self.amount else None,
            "currency": self.amount.currency if self.amount else None,
            "reason": self.reason,
            "params": self.params,
        }


def _key(*parts: Any) -> str:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return f"sidebar:{parts[0]}:{digest[:40]}"


def _text(form: Mapping[str, str], name: str, label: str, required: bool = True) -> str:
    value = (form.get(name) or "").strip()
    if required and not value:
        raise InvalidInput(f"{label} is required.")
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"{label} is longer than {MAX_TEXT} characters.")
    return value


def _int(form: Mapping[str, str], name: str, label: str, low: int, high: int) -> int:
    try:
        value = int((form.get(name) or "").strip())
    except ValueError:
        raise InvalidInput(f"{label} must be a whole number.") from None
    if not low <= value <= high:
        raise InvalidInput(f"{label} must be between {low} and {high}.")
    return value


def _charge(context: BillingContext, charge_id: str | None) -> ChargeView:
    for view in context.charges:
        if view.charge.id == charge_id:
            return view
    raise InvalidInput("Choose one of this customer's charges.")


def _subscription(context: BillingContext, subscription_id: str | None) -> Subscription:
    for sub in context.subscriptions:
        if sub.id == subscription_id:
            return sub
    raise InvalidInput("Choose one of this customer's subscriptions.")


def _interval_end(start: datetime, interval: str | None) -> datetime:
    """The end of one billing period that starts at ``start``."""
    if interval == "week":
        return start + timedelta(weeks=1)
    if interval == "day":
        return start + timedelta(days=1)
    if interval == "year":
        month, year = start.month, start.year + 1
    else:
        month, year = start.month % 12 + 1, start.year + (start.month == 12)
    for day in (start.day, 30, 29, 28):  # 31 Jan + 1 month, or 29 Feb + 1 year, clamp
        try:
            return start.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _cancelled_on(form: Mapping[str, str], sub: Subscription | None) -> datetime:
    raw = (form.get("cancelled_on") or "").strip()
    if raw:
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            raise InvalidInput("The cancellation date must look like 2026-03-31.") from None
        return datetime.combine(day, time.min, UTC)
    if sub is not None and sub.canceled_at is not None:
        return sub.canceled_at
    raise InvalidInput("Enter the confirmed cancellation date.")


def _refund_decision(
    context: BillingContext,
    view: ChargeView,
    amount: Money,
    reason: RefundReason,
    role: Role,
    config: PolicyConfig,
) -> Decision:
    """Policy's view of refunding ``amount`` of one of the context's charges."""
    category = Category(context.ticket.category) if context.ticket.category else None
    return check_refund(
        RefundAsk(
            charge=view.charge,
            amount=amount,
            reason=reason,
            role=role,
            identity_verified=context.verified,
            category=category,
            disputes=view.disputes,
            in_flight=view.in_flight,
        ),
        config,
    )


def recheck(
    context: BillingContext, intent: dict[str, Any], role: Role, config: PolicyConfig
) -> Decision:
    """Policy again at confirmation, on fresh data: the charge may have been disputed or
    refunded, or the identity confirmation withdrawn, since the preview."""
    kind = ActionKind(intent["kind"])
    if kind is not ActionKind.REFUND:
        return check_account_action(kind, role, context.verified)
    view = _charge(context, intent["charge"])
    amount = Money(intent["amount"], intent["currency"])
    return _refund_decision(context, view, amount, RefundReason(intent["reason"]), role, config)


def propose_refund(
    context: BillingContext,
    form: Mapping[str, str],
    role: Role,
    config: PolicyConfig,
) -> Proposal:
    """A full, partial or prorated refund of one charge."""
    view = _charge(context, form.get("charge_id"))
    charge = view.charge
    try:
        reason = RefundReason(form.get("reason") or "")
    except ValueError:
        raise InvalidInput("Choose a refund reason.") from None
    details: list[str] = []
    params: dict[str, Any] = {"confirm_and_close": form.get("confirm_and_close") == "on"}
    if form.get("prorated"):
        sub = context.subscription
        cancelled = _cancelled_on(form, sub)
        period_end = _interval_end(charge.created, sub.interval if sub else None)
        computed = prorated_refund(
            charge.amount, view.refundable_money, charge.created, period_end, cancelled
        )
        if computed is None:
            raise InvalidInput("Nothing of this charge's period was left after the cancellation.")
        amount = computed.amount
        details.append(computed.explanation)
        params["prorated"] = {"cancelled_on": cancelled.date().isoformat()}
    else:
        raw = (form.get("amount") or "").strip()
        try:
            amount = Money.parse(raw, charge.amount.currency) if raw else view.refundable_money
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
    decision = _refund_decision(context, view, amount, reason, role, config)
    card = (
        f"{(charge.card_brand or 'card').title()} ·{charge.card_last4}" if charge.card_last4 else ""
    )
    part = "full" if amount == charge.refundable and not charge.amount_refunded else "partial"
    return Proposal(
        kind=ActionKind.REFUND,
        title=f"Refund {amount} ({part}) — reason: {reason}",
        target=f"{charge.id} · {charge.amount} on {charge.created:%d %b %Y} {card}".strip(),
        decision=decision,
        idempotency_key=_key(
            ActionKind.REFUND,
            context.ticket.id,
            charge.id,
            amount.amount,
            str(reason),
            charge.amount_refunded,
            view.in_flight,
        ),
        amount=amount,
        charge_id=charge.id,
        reason=str(reason),
        details=tuple(details),
        params=params,
    )


def propose_account_action(
    kind: ActionKind,
    context: BillingContext,
    form: Mapping[str, str],
    role: Role,
    config: PolicyConfig,
    now: datetime,
) -> Proposal:
    """Cancel, comp, trial extension, update-card link, fraud flag, escalation or note."""
    customer = context.customer
    who = f"{customer.name or customer.email} ({customer.id})" if customer else "this ticket"
    decision = check_account_action(kind, role, context.verified)
    ticket_id = context.ticket.id
    if kind is ActionKind.CANCEL_SUBSCRIPTION:
        sub = _subscription(context, form.get("subscription_id"))
        at_period_end = form.get("mode", "at_period_end") != "now"
        when = (
            f"at period end ({sub.current_period_end:%d %b %Y})"
            if at_period_end and sub.current_period_end
            else "at period end"
            if at_period_end
            else "immediately (no further access)"
        )
        return Proposal(
            kind,
            f"Cancel {sub.plan_name or 'subscription'} {when}",
            f"{sub.id} of {who}",
            decision,
            _key(kind, ticket_id, sub.id, at_period_end, sub.status, sub.cancel_at_period_end),
            params={"subscription_id": sub.id, "at_period_end": at_period_end},
        )
    if kind is ActionKind.COMP_COUPON:
        sub = _subscription(context, form.get("subscription_id"))
        months_raw = (form.get("months") or "").strip()
        months = _int(form, "months", "Months", 1, MAX_COMP_MONTHS) if months_raw else None
        span = f"for {months} month(s)" if months else "on the next invoice"
        return Proposal(
            kind,
            f"Comp: 100% off {span}",
            f"{sub.id} ({sub.plan_name or 'subscription'}) of {who}",
            decision,
            _key(kind, ticket_id, sub.id, months, sub.coupon_ids),
            params={"subscription_id": sub.id, "duration_in_months": months},
        )
    if kind is ActionKind.EXTEND_TRIAL:
        sub = _subscription(context, form.get("subscription_id"))
        days = _int(form, "days", "Days", 1, MAX_COMP_DAYS)
        # Free days start where the customer's paid (or trial) time ends, never in the past.
        base = max(d for d in (sub.trial_end, sub.current_period_end, now) if d is not None)
        until = base + timedelta(days=days)
        return Proposal(
            kind,
            f"Free time: trial end moved to {until:%d %b %Y} (+{days} days)",
            f"{sub.id} of {who}",
            decision,
            _key(kind, ticket_id, sub.id, days, sub.trial_end, sub.current_period_end),
            params={
                "subscription_id": sub.id,
                "days": days,
                "trial_end": int(until.timestamp()),
                "trial_end_date": f"{until:%d %b %Y}",
            },
        )
    if kind is ActionKind.SEND_UPDATE_CARD_LINK:
        if customer is None:
            raise InvalidInput("Choose the customer first.")
        email = customer.email or context.ticket.requester_email
        return Proposal(
            kind,
            "Email a secure link to update the payment method",
            f"{email} ({customer.id})",
            decision,
            _key(kind, ticket_id, customer.id, email, now.date()),
            details=(
                "The link opens a Stripe billing portal session when the customer clicks it.",
            ),
            params={"email": email},
        )
    if kind is ActionKind.FLAG_FRAUD:
        if customer is None:
            raise InvalidInput("Choose the customer first.")
        why = _text(form, "text", "The reason")
        return Proposal(
            kind,
            "Flag as possible fraud and escalate to Security",
            who,
            decision,
            _key(kind, ticket_id, customer.id, why),
            details=(sla_text(EscalationTarget.SECURITY, config),),
            params={"text": why},
        )
    if kind is ActionKind.ESCALATE:
        try:
            target = EscalationTarget(form.get("target") or "")
        except ValueError:
            raise InvalidInput("Choose who to escalate to.") from None
        why = _text(form, "text", "The reason")
        return Proposal(
            kind,
            f"Escalate to {target.label}",
            f"ticket #{ticket_id}",
            decision,
            _key(kind, ticket_id, str(target), why),
            details=(sla_text(target, config),),
            params={"target": str(target), "target_label": target.label, "text": why},
        )
    if kind is ActionKind.NOTE:
        body = _text(form, "text", "The note")
        return Proposal(
            kind,
            "Add an internal note",
            f"ticket #{ticket_id}",
            decision,
            _key(kind, ticket_id, body),
            params={"text": body},
        )
    raise InvalidInput(f"Unknown action {kind}.")


def propose(
    kind_name: str,
    context: BillingContext,
    form: Mapping[str, str],
    role: Role,
    config: PolicyConfig,
    now: datetime,
) -> Proposal:
    """The proposal for any sidebar action, checked against policy."""
    try:
        kind = ActionKind(kind_name)
    except ValueError:
        raise InvalidInput(f"Unknown action {kind_name!r}.") from None
    if kind is ActionKind.REFUND:
        return propose_refund(context, form, role, config)
    return propose_account_action(kind, context, form, role, config, now)
