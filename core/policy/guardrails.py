"""Guardrails on what an agent asks for in the sidebar. Pure: every fact arrives as an argument.

The order of checks matters: hard refusals (identity, dispute, over-refund) come before
approvals, so an agent is never sent to fetch a lead's approval for something that cannot
happen anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from core.domain import ActionKind, Category, Charge, Dispute, Money, RefundReason, Role
from core.policy.config import PolicyConfig
from core.policy.refunds import Decision, Verdict, evaluate_refund

# "Only Support Leads and above can issue refunds over $500."
_ABOVE_THRESHOLD = frozenset([Role.SUPPORT_LEAD, Role.FINANCE, Role.ADMIN])
_ACCOUNT_MANAGERS = frozenset([Role.ACCOUNT_MANAGER, Role.ADMIN])
_SECURITY = frozenset([Role.SECURITY, Role.ADMIN])

UNVERIFIED = (
    "The customer was matched by email alone: confirm their identity (account email, "
    "organisation, tenant ID) before any money action."
)


@dataclass(frozen=True)
class RefundAsk:
    """Everything policy needs to judge one refund an agent asks for."""

    charge: Charge
    amount: Money
    reason: RefundReason
    role: Role
    identity_verified: bool
    category: Category | None = None
    disputes: Sequence[Dispute] = ()
    in_flight: int = 0  # minor units already requested on this charge, not yet refunded


def _dispute_refusal(charge: Charge, amount: Money, disputes: Sequence[Dispute]) -> Decision | None:
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


def check_refund(ask: RefundAsk, config: PolicyConfig) -> Decision:
    """May this agent refund this much of this charge now, alone or with whose approval."""
    if not ask.identity_verified:
        return Decision(Verdict.DENY, UNVERIFIED)
    if ask.reason is RefundReason.FRAUDULENT and ask.role not in _SECURITY:
        return Decision(
            Verdict.DENY,
            "Only Security may refund as fraudulent (it adds the card and email to Stripe's "
            "block lists).",
        )
    refused = _dispute_refusal(ask.charge, ask.amount, ask.disputes)
    if refused is not None and refused.verdict is Verdict.DENY:
        return refused
    left = ask.charge.refundable.amount - ask.in_flight
    if ask.in_flight and ask.amount.amount > left:
        return Decision(
            Verdict.DENY,
            f"Refunds already requested on this charge leave only "
            f"{Money(max(left, 0), ask.amount.currency)} to refund; {ask.amount} was asked.",
        )
    # An open inquiry that a full refund may settle was judged just above; the rest of the
    # charge-level rules still apply to it.
    charge = replace(ask.charge, disputed=False) if refused is not None else ask.charge
    base = evaluate_refund(charge, ask.amount, config)
    if base.verdict is Verdict.DENY:
        return base
    # Every approval the refund needs, in the order people should give them: one approver
    # never stands in for another role (an account manager cannot lift the $500 limit).
    needed: list[tuple[Role, str]] = []
    if refused is not None and ask.role not in (Role.FINANCE, Role.ADMIN):
        needed.append((Role.FINANCE, refused.reason))
    if ask.category is Category.CARD_NOT_RECOGNIZED and ask.role not in _SECURITY:
        needed.append(
            (
                Role.SECURITY,
                "Card not recognised: treated as possible fraud. No refund until Security "
                "clears it.",
            )
        )
    if ask.category is Category.UNUSED_MODULE and ask.role not in _ACCOUNT_MANAGERS:
        needed.append(
            (
                Role.ACCOUNT_MANAGER,
                "Refunds for unused modules need the account manager's approval.",
            )
        )
    if base.verdict is Verdict.NEEDS_APPROVAL and ask.role not in _ABOVE_THRESHOLD:
        needed.append((base.approval_role or Role.SUPPORT_LEAD, base.reason))
    if needed:
        return Decision(
            Verdict.NEEDS_APPROVAL,
            " ".join(reason for _, reason in needed),
            needed[0][0],
            then=tuple(role for role, _ in needed[1:]),
        )
    if base.verdict is Verdict.NEEDS_APPROVAL:
        return Decision(Verdict.ALLOW, f"{base.reason} Your role ({ask.role.label}) allows it.")
    return base


def check_account_action(kind: ActionKind, role: Role, identity_verified: bool) -> Decision:
    """Cancel, comp, update-card link, flag, escalate or note: who may, and when."""
    if kind in (ActionKind.COMP_COUPON, ActionKind.EXTEND_TRIAL) and not identity_verified:
        return Decision(Verdict.DENY, UNVERIFIED)
    if kind is ActionKind.CANCEL_SUBSCRIPTION and not identity_verified:
        return Decision(
            Verdict.DENY, "Confirm the customer's identity before changing their subscription."
        )
    if kind is ActionKind.SEND_UPDATE_CARD_LINK and not identity_verified:
        return Decision(
            Verdict.DENY, "Confirm the customer's identity before sending them a billing link."
        )
    return Decision(Verdict.ALLOW, "Allowed.")


def recheck_refund(
    charge: Charge, amount: Money, disputes: Sequence[Dispute], config: PolicyConfig
) -> Decision:
    """The charge-level rules again, just before a worker refunds: the charge may have been
    disputed or refunded since the request (approvals were settled when it was made)."""
    refused = _dispute_refusal(charge, amount, disputes)
    if refused is not None and refused.verdict is Verdict.DENY:
        return refused
    return evaluate_refund(replace(charge, disputed=False) if refused else charge, amount, config)
