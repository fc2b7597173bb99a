"""Refund policy: may this refund happen, and who must approve it. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.domain import Charge, Money, Role
from core.policy.config import PolicyConfig


class Verdict(StrEnum):
    """The three answers policy gives."""

    ALLOW = "allow"
    NEEDS_APPROVAL = "needs_approval"
    DENY = "deny"


@dataclass(frozen=True)
class Decision:
    """A verdict and the reason, written for the agent who will read it."""

    verdict: Verdict
    reason: str
    # Who must approve, when the verdict is NEEDS_APPROVAL, and who after them.
    approval_role: Role | None = None
    then: tuple[Role, ...] = ()

    @property
    def allowed(self) -> bool:
        """True when the refund may go ahead without anyone else."""
        return self.verdict is Verdict.ALLOW


def evaluate_refund(charge: Charge, amount: Money, config: PolicyConfig) -> Decision:
    """Check a refund of ``amount`` on ``charge`` against the playbooks' rules."""
    if amount.currency != charge.amount.currency:
        return Decision(Verdict.DENY, "The refund currency differs from the charge's.")
    if amount.amount <= 0:
        return Decision(Verdict.DENY, "A refund must be a positive amount.")
    if charge.disputed:
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
    threshold = config.approval_threshold(amount.currency)
    if threshold is None:
        return Decision(
            Verdict.NEEDS_APPROVAL,
            f"No approval threshold is set for {amount.currency.upper()}: a Support Lead decides.",
            Role.SUPPORT_LEAD,
        )
    if amount.amount > threshold.amount:
        return Decision(
            Verdict.NEEDS_APPROVAL,
            f"Refunds over {threshold} need a Support Lead's approval.",
            Role.SUPPORT_LEAD,
        )
    return Decision(Verdict.ALLOW, f"Within the {threshold} refund limit.")
