"""Pure policy over a PolicyConfig: refunds, duplicates, declines, proration, escalations.

No I/O.
"""

from core.policy.config import Mode, PolicyConfig, load_policy
from core.policy.declines import DeclineBucket, DeclineGuidance, guidance_for, retry_schedule
from core.policy.duplicates import DuplicatePair, find_duplicate
from core.policy.escalations import escalation_route, sla_due, sla_text
from core.policy.proration import ProratedRefund, prorated_refund
from core.policy.refunds import Decision, Verdict, evaluate_refund

__all__ = [
    "Decision",
    "DeclineBucket",
    "DeclineGuidance",
    "DuplicatePair",
    "Mode",
    "PolicyConfig",
    "ProratedRefund",
    "Verdict",
    "escalation_route",
    "evaluate_refund",
    "find_duplicate",
    "guidance_for",
    "load_policy",
    "prorated_refund",
    "retry_schedule",
    "sla_due",
    "sla_text",
]
