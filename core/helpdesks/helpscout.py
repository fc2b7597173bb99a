"""Help Scout: notes, replies and closing for conversations mirrored from a Help Scout account.

The mirror row's external_id is the conversation ID; the Mailbox API 2.0 is called first, then
the change is mirrored (``core.helpdesks.mirrored``). Authentication is OAuth2 client
credentials; the access token is cached until shortly before it expires and fetched again
once if Help Scout answers 401.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests
from sqlalchemy.orm import Session

from core.db.models import Ticket
from core.domain import HelpdeskName, MessageKind
from core.errors import HelpdeskError
from core.helpdesks.http import check, send
from core.helpdesks.mirrored import MirroredHelpdesk

HELPDESK = HelpdeskName.HELPSCOUT
SERVICE = "Help Scout"
DEFAULT_BASE_URL = "https://api.helpscout.net"
# Renew this long before expiry, so a token never lapses between our check and Help Scout's.
TOKEN_MARGIN_SECONDS = 60.0
MAX_REDIRECTS = 3


def as_html(text: str) -> str:
    """Plain text for Help Scout's ``text`` fields, which it renders as HTML: our notes quote
    customers and Stripe, so everything is escaped and only line breaks become markup."""
    return html.escape(text).replace("\n", "<br>\n")


class HelpScoutHelpdesk(MirroredHelpdesk):
    """Helpdesk over the Help Scout Mailbox API 2.0, authenticated as an OAuth2 client."""

    helpdesk, service, ticket_word = HELPDESK, SERVICE, "conversation"

    def __init__(
        self,
        session: Session,
        *,
        client_id: str,
        client_secret: str,
        http: requests.Session | None = None,
        base_url: str = DEFAULT_BASE_URL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(session)
        self.http = http or requests.Session()
        self.base_url = base_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._clock = clock
        self._access_token: str | None = None
        self._token_expires_at = 0.0

    # --- auth -----------------------------------------------------------------------------

    def _token(self) -> str:
        """A valid access token, from the cache or freshly granted."""
        now = self._clock()
        if self._access_token is not None and now < self._token_expires_at:
            return self._access_token
        doing = "getting a Help Scout access token (HELPSCOUT_CLIENT_ID/HELPSCOUT_CLIENT_SECRET)"
        response = send(
            self.http,
            "POST",
            f"{self.base_url}/v2/oauth2/token",
            service=SERVICE,
            doing=doing,
            data={
                "grant_type": "client_credentials",
                "client_id": self._client_id,
                "client_secret": self._client_secret,
            },
        )
        check(response, service=SERVICE, doing=doing)
        try:
            payload = response.json()
            token = payload["access_token"]
            expires_in = float(payload.get("expires_in", 0))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise HelpdeskError(f"{doing}: Help Scout sent an unreadable token response") from exc
        if not isinstance(token, str) or not token:
            raise HelpdeskError(f"{doing}: Help Scout sent no access token")
        self._access_token = token
        self._token_expires_at = now + max(0.0, expires_in - TOKEN_MARGIN_SECONDS)
        return token

    # --- HTTP -----------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, doing: str, json: Any) -> requests.Response:
        """Send an authenticated request, renewing the token once on 401 and following a
        moved conversation's 301 (same method and body, same API host only)."""
        url = f"{self.base_url}{path}"
        refreshed = False
        redirects = 0
        while True:
            response = send(
                self.http,
                method,
                url,
                service=SERVICE,
                doing=doing,
                headers={"Authorization": f"Bearer {self._token()}"},
                json=json,
            )
            if response.status_code == 401 and not refreshed:
                refreshed = True
                self._access_token = None  # revoked or expired early: ask for a new one
                continue
            location = response.headers.get("Location")
            if response.status_code == 301 and location:
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise HelpdeskError(f"{doing}: Help Scout redirected too many times")
                url = self._same_host(urljoin(url, location), doing=doing)
                continue
            return check(response, service=SERVICE, doing=doing)

    def _same_host(self, url: str, *, doing: str) -> str:
        """``url`` if it is on the API host; our bearer token goes nowhere else."""
        target, base = urlsplit(url), urlsplit(self.base_url)
        if (target.scheme, target.netloc) != (base.scheme, base.netloc):
            raise HelpdeskError(f"{doing}: Help Scout redirected off its API host")
        return url

    # --- helpers --------------------------------------------------------------------------

    @staticmethod
    def _path(ticket: Ticket, suffix: str = "") -> str:
        return f"/v2/conversations/{quote(ticket.external_id or '', safe='')}{suffix}"

    def _note(self, ticket: Ticket, text: str) -> None:
        """Post a note on the conversation."""
        self._call(
            "POST",
            self._path(ticket, "/notes"),
            doing=f"adding a note to Help Scout conversation {ticket.external_id}",
            json={"text": as_html(text)},
        )

    # --- Helpdesk protocol ----------------------------------------------------------------

    def _post(self, ticket: Ticket, kind: MessageKind, body: str) -> None:
        """A reply goes to the customer by email; a note stays with agents."""
        if kind is MessageKind.OUTBOUND:
            self._call(
                "POST",
                self._path(ticket, "/reply"),
                doing=f"replying on Help Scout conversation {ticket.external_id}",
                json={"customer": {"email": ticket.requester_email}, "text": as_html(body)},
            )
        else:
            self._note(ticket, body)

    def close(self, ticket_id: int, *, resolution: str, actor: str) -> None:
        """Close the conversation, then note the resolution on it."""
        ticket = self._ticket(ticket_id)
        # Status first: it is idempotent, so a retry after a failed note adds no second note.
        self._call(
            "PATCH",
            self._path(ticket),
            doing=f"closing Help Scout conversation {ticket.external_id}",
            json={"op": "replace", "path": "/status", "value": "closed"},
        )
        self._note(ticket, f"{resolution} (by {actor})")
        self.local.close(ticket_id, resolution=resolution, actor=actor)
