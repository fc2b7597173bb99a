"""What to do about a dispute (chargeback): accept or challenge it. Pure.

PenguinMails guide: "Accept: If fraud is suspected or amount is small (<$20). Challenge: If we
have proof of usage. Submit evidence (Logs, ToS acceptance) via Stripe."
"""

from __future__ import annotations

from dataclasses import dataclass

from core.domain import Dispute
from core.policy.config import PolicyConfig

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
    """The playbook's recommendation for an open dispute."""
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
