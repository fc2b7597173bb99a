"""Which ticket an email belongs to: thread headers first, then a ticket token in the subject,
and only within the conversation.

Message-IDs travel: anyone who ever saw one of our emails (a forwarded confirmation, a CC) can
put it in In-Reply-To. So an email joins a ticket only when its sender is part of that
conversation: the ticket's requester, someone who already wrote on it, or our own address.
Anyone else's reply opens a ticket of its own, which says which ticket it named.

A flood from one sender (a script, a loop, an angry customer writing every minute) folds into
one ticket: an email with the subject of a ticket the same address opened within FLOOD_WINDOW
joins it, and past FLOOD_TICKETS new tickets from one address in that window any further email
joins the newest, instead of each opening a ticket, an acknowledgement and a playbook.

A customer whose bank is disputing a charge writes onto the ticket the dispute opened (Stripe's
webhook often comes before their email): Finance answers the bank there, and no playbook acts
on their money meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import StripeDispute, Ticket, TicketMessage, utcnow
from core.domain import CLOSED_DISPUTE_STATUSES, MessageKind, TicketStatus
from core.subjects import SUBJECT_TOKEN as _TOKEN
from core.subjects import normalized_subject, subject_token
from mail.parsing import ParsedEmail

__all__ = ["Threading", "find_ticket_for", "normalized_subject", "subject_token"]

FLOOD_TICKETS = 3
FLOOD_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True)
class Threading:
    """Where an email goes: onto ``ticket_id``, or (None) a new ticket; ``named`` is a ticket
    its headers or subject named although its sender is not part of that conversation."""

    ticket_id: int | None
    named: int | None = None
    # Why it joined ``ticket_id`` as part of a flood from its sender, or onto the ticket of
    # their undecided dispute (None: it did not).
    folded: str | None = None
    dispute: bool = False  # folded onto the ticket of the sender's undecided dispute


def find_ticket_for(session: Session, parsed: ParsedEmail, our_address: str = "") -> Threading:
    """The ticket this email replies to, if its sender is part of that conversation."""
    named = _named_ticket(session, parsed)
    if named is not None and _in_conversation(session, named, parsed.from_address, our_address):
        return Threading(named)
    flooded = _flooded_ticket(session, parsed.from_address, parsed.subject)
    if flooded is not None:
        return Threading(flooded[0], named, folded=flooded[1])
    disputed = _open_dispute_ticket(session, parsed.from_address)
    if disputed is not None:
        why = (
            f"{parsed.from_address} has a dispute open with their bank, answered by Finance on "
            f"ticket #{disputed}"
        )
        return Threading(disputed, named, folded=why, dispute=True)
    return Threading(None, named)


def _open_dispute_ticket(session: Session, sender: str) -> int | None:
    """The sender's active ticket for a dispute Stripe told us of and the bank has not decided:
    their email about it (or their money) belongs with what Finance answers."""
    sender = sender.strip().lower()
    if not sender:
        return None
    found = session.scalar(
        select(Ticket.id)
        .join(StripeDispute, StripeDispute.ticket_id == Ticket.id)
        .where(
            Ticket.requester_email == sender,
            Ticket.status.in_([s for s in TicketStatus if s.active]),
            StripeDispute.status.not_in(CLOSED_DISPUTE_STATUSES),
        )
        .order_by(Ticket.id.desc())
        .limit(1)
    )
    return None if found is None else int(found)


def _flooded_ticket(session: Session, sender: str, subject: str) -> tuple[int, str] | None:
    """The sender's ticket of the window with this subject, or their newest once they opened
    FLOOD_TICKETS tickets in it; with the reason, for the ticket's note."""
    sender = sender.strip().lower()
    if not sender:
        return None
    recent = session.execute(
        select(Ticket.id, Ticket.subject)
        .where(Ticket.requester_email == sender, Ticket.created_at >= utcnow() - FLOOD_WINDOW)
        .order_by(Ticket.id.desc())
        .limit(50)
    ).all()
    minutes = int(FLOOD_WINDOW.total_seconds() // 60)
    same = normalized_subject(subject)
    for ticket_id, ticket_subject in recent:
        if same and normalized_subject(ticket_subject) == same:
            why = f"{sender} wrote with this ticket's subject within {minutes} minutes of it"
            return int(ticket_id), why
    if len(recent) >= FLOOD_TICKETS:
        why = f"{sender} opened {FLOOD_TICKETS} tickets in the last {minutes} minutes"
        return int(recent[0][0]), why
    return None


def _named_ticket(session: Session, parsed: ParsedEmail) -> int | None:
    """The ticket the thread headers point at (the newest message they name), else the one
    the subject's token names."""
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
    if match and session.get(Ticket, int(match.group(1))) is not None:
        return int(match.group(1))
    return None


def _in_conversation(session: Session, ticket_id: int, sender: str, our_address: str) -> bool:
    """Whether ``sender`` is the ticket's requester, wrote on it before, or is us."""
    sender = sender.strip().lower()
    if not sender:
        return False
    if our_address and sender == our_address.strip().lower():
        return True
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        return False
    if (ticket.requester_email or "").strip().lower() == sender:
        return True
    authors = session.scalars(
        select(TicketMessage.author)
        .where(TicketMessage.ticket_id == ticket_id, TicketMessage.kind == MessageKind.INBOUND)
        .distinct()
    )
    return any((author or "").strip().lower() == sender for author in authors)
