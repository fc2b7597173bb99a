"""The one refund judgement: may this refund happen now, and with whose approval. Pure.

Every path asks here, saying who asks: an agent's preview, their confirmation, the worker just
before Stripe is called, and the mail agent deciding what an email gets. Approvals follow the
money, not the ticket an agent stands on: the question carries the charge, what it and the
customer have had refunded, and what every open ticket of that customer claims.

The order matters: hard refusals (identity, disputes, more than is left) come before approvals,
so nobody is sent to fetch a lead's approval for something that cannot happen anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from core.domain import Category, Charge, Dispute, Money, RefundReason, Role
from core.policy.approvals import Approval, outstanding, satisfies
from core.policy.config import PolicyConfig
from core.policy.decisions import Decision, Verdict


class Asker(StrEnum):
    """Who wants the answer, and so what it is used for."""

    PREVIEW = "preview"  # an agent looking at what a refund would take
    CONFIRMATION = "confirmation"  # an agent confirming it: the request is recorded
    WORKER = "worker"  # just before Stripe is called: a refusal stops it, a new need waits
    MAIL_AGENT = "mail_agent"  # automation: anything but ALLOW goes to an agent


UNVERIFIED = (
    "The customer was matched by email alone: confirm their identity (account email, "
    "organisation, tenant ID) before any money action."
)
SECURITY_ROLES = frozenset([Role.SECURITY, Role.ADMIN])


@dataclass(frozen=True)
class RefundQuestion:
    """Everything policy needs to judge one refund; every fact comes from our own records or
    from Stripe, never from the request that asks."""

    asker: Asker
    requester_role: Role | None  # None: the mail agent, asking for itself
    charge: Charge
    amount: Money
    reason: RefundReason
    now: datetime
    disputes: Sequence[Dispute] = ()
    # Identity: an agent confirmed the checklist (or the helpdesk named the customer); the
    # first disagreement between the ticket and Stripe; for automation, whether the sender's
    # address belongs to this customer and to no other.
    identity_confirmed: bool = False
    identity_conflict: str | None = None
    sender_matched: bool = False
    # What the customer's open tickets claim, whichever ticket the refund is asked on.
    claims: frozenset[Category] = frozenset()
    chargeback_claimed: bool = False
    # Our other refunds (minor units, the charge's currency): not yet issued on this charge;
    # and issued or not, for this customer, within the policy's window.
    in_flight_on_charge: int = 0
    customer_recent: int = 0
    # A prorated refund for time after a confirmed cancellation: a billing error, not a late
    # change of mind, so the refund window does not apply.
    after_cancellation: bool = False
    approvals: tuple[Approval, ...] = field(default_factory=tuple)

    @property
    def automated(self) -> bool:
        """The mail agent asked, directly or (at the worker) when it requested the refund."""
        return self.requester_role is None


def judge_refund(question: RefundQuestion, config: PolicyConfig) -> Decision:
    """The answer for one refund, for whoever asks (see the module's docstring)."""
    refused = _identity_refusal(question) or _reason_refusal(question)
    if refused is not None:
        return refused
    inquiry = _dispute_refusal(question.charge, question.amount, question.disputes)
    if inquiry is not None and inquiry.verdict is Verdict.DENY:
        return inquiry
    refused = _charge_refusal(question)
    if refused is not None:
        return refused
    needs = _approvals_needed(question, config, inquiry)
    missing = outstanding([role for role, _ in needs], question.requester_role, question.approvals)
    reasons = [reason for role, reason in needs if role in missing]
    if missing:
        return Decision(Verdict.NEEDS_APPROVAL, " ".join(reasons), missing[0], missing[1:])
    return Decision(Verdict.ALLOW, _allowed_reason(question, config, needs))


def _identity_refusal(q: RefundQuestion) -> Decision | None:
    if q.identity_conflict:
        return Decision(
            Verdict.DENY,
            f"The ticket and Stripe disagree about who this is ({q.identity_conflict}): no "
            "money moves until that is resolved.",
        )
    if q.automated:
        if not q.sender_matched:
            return Decision(
                Verdict.DENY,
                "The sender's address does not belong to this customer alone: automation "
                "refunds only the customer the email comes from.",
            )
        return None
    if not q.identity_confirmed:
        return Decision(Verdict.DENY, UNVERIFIED)
    return None


def _reason_refusal(q: RefundQuestion) -> Decision | None:
    if q.reason is not RefundReason.FRAUDULENT:
        return None
    if q.automated or q.requester_role not in SECURITY_ROLES:
        return Decision(
            Verdict.DENY,
            "Only Security may refund as fraudulent (it adds the card and email to Stripe's "
            "block lists).",
        )
    return None


def _dispute_refusal(charge: Charge, amount: Money, disputes: Sequence[Dispute]) -> Decision | None:
    """A refusal for an open dispute; for an inquiry a full refund may settle, Finance's need."""
    open_disputes = [d for d in disputes if d.is_open]
    if not open_disputes:
        return None
    dispute = open_disputes[0]
    due = f", evidence due {dispute.evidence_due_by:%d %b %Y}" if dispute.evidence_due_by else ""
    # An inquiry (warning_*) may still be settled by a full refund, with no dispute fee.
    if dispute.is_inquiry and dispute.is_charge_refundable:
        if amount.amount == charge.refundable.amount:
            return Decision(
                Verdict.NEEDS_APPROVAL,
                f"Inquiry {dispute.id} is open{due}: a full refund settles it; Finance decides.",
                Role.FINANCE,
            )
        return Decision(
            Verdict.DENY,
            f"Inquiry {dispute.id} is open{due}: only a full refund can settle it.",
        )
    return Decision(
        Verdict.DENY,
        f"Dispute {dispute.id} ({dispute.reason}, {dispute.status}{due}) is open on this charge: "
        "it cannot be refunded outside the dispute process. Handle it through the dispute "
        "(Finance).",
    )


def _charge_refusal(q: RefundQuestion) -> Decision | None:
    """What the charge itself rules out: nothing taken, nothing left, the wrong currency."""
    charge, amount = q.charge, q.amount
    if amount.currency != charge.amount.currency:
        return Decision(Verdict.DENY, "The refund currency differs from the charge's.")
    if amount.amount <= 0:
        return Decision(Verdict.DENY, "A refund must be a positive amount.")
    # An open inquiry's own "disputed" flag was judged with the disputes just before.
    if charge.disputed and not any(d.is_inquiry and d.is_open for d in q.disputes):
        return Decision(
            Verdict.DENY,
            "This charge is disputed: it cannot be refunded outside the dispute process.",
        )
    if charge.status != "succeeded":
        return Decision(Verdict.DENY, f"The charge has status {charge.status}; nothing was taken.")
    if charge.is_hold:
        return Decision(
            Verdict.DENY,
            "This is an authorization hold, not a charge: release it instead; it drops off "
            "in 5–7 days.",
        )
    if amount.amount > charge.refundable.amount:
        return Decision(
            Verdict.DENY,
            f"Only {charge.refundable} of this charge is left to refund; {amount} was asked.",
        )
    left = charge.refundable.amount - q.in_flight_on_charge
    if q.in_flight_on_charge and amount.amount > left:
        return Decision(
            Verdict.DENY,
            f"Refunds already requested on this charge leave only "
            f"{Money(max(left, 0), amount.currency)} to refund; {amount} was asked.",
        )
    return None


def _approvals_needed(
    q: RefundQuestion, config: PolicyConfig, inquiry: Decision | None
) -> list[tuple[Role, str]]:
    """Every approval the refund needs before anyone's role or approvals count, in the order
    people should give them: one approver never stands in for another role."""
    needs: list[tuple[Role, str]] = []
    if inquiry is not None:
        needs.append((Role.FINANCE, inquiry.reason))
    if q.chargeback_claimed:
        needs.append(
            (
                Role.FINANCE,
                "The customer says they filed a chargeback: a refund as well could pay twice, "
                "and chargebacks go through Stripe's dispute process; Finance decides.",
            )
        )
    if Category.CARD_NOT_RECOGNIZED in q.claims:
        needs.append(
            (
                Role.SECURITY,
                "Card not recognised: treated as possible fraud. No refund until Security "
                "clears it.",
            )
        )
    if Category.UNUSED_MODULE in q.claims:
        needs.append(
            (
                Role.ACCOUNT_MANAGER,
                "Refunds for unused modules need the account manager's approval.",
            )
        )
    elif Category.GENERAL_DISSATISFACTION in q.claims:
        needs.append(
            (
                Role.ACCOUNT_MANAGER,
                "A dissatisfied customer's refund is a goodwill credit: the account manager "
                "decides.",
            )
        )
    lead = _lead_reasons(q, config)
    if lead:
        needs.append((Role.SUPPORT_LEAD, " ".join(lead)))
    return needs


def _lead_reasons(q: RefundQuestion, config: PolicyConfig) -> list[str]:
    """Why a Support Lead must approve, if they must: the limits, however a refund is split."""
    currency = q.amount.currency
    threshold = config.approval_threshold(currency)
    if threshold is None:
        return [f"No approval threshold is set for {currency.upper()}: a Support Lead decides."]
    reasons: list[str] = []
    on_charge = q.charge.amount_refunded + q.in_flight_on_charge + q.amount.amount
    if q.amount.amount > threshold.amount:
        reasons.append(f"Refunds over {threshold} need a Support Lead's approval.")
    elif on_charge > threshold.amount:
        reasons.append(
            f"With the refunds already made or requested, this charge would have "
            f"{Money(on_charge, currency)} back, over the {threshold} a Support Lead must "
            "approve."
        )
    cap = config.customer_refund_cap(currency)
    customer_total = q.customer_recent + q.amount.amount
    # Said only when the charge's own limit has not already sent it to a lead.
    if not reasons and (cap is None or customer_total > cap.amount):
        limit = f"the {cap}" if cap else "no"
        reasons.append(
            f"This customer would have {Money(customer_total, currency)} refunded in "
            f"{config.customer_refund_window_days} days, over {limit} limit per customer: a "
            "Support Lead approves."
        )
    window = timedelta(days=config.refund_window_days)
    late = q.now - q.charge.created > window
    if q.reason is RefundReason.REQUESTED_BY_CUSTOMER and not q.after_cancellation and late:
        reasons.append(
            f"The charge is more than {config.refund_window_days} days old: refunds are for "
            f"technical errors or within {config.refund_window_days} days of an accidental "
            "renewal, so a Support Lead decides."
        )
    if q.automated:
        auto = config.auto_refund_cap(currency)
        if auto is None or q.amount.amount > auto.amount:
            reasons.append("It is over what the mail agent may refund on its own.")
    return reasons


def _allowed_reason(q: RefundQuestion, config: PolicyConfig, needs: list[tuple[Role, str]]) -> str:
    """Why the refund may go ahead: within the limits, or over them for a role that may."""
    threshold = config.approval_threshold(q.amount.currency)
    within = f"Within the {threshold} refund limit." if threshold else "Within policy."
    approved = [a.label() for a in q.approvals]
    if approved:
        return (
            f"{within} Approved by {', '.join(approved)}."
            if not needs
            else (" ".join(reason for _, reason in needs) + f" Approved by {', '.join(approved)}.")
        )
    covered = [
        (role, reason)
        for role, reason in needs
        if q.requester_role is not None and satisfies(q.requester_role, role)
    ]
    if not covered or q.requester_role is None:
        return within
    reasons = " ".join(reason for _, reason in covered)
    over = any(role is Role.SUPPORT_LEAD for role, _ in covered)
    opening = reasons if over else f"{within} {reasons}"
    return f"{opening} Your role ({q.requester_role.label}) allows it."
