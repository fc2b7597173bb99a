"""Pure policy over a PolicyConfig: the one refund judgement, the other actions' judgements,
approvals, duplicates, declines, proration, disputes and escalations.

No I/O. Only this package builds a Decision; everything else asks it.
"""

from core.policy.actions import ActionQuestion, judge_action, judge_automatic
from core.policy.approvals import Approval, may_decide, outstanding, satisfies
from core.policy.config import Mode, PolicyConfig, load_policy
from core.policy.decisions import Decision, Verdict
from core.policy.declines import DeclineBucket, DeclineGuidance, guidance_for, retry_schedule
from core.policy.disputes import DisputeAdvice, dispute_advice
from core.policy.duplicates import DuplicatePair, duplicate_pairs, find_duplicate
from core.policy.escalations import escalation_route, sla_due, sla_text
from core.policy.proration import ProratedRefund, period_end_after, prorated_refund
from core.policy.refunds import Asker, RefundQuestion, judge_refund

__all__ = [
    "ActionQuestion",
    "Approval",
    "Asker",
    "Decision",
    "DeclineBucket",
    "DeclineGuidance",
    "DisputeAdvice",
    "DuplicatePair",
    "Mode",
    "PolicyConfig",
    "ProratedRefund",
    "RefundQuestion",
    "Verdict",
    "dispute_advice",
    "duplicate_pairs",
    "escalation_route",
    "find_duplicate",
    "guidance_for",
    "judge_action",
    "judge_automatic",
    "judge_refund",
    "load_policy",
    "may_decide",
    "outstanding",
    "period_end_after",
    "prorated_refund",
    "retry_schedule",
    "satisfies",
    "sla_due",
    "sla_text",
]
