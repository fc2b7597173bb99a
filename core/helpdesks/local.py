"""The built-in helpdesk: tickets kept in Billing Desk's own database."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from core import audit, escalations
from core.db.models import Ticket, TicketMessage, utcnow
from core.domain import EscalationTarget, MessageKind, TicketStatus
from core.errors import NotFound
from core.helpdesks.base import ThreadEntry, TicketSnapshot


class LocalHelpdesk:
    """Helpdesk over core.db; changes join the caller's session and transaction."""

    sends_replies = False

    def __init__(self, session: Session) -> None:
        self.session = session

    def _ticket(self, ticket_id: int) -> Ticket:
        ticket = self.session.get(Ticket, ticket_id)
        if ticket is None:
            raise NotFound(f"ticket {ticket_id} does not exist")
        return ticket

    def open_ticket(
        self,
        *,
        subject: str,
        requester_email: str,
        requester_name: str | None,
        body: str | None = None,
    ) -> int:
        """Create an open ticket and return its ID (its first message is added by the caller,
        with the email it came from)."""
        ticket = Ticket(
            subject=subject[:998] or "(no subject)",
            requester_email=requester_email,
            requester_name=requester_name,
            status=TicketStatus.OPEN,
        )
        self.session.add(ticket)
        self.session.flush()
        audit.record(self.session, actor="mail-agent", event="ticket.opened", ticket_id=ticket.id)
        return ticket.id

    def add_message(
        self,
        ticket_id: int,
        *,
        kind: MessageKind,
        author: str,
        body: str,
        message_id: str | None = None,
        inbound_email_id: int | None = None,
        reopen: bool = True,
        external_id: str | None = None,
    ) -> None:
        """Append an entry to the thread; a customer email reopens a closed ticket if ``reopen``.
        ``external_id`` names the hosted helpdesk's own entry this one mirrors."""
        ticket = self._ticket(ticket_id)
        self.session.add(
            TicketMessage(
                ticket_id=ticket.id,
                kind=kind,
                author=author,
                body=body,
                message_id=message_id,
                inbound_email_id=inbound_email_id,
                external_id=external_id,
            )
        )
        if reopen and kind is MessageKind.INBOUND and ticket.status != TicketStatus.OPEN:
            # The customer answered: pending, solved and closed tickets are ours again.
            was = ticket.status
            ticket.status = TicketStatus.OPEN
            ticket.resolution = None
            ticket.closed_at = None
            audit.record(
                self.session, actor=author, event="ticket.reopened", ticket_id=ticket.id, was=was
            )
        self.session.flush()

    def add_internal_note(self, ticket_id: int, body: str, *, author: str) -> None:
        """Add a note only agents see."""
        self.add_message(ticket_id, kind=MessageKind.NOTE, author=author, body=body)

    def find_ticket(self, *, requester_email: str, subject: str, since: datetime) -> int | None:
        """None: mail threads onto built-in tickets by its headers (mail.conversations)."""
        return None

    def read_ticket(self, ticket_id: int) -> TicketSnapshot:
        """The ticket and its thread, from our own rows."""
        ticket = self._ticket(ticket_id)
        return TicketSnapshot(
            external_id=str(ticket.id),
            subject=ticket.subject,
            requester_email=ticket.requester_email,
            requester_name=ticket.requester_name,
            status=TicketStatus(ticket.status),
            tags=tuple(ticket.tags or ()),
            thread=tuple(
                ThreadEntry(
                    external_id=str(m.id),
                    kind=MessageKind(m.kind),
                    author_email=m.author,
                    body=m.body,
                    created_at=m.created_at,
                )
                for m in ticket.messages
            ),
            group=ticket.team,
        )

    def add_tags(self, ticket_id: int, tags: Sequence[str]) -> None:
        """Add tags, keeping the ones the ticket has."""
        ticket = self._ticket(ticket_id)
        ticket.tags = list(dict.fromkeys([*(ticket.tags or ()), *tags]))
        self.session.flush()

    def assign(
        self,
        ticket_id: int,
        *,
        team: EscalationTarget | None = None,
        assignee: str | None = None,
    ) -> None:
        """Put the ticket in a team's queue and/or give it to a person."""
        ticket = self._ticket(ticket_id)
        if team is not None:
            ticket.team = str(team)
        if assignee is not None:
            ticket.assignee = assignee
        self.session.flush()

    def set_status(self, ticket_id: int, status: TicketStatus, *, actor: str) -> None:
        """Set the status; resolving goes through ``close``, which records the resolution."""
        ticket = self._ticket(ticket_id)
        if ticket.status == status:
            return
        was = ticket.status
        ticket.status = status
        if status in (TicketStatus.OPEN, TicketStatus.PENDING):
            ticket.resolution = None
            ticket.closed_at = None
        audit.record(
            self.session,
            actor=actor,
            event="ticket.status",
            ticket_id=ticket.id,
            was=was,
            status=str(status),
        )
        self.session.flush()

    def set_triage(
        self,
        ticket_id: int,
        *,
        category: str,
        confidence: float,
        stripe_customer_id: str | None,
    ) -> None:
        """Record the ticket's category and matched Stripe customer."""
        ticket = self._ticket(ticket_id)
        ticket.category = category
        ticket.category_confidence = confidence
        ticket.stripe_customer_id = stripe_customer_id
        self.session.flush()

    def close(self, ticket_id: int, *, resolution: str, actor: str) -> str | None:
        """Close the ticket with a resolution status; closing twice changes nothing."""
        ticket = self._ticket(ticket_id)
        if ticket.status == TicketStatus.CLOSED and ticket.resolution == resolution:
            return None
        ticket.status = TicketStatus.CLOSED
        ticket.resolution = resolution
        ticket.closed_at = utcnow()
        escalations.resolve(self.session, ticket.id, actor)
        audit.record(
            self.session,
            actor=actor,
            event="ticket.closed",
            ticket_id=ticket.id,
            resolution=resolution,
        )
        self.session.flush()
        return None
