"""What the playbook for a new ticket's category says to do. Pure: facts in, a triage out.

A triage says what happens next and why, in words an agent reads on the ticket, and carries the
plan to store: its steps run on their own (``auto``), wait for an agent's click (``suggest``), or
there is nothing to run (``agent``: a person takes it from here). When the plan waits, or there
is none, the customer still hears from us: an acknowledgement (or a request for what we need)
is a plan of its own that runs at once.

Two things come before any category: whether the customer said they filed a chargeback (the
playbook: "chargebacks must be handled through Stripe's dispute process, not a manual
refund"), and whether the email's own words (tenant ID, organisation) agree with the Stripe
customer its sender's address found ("verify account email, organization name, and tenant
ID before taking any action").

Money and changes to what a customer pays run on their own only for an authenticated sender
(mail.authentication) and within the automatic limits; emails and escalations run for anyone,
since an email goes to the address it answers and an escalation only brings a person in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from core.customers import Claims, CustomerMatch
from core.domain import (
    RESOLUTION_REFUND_ISSUED,
    ActionKind,
    Category,
    Charge,
    Customer,
    EscalationTarget,
    Money,
    RefundReason,
    Subscription,
)
from core.plans import PlanDraft, StepDraft, escalation_params, plan_title, reply_params
from core.policy import (
    ActionQuestion,
    Asker,
    Decision,
    Mode,
    PolicyConfig,
    RefundQuestion,
    Verdict,
    duplicate_pairs,
    guidance_for,
    judge_action,
    judge_automatic,
    judge_refund,
    period_end_after,
    prorated_refund,
    retry_schedule,
    sla_text,
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
RESOLUTION_HOLD_EXPLAINED = "Resolved — Authorization hold explained"
RESOLUTION_CANCELLED = "Resolved — Cancelled at period end"
RESOLUTION_SELF_SERVICE = "Resolved — Self-service cancellation link sent"
RESOLUTION_ALREADY_CANCELLED = "Resolved — Subscription already cancelled"

# Steps that move money or change what the customer pays: automatic only for a sender who is
# who From says.
_NEEDS_AUTHENTICATED_SENDER = frozenset(
    [
        ActionKind.REFUND,
        ActionKind.CANCEL_SUBSCRIPTION,
        ActionKind.COMP_COUPON,
        ActionKind.EXTEND_TRIAL,
        ActionKind.SEND_UPDATE_CARD_LINK,
    ]
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
    # From Stripe: the customer's subscriptions; for each of their charges, the other
    # customers charged on the same card (by fingerprint).
    subscriptions: Sequence[Subscription] = ()
    card_shared_with: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # From the email: the amounts it names, whether the customer says they cannot reach their
    # account (or the portal), and whether they ask for the cancellation to take effect now.
    amounts_mentioned: tuple[Money, ...] = ()
    locked_out: bool = False
    wants_immediate: bool = False


@dataclass(frozen=True)
class Triage:
    """The next step for a ticket, why, and the plans to store (if any): the playbook's, and
    an answer to the customer that runs at once while the playbook's waits for an agent."""

    next: Next
    reason: str
    customer: Customer | None = None
    plan: PlanDraft | None = None
    acknowledgement: PlanDraft | None = None

    @property
    def plans(self) -> tuple[PlanDraft, ...]:
        """Every plan to store, the answer first."""
        return tuple(p for p in (self.acknowledgement, self.plan) if p is not None)


def triage_plan_keys(email_key: str) -> tuple[str, str]:
    """The keys of the plans an email's triage may store: the playbook's, the answer's."""
    return f"triage:{email_key}", f"ack:{email_key}"


def dispute_acknowledgement(
    ticket_id: int, customer_id: str | None, config: PolicyConfig
) -> PlanDraft | None:
    """The customer writes onto the ticket of a dispute their bank opened: they hear, once per
    ticket, that the bank's dispute process decides (the chargeback playbook's answer; Finance
    has the dispute already). None where the chargeback playbook's mode is not ``auto``."""
    if config.mode_for(Category.CHARGEBACK) is not Mode.AUTO:
        return None
    step = StepDraft(
        ActionKind.REPLY,
        f"dispute-ticket-{ticket_id}:ack",
        customer_id=customer_id,
        params=reply_params("chargeback_acknowledgement", "About your chargeback"),
    )
    return PlanDraft(
        key=f"dispute-ticket-{ticket_id}:ack",
        title="Acknowledge the email",
        reason="The customer wrote about the dispute their bank opened: the bank decides.",
        steps=(replace(step, decision=judge_automatic(step.kind, config)),),
    )


def plan_ticket(facts: TicketFacts, config: PolicyConfig) -> Triage:
    """Decide what a new ticket gets from its category, its customer and their charges."""
    match = facts.match
    customer = match.customer
    book = _Playbook(facts, config)
    if facts.chargeback_filed or facts.category is Category.CHARGEBACK:
        return book.chargeback()
    mode = config.mode_for(facts.category)
    if mode is Mode.OFF:
        return Triage(
            Next.AGENT,
            f"Category {facts.category}: the policy leaves it to people (mode off).",
            customer,
        )
    if match.blocked:
        return book.to_agent(f"Automation blocked. {match.blocked}")
    playbook = _PLAYBOOKS.get(facts.category)
    if playbook is None:
        return book.to_agent(f"Category {facts.category}: a person answers.")
    if customer is None and facts.category not in _WITHOUT_CUSTOMER:
        if not match.candidates:
            return book.ask_for_details(
                "No Stripe customer has the sender's email address: we asked the customer for "
                "the account email, the charge's date and amount, and the card's last 4."
            )
        return book.to_agent(
            f"{len(match.candidates)} Stripe customers share the sender's email: an agent must "
            "pick one."
        )
    return playbook(book)


class _Playbook:
    """The steps each category's playbook takes, built for one ticket's facts."""

    def __init__(self, facts: TicketFacts, config: PolicyConfig) -> None:
        self.facts = facts
        self.config = config
        self.mode = config.mode_for(facts.category)
        self.customer = facts.match.customer

    # --- building blocks ----------------------------------------------------------------

    def key(self, name: str) -> str:
        return f"{self.facts.email_key}:{name}"

    def reply(self, name: str, template: str, subject: str, **context: Any) -> StepDraft:
        """An email to the requester from ``templates/<template>``."""
        return StepDraft(
            ActionKind.REPLY,
            self.key(name),
            customer_id=self.customer.id if self.customer else None,
            params=reply_params(template, subject, **context),
        )

    def acknowledge(self, topic: str) -> StepDraft:
        """We have the email, a person is on it, and what happens next (``topic``)."""
        return self.reply("ack", "acknowledgement", "We have your message", topic=topic)

    def escalate(self, target: EscalationTarget, why: str) -> StepDraft:
        """Hand the ticket to a team's queue with its SLA; the team hears of it."""
        return StepDraft(
            ActionKind.ESCALATE,
            self.key(f"escalate:{target}"),
            customer_id=self.customer.id if self.customer else None,
            params=escalation_params(target, why),
        )

    def close(self, resolution: str) -> StepDraft:
        return StepDraft(
            ActionKind.CLOSE,
            self.key("close"),
            customer_id=self.customer.id if self.customer else None,
            params={"resolution": resolution},
        )

    def billing_link_or_reply(
        self, name: str, template: str, subject: str, **context: Any
    ) -> StepDraft:
        """A secure billing-portal link to the customer's own address when we know who writes;
        otherwise the same email without the link, to the address it answers."""
        if self.identity_proven:
            return StepDraft(
                ActionKind.SEND_UPDATE_CARD_LINK,
                self.key(name),
                customer_id=self.customer.id if self.customer else None,
                params={
                    "email": self.customer.email if self.customer else None,
                    "template": template,
                    "subject": subject,
                    "context": context,
                },
            )
        return self.reply(name, template, subject, **context)

    @property
    def identity_proven(self) -> bool:
        """The sender is authenticated and writes from the Stripe customer's own address."""
        # The customer was found by the sender's address, so it is the customer's own.
        return bool(
            self.facts.sender_authenticated
            and self.customer is not None
            and self.customer.email
            and not self.facts.match.blocked
        )

    def first_decision(self, step: StepDraft) -> Decision:
        """Policy's answer for a plan's first step that moves no money."""
        return judge_action(
            ActionQuestion(
                kind=step.kind,
                asker=Asker.MAIL_AGENT,
                requester_role=None,
                identity_confirmed=self.identity_proven,
                customer_email=self.customer.email if self.customer else None,
            ),
            self.config,
        )

    def plan(
        self,
        title: str,
        reason: str,
        steps: Sequence[StepDraft],
        *,
        decision: Decision | None = None,
        next_if_runs: Next = Next.AUTO,
    ) -> Triage:
        """The triage for a plan of ``steps``: it runs unless the policy's mode, the sender or
        the first step's decision says an agent starts it; then the customer is acknowledged."""
        first = steps[0]
        decision = decision or self.first_decision(first)
        runs = self.mode is Mode.AUTO and decision.allowed
        if not decision.allowed:
            reason += f" {decision.reason}"
        needs_sender = any(s.kind in _NEEDS_AUTHENTICATED_SENDER for s in steps)
        if runs and needs_sender and not self.facts.sender_authenticated:
            runs = False
            reason += f" {self.facts.sender_authentication} An agent starts the plan."
        elif self.mode is Mode.SUGGEST:
            reason += " The policy makes this category a suggestion: an agent starts the plan."
        drafted = (replace(first, decision=decision), *steps[1:])
        plan = PlanDraft(
            key=triage_plan_keys(self.facts.email_key)[0],
            title=plan_title(title, drafted[1:]),
            reason=reason,
            steps=drafted,
            suggested=not runs,
        )
        if runs:
            return Triage(next_if_runs, reason, self.customer, plan)
        has_reply = any(s.kind in (ActionKind.REPLY, ActionKind.CONFIRM_REFUND) for s in steps)
        ack = self.acknowledgement_plan("An agent is reviewing it.") if has_reply else None
        return Triage(Next.SUGGEST, reason, self.customer, plan, ack)

    def acknowledgement_plan(self, topic: str) -> PlanDraft | None:
        """A plan of one acknowledgement, run at once (none in suggest mode: it waits too)."""
        if self.mode is not Mode.AUTO:
            return None
        step = self.acknowledge(topic)
        return PlanDraft(
            key=triage_plan_keys(self.facts.email_key)[1],
            title="Acknowledge the email",
            reason="The customer hears from us while a person takes the ticket.",
            steps=(replace(step, decision=self.first_decision(step)),),
        )

    def to_agent(
        self, reason: str, topic: str = "A member of our team is looking into it."
    ) -> Triage:
        """A person takes it from here; the customer is acknowledged."""
        return Triage(Next.AGENT, reason, self.customer, None, self.acknowledgement_plan(topic))

    def ask_for_details(self, reason: str) -> Triage:
        """Playbook, "Gather information": the charge date and amount, the card's last 4."""
        step = self.reply(
            "verify",
            "verification_request",
            "We need a few details to find your charge",
            known_customer=self.customer is not None,
        )
        return self.plan("Ask for the charge's date, amount and last 4", reason, [step])

    def refund_steps(
        self,
        name: str,
        charge: Charge,
        amount: Money,
        reason: RefundReason,
        decision: Decision,
        resolution: str = RESOLUTION_REFUND_ISSUED,
        prorated: dict[str, Any] | None = None,
    ) -> list[StepDraft]:
        """Refund → confirm with the refund ID → close (when the customer has an address)."""
        assert self.customer is not None
        params: dict[str, Any] = {}
        if prorated:
            params["prorated"] = prorated
        steps = [
            StepDraft(
                ActionKind.REFUND,
                name,
                decision=decision,
                customer_id=self.customer.id,
                charge_id=charge.id,
                amount=amount,
                reason=str(reason),
                params=params,
            )
        ]
        if self.customer.email:
            steps += [
                StepDraft(
                    ActionKind.CONFIRM_REFUND,
                    f"{name}:confirm",
                    customer_id=self.customer.id,
                    params={"to": self.customer.email},
                ),
                StepDraft(
                    ActionKind.CLOSE,
                    f"{name}:close",
                    customer_id=self.customer.id,
                    params={"resolution": resolution},
                ),
            ]
        return steps

    def judge(self, charge: Charge, amount: Money, reason: RefundReason, **extra: Any) -> Decision:
        facts = self.facts
        return judge_refund(
            RefundQuestion(
                asker=Asker.MAIL_AGENT,
                requester_role=None,
                charge=charge,
                amount=amount,
                reason=reason,
                now=facts.now,
                # The sender's address found this customer (alone, or picked among several by
                # the tenant ID the email gives), and nothing the email says contradicts it.
                sender_matched=True,
                claims=facts.claims.categories,
                chargeback_claimed=facts.claims.chargeback_claimed,
                in_flight_on_charge=facts.in_flight_by_charge.get(charge.id, 0),
                customer_recent=facts.customer_recent,
                **extra,
            ),
            self.config,
        )

    def refund_or_escalate(
        self, title: str, reason: str, steps: list[StepDraft], decision: Decision
    ) -> Triage:
        """A refund the policy allows runs (or waits for an agent); one it refuses or would
        have approved goes to the Support Lead with the reason (PenguinMails: "Standard Refund
        → Support Lead 24h"), who refunds from the sidebar if they decide to."""
        why = f"{reason} {decision.reason}"
        if not decision.allowed:
            return self.escalate_with_ack(EscalationTarget.SUPPORT_LEAD, why)
        return self.plan(title, why, steps, decision=decision)

    def escalate_with_ack(
        self, target: EscalationTarget, reason: str, topic: str | None = None
    ) -> Triage:
        """Acknowledge, then hand the ticket to ``target`` with its SLA."""
        topic = topic or f"We have passed it to our {target.label} team, who will be in touch."
        steps = [self.acknowledge(topic), self.escalate(target, reason)]
        reason = f"{reason} Escalated to {sla_text(target, self.config)}."
        return self.plan("Acknowledge", reason, steps, next_if_runs=Next.AGENT)

    # --- the categories ---------------------------------------------------------------

    def chargeback(self) -> Triage:
        """Never a refund: Finance (48h) at once, and the customer hears that the bank's
        dispute process decides."""
        steps = [
            self.escalate(EscalationTarget.FINANCE, CHARGEBACK_FILED),
            self.reply("ack", "chargeback_acknowledgement", "About your chargeback"),
        ]
        reason = (
            f"{CHARGEBACK_FILED} Escalated to {sla_text(EscalationTarget.FINANCE, self.config)}."
        )
        # Said in an email of any category, a chargeback takes the chargeback playbook's mode.
        self.mode = self.config.mode_for(Category.CHARGEBACK)
        if self.mode is Mode.OFF:
            return Triage(Next.AGENT, CHARGEBACK_FILED, self.customer)
        return self.plan("Escalate to Finance", reason, steps, next_if_runs=Next.AGENT)

    def duplicate_charge(self) -> Triage:
        """Servinix: "Duplicate charge: issue a full refund for the duplicate", confirm with the
        refund ID, close "Resolved — Refund issued". PenguinMails: an authorization hold is not
        a charge (it drops off in 5–7 days), and two accounts on one card are two customers."""
        facts = self.facts
        window = timedelta(hours=self.config.duplicate_window_hours)
        pairs = duplicate_pairs(facts.charges, window)
        if not pairs:
            hold = _hold_beside_charge(facts.charges, window)
            if hold is not None:
                return self.hold_explanation(
                    hold,
                    f"The second 'charge' is an authorization hold ({hold.id}, {hold.amount}), "
                    "not a payment: it drops off in 5–7 days. No refund.",
                )
            shared = self.shared_card()
            if shared:
                return shared
            refunded = _refunded_twin(facts.charges, window)
            if refunded is not None:
                return self.to_agent(
                    f"The duplicate {refunded.id} ({refunded.amount}) is already refunded: an "
                    "agent answers with the refund ID."
                )
            return self.ask_for_details(
                "No two succeeded, unrefunded charges of the same amount on the same day on "
                "this account: we asked the customer for the charge's date, amount and last 4."
            )
        pair = pairs[0]
        duplicate = pair.duplicate
        decision = self.judge(duplicate, duplicate.refundable, RefundReason.DUPLICATE)
        reason = f"Duplicate of {pair.original.id} ({duplicate.amount}, same day)."
        steps = self.refund_steps(
            f"duplicate-refund:{duplicate.id}",
            duplicate,
            duplicate.refundable,
            RefundReason.DUPLICATE,
            decision,
        )
        if decision.verdict is Verdict.DENY:
            return self.to_agent(f"{reason} {decision.reason}")
        return self.plan(
            f"Refund the duplicate {duplicate.id} ({duplicate.amount})",
            f"{reason} {decision.reason}",
            steps,
            decision=decision,
        )

    def shared_card(self) -> Triage | None:
        """The customer's card also paid another Stripe customer's charge: two accounts, one
        card. An agent looks at both; nothing is refunded."""
        assert self.customer is not None
        for charge in self.facts.charges:
            others = self.facts.card_shared_with.get(charge.id)
            if others:
                names = ", ".join([self.customer.id, *others])
                return self.to_agent(
                    f"The card ending {charge.card_last4 or '????'} pays more than one Stripe "
                    f"account ({names}): two accounts, not a duplicate. An agent checks both "
                    "before any refund."
                )
        return None

    def hold_explanation(self, hold: Charge | None, reason: str) -> Triage:
        context: dict[str, Any] = {"amount": None, "date": None}
        if hold is not None:
            context = {"amount": str(hold.amount), "date": f"{hold.created:%d %b %Y}"}
        steps = [
            self.reply(
                "hold", "hold_explanation", "About the pending charge on your card", **context
            ),
            self.close(RESOLUTION_HOLD_EXPLAINED),
        ]
        return self.plan("Explain the authorization hold", reason, steps)

    def authorization_hold(self) -> Triage:
        """Explain holds; close when nothing else is asked. A real second charge is a
        duplicate, and goes the duplicate's way."""
        facts = self.facts
        window = timedelta(hours=self.config.duplicate_window_hours)
        if duplicate_pairs(facts.charges, window):
            return self.duplicate_charge()
        holds = [c for c in facts.charges if c.is_hold]
        hold = max(holds, key=lambda c: c.created) if holds else None
        if hold is not None:
            reason = (
                f"An authorization hold of {hold.amount} ({hold.id}) is on the card: explained."
            )
        else:
            reason = "No hold is on the account now: holds explained in general."
        return self.hold_explanation(hold, reason)

    def charge_after_cancellation(self) -> Triage:
        """Servinix: "Verify cancellation date ... Issue a prorated refund if the charge was
        after the confirmed cancellation effective date."""
        assert self.customer is not None
        cancellation = _cancellation(self.facts.subscriptions)
        if cancellation is None:
            return self.escalate_with_ack(
                EscalationTarget.SUPPORT_LEAD,
                "The customer says they cancelled, but Stripe shows no cancellation on any of "
                "their subscriptions: a Support Lead checks the support system for it.",
            )
        sub, effective = cancellation
        # A charge for another subscription still billing is no charge after this cancellation.
        others = {
            x.latest_invoice_id for x in self.facts.subscriptions if x.id != sub.id and x.is_live
        }
        after = [
            c
            for c in self.facts.charges
            if c.created > effective
            and _refundable(c)
            and not (c.invoice_id and c.invoice_id in others)
        ]
        chosen = _named_or_latest(after, self.facts.amounts_mentioned)
        if chosen is None:
            return self.escalate_with_ack(
                EscalationTarget.SUPPORT_LEAD,
                f"The cancellation of {sub.id} took effect {effective:%d %b %Y}, and no "
                "refundable charge came after it: a Support Lead reviews the claim.",
            )
        start = chosen.created
        end = period_end_after(start, sub.interval)
        computed = prorated_refund(chosen.amount, chosen.refundable, start, end, effective)
        if computed is None:
            return self.to_agent(
                f"Nothing of {chosen.id}'s period was left after the cancellation."
            )
        decision = self.judge(
            chosen, computed.amount, RefundReason.REQUESTED_BY_CUSTOMER, after_cancellation=True
        )
        reason = (
            f"{chosen.id} ({chosen.amount}, {chosen.created:%d %b %Y}) came after the "
            f"cancellation of {sub.id}, effective {effective:%d %b %Y}. {computed.explanation}"
        )
        steps = self.refund_steps(
            f"cancellation-refund:{chosen.id}",
            chosen,
            computed.amount,
            RefundReason.REQUESTED_BY_CUSTOMER,
            decision,
            prorated={
                "cancelled_on": effective.date().isoformat(),
                "explanation": computed.explanation,
            },
        )
        return self.refund_or_escalate(
            f"Prorated refund of {computed.amount} on {chosen.id}", reason, steps, decision
        )

    def refund_request(self) -> Triage:
        """PenguinMails: "Refunds are approved for technical errors or within 7 days of
        accidental renewal"; eligible and within limits: refund, confirm, close. Otherwise the
        Support Lead (24h) decides."""
        candidates = [c for c in self.facts.charges if _refundable(c)]
        chosen = _named_or_latest(candidates, self.facts.amounts_mentioned)
        if chosen is None:
            return self.escalate_with_ack(
                EscalationTarget.SUPPORT_LEAD,
                "No refundable charge on the account matches the request: a Support Lead "
                "reviews it.",
            )
        decision = self.judge(chosen, chosen.refundable, RefundReason.REQUESTED_BY_CUSTOMER)
        reason = f"Refund asked for {chosen.id} ({chosen.amount}, {chosen.created:%d %b %Y})."
        steps = self.refund_steps(
            f"requested-refund:{chosen.id}",
            chosen,
            chosen.refundable,
            RefundReason.REQUESTED_BY_CUSTOMER,
            decision,
        )
        return self.refund_or_escalate(
            f"Refund {chosen.refundable} on {chosen.id}", reason, steps, decision
        )

    def to_account_manager(self) -> Triage:
        """Servinix: unused modules need the account manager's approval; goodwill credit for
        general dissatisfaction is theirs to decide."""
        what = (
            "A refund for an unused module needs the account manager's approval."
            if self.facts.category is Category.UNUSED_MODULE
            else "A goodwill credit for general dissatisfaction is the account manager's decision."
        )
        return self.escalate_with_ack(
            EscalationTarget.ACCOUNT_MANAGER,
            what,
            "We have passed it to your account manager, who will get back to you.",
        )

    def card_not_recognized(self) -> Triage:
        """Servinix: "Treat as potential fraud. Immediately flag the account and escalate to the
        Security team." Never a refund here: Security decides."""
        why = (
            "The customer does not recognise a charge: treated as potential fraud. No refund "
            "until Security has looked."
        )
        ack = self.reply(
            "ack", "card_not_recognized_acknowledgement", "About the charge you don't recognise"
        )
        if self.customer is None:
            steps = [self.escalate(EscalationTarget.SECURITY, why), ack]
            reason = f"{why} No Stripe customer to flag. Escalated to Security."
            return self.plan("Escalate to Security", reason, steps, next_if_runs=Next.AGENT)
        flag = StepDraft(
            ActionKind.FLAG_FRAUD,
            self.key("flag"),
            customer_id=self.customer.id,
            params={"text": why},
        )
        security = sla_text(EscalationTarget.SECURITY, self.config)
        reason = f"{why} Flagged in Stripe and escalated to {security}."
        return self.plan("Flag the customer", reason, [flag, ack], next_if_runs=Next.AGENT)

    def payment_failed(self) -> Triage:
        """PenguinMails: find the decline reason, send the update-payment-method link; Stripe
        retries on its own."""
        failed = [c for c in self.facts.charges if c.status == "failed"]
        if not failed:
            return self.to_agent(
                "No failed payment on the account: an agent checks with the customer.",
            )
        latest = max(failed, key=lambda c: c.created)
        guidance = guidance_for(latest.decline_code, latest.failure_code, latest.advice_code)
        retries = retry_schedule(self.config) if guidance.stripe_retries else ""
        step = self.billing_link_or_reply(
            "payment-failed",
            f"payment_failed_{guidance.bucket}",
            "Your payment did not go through",
            amount=str(latest.amount),
            date=f"{latest.created:%d %b %Y}",
            advice=guidance.customer_advice,
            retries=guidance.stripe_retries,
            retry_attempts=self.config.smart_retry_attempts,
            retry_days=self.config.smart_retry_days,
        )
        reason = (
            f"Latest failed payment {latest.id} ({latest.amount}, {latest.created:%d %b %Y}): "
            f"{guidance.code} — {guidance.meaning} {retries}".strip()
        )
        return self.plan("Email the payment guidance", reason, [step])

    def cancellation_request(self) -> Triage:
        """PenguinMails: "Always encourage self-service"; for a customer locked out of the
        portal, cancel at period end ("Preferred") and confirm."""
        live = [s for s in self.facts.subscriptions if s.is_live]
        if all(s.cancel_at_period_end for s in live):  # none live, or all already ending
            ending = next((s for s in live if s.cancel_at), None)
            when = f" on {ending.cancel_at:%d %b %Y}" if ending and ending.cancel_at else ""
            steps = [
                self.reply(
                    "confirm",
                    "cancellation_confirmation",
                    "Your subscription is cancelled",
                    plan=ending.plan_name if ending else None,
                    ends=f"{ending.cancel_at:%d %b %Y}" if ending and ending.cancel_at else None,
                    already=True,
                ),
                self.close(RESOLUTION_ALREADY_CANCELLED),
            ]
            return self.plan(
                "Confirm the cancellation",
                f"Nothing left to cancel: no subscription bills again{when}.",
                steps,
            )
        if not self.facts.locked_out:
            step = self.billing_link_or_reply(
                "self-service", "self_service", "How to cancel your subscription"
            )
            return self.plan(
                "Point to self-service",
                "Self-service first: the customer gets the billing portal (Manage Subscription).",
                [step, self.close(RESOLUTION_SELF_SERVICE)],
            )
        if len(live) > 1:
            return self.to_agent(
                f"The customer cannot reach the portal and has {len(live)} live subscriptions: "
                "an agent asks which to cancel."
            )
        sub = live[0]
        ends = f"{sub.current_period_end:%d %b %Y}" if sub.current_period_end else None
        reason = (
            f"The customer cannot reach the portal: {sub.id} ({sub.plan_name or 'subscription'}) "
            f"is cancelled at period end{f' ({ends})' if ends else ''}, the guide's preferred way."
        )
        if self.facts.wants_immediate:
            reason += (
                " They asked for it to stop at once: cancelling immediately is an agent's "
                "decision, so automation cancels at period end."
            )
        cancel = StepDraft(
            ActionKind.CANCEL_SUBSCRIPTION,
            self.key("cancel"),
            customer_id=self.customer.id if self.customer else None,
            params={"subscription_id": sub.id, "at_period_end": True},
        )
        steps = [
            cancel,
            self.reply(
                "confirm",
                "cancellation_confirmation",
                "Your subscription is cancelled",
                plan=sub.plan_name,
                ends=ends,
                already=False,
            ),
            self.close(RESOLUTION_CANCELLED),
        ]
        return self.plan(f"Cancel {sub.id} at period end", reason, steps)

    def other(self) -> Triage:
        """A person answers; the customer is acknowledged."""
        return self.to_agent("Not a billing dispute the playbooks automate: a person answers.")


def _refundable(charge: Charge) -> bool:
    return (
        charge.status == "succeeded"
        and charge.captured
        and not charge.disputed
        and charge.refundable.amount > 0
    )


def _named_or_latest(charges: Sequence[Charge], amounts: Sequence[Money]) -> Charge | None:
    """The charge whose amount the email names (the latest such), else the latest one."""
    if not charges:
        return None
    named = [c for c in charges if c.amount in amounts]
    return max(named or charges, key=lambda c: c.created)


def _cancellation(subscriptions: Sequence[Subscription]) -> tuple[Subscription, datetime] | None:
    """The confirmed cancellation Stripe records and when it took effect: a set end
    (``cancel_at``, the period end for a cancel-at-period-end) or the moment it was cancelled."""
    found = []
    for sub in subscriptions:
        if sub.canceled_at is None and sub.cancel_at is None:
            continue
        effective = sub.cancel_at or sub.canceled_at
        if sub.status == "canceled" and sub.canceled_at and sub.cancel_at:
            effective = min(sub.cancel_at, sub.canceled_at)
        assert effective is not None
        found.append((sub, effective))
    return min(found, key=lambda f: f[1]) if found else None


def _hold_beside_charge(charges: Sequence[Charge], window: timedelta) -> Charge | None:
    """An uncaptured hold next to a charge of the same amount: what looks like a double."""
    holds = [c for c in charges if c.is_hold]
    for hold in holds:
        for charge in charges:
            if (
                charge.id != hold.id
                and charge.captured
                and charge.amount == hold.amount
                and abs(charge.created - hold.created) <= window
            ):
                return hold
    return holds[0] if holds else None


def _refunded_twin(charges: Sequence[Charge], window: timedelta) -> Charge | None:
    """A charge refunded in full beside another of the same amount: a duplicate settled."""
    for charge in charges:
        if charge.captured and charge.amount_refunded >= charge.amount.amount > 0:
            for other in charges:
                if (
                    other.id != charge.id
                    and other.amount == charge.amount
                    and abs(other.created - charge.created) <= window
                ):
                    return charge
    return None


_PLAYBOOKS: dict[Category, Callable[[_Playbook], Triage]] = {
    Category.DUPLICATE_CHARGE: _Playbook.duplicate_charge,
    Category.CHARGE_AFTER_CANCELLATION: _Playbook.charge_after_cancellation,
    Category.UNUSED_MODULE: _Playbook.to_account_manager,
    Category.GENERAL_DISSATISFACTION: _Playbook.to_account_manager,
    Category.CARD_NOT_RECOGNIZED: _Playbook.card_not_recognized,
    Category.PAYMENT_FAILED: _Playbook.payment_failed,
    Category.CANCELLATION_REQUEST: _Playbook.cancellation_request,
    Category.REFUND_REQUEST: _Playbook.refund_request,
    Category.AUTHORIZATION_HOLD: _Playbook.authorization_hold,
    Category.OTHER: _Playbook.other,
}
# Categories whose playbook works without a Stripe customer.
_WITHOUT_CUSTOMER = frozenset(
    [
        Category.CARD_NOT_RECOGNIZED,
        Category.UNUSED_MODULE,
        Category.GENERAL_DISSATISFACTION,
        Category.OTHER,
    ]
)
