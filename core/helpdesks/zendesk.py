"""Zendesk: notes, replies and solving for tickets mirrored from a Zendesk account.

The mirror row has helpdesk_account = the subdomain and external_id = Zendesk's ticket ID;
the Ticket API is called first, then the change is mirrored (``core.helpdesks.mirrored``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests
from sqlalchemy.orm import Session

from core.db.models import Ticket
from core.domain import HelpdeskName, MessageKind
from core.errors import HelpdeskError
from core.helpdesks.http import check, send
from core.helpdesks.mirrored import MirroredHelpdesk

HELPDESK = HelpdeskName.ZENDESK
SERVICE = "Zendesk"
CLOSE_TAGS = ("billing_desk",)


class ZendeskHelpdesk(MirroredHelpdesk):
    """Helpdesk over the Zendesk Ticket API for one account, authenticated with an API token."""

    helpdesk, service, ticket_word = HELPDESK, SERVICE, "ticket"

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
        super().__init__(session)
        self.subdomain = subdomain
        self.http = http or requests.Session()
        self.base_url = (base_url or f"https://{subdomain}.zendesk.com").rstrip("/")
        self._auth = (f"{email}/token", api_token)

    def _ticket(self, ticket_id: int) -> Ticket:
        """The local mirror row, which must belong to this Zendesk account."""
        ticket = super()._ticket(ticket_id)
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

    def _post(self, ticket: Ticket, kind: MessageKind, body: str) -> None:
        """A reply is a public comment, a note a private one."""
        public = kind is MessageKind.OUTBOUND
        self._update(
            ticket,
            {"comment": {"body": body, "public": public}},
            doing="replying on" if public else "adding a note to",
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
