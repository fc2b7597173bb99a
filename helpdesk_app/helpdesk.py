"""The built-in helpdesk: an inbox and a ticket page with the sidebar beside the thread."""

from __future__ import annotations

from flask import Blueprint, abort, render_template
from sqlalchemy import func, select

from core.actions import describe
from core.db.models import InboundEmail, Plan, Ticket
from core.domain import HelpdeskName, InboundStatus, TicketStatus
from helpdesk_app.auth import login_required
from helpdesk_app.services import get_session
from mail.parsing import parse_email

bp = Blueprint("helpdesk", __name__)


@bp.get("/")
@login_required
def inbox() -> str:
    """Every ticket, most recently updated first."""
    tickets = (
        get_session()
        .scalars(
            select(Ticket)
            .where(Ticket.helpdesk == HelpdeskName.LOCAL)
            .order_by(Ticket.updated_at.desc())
        )
        .all()
    )
    open_count = sum(1 for t in tickets if t.status == TicketStatus.OPEN)
    quarantined = get_session().scalar(
        select(func.count()).where(InboundEmail.status == InboundStatus.QUARANTINED)
    )
    return render_template(
        "inbox.html", tickets=tickets, open_count=open_count, quarantined=quarantined
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


@bp.get("/tickets/<int:ticket_id>")
@login_required
def ticket(ticket_id: int) -> str:
    """One ticket's thread, notes included, with the sidebar framed beside it."""
    found = get_session().get(Ticket, ticket_id)
    if found is None:
        abort(404, "No such ticket.")
    plans = get_session().scalars(select(Plan).where(Plan.ticket_id == found.id).order_by(Plan.id))
    return render_template("ticket.html", ticket=found, plans=list(plans), describe=describe)
