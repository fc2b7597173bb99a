"""Everything an agent needs to see about a ticket's customer, gathered in one place.

The sidebar renders this; the benchmark measures it. Stripe is asked as little as possible:
the customer (or a lookup), their subscriptions, their charges, one search per card seen,
and disputes only for charges Stripe marks disputed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core import actions
from core.db.models import Action, AuditEvent, Ticket
from core.domain import ActionStatus, Charge, Customer, Dispute, Money, Subscription
from core.errors import NotFound
from core.policy.config import PolicyConfig
from core.policy.declines import DeclineGuidance, guidance_for
from core.stripe_gateway import StripeGateway

# Cards looked up for "the same card on another customer"; a customer rarely has more.
MAX_FINGERPRINT_LOOKUPS = 3
HISTORY_LIMIT = 25
CHARGES_SHOWN = 100  # Stripe's largest page; older charges are in the dashboard
# Stripe answers in 100–300 ms; independent lookups run side by side, not one after another.
STRIPE_CONCURRENCY = 4


@dataclass(frozen=True)
class IdentityCheck:
    """A line of the playbook's identity checklist: True matches, False conflicts, None unknown."""

    label: str
    ok: bool | None
    detail: str


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
    """A ticket's customer as the sidebar shows it."""

    ticket: Ticket
    candidates: list[Customer]
    customer: Customer | None = None
    match: str = "none"  # explicit, tenant, email, agent or none
    verified: bool = False
    checks: list[IdentityCheck] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)
    charges: list[ChargeView] = field(default_factory=list)
    history: list[AuditEvent] = field(default_factory=list)
    ticket_actions: list[Action] = field(default_factory=list)

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


def identity_checks(ticket: Ticket, customer: Customer) -> list[IdentityCheck]:
    """The playbook's checklist: account email, organisation name, tenant ID."""

    def compare(label: str, ours: str | None, theirs: str | None) -> IdentityCheck:
        if not ours or not theirs:
            known = theirs or ours
            return IdentityCheck(label, None, f"{known} — ask the customer" if known else "unknown")
        same = ours.strip().casefold() == theirs.strip().casefold()
        return IdentityCheck(
            label, same, theirs if same else f"ticket says {ours}, Stripe {theirs}"
        )

    return [
        compare("Account email", ticket.requester_email, customer.email),
        compare("Organisation", ticket.organization, customer.organization),
        compare("Tenant ID", ticket.tenant_id, customer.tenant_id),
    ]


def find_candidates(gateway: StripeGateway, ticket: Ticket) -> tuple[list[Customer], str]:
    """The ticket's possible customers and how they were found.

    A customer already on the ticket keeps the way it got there: "explicit" (given by the
    helpdesk), "agent" (picked in the sidebar) or "email" (matched by the mail agent).
    """
    if ticket.stripe_customer_id:
        try:
            customer = gateway.get_customer(ticket.stripe_customer_id)
            return [customer], ticket.customer_match or "explicit"
        except NotFound:
            pass
    if ticket.tenant_id:
        found = gateway.find_customers_by_tenant(ticket.tenant_id)
        if found:
            return found, "tenant"
    return gateway.find_customers_by_email(ticket.requester_email), "email"


def is_verified(
    ticket: Ticket, customer: Customer, match: str, checks: list[IdentityCheck]
) -> bool:
    """Confirmed by an agent, or named explicitly by the helpdesk with nothing conflicting.

    A tenant ID read from the customer's email is the sender's word, like the From address,
    and a customer picked from the search box proves nothing: both wait for the agent.
    """
    if ticket.customer_verified_by and ticket.stripe_customer_id == customer.id:
        return True
    return match == "explicit" and not any(c.ok is False for c in checks)


def mark_duplicates(views: list[ChargeView], window: timedelta) -> None:
    """Mark each charge that repeats an earlier one: same amount within the window (the
    playbook's "same day"); the card may differ, as when a customer retries with another."""
    # A charge already refunded in full is settled, whatever it duplicated. Views come newest
    # first; reversing before the stable sort keeps charges of the same second in true order.
    paid = [
        v
        for v in reversed(views)
        if v.charge.status == "succeeded"
        and v.charge.captured
        and v.charge.amount_refunded < v.charge.amount.amount
    ]
    paid.sort(key=lambda v: v.charge.created)
    for index, later in enumerate(paid):
        for earlier in reversed(paid[:index]):
            if later.charge.created - earlier.charge.created > window:
                break
            if earlier.charge.amount == later.charge.amount:
                later.duplicate_of = earlier.charge.id
                break


def _shared_cards(
    gateway: StripeGateway, pool: ThreadPoolExecutor, customer: Customer, views: list[ChargeView]
) -> None:
    fingerprints = list(
        dict.fromkeys(v.charge.card_fingerprint for v in views if v.charge.card_fingerprint)
    )[:MAX_FINGERPRINT_LOOKUPS]
    found = dict(zip(fingerprints, pool.map(gateway.charges_on_card, fingerprints), strict=True))
    for view in views:
        if view.charge.card_fingerprint in found:
            view.shared_with = sorted(
                {
                    c.customer_id
                    for c in found[view.charge.card_fingerprint]
                    if c.customer_id and c.customer_id != customer.id
                }
            )


def load_context(
    gateway: StripeGateway,
    session: Session,
    ticket: Ticket,
    config: PolicyConfig,
) -> BillingContext:
    """Gather the customer, subscription, charges, disputes and history for a ticket."""
    candidates, match = find_candidates(gateway, ticket)
    context = BillingContext(ticket=ticket, candidates=candidates, match=match)
    context.ticket_actions = list(
        session.scalars(select(Action).where(Action.ticket_id == ticket.id).order_by(Action.id))
    )
    if len(candidates) != 1:
        return context
    customer = context.customer = candidates[0]
    context.checks = identity_checks(ticket, customer)
    context.verified = is_verified(ticket, customer, match, context.checks)
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
    in_flight = actions.in_flight_by_charge(session, customer.id)
    for view in views:
        view.in_flight = in_flight.get(view.charge.id, 0)
        if view.charge.status == "failed":
            view.decline = guidance_for(
                view.charge.decline_code, view.charge.failure_code, view.charge.advice_code
            )
    context.charges = views
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
