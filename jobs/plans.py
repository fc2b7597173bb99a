"""The runner: advance stored plans one idempotent step at a time, each step its own job.

A step's job is ``action-<id>``, whichever step it is. It runs the step through its kind's
module (core.actions), records the outcome with a note on the ticket, and queues the step now
due. A worker killed at any line leaves the step ``queued``: the job runs again (the worker pool
requeues a dead worker's job at once; ``resume_plans`` finds any the queue lost) and every step
finds what it already did instead of doing it twice.
"""

from __future__ import annotations

import logging

from rq import Queue, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import select
from sqlalchemy.orm import Session

from core import log_context
from core.actions import workflow
from core.actions.base import StepRefused, approvals_of, params_of
from core.actions.registry import action_type, describe
from core.db import session_scope
from core.db.models import Action, Plan, utcnow
from core.domain import ActionKind, ActionStatus, PlanStatus, Role
from core.errors import BillingDeskError, StripeOutcomeUnknown
from core.policy import Decision, Verdict
from jobs import queues, runtime
from jobs.effects import WorkerEffects

log = logging.getLogger(__name__)
AUTHOR = "billing-desk"
# An RQ job in these states will not run again by itself.
_DONE_JOB_STATES = frozenset(
    [JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED]
)


def step_job_id(action_id: int) -> str:
    """The one job ID of a step."""
    return f"action-{action_id}"


def enqueue_step(queue: Queue, action_id: int) -> None:
    """Queue a step for a worker: once while its job is queued or running. A job that already
    finished (a step that went back for an approval, a job the pool gave up on) is replaced."""
    job_id = step_job_id(action_id)
    if queues.enqueue_once(queue, run_step, action_id, job_id=job_id):
        return
    try:
        job = Job.fetch(job_id, connection=queue.connection)
    except NoSuchJobError:
        job = None
    if job is not None and job.get_status(refresh=True) not in _DONE_JOB_STATES:
        return
    if job is not None:
        job.delete()
    queues.enqueue_once(queue, run_step, action_id, job_id=job_id)


def run_step(action_id: int) -> str:
    """Run one queued step of a plan, then queue the step after it; safe to run any number of
    times, and again after a crash at any line."""
    rt = runtime.current()
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        if action is None:
            log.error("action %s does not exist", action_id)
            return "missing"
        log_context.add(action_id=action_id, ticket_id=action.ticket_id)
        status = ActionStatus(action.status)
        if status is not ActionStatus.QUEUED:
            # A run that died after recording its outcome may not have queued the next step.
            due_id = _due(workflow.advance_plan(session, action.plan) if action.plan else None)
            snapshot = None
        else:
            action.started_at = utcnow()
            action.attempts = (action.attempts or 0) + 1
            snapshot = action
    if snapshot is None:
        _queue(rt, due_id)
        return str(status)
    if rt.settings.dry_run:
        return _simulate(rt, action_id)
    spec = action_type(snapshot.kind)
    try:
        outcome = spec.execute(snapshot, WorkerEffects(rt))
    except StepRefused as refused:
        return _refused(rt, action_id, refused.decision)
    except BillingDeskError as exc:
        if isinstance(exc, StripeOutcomeUnknown):
            with session_scope(rt.session_factory) as session:
                spent = session.get(Action, action_id)
                assert spent is not None
                workflow.spend_stripe_key(session, spent)
        if exc.retryable and _retries_left():
            raise
        return _finish_failed(rt, action_id, _failure(snapshot, exc))
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        assert action is not None
        if action.status == ActionStatus.QUEUED:
            workflow.record_succeeded(session, action, outcome)
            if outcome.note:
                _note(session, action, _with_who(action, outcome.note))
        due_id = _due(workflow.advance_plan(session, action.plan) if action.plan else None)
    _queue(rt, due_id)
    return "succeeded"


def _simulate(rt: runtime.Runtime, action_id: int) -> str:
    """Dry run: record what the step would have done, without Stripe, mail or the ticket's
    state; the plan goes on to its next step the same way."""
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        assert action is not None
        _note(session, action, workflow.record_simulated(session, action))
        due_id = _due(workflow.advance_plan(session, action.plan) if action.plan else None)
    _queue(rt, due_id)
    return "simulated"


def step_queue(rt: runtime.Runtime, requested_by_a_person: bool) -> Queue:
    """Where a step runs: a person's on the actions queue, the mail agent's on automation, so
    an agent's click never waits behind the playbooks' steps of a mail backlog."""
    return rt.queue(queues.ACTIONS if requested_by_a_person else queues.AUTOMATION)


def _due(action: Action | None) -> tuple[int, bool] | None:
    """The step now due, and whether a person asked for it (its queue)."""
    return None if action is None else (action.id, action.requester_role is not None)


def _queue(rt: runtime.Runtime, due: tuple[int, bool] | None) -> None:
    if due is not None:
        action_id, by_a_person = due
        enqueue_step(step_queue(rt, by_a_person), action_id)


def _retries_left() -> bool:
    """Whether RQ will run this job again after a transient failure."""
    job = get_current_job()
    return job is None or bool(job.retries_left)


def _failure(action: Action, exc: BillingDeskError) -> str:
    if ActionKind(action.kind) is ActionKind.REFUND:
        return f"Stripe refused the refund: {exc}"
    return f"{describe(action)} failed: {exc}"


def _refused(rt: runtime.Runtime, action_id: int, decision: Decision) -> str:
    """Policy said no, or not without someone's approval, just before the step ran."""
    if decision.verdict is Verdict.DENY:
        with session_scope(rt.session_factory) as session:
            action = session.get(Action, action_id)
            assert action is not None
            what = "Refund not issued" if action.kind == ActionKind.REFUND else "Not done"
        return _finish_failed(rt, action_id, f"{what}: {decision.reason}")
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        assert action is not None
        workflow.send_back_for_approval(session, action, decision)
        if action.plan:
            workflow.advance_plan(session, action.plan)
    enqueue_approval_note(rt.queue(queues.ACTIONS), action)
    return "waiting for approval"


def _finish_failed(rt: runtime.Runtime, action_id: int, reason: str) -> str:
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        assert action is not None
        workflow.record_failed(session, action, reason)
        _note(session, action, reason)
        if action.plan:
            workflow.advance_plan(session, action.plan)
    return "failed"


def _with_who(action: Action, note: str) -> str:
    """A step's note, with who asked and who approved, and any warning about the customer."""
    approved = [a.by for a in approvals_of(action)]
    text = f"{note} Requested by {action.requested_by}."
    if approved:
        text += f" Approved by {', '.join(approved)}."
    warning = params_of(action).get("identity_warning")
    return f"{text} {warning}" if warning else text


def _note(session: Session, action: Action, text: str) -> None:
    if action.ticket_id is None:
        return
    helpdesk = runtime.current().helpdesks.for_ticket(session, action.ticket_id)
    helpdesk.add_internal_note(action.ticket_id, text, author=AUTHOR)


# --- approvals, noted on the ticket ----------------------------------------------------


def enqueue_approval_note(queue: Queue, action: Action) -> None:
    """Queue the ticket note for a step's approval state (once per state)."""
    state = (
        f"decided-{action.status}"
        if action.decided_by
        else f"pending-{action.approval_role}-{len(approvals_of(action))}"
    )
    queues.enqueue_once(queue, note_approval, action.id, job_id=f"note-{state}-{action.id}")


def note_approval(action_id: int) -> str:
    """Document an approval request, approval or rejection on the ticket."""
    rt = runtime.current()
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        if action is None or action.ticket_id is None:
            return "nothing to note"
        summary = describe(action)
        given = [a.label() for a in approvals_of(action)]
        warning = params_of(action).get("identity_warning")
        if action.decided_by is None:
            so_far = f" Approved so far by {', '.join(given)}." if given else ""
            text = (
                f"Approval needed: {summary}, requested by {action.requested_by}. "
                f"Waiting for {Role(action.approval_role or 'support_lead').label}.{so_far} "
                f"Policy: {action.policy_reason}"
            )
        else:
            verb = "rejected" if action.status == ActionStatus.REJECTED else "approved"
            extra = f" Note: {action.decision_note}" if action.decision_note else ""
            if verb == "approved" and len(given) > 1:
                extra = f" Approvals: {', '.join(given)}.{extra}"
            at = f"{action.decided_at:%Y-%m-%d %H:%M} UTC"
            text = (
                f"{summary} {verb} by {action.decided_by} at {at} "
                f"(requested by {action.requested_by}).{extra}"
            )
        if warning:
            text += f" {warning}"
        _note(session, action, text)
    return "noted"


# --- finding plans the queue lost ------------------------------------------------------


def queue_due_steps(rt: runtime.Runtime, ticket_id: int | None) -> None:
    """Queue the due step of each of a ticket's running plans (again, after a crash between
    storing a plan and queueing it: queueing twice runs it once)."""
    if ticket_id is None:
        return
    with session_scope(rt.session_factory) as session:
        due = session.execute(
            select(Action.id, Action.requester_role)
            .join(Plan, Action.plan_id == Plan.id)
            .where(
                Plan.ticket_id == ticket_id,
                Plan.status == PlanStatus.RUNNING,
                Action.status == ActionStatus.QUEUED,
            )
        ).all()
    for action_id, role in due:
        enqueue_step(step_queue(rt, role is not None), action_id)


def resume_plans(rt: runtime.Runtime) -> int:
    """Queue again the due step of every running plan whose job is gone or finished without
    it (a process that died between recording a step and queueing the next, a lost Redis);
    returns how many were queued. Steps whose job is queued or running are left alone."""
    queued = 0
    with session_scope(rt.session_factory) as session:
        due = session.execute(
            select(Action.id, Action.requester_role)
            .join(Plan, Action.plan_id == Plan.id)
            .where(Plan.status == PlanStatus.RUNNING, Action.status == ActionStatus.QUEUED)
            .order_by(Action.id)
        ).all()
    for action_id, role in due:
        try:
            job = Job.fetch(step_job_id(action_id), connection=rt.redis)
        except NoSuchJobError:
            job = None
        if job is not None and job.get_status(refresh=True) not in _DONE_JOB_STATES:
            # Queued, running or waiting for its retry; unless it was lost on its way to a worker.
            queued += queues.requeue_if_lost(rt.redis, job.id)
            continue
        enqueue_step(step_queue(rt, role is not None), action_id)
        queued += 1
    if queued:
        log.warning("resumed %d plan step(s) whose job was lost", queued)
    return queued
