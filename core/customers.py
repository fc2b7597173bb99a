"""Who a ticket's customer is: the one owner of these rules, for the mail agent and the sidebar.

Finding the Stripe customer (an explicit ID, a tenant ID, the sender's or requester's email),
checking it against what the email or the ticket says (account email, organisation, tenant ID:
the playbook's checklist), and an agent choosing and confirming it. The comparisons here (how a
tenant ID or an organisation name is normalised) are the only ones in the product.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from core import audit
from core.db import queries
from core.db.models import Agent, Ticket, utcnow
from core.domain import Category, Customer, MatchKind
from core.errors import InvalidInput, NotFound, PolicyDenied

if TYPE_CHECKING:  # mail.parsing reads the legal forms here without loading stripe-python
    from core.stripe_gateway import StripeGateway

# Legal forms set aside when comparing company names ("Weber GmbH" is "Weber"), and the words
# mail.extract recognises as ending a company name in an email.
LEGAL_FORMS = (
    "inc", "incorporated", "llc", "llp", "ltd", "limited", "gmbh", "ag", "sa", "sas", "sarl",
    "bv", "nv", "pty", "plc", "corp", "corporation", "co", "company", "oy", "ab", "aps", "kg",
    "srl", "spa", "pvt",
)  # fmt: skip
_NOT_DISTINCTIVE = frozenset(LEGAL_FORMS) | {"the", "and"}


def legal_form_pattern() -> str:
    """A regular expression alternation of the legal forms as people write them in text:
    short ones with or without dots ("LLC", "L.L.C", "S.A", "B.V"), longest first."""
    forms = sorted(LEGAL_FORMS, key=len, reverse=True)
    return "|".join(
        r"\.?".join(re.escape(letter) for letter in form) if len(form) <= 3 else re.escape(form)
        for form in forms
    )


_TENANT_DIGITS = re.compile(r"(?:[Tt]-)?(\d+)")

# What the sidebar's checklist asks the agent to confirm, in order.
CHECKLIST = ("email", "organisation", "tenant")


def canonical_tenant(value: str) -> str:
    """A tenant ID for comparison: ``T-1042`` whether written 1042, t-1042 or T-1042."""
    value = value.strip()
    digits = _TENANT_DIGITS.fullmatch(value)
    return f"T-{digits.group(1)}" if digits else value.casefold()


def _organization_words(name: str) -> tuple[str, ...]:
    words = re.sub(r"[^\w\s]", " ", name.casefold()).split()
    return tuple(w for w in words if w not in _NOT_DISTINCTIVE)


def same_organization(ours: str, theirs: str) -> bool:
    """Whether two organisation names can be the same company: equal once case, punctuation
    and legal forms are set aside, or one the other's leading words ("Northwind" and
    "Northwind Bakery Ltd")."""
    a, b = _organization_words(ours), _organization_words(theirs)
    if not a or not b:
        return True  # nothing left to compare: no contradiction either
    shorter, longer = sorted((a, b), key=len)
    return longer[: len(shorter)] == shorter


def same_email(a: str | None, b: str | None) -> bool:
    """Two addresses are the same mailbox (case ignored); an unknown one matches nothing."""
    if not a or not b:
        return False
    return a.strip().casefold() == b.strip().casefold()


@dataclass(frozen=True)
class IdentityCheck:
    """A line of the playbook's checklist: True matches, False conflicts, None unknown."""

    label: str
    ok: bool | None
    detail: str


def identity_checks(
    customer: Customer,
    *,
    requester_email: str | None,
    organization: str | None,
    tenant_id: str | None,
) -> tuple[IdentityCheck, ...]:
    """The playbook's checklist: what the ticket says against what Stripe has."""
    email = _check(
        "Account email",
        requester_email,
        customer.email,
        same_email(requester_email, customer.email),
    )
    org = _check(
        "Organisation",
        organization,
        customer.organization,
        bool(organization and customer.organization)
        and same_organization(organization or "", customer.organization or ""),
    )
    tenant = _check(
        "Tenant ID",
        tenant_id,
        customer.tenant_id,
        bool(tenant_id and customer.tenant_id)
        and canonical_tenant(tenant_id or "") == canonical_tenant(customer.tenant_id or ""),
    )
    return (email, org, tenant)


def _check(label: str, ours: str | None, theirs: str | None, same: bool) -> IdentityCheck:
    if not ours or not theirs:
        known = theirs or ours
        return IdentityCheck(label, None, f"{known} — ask the customer" if known else "unknown")
    return IdentityCheck(label, same, theirs if same else f"ticket says {ours}, Stripe {theirs}")


@dataclass(frozen=True)
class Identity:
    """A ticket's customer, how it was found, and whether that is proof enough for money."""

    customer: Customer
    matched_by: MatchKind
    checks: tuple[IdentityCheck, ...]
    requester_email: str
    confirmed_by: str | None = None

    @property
    def conflicts(self) -> tuple[IdentityCheck, ...]:
        """Checks where the ticket and Stripe disagree."""
        return tuple(c for c in self.checks if c.ok is False)

    @property
    def conflict(self) -> str | None:
        """The first disagreement, in words, if any."""
        first = next(iter(self.conflicts), None)
        return f"{first.label}: {first.detail}" if first else None

    @property
    def confirmed(self) -> bool:
        """Confirmed by an agent, or named by the helpdesk itself, with nothing conflicting.

        An authenticated email from the customer's own address proves who writes. A tenant ID
        read from the customer's email is the sender's word, like an unauthenticated From
        address, and a customer picked from the search box proves nothing: both wait for an
        agent's confirmation.
        """
        if self.conflicts:
            return False
        if self.matched_by is MatchKind.AUTHENTICATED and self.requester_is_customer:
            return True
        return self.confirmed_by is not None or self.matched_by is MatchKind.EXPLICIT

    @property
    def requester_is_customer(self) -> bool:
        """The ticket's requester writes from the Stripe customer's own address."""
        return same_email(self.requester_email, self.customer.email)

    @property
    def warning(self) -> str | None:
        """Said wherever this customer appears (sidebar, notes, approvals) when an agent chose a
        customer whose email is not the ticket requester's."""
        if self.matched_by is not MatchKind.AGENT or self.requester_is_customer:
            return None
        own = self.customer.email or "no email on file"
        return (
            f"Chosen by an agent: the ticket's requester {self.requester_email} is not this "
            f"customer's address ({own})."
        )

    @property
    def email(self) -> str | None:
        """Where confirmations and billing links go: the Stripe customer's own address, never
        one that only the ticket supplied."""
        return self.customer.email


def identity_for(ticket: Ticket, customer: Customer, matched_by: MatchKind) -> Identity:
    """The identity of ``customer`` as the customer of ``ticket``."""
    confirmed_by = ticket.customer_verified_by if ticket.stripe_customer_id == customer.id else None
    return Identity(
        customer=customer,
        matched_by=matched_by,
        checks=identity_checks(
            customer,
            requester_email=ticket.requester_email,
            organization=ticket.organization,
            tenant_id=ticket.tenant_id,
        ),
        requester_email=ticket.requester_email,
        confirmed_by=confirmed_by,
    )


def find_candidates(gateway: StripeGateway, ticket: Ticket) -> tuple[list[Customer], MatchKind]:
    """The ticket's possible customers and how they were found.

    A customer already on the ticket keeps the way it got there: explicit (given by the
    helpdesk), agent (picked in the sidebar) or email (matched by the mail agent).
    """
    if ticket.stripe_customer_id:
        try:
            customer = gateway.get_customer(ticket.stripe_customer_id)
            return [customer], MatchKind(ticket.customer_match or MatchKind.EXPLICIT)
        except NotFound:
            pass
    if ticket.tenant_id:
        found = gateway.find_customers_by_tenant(ticket.tenant_id)
        if found:
            return found, MatchKind.TENANT
    return gateway.find_customers_by_email(ticket.requester_email), MatchKind.EMAIL


def identity_of(gateway: StripeGateway, ticket: Ticket) -> Identity | None:
    """The ticket's customer and how we know them, once exactly one is found."""
    candidates, matched_by = find_candidates(gateway, ticket)
    return identity_for(ticket, candidates[0], matched_by) if len(candidates) == 1 else None


def identity_now(
    gateway: StripeGateway, ticket: Ticket | None, customer_id: str
) -> Identity | None:
    """The customer's identity as the ticket's customer now, asked again just before a step
    runs: None when the ticket is about someone else by now, or Stripe no longer has them."""
    if ticket is None or not customer_id or ticket.stripe_customer_id != customer_id:
        return None
    try:
        customer = gateway.get_customer(customer_id)
    except NotFound:
        return None
    return identity_for(ticket, customer, MatchKind(ticket.customer_match or MatchKind.EXPLICIT))


def choose_customer(session: Session, ticket: Ticket, customer: Customer, agent: Agent) -> None:
    """An agent says which Stripe customer the ticket is about; it stays unconfirmed."""
    if ticket.stripe_customer_id == customer.id:
        return
    ticket.stripe_customer_id = customer.id
    ticket.customer_match = MatchKind.AGENT
    ticket.customer_verified_by = ticket.customer_verified_at = None
    audit.record(
        session,
        actor=agent.email,
        event="customer.chosen",
        ticket_id=ticket.id,
        stripe_customer_id=customer.id,
        requester=ticket.requester_email,
        customer_email=customer.email,
    )


def confirm_identity(
    session: Session, ticket: Ticket, identity: Identity, agent: Agent, confirmed: Sequence[str]
) -> None:
    """An agent confirms the checklist with the customer; refused while anything conflicts."""
    if set(CHECKLIST) - set(confirmed):
        raise InvalidInput(
            "Confirm all three with the customer: account email, organisation and tenant ID."
        )
    if identity.conflicts:
        raise PolicyDenied(
            f"This customer cannot be confirmed for this ticket: {identity.conflict}. Ask the "
            "customer to write from their account's email, or find the right customer."
        )
    ticket.stripe_customer_id = identity.customer.id
    ticket.customer_match = ticket.customer_match or identity.matched_by
    ticket.customer_verified_by = agent.email
    ticket.customer_verified_at = utcnow()
    audit.record(
        session,
        actor=agent.email,
        event="customer.verified",
        ticket_id=ticket.id,
        stripe_customer_id=identity.customer.id,
        checks=list(confirmed),
    )


@dataclass(frozen=True)
class CustomerMatch:
    """Which Stripe customer an email is from, how that was decided, and whether the email's
    own words contradict it (``blocked``: a sentence for the agent; automation stands back)."""

    customer: Customer | None
    candidates: tuple[Customer, ...]
    how: str
    blocked: str | None = None


def _contradiction(
    sender: str, customer: Customer, tenant_ids: Sequence[str], organization: str | None
) -> str | None:
    """The sentence telling an agent how the email disagrees with the customer, if it does."""
    known = canonical_tenant(customer.tenant_id) if customer.tenant_id else None
    others = [t for t in tenant_ids if known and canonical_tenant(t) != known]
    if others:
        return (
            f"The email mentions tenant {others[0]} but {sender}'s Stripe customer is tenant "
            f"{customer.tenant_id}: check who this is before any refund."
        )
    if (
        organization
        and customer.organization
        and not same_organization(organization, customer.organization)
    ):
        return (
            f"The email is signed for {organization} but {sender}'s Stripe customer is "
            f"{customer.organization}: check who this is before any refund."
        )
    return None


def match_sender(
    sender: str,
    candidates: Sequence[Customer],
    *,
    tenant_ids: Sequence[str] = (),
    organization: str | None = None,
) -> CustomerMatch:
    """The Stripe customer an email is from, among those with the sender's address.

    One candidate is it; several are narrowed by the tenant ID the email gives when exactly
    one has it. The one found is then checked against the email's tenant ID and organisation:
    a contradiction blocks automation with a sentence saying why.
    """
    found = tuple(candidates)
    if not found:
        return CustomerMatch(None, found, "no Stripe customer has the sender's email address")
    if len(found) == 1:
        customer = found[0]
        how = f"{customer.id}, the only Stripe customer with {sender}"
    else:
        wanted = {canonical_tenant(t) for t in tenant_ids}
        picked = [c for c in found if c.tenant_id and canonical_tenant(c.tenant_id) in wanted]
        if len(picked) != 1:
            said = f" and tenant {', '.join(tenant_ids)} picks {len(picked)}" if tenant_ids else ""
            return CustomerMatch(
                None,
                found,
                f"{len(found)} Stripe customers share {sender}{said}: an agent must pick one",
            )
        customer = picked[0]
        how = (
            f"{customer.id}, picked among {len(found)} customers with {sender} by tenant "
            f"{customer.tenant_id}"
        )
    blocked = _contradiction(sender, customer, tenant_ids, organization)
    return CustomerMatch(customer, found, how, blocked)


@dataclass(frozen=True)
class Claims:
    """What the customer's open tickets say: every category, and whether any of them says a
    chargeback was filed. Approvals follow these, whichever ticket an agent stands on."""

    categories: frozenset[Category]
    chargeback_claimed: bool
    ticket_ids: tuple[int, ...]

    @classmethod
    def none(cls) -> Claims:
        """No open ticket says anything."""
        return cls(frozenset(), False, ())


def open_claims(session: Session, customer: Customer) -> Claims:
    """The claims of every open ticket about this customer: those matched to it, and those from
    its email address."""
    tickets = queries.open_tickets_of(session, customer.id, customer.email)
    categories = {Category(t.category) for t in tickets if t.category}
    filed = any((t.entities or {}).get("chargeback_filed") for t in tickets)
    return Claims(
        categories=frozenset(categories),
        chargeback_claimed=filed or Category.CHARGEBACK in categories,
        ticket_ids=tuple(t.id for t in tickets),
    )
