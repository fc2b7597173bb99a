"""Zendesk: tickets read, answered, tagged, assigned and solved through the Ticketing API.

The mirror row has helpdesk_account = the subdomain and external_id = Zendesk's ticket ID.
Authentication is an API token (``{email}/token`` with HTTP Basic). Comments are added with a
ticket update (``comment.public`` false for a note), tags through the Tags endpoint (which adds
without dropping an agent's), and every update that sets a field is a safe update against the
version of the ticket after our own last write: when anyone else changed the ticket since,
Zendesk answers 409 and we leave their change standing.

Webhooks: Zendesk signs each delivery with base64(HMAC-SHA256(secret, timestamp + body)),
in ``X-Zendesk-Webhook-Signature`` with the timestamp in ``X-Zendesk-Webhook-Signature-Timestamp``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from sqlalchemy.orm import Session

from core.db.models import Ticket
from core.domain import EscalationTarget, HelpdeskName, MessageKind, TicketStatus
from core.errors import HelpdeskConflict, HelpdeskError, InvalidInput, Unauthorized
from core.helpdesks.base import (
    BILLING_DESK_TAG,
    ThreadEntry,
    TicketEvent,
    TicketSnapshot,
    api_time,
    signed_by_any,
)
from core.helpdesks.http import Transport, check, json_of
from core.helpdesks.mirrored import MirroredHelpdesk

HELPDESK = HelpdeskName.ZENDESK
SERVICE = "Zendesk"
CLOSE_TAGS = (BILLING_DESK_TAG,)
# 50 pages of 100: Zendesk keeps at most 5,000 comments on a ticket.
MAX_PAGES = 50
PAGE_SIZE = 100
# Comment flags that mean Zendesk is not sure the author is who the comment says: 0 unsure it
# should be trusted, 2 author not part of the conversation, 3 author not signed in, 11 sent
# on behalf of the requester (Ticket Comments API, "Comment flags").
UNTRUSTED_FLAGS = frozenset({0, 2, 3, 11})
STAFF_ROLES = frozenset({"agent", "admin"})
_STATUSES = {
    "new": TicketStatus.OPEN,
    "open": TicketStatus.OPEN,
    "hold": TicketStatus.OPEN,
    "pending": TicketStatus.PENDING,
    "solved": TicketStatus.SOLVED,
    "closed": TicketStatus.CLOSED,
}
_SET_STATUSES = {TicketStatus.OPEN: "open", TicketStatus.PENDING: "pending"}


class ZendeskClient:
    """One Zendesk account's API, shared by every adapter in the process."""

    def __init__(
        self,
        *,
        subdomain: str,
        email: str,
        api_token: str,
        transport: Transport | None = None,
        base_url: str | None = None,
        groups: Mapping[str, str] | None = None,
    ) -> None:
        self.subdomain = subdomain
        self.base_url = (base_url or f"https://{subdomain}.zendesk.com").rstrip("/")
        self.transport = transport or Transport(SERVICE)
        self.email = email
        self._auth = (f"{email}/token", api_token)
        # Team -> group ID as configured (ZENDESK_GROUPS); the rest are found by their name.
        self._groups = dict(groups or {})
        self._group_names: dict[str, str] | None = None
        self._lock = threading.Lock()

    def call(
        self,
        method: str,
        path: str,
        *,
        doing: str,
        repeatable: bool,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One API call on a path or a full URL on the account's host; its JSON answer."""
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        if urlsplit(url).netloc != urlsplit(self.base_url).netloc:
            raise HelpdeskError(f"{doing}: Zendesk pointed us off its host")
        response = self.transport.send(
            method,
            url,
            doing=doing,
            repeatable=repeatable,
            auth=self._auth,
            json=json_body,
            params=params,
        )
        if response.status_code == 409:
            raise HelpdeskConflict(
                f"{doing}: the ticket changed in Zendesk since Billing Desk last wrote to it",
                status=409,
            )
        check(response, service=SERVICE, doing=doing)
        if response.status_code == 204 or not response.content:
            return {}
        return json_of(response, service=SERVICE, doing=doing)

    def group_id(self, team: EscalationTarget) -> str | None:
        """The Zendesk group of a team: configured, or the group named like the team."""
        if str(team) in self._groups:
            return self._groups[str(team)]
        with self._lock:
            if self._group_names is None:
                names: dict[str, str] = {}
                url: str | None = "/api/v2/groups.json"
                for _ in range(MAX_PAGES):
                    if not url:
                        break
                    page = self.call("GET", url, doing="listing Zendesk groups", repeatable=True)
                    for group in page.get("groups") or []:
                        if isinstance(group, dict) and group.get("name"):
                            names[str(group["name"]).strip().lower()] = str(group["id"])
                    url = page.get("next_page")
                self._group_names = names
        return self._group_names.get(team.label.lower())


class ZendeskHelpdesk(MirroredHelpdesk):
    """The Helpdesk contract over one Zendesk account."""

    helpdesk, service, ticket_word = HELPDESK, SERVICE, "ticket"

    def __init__(self, session: Session, client: ZendeskClient) -> None:
        super().__init__(session)
        self.client = client
        self.account = client.subdomain

    # --- reading --------------------------------------------------------------------------

    def _path(self, ticket: Ticket | str, suffix: str = ".json") -> str:
        external_id = ticket if isinstance(ticket, str) else ticket.external_id or ""
        return f"/api/v2/tickets/{quote(external_id, safe='')}{suffix}"

    def _head(self, external_id: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """The ticket's fields and its users (requester, submitter, assignee)."""
        payload = self.client.call(
            "GET",
            self._path(external_id),
            doing=f"reading Zendesk ticket {external_id}",
            repeatable=True,
            params={"include": "users"},
        )
        ticket = payload.get("ticket")
        if not isinstance(ticket, dict):
            raise HelpdeskError(f"Zendesk sent no ticket {external_id}")
        return ticket, _users(payload)

    def _snapshot(self, ticket: Ticket) -> TicketSnapshot:
        external_id = ticket.external_id or ""
        fields, users = self._head(external_id)
        entries: list[ThreadEntry] = []
        url: str | None = self._path(external_id, "/comments.json")
        params: dict[str, str] | None = {"page[size]": str(PAGE_SIZE), "include": "users"}
        for _ in range(MAX_PAGES):
            if not url:
                break
            page = self.client.call(
                "GET",
                url,
                doing=f"reading the comments of Zendesk ticket {external_id}",
                repeatable=True,
                params=params,
            )
            users.update(_users(page))
            for comment in page.get("comments") or []:
                if isinstance(comment, dict):
                    entries.append(_entry(comment, users, fields.get("requester_id")))
            meta, links = page.get("meta") or {}, page.get("links") or {}
            url = links.get("next") if meta.get("has_more") else None
            params = None  # the next link carries them
        return _ticket_snapshot(fields, users, tuple(entries))

    def _search(self, requester_email: str, since: datetime) -> list[TicketSnapshot]:
        day = (since - timedelta(days=1)).date().isoformat()
        payload = self.client.call(
            "GET",
            "/api/v2/search.json",
            doing=f"searching Zendesk for {requester_email}'s ticket",
            repeatable=True,
            params={
                "query": f'type:ticket requester:"{requester_email}" created>{day}',
                "sort_by": "created_at",
                "sort_order": "desc",
            },
        )
        found = []
        for result in payload.get("results") or []:
            if isinstance(result, dict) and result.get("result_type", "ticket") == "ticket":
                # Search results carry no users: the requester is the one we searched for.
                snapshot = _ticket_snapshot(result, {}, ())
                found.append(replace(snapshot, requester_email=requester_email))
        return found

    # --- writing --------------------------------------------------------------------------

    def _update(self, ticket: Ticket, changes: dict[str, Any], *, doing: str, safe: bool) -> None:
        """PUT changes onto the ticket; ``safe`` refuses (HelpdeskConflict) when someone else
        changed it since our own last write. Our row keeps the version after this write."""
        body = dict(changes)
        if safe and ticket.helpdesk_version:
            body |= {"safe_update": True, "updated_stamp": ticket.helpdesk_version}
        payload = self.client.call(
            "PUT",
            self._path(ticket),
            doing=f"{doing} Zendesk ticket {ticket.external_id}",
            # A comment is never sent twice by the transport; setting fields may be.
            repeatable="comment" not in changes,
            json_body={"ticket": body},
        )
        updated = payload.get("ticket")
        if isinstance(updated, dict) and updated.get("updated_at"):
            ticket.helpdesk_version = str(updated["updated_at"])[:40]

    def _remember_version(self, ticket: Ticket) -> None:
        fields, _ = self._head(ticket.external_id or "")
        if fields.get("updated_at"):
            ticket.helpdesk_version = str(fields["updated_at"])[:40]

    def _create(
        self, subject: str, requester_email: str, requester_name: str | None, body: str
    ) -> str:
        requester = {"email": requester_email} | (
            {"name": requester_name} if requester_name else {}
        )
        payload = self.client.call(
            "POST",
            "/api/v2/tickets.json",
            doing=f"opening a Zendesk ticket for {requester_email}",
            repeatable=False,
            json_body={
                "ticket": {
                    "subject": subject[:250],
                    "comment": {"body": body, "public": True},
                    "requester": requester,
                }
            },
        )
        created = payload.get("ticket")
        if not isinstance(created, dict) or created.get("id") is None:
            raise HelpdeskError("Zendesk created a ticket but did not say which")
        return str(created["id"])

    def _post(self, ticket: Ticket, kind: MessageKind, body: str) -> None:
        """A reply is a public comment, a note a private one."""
        public = kind is MessageKind.OUTBOUND
        self._update(
            ticket,
            {"comment": {"body": body, "public": public}},
            doing="replying on" if public else "adding a note to",
            safe=False,  # adding a comment overwrites nothing
        )

    def _add_tags(self, ticket: Ticket, tags: Sequence[str]) -> None:
        """The Tags endpoint's PUT adds (POST would replace an agent's tags)."""
        self.client.call(
            "PUT",
            self._path(ticket, "/tags.json"),
            doing=f"tagging Zendesk ticket {ticket.external_id}",
            repeatable=True,
            json_body={"tags": list(tags)},
        )
        # The Tags endpoint answers with tags only: our version is the ticket's after it.
        self._remember_version(ticket)

    def _assign(self, ticket: Ticket, team: EscalationTarget | None, assignee: str | None) -> None:
        changes: dict[str, Any] = {}
        if team is not None:
            group = self.client.group_id(team)
            if group is None:
                raise HelpdeskError(
                    f"no Zendesk group for {team.label}: create a group named "
                    f'"{team.label}" or map it in ZENDESK_GROUPS ({team}=<group id>)'
                )
            changes["group_id"] = int(group) if group.isdigit() else group
        if assignee is not None:
            changes["assignee_email"] = assignee
        if not changes:
            return
        try:
            self._update(ticket, changes, doing="assigning", safe=True)
        except HelpdeskConflict:
            fields, _ = self._head(ticket.external_id or "")
            if fields.get("group_id") or fields.get("assignee_id"):
                return  # an agent placed the ticket meanwhile: their choice stands
            self._remember_version(ticket)
            self._update(ticket, changes, doing="assigning", safe=True)

    def _set_status(self, ticket: Ticket, status: TicketStatus) -> None:
        if status not in _SET_STATUSES:
            raise InvalidInput(f"Zendesk statuses set directly: {', '.join(_SET_STATUSES)}")
        self._update(ticket, {"status": _SET_STATUSES[status]}, doing="updating", safe=True)

    def close(self, ticket_id: int, *, resolution: str, actor: str) -> str | None:
        """Solve the ticket (Zendesk's automations close it later) with a private note giving
        the resolution, tagged as handled by Billing Desk; unless someone changed the ticket
        in Zendesk since our last write, when their change stands and an agent decides."""
        ticket = self._ticket(ticket_id)
        note = f"{resolution} (by {actor})"
        solve: dict[str, Any] = {
            "status": "solved",
            "comment": {"body": note, "public": False},
            "additional_tags": list(CLOSE_TAGS),
        }
        fields, _ = self._head(ticket.external_id or "")
        if not fields.get("assignee_id"):
            # Zendesk solves only assigned tickets: ours is the agent the API token is for.
            solve["assignee_email"] = self.client.email
        try:
            self._update(ticket, solve, doing="solving", safe=True)
        except HelpdeskConflict:
            fields, _ = self._head(ticket.external_id or "")
            if _STATUSES.get(str(fields.get("status"))) in (
                TicketStatus.SOLVED,
                TicketStatus.CLOSED,
            ):
                self.local.close(ticket_id, resolution=resolution, actor=actor)
                return None  # solved already (by us, on a run that died, or by an agent)
            why = (
                "Not solved: the ticket changed in Zendesk while the plan ran (an agent's edit "
                "or a new comment), and a safe update does not overwrite it. An agent decides."
            )
            self.add_internal_note(ticket_id, why, author="billing-desk")
            return why
        self.local.add_tags(ticket_id, CLOSE_TAGS)
        self.local.close(ticket_id, resolution=resolution, actor=actor)
        return None


def _users(payload: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        str(user["id"]): user
        for user in payload.get("users") or []
        if isinstance(user, dict) and user.get("id") is not None
    }


def _entry(
    comment: Mapping[str, Any], users: Mapping[str, dict[str, Any]], requester_id: Any
) -> ThreadEntry:
    author = users.get(str(comment.get("author_id")), {})
    metadata = comment.get("metadata") or {}
    flags = {f for f in metadata.get("flags") or [] if isinstance(f, int)}
    trusted = metadata.get("trusted", True) is not False and not (flags & UNTRUSTED_FLAGS)
    if not comment.get("public", True):
        kind = MessageKind.NOTE
    elif str(author.get("role", "")) in STAFF_ROLES and str(comment.get("author_id")) != str(
        requester_id
    ):
        kind = MessageKind.OUTBOUND
    else:
        kind = MessageKind.INBOUND
    via = comment.get("via") or {}
    return ThreadEntry(
        external_id=str(comment.get("id")),
        kind=kind,
        author_email=str(author.get("email") or ""),
        body=str(comment.get("plain_body") or comment.get("body") or ""),
        created_at=api_time(comment.get("created_at")),
        trusted=trusted,
        channel=str(via.get("channel") or "") if isinstance(via, dict) else "",
    )


def _ticket_snapshot(
    fields: Mapping[str, Any], users: Mapping[str, dict[str, Any]], thread: tuple[ThreadEntry, ...]
) -> TicketSnapshot:
    requester = users.get(str(fields.get("requester_id")), {})
    return TicketSnapshot(
        external_id=str(fields.get("id")),
        subject=str(fields.get("subject") or fields.get("raw_subject") or ""),
        requester_email=str(requester.get("email") or ""),
        requester_name=requester.get("name"),
        status=_STATUSES.get(str(fields.get("status")), TicketStatus.OPEN),
        tags=tuple(str(t) for t in fields.get("tags") or []),
        thread=thread,
        group=str(fields["group_id"]) if fields.get("group_id") else None,
    )


# --- webhooks -----------------------------------------------------------------------------

SIGNATURE_HEADER = "X-Zendesk-Webhook-Signature"
TIMESTAMP_HEADER = "X-Zendesk-Webhook-Signature-Timestamp"
INVOCATION_HEADER = "X-Zendesk-Webhook-Invocation-Id"
TOLERANCE_SECONDS = 300
CREATED = "zen:event-type:ticket.created"
COMMENT_ADDED = "zen:event-type:ticket.comment_added"


def verify_webhook(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    *,
    now: datetime,
    tolerance: int = TOLERANCE_SECONDS,
) -> None:
    """Check a delivery's signature (against each secret, for rotation) and that it was
    signed within ``tolerance`` seconds, or raise Unauthorized saying which check failed."""
    signature = headers.get(SIGNATURE_HEADER) or ""
    stamp = headers.get(TIMESTAMP_HEADER) or ""
    if not signature or not stamp:
        raise Unauthorized("zendesk webhook signature or timestamp missing")
    if not signed_by_any(stamp.encode("utf-8") + body, signature, secrets, hashlib.sha256):
        raise Unauthorized("zendesk webhook signature mismatch")
    signed_at = api_time(stamp)
    if signed_at is None:
        raise Unauthorized("zendesk webhook timestamp unreadable")
    if signed_at.tzinfo is None:
        signed_at = signed_at.replace(tzinfo=UTC)
    if abs((now - signed_at).total_seconds()) > tolerance:
        raise Unauthorized("zendesk webhook signed too long ago (a replay?)")


def parse_webhook(body: bytes, headers: Mapping[str, str], account: str) -> TicketEvent:
    """The ticket a verified delivery is about. Takes Zendesk's event-subscription bodies
    (``ticket.created``, ``ticket.comment_added``) and a trigger's JSON body naming the
    ticket (``{"ticket_id": "{{ticket.id}}"}`` or ``{"ticket": {"id": ...}}``)."""
    try:
        payload = json.loads(body)
    except ValueError as exc:
        raise InvalidInput("The Zendesk webhook body is not JSON.") from exc
    if not isinstance(payload, dict):
        raise InvalidInput("The Zendesk webhook body is not a JSON object.")
    event_type = str(payload.get("type") or "")
    detail = _object(payload.get("detail"))
    ticket = _object(payload.get("ticket"))
    ticket_id = (
        _subject_ticket(payload.get("subject"))
        or detail.get("id")
        or payload.get("ticket_id")
        or ticket.get("id")
    )
    ticket_id = str(ticket_id or "").strip()
    if not ticket_id.isdigit():
        raise InvalidInput("The Zendesk webhook names no ticket.")
    entry_id = None
    if event_type == COMMENT_ADDED:
        comment = _object(_object(payload.get("event")).get("comment"))
        author = _object(comment.get("author"))
        if author.get("is_staff") or comment.get("is_public") is False:
            kind = "agent_comment"  # ours or an agent's: nothing for the mail agent to read
        else:
            kind = "customer_reply"
        entry_id = str(comment.get("id") or "") or None
    elif event_type in (CREATED, ""):
        kind = "created"
    else:
        kind = event_type.rsplit(".", 1)[-1]
    delivery = str(payload.get("id") or headers.get(INVOCATION_HEADER) or "")
    if not delivery:
        delivery = hashlib.sha256(body).hexdigest()[:40]
    return TicketEvent(
        helpdesk=HELPDESK,
        account=account,
        external_id=ticket_id,
        kind=kind,
        key=f"zendesk:{account}:{delivery}"[:300],
        entry_id=entry_id,
    )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _subject_ticket(subject: Any) -> str | None:
    """The ticket ID in an event's ``subject``: ``zen:ticket:123``."""
    if isinstance(subject, str) and subject.startswith("zen:ticket:"):
        return subject.removeprefix("zen:ticket:")
    return None
