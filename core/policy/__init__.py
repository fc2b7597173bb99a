"""Pure policy: refunds, approvals and duplicates, over a PolicyConfig. No I/O."""

from core.policy.config import Mode, PolicyConfig, load_policy
from core.policy.duplicates import DuplicatePair, find_duplicate
from core.policy.refunds import Decision, Verdict, evaluate_refund

__all__ = [
    "Decision",
    "DuplicatePair",
    "Mode",
    "PolicyConfig",
    "Verdict",
    "evaluate_refund",
    "find_duplicate",
    "load_policy",
]
