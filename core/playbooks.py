"""What the playbook for a ticket's category says to do. Pure: no I/O, only data in and out.

Two things come before any category: whether the customer said they filed a chargeback (the
playbook: "chargebacks must be handled through Stripe's dispute process, not a manual
refund"), and whether the email's own words (tenant ID, organisation) agree with the Stripe
customer its sender's address found ("verify account email, organization name, and tenant
ID before taking any action").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from core.domain import Category, Charge, Customer, Money, RefundReason
from core.policy import Mode, PolicyConfig, evaluate_refund, find_duplicate


class Step(StrEnum):
    """What happens next to a ticket."""

    AUTO_REFUND = "auto_refund"  # refund, confirm by email, close
    SUGGEST_REFUND = "suggest_refund"  # an agent reviews a prepared refund
    AGENT = "agent"  # a person takes it from here


@dataclass(frozen=True)
class Plan:
    """The next step for a ticket and why, in words an agent can read on the ticket."""

    step: Step
    reason: str
    customer: Customer | None = None
    charge: Charge | None = None
    amount: Money | None = None
    refund_reason: RefundReason | None = None


CHARGEBACK_FILED = (
    "The customer says they filed a chargeback: it goes through Stripe's dispute process "
    "(Finance, 48h), never a refund by hand or by automation."
)


@dataclass(frozen=True)
class CustomerMatch:
    """Which Stripe customer an email is from, how that was decided, and whether the email's
    own words contradict it (``blocked``: a sentence for the agent; automation stands back)."""

    customer: Customer | None
    candidates: tuple[Customer, ...]
    how: str
    blocked: str | None = None


_LEGAL_WORDS = frozenset({
    "inc", "incorporated", "llc", "llp", "ltd", "limited", "gmbh", "ag", "sa", "sas", "sarl",
    "bv", "nv", "pty", "plc", "corp", "corporation", "co", "company", "oy", "ab", "aps", "kg",
    "srl", "spa", "pvt", "the", "and",
})  # fmt: skip


def canonical_tenant(value: str) -> str:
    """A tenant ID for comparison: ``T-1042`` whether written 1042, t-1042 or T-1042."""
    value = value.strip()
    digits = re.fullmatch(r"(?:[Tt]-)?(\d+)", value)
    return f"T-{digits.group(1)}" if digits else value.casefold()


def _organization_words(name: str) -> tuple[str, ...]:
    words = re.sub(r"[^\w\s]", " ", name.casefold()).split()
    return tuple(w for w in words if w not in _LEGAL_WORDS)


def same_organization(ours: str, theirs: str) -> bool:
    """Whether two organisation names can be the same company: equal once case, punctuation
    and legal suffixes are set aside, or one the other's leading words ("Northwind" and
    "Northwind Bakery Ltd")."""
    a, b = _organization_words(ours), _organization_words(theirs)
    if not a or not b:
        return True  # nothing left to compare: no contradiction either
    shorter, longer = sorted((a, b), key=len)
    return longer[: len(shorter)] == shorter


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


def match_customer(
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


def plan_ticket(
    category: Category,
    customers: Sequence[Customer],
    charges: Sequence[Charge],
    config: PolicyConfig,
    *,
    chargeback_filed: bool = False,
    blocked: str | None = None,
) -> Plan:
    """Decide the next step for a new ticket from its category, matched customers and charges.

    ``chargeback_filed`` (the customer says so) and ``blocked`` (why the email's words
    contradict the customer) send any category to an agent, before anything else.
    """
    customer = customers[0] if len(customers) == 1 else None
    if chargeback_filed:
        return Plan(Step.AGENT, CHARGEBACK_FILED, customer=customer)
    if blocked:
        return Plan(Step.AGENT, f"Automation blocked. {blocked}", customer=customer)
    mode = config.mode_for(category)
    if category is not Category.DUPLICATE_CHARGE or mode is Mode.OFF:
        return Plan(Step.AGENT, f"Category {category}: handled by an agent.", customer=customer)
    if not customers:
        return Plan(Step.AGENT, "No Stripe customer has the sender's email address.")
    if customer is None:
        return Plan(
            Step.AGENT,
            f"{len(customers)} Stripe customers share the sender's email: an agent must pick one.",
        )
    pair = find_duplicate(charges, timedelta(hours=config.duplicate_window_hours))
    if pair is None:
        return Plan(
            Step.AGENT,
            "No two succeeded, unrefunded charges of the same amount on the same day: check for "
            "an authorization hold or a second account.",
            customer=customer,
        )
    decision = evaluate_refund(pair.duplicate, pair.duplicate.amount, config)
    step = Step.AUTO_REFUND if decision.allowed and mode is Mode.AUTO else Step.SUGGEST_REFUND
    reason = (
        f"Duplicate of {pair.original.id} ({pair.duplicate.amount}, same day). {decision.reason}"
    )
    return Plan(
        step,
        reason,
        customer=customer,
        charge=pair.duplicate,
        amount=pair.duplicate.amount,
        refund_reason=RefundReason.DUPLICATE,
    )
