"""Everything an agent needs to see about a ticket's customer, gathered in one place, and the
facts the ticket's actions are judged on.

The sidebar renders this; the benchmark measures it. Stripe is asked as little as possible:
the customer (or a lookup), their subscriptions, their charges, one search per card seen,
and disputes only for charges Stripe marks disputed. Our own records add what policy counts:
what the customer's open tickets claim, refunds in flight, recent refunds and free time.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core.customers import (
    Claims,
    Identity,
    IdentityCheck,
    find_candidates,
    identity_for,
    open_claims,
)
from core.db import queries
from core.db.models import Action, AuditEvent, Plan, Ticket
from core.domain import (
    ActionKind,
    ActionStatus,
    Charge,
    Customer,
    Dispute,
    MatchKind,
    Money,
    Subscription,
)
from core.errors import InvalidInput
from core.policy.config import PolicyConfig
from core.policy.declines import DeclineGuidance, guidance_for
from core.policy.duplicates import duplicate_pairs
from core.stripe_gateway import StripeGateway

# Cards looked up for "the same card on another customer"; a customer rarely has more.
MAX_FINGERPRINT_LOOKUPS = 3
HISTORY_LIMIT = 25
CHARGES_SHOWN = 100  # Stripe's largest page; older charges are in the dashboard
# Stripe answers in 100–300 ms; independent lookups run side by side, not one after another.
STRIPE_CONCURRENCY = 4
FREE_TIME = (ActionKind.COMP_COUPON, ActionKind.EXTEND_TRIAL)


@dataclass
class ChargeView:
    """A charge with what support work needs to know about it."""

    charge: Charge
    duplicate_of: str | None = None
    shared_with: list[str] = field(default_factory=list)  # other customers on the same card
    disputes: list[Dispute] = field(default_factory=list)
    decline: DeclineGuidance | None = None
    in_flight: int = 0

    @property
    def open_dispute(self) -> Dispute | None:
        """The dispute still being decided, if any."""
        return next((d for d in self.disputes if d.is_open), None)

    @property
    def refundable_now(self) -> int:
        """Minor units an agent could still ask to refund."""
        return max(self.charge.refundable.amount - self.in_flight, 0)

    @property
    def refundable_money(self) -> Money:
        """``refundable_now`` as Money."""
        return Money(self.refundable_now, self.charge.amount.currency)

    @property
    def hold_expires(self) -> datetime:
        """When an uncaptured authorisation drops off (Stripe cancels it after 7 days)."""
        return self.charge.created + timedelta(days=7)


@dataclass
class BillingContext:
    """A ticket's customer as the sidebar shows it, and the facts its actions are judged on."""

    ticket: Ticket
    candidates: list[Customer]
    match: MatchKind = MatchKind.NONE
    identity: Identity | None = None
    subscriptions: list[Subscription] = field(default_factory=list)
    charges: list[ChargeView] = field(default_factory=list)
    history: list[AuditEvent] = field(default_factory=list)
    ticket_actions: list[Action] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)
    claims: Claims = field(default_factory=Claims.none)
    # The customer's refunds and free-time grants in the policy's windows (from our records).
    recent_refunds: list[Action] = field(default_factory=list)
    free_time_grants: int = 0

    @property
    def customer(self) -> Customer | None:
        """The customer the ticket is about, once there is exactly one."""
        return self.identity.customer if self.identity else None

    @property
    def verified(self) -> bool:
        """The customer's identity is confirmed: money actions are open."""
        return bool(self.identity and self.identity.confirmed)

    @property
    def checks(self) -> tuple[IdentityCheck, ...]:
        """The playbook's checklist for the customer."""
        return self.identity.checks if self.identity else ()

    @property
    def charges_truncated(self) -> bool:
        """True when the customer may have older charges than the ones listed."""
        return len(self.charges) >= CHARGES_SHOWN

    @property
    def subscription(self) -> Subscription | None:
        """The subscription that matters most: a live one, else the latest."""
        live = [s for s in self.subscriptions if s.is_live]
        ranked = live or self.subscriptions
        return ranked[0] if ranked else None

    @property
    def failed(self) -> list[ChargeView]:
        """Failed payments, newest first."""
        return [v for v in self.charges if v.charge.status == "failed"]

    @property
    def disputes(self) -> list[Dispute]:
        """Every dispute on the customer's charges."""
        return [d for v in self.charges for d in v.disputes]

    @property
    def pending_approvals(self) -> list[Action]:
        """This ticket's actions waiting for someone to approve them."""
        return [a for a in self.ticket_actions if a.status == ActionStatus.PENDING_APPROVAL]

    def charge_view(self, charge_id: str | None) -> ChargeView:
        """One of the customer's listed charges; InvalidInput for any other."""
        for view in self.charges:
            if view.charge.id == charge_id:
                return view
        raise InvalidInput("Choose one of this customer's charges.")

    def subscription_by_id(self, subscription_id: str | None) -> Subscription:
        """One of the customer's subscriptions; InvalidInput for any other."""
        for sub in self.subscriptions:
            if sub.id == subscription_id:
                return sub
        raise InvalidInput("Choose one of this customer's subscriptions.")

    def refunded_recently(self, currency: str) -> int:
        """Minor units refunded (or requested) for the customer within the policy's window."""
        return sum(
            a.amount or 0
            for a in self.recent_refunds
            if (a.currency or "").lower() == currency.lower()
        )


def mark_duplicates(views: list[ChargeView], window: timedelta) -> None:
    """Mark each charge that repeats an earlier one, by policy's one duplicate rule."""
    by_id = {v.charge.id: v for v in views}
    for pair in duplicate_pairs([v.charge for v in views], window):
        by_id[pair.duplicate.id].duplicate_of = pair.original.id


def _shared_cards(
    gateway: StripeGateway, pool: ThreadPoolExecutor, customer: Customer, views: list[ChargeView]
) -> None:
    fingerprints = list(
        dict.fromkeys(v.charge.card_fingerprint for v in views if v.charge.card_fingerprint)
    )[:MAX_FINGERPRINT_LOOKUPS]
    others = pool.map(lambda fp: gateway.other_customers_on_card(fp, customer.id), fingerprints)
    found = dict(zip(fingerprints, others, strict=True))
    for view in views:
        if view.charge.card_fingerprint in found:
            view.shared_with = sorted(found[view.charge.card_fingerprint])


def load_context(
    gateway: StripeGateway,
    session: Session,
    ticket: Ticket,
    config: PolicyConfig,
    now: datetime,
) -> BillingContext:
    """Gather the customer, subscription, charges, disputes and history for a ticket."""
    candidates, match = find_candidates(gateway, ticket)
    context = BillingContext(ticket=ticket, candidates=candidates, match=match)
    context.ticket_actions = list(
        session.scalars(select(Action).where(Action.ticket_id == ticket.id).order_by(Action.id))
    )
    context.plans = list(
        session.scalars(select(Plan).where(Plan.ticket_id == ticket.id).order_by(Plan.id))
    )
    if len(candidates) != 1:
        return context
    customer = candidates[0]
    context.identity = identity_for(ticket, customer, match)
    with ThreadPoolExecutor(STRIPE_CONCURRENCY) as pool:
        subscriptions = pool.submit(gateway.list_subscriptions, customer.id)
        charges = gateway.list_charges(customer.id, limit=CHARGES_SHOWN)
        views = [ChargeView(c) for c in charges]
        disputed = [v for v in views if v.charge.disputed]
        disputes = pool.map(gateway.list_disputes, [v.charge.id for v in disputed])
        _shared_cards(gateway, pool, customer, views)
        for view, found in zip(disputed, disputes, strict=True):
            view.disputes = found
        context.subscriptions = subscriptions.result()
    mark_duplicates(views, timedelta(hours=config.duplicate_window_hours))
    in_flight = queries.in_flight_by_charge(session, customer.id)
    for view in views:
        view.in_flight = in_flight.get(view.charge.id, 0)
        if view.charge.status == "failed":
            view.decline = guidance_for(
                view.charge.decline_code, view.charge.failure_code, view.charge.advice_code
            )
    context.charges = views
    context.claims = open_claims(session, customer)
    context.recent_refunds = queries.actions_of(
        session,
        customer.id,
        [ActionKind.REFUND],
        since=now - timedelta(days=config.customer_refund_window_days),
    )
    context.free_time_grants = len(
        queries.actions_of(
            session,
            customer.id,
            FREE_TIME,
            since=now - timedelta(days=config.free_time_window_days),
        )
    )
    context.history = list(
        session.scalars(
            select(AuditEvent)
            .where(
                or_(
                    AuditEvent.stripe_customer_id == customer.id,
                    AuditEvent.ticket_id == ticket.id,
                )
            )
            .order_by(AuditEvent.id.desc())
            .limit(HISTORY_LIMIT)
        )
    )
    return context
