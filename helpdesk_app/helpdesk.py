"""The built-in helpdesk: an inbox that leads with what is waiting for the agent, and a ticket
page where they reply, note, set the status, assign, correct the category, with the sidebar
framed beside the thread.

Views read the form, call core.tickets or core.inbox, queue and render. Every POST carries the
session's CSRF token; roles come from our own Agent row, never from the request. A change
answers with a redirect to the ticket (so a reload never sends it twice).
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import func, select
from werkzeug.wrappers import Response

from core import escalations, inbox, tickets
from core.actions import describe
from core.db.models import Action, Agent, InboundEmail, Plan, Ticket, utcnow
from core.domain import (
    ActionKind,
    Category,
    EscalationTarget,
    InboundStatus,
    PlanStatus,
    TicketStatus,
)
from helpdesk_app.auth import check_csrf, current_agent, login_required
from helpdesk_app.services import get_services, get_session
from jobs.plans import enqueue_approval_note, enqueue_step
from mail.parsing import parse_email

bp = Blueprint("helpdesk", __name__)


def _me() -> Agent:
    agent = current_agent()
    assert agent is not None, "login_required let the request through"
    return agent


def _choices() -> dict[str, Any]:
    """The menus the inbox filters and the ticket's properties offer."""
    people = get_session().scalars(select(Agent).where(Agent.active.is_(True)).order_by(Agent.name))
    return {
        "statuses": list(TicketStatus),
        "categories": list(Category),
        "teams": list(EscalationTarget),
        "slas": list(inbox.SlaFilter),
        "people": list(people),
    }


@bp.get("/", endpoint="inbox")
@login_required
def inbox_page() -> str:
    """What is waiting for me first, then the tickets, filtered and searched, a page at a time."""
    wanted = inbox.TicketFilter.from_query(request.args)
    db, me, now = get_session(), _me(), utcnow()
    quarantined = db.scalar(
        select(func.count()).where(InboundEmail.status == InboundStatus.QUARANTINED)
    )
    return render_template(
        "inbox.html",
        wanted=wanted,
        found=inbox.find_tickets(db, wanted, me.email, now),
        waiting=[] if wanted.is_set else inbox.waiting_for(db, me, now),
        counts=inbox.status_counts(db),
        quarantined=quarantined,
        team_label=inbox.team_label,
        describe=describe,
        **_choices(),
    )


@bp.get("/quarantine")
@login_required
def quarantine() -> str:
    """Mail the server would not hand over whole: kept, listed here, never silently skipped."""
    emails = get_session().scalars(
        select(InboundEmail)
        .where(InboundEmail.status == InboundStatus.QUARANTINED)
        .order_by(InboundEmail.received_at.desc())
    )
    items = [(e, parse_email(e.raw)) for e in emails]
    return render_template("quarantine.html", items=items)


def _ticket(ticket_id: int) -> Ticket:
    found = tickets.local_ticket(get_session(), ticket_id)
    if found is None:
        abort(404, "No such ticket.")
    return found


def _thread_vars(ticket: Ticket) -> dict[str, Any]:
    """What the thread fragment shows: the ticket's state, its plans, its messages."""
    db = get_session()
    plans = list(db.scalars(select(Plan).where(Plan.ticket_id == ticket.id).order_by(Plan.id)))
    # A reply that went out is its message in the thread; one on its way shows as sending.
    replies = [p for p in plans if [s.kind for s in p.steps] == [ActionKind.REPLY]]
    return {
        "ticket": ticket,
        "plans": [p for p in plans if p not in replies or p.status == PlanStatus.STOPPED],
        "sending": [p for p in replies if not PlanStatus(p.status).finished],
        "escalations": escalations.open_escalations(db, ticket.id),
        "sla": inbox.ticket_sla(db, ticket.id, utcnow()),
        "describe": describe,
        "team_label": inbox.team_label,
    }


@bp.get("/tickets/<int:ticket_id>")
@login_required
def ticket(ticket_id: int) -> str:
    """One ticket's thread, notes included, the composer and properties, the sidebar beside."""
    found = _ticket(ticket_id)
    return render_template(
        "ticket.html",
        form_key=secrets.token_urlsafe(16),
        gate=tickets.gate_of(found),
        may_lift=tickets.may_lift(_me(), found),
        **_thread_vars(found),
        **_choices(),
    )


@bp.get("/tickets/<int:ticket_id>/thread")
@login_required
def thread(ticket_id: int) -> str:
    """The thread alone, for the ticket page to refresh after the sidebar or a worker acted."""
    return render_template("helpdesk/thread.html", **_thread_vars(_ticket(ticket_id)))


def _changed(ticket: Ticket, message: str) -> Response:
    """Commit the change and go back to the ticket, saying what happened."""
    get_session().commit()
    flash(message)
    return redirect(url_for("helpdesk.ticket", ticket_id=ticket.id), code=303)


@bp.post("/tickets/<int:ticket_id>/reply")
@login_required
def reply(ticket_id: int) -> Response:
    """Queue the agent's reply to the requester (the address is ours, never the form's)."""
    check_csrf()
    found = _ticket(ticket_id)
    then_pending = request.form.get("then") == "pending"
    plan, due = tickets.reply(
        get_session(),
        found,
        _me(),
        request.form.get("text") or "",
        form_key=tickets.parse_form_key(request.form.get("form_key")),
        config=get_services().policy,
        now=utcnow(),
        then_pending=then_pending,
    )
    get_session().commit()
    _dispatch(plan.steps[0], due)
    flash(f"Reply on its way to {found.requester_email}.")
    return redirect(url_for("helpdesk.ticket", ticket_id=found.id), code=303)


def _dispatch(step: Action, due: Action | None) -> None:
    """Queue the work for a step's state, as the sidebar does: its approval note, its run."""
    queue = get_services().actions_queue
    if step.approval_role:
        enqueue_approval_note(queue, step)
    if due is not None:
        enqueue_step(queue, due.id)


@bp.post("/tickets/<int:ticket_id>/notes")
@login_required
def add_note(ticket_id: int) -> Response:
    """An internal note, only for agents."""
    check_csrf()
    found = _ticket(ticket_id)
    tickets.add_note(get_session(), found, _me(), request.form.get("text") or "")
    return _changed(found, "Note added.")


@bp.post("/tickets/<int:ticket_id>/status")
@login_required
def set_status(ticket_id: int) -> Response:
    """Open, pending, solved or closed."""
    check_csrf()
    found = _ticket(ticket_id)
    status = tickets.parse_status(request.form.get("status"))
    changed = tickets.set_status(get_session(), found, _me(), status)
    return _changed(found, f"Status set to {status}." if changed else "No change.")


@bp.post("/tickets/<int:ticket_id>/assignee")
@login_required
def assign(ticket_id: int) -> Response:
    """Give the ticket to an agent ("me" for yourself), or to nobody."""
    check_csrf()
    found = _ticket(ticket_id)
    me = _me()
    wanted = (request.form.get("assignee") or "").strip()
    person = me.email if wanted == inbox.ME else wanted or None
    changed = tickets.assign(get_session(), found, me, person)
    return _changed(found, "Assignee changed." if changed else "No change.")


@bp.post("/tickets/<int:ticket_id>/team")
@login_required
def set_team(ticket_id: int) -> Response:
    """Put the ticket in a team's queue, or in none."""
    check_csrf()
    found = _ticket(ticket_id)
    team = tickets.parse_team(request.form.get("team"))
    changed = tickets.set_team(get_session(), found, _me(), team)
    return _changed(found, "Team queue changed." if changed else "No change.")


@bp.post("/tickets/<int:ticket_id>/category")
@login_required
def correct_category(ticket_id: int) -> Response:
    """Correct what the ticket is about (leaving a gated category is that gate's role's)."""
    check_csrf()
    found = _ticket(ticket_id)
    category = tickets.parse_category(request.form.get("category"))
    changed = tickets.correct_category(get_session(), found, _me(), category)
    return _changed(found, f"Category set to {category}." if changed else "No change.")
