"""The built-in helpdesk: tickets kept in Billing Desk's own database."""

from __future__ import annotations

from sqlalchemy.orm import Session

from core import audit, escalations
from core.db.models import Ticket, TicketMessage, utcnow
from core.domain import MessageKind, TicketStatus
from core.errors import NotFound


class LocalHelpdesk:
    """Helpdesk over core.db; changes join the caller's session and transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def _ticket(self, ticket_id: int) -> Ticket:
        ticket = self.session.get(Ticket, ticket_id)
        if ticket is None:
            raise NotFound(f"ticket {ticket_id} does not exist")
        return ticket

    def open_ticket(self, *, subject: str, requester_email: str, requester_name: str | None) -> int:
        """Create an open ticket and return its ID."""
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
    ) -> None:
        """Append an entry to the thread; a customer email reopens a closed ticket if ``reopen``."""
        ticket = self._ticket(ticket_id)
        self.session.add(
            TicketMessage(
                ticket_id=ticket.id,
                kind=kind,
                author=author,
                body=body,
                message_id=message_id,
                inbound_email_id=inbound_email_id,
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

    def close(self, ticket_id: int, *, resolution: str, actor: str) -> None:
        """Close the ticket with a resolution status; closing twice changes nothing."""
        ticket = self._ticket(ticket_id)
        if ticket.status == TicketStatus.CLOSED and ticket.resolution == resolution:
            return
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
