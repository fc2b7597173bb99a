"""Which ticket an email belongs to: thread headers first, then a ticket token in the subject."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import Ticket, TicketMessage
from mail.parsing import ParsedEmail

_TOKEN = re.compile(r"\[BD-(\d{1,12})\]")


def subject_token(ticket_id: int) -> str:
    """The token we put in subjects so a reply finds its ticket when headers are lost."""
    return f"[BD-{ticket_id}]"


def find_ticket_for(session: Session, parsed: ParsedEmail) -> int | None:
    """The ticket this email replies to, or None for a new conversation."""
    thread_ids = [i for i in (parsed.in_reply_to, *reversed(parsed.references)) if i]
    if thread_ids:
        ticket_id = session.scalar(
            select(TicketMessage.ticket_id)
            .where(TicketMessage.message_id.in_(thread_ids))
            .order_by(TicketMessage.id.desc())
            .limit(1)
        )
        if ticket_id is not None:
            return ticket_id
    match = _TOKEN.search(parsed.subject)
    if match:
        # A token alone is guessable: only the ticket's own requester may use it.
        ticket = session.get(Ticket, int(match.group(1)))
        if ticket is not None and ticket.requester_email == parsed.from_address:
            return ticket.id
    return None
