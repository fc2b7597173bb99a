"""Judgements for every action but refunds (core.policy.refunds): cancellations, comps and free
time, billing links, fraud flags, escalations, notes and a plan's own steps. Pure.

Free time is money too: a 100%-off coupon or a later trial end is judged against the size of
the grant and how many the customer had in the policy's window, however they are asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.domain import ActionKind, Role
from core.policy.approvals import Approval, outstanding
from core.policy.config import PolicyConfig
from core.policy.decisions import Decision, Verdict
from core.policy.refunds import UNVERIFIED, Asker

# Changing what the customer is billed, or writing to them about billing, waits for identity.
_NEEDS_IDENTITY = frozenset(
    [
        ActionKind.CANCEL_SUBSCRIPTION,
        ActionKind.COMP_COUPON,
        ActionKind.EXTEND_TRIAL,
        ActionKind.SEND_UPDATE_CARD_LINK,
    ]
)
_FREE_TIME = frozenset([ActionKind.COMP_COUPON, ActionKind.EXTEND_TRIAL])


@dataclass(frozen=True)
class ActionQuestion:
    """Everything policy needs to judge an action other than a refund."""

    kind: ActionKind
    asker: Asker
    requester_role: Role | None  # None: the mail agent, or a plan's own follow-up step
    identity_confirmed: bool = False
    identity_conflict: str | None = None
    customer_email: str | None = None  # the Stripe customer's own address
    months: int | None = None  # a comp: months free; None is the next invoice only
    days: int | None = None  # a trial extension: days added
    grants_in_window: int = 0  # the customer's other comps and trial extensions in the window
    approvals: tuple[Approval, ...] = field(default_factory=tuple)


def judge_automatic(kind: ActionKind, config: PolicyConfig) -> Decision:
    """Policy's answer for a step no person asked for and that needs no verified customer
    (an escalation, a note, an acknowledgement): the mail agent's or a Stripe event's."""
    return judge_action(
        ActionQuestion(kind=kind, asker=Asker.MAIL_AGENT, requester_role=None), config
    )


def judge_action(question: ActionQuestion, config: PolicyConfig) -> Decision:
    """May this action happen now, alone or with whose approval."""
    kind = question.kind
    if kind in _NEEDS_IDENTITY:
        if question.identity_conflict:
            return Decision(
                Verdict.DENY,
                f"The ticket and Stripe disagree about who this is ({question.identity_conflict})"
                ": resolve that first.",
            )
        if not question.identity_confirmed:
            return Decision(Verdict.DENY, UNVERIFIED)
    if kind is ActionKind.SEND_UPDATE_CARD_LINK and not question.customer_email:
        return Decision(
            Verdict.DENY,
            "The Stripe customer has no email address: a billing link only goes to the "
            "customer's own address, never one the ticket alone gives.",
        )
    if kind in _FREE_TIME:
        return _judge_free_time(question, config)
    return Decision(Verdict.ALLOW, "Allowed.")


def _judge_free_time(q: ActionQuestion, config: PolicyConfig) -> Decision:
    reasons: list[str] = []
    if q.kind is ActionKind.COMP_COUPON and (q.months or 1) > config.comp_max_months:
        reasons.append(
            f"A comp of {q.months} months is more than the {config.comp_max_months} an agent "
            "may give alone."
        )
    if q.kind is ActionKind.EXTEND_TRIAL and (q.days or 0) > config.trial_extension_max_days:
        reasons.append(
            f"{q.days} free days is more than the {config.trial_extension_max_days} an agent "
            "may give alone."
        )
    if q.grants_in_window >= config.free_time_grants_per_customer:
        reasons.append(
            f"This customer already had {q.grants_in_window} comp(s) or free time in the last "
            f"{config.free_time_window_days} days (an agent may give "
            f"{config.free_time_grants_per_customer})."
        )
    if not reasons:
        return Decision(Verdict.ALLOW, "Within the comp and free-time limits.")
    missing = outstanding([Role.SUPPORT_LEAD], q.requester_role, q.approvals)
    if missing:
        return Decision(
            Verdict.NEEDS_APPROVAL, " ".join([*reasons, "A Support Lead approves."]), missing[0]
        )
    approved = [a.label() for a in q.approvals]
    if approved:
        who = f"Approved by {', '.join(approved)}."
    else:
        assert q.requester_role is not None  # outstanding() found the requester's role enough
        who = f"Your role ({q.requester_role.label}) allows it."
    return Decision(Verdict.ALLOW, " ".join([*reasons, who]))
