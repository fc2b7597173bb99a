"""The action core: one module per action kind behind one registry, and the use cases every
path shares (propose, confirm, start a suggested plan, approve, record)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy.orm import Session

from core.actions.base import Ask, Asking, Proposal, Requested
from core.actions.registry import action_type, describe
from core.actions.workflow import (
    MAIL_AGENT,
    action_by_key,
    advance_plan,
    decide,
    dismiss_suggested,
    request_plan,
    start_suggested,
)
from core.billing_context import BillingContext
from core.db.models import Action, Agent, Plan
from core.domain import ActionKind, ActionStatus, Money, Role
from core.errors import InvalidInput
from core.plans import PlanDraft, StepDraft, plan_title
from core.policy import Asker, PolicyConfig

__all__ = [
    "MAIL_AGENT",
    "Proposal",
    "Requested",
    "action_by_key",
    "action_type",
    "advance_plan",
    "confirm",
    "decide",
    "describe",
    "dismiss_suggested",
    "preview_suggested",
    "propose",
    "start_plan",
]


def _ask(
    context: BillingContext, agent: Agent, asker: Asker, config: PolicyConfig, now: datetime
) -> Ask:
    return Ask(context, Asking(asker=asker, requester_role=Role(agent.role)), config, now)


def propose(
    kind_name: str,
    context: BillingContext,
    form: Mapping[str, str],
    agent: Agent,
    config: PolicyConfig,
    now: datetime,
) -> Proposal:
    """The sidebar's preview of any action, with policy's answer for this agent."""
    return action_type(kind_name).propose(_ask(context, agent, Asker.PREVIEW, config, now), form)


def confirm(
    session: Session,
    context: BillingContext,
    agent: Agent,
    requested: Requested,
    title: str,
    config: PolicyConfig,
    now: datetime,
) -> tuple[Plan, Action | None]:
    """Record a confirmed request as a plan (once per key), judged again on fresh data: the
    charge may have been disputed or refunded, or the identity withdrawn, since the preview.
    Returns the plan and the step due to run, if one is."""
    spec = action_type(requested.kind)
    decision = spec.judge(_ask(context, agent, Asker.CONFIRMATION, config, now), requested)
    customer = context.customer.id if context.customer else None
    main = StepDraft(
        requested.kind,
        requested.key,
        decision=decision,
        customer_id=customer,
        charge_id=requested.charge_id,
        amount=requested.amount,
        reason=requested.reason,
        params=_with_warning(requested.params, context),
    )
    follow_ups = spec.follow_ups(requested, context)
    draft = PlanDraft(
        key=requested.key,
        title=plan_title(title, follow_ups),
        reason=decision.reason,
        steps=(main, *follow_ups),
    )
    plan, created = request_plan(
        session,
        ticket_id=context.ticket.id,
        draft=draft,
        requested_by=agent.email,
        requester_role=Role(agent.role),
    )
    return plan, (_due(plan) if created else None)


def _with_warning(params: Mapping[str, object], context: BillingContext) -> dict[str, object]:
    """The step's inputs, marked when the customer was chosen for a ticket from someone else."""
    warning = context.identity.warning if context.identity else None
    return {**params, "identity_warning": warning} if warning else dict(params)


def _due(plan: Plan) -> Action | None:
    return next((s for s in plan.steps if s.status == ActionStatus.QUEUED), None)


def _suggested_request(plan: Plan) -> Requested:
    first = plan.steps[0]
    amount = Money(first.amount, first.currency) if first.amount and first.currency else None
    return Requested(
        ActionKind(first.kind),
        first.idempotency_key,
        charge_id=first.stripe_charge_id,
        amount=amount,
        reason=first.reason,
        params=dict(first.params or {}),
    )


def preview_suggested(
    context: BillingContext, plan: Plan, agent: Agent, config: PolicyConfig, now: datetime
) -> Proposal:
    """What starting a suggested plan would do, with policy's answer for this agent."""
    if plan.ticket_id != context.ticket.id:
        raise InvalidInput("That plan belongs to another ticket.")
    requested = _suggested_request(plan)
    ask = _ask(context, agent, Asker.PREVIEW, config, now)
    decision = action_type(requested.kind).judge(ask, requested)
    return Proposal(requested, plan.title, describe(plan.steps[0]), decision)


def start_plan(
    session: Session,
    context: BillingContext,
    plan: Plan,
    agent: Agent,
    config: PolicyConfig,
    now: datetime,
) -> Action | None:
    """Start a suggested plan as this agent's request, judged again on fresh data."""
    if plan.ticket_id != context.ticket.id:
        raise InvalidInput("That plan belongs to another ticket.")
    requested = _suggested_request(plan)
    ask = _ask(context, agent, Asker.CONFIRMATION, config, now)
    return start_suggested(session, plan, agent, action_type(requested.kind).judge(ask, requested))
