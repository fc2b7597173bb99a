"""Zendesk and Help Scout tickets mirrored as rows of ours, and what their adapters share.

A hosted helpdesk's ticket becomes a local ``Ticket`` row (``helpdesk``, ``helpdesk_account``,
``external_id``) when an agent opens our sidebar on it. Every change goes to the helpdesk first
and is then mirrored locally, so our history and audit trail stay complete; if the helpdesk
call fails nothing local changes and the caller's job can retry.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.models import Ticket
from core.domain import MessageKind, TicketStatus
from core.errors import HelpdeskError, InvalidInput, NotFound
from core.helpdesks.local import LocalHelpdesk


class MirroredHelpdesk:
    """The Helpdesk protocol for a hosted helpdesk; subclasses say how to post and close."""

    helpdesk: str  # the Ticket.helpdesk value this adapter serves
    service: str  # "Zendesk", "Help Scout"
    ticket_word: str  # what the service calls a ticket: "ticket", "conversation"

    def __init__(self, session: Session) -> None:
        self.session = session
        self.local = LocalHelpdesk(session)

    def _ticket(self, ticket_id: int) -> Ticket:
        """The local mirror row, which must belong to this helpdesk."""
        ticket = self.session.get(Ticket, ticket_id)
        if ticket is None:
            raise NotFound(f"ticket {ticket_id} does not exist")
        if ticket.helpdesk != self.helpdesk or not ticket.external_id:
            raise HelpdeskError(f"ticket {ticket_id} is not a {self.service} {self.ticket_word}")
        return ticket

    def _post(self, ticket: Ticket, kind: MessageKind, body: str) -> None:
        """Send a reply (OUTBOUND) or an internal note (NOTE) to the helpdesk."""
        raise NotImplementedError

    def open_ticket(self, *, subject: str, requester_email: str, requester_name: str | None) -> int:
        """Refuse: these tickets are created in the helpdesk and mirrored when agents open them."""
        raise HelpdeskError(
            f"{self.service} {self.ticket_word}s are created in {self.service}, not by Billing Desk"
        )

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
        """Post a reply or a note; customer mail is only mirrored, since the helpdesk has it."""
        if kind is not MessageKind.INBOUND:
            self._post(self._ticket(ticket_id), kind, body)
        self.local.add_message(
            ticket_id,
            kind=kind,
            author=author,
            body=body,
            message_id=message_id,
            inbound_email_id=inbound_email_id,
            reopen=reopen,
        )

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
        """Record the category and Stripe customer on the local mirror only."""
        self._ticket(ticket_id)
        self.local.set_triage(
            ticket_id,
            category=category,
            confidence=confidence,
            stripe_customer_id=stripe_customer_id,
        )


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
