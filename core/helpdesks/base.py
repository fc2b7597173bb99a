"""The Helpdesk contract: what Billing Desk needs from any helpdesk it works in.

Every helpdesk (the built-in one, Zendesk, Help Scout) keeps a ``Ticket`` row of ours for each
ticket we touch, and every method names the ticket by that row's ID. A hosted helpdesk is
written first and our row after, so a failed call leaves nothing half done here and the job
that called it can run again.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from core.domain import EscalationTarget, MessageKind, TicketStatus

# The tag every ticket Billing Desk triaged carries, beside the category's own.
BILLING_DESK_TAG = "billing_desk"


def category_tag(category: str) -> str:
    """The tag naming a ticket's category, e.g. ``billing_duplicate_charge``."""
    return f"billing_{category}"


def api_time(value: Any) -> datetime | None:
    """An ISO 8601 time as the helpdesks' APIs write it ("2026-12-01T10:00:00Z"), or None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def signed_by_any(
    message: bytes, signature: str, secrets: Sequence[str], digest: Callable[[], Any]
) -> bool:
    """Whether ``signature`` is base64(HMAC(secret, message)) for one of the secrets (several
    while one is being rotated out), compared in constant time."""
    sent = signature.encode("utf-8")
    return any(
        hmac.compare_digest(
            base64.b64encode(hmac.new(s.encode("utf-8"), message, digest).digest()), sent
        )
        for s in secrets
        if s
    )


@dataclass(frozen=True)
class ThreadEntry:
    """One entry of a ticket's thread, as the helpdesk holds it."""

    external_id: str
    kind: MessageKind
    author_email: str
    body: str
    # Help Scout's threads are HTML; Zendesk gives plain text. Mail code turns HTML into text.
    body_is_html: bool = False
    created_at: datetime | None = None
    # The helpdesk's own word on whether the author is who the entry says (Zendesk flags
    # comments it is unsure of; a forwarded or unknown sender is flagged there).
    trusted: bool = True
    # Where the entry came from ("email", "web", "api", "chat"...), as the helpdesk says.
    channel: str = ""


@dataclass(frozen=True)
class TicketSnapshot:
    """A ticket as the helpdesk shows it now."""

    external_id: str
    subject: str
    requester_email: str
    requester_name: str | None
    status: TicketStatus
    tags: tuple[str, ...] = ()
    thread: tuple[ThreadEntry, ...] = ()
    group: str | None = None

    @property
    def customer_entries(self) -> tuple[ThreadEntry, ...]:
        """The requester's own messages, oldest first."""
        return tuple(e for e in self.thread if e.kind is MessageKind.INBOUND)


@dataclass(frozen=True)
class TicketEvent:
    """A verified webhook delivery: which ticket changed, and how."""

    helpdesk: str
    account: str
    external_id: str
    # "created" (a new ticket) or "customer_reply"; anything else is acknowledged and dropped.
    kind: str
    # Names the delivery across retries and replays: the same key is handled once.
    key: str
    # The thread entry the event is about, when the helpdesk says.
    entry_id: str | None = None


class Helpdesk(Protocol):
    """Tickets as jobs and the sidebar see them, whichever helpdesk stores them."""

    # Whether a public reply added here reaches the customer by the helpdesk's own mail
    # (Zendesk, Help Scout); the built-in helpdesk's replies are ours to send by SMTP.
    sends_replies: bool

    def open_ticket(
        self,
        *,
        subject: str,
        requester_email: str,
        requester_name: str | None,
        body: str | None = None,
    ) -> int:
        """Open a ticket for the requester (in a hosted helpdesk, with ``body`` as its first
        message) and return our ID for it."""
        ...

    def find_ticket(self, *, requester_email: str, subject: str, since: datetime) -> int | None:
        """The helpdesk's own open ticket from this requester with this subject, created since
        ``since`` (our ID for it, mirrored on first sight), or None."""
        ...

    def read_ticket(self, ticket_id: int) -> TicketSnapshot:
        """The ticket and its whole thread, as the helpdesk has them now."""
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
        external_id: str | None = None,
    ) -> None:
        """Append a customer email, a public reply or an internal note; a customer email
        reopens a closed ticket unless ``reopen`` is false (auto-replies must not undo a
        resolution). Customer messages a hosted helpdesk already has are only recorded here."""
        ...

    def add_internal_note(self, ticket_id: int, body: str, *, author: str) -> None:
        """Add a note only agents see."""
        ...

    def add_tags(self, ticket_id: int, tags: Sequence[str]) -> None:
        """Add tags, keeping every tag the ticket already has."""
        ...

    def assign(
        self,
        ticket_id: int,
        *,
        team: EscalationTarget | None = None,
        assignee: str | None = None,
    ) -> None:
        """Put the ticket in a team's queue (Zendesk group, Help Scout team) and/or give it to
        a person (their email)."""
        ...

    def set_status(self, ticket_id: int, status: TicketStatus, *, actor: str) -> None:
        """Set the ticket's status without resolving it (open, pending)."""
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

    def close(self, ticket_id: int, *, resolution: str, actor: str) -> str | None:
        """Resolve the ticket ("Resolved — Refund issued"): solved in Zendesk, closed in Help
        Scout and here. None when done (or done already); otherwise why it was left open (an
        agent changed the ticket meanwhile)."""
        ...
