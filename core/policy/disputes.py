"""What to do about a dispute (chargeback): accept or challenge it, and who may act on it. Pure.

PenguinMails guide: "Accept: If fraud is suspected or amount is small (<$20). Challenge: If we
have proof of usage. Submit evidence (Logs, ToS acceptance) via Stripe."
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.domain import ActionKind, Dispute, Role
from core.policy.approvals import satisfies
from core.policy.config import PolicyConfig
from core.policy.decisions import Decision, Verdict

# Stripe's dispute reasons that say the cardholder did not make the payment.
_FRAUD_REASONS = frozenset(["fraudulent", "unrecognized"])


@dataclass(frozen=True)
class DisputeAdvice:
    """Accept or challenge, and why, for Finance."""

    accept: bool
    reason: str


def dispute_advice(
    dispute: Dispute, config: PolicyConfig, *, fraud_suspected: bool = False
) -> DisputeAdvice:
    """The playbook's recommendation for an open dispute, before any evidence is read."""
    below = config.dispute_accept_cap(dispute.amount.currency)
    if fraud_suspected or dispute.reason in _FRAUD_REASONS:
        return DisputeAdvice(
            True,
            "Accept: fraud is suspected (the playbook accepts those rather than challenge).",
        )
    if below is not None and dispute.amount.amount < below.amount:
        return DisputeAdvice(True, f"Accept: {dispute.amount} is under {below}.")
    return DisputeAdvice(
        False,
        "Challenge with proof of use: sign-ins (audit trail), email volume, ToS acceptance.",
    )


class Response(StrEnum):
    """What the playbook recommends Finance does with a dispute."""

    ACCEPT = "accept"
    CHALLENGE = "challenge"
    GATHER = "gather"  # no proof of use yet: say what is missing before deciding


@dataclass(frozen=True)
class ProofOfUse:
    """What the product's records prove about the customer's use after the charge."""

    source_read: bool  # a usage source was configured and answered
    logins_after_charge: int = 0
    emails_sent: int | None = None
    terms_accepted: bool = False
    problem: str | None = None  # why the source could not be read, if it could not


@dataclass(frozen=True)
class Recommendation:
    """Accept, challenge or gather more, with each reason as a plain sentence."""

    response: Response
    reasons: tuple[str, ...]

    @property
    def headline(self) -> str:
        """The recommendation in a few words."""
        return {
            Response.ACCEPT: "Recommended: accept",
            Response.CHALLENGE: "Recommended: challenge with the evidence",
            Response.GATHER: "Not enough evidence yet",
        }[self.response]


def recommend(
    dispute: Dispute, config: PolicyConfig, proof: ProofOfUse, *, fraud_flagged: bool = False
) -> Recommendation:
    """The playbook's answer for a dispute once the evidence is read: fraud or a small amount
    is accepted, proof of use is challenged, anything else says what is missing."""
    if not dispute.is_open:
        return Recommendation(
            Response.GATHER, (f"Stripe has decided this dispute ({dispute.status}).",)
        )
    reasons: list[str] = []
    if dispute.reason in _FRAUD_REASONS:
        reasons.append(
            f"The bank's reason is {dispute.reason.replace('_', ' ')}: the cardholder says they "
            "did not make this payment, and the playbook accepts suspected fraud."
        )
    if fraud_flagged:
        reasons.append("We flagged this customer as possible fraud in Stripe.")
    cap = config.dispute_accept_cap(dispute.amount.currency)
    if cap is not None and dispute.amount.amount < cap.amount:
        reasons.append(
            f"{dispute.amount} is under the {cap} threshold: fighting it costs more than it wins."
        )
    if reasons:
        return Recommendation(Response.ACCEPT, tuple(reasons))
    used = []
    if proof.logins_after_charge:
        used.append(f"the customer signed in {proof.logins_after_charge} time(s) after the charge")
    if proof.emails_sent:
        used.append(f"they sent {proof.emails_sent:,} emails in the period")
    if used:
        sentences = [f"Proof of use: {' and '.join(used)}."]
        if proof.terms_accepted:
            sentences.append("They accepted the terms of service.")
        else:
            sentences.append("No terms-of-service acceptance is on record; the use still counts.")
        return Recommendation(Response.CHALLENGE, tuple(sentences))
    missing = []
    if not proof.source_read:
        missing.append(proof.problem or "No usage source is configured (USAGE_SOURCE).")
    else:
        missing.append("No sign-in after the charge is on record.")
        missing.append("No email volume is on record for the period.")
    if not proof.terms_accepted:
        missing.append("No terms-of-service acceptance is on record.")
    missing.append("Without proof of use a challenge is unlikely to win: find it, or accept.")
    return Recommendation(Response.GATHER, tuple(missing))


# Who may answer a dispute in Stripe: Finance (and admins, who stand in for every role).
DISPUTE_ROLE = Role.FINANCE
_DISPUTE_ACTIONS = frozenset([ActionKind.SUBMIT_DISPUTE_EVIDENCE, ActionKind.ACCEPT_DISPUTE])


def judge_dispute_action(
    kind: ActionKind,
    requester_role: Role | None,
    dispute: Dispute | None,
    *,
    on_this_customer: bool = True,
    evidence_as_reviewed: bool = True,
) -> Decision:
    """May this person submit evidence for, or accept, this dispute now. The worker also says
    whether the dispute is still on the step's customer and the evidence still what Finance
    reviewed."""
    assert kind in _DISPUTE_ACTIONS
    if requester_role is None or not satisfies(requester_role, DISPUTE_ROLE):
        who = requester_role.label if requester_role else "Automation"
        return Decision(
            Verdict.DENY, f"Only Finance or an admin answers a dispute; your role is {who}."
        )
    if dispute is None or not on_this_customer:
        return Decision(Verdict.DENY, "That dispute is not on this customer's charges.")
    if not evidence_as_reviewed:
        return Decision(
            Verdict.DENY, "The evidence changed since it was reviewed: review it again."
        )
    # needs_response, warning_needs_response (an inquiry) and appeal_needs_response.
    if not dispute.status.endswith("needs_response"):
        return Decision(
            Verdict.DENY,
            f"Dispute {dispute.id} is {dispute.status.replace('_', ' ')}: Stripe takes no "
            "response to it now.",
        )
    if kind is ActionKind.ACCEPT_DISPUTE:
        what = "inquiry" if dispute.is_inquiry else "dispute"
        return Decision(
            Verdict.ALLOW,
            f"Accepting closes the {what} as lost in Stripe: the {dispute.amount} stays with "
            "the cardholder and this cannot be undone.",
        )
    if dispute.is_inquiry:
        return Decision(
            Verdict.ALLOW,
            "This is an inquiry, not yet a chargeback: evidence answers it (a full refund "
            "would also settle it without a dispute fee). Stripe usually takes one submission.",
        )
    return Decision(
        Verdict.ALLOW,
        "Stripe usually takes one submission: the evidence is final once sent.",
    )
