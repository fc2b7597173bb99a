"""Zendesk and Help Scout tickets mirrored as rows of ours, and what their adapters share.

A hosted helpdesk's ticket becomes a local ``Ticket`` row (``helpdesk``, ``helpdesk_account``,
``external_id``) when its webhook or an agent's sidebar first shows it to us. Every change goes
to the helpdesk first and is then mirrored locally, so our history and audit trail stay
complete; if the helpdesk call fails nothing local changes and the caller's job can retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.models import Ticket
from core.domain import EscalationTarget, MessageKind, TicketStatus
from core.errors import HelpdeskError, InvalidInput, NotFound
from core.helpdesks.base import TicketSnapshot
from core.helpdesks.local import LocalHelpdesk
from core.subjects import normalized_subject


class MirroredHelpdesk:
    """The Helpdesk contract for a hosted helpdesk; subclasses make the API calls."""

    helpdesk: str  # the Ticket.helpdesk value this adapter serves
    service: str  # "Zendesk", "Help Scout"
    ticket_word: str  # what the service calls a ticket: "ticket", "conversation"
    account: str  # the Ticket.helpdesk_account of this deployment's tickets
    sends_replies = True  # the helpdesk emails its public replies to the customer
    # Whether the same ticket ID can name different tickets in different accounts of ours
    # (Zendesk subdomains); Help Scout's conversation IDs are unique across its accounts.
    account_scoped = True
    # Tickets a customer's new email cannot join: Zendesk answers a reply to a closed ticket
    # with a follow-up ticket of its own; a solved one (or a closed Help Scout conversation)
    # reopens.
    final_statuses: frozenset[TicketStatus] = frozenset({TicketStatus.CLOSED})

    def __init__(self, session: Session) -> None:
        self.session = session
        self.local = LocalHelpdesk(session)

    # --- what each hosted helpdesk says in its own API ------------------------------------

    def _post(self, ticket: Ticket, kind: MessageKind, body: str) -> None:
        """Send a reply (OUTBOUND) or an internal note (NOTE) to the helpdesk."""
        raise NotImplementedError

    def _create(
        self, subject: str, requester_email: str, requester_name: str | None, body: str
    ) -> str:
        """Create the ticket in the helpdesk; its external ID."""
        raise NotImplementedError

    def _search(self, requester_email: str, since: datetime) -> list[TicketSnapshot]:
        """The helpdesk's tickets from this requester since then, newest first."""
        raise NotImplementedError

    def _snapshot(self, ticket: Ticket) -> TicketSnapshot:
        raise NotImplementedError

    def _add_tags(self, ticket: Ticket, tags: Sequence[str]) -> None:
        raise NotImplementedError

    def _assign(self, ticket: Ticket, team: EscalationTarget | None, assignee: str | None) -> None:
        raise NotImplementedError

    def _set_status(self, ticket: Ticket, status: TicketStatus) -> None:
        raise NotImplementedError

    # --- the contract ---------------------------------------------------------------------

    def _ticket(self, ticket_id: int) -> Ticket:
        """The local mirror row, which must belong to this helpdesk and account."""
        ticket = self.session.get(Ticket, ticket_id)
        if ticket is None:
            raise NotFound(f"ticket {ticket_id} does not exist")
        if ticket.helpdesk != self.helpdesk or not ticket.external_id:
            raise HelpdeskError(f"ticket {ticket_id} is not a {self.service} {self.ticket_word}")
        # The same numeric ID names a different ticket in another account.
        if self.account_scoped and ticket.helpdesk_account.lower() != self.account.lower():
            raise HelpdeskError(
                f"ticket {ticket_id} belongs to {self.service} account "
                f"{ticket.helpdesk_account!r}, not {self.account!r}"
            )
        return ticket

    def mirror(self, snapshot: TicketSnapshot) -> Ticket:
        """Our row for one of this helpdesk's tickets."""
        return mirror_ticket(
            self.session,
            helpdesk=self.helpdesk,
            account=self.account,
            external_id=snapshot.external_id,
            subject=snapshot.subject,
            requester_email=snapshot.requester_email,
            requester_name=snapshot.requester_name,
        )

    def receive(self, external_id: str) -> tuple[int, TicketSnapshot]:
        """A ticket a webhook named: read from the helpdesk (following a merge) and mirrored;
        our ID for it and the snapshot."""
        probe = Ticket(
            helpdesk=self.helpdesk, helpdesk_account=self.account, external_id=external_id
        )
        snapshot = self._snapshot(probe)
        return self.mirror(snapshot).id, snapshot

    def open_ticket(
        self,
        *,
        subject: str,
        requester_email: str,
        requester_name: str | None,
        body: str | None = None,
    ) -> int:
        """Create the ticket in the helpdesk, with ``body`` as the requester's first message,
        and mirror it."""
        external_id = self._create(subject, requester_email, requester_name, body or subject)
        ticket = mirror_ticket(
            self.session,
            helpdesk=self.helpdesk,
            account=self.account,
            external_id=external_id,
            subject=subject,
            requester_email=requester_email,
            requester_name=requester_name,
        )
        return ticket.id

    def find_ticket(self, *, requester_email: str, subject: str, since: datetime) -> int | None:
        """The requester's ticket with this subject (ignoring Re:/Fwd:) that the email can
        still join, newest first."""
        wanted = normalized_subject(subject)
        for snapshot in self._search(requester_email, since):
            if snapshot.status in self.final_statuses:
                continue
            if snapshot.requester_email.lower() != requester_email.lower():
                continue
            if normalized_subject(snapshot.subject) == wanted:
                return self.mirror(snapshot).id
        return None

    def read_ticket(self, ticket_id: int) -> TicketSnapshot:
        """The ticket as the helpdesk has it now; our row follows its subject and requester."""
        ticket = self._ticket(ticket_id)
        snapshot = self._snapshot(ticket)
        if snapshot.requester_email:
            ticket.requester_email = snapshot.requester_email[:320]
        ticket.requester_name = (snapshot.requester_name or "")[:200] or ticket.requester_name
        ticket.subject = snapshot.subject[:998] or ticket.subject
        self.session.flush()
        return snapshot

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
            external_id=external_id,
        )

    def add_internal_note(self, ticket_id: int, body: str, *, author: str) -> None:
        """Add a note only agents see."""
        self.add_message(ticket_id, kind=MessageKind.NOTE, author=author, body=body)

    def add_tags(self, ticket_id: int, tags: Sequence[str]) -> None:
        """Add tags in the helpdesk (keeping the ticket's others), then here."""
        self._add_tags(self._ticket(ticket_id), tags)
        self.local.add_tags(ticket_id, tags)

    def assign(
        self,
        ticket_id: int,
        *,
        team: EscalationTarget | None = None,
        assignee: str | None = None,
    ) -> None:
        """Assign in the helpdesk, then here."""
        self._assign(self._ticket(ticket_id), team, assignee)
        self.local.assign(ticket_id, team=team, assignee=assignee)

    def set_status(self, ticket_id: int, status: TicketStatus, *, actor: str) -> None:
        """Set the status in the helpdesk, then here."""
        self._set_status(self._ticket(ticket_id), status)
        self.local.set_status(ticket_id, status, actor=actor)

    def set_triage(
        self,
        ticket_id: int,
        *,
        category: str,
        confidence: float,
        stripe_customer_id: str | None,
    ) -> None:
        """Record the category and Stripe customer on the local mirror (the helpdesk gets the
        category as a tag, from the caller)."""
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
            # Two agents (or an agent and a webhook) saw the same ticket at once: one insert won.
            ticket = find()
            assert ticket is not None
    ticket.subject = subject[:998] or ticket.subject
    ticket.requester_email = requester_email[:320]
    ticket.requester_name = (requester_name or "")[:200] or ticket.requester_name
    ticket.organization = (organization or "")[:200] or ticket.organization
    session.flush()
    return ticket
