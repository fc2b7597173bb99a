"""Refunds: full, partial, or prorated after a confirmed cancellation.

Every path judges a refund with ``core.policy.judge_refund``; this module gathers the question's
facts the same way for the sidebar (from the ticket's context) and for the worker just before
Stripe is called (from Stripe and our records again).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy.orm import Session

from core.actions.base import (
    ActionType,
    Ask,
    Effects,
    Outcome,
    Proposal,
    Requested,
    StepRefused,
    approvals_of,
    idempotency_key,
    params_of,
    stripe_key,
)
from core.billing_context import BillingContext, ChargeView
from core.customers import identity_now, open_claims
from core.db import queries
from core.db.models import Action, Ticket
from core.domain import (
    RESOLUTION_REFUND_ISSUED,
    ActionKind,
    Charge,
    MatchKind,
    Money,
    RefundReason,
    Role,
    Subscription,
)
from core.errors import InvalidInput
from core.plans import StepDraft
from core.policy import (
    Asker,
    Decision,
    RefundQuestion,
    judge_refund,
    period_end_after,
    prorated_refund,
)


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


def _reason(value: str | None) -> RefundReason:
    try:
        return RefundReason(value or "")
    except ValueError:
        raise InvalidInput("Choose a refund reason.") from None


def context_question(ask: Ask, requested: Requested) -> RefundQuestion:
    """The refund question for one of the context's charges, as the sidebar asks it."""
    context, asking = ask.context, ask.asking
    view = context.charge_view(requested.charge_id)
    if requested.amount is None:
        raise InvalidInput("Enter the amount to refund.")
    identity = context.identity
    return RefundQuestion(
        asker=asking.asker,
        requester_role=asking.requester_role,
        charge=view.charge,
        amount=requested.amount,
        reason=_reason(requested.reason),
        now=ask.now,
        disputes=tuple(view.disputes),
        identity_confirmed=bool(identity and identity.confirmed),
        identity_conflict=identity.conflict if identity else None,
        claims=context.claims.categories,
        chargeback_claimed=context.claims.chargeback_claimed,
        in_flight_on_charge=view.in_flight,
        customer_recent=context.refunded_recently(requested.amount.currency),
        after_cancellation=bool(requested.params.get("prorated")),
        approvals=asking.approvals,
    )


def _worker_question(
    action: Action, fx: Effects, session: Session, charge: Charge
) -> RefundQuestion:
    """The refund question again, just before Stripe: the charge, its disputes and the
    customer from Stripe now; identity, claims and totals from our records now."""
    gateway, config = fx.gateway, fx.policy
    disputes = gateway.list_disputes(charge.id) if charge.disputed else []
    customer_id = action.stripe_customer_id or charge.customer_id or ""
    ticket = session.get(Ticket, action.ticket_id) if action.ticket_id else None
    identity = identity_now(gateway, ticket, customer_id)
    # The mail agent refunds only the customer the email's sender is, and nothing said in the
    # email contradicted (see core.customers.match_sender).
    sender_matched = bool(
        identity
        and ticket
        and identity.matched_by in (MatchKind.EMAIL, MatchKind.AUTHENTICATED)
        and identity.requester_is_customer
        and not ticket.automation_blocked
    )
    claims = open_claims(session, identity.customer) if identity else None
    in_flight = queries.in_flight_by_charge(session, customer_id, excluding=action.id)
    since = fx.now() - timedelta(days=config.customer_refund_window_days)
    amount = Money(action.amount or 0, action.currency or charge.amount.currency)
    return RefundQuestion(
        asker=Asker.WORKER,
        requester_role=Role(action.requester_role) if action.requester_role else None,
        charge=charge,
        amount=amount,
        reason=_reason(action.reason),
        now=fx.now(),
        disputes=tuple(disputes),
        identity_confirmed=bool(identity and identity.confirmed),
        identity_conflict=identity.conflict if identity else None,
        sender_matched=sender_matched,
        claims=claims.categories if claims else frozenset(),
        chargeback_claimed=bool(claims and claims.chargeback_claimed),
        in_flight_on_charge=in_flight.get(charge.id, 0),
        customer_recent=queries.refunded_since(
            session, customer_id, amount.currency, since, excluding=action.id
        ),
        after_cancellation=bool(params_of(action).get("prorated")),
        approvals=approvals_of(action),
    )


def _card(charge: Charge) -> str:
    if not charge.card_last4:
        return ""
    return f"{(charge.card_brand or 'card').title()} ·{charge.card_last4}"


class RefundAction(ActionType):
    """Give money back on one charge."""

    kind = ActionKind.REFUND

    def propose(self, ask: Ask, form: Mapping[str, str]) -> Proposal:
        """A full, partial or prorated refund of one charge."""
        context = ask.context
        view = context.charge_view(form.get("charge_id"))
        charge = view.charge
        reason = _reason(form.get("reason"))
        details: list[str] = []
        params: dict[str, Any] = {"confirm_and_close": form.get("confirm_and_close") == "on"}
        if form.get("prorated"):
            amount, explanation, cancelled = self._prorated(context, view, form)
            details.append(explanation)
            params["prorated"] = {
                "cancelled_on": cancelled.date().isoformat(),
                "explanation": explanation,
            }
        else:
            raw = (form.get("amount") or "").strip()
            try:
                amount = Money.parse(raw, charge.amount.currency) if raw else view.refundable_money
            except ValueError as exc:
                raise InvalidInput(str(exc)) from None
        requested = Requested(
            kind=self.kind,
            key=idempotency_key(
                self.kind,
                context.ticket.id,
                charge.id,
                amount.amount,
                str(reason),
                charge.amount_refunded,
                view.in_flight,
            ),
            charge_id=charge.id,
            amount=amount,
            reason=str(reason),
            params=params,
        )
        part = "full" if amount == charge.refundable and not charge.amount_refunded else "partial"
        target = f"{charge.id} · {charge.amount} on {charge.created:%d %b %Y} {_card(charge)}"
        return Proposal(
            requested=requested,
            title=f"Refund {amount} ({part}) — reason: {reason}",
            target=target.strip(),
            decision=self.judge(ask, requested),
            details=tuple(details),
            follow_ups=self._follow_up_words(requested, context),
        )

    def _prorated(
        self, context: BillingContext, view: ChargeView, form: Mapping[str, str]
    ) -> tuple[Money, str, datetime]:
        charge, sub = view.charge, context.subscription
        cancelled = _cancelled_on(form, sub)
        period_end = period_end_after(charge.created, sub.interval if sub else None)
        computed = prorated_refund(
            charge.amount, view.refundable_money, charge.created, period_end, cancelled
        )
        if computed is None:
            raise InvalidInput("Nothing of this charge's period was left after the cancellation.")
        return computed.amount, computed.explanation, cancelled

    def judge(self, ask: Ask, requested: Requested) -> Decision:
        """Policy's answer for refunding one of the context's charges."""
        return judge_refund(context_question(ask, requested), ask.config)

    def follow_ups(self, requested: Requested, context: BillingContext) -> tuple[StepDraft, ...]:
        """Confirm by email to the customer's own address, then close, when the agent asked."""
        to = context.identity.email if context.identity else None
        if not requested.params.get("confirm_and_close") or not to:
            return ()
        customer = context.customer.id if context.customer else None
        return (
            StepDraft(
                ActionKind.CONFIRM_REFUND,
                f"{requested.key}:confirm",
                customer_id=customer,
                params={"to": to},
            ),
            StepDraft(
                ActionKind.CLOSE,
                f"{requested.key}:close",
                customer_id=customer,
                params={"resolution": RESOLUTION_REFUND_ISSUED},
            ),
        )

    def _follow_up_words(self, requested: Requested, context: BillingContext) -> tuple[str, ...]:
        if not requested.params.get("confirm_and_close"):
            return ()
        to = context.identity.email if context.identity else None
        if not to:
            return (
                "The Stripe customer has no email address: no confirmation is sent (it never "
                "goes to an address only the ticket gives), and the ticket stays open.",
            )
        return (f"Then: email the confirmation with the refund ID to {to}, and close the ticket.",)

    def describe(self, action: Action) -> str:
        """``Refund of $49.00 on ch_… (duplicate)``."""
        what = "Prorated refund" if params_of(action).get("prorated") else "Refund"
        amount = Money(action.amount or 0, action.currency or "usd")
        return f"{what} of {amount} on {action.stripe_charge_id} ({action.reason})"

    def execute(self, action: Action, fx: Effects) -> Outcome:
        """Refund once: a refund Stripe already has under our key is the outcome (Stripe forgets
        keys after a day); otherwise policy is asked again, then Stripe."""
        charge_id, key = action.stripe_charge_id or "", action.idempotency_key
        refund = fx.gateway.find_refund(charge_id, key)
        if refund is None:
            charge = fx.gateway.get_charge(charge_id)
            with fx.transaction() as session:
                decision = judge_refund(_worker_question(action, fx, session, charge), fx.policy)
            if not decision.allowed:
                raise StepRefused(decision)
            amount = Money(action.amount or 0, action.currency or charge.amount.currency)
            refund = fx.gateway.refund(
                charge_id,
                amount,
                _reason(action.reason),
                idempotency_key=key,
                request_key=stripe_key(action),
                metadata={"action_id": str(action.id), "ticket_id": str(action.ticket_id or "")},
            )
        return Outcome(
            refund.id,
            f"Refund {refund.id} issued: {refund.amount} on charge {charge_id} "
            f"(reason: {action.reason}).",
            {
                "refund": refund.id,
                "charge": refund.charge_id,
                "amount": refund.amount.amount,
                "currency": refund.amount.currency,
            },
        )
