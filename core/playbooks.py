"""What the playbook for a ticket's category says to do. Pure: no I/O, only data in and out."""

from __future__ import annotations

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


def plan_ticket(
    category: Category,
    customers: Sequence[Customer],
    charges: Sequence[Charge],
    config: PolicyConfig,
) -> Plan:
    """Decide the next step for a new ticket from its category, matched customers and charges."""
    customer = customers[0] if len(customers) == 1 else None
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
