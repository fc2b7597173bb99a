"""What the playbook for a new ticket's category says to do. Pure: facts in, a triage out.

A triage says what happens next and why, in words an agent reads on the ticket, and carries the
plan to store: its steps run on their own (``auto``), wait for an agent's click (``suggest``), or
there is nothing to run (``agent``: a person takes it from here).

Two things come before any category: whether the customer said they filed a chargeback (the
playbook: "chargebacks must be handled through Stripe's dispute process, not a manual
refund"), and whether the email's own words (tenant ID, organisation) agree with the Stripe
customer its sender's address found ("verify account email, organization name, and tenant
ID before taking any action").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from core.customers import Claims, CustomerMatch
from core.domain import (
    RESOLUTION_REFUND_ISSUED,
    ActionKind,
    Category,
    Charge,
    Customer,
    RefundReason,
)
from core.plans import PlanDraft, StepDraft, plan_title
from core.policy import (
    Asker,
    Mode,
    PolicyConfig,
    RefundQuestion,
    Verdict,
    find_duplicate,
    judge_refund,
)


class Next(StrEnum):
    """What happens next to a ticket."""

    AUTO = "auto"  # the plan runs on its own
    SUGGEST = "suggest"  # the plan waits for an agent to start it
    AGENT = "agent"  # a person takes it from here


CHARGEBACK_FILED = (
    "The customer says they filed a chargeback: it goes through Stripe's dispute process "
    "(Finance, 48h), never a refund by hand or by automation."
)


@dataclass(frozen=True)
class TicketFacts:
    """What the mail agent knows of a new ticket when it decides, gathered by jobs.inbound."""

    category: Category
    match: CustomerMatch
    now: datetime
    email_key: str  # names the email: one plan per email, however often triage runs
    charges: Sequence[Charge] = ()
    chargeback_filed: bool = False
    # From our records: what the customer's open tickets claim, and their refunds so far.
    claims: Claims = field(default_factory=Claims.none)
    in_flight_by_charge: Mapping[str, int] = field(default_factory=dict)
    customer_recent: int = 0
    # Whether the sender is who From says (mail.authentication), and why: money moves
    # without an agent only for an authenticated sender.
    sender_authenticated: bool = False
    sender_authentication: str = "The sender is not authenticated."


@dataclass(frozen=True)
class Triage:
    """The next step for a ticket, why, and the plan to store (if there is one)."""

    next: Next
    reason: str
    customer: Customer | None = None
    plan: PlanDraft | None = None


def plan_ticket(facts: TicketFacts, config: PolicyConfig) -> Triage:
    """Decide what a new ticket gets from its category, its customer and their charges."""
    match = facts.match
    customer = match.customer
    if facts.chargeback_filed:
        return Triage(Next.AGENT, CHARGEBACK_FILED, customer)
    if match.blocked:
        return Triage(Next.AGENT, f"Automation blocked. {match.blocked}", customer)
    mode = config.mode_for(facts.category)
    if facts.category is not Category.DUPLICATE_CHARGE or mode is Mode.OFF:
        return Triage(Next.AGENT, f"Category {facts.category}: handled by an agent.", customer)
    if customer is None:
        if not match.candidates:
            return Triage(Next.AGENT, "No Stripe customer has the sender's email address.")
        return Triage(
            Next.AGENT,
            f"{len(match.candidates)} Stripe customers share the sender's email: an agent must "
            "pick one.",
        )
    return _duplicate_charge(facts, customer, mode, config)


def _duplicate_charge(
    facts: TicketFacts, customer: Customer, mode: Mode, config: PolicyConfig
) -> Triage:
    """Servinix: "Duplicate charge: issue a full refund for the duplicate", then confirm with
    the refund ID and close "Resolved — Refund issued"."""
    pair = find_duplicate(facts.charges, timedelta(hours=config.duplicate_window_hours))
    if pair is None:
        return Triage(
            Next.AGENT,
            "No two succeeded, unrefunded charges of the same amount on the same day: check for "
            "an authorization hold or a second account.",
            customer,
        )
    duplicate = pair.duplicate
    decision = judge_refund(
        RefundQuestion(
            asker=Asker.MAIL_AGENT,
            requester_role=None,
            charge=duplicate,
            amount=duplicate.refundable,
            reason=RefundReason.DUPLICATE,
            now=facts.now,
            # The sender's address found this customer (alone, or picked among several by the
            # tenant ID the email gives), and nothing the email says contradicts it.
            sender_matched=True,
            claims=facts.claims.categories,
            chargeback_claimed=facts.claims.chargeback_claimed,
            in_flight_on_charge=facts.in_flight_by_charge.get(duplicate.id, 0),
            customer_recent=facts.customer_recent,
        ),
        config,
    )
    reason = f"Duplicate of {pair.original.id} ({duplicate.amount}, same day). {decision.reason}"
    if decision.verdict is Verdict.DENY:
        return Triage(Next.AGENT, reason, customer)
    runs = decision.allowed and mode is Mode.AUTO
    if runs and not facts.sender_authenticated:
        # Anyone can write a customer's address in From: the plan waits for an agent.
        runs = False
        reason += f" {facts.sender_authentication} An agent starts the plan."
    key = f"duplicate-refund:{duplicate.id}"
    steps = [
        StepDraft(
            ActionKind.REFUND,
            key,
            decision=decision,
            customer_id=customer.id,
            charge_id=duplicate.id,
            amount=duplicate.refundable,
            reason=str(RefundReason.DUPLICATE),
        )
    ]
    if customer.email:
        steps += [
            StepDraft(
                ActionKind.CONFIRM_REFUND,
                f"{key}:confirm",
                customer_id=customer.id,
                params={"to": customer.email},
            ),
            StepDraft(
                ActionKind.CLOSE,
                f"{key}:close",
                customer_id=customer.id,
                params={"resolution": RESOLUTION_REFUND_ISSUED},
            ),
        ]
    plan = PlanDraft(
        key=f"triage:{facts.email_key}",
        title=plan_title(f"Refund the duplicate {duplicate.id} ({duplicate.amount})", steps[1:]),
        reason=reason,
        steps=tuple(steps),
        suggested=not runs,
    )
    return Triage(Next.AUTO if runs else Next.SUGGEST, reason, customer, plan)
