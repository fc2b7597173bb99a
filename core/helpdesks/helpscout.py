"""Help Scout: conversations read, answered, noted, tagged, assigned and closed through the
Mailbox API 2.0.

The mirror row's external_id is the conversation ID; conversation IDs are unique across a
Help Scout account, so the rows need no account name (``ACCOUNT``). Authentication is OAuth2
client credentials: the client keeps its access token (shared by every adapter in the
process) until shortly before it expires, and asks again once if Help Scout answers 401.
Requests are spent from the account's per-minute budget (200 by default, kept in Redis across
processes by the runtime). A merged conversation answers 301 with its new location: the same
request follows it (same method and body, same API host only) and our row follows too.

Webhooks: Help Scout signs each delivery's raw body with base64(HMAC-SHA1(secret, body)) in
``X-HelpScout-Signature`` and names the event in ``X-HelpScout-Event``.
"""

from __future__ import annotations

import hashlib
import html
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import Ticket
from core.domain import EscalationTarget, HelpdeskName, MessageKind, TicketStatus
from core.errors import HelpdeskError, InvalidInput, Unauthorized
from core.helpdesks.base import ThreadEntry, TicketEvent, TicketSnapshot, api_time, signed_by_any
from core.helpdesks.http import Transport, check, json_of
from core.helpdesks.mirrored import MirroredHelpdesk

HELPDESK = HelpdeskName.HELPSCOUT
SERVICE = "Help Scout"
DEFAULT_BASE_URL = "https://api.helpscout.net"
ACCOUNT = ""
# Renew this long before expiry, so a token never lapses between our check and Help Scout's.
TOKEN_MARGIN_SECONDS = 60.0
MAX_REDIRECTS = 3
MAX_PAGES = 50
_STATUSES = {
    "active": TicketStatus.OPEN,
    "open": TicketStatus.OPEN,
    "pending": TicketStatus.PENDING,
    "closed": TicketStatus.CLOSED,
    "spam": TicketStatus.CLOSED,
}
_SET_STATUSES = {TicketStatus.OPEN: "active", TicketStatus.PENDING: "pending"}
_KINDS = {"customer": MessageKind.INBOUND, "reply": MessageKind.OUTBOUND}
_KINDS |= {"message": MessageKind.OUTBOUND, "note": MessageKind.NOTE}
_EARLIEST = datetime.min.replace(tzinfo=UTC)  # a thread with no time reads first


def as_html(text: str) -> str:
    """Plain text for Help Scout's ``text`` fields, which it renders as HTML: our notes quote
    customers and Stripe, so everything is escaped and only line breaks become markup."""
    return html.escape(text).replace("\n", "<br>\n")


class HelpScoutClient:
    """One Help Scout account's API, shared by every adapter in the process."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        transport: Transport | None = None,
        base_url: str = DEFAULT_BASE_URL,
        account: str = ACCOUNT,
        mailbox_id: str | None = None,
        teams: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.transport = transport or Transport(SERVICE)
        self.account = account
        self.mailbox_id = mailbox_id
        # Team -> Help Scout user ID of the team (HELPSCOUT_TEAMS): assignTo takes it.
        self.teams = dict(teams or {})
        self._client_id = client_id
        self._client_secret = client_secret
        self._clock = clock
        self._access_token: str | None = None
        self._token_expires_at = 0.0
        self._lock = threading.Lock()
        self.tokens_granted = 0

    def _token(self) -> str:
        """A valid access token, from the cache or freshly granted (one grant at a time)."""
        with self._lock:
            now = self._clock()
            if self._access_token is not None and now < self._token_expires_at:
                return self._access_token
            doing = (
                "getting a Help Scout access token (HELPSCOUT_CLIENT_ID/HELPSCOUT_CLIENT_SECRET)"
            )
            response = self.transport.send(
                "POST",
                f"{self.base_url}/v2/oauth2/token",
                doing=doing,
                repeatable=True,
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
                raise HelpdeskError(
                    f"{doing}: Help Scout sent an unreadable token response"
                ) from exc
            if not isinstance(token, str) or not token:
                raise HelpdeskError(f"{doing}: Help Scout sent no access token")
            self.tokens_granted += 1
            self._access_token = token
            self._token_expires_at = now + max(0.0, expires_in - TOKEN_MARGIN_SECONDS)
            return token

    def _forget_token(self, token: str) -> None:
        with self._lock:
            if self._access_token == token:
                self._access_token = None

    def call(
        self,
        method: str,
        path: str,
        *,
        doing: str,
        repeatable: bool,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[requests.Response, str]:
        """Send an authenticated request, renewing the token once on 401 and following a
        moved conversation's 301; the checked response and the URL that answered."""
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        url = self._same_host(url, doing=doing)
        refreshed = False
        redirects = 0
        while True:
            token = self._token()
            response = self.transport.send(
                method,
                url,
                doing=doing,
                repeatable=repeatable,
                headers={"Authorization": f"Bearer {token}"},
                json=json_body,
                params=params,
            )
            if response.status_code == 401 and not refreshed:
                refreshed = True
                self._forget_token(token)  # revoked or expired early: ask for a new one
                continue
            location = response.headers.get("Location")
            if response.status_code in (301, 308) and location:
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise HelpdeskError(f"{doing}: Help Scout redirected too many times")
                url = self._same_host(urljoin(url, location), doing=doing)
                params = None  # the new location is complete
                continue
            return check(response, service=SERVICE, doing=doing), url

    def get(self, path: str, *, doing: str, params: Mapping[str, str] | None = None) -> Any:
        response, url = self.call("GET", path, doing=doing, repeatable=True, params=params)
        return json_of(response, service=SERVICE, doing=doing), url

    def _same_host(self, url: str, *, doing: str) -> str:
        """``url`` if it is on the API host; our bearer token goes nowhere else."""
        target, base = urlsplit(url), urlsplit(self.base_url)
        if (target.scheme, target.netloc) != (base.scheme, base.netloc):
            raise HelpdeskError(f"{doing}: Help Scout redirected off its API host")
        return url


class HelpScoutHelpdesk(MirroredHelpdesk):
    """The Helpdesk contract over one Help Scout account."""

    helpdesk, service, ticket_word = HELPDESK, SERVICE, "conversation"
    account_scoped = False  # rows mirrored before by mailbox ID are the same conversations
    final_statuses: frozenset[TicketStatus] = frozenset()  # a customer's reply reopens any

    def __init__(self, session: Session, client: HelpScoutClient) -> None:
        super().__init__(session)
        self.client = client
        self.account = client.account

    @staticmethod
    def _path(ticket: Ticket | str, suffix: str = "") -> str:
        external_id = ticket if isinstance(ticket, str) else ticket.external_id or ""
        return f"/v2/conversations/{quote(external_id, safe='')}{suffix}"

    def _call(self, ticket: Ticket, method: str, suffix: str, *, doing: str, body: Any) -> None:
        """A write on the conversation, following it if it was merged; our row follows. Help
        Scout answers a write to a merged conversation 404 ("call Get Conversation to get the
        new location"), or 301: either way the write goes to where the conversation lives."""
        for attempt in (1, 2):
            try:
                _response, url = self.client.call(
                    method,
                    self._path(ticket, suffix),
                    doing=f"{doing} Help Scout conversation {ticket.external_id}",
                    # Setting a status or the tags may be sent twice; a note or reply may not.
                    repeatable=method in ("PATCH", "PUT"),
                    json_body=body,
                )
            except HelpdeskError as exc:
                was = ticket.external_id
                if exc.status != 404 or attempt == 2:
                    raise
                try:
                    self._conversation(ticket)  # a merged one answers 301 to its new home
                except HelpdeskError as check:
                    if check.retryable:
                        raise
                    raise exc from exc.__cause__
                if ticket.external_id == was:
                    raise
                continue
            self._follow(ticket, url, suffix)
            return

    def _follow(self, ticket: Ticket, url: str, suffix: str) -> None:
        """After a merge, the conversation lives on under another ID: our row takes it (unless
        we already mirror that one, whose row then carries on)."""
        path = urlsplit(url).path
        prefix = "/v2/conversations/"
        if not path.startswith(prefix):
            return
        moved_to = path[len(prefix) :].removesuffix(suffix).strip("/")
        if not moved_to or moved_to == ticket.external_id or not moved_to.isdigit():
            return
        taken = self.session.scalar(
            select(Ticket.id).where(
                Ticket.helpdesk == self.helpdesk,
                Ticket.helpdesk_account == self.account,
                Ticket.external_id == moved_to,
            )
        )
        if taken is None:
            ticket.external_id = moved_to
            self.session.flush()

    # --- reading --------------------------------------------------------------------------

    def _conversation(self, ticket: Ticket) -> dict[str, Any]:
        payload, url = self.client.get(
            self._path(ticket), doing=f"reading Help Scout conversation {ticket.external_id}"
        )
        self._follow(ticket, url, "")
        return payload

    def _snapshot(self, ticket: Ticket) -> TicketSnapshot:
        conversation = self._conversation(ticket)
        entries: list[ThreadEntry] = []
        url: str | None = self._path(ticket, "/threads")
        for _ in range(MAX_PAGES):
            if not url:
                break
            page, _at = self.client.get(
                url, doing=f"reading the threads of Help Scout conversation {ticket.external_id}"
            )
            for thread in (page.get("_embedded") or {}).get("threads") or []:
                entry = _entry(thread) if isinstance(thread, dict) else None
                if entry is not None:
                    entries.append(entry)
            url = ((page.get("_links") or {}).get("next") or {}).get("href")
        # Help Scout lists threads newest first; a thread reads oldest first.
        entries.sort(key=lambda e: (e.created_at or _EARLIEST, e.external_id))
        return _snapshot(conversation, tuple(entries))

    def _search(self, requester_email: str, since: datetime) -> list[TicketSnapshot]:
        email = requester_email.replace('"', "")
        params = {"query": f'(email:"{email}")', "status": "all", "sortField": "createdAt"}
        if self.client.mailbox_id:
            params["mailbox"] = self.client.mailbox_id
        payload, _url = self.client.get(
            "/v2/conversations",
            doing=f"searching Help Scout for {requester_email}'s conversation",
            params=params,
        )
        found = []
        for conversation in (payload.get("_embedded") or {}).get("conversations") or []:
            if isinstance(conversation, dict):
                created = api_time(conversation.get("createdAt"))
                if created is None or created >= since:
                    found.append(_snapshot(conversation, ()))
        return found

    # --- writing --------------------------------------------------------------------------

    def _create(
        self, subject: str, requester_email: str, requester_name: str | None, body: str
    ) -> str:
        if not self.client.mailbox_id:
            raise HelpdeskError("HELPSCOUT_MAILBOX_ID is not set: which mailbox to open it in")
        customer: dict[str, Any] = {"email": requester_email}
        if requester_name:
            customer["firstName"] = requester_name[:40]
        response, _url = self.client.call(
            "POST",
            "/v2/conversations",
            doing=f"opening a Help Scout conversation for {requester_email}",
            repeatable=False,
            json_body={
                "subject": subject[:255],
                "customer": customer,
                "mailboxId": int(self.client.mailbox_id)
                if self.client.mailbox_id.isdigit()
                else self.client.mailbox_id,
                "type": "email",
                "status": "active",
                "threads": [{"type": "customer", "customer": customer, "text": as_html(body)}],
            },
        )
        created = (
            response.headers.get("Resource-ID")
            or urlsplit(response.headers.get("Location", "")).path.rstrip("/").rsplit("/", 1)[-1]
        )
        if not created:
            raise HelpdeskError("Help Scout created a conversation but did not say which")
        return created

    def _note(self, ticket: Ticket, text: str) -> None:
        self._call(ticket, "POST", "/notes", doing="adding a note to", body={"text": as_html(text)})

    def _post(self, ticket: Ticket, kind: MessageKind, body: str) -> None:
        """A reply goes to the customer by email; a note stays with agents."""
        if kind is MessageKind.OUTBOUND:
            # Create Reply names the customer replied to by Help Scout's ID for them.
            customer = self._conversation(ticket).get("primaryCustomer") or {}
            who = (
                {"id": customer["id"]}
                if isinstance(customer, dict) and customer.get("id")
                else {"email": ticket.requester_email}
            )
            self._call(
                ticket,
                "POST",
                "/reply",
                doing="replying on",
                body={"customer": who, "text": as_html(body)},
            )
        else:
            self._note(ticket, body)

    def _add_tags(self, ticket: Ticket, tags: Sequence[str]) -> None:
        """Help Scout's tags call replaces the list: the conversation's own tags go with ours."""
        current = list(_snapshot(self._conversation(ticket), ()).tags)
        wanted = list(dict.fromkeys([*current, *tags]))
        if wanted != current:
            self._call(ticket, "PUT", "/tags", doing="tagging", body={"tags": wanted})

    def _assign(self, ticket: Ticket, team: EscalationTarget | None, assignee: str | None) -> None:
        if team is None:
            return  # a person is assigned in Help Scout by its own user ID, not by email
        user_id = self.client.teams.get(str(team))
        if user_id is None:
            raise HelpdeskError(
                f"no Help Scout team for {team.label}: map it in HELPSCOUT_TEAMS "
                f"({team}=<the team's user id>)"
            )
        self._call(
            ticket,
            "PATCH",
            "",
            doing="assigning",
            body={
                "op": "replace",
                "path": "/assignTo",
                "value": int(user_id) if user_id.isdigit() else user_id,
            },
        )

    def _set_status(self, ticket: Ticket, status: TicketStatus) -> None:
        if status not in _SET_STATUSES:
            raise InvalidInput(f"Help Scout statuses set directly: {', '.join(_SET_STATUSES)}")
        self._call(
            ticket,
            "PATCH",
            "",
            doing="updating",
            body={"op": "replace", "path": "/status", "value": _SET_STATUSES[status]},
        )

    def close(self, ticket_id: int, *, resolution: str, actor: str) -> str | None:
        """Close the conversation, then note the resolution on it."""
        ticket = self._ticket(ticket_id)
        # Status first: it is idempotent, so a retry after a failed note adds no second note.
        self._call(
            ticket,
            "PATCH",
            "",
            doing="closing",
            body={"op": "replace", "path": "/status", "value": "closed"},
        )
        self._note(ticket, f"{resolution} (by {actor})")
        self.local.close(ticket_id, resolution=resolution, actor=actor)
        return None


def _entry(thread: Mapping[str, Any]) -> ThreadEntry | None:
    kind = _KINDS.get(str(thread.get("type")))
    if kind is None or thread.get("state") in ("draft", "hidden"):
        return None  # line items (status changes, merges...), drafts: not part of the talk
    person = thread.get("customer") if kind is MessageKind.INBOUND else thread.get("createdBy")
    person = person if isinstance(person, dict) else thread.get("createdBy") or {}
    source = thread.get("source") or {}
    return ThreadEntry(
        external_id=str(thread.get("id")),
        kind=kind,
        author_email=str(person.get("email") or ""),
        body=str(thread.get("body") or ""),
        body_is_html=True,
        created_at=api_time(thread.get("createdAt")),
        channel=str(source.get("type") or "") if isinstance(source, dict) else "",
    )


def _snapshot(conversation: Mapping[str, Any], thread: tuple[ThreadEntry, ...]) -> TicketSnapshot:
    customer = conversation.get("primaryCustomer") or conversation.get("customer") or {}
    name = " ".join(str(customer.get(k) or "") for k in ("first", "last")).strip() or None
    assignee = conversation.get("assignee") or {}
    return TicketSnapshot(
        external_id=str(conversation.get("id")),
        subject=str(conversation.get("subject") or ""),
        requester_email=str(customer.get("email") or ""),
        requester_name=name,
        status=_STATUSES.get(str(conversation.get("status")), TicketStatus.OPEN),
        tags=tuple(
            str(t.get("tag") if isinstance(t, dict) else t) for t in conversation.get("tags") or []
        ),
        thread=thread,
        group=str(assignee.get("id"))
        if isinstance(assignee, dict) and assignee.get("id")
        else None,
    )


# --- webhooks -----------------------------------------------------------------------------

SIGNATURE_HEADER = "X-HelpScout-Signature"
EVENT_HEADER = "X-HelpScout-Event"
_EVENT_KINDS = {"convo.created": "created", "convo.customer.reply.created": "customer_reply"}


def verify_webhook(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> None:
    """Check ``X-HelpScout-Signature`` over the raw body against each secret, or raise
    Unauthorized. Help Scout signs no timestamp: a replay is caught by the delivery's key."""
    signature = headers.get(SIGNATURE_HEADER) or ""
    if not signature:
        raise Unauthorized("helpscout webhook signature missing")
    if not signed_by_any(body, signature, secrets, hashlib.sha1):
        raise Unauthorized("helpscout webhook signature mismatch")


def parse_webhook(body: bytes, headers: Mapping[str, str], account: str) -> TicketEvent:
    """The conversation a verified delivery is about, and the newest customer thread in it:
    the key (conversation + that thread) is the same however often the delivery comes."""
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise InvalidInput("The Help Scout webhook body is not JSON.") from exc
    if not isinstance(payload, dict):
        raise InvalidInput("The Help Scout webhook body is not a JSON object.")
    conversation_id = str(payload.get("id") or "").strip()
    if not conversation_id.isdigit():
        raise InvalidInput("The Help Scout webhook names no conversation.")
    event = (headers.get(EVENT_HEADER) or "").strip()
    kind = _EVENT_KINDS.get(event, event or "unknown")
    threads = (payload.get("_embedded") or {}).get("threads") or payload.get("threads") or []
    customer_threads = [
        t for t in threads if isinstance(t, dict) and str(t.get("type")) == "customer"
    ]
    newest = max(
        customer_threads,
        key=lambda t: (str(t.get("createdAt") or ""), str(t.get("id"))),
        default=None,
    )
    entry_id = str(newest.get("id")) if newest and newest.get("id") is not None else None
    stamp = entry_id or str(payload.get("userUpdatedAt") or hashlib.sha256(body).hexdigest()[:40])
    return TicketEvent(
        helpdesk=HELPDESK,
        account=account,
        external_id=conversation_id,
        kind=kind,
        key=f"helpscout:{account}:{conversation_id}:{kind}:{stamp}"[:300],
        entry_id=entry_id,
    )
