"""Zendesk: notes, replies and solving for tickets mirrored from a Zendesk account.

A Zendesk ticket becomes a local ``Ticket`` row (helpdesk="zendesk", helpdesk_account = the
subdomain, external_id = Zendesk's ticket ID) when an agent opens our sidebar on it. Every
method takes that local ID, calls the Ticket API, then mirrors the change locally so our own
history and audit trail stay complete. Zendesk is called first: if it fails, nothing local
changes and the caller's job can retry.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests
from sqlalchemy.orm import Session

from core.db.models import Ticket
from core.domain import MessageKind
from core.errors import HelpdeskError, NotFound
from core.helpdesks.http import check, send
from core.helpdesks.local import LocalHelpdesk

HELPDESK = "zendesk"
SERVICE = "Zendesk"
CLOSE_TAGS = ("billing_desk",)


class ZendeskHelpdesk:
    """Helpdesk over the Zendesk Ticket API for one account, authenticated with an API token."""

    def __init__(
        self,
        session: Session,
        *,
        subdomain: str,
        email: str,
        api_token: str,
        http: requests.Session | None = None,
        base_url: str | None = None,
    ) -> None:
        self.session = session
        self.subdomain = subdomain
        self.local = LocalHelpdesk(session)
        self.http = http or requests.Session()
        self.base_url = (base_url or f"https://{subdomain}.zendesk.com").rstrip("/")
        self._auth = (f"{email}/token", api_token)

    def _ticket(self, ticket_id: int) -> Ticket:
        """The local mirror row, which must belong to this Zendesk account."""
        ticket = self.session.get(Ticket, ticket_id)
        if ticket is None:
            raise NotFound(f"ticket {ticket_id} does not exist")
        if ticket.helpdesk != HELPDESK or not ticket.external_id:
            raise HelpdeskError(f"ticket {ticket_id} is not a Zendesk ticket")
        # The same numeric ID names a different ticket in another account.
        if ticket.helpdesk_account.lower() != self.subdomain.lower():
            raise HelpdeskError(
                f"ticket {ticket_id} belongs to Zendesk account {ticket.helpdesk_account!r}, "
                f"not {self.subdomain!r}"
            )
        return ticket

    def _update(self, ticket: Ticket, changes: dict[str, Any], *, doing: str) -> None:
        """PUT changes onto the Zendesk ticket behind ``ticket``."""
        external_id = ticket.external_id or ""
        doing = f"{doing} Zendesk ticket {external_id}"
        response = send(
            self.http,
            "PUT",
            f"{self.base_url}/api/v2/tickets/{quote(external_id, safe='')}.json",
            service=SERVICE,
            doing=doing,
            auth=self._auth,
            json={"ticket": changes},
        )
        check(response, service=SERVICE, doing=doing)

    def open_ticket(self, *, subject: str, requester_email: str, requester_name: str | None) -> int:
        """Refuse: Zendesk tickets are created in Zendesk, and mirrored when an agent opens one."""
        raise HelpdeskError("Zendesk tickets are created in Zendesk, not by Billing Desk")

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
        """Post a reply as a public comment or a note as a private one; customer mail is only
        mirrored, since Zendesk already has it."""
        if kind is not MessageKind.INBOUND:
            public = kind is MessageKind.OUTBOUND
            self._update(
                self._ticket(ticket_id),
                {"comment": {"body": body, "public": public}},
                doing="replying on" if public else "adding a note to",
            )
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
        """Add a private comment only agents see."""
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

    def close(self, ticket_id: int, *, resolution: str, actor: str) -> None:
        """Solve the ticket (Zendesk's automations close it later) with a private note giving
        the resolution, and tag it as handled by Billing Desk."""
        self._update(
            self._ticket(ticket_id),
            {
                "status": "solved",
                "comment": {"body": f"{resolution} (by {actor})", "public": False},
                "additional_tags": list(CLOSE_TAGS),
            },
            doing="solving",
        )
        self.local.close(ticket_id, resolution=resolution, actor=actor)
