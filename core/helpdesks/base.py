"""The Helpdesk protocol: what Billing Desk needs from any helpdesk it works with."""

from __future__ import annotations

from typing import Protocol

from core.domain import MessageKind


class Helpdesk(Protocol):
    """Tickets as seen by jobs and the sidebar, whichever helpdesk stores them."""

    def open_ticket(self, *, subject: str, requester_email: str, requester_name: str | None) -> int:
        """Create a ticket and return its ID."""
        ...

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
        """Append a customer email, a reply or a note; a customer email reopens a closed ticket
        unless ``reopen`` is false (auto-replies must not undo a resolution)."""
        ...

    def add_internal_note(self, ticket_id: int, body: str, *, author: str) -> None:
        """Add a note only agents see."""
        ...

    def set_triage(
        self,
        ticket_id: int,
        *,
        category: str,
        confidence: float,
        stripe_customer_id: str | None,
    ) -> None:
        """Record the ticket's category and matched Stripe customer."""
        ...

    def close(self, ticket_id: int, *, resolution: str, actor: str) -> None:
        """Close the ticket with a resolution status such as "Resolved — Refund issued"."""
        ...
