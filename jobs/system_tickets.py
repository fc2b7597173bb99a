"""Escalations no email asked for (a Stripe sync error, a mass payment failure): a ticket of
their own in the built-in helpdesk, with a one-step plan that escalates it, like any playbook's.

The escalation itself is the ordinary ESCALATE step (core.actions.escalate): the team's queue,
its SLA from policy, the team's notice, the SLA check's re-escalation.
"""

from __future__ import annotations

from sqlalchemy import select

from core.actions.workflow import request_plan
from core.db import session_scope
from core.db.models import Plan
from core.domain import ActionKind, EscalationTarget
from core.helpdesks import LocalHelpdesk
from core.plans import PlanDraft, StepDraft, escalation_params
from core.policy import judge_automatic
from jobs import runtime
from jobs.plans import queue_due_steps

ACTOR = "billing-desk"
SYSTEM_REQUESTER = "billing-desk@localhost"


def open_system_escalation(
    rt: runtime.Runtime,
    *,
    key: str,
    target: EscalationTarget,
    subject: str,
    details: str,
    customer_id: str | None = None,
) -> int:
    """Open a ticket for ``subject`` and escalate it to ``target`` with ``details``, once per
    ``key`` (a second call returns the first ticket); returns the ticket's ID."""
    plan_key = f"system:{key}"
    with session_scope(rt.session_factory) as session:
        existing = session.scalar(select(Plan.ticket_id).where(Plan.key == plan_key))
        if existing is not None:
            return existing
        helpdesk = LocalHelpdesk(session)
        requester = rt.settings.team_email(str(target)) or SYSTEM_REQUESTER
        ticket_id = helpdesk.open_ticket(
            subject=subject, requester_email=requester, requester_name=target.label
        )
        helpdesk.add_internal_note(ticket_id, details, author=ACTOR)
        step = StepDraft(
            ActionKind.ESCALATE,
            f"{plan_key}:escalate",
            decision=judge_automatic(ActionKind.ESCALATE, rt.policy),
            customer_id=customer_id,
            params=escalation_params(target, details),
        )
        request_plan(
            session,
            ticket_id=ticket_id,
            draft=PlanDraft(
                key=plan_key,
                title=f"Escalate to {target.label}",
                reason=subject,
                steps=(step,),
            ),
            requested_by=ACTOR,
            requester_role=None,
        )
    queue_due_steps(rt, ticket_id)
    return ticket_id
