"""Request, approve, record: the use cases every path shares, over stored plans and their steps.

A confirmed sidebar action and a playbook's decision both become a ``Plan`` here, once per key.
``advance_plan`` says which step is due; jobs.plans runs it and records the outcome here. Policy
decides; this module only stores what it decided, and who did what, in the audit trail.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import audit, escalations
from core.actions.base import KEYS_SPENT_PARAM, Outcome, approvals_of, params_of
from core.actions.registry import describe
from core.db.models import Action, Agent, Plan, utcnow
from core.domain import ActionStatus, PlanStatus, Role
from core.errors import Forbidden, InvalidInput, PolicyDenied
from core.plans import PlanDraft, StepDraft
from core.policy import Approval, Decision, Verdict, may_decide, satisfies

MAIL_AGENT = "mail-agent"


def _audit(
    session: Session, action: Action, event: str, actor: str | None = None, **detail: Any
) -> None:
    """Audit an event of an action, with the action's ticket and customer."""
    audit.record(
        session,
        actor=actor or action.requested_by,
        event=f"{action.kind}.{event}",
        ticket_id=action.ticket_id,
        action_id=action.id,
        stripe_customer_id=action.stripe_customer_id,
        **detail,
    )


def action_by_key(session: Session, idempotency_key: str) -> Action | None:
    """The action with this idempotency key, if one was ever requested."""
    return session.scalar(select(Action).where(Action.idempotency_key == idempotency_key))


def plan_by_key(session: Session, key: str) -> Plan | None:
    """The plan made for this decision, if one was."""
    return session.scalar(select(Plan).where(Plan.key == key))


def _status_for(decision: Decision | None, suggested: bool = False) -> ActionStatus:
    if suggested:
        return ActionStatus.SUGGESTED
    if decision is None:
        return ActionStatus.PLANNED
    if decision.verdict is Verdict.NEEDS_APPROVAL:
        return ActionStatus.PENDING_APPROVAL
    return ActionStatus.QUEUED


def _step_row(
    step: StepDraft,
    position: int,
    *,
    ticket_id: int | None,
    requested_by: str,
    requester_role: Role | None,
    decision: Decision | None,
    suggested: bool,
) -> Action:
    status = _status_for(decision, suggested)
    params = dict(step.params)
    if status is ActionStatus.PENDING_APPROVAL and decision is not None and decision.then:
        params["approvals_after"] = [str(r) for r in decision.then]
    return Action(
        position=position,
        kind=step.kind,
        status=status,
        idempotency_key=step.key,
        ticket_id=ticket_id,
        requested_by=requested_by,
        requester_role=str(requester_role) if requester_role else None,
        stripe_customer_id=step.customer_id,
        stripe_charge_id=step.charge_id,
        amount=step.amount.amount if step.amount else None,
        currency=step.amount.currency if step.amount else None,
        reason=step.reason,
        policy_reason=decision.reason if decision else None,
        params=params,
        approval_role=decision.approval_role
        if decision is not None and status is ActionStatus.PENDING_APPROVAL
        else None,
    )


def request_plan(
    session: Session,
    *,
    ticket_id: int | None,
    draft: PlanDraft,
    requested_by: str,
    requester_role: Role | None,
) -> tuple[Plan, bool]:
    """Store a plan once per key: its first step queued, or awaiting the approval policy named
    (a suggested plan waits for an agent). Returns the plan and whether this call made it; a
    repeated key (a double click, a retried job) returns the first plan unchanged. A refusal
    raises PolicyDenied with policy's reason, and a step already requested elsewhere (the same
    duplicate charge from a second email) raises InvalidInput: nothing is stored."""
    existing = plan_by_key(session, draft.key)
    if existing is not None:
        return existing, False
    first = draft.steps[0].decision
    if not draft.suggested and first is not None and first.verdict is Verdict.DENY:
        raise PolicyDenied(first.reason)
    for step in draft.steps:
        taken = action_by_key(session, step.key)
        if taken is not None and taken.plan is not None and taken.plan.key == draft.key:
            return taken.plan, False  # stored by another process since our first look
        if taken is not None:
            raise InvalidInput(_already(taken))
    plan = Plan(
        key=draft.key,
        ticket_id=ticket_id,
        source=requested_by,
        title=draft.title,
        reason=draft.reason,
        status=PlanStatus.SUGGESTED if draft.suggested else PlanStatus.RUNNING,
    )
    plan.steps = [
        _step_row(
            step,
            position,
            ticket_id=ticket_id,
            requested_by=requested_by,
            requester_role=requester_role,
            decision=step.decision if position == 0 and not draft.suggested else None,
            suggested=draft.suggested,
        )
        for position, step in enumerate(draft.steps)
    ]
    try:
        with session.begin_nested():
            session.add(plan)
    except IntegrityError:
        # Another process stored the same plan (or one of its steps) between our read and
        # our insert: theirs stands.
        winner = plan_by_key(session, draft.key)
        if winner is not None:
            return winner, False
        taken = next(filter(None, (action_by_key(session, s.key) for s in draft.steps)), None)
        raise InvalidInput(_already(taken) if taken else "This was just requested.") from None
    audit.record(
        session,
        actor=requested_by,
        event="plan.suggested" if draft.suggested else "plan.created",
        ticket_id=ticket_id,
        stripe_customer_id=draft.steps[0].customer_id,
        plan=plan.id,
        summary=plan.title,
        reason=plan.reason,
    )
    for action in plan.steps:
        _audit(
            session,
            action,
            "requested",
            summary=describe(action),
            policy=action.policy_reason,
            status=str(action.status),
        )
    if ticket_id is not None and requester_role is not None:
        # A person of the team the ticket is escalated to works it: the SLA is met.
        escalations.pick_up(session, ticket_id, requested_by, requester_role)
    advance_plan(session, plan)
    return plan, True


def _already(action: Action) -> str:
    where = f" on ticket #{action.ticket_id}" if action.ticket_id else ""
    return f"Already requested{where}: {describe(action)} ({action.status})."


def advance_plan(session: Session, plan: Plan) -> Action | None:
    """Bring the plan's status up to date after any change; return the step now due to run, if
    one is (the caller queues it). A failed or rejected step stops the plan: the steps after it
    are skipped."""
    status = PlanStatus(plan.status)
    if status is PlanStatus.SUGGESTED or status.finished:
        return None
    for step in plan.steps:
        state = ActionStatus(step.status)
        if state in (ActionStatus.SUCCEEDED, ActionStatus.SKIPPED, ActionStatus.SIMULATED):
            continue
        if state in (ActionStatus.FAILED, ActionStatus.REJECTED):
            _stop(session, plan, step)
            return None
        if state is ActionStatus.PENDING_APPROVAL:
            plan.status = PlanStatus.WAITING
            return None
        if state is ActionStatus.PLANNED:
            step.status = ActionStatus.QUEUED
        plan.status = PlanStatus.RUNNING
        return step
    plan.status = PlanStatus.DONE
    plan.finished_at = utcnow()
    audit.record(
        session, actor="billing-desk", event="plan.done", ticket_id=plan.ticket_id, plan=plan.id
    )
    return None


def _stop(session: Session, plan: Plan, at: Action) -> None:
    skipped = []
    for step in plan.steps:
        if (step.position or 0) > (at.position or 0) and not ActionStatus(step.status).finished:
            step.status = ActionStatus.SKIPPED
            step.completed_at = utcnow()
            skipped.append(describe(step))
    plan.status = PlanStatus.STOPPED
    plan.finished_at = utcnow()
    audit.record(
        session,
        actor="billing-desk",
        event="plan.stopped",
        ticket_id=plan.ticket_id,
        plan=plan.id,
        at=describe(at),
        status=str(at.status),
        skipped=skipped,
    )


def start_suggested(
    session: Session, plan: Plan, agent: Agent, decision: Decision
) -> Action | None:
    """An agent starts a plan the mail agent suggested, as their own request: its first step
    takes policy's answer for them. Returns the step due to run, if any."""
    if decision.verdict is Verdict.DENY:
        raise PolicyDenied(decision.reason)
    # Compare and set: two agents clicking at once start it once.
    claimed = session.execute(
        update(Plan)
        .where(Plan.id == plan.id, Plan.status == PlanStatus.SUGGESTED)
        .values(status=PlanStatus.RUNNING, source=agent.email)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidInput("This plan was already started or dropped.")
    session.refresh(plan)
    first = plan.steps[0]
    first.requested_by = agent.email
    first.requester_role = agent.role
    first.policy_reason = decision.reason
    first.status = _status_for(decision)
    if first.status == ActionStatus.PENDING_APPROVAL:
        first.approval_role = decision.approval_role
        first.params = {**params_of(first), "approvals_after": [str(r) for r in decision.then]}
    for step in plan.steps[1:]:
        step.requested_by, step.requester_role = agent.email, agent.role
        step.status = ActionStatus.PLANNED
    if plan.ticket_id is not None:
        escalations.pick_up(session, plan.ticket_id, agent.email, Role(agent.role))
    audit.record(
        session,
        actor=agent.email,
        event="plan.started",
        ticket_id=plan.ticket_id,
        stripe_customer_id=first.stripe_customer_id,
        plan=plan.id,
        summary=plan.title,
        policy=decision.reason,
    )
    return advance_plan(session, plan)


def dismiss_suggested(session: Session, plan: Plan, agent: Agent, why: str) -> None:
    """An agent decides a suggested plan is not what the ticket needs: nothing of it runs."""
    dropped = session.execute(
        update(Plan)
        .where(Plan.id == plan.id, Plan.status == PlanStatus.SUGGESTED)
        .values(status=PlanStatus.STOPPED, finished_at=utcnow())
    )
    if dropped.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidInput("This plan was already started or dropped.")
    session.refresh(plan)
    for step in plan.steps:
        step.status = ActionStatus.SKIPPED
        step.completed_at = utcnow()
    audit.record(
        session,
        actor=agent.email,
        event="plan.dismissed",
        ticket_id=plan.ticket_id,
        plan=plan.id,
        summary=plan.title,
        note=why.strip() or None,
    )


def decide(session: Session, action: Action, approver: Agent, *, approve: bool, note: str) -> None:
    """Someone of the role policy named approves or rejects a waiting step; audited.

    Each approval comes from a different person, never the requester; a step that needs several
    (an account manager, then a Support Lead) waits for each in turn.
    """
    if action.status != ActionStatus.PENDING_APPROVAL:
        raise InvalidInput(f"This action is {action.status}, not awaiting approval.")
    required = Role(action.approval_role or Role.SUPPORT_LEAD)
    given = approvals_of(action)
    verdict = may_decide(
        approver=approver.email,
        approver_role=Role(approver.role),
        required=required,
        requested_by=action.requested_by,
        given=given,
    )
    if not verdict.allowed:
        raise Forbidden(verdict.reason)
    _audit(
        session,
        action,
        "approved" if approve else "rejected",
        actor=approver.email,
        summary=describe(action),
        role=str(required),
        note=note.strip() or None,
    )
    params = params_of(action)
    if not approve:
        action.status = ActionStatus.REJECTED
        _decided(action, approver, note)
        action.completed_at = action.decided_at
        return
    given = (*given, Approval(approver.email, Role(approver.role), required))
    after = [Role(r) for r in params.get("approvals_after", [])]
    remaining = [r for r in after if not any(approved_for(g, r) for g in given)]
    # A new dict: SQLAlchemy's JSON column only notices reassignment.
    action.params = {
        **params,
        "approvals": [g.to_param() for g in given],
        "approvals_after": [str(r) for r in remaining[1:]],
    }
    if remaining:
        action.approval_role = remaining[0]
        return
    action.status = ActionStatus.QUEUED
    _decided(action, approver, note)


def approved_for(approval: Approval, role: Role) -> bool:
    """Whether an approval already given covers a role still asked for (an admin covers all)."""
    return satisfies(approval.role, role)


def _decided(action: Action, approver: Agent, note: str) -> None:
    action.decided_by = approver.email
    action.decided_at = utcnow()
    action.decision_note = note.strip() or None


def send_back_for_approval(session: Session, action: Action, decision: Decision) -> None:
    """The worker found, just before running the step, an approval it now needs (a new claim
    on the customer, a new refund that crossed a limit): the step waits for it."""
    action.status = ActionStatus.PENDING_APPROVAL
    action.approval_role = decision.approval_role
    action.policy_reason = decision.reason
    # The approvals given stay in the parameters; the step is undecided again.
    action.decided_by = action.decided_at = action.decision_note = None
    action.params = {**params_of(action), "approvals_after": [str(r) for r in decision.then]}
    _audit(session, action, "approval_needed", actor="billing-desk", policy=decision.reason)


def record_succeeded(session: Session, action: Action, outcome: Outcome) -> None:
    """Mark a step done, keeping the object it touched, and audit it."""
    action.status = ActionStatus.SUCCEEDED
    action.stripe_object_id = outcome.object_id
    action.error = None
    action.completed_at = utcnow()
    _audit(
        session,
        action,
        "succeeded",
        summary=describe(action),
        stripe_object=outcome.object_id,
        **outcome.detail,
    )


def record_simulated(session: Session, action: Action) -> str:
    """Dry run: mark a step as what it would have done, touching nothing; returns the note."""
    action.status = ActionStatus.SIMULATED
    action.completed_at = utcnow()
    _audit(session, action, "simulated", summary=describe(action))
    return f"Dry run — would have done: {describe(action)}. Nothing was sent or changed."


def spend_stripe_key(session: Session, action: Action) -> None:
    """Stripe answered the step's write with a server error, which it replays for that key for
    a day: the next attempt sends a fresh key (after looking for what this one made)."""
    params = params_of(action)
    params[KEYS_SPENT_PARAM] = int(params.get(KEYS_SPENT_PARAM, 0)) + 1
    action.params = params


def record_failed(session: Session, action: Action, error: str) -> None:
    """Mark a step failed with a reason an agent can act on, and audit it."""
    action.status = ActionStatus.FAILED
    action.error = error
    action.completed_at = utcnow()
    _audit(session, action, "failed", error=error)
