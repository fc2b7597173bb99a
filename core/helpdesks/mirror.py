"""Zendesk and Help Scout tickets as rows of ours, so actions, notes and audit can point at them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.models import Ticket
from core.domain import TicketStatus
from core.errors import InvalidInput


def mirror_ticket(
    session: Session,
    *,
    helpdesk: str,
    account: str,
    external_id: str,
    subject: str,
    requester_email: str,
    requester_name: str | None = None,
    organization: str | None = None,
) -> Ticket:
    """Our row for a helpdesk's ticket, created on first sight and refreshed after."""
    if not external_id.strip() or not requester_email.strip() or "@" not in requester_email:
        raise InvalidInput("The helpdesk did not say which ticket or requester this is.")

    def find() -> Ticket | None:
        return session.scalar(
            select(Ticket).where(
                Ticket.helpdesk == helpdesk,
                Ticket.helpdesk_account == account,
                Ticket.external_id == external_id,
            )
        )

    ticket = find()
    if ticket is None:
        ticket = Ticket(
            helpdesk=helpdesk,
            helpdesk_account=account,
            external_id=external_id[:64],
            subject=subject[:998] or "(no subject)",
            requester_email=requester_email[:320],
            status=TicketStatus.OPEN,
        )
        try:
            with session.begin_nested():
                session.add(ticket)
        except IntegrityError:
            # Two agents opened the same ticket at once: the other insert won.
            ticket = find()
            assert ticket is not None
    ticket.subject = subject[:998] or ticket.subject
    ticket.requester_email = requester_email[:320]
    ticket.requester_name = (requester_name or "")[:200] or ticket.requester_name
    ticket.organization = (organization or "")[:200] or ticket.organization
    session.flush()
    return ticket
