"""Stateful fakes of the Zendesk Support API and the Help Scout Mailbox API 2.0, on real sockets.

Each fake is a werkzeug WSGI app served by ``werkzeug.serving.make_server`` on a free loopback
port in a daemon thread, so the product's ``requests``-based adapters talk to it over TCP. State
lives in memory behind one lock; Python helpers (``create_ticket``, ``agent_edit``, ``merge``...)
change it the way an agent or a customer would behind the product's back, and every request is
recorded in ``fake.requests`` so tests can assert the exact calls.

What each behaviour is based on. D: the vendor's documentation, read while writing this.
K: the vendor's documented behaviour as known, not re-read here. A: assumed.

Zendesk
- D Token auth is HTTP Basic ``{email}/token:{api_token}``. K the 401 body
  ``{"error": "Couldn't authenticate you"}`` and 404 ``{"error": "RecordNotFound", ...}``.
- D Ticket and comment property names (Tickets, Ticket Comments); K user, group and audit
  properties and ``include=users`` sideloading.
- D Safe update: ``safe_update`` + ``updated_stamp`` (inside ``ticket`` on Update Ticket, top level
  on Add Tags); a stale stamp answers 409. A: the 409 body's wording (as the brief gave it).
- D Tags: GET shows, PUT adds, POST sets (replaces), DELETE removes, each answering 200
  ``{"tags": [...]}``; they cannot change a closed ticket (422 here; the body is A).
- D Update Ticket's ``tags`` replaces the list; ``additional_tags``/``remove_tags`` add/remove.
- D Cursor pagination: ``page[size]`` (max 100), ``page[after]``, ``page[before]``; ``meta``
  {has_more, after_cursor, before_cursor} and ``links`` {prev, next}. K: without any ``page[...]``
  parameter Zendesk uses offset pagination (``page``, ``per_page``; ``next_page``,
  ``previous_page``, ``count``), and so does the fake. Cursors are opaque.
- D Webhook signature: base64(HMAC-SHA256(secret, timestamp + body)) in
  ``X-Zendesk-Webhook-Signature``, with ``X-Zendesk-Webhook-Signature-Timestamp``.
- D Event payload: type, account_id, id, time, zendesk_event_version, subject "zen:ticket:<id>",
  detail {actor_id, assignee_id, brand_id, created_at, custom_status, description, external_id,
  form_id, group_id, id, is_public, organization_id, priority, requester_id, status, subject,
  submitter_id, tags, type, updated_at, via.channel} with ids as strings; event.meta.sequence.
  From a published schema of the event (not Zendesk's page itself): upper-case enums ("NEW") and
  ``event.comment`` {id, body, is_public, author {id, is_staff, name}} on comment_added.
- D ``assignee_email`` (write-only) on Update Ticket assigns the agent with that email.
- A Solving or closing a ticket without an assignee answers 422 (Zendesk's agent interface
  requires one; a client's issue thread shows the API's 422 on solving).
- A ``created``/``updated`` search properties compare dates (``created>2024-01-01``).
- A Timestamps strictly increase by at least a second per change (Zendesk's resolution is seconds;
  the fake's clock runs ahead when needed so ``updated_at`` always changes). Tags are stored as
  given (no lower-casing). A comment's ``public`` defaults to true. An end user's comment reopens
  a pending or solved ticket. An unknown group, assignee, status or priority answers 422
  RecordInvalid with a ``details`` entry, and the update is refused whole.
- A Search supports ``type:ticket``, ``requester:<email|id>``, ``status:``/``<``/``>``/``<=``/
  ``>=``, ``tags:``, ``subject:``, ``order_by:created_at``/``sort:asc|desc`` and free words or
  quoted phrases against subject + description, newest first; any other property answers 400,
  so a test notices it relies on something the fake does not model.

Help Scout
- D OAuth2 client-credentials grant at ``POST /v2/oauth2/token`` (form, JSON or query params);
  every other call needs ``Authorization: Bearer``. A: ``expires_in`` 172800 and the 401 bodies
  (OAuth-style ``{"error", "error_description"}``).
- D Conversation fields (Get Conversation) and thread fields (List Threads); HAL pages with
  ``_embedded``, ``_links`` and ``page`` {size, totalElements, totalPages, number}; list links keep
  the request's parameters (changelog). Threads are listed newest first, types ``customer``,
  ``reply``, ``note``. A: customer JSON beyond names and ``_embedded.emails``.
- D Create Note / Create Reply answer 201 with ``Resource-ID``; a reply without an explicit
  ``status`` reactivates the conversation; adding to a conversation with 99 threads or more
  answers 412. A: the ``Location`` header (as the brief gave it).
- D Update Conversation is JSON Patch: replace ``/subject``, ``/status``, ``/assignTo`` (a user or
  team id), ``/primaryCustomer.id``; remove ``/assignTo``; 204. Errors use the documented shape
  ``{logRef, message, _embedded: {errors: [{path, message, source, rejectedValue}]}, _links}``.
- K Update Tags replaces the whole list, 204.
- D Merged conversations: Get Conversation answers 301 with ``Location`` on the new one, while
  writes to the old id answer 404 ("call Get Conversation to get the new location"). The fake
  does that; ``merge(..., redirect_writes=True)`` makes writes answer 301 too. A: reading the old
  id's threads answers 301 like Get Conversation.
- D Rate limits: ``X-RateLimit-Limit-Minute``, ``X-RateLimit-Remaining-Minute``, and on 429
  ``X-RateLimit-Retry-After`` (and ``Retry-After``, from the 1.0 docs); writes (POST, PUT, PATCH,
  DELETE) count as 2. A: a fixed 60-second window from its first request; the token endpoint is
  not counted; a refused request costs nothing.
- D Webhooks: the v2 conversation object as body, ``X-HelpScout-Event``, and
  ``X-HelpScout-Signature`` = base64(HMAC-SHA1(secret, body)).
- A List Conversations defaults to ``status=active``, newest first; ``query`` supports
  ``email:"..."``, ``subject:"..."`` and ``tag:"..."`` joined by AND (others answer 400); page sizes
  default to 25. Absent values are left out of objects (``assignee``, ``closedAt``...), as Help
  Scout's JSON does. Threads made through the API have ``source.type`` "api", an agent's in the
  app "web", a customer's "email".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import math
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, Self
from urllib.parse import urlencode

import pytest
import requests
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

JSON = dict[str, Any]

# The request headers worth asserting on; the rest (Host, Content-Length...) is noise.
RECORDED_HEADERS = ("Authorization", "Content-Type", "Accept", "User-Agent")
WEBHOOK_TIMEOUT_SECONDS = 10
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# How often the serving thread looks for a stop request: stopping waits up to this long.
SHUTDOWN_POLL_SECONDS = 0.02


# --- shared machinery -------------------------------------------------------------------


class RecordedRequest(NamedTuple):
    """One request a fake received, as tests assert on it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any  # parsed JSON, a form dict, raw text, or None when empty
    headers: dict[str, str]
    status: int | None  # None when the fake dropped the connection instead of answering


@dataclass(frozen=True)
class WebhookDelivery:
    """One webhook a fake sent: the exact bytes and headers, so a test can replay it."""

    url: str
    body: bytes
    headers: dict[str, str]
    response: requests.Response

    @property
    def status_code(self) -> int:
        """The receiver's HTTP status."""
        return self.response.status_code

    def replay(self) -> requests.Response:
        """Send the very same bytes and headers again, as a vendor's redelivery would."""
        return requests.post(
            self.url, data=self.body, headers=self.headers, timeout=WEBHOOK_TIMEOUT_SECONDS
        )


@dataclass
class _Fault:
    """A failure armed by ``fail_next``, answered instead of the real response."""

    method: str
    pattern: re.Pattern[str]
    status: int | None
    headers: dict[str, str]
    body: Any
    remaining: int


class _Answer(Exception):
    """Raised inside a handler to answer at once (an error, a redirect)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class _Clock:
    """Second-resolution UTC timestamps that strictly increase and stay near the real time."""

    def __init__(self) -> None:
        self._last = _utc_now() - timedelta(seconds=1)

    def tick(self) -> datetime:
        """The next timestamp: a second after the last one, or now if that is later."""
        self._last = max(self._last + timedelta(seconds=1), _utc_now())
        return self._last


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime(TIMESTAMP_FORMAT)


def _json_response(
    status: int, payload: Any, headers: dict[str, str] | None = None, *, mimetype: str
) -> Response:
    return Response(json.dumps(payload), status=status, headers=headers, mimetype=mimetype)


def _recorded_body(request: Request) -> Any:
    raw = request.get_data(cache=True)
    if not raw:
        return None
    if request.mimetype == "application/x-www-form-urlencoded":
        return request.form.to_dict()
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _drop_connection(environ: WSGIEnvironment) -> NoReturn:
    """Close the client's socket without an answer, as a crashed proxy would."""
    connection = environ.get("werkzeug.socket")
    if isinstance(connection, socket.socket):
        connection.shutdown(socket.SHUT_RDWR)
    # werkzeug treats a ConnectionError from the app as a client that went away: no 500, no log.
    raise ConnectionResetError("fault injected: connection dropped")


def _text_from_html(markup: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", markup)).strip()


def _html_from_text(text: str) -> str:
    lines = "<br>".join(html.escape(line) for line in text.splitlines())
    return f'<div class="zd-comment" dir="auto"><p>{lines}</p></div>'


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _sign(key: str, message: bytes, digest: Callable[[], Any]) -> str:
    return base64.b64encode(hmac.new(key.encode("utf-8"), message, digest).digest()).decode()


class _FakeServer:
    """A WSGI app on a loopback port with a request log, fault injection and one lock."""

    json_mimetype = "application/json"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._routes = Map(self._rules())

    # lifecycle

    def _rules(self) -> list[Rule]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running server."""
        if self._server is None:
            raise RuntimeError("the fake is not started")
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> Self:
        """Serve on a free loopback port from a daemon thread."""
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
            name=type(self).__name__,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # what tests arm and inspect

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        status: int | None,
        headers: dict[str, str] | None = None,
        body: Any = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (None: drop the socket).

        ``path_pattern`` is a regex searched in the path; ``method`` "*" matches any method.
        """
        default_headers, default_body = self._fault_defaults(status)
        with self._lock:
            self._faults.append(
                _Fault(
                    method=method.upper(),
                    pattern=re.compile(path_pattern),
                    status=status,
                    headers=default_headers if headers is None else dict(headers),
                    body=default_body if body is None else body,
                    remaining=times,
                )
            )

    def requests_to(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        """The recorded requests with this method whose path matches the regex."""
        pattern = re.compile(path_pattern)
        with self._lock:
            return [
                r for r in self.requests if r.method == method.upper() and pattern.search(r.path)
            ]

    def _fault_defaults(self, status: int | None) -> tuple[dict[str, str], Any]:
        return {}, {"error": "fault injected"}

    # serving

    def _wsgi(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        body = _recorded_body(request)
        with self._lock:
            fault = self._take_fault(request)
            if fault is not None and fault.status is None:
                self._record(request, body, None)
                response = None
            else:
                if fault is not None:
                    response = self._fault_response(fault)
                else:
                    response = self._dispatch(request)
                self._decorate(request, response)
                self._record(request, body, response.status_code)
        if response is None:
            _drop_connection(environ)
        return response(environ, start_response)

    def _take_fault(self, request: Request) -> _Fault | None:
        for fault in self._faults:
            if fault.method in ("*", request.method) and fault.pattern.search(request.path):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _fault_response(self, fault: _Fault) -> Response:
        assert fault.status is not None
        if isinstance(fault.body, bytes | str):
            return Response(fault.body, status=fault.status, headers=fault.headers)
        return _json_response(
            fault.status, fault.body, dict(fault.headers), mimetype=self.json_mimetype
        )

    def _dispatch(self, request: Request) -> Response:
        try:
            refusal = self._refuse(request)
            if refusal is not None:
                return refusal
            endpoint, args = self._routes.bind_to_environ(request.environ).match()
            handler: Callable[..., Response] = getattr(self, str(endpoint))
            return handler(request, **args)
        except _Answer as answer:
            return answer.response
        except HTTPException:
            return self._unknown_route()

    def _record(self, request: Request, body: Any, status: int | None) -> None:
        headers = {
            name: request.headers[name] for name in RECORDED_HEADERS if name in request.headers
        }
        self.requests.append(
            RecordedRequest(
                request.method, request.path, request.args.to_dict(), body, headers, status
            )
        )

    def _refuse(self, request: Request) -> Response | None:
        """A refusal before routing (authentication, rate limit), or None to go on."""
        return None

    def _decorate(self, request: Request, response: Response) -> None:
        """Headers every response carries."""

    def _unknown_route(self) -> Response:
        raise NotImplementedError

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        return _json_response(status, payload, headers, mimetype=self.json_mimetype)


def _json_object(request: Request) -> JSON | None:
    payload = request.get_json(silent=True)
    return payload if isinstance(payload, dict) else None


# --- Zendesk ----------------------------------------------------------------------------

ZENDESK_STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
ZENDESK_PRIORITIES = ("urgent", "high", "normal", "low")
ZENDESK_EVENT_VERSION = "2022-11-06"
ZENDESK_EVENT_PREFIX = "zen:event-type:"
ZENDESK_EVENT_TYPES = ("ticket.created", "ticket.comment_added")
ZENDESK_PAGE_SIZE_MAX = 100
SAFE_UPDATE_CONFLICT = {
    "error": "UpdateConflict",
    "description": (
        "Safe Update prevented the update due to outdated ticket data. "
        "Please fetch the latest ticket data and try again."
    ),
}
CLOSED_TICKET_REFUSAL = {
    "error": "RecordInvalid",
    "description": "Record validation errors",
    "details": {"status": [{"description": "Status: closed prevents ticket update"}]},
}


@dataclass
class _ZendeskUser:
    id: int
    name: str
    email: str
    role: str
    verified: bool
    created_at: datetime


@dataclass
class _ZendeskComment:
    id: int
    author_id: int
    body: str
    html_body: str
    public: bool
    audit_id: int
    via: JSON
    created_at: datetime
    metadata: JSON


@dataclass
class _ZendeskTicket:
    id: int
    subject: str
    description: str
    status: str
    priority: str | None
    requester_id: int
    submitter_id: int
    assignee_id: int | None
    group_id: int | None
    tags: list[str]
    via: JSON
    created_at: datetime
    updated_at: datetime
    comments: list[_ZendeskComment] = field(default_factory=list)


@dataclass(frozen=True)
class _Group:
    id: int
    name: str
    created_at: datetime


class FakeZendesk(_FakeServer):
    """One Zendesk Support account: tickets, comments, users, groups, search and webhooks."""

    json_mimetype = "application/json"

    def __init__(
        self,
        subdomain: str = "acme",
        email: str = "agent@acme.test",
        api_token: str = "zd-token",
        *,
        account_id: int = 8_000_001,
        agent_name: str = "Acme Agent",
    ) -> None:
        self.subdomain = subdomain
        self.email = email
        self.api_token = api_token
        self.account_id = account_id
        self.webhook_id = "01HZFAKEWEBHOOK" + secrets.token_hex(5).upper()
        self._clock = _Clock()
        self._users: dict[int, _ZendeskUser] = {}
        self._groups: dict[int, _Group] = {}
        self._tickets: dict[int, _ZendeskTicket] = {}
        # Distinct id ranges, so a ticket id passed where a user id belongs fails loudly.
        self._ids = {"user": 9_000, "group": 7_000, "ticket": 100, "comment": 50_000}
        self._ids.update({"audit": 80_000, "event": 60_000})
        super().__init__()
        self.agent_id = self.add_user(agent_name, email, role="admin", verified=True)

    def _rules(self) -> list[Rule]:
        ticket = "/api/v2/tickets/<int:ticket_id>"
        return [
            Rule(f"{ticket}.json", methods=["GET"], endpoint="_show_ticket"),
            Rule(f"{ticket}.json", methods=["PUT"], endpoint="_update_ticket"),
            Rule(f"{ticket}/comments.json", methods=["GET"], endpoint="_list_comments"),
            Rule(f"{ticket}/tags.json", methods=["GET"], endpoint="_show_tags"),
            Rule(f"{ticket}/tags.json", methods=["PUT"], endpoint="_add_tags"),
            Rule(f"{ticket}/tags.json", methods=["POST"], endpoint="_set_tags"),
            Rule(f"{ticket}/tags.json", methods=["DELETE"], endpoint="_remove_tags"),
            Rule("/api/v2/tickets.json", methods=["POST"], endpoint="_create_ticket"),
            Rule("/api/v2/users/<int:user_id>.json", methods=["GET"], endpoint="_show_user"),
            Rule("/api/v2/users/me.json", methods=["GET"], endpoint="_show_me"),
            Rule("/api/v2/search.json", methods=["GET"], endpoint="_search"),
            Rule("/api/v2/groups.json", methods=["GET"], endpoint="_list_groups"),
        ]

    # state helpers (Python, not HTTP)

    def add_user(
        self, name: str, email: str, role: str = "end-user", verified: bool = False
    ) -> int:
        """A user (``end-user``, ``agent`` or ``admin``); its id."""
        if role not in ("end-user", "agent", "admin"):
            raise ValueError(f"unknown role {role!r}")
        with self._lock:
            if self._user_by_email(email) is not None:
                raise ValueError(f"a user with email {email!r} exists")
            user_id = self._next("user")
            self._users[user_id] = _ZendeskUser(
                user_id, name, email, role, verified, self._clock.tick()
            )
            return user_id

    def add_group(self, name: str) -> int:
        """A group tickets can be assigned to; its id."""
        with self._lock:
            group_id = self._next("group")
            self._groups[group_id] = _Group(group_id, name, self._clock.tick())
            return group_id

    def create_ticket(
        self,
        subject: str,
        body: str,
        requester_email: str,
        requester_name: str | None = None,
        via_channel: str = "email",
        flags: Iterable[int] = (),
    ) -> int:
        """A ticket as a customer's email (or ``via_channel``) opens it; its id."""
        with self._lock:
            requester = self._requester(requester_email, requester_name)
            via = self._via(via_channel, requester)
            now = self._clock.tick()
            ticket = _ZendeskTicket(
                id=self._next("ticket"),
                subject=subject,
                description=body,
                status="new",
                priority=None,
                requester_id=requester.id,
                submitter_id=requester.id,
                assignee_id=None,
                group_id=None,
                tags=[],
                via=via,
                created_at=now,
                updated_at=now,
            )
            self._tickets[ticket.id] = ticket
            self._add_comment(ticket, body, None, requester.id, True, via, list(flags), now)
            return ticket.id

    def add_comment(self, ticket_id: int, body: str, author_email: str, public: bool = True) -> int:
        """A comment by ``author_email`` (a new end user if unknown); its id.

        An end user's comment reopens a pending or solved ticket, as Zendesk does.
        """
        with self._lock:
            ticket = self._ticket(ticket_id)
            if ticket.status == "closed":
                raise ValueError("a closed ticket takes no comments")
            author = self._requester(author_email, None)
            staff = author.role != "end-user"
            via = self._via("web" if staff else "email", author)
            now = self._clock.tick()
            comment = self._add_comment(ticket, body, None, author.id, public, via, [], now)
            if not staff and ticket.status in ("pending", "solved"):
                ticket.status = "open"
            ticket.updated_at = now
            return comment.id

    def agent_edit(self, ticket_id: int, **changes: Any) -> None:
        """An agent changing the ticket in Zendesk itself; ``updated_at`` always moves.

        Changes: status, priority, subject, tags (replaces), group_id, assignee_id, comment
        (a private note by the account's agent), public_comment (a public agent reply).
        """
        allowed = {"status", "priority", "subject", "tags", "group_id", "assignee_id"}
        allowed |= {"comment", "public_comment"}
        unknown = set(changes) - allowed
        if unknown:
            raise TypeError(f"agent_edit() cannot change {sorted(unknown)}")
        with self._lock:
            ticket = self._ticket(ticket_id)
            now = self._clock.tick()
            for name in ("status", "priority", "subject", "group_id", "assignee_id"):
                if name in changes:
                    setattr(ticket, name, changes[name])
            if "tags" in changes:
                ticket.tags = _unique(changes["tags"])
            agent = self._users[self.agent_id]
            for key, public in (("comment", False), ("public_comment", True)):
                if key in changes:
                    via = self._via("web", agent)
                    self._add_comment(ticket, changes[key], None, agent.id, public, via, [], now)
            ticket.updated_at = now

    def ticket(self, ticket_id: int) -> JSON:
        """The ticket as the API shows it now."""
        with self._lock:
            return self._ticket_json(self._ticket(ticket_id))

    def comments(self, ticket_id: int) -> list[JSON]:
        """The ticket's comments, oldest first, as the API shows them."""
        with self._lock:
            return [self._comment_json(c) for c in self._ticket(ticket_id).comments]

    def user(self, user_id: int) -> JSON:
        """The user as the API shows it."""
        with self._lock:
            return self._user_json(self._users[user_id])

    def deliver_event(
        self,
        url: str,
        secret: str,
        event_type: str,
        ticket_id: int,
        comment_id: int | None = None,
        *,
        timestamp: str | None = None,
        tamper: bool = False,
    ) -> WebhookDelivery:
        """POST a signed event-subscription webhook to ``url``, as Zendesk calls out.

        ``event_type`` is "ticket.created" or "ticket.comment_added" (with or without the
        "zen:event-type:" prefix); comment_added describes ``comment_id`` or the latest comment.
        ``timestamp`` overrides the signature timestamp (default: now); ``tamper`` changes the
        body after signing, so the signature no longer matches.
        """
        short_type = event_type.removeprefix(ZENDESK_EVENT_PREFIX)
        if short_type not in ZENDESK_EVENT_TYPES:
            raise ValueError(f"unsupported event type {event_type!r}")
        with self._lock:
            payload = self._event_payload(short_type, self._ticket(ticket_id), comment_id)
        body = json.dumps(payload, separators=(",", ":")).encode()
        signed_at = timestamp or _iso(_utc_now()) or ""
        signature = _sign(secret, signed_at.encode() + body, hashlib.sha256)
        if tamper:
            payload["detail"]["subject"] += " (tampered)"
            body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Zendesk Webhook",
            "X-Zendesk-Webhook-Id": self.webhook_id,
            "X-Zendesk-Webhook-Invocation-Id": str(secrets.randbelow(10**12)),
            "X-Zendesk-Webhook-Signature-Timestamp": signed_at,
            "X-Zendesk-Webhook-Signature": signature,
        }
        response = requests.post(url, data=body, headers=headers, timeout=WEBHOOK_TIMEOUT_SECONDS)
        return WebhookDelivery(url, body, headers, response)

    # endpoints

    def _show_ticket(self, request: Request, ticket_id: int) -> Response:
        ticket = self._ticket_or_404(ticket_id)
        payload: JSON = {"ticket": self._ticket_json(ticket)}
        if "users" in request.args.get("include", "").split(","):
            ids = (ticket.requester_id, ticket.submitter_id, ticket.assignee_id)
            payload["users"] = self._users_json(ids)
        return self._json(200, payload)

    def _show_me(self, request: Request) -> Response:
        """Show Self: the user the API token belongs to (D)."""
        return self._json(200, {"user": self._user_json(self._users[self.agent_id])})

    def _show_user(self, request: Request, user_id: int) -> Response:
        user = self._users.get(user_id)
        if user is None:
            raise _Answer(self._not_found())
        return self._json(200, {"user": self._user_json(user)})

    def _list_comments(self, request: Request, ticket_id: int) -> Response:
        ticket = self._ticket_or_404(ticket_id)
        comments = list(ticket.comments)
        if request.args.get("sort_order") == "desc":
            comments.reverse()
        if any(key.startswith("page[") for key in request.args):
            payload = self._cursor_page(request, ticket_id, comments)
        else:
            payload = self._offset_page(request, ticket_id, comments)
        if "users" in request.args.get("include", "").split(","):
            payload["users"] = self._users_json(c["author_id"] for c in payload["comments"])
        return self._json(200, payload)

    def _update_ticket(self, request: Request, ticket_id: int) -> Response:
        ticket = self._ticket_or_404(ticket_id)
        body = _json_object(request)
        changes = body.get("ticket") if body else None
        if not isinstance(changes, dict):
            raise _Answer(self._bad_request("Expected a JSON object with a 'ticket' object"))
        if ticket.status == "closed":
            raise _Answer(self._json(422, CLOSED_TICKET_REFUSAL))
        self._refuse_stale(changes, ticket)
        self._validate_fields(changes)
        assignee = changes.get("assignee_id", ticket.assignee_id)
        if changes.get("status") in ("solved", "closed") and assignee is None:
            # A: Zendesk solves only assigned tickets (agents see "Assignee is required").
            raise _Answer(self._invalid("assignee", "Assignee: is required when solving"))
        comment = self._comment_request(changes.get("comment"))
        now = self._clock.tick()
        audit_id = self._next("audit")
        events = self._apply_changes(ticket, changes)
        if comment is not None:
            text, markup, public, author_id = comment
            via = {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}}
            added = self._add_comment(ticket, text, markup, author_id, public, via, [], now)
            added.audit_id = audit_id
            events.insert(0, self._comment_event(added))
        if events:
            ticket.updated_at = now
        payload = {
            "ticket": self._ticket_json(ticket),
            "audit": self._audit(ticket, audit_id, events),
        }
        return self._json(200, payload)

    def _create_ticket(self, request: Request) -> Response:
        body = _json_object(request)
        fields = body.get("ticket") if body else None
        if not isinstance(fields, dict):
            raise _Answer(self._bad_request("Expected a JSON object with a 'ticket' object"))
        self._validate_fields(fields)
        comment = self._comment_request(fields.get("comment"))
        if comment is None:
            raise _Answer(self._invalid("description", "Description: cannot be blank"))
        text, markup, public, author_id = comment
        requester = self._requester_from_request(fields)
        now = self._clock.tick()
        via = {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}}
        assignee_id = fields.get("assignee_id")
        ticket = _ZendeskTicket(
            id=self._next("ticket"),
            subject=fields.get("subject") or text.splitlines()[0][:80],
            description=text,
            status=fields.get("status") or ("open" if assignee_id else "new"),
            priority=fields.get("priority"),
            requester_id=requester.id,
            submitter_id=self.agent_id,
            assignee_id=assignee_id,
            group_id=fields.get("group_id"),
            tags=_unique(fields.get("tags") or []),
            via=via,
            created_at=now,
            updated_at=now,
        )
        self._tickets[ticket.id] = ticket
        added = self._add_comment(ticket, text, markup, author_id, public, via, [], now)
        audit = self._audit(ticket, added.audit_id, [self._comment_event(added)])
        location = {"Location": self._ticket_url(ticket.id)}
        return self._json(201, {"ticket": self._ticket_json(ticket), "audit": audit}, location)

    def _show_tags(self, request: Request, ticket_id: int) -> Response:
        return self._json(200, {"tags": list(self._ticket_or_404(ticket_id).tags)})

    def _add_tags(self, request: Request, ticket_id: int) -> Response:
        return self._change_tags(request, ticket_id, lambda old, new: _unique([*old, *new]))

    def _set_tags(self, request: Request, ticket_id: int) -> Response:
        return self._change_tags(request, ticket_id, lambda old, new: _unique(new))

    def _remove_tags(self, request: Request, ticket_id: int) -> Response:
        return self._change_tags(
            request, ticket_id, lambda old, new: [t for t in old if t not in new]
        )

    def _change_tags(
        self,
        request: Request,
        ticket_id: int,
        combine: Callable[[list[str], list[str]], list[str]],
    ) -> Response:
        ticket = self._ticket_or_404(ticket_id)
        body = _json_object(request) or {}
        tags = body.get("tags")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise _Answer(self._bad_request("Expected 'tags': an array of strings"))
        if ticket.status == "closed":
            raise _Answer(self._json(422, CLOSED_TICKET_REFUSAL))
        self._refuse_stale(body, ticket)
        combined = combine(ticket.tags, tags)
        if combined != ticket.tags:
            ticket.tags = combined
            ticket.updated_at = self._clock.tick()
        return self._json(200, {"tags": list(ticket.tags)})

    def _search(self, request: Request) -> Response:
        matches = self._search_tickets(request.args.get("query", ""), request.args)
        results = [{**self._ticket_json(t), "result_type": "ticket"} for t in matches]
        payload = {
            "results": results,
            "count": len(results),
            "next_page": None,
            "previous_page": None,
            "facets": None,
        }
        return self._json(200, payload)

    def _list_groups(self, request: Request) -> Response:
        groups = [self._group_json(g) for g in self._groups.values()]
        payload = {"groups": groups, "next_page": None, "previous_page": None, "count": len(groups)}
        return self._json(200, payload)

    # refusals and errors

    def _refuse(self, request: Request) -> Response | None:
        auth = request.authorization
        if (
            auth is not None
            and auth.type == "basic"
            and auth.username == f"{self.email}/token"
            and auth.password == self.api_token
        ):
            return None
        return self._json(
            401,
            {"error": "Couldn't authenticate you"},
            {"WWW-Authenticate": 'Basic realm="Web Password"'},
        )

    def _fault_defaults(self, status: int | None) -> tuple[dict[str, str], Any]:
        if status == 429:
            rate_limited = {
                "error": "APIRateLimitExceeded",
                "description": "Number of allowed API requests per minute exceeded",
            }
            return {"Retry-After": "1"}, rate_limited
        return {}, {"error": "ServerError", "description": "Fault injected by the fake"}

    def _unknown_route(self) -> Response:
        return self._json(404, {"error": "InvalidEndpoint", "description": "Not found"})

    def _not_found(self) -> Response:
        return self._json(404, {"error": "RecordNotFound", "description": "Not found"})

    def _bad_request(self, description: str) -> Response:
        return self._json(400, {"error": "InvalidValue", "description": description})

    def _invalid(self, field_name: str, description: str) -> Response:
        details = {field_name: [{"description": description, "error": "InvalidValue"}]}
        payload = {"error": "RecordInvalid", "description": "Record validation errors"}
        return self._json(422, {**payload, "details": details})

    def _refuse_stale(self, body: JSON, ticket: _ZendeskTicket) -> None:
        if body.get("safe_update") in (True, "true") and body.get("updated_stamp") != _iso(
            ticket.updated_at
        ):
            raise _Answer(self._json(409, SAFE_UPDATE_CONFLICT))

    def _validate_fields(self, fields: JSON) -> None:
        """Refuse (422) a whole update whose status, priority, group or assignee is unknown."""
        if "status" in fields and fields["status"] not in ZENDESK_STATUSES:
            raise _Answer(self._invalid("status", f"Status: {fields['status']} is not valid"))
        if fields.get("priority") not in (None, *ZENDESK_PRIORITIES):
            raise _Answer(self._invalid("priority", "Priority: is not valid"))
        if fields.get("group_id") is not None and fields["group_id"] not in self._groups:
            raise _Answer(self._invalid("group", "Group: is invalid"))
        email = fields.pop("assignee_email", None)
        if email is not None:  # write-only: the agent with that email becomes the assignee
            found = [u.id for u in self._users.values() if u.email.lower() == str(email).lower()]
            if not found:
                raise _Answer(self._invalid("assignee", "Assignee: is not an agent"))
            fields["assignee_id"] = found[0]
        assignee_id = fields.get("assignee_id")
        if assignee_id is not None:
            assignee = self._users.get(assignee_id)
            if assignee is None or assignee.role == "end-user":
                raise _Answer(self._invalid("assignee", "Assignee: is not an agent"))

    def _comment_request(self, comment: Any) -> tuple[str, str | None, bool, int] | None:
        """(plain text, html or None, public, author id) of a request's comment, or None."""
        if comment is None:
            return None
        if not isinstance(comment, dict) or not (comment.get("body") or comment.get("html_body")):
            raise _Answer(self._invalid("comment", "Comment: body or html_body is required"))
        author_id = comment.get("author_id", self.agent_id)
        if author_id not in self._users:
            raise _Answer(self._invalid("comment", "Comment: author is invalid"))
        markup = comment.get("html_body")
        text = comment.get("body") or _text_from_html(markup or "")
        return text, markup, bool(comment.get("public", True)), author_id

    def _requester_from_request(self, fields: JSON) -> _ZendeskUser:
        if "requester_id" in fields:
            user = self._users.get(fields["requester_id"])
            if user is None:
                raise _Answer(self._invalid("requester", "Requester: is invalid"))
            return user
        requester = fields.get("requester")
        if isinstance(requester, dict) and requester.get("email"):
            return self._requester(requester["email"], requester.get("name"))
        return self._users[self.agent_id]

    # changes

    def _apply_changes(self, ticket: _ZendeskTicket, changes: JSON) -> list[JSON]:
        """Apply an Update Ticket body's fields; the audit's Change events."""
        events: list[JSON] = []

        def change(name: str, value: Any) -> None:
            previous = getattr(ticket, name)
            if value != previous:
                setattr(ticket, name, value)
                event = {"type": "Change", "field_name": name, "value": value}
                events.append({"id": self._next("event"), **event, "previous_value": previous})

        for name in ("subject", "status", "priority", "group_id", "assignee_id"):
            if name in changes:
                change(name, changes[name])
        tags = list(ticket.tags)
        if "tags" in changes:
            tags = _unique(changes["tags"] or [])
        tags = _unique([*tags, *(changes.get("additional_tags") or [])])
        removed = set(changes.get("remove_tags") or [])
        change("tags", [t for t in tags if t not in removed])
        return events

    def _add_comment(
        self,
        ticket: _ZendeskTicket,
        text: str,
        markup: str | None,
        author_id: int,
        public: bool,
        via: JSON,
        flags: list[int],
        now: datetime,
    ) -> _ZendeskComment:
        comment = _ZendeskComment(
            id=self._next("comment"),
            author_id=author_id,
            body=text,
            html_body=markup or _html_from_text(text),
            public=public,
            audit_id=self._next("audit"),
            via=via,
            created_at=now,
            metadata=self._comment_metadata(via, flags),
        )
        ticket.comments.append(comment)
        return comment

    def _comment_metadata(self, via: JSON, flags: list[int]) -> JSON:
        system: JSON = {"client": "Fake Zendesk", "ip_address": "127.0.0.1", "location": None}
        if via.get("channel") == "email":
            system = {
                "message_id": f"<{uuid.uuid4().hex}@mail.example>",
                "email_id": uuid.uuid4().hex[:26].upper(),
                "raw_email_identifier": f"{self.account_id}/{uuid.uuid4().hex}.eml",
                "ip_address": None,
            }
        return {
            "system": system,
            "custom": {},
            "flags": list(flags),
            "flags_options": {},
            "trusted": not flags,
        }

    def _search_tickets(self, query: str, args: Any) -> list[_ZendeskTicket]:
        terms = re.findall(r'(\w+)(<=|>=|:|<|>)("[^"]*"|\S*)|("[^"]*"|\S+)', query)
        tickets = list(self._tickets.values())
        descending = args.get("sort_order", "desc") != "asc"
        for prop, op, raw_value, word in terms:
            value = (raw_value or word).strip('"').lower()
            if not prop:
                tickets = [t for t in tickets if value in f"{t.subject}\n{t.description}".lower()]
            elif prop == "type":
                tickets = tickets if value == "ticket" else []
            elif prop == "requester":
                tickets = [t for t in tickets if self._is_requester(t, value)]
            elif prop == "status":
                tickets = [t for t in tickets if _status_matches(t.status, op, value)]
            elif prop in ("tags", "tag"):
                tickets = [t for t in tickets if value in (tag.lower() for tag in t.tags)]
            elif prop == "subject":
                tickets = [t for t in tickets if value in t.subject.lower()]
            elif prop in ("created", "updated"):
                # Zendesk's date property: YYYY-MM-DD (or a full ISO 8601 time) after ``op``.
                tickets = [t for t in tickets if _date_matches(t, prop, op, value)]
            elif prop == "sort":
                descending = value != "asc"
            elif prop != "order_by":
                message = f"fake_helpdesks does not support the search property {prop!r}"
                raise _Answer(self._bad_request(message))
        return sorted(tickets, key=lambda t: (t.created_at, t.id), reverse=descending)

    def _is_requester(self, ticket: _ZendeskTicket, value: str) -> bool:
        requester = self._users[ticket.requester_id]
        return value in (requester.email.lower(), str(requester.id))

    # pagination

    def _cursor_page(
        self, request: Request, ticket_id: int, comments: list[_ZendeskComment]
    ) -> JSON:
        size = self._page_size(request.args.get("page[size]", str(ZENDESK_PAGE_SIZE_MAX)))
        if "page[before]" in request.args:
            end = self._decode_cursor(request.args["page[before]"])
            start = max(0, end - size)
        else:
            start = self._decode_cursor(request.args.get("page[after]"))
            end = start + size
        page = comments[start:end]
        end = start + len(page)
        base = f"{self.url}/api/v2/tickets/{ticket_id}/comments.json?"
        after = _encode_cursor(end) if page else None
        before = _encode_cursor(start) if page else None
        has_more = end < len(comments)
        next_link = (
            base + urlencode({"page[after]": after, "page[size]": size}) if has_more else None
        )
        prev_link = (
            base + urlencode({"page[before]": before, "page[size]": size}) if start else None
        )
        return {
            "comments": [self._comment_json(c) for c in page],
            "meta": {"has_more": has_more, "after_cursor": after, "before_cursor": before},
            "links": {"prev": prev_link, "next": next_link},
        }

    def _offset_page(
        self, request: Request, ticket_id: int, comments: list[_ZendeskComment]
    ) -> JSON:
        size = self._page_size(request.args.get("per_page", str(ZENDESK_PAGE_SIZE_MAX)))
        number = self._page_size(request.args.get("page", "1"), maximum=None)
        start = (number - 1) * size
        page = comments[start : start + size]
        base = f"{self.url}/api/v2/tickets/{ticket_id}/comments.json?"
        has_more = start + size < len(comments)
        return {
            "comments": [self._comment_json(c) for c in page],
            "next_page": base + urlencode({"page": number + 1, "per_page": size})
            if has_more
            else None,
            "previous_page": base + urlencode({"page": number - 1, "per_page": size})
            if number > 1
            else None,
            "count": len(comments),
        }

    def _page_size(self, raw: str, maximum: int | None = ZENDESK_PAGE_SIZE_MAX) -> int:
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise _Answer(self._bad_request(f"Invalid pagination parameter {raw!r}"))
        return value if maximum is None else min(value, maximum)

    def _decode_cursor(self, cursor: str | None) -> int:
        if cursor is None:
            return 0
        try:
            return int(json.loads(base64.urlsafe_b64decode(cursor.encode()))["o"])
        except (ValueError, KeyError, TypeError):
            raise _Answer(
                self._json(
                    400,
                    {"error": "InvalidPaginationParameter", "description": "invalid cursor"},
                )
            ) from None

    # lookups and JSON

    def _next(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def _ticket(self, ticket_id: int) -> _ZendeskTicket:
        ticket = self._tickets.get(ticket_id)
        if ticket is None:
            raise KeyError(f"no ticket {ticket_id}")
        return ticket

    def _ticket_or_404(self, ticket_id: int) -> _ZendeskTicket:
        ticket = self._tickets.get(ticket_id)
        if ticket is None:
            raise _Answer(self._not_found())
        return ticket

    def _user_by_email(self, email: str) -> _ZendeskUser | None:
        return next((u for u in self._users.values() if u.email.lower() == email.lower()), None)

    def _requester(self, email: str, name: str | None) -> _ZendeskUser:
        user = self._user_by_email(email)
        if user is None:
            user_id = self.add_user(name or email.split("@")[0], email)
            user = self._users[user_id]
        return user

    def _via(self, channel: str, author: _ZendeskUser) -> JSON:
        if channel != "email":
            return {"channel": channel, "source": {"from": {}, "to": {}, "rel": None}}
        support = {"address": f"support@{self.subdomain}.zendesk.com", "name": self.subdomain}
        sender = {"address": author.email, "name": author.name}
        return {"channel": "email", "source": {"from": sender, "to": support, "rel": None}}

    def _base_url(self) -> str:
        return self.url if self._server is not None else f"https://{self.subdomain}.zendesk.com"

    def _ticket_url(self, ticket_id: int) -> str:
        return f"{self._base_url()}/api/v2/tickets/{ticket_id}.json"

    def _ticket_json(self, ticket: _ZendeskTicket) -> JSON:
        return {
            "id": ticket.id,
            "url": self._ticket_url(ticket.id),
            "external_id": None,
            "type": None,
            "subject": ticket.subject,
            "raw_subject": ticket.subject,
            "description": ticket.description,
            "priority": ticket.priority,
            "status": ticket.status,
            "recipient": f"support@{self.subdomain}.zendesk.com",
            "requester_id": ticket.requester_id,
            "submitter_id": ticket.submitter_id,
            "assignee_id": ticket.assignee_id,
            "organization_id": None,
            "group_id": ticket.group_id,
            "collaborator_ids": [],
            "follower_ids": [],
            "email_cc_ids": [],
            "has_incidents": False,
            "is_public": any(c.public for c in ticket.comments),
            "due_at": None,
            "tags": list(ticket.tags),
            "custom_fields": [],
            "satisfaction_rating": None,
            "sharing_agreement_ids": [],
            "brand_id": 1,
            "allow_channelback": False,
            "allow_attachments": True,
            "from_messaging_channel": False,
            "via": ticket.via,
            "created_at": _iso(ticket.created_at),
            "updated_at": _iso(ticket.updated_at),
        }

    def _comment_json(self, comment: _ZendeskComment) -> JSON:
        return {
            "id": comment.id,
            "type": "Comment",
            "author_id": comment.author_id,
            "body": comment.body,
            "html_body": comment.html_body,
            "plain_body": comment.body,
            "public": comment.public,
            "attachments": [],
            "audit_id": comment.audit_id,
            "via": comment.via,
            "created_at": _iso(comment.created_at),
            "metadata": comment.metadata,
        }

    def _comment_event(self, comment: _ZendeskComment) -> JSON:
        keys = ("id", "type", "author_id", "body", "html_body", "plain_body", "public")
        event = {key: value for key, value in self._comment_json(comment).items() if key in keys}
        return {**event, "attachments": [], "audit_id": comment.audit_id}

    def _audit(self, ticket: _ZendeskTicket, audit_id: int, events: list[JSON]) -> JSON:
        return {
            "id": audit_id,
            "ticket_id": ticket.id,
            "created_at": _iso(ticket.updated_at),
            "author_id": self.agent_id,
            "metadata": {"system": {"client": "Fake Zendesk"}, "custom": {}},
            "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}},
            "events": events,
        }

    def _user_json(self, user: _ZendeskUser) -> JSON:
        return {
            "id": user.id,
            "url": f"{self._base_url()}/api/v2/users/{user.id}.json",
            "name": user.name,
            "email": user.email,
            "role": user.role,
            "verified": user.verified,
            "active": True,
            "suspended": False,
            "organization_id": None,
            "phone": None,
            "locale": "en-US",
            "time_zone": "UTC",
            "tags": [],
            "external_id": None,
            "created_at": _iso(user.created_at),
            "updated_at": _iso(user.created_at),
        }

    def _users_json(self, ids: Iterable[int | None]) -> list[JSON]:
        unique = dict.fromkeys(i for i in ids if i is not None and i in self._users)
        return [self._user_json(self._users[i]) for i in unique]

    def _group_json(self, group: _Group) -> JSON:
        return {
            "id": group.id,
            "url": f"{self._base_url()}/api/v2/groups/{group.id}.json",
            "name": group.name,
            "description": "",
            "default": False,
            "deleted": False,
            "is_public": True,
            "created_at": _iso(group.created_at),
            "updated_at": _iso(group.created_at),
        }

    def _event_payload(
        self, short_type: str, ticket: _ZendeskTicket, comment_id: int | None
    ) -> JSON:
        detail = {
            "actor_id": str(ticket.comments[-1].author_id if ticket.comments else self.agent_id),
            "assignee_id": _id_string(ticket.assignee_id),
            "brand_id": "1",
            "created_at": _iso(ticket.created_at),
            "custom_status": "1",
            "description": ticket.description,
            "external_id": None,
            "form_id": "1",
            "group_id": _id_string(ticket.group_id),
            "id": str(ticket.id),
            "is_public": any(c.public for c in ticket.comments),
            "organization_id": None,
            "priority": ticket.priority.upper() if ticket.priority else None,
            "requester_id": str(ticket.requester_id),
            "status": ticket.status.upper(),
            "subject": ticket.subject,
            "submitter_id": str(ticket.submitter_id),
            "tags": list(ticket.tags),
            "type": None,
            "updated_at": _iso(ticket.updated_at),
            "via": {"channel": ticket.via.get("channel")},
        }
        event: JSON = {"meta": {"sequence": {"id": uuid.uuid4().hex, "position": 1, "total": 1}}}
        if short_type == "ticket.comment_added":
            event["comment"] = self._event_comment(ticket, comment_id)
        return {
            "type": ZENDESK_EVENT_PREFIX + short_type,
            "account_id": self.account_id,
            "id": str(uuid.uuid4()),
            "time": _iso(_utc_now()),
            "zendesk_event_version": ZENDESK_EVENT_VERSION,
            "subject": f"zen:ticket:{ticket.id}",
            "detail": detail,
            "event": event,
        }

    def _event_comment(self, ticket: _ZendeskTicket, comment_id: int | None) -> JSON:
        if comment_id is None:
            comment = ticket.comments[-1]
        else:
            comment = next(c for c in ticket.comments if c.id == comment_id)
        author = self._users[comment.author_id]
        return {
            "id": str(comment.id),
            "body": comment.body,
            "is_public": comment.public,
            "author": {
                "id": str(author.id),
                "is_staff": author.role != "end-user",
                "name": author.name,
            },
        }


def _date_matches(ticket: _ZendeskTicket, prop: str, op: str, value: str) -> bool:
    try:
        bound = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError as exc:
        raise _Answer(
            _json_response(
                400, {"error": "InvalidValue", "description": value}, mimetype="application/json"
            )
        ) from exc
    if bound.tzinfo is None:
        bound = bound.replace(tzinfo=UTC)
    moment = ticket.created_at if prop == "created" else ticket.updated_at
    if op in (":", ""):
        return moment.date() == bound.date()
    return {
        ">": moment > bound,
        "<": moment < bound,
        ">=": moment >= bound,
        "<=": moment <= bound,
    }[op]


def _status_matches(status: str, op: str, value: str) -> bool:
    if value not in ZENDESK_STATUSES:
        return False
    here, there = ZENDESK_STATUSES.index(status), ZENDESK_STATUSES.index(value)
    comparisons = {
        ":": here == there,
        "<": here < there,
        ">": here > there,
        "<=": here <= there,
        ">=": here >= there,
    }
    return comparisons[op]


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def _id_string(value: int | None) -> str | None:
    return None if value is None else str(value)


# --- Help Scout -------------------------------------------------------------------------

HELPSCOUT_STATUSES = ("active", "pending", "closed", "spam")
HELPSCOUT_LIST_STATUSES = ("all", "open", *HELPSCOUT_STATUSES)
HELPSCOUT_TOKEN_PATH = "/v2/oauth2/token"
HELPSCOUT_TOKEN_LIFETIME_SECONDS = 172_800
HELPSCOUT_MAX_THREADS = 99  # "a conversation that has 99 threads or more" answers 412
HELPSCOUT_ERRORS_DOC = "https://developer.helpscout.com/mailbox-api/overview/errors"
RATE_WINDOW_SECONDS = 60
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
TAG_COLOR = "#929499"


@dataclass
class _Person:
    id: int
    type: str  # "customer", "user" or "team"
    email: str
    first: str | None
    last: str | None
    created_at: datetime
    email_id: int = 0


@dataclass
class _Thread:
    id: int
    type: str  # "customer", "reply" or "note"
    status: str
    state: str
    body: str
    source: JSON
    customer_id: int
    created_by: _Person
    created_at: datetime
    to: list[str]


@dataclass
class _Conversation:
    id: int
    number: int
    subject: str
    status: str
    customer_id: int
    created_at: datetime
    user_updated_at: datetime
    assignee_id: int | None = None
    closed_at: datetime | None = None
    closed_by: int | None = None
    tags: list[str] = field(default_factory=list)
    threads: list[_Thread] = field(default_factory=list)
    merged_into: int | None = None
    redirect_writes: bool = False


class FakeHelpScout(_FakeServer):
    """One Help Scout account and mailbox: OAuth, conversations, threads, customers, webhooks."""

    json_mimetype = "application/hal+json"

    def __init__(
        self,
        client_id: str = "hs-id",
        client_secret: str = "hs-secret",
        mailbox_id: int = 321_654,
        per_minute: int = 200,
        threads_page_size: int = 25,
        conversations_page_size: int = 25,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.mailbox_id = mailbox_id
        self.per_minute = per_minute
        self.threads_page_size = threads_page_size
        self.conversations_page_size = conversations_page_size
        self.tokens_granted = 0
        self._rate_clock = clock
        self._window_start: float | None = None
        self._window_used = 0
        self._tokens: set[str] = set()
        self._clock = _Clock()
        self._people: dict[int, _Person] = {}
        self._conversations: dict[int, _Conversation] = {}
        self._tag_ids: dict[str, int] = {}
        self._ids = {"person": 40_000, "conversation": 880_000, "number": 1_000}
        self._ids.update({"thread": 3_000_000, "email": 90_000, "tag": 500})
        super().__init__()
        self.user_id = self.add_user("Acme", "Agent", "agent@acme.test")

    def _rules(self) -> list[Rule]:
        conversation = "/v2/conversations/<int:conversation_id>"
        return [
            Rule(HELPSCOUT_TOKEN_PATH, methods=["POST"], endpoint="_grant_token"),
            Rule("/v2/conversations", methods=["GET"], endpoint="_list_conversations"),
            Rule("/v2/conversations", methods=["POST"], endpoint="_create_conversation"),
            Rule(conversation, methods=["GET"], endpoint="_get_conversation"),
            Rule(conversation, methods=["PATCH"], endpoint="_patch_conversation"),
            Rule(f"{conversation}/threads", methods=["GET"], endpoint="_list_threads"),
            Rule(f"{conversation}/notes", methods=["POST"], endpoint="_create_note"),
            Rule(f"{conversation}/reply", methods=["POST"], endpoint="_create_reply"),
            Rule(f"{conversation}/tags", methods=["PUT"], endpoint="_update_tags"),
            Rule("/v2/customers/<int:customer_id>", methods=["GET"], endpoint="_get_customer"),
            Rule("/v2/users/me", methods=["GET"], endpoint="_get_me"),
            Rule("/v2/mailboxes/<int:mailbox_id>", methods=["GET"], endpoint="_get_mailbox"),
        ]

    # state helpers (Python, not HTTP)

    def add_user(self, first: str, last: str, email: str) -> int:
        """A Help Scout user (an agent) conversations can be assigned to; its id."""
        return self._add_person("user", email, first, last)

    def add_team(self, name: str) -> int:
        """A team conversations can be assigned to; its id."""
        return self._add_person("team", f"team-{name.lower()}@helpscout.invalid", name, None)

    def add_customer(self, email: str, first: str | None = None, last: str | None = None) -> int:
        """A customer with one email address; its id."""
        with self._lock:
            if self._customer_by_email(email) is not None:
                raise ValueError(f"a customer with email {email!r} exists")
            return self._add_person("customer", email, first, last)

    def create_conversation(
        self,
        subject: str,
        body: str,
        customer_email: str,
        first: str | None = None,
        last: str | None = None,
        status: str = "active",
    ) -> int:
        """A conversation a customer's email opened (one customer thread); its id."""
        with self._lock:
            customer = self._customer_by_email(customer_email)
            if customer is None:
                customer = self._people[self._add_person("customer", customer_email, first, last)]
            now = self._clock.tick()
            conversation = _Conversation(
                id=self._next("conversation"),
                number=self._next("number"),
                subject=subject,
                status=status,
                customer_id=customer.id,
                created_at=now,
                user_updated_at=now,
            )
            self._conversations[conversation.id] = conversation
            self._add_thread(conversation, "customer", body, customer, "email", now)
            return conversation.id

    def add_customer_reply(self, conversation_id: int, body: str) -> int:
        """The customer writing again (reactivates the conversation); the thread's id."""
        with self._lock:
            conversation = self._conversation(conversation_id)
            customer = self._people[conversation.customer_id]
            conversation.status = "active"
            conversation.closed_at = conversation.closed_by = None
            thread = self._add_thread(
                conversation, "customer", body, customer, "email", self._clock.tick()
            )
            return thread.id

    def add_agent_note(self, conversation_id: int, text: str) -> int:
        """A note by the account's agent in Help Scout itself; the thread's id."""
        with self._lock:
            conversation = self._conversation(conversation_id)
            now = self._clock.tick()
            conversation.user_updated_at = now
            user = self._people[self.user_id]
            return self._add_thread(conversation, "note", text, user, "web", now).id

    def agent_edit(self, conversation_id: int, **changes: Any) -> None:
        """An agent changing the conversation in Help Scout itself.

        Changes: status, subject, tags (replaces), assign_to (a user or team id, or None),
        note (adds a note), reply (adds an agent reply).
        """
        allowed = {"status", "subject", "tags", "assign_to", "note", "reply"}
        unknown = set(changes) - allowed
        if unknown:
            raise TypeError(f"agent_edit() cannot change {sorted(unknown)}")
        with self._lock:
            conversation = self._conversation(conversation_id)
            now = self._clock.tick()
            user = self._people[self.user_id]
            if "status" in changes:
                self._set_status(conversation, changes["status"], now)
            if "subject" in changes:
                conversation.subject = changes["subject"]
            if "tags" in changes:
                conversation.tags = self._register_tags(changes["tags"])
            if "assign_to" in changes:
                conversation.assignee_id = changes["assign_to"]
            if "note" in changes:
                self._add_thread(conversation, "note", changes["note"], user, "web", now)
            if "reply" in changes:
                self._add_thread(conversation, "reply", changes["reply"], user, "web", now)
            conversation.user_updated_at = now

    def merge(self, from_id: int, into_id: int, *, redirect_writes: bool = False) -> None:
        """Merge ``from_id`` into ``into_id``: its threads move, its id answers 301 (reads).

        Writes to the old id answer 404, as Help Scout documents; ``redirect_writes`` makes
        them answer 301 too.
        """
        with self._lock:
            source, target = self._conversation(from_id), self._conversation(into_id)
            target.threads = sorted([*target.threads, *source.threads], key=lambda t: t.id)
            source.threads = []
            source.merged_into = into_id
            source.redirect_writes = redirect_writes
            target.user_updated_at = self._clock.tick()

    def conversation(self, conversation_id: int) -> JSON:
        """The conversation as Get Conversation shows it (without embedded threads)."""
        with self._lock:
            return self._conversation_json(self._conversation(conversation_id), embed=False)

    def threads(self, conversation_id: int) -> list[JSON]:
        """The conversation's threads, newest first, as List Threads shows them."""
        with self._lock:
            return [self._thread_json(t) for t in self._newest_first(conversation_id)]

    def customer(self, customer_id: int) -> JSON:
        """The customer as Get Customer shows it."""
        with self._lock:
            return self._customer_json(self._people[customer_id])

    def expire_tokens(self) -> None:
        """Revoke every access token granted so far (their next use answers 401)."""
        with self._lock:
            self._tokens.clear()

    def reset_rate_window(self) -> None:
        """Start a fresh rate-limit minute with the whole budget."""
        with self._lock:
            self._window_start = None
            self._window_used = 0

    def deliver(
        self,
        url: str,
        secret: str,
        event: str,
        conversation_id: int,
        *,
        tamper: bool = False,
    ) -> WebhookDelivery:
        """POST a signed webhook (``event`` such as "convo.created") with the conversation.

        ``tamper`` changes the body after signing, so the signature no longer matches.
        """
        with self._lock:
            payload = self._conversation_json(self._conversation(conversation_id), embed=True)
        body = json.dumps(payload, separators=(",", ":")).encode()
        signature = _sign(secret, body, hashlib.sha1)
        if tamper:
            payload["subject"] += " (tampered)"
            body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "X-HelpScout-Event": event,
            "X-HelpScout-Signature": signature,
        }
        response = requests.post(url, data=body, headers=headers, timeout=WEBHOOK_TIMEOUT_SECONDS)
        return WebhookDelivery(url, body, headers, response)

    # endpoints

    def _grant_token(self, request: Request) -> Response:
        fields = {
            **request.args.to_dict(),
            **request.form.to_dict(),
            **(_json_object(request) or {}),
        }
        if fields.get("grant_type") != "client_credentials":
            description = "Only the client_credentials grant is supported by this fake"
            error = {"error": "unsupported_grant_type", "error_description": description}
            return self._json(400, error)
        if (fields.get("client_id"), fields.get("client_secret")) != (
            self.client_id,
            self.client_secret,
        ):
            error = {"error": "invalid_client", "error_description": "Bad client credentials"}
            return self._json(401, error)
        token = secrets.token_hex(16)
        self._tokens.add(token)
        self.tokens_granted += 1
        grant = {
            "token_type": "bearer",
            "access_token": token,
            "expires_in": HELPSCOUT_TOKEN_LIFETIME_SECONDS,
        }
        return _json_response(200, grant, mimetype="application/json")

    def _get_conversation(self, request: Request, conversation_id: int) -> Response:
        conversation = self._readable(request, conversation_id)
        embed = "threads" in request.args.get("embed", "").split(",")
        return self._json(200, self._conversation_json(conversation, embed=embed))

    def _list_threads(self, request: Request, conversation_id: int) -> Response:
        self._readable(request, conversation_id)
        threads = self._newest_first(conversation_id)
        page, links, items = self._page(request, threads, self.threads_page_size)
        return self._json(
            200,
            {
                "_embedded": {"threads": [self._thread_json(t) for t in items]},
                "_links": links,
                "page": page,
            },
        )

    def _list_conversations(self, request: Request) -> Response:
        mailbox = request.args.get("mailbox")
        status = request.args.get("status", "active")
        if status not in HELPSCOUT_LIST_STATUSES:
            raise _Answer(
                self._invalid("status", f"Expected one of {HELPSCOUT_LIST_STATUSES}", status)
            )
        filters = self._query_filters(request.args.get("query"))
        matches = [
            c
            for c in self._conversations.values()
            if c.merged_into is None
            and (mailbox is None or mailbox == str(self.mailbox_id))
            and _status_listed(c.status, status)
            and all(check(c) for check in filters)
        ]
        matches.sort(key=lambda c: (c.created_at, c.id), reverse=True)
        page, links, items = self._page(request, matches, self.conversations_page_size)
        embed = "threads" in request.args.get("embed", "").split(",")
        conversations = [self._conversation_json(c, embed=embed) for c in items]
        return self._json(
            200, {"_embedded": {"conversations": conversations}, "_links": links, "page": page}
        )

    def _patch_conversation(self, request: Request, conversation_id: int) -> Response:
        conversation = self._writable(request, conversation_id)
        patch = _json_object(request)
        if patch is None:
            raise _Answer(self._invalid("", "Expected a JSON Patch object", None))
        op, path = patch.get("op"), patch.get("path")
        value: Any = patch.get("value")
        now = self._clock.tick()
        if path == "/subject" and op == "replace" and isinstance(value, str) and value:
            conversation.subject = value
        elif path == "/status" and op == "replace":
            if value not in HELPSCOUT_STATUSES:
                raise _Answer(
                    self._invalid("value", f"Expected one of {HELPSCOUT_STATUSES}", value)
                )
            self._set_status(conversation, value, now)
        elif path == "/assignTo" and op == "replace":
            if self._people.get(value) is None or self._people[value].type == "customer":
                raise _Answer(self._invalid("value", "Invalid identifier of a user or team", value))
            conversation.assignee_id = value
        elif path == "/assignTo" and op == "remove":
            conversation.assignee_id = None
        elif path == "/primaryCustomer.id" and op == "replace":
            if self._people.get(value) is None or self._people[value].type != "customer":
                raise _Answer(self._invalid("value", "Invalid identifier of a customer", value))
            conversation.customer_id = value
        else:
            message = f"Operation {op!r} on path {path!r} is not supported"
            raise _Answer(self._invalid("op", message, op))
        conversation.user_updated_at = now
        return Response(status=204)

    def _update_tags(self, request: Request, conversation_id: int) -> Response:
        conversation = self._writable(request, conversation_id)
        tags = (_json_object(request) or {}).get("tags")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise _Answer(self._invalid("tags", "Expected an array of strings", tags))
        conversation.tags = self._register_tags(tags)
        conversation.user_updated_at = self._clock.tick()
        return Response(status=204)

    def _create_note(self, request: Request, conversation_id: int) -> Response:
        conversation = self._writable(request, conversation_id)
        fields = self._thread_fields(request, conversation)
        now = self._clock.tick()
        if fields.get("status") is not None:
            self._set_status(conversation, fields["status"], now)
        author = self._author(fields)
        thread = self._add_thread(conversation, "note", fields["text"], author, "api", now)
        conversation.user_updated_at = now
        return self._created(conversation, thread)

    def _create_conversation(self, request: Request) -> Response:
        """Create Conversation: subject, customer, mailboxId, type, status and its threads;
        201 with the new conversation's ``Resource-ID`` and ``Location`` (documented)."""
        fields = _json_object(request) or {}
        customer_ref = fields.get("customer") or {}
        email = customer_ref.get("email") if isinstance(customer_ref, dict) else None
        threads = fields.get("threads")
        for name, ok in (
            ("subject", isinstance(fields.get("subject"), str) and fields["subject"]),
            ("customer", isinstance(email, str) and "@" in email),
            ("mailboxId", fields.get("mailboxId") == self.mailbox_id),
            ("type", fields.get("type") in ("email", "phone", "chat")),
            ("status", fields.get("status") in HELPSCOUT_STATUSES),
            ("threads", isinstance(threads, list) and threads),
        ):
            if not ok:
                raise _Answer(self._invalid(name, "is missing or invalid", fields.get(name)))
        assert isinstance(email, str) and isinstance(threads, list)
        customer = self._customer_by_email(email)
        if customer is None:
            first = customer_ref.get("firstName") if isinstance(customer_ref, dict) else None
            customer = self._people[self._add_person("customer", email, first, None)]
        now = self._clock.tick()
        conversation = _Conversation(
            id=self._next("conversation"),
            number=self._next("number"),
            subject=str(fields["subject"]),
            status=str(fields["status"]),
            customer_id=customer.id,
            created_at=now,
            user_updated_at=now,
        )
        self._conversations[conversation.id] = conversation
        for thread in threads:
            kind = thread.get("type") if isinstance(thread, dict) else None
            if kind not in ("customer", "reply", "note") or not thread.get("text"):
                raise _Answer(self._invalid("threads", "each needs a type and text", thread))
            author = customer if kind == "customer" else self._people[self.user_id]
            self._add_thread(conversation, kind, thread["text"], author, "api", now)
        location = f"{self.url}/v2/conversations/{conversation.id}"
        return Response(
            status=201, headers={"Location": location, "Resource-ID": str(conversation.id)}
        )

    def _create_reply(self, request: Request, conversation_id: int) -> Response:
        conversation = self._writable(request, conversation_id)
        fields = self._thread_fields(request, conversation)
        customer = self._reply_customer(fields.get("customer"))
        author = self._author(fields)
        now = self._clock.tick()
        draft = bool(fields.get("draft"))
        if not draft:
            self._set_status(conversation, fields.get("status") or "active", now)
        thread = self._add_thread(
            conversation,
            "reply",
            fields["text"],
            author,
            "api",
            now,
            customer=customer,
            state="draft" if draft else "published",
        )
        conversation.user_updated_at = now
        return self._created(conversation, thread)

    def _get_customer(self, request: Request, customer_id: int) -> Response:
        customer = self._people.get(customer_id)
        if customer is None or customer.type != "customer":
            raise _Answer(self._not_found())
        return self._json(200, self._customer_json(customer))

    def _get_me(self, request: Request) -> Response:
        return self._json(200, self._person_json(self._people[self.user_id]))

    def _get_mailbox(self, request: Request, mailbox_id: int) -> Response:
        """Get Mailbox (D): this account has the one mailbox."""
        if mailbox_id != self.mailbox_id:
            raise _Answer(self._not_found())
        return self._json(
            200, {"id": mailbox_id, "name": "Billing", "email": "billing@acme.test", "slug": "b1"}
        )

    # refusals and errors

    def _refuse(self, request: Request) -> Response | None:
        if request.path == HELPSCOUT_TOKEN_PATH:
            return None
        now = self._rate_clock()
        if self._window_start is None or now - self._window_start >= RATE_WINDOW_SECONDS:
            self._window_start, self._window_used = now, 0
        cost = 2 if request.method in WRITE_METHODS else 1
        if self._window_used + cost > self.per_minute:
            wait = max(1, math.ceil(self._window_start + RATE_WINDOW_SECONDS - now))
            headers = {"X-RateLimit-Retry-After": str(wait), "Retry-After": str(wait)}
            return self._json(429, self._error("Too many requests"), headers)
        self._window_used += cost
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token in self._tokens:
            return None
        error = {
            "error": "invalid_token",
            "error_description": "Access token is invalid or expired",
        }
        return self._json(401, error, {"WWW-Authenticate": 'Bearer error="invalid_token"'})

    def _decorate(self, request: Request, response: Response) -> None:
        if request.path == HELPSCOUT_TOKEN_PATH:
            return
        response.headers.setdefault("X-RateLimit-Limit-Minute", str(self.per_minute))
        remaining = max(0, self.per_minute - self._window_used)
        response.headers.setdefault("X-RateLimit-Remaining-Minute", str(remaining))

    def _fault_defaults(self, status: int | None) -> tuple[dict[str, str], Any]:
        if status == 429:
            return {"X-RateLimit-Retry-After": "1", "Retry-After": "1"}, self._error(
                "Too many requests"
            )
        return {}, self._error("Fault injected by the fake")

    def _unknown_route(self) -> Response:
        return self._not_found()

    def _error(self, message: str, errors: list[JSON] | None = None) -> JSON:
        payload: JSON = {"logRef": str(uuid.uuid4()), "message": message}
        if errors is not None:
            payload["_embedded"] = {"errors": errors}
        payload["_links"] = {"about": {"href": HELPSCOUT_ERRORS_DOC}}
        return payload

    def _not_found(self) -> Response:
        return self._json(404, self._error("Resource not found"))

    def _invalid(self, path: str, message: str, rejected: Any) -> Response:
        error = {"path": path, "message": message, "rejectedValue": rejected, "source": "JSON"}
        error["_links"] = {"about": {"href": f"{HELPSCOUT_ERRORS_DOC}#EnumValue"}}
        return self._json(400, self._error("Bad request", [error]))

    def _readable(self, request: Request, conversation_id: int) -> _Conversation:
        conversation = self._conversations.get(conversation_id)
        if conversation is None:
            raise _Answer(self._not_found())
        if conversation.merged_into is not None:
            raise _Answer(self._moved(request, conversation))
        return conversation

    def _writable(self, request: Request, conversation_id: int) -> _Conversation:
        conversation = self._conversations.get(conversation_id)
        if conversation is None:
            raise _Answer(self._not_found())
        if conversation.merged_into is not None:
            if conversation.redirect_writes:
                raise _Answer(self._moved(request, conversation))
            raise _Answer(self._not_found())
        return conversation

    def _moved(self, request: Request, conversation: _Conversation) -> Response:
        old_prefix = f"/v2/conversations/{conversation.id}"
        new_path = f"/v2/conversations/{conversation.merged_into}" + request.path[len(old_prefix) :]
        query = request.query_string.decode()
        location = f"{self.url}{new_path}" + (f"?{query}" if query else "")
        return Response(status=301, headers={"Location": location})

    def _thread_fields(self, request: Request, conversation: _Conversation) -> JSON:
        fields = _json_object(request)
        if fields is None or not isinstance(fields.get("text"), str) or not fields["text"]:
            raise _Answer(self._invalid("text", "may not be empty", None))
        status = fields.get("status")
        if status is not None and status not in HELPSCOUT_STATUSES:
            raise _Answer(self._invalid("status", f"Expected one of {HELPSCOUT_STATUSES}", status))
        if len(conversation.threads) >= HELPSCOUT_MAX_THREADS:
            raise _Answer(self._json(412, self._error("Conversation has too many threads")))
        return fields

    def _reply_customer(self, reference: Any) -> _Person:
        if isinstance(reference, dict) and "id" in reference:
            customer = self._people.get(reference["id"])
            if customer is not None and customer.type == "customer":
                return customer
        elif isinstance(reference, dict) and isinstance(reference.get("email"), str):
            found = self._customer_by_email(reference["email"])
            if found is not None:
                return found
            return self._people[self._add_person("customer", reference["email"], None, None)]
        raise _Answer(self._invalid("customer", "Invalid customer", reference))

    def _author(self, fields: JSON) -> _Person:
        user_id = fields.get("user", self.user_id)
        author = self._people.get(user_id)
        if author is None or author.type != "user":
            raise _Answer(self._invalid("user", "Invalid identifier of a user", user_id))
        return author

    def _created(self, conversation: _Conversation, thread: _Thread) -> Response:
        location = f"{self.url}/v2/conversations/{conversation.id}/threads/{thread.id}"
        return Response(status=201, headers={"Location": location, "Resource-ID": str(thread.id)})

    def _query_filters(self, query: str | None) -> list[Callable[[_Conversation], bool]]:
        if not query:
            return []
        inner = query.strip()
        if inner.startswith("(") and inner.endswith(")"):
            inner = inner[1:-1]
        filters: list[Callable[[_Conversation], bool]] = []
        for term in re.split(r"\s+AND\s+", inner.strip()):
            found = re.fullmatch(r'(\w+):"([^"]*)"', term.strip())
            if found is None or found.group(1) not in ("email", "subject", "tag"):
                message = f"fake_helpdesks supports email:, subject: and tag: terms, not {term!r}"
                raise _Answer(self._invalid("query", message, query))
            name, value = found.group(1), found.group(2).lower()
            filters.append(self._query_filter(name, value))
        return filters

    def _query_filter(self, name: str, value: str) -> Callable[[_Conversation], bool]:
        if name == "email":
            return lambda c: value in self._people[c.customer_id].email.lower()
        if name == "subject":
            return lambda c: value in c.subject.lower()
        return lambda c: value in (tag.lower() for tag in c.tags)

    def _page(self, request: Request, items: list[Any], size: int) -> tuple[JSON, JSON, list[Any]]:
        try:
            number = max(1, int(request.args.get("page", "1")))
        except ValueError:
            raise _Answer(self._invalid("page", "Invalid number", request.args["page"])) from None
        total_pages = max(1, math.ceil(len(items) / size))
        page_items = items[(number - 1) * size : number * size]
        links: JSON = {
            "self": {"href": self._page_href(request, number)},
            "first": {"href": self._page_href(request, 1)},
            "last": {"href": self._page_href(request, total_pages)},
            "page": {"href": f"{self.url}{request.path}{{?page}}", "templated": True},
        }
        if number < total_pages:
            links["next"] = {"href": self._page_href(request, number + 1)}
        if number > 1:
            links["prev"] = {"href": self._page_href(request, number - 1)}
        page = {
            "size": size,
            "totalElements": len(items),
            "totalPages": total_pages,
            "number": number,
        }
        return page, links, page_items

    def _page_href(self, request: Request, number: int) -> str:
        args = {**request.args.to_dict(), "page": str(number)}
        return f"{self.url}{request.path}?{urlencode(args)}"

    # changes

    def _add_person(self, kind: str, email: str, first: str | None, last: str | None) -> int:
        with self._lock:
            person_id = self._next("person")
            self._people[person_id] = _Person(
                person_id, kind, email, first, last, self._clock.tick(), self._next("email")
            )
            return person_id

    def _add_thread(
        self,
        conversation: _Conversation,
        kind: str,
        body: str,
        author: _Person,
        source_type: str,
        now: datetime,
        *,
        customer: _Person | None = None,
        state: str = "published",
    ) -> _Thread:
        customer = customer or self._people[conversation.customer_id]
        thread = _Thread(
            id=self._next("thread"),
            type=kind,
            status=conversation.status,
            state=state,
            body=body,
            source={"type": source_type, "via": author.type},
            customer_id=customer.id,
            created_by=author,
            created_at=now,
            to=[customer.email] if kind == "reply" else [],
        )
        conversation.threads.append(thread)
        return thread

    def _set_status(self, conversation: _Conversation, status: str, now: datetime) -> None:
        conversation.status = status
        if status == "closed":
            conversation.closed_at, conversation.closed_by = now, self.user_id
        else:
            conversation.closed_at = conversation.closed_by = None

    def _register_tags(self, tags: Iterable[str]) -> list[str]:
        unique = _unique(tags)
        for tag in unique:
            if tag not in self._tag_ids:
                self._tag_ids[tag] = self._next("tag")
        return unique

    # lookups and JSON

    def _next(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def _conversation(self, conversation_id: int) -> _Conversation:
        conversation = self._conversations.get(conversation_id)
        if conversation is None:
            raise KeyError(f"no conversation {conversation_id}")
        return conversation

    def _customer_by_email(self, email: str) -> _Person | None:
        return next(
            (
                p
                for p in self._people.values()
                if p.type == "customer" and p.email.lower() == email.lower()
            ),
            None,
        )

    def _newest_first(self, conversation_id: int) -> list[_Thread]:
        threads = self._conversation(conversation_id).threads
        return sorted(threads, key=lambda t: (t.created_at, t.id), reverse=True)

    def _base_url(self) -> str:
        return self.url if self._server is not None else "https://api.helpscout.net"

    def _person_json(self, person: _Person) -> JSON:
        found: JSON = {"id": person.id, "type": person.type, "email": person.email}
        if person.first is not None:
            found["first"] = person.first
        if person.last is not None:
            found["last"] = person.last
        return found

    def _conversation_json(self, conversation: _Conversation, *, embed: bool) -> JSON:
        base = self._base_url()
        customer = self._people[conversation.customer_id]
        customer_json = self._person_json(customer)
        published = [t for t in conversation.threads if t.state == "published"]
        spoken = [t for t in published if t.type != "note"] or published
        latest = max(spoken, key=lambda t: (t.created_at, t.id)) if spoken else None
        from_customer = [t for t in published if t.type == "customer"]
        found: JSON = {
            "id": conversation.id,
            "number": conversation.number,
            "threads": len(published),
            "type": "email",
            "folderId": 1,
            "status": conversation.status,
            "state": "published",
            "subject": conversation.subject,
            "preview": _text_from_html(latest.body)[:185] if latest else "",
            "mailboxId": self.mailbox_id,
            "createdBy": customer_json,
            "createdAt": _iso(conversation.created_at),
            "userUpdatedAt": _iso(conversation.user_updated_at),
            "source": {"type": "email", "via": "customer"},
            "tags": [
                {"id": self._tag_ids.get(tag, 0), "color": TAG_COLOR, "tag": tag}
                for tag in conversation.tags
            ],
            "cc": [],
            "bcc": [],
            "primaryCustomer": customer_json,
            "customFields": [],
        }
        if conversation.assignee_id is not None:
            found["assignee"] = self._person_json(self._people[conversation.assignee_id])
        if conversation.closed_at is not None:
            found["closedAt"] = _iso(conversation.closed_at)
            found["closedBy"] = conversation.closed_by
            found["closedByUser"] = self._person_json(self._people[self.user_id])
        if from_customer:
            waiting = max(t.created_at for t in from_customer)
            found["customerWaitingSince"] = {"time": _iso(waiting), "friendly": "just now"}
        if embed:
            threads = self._newest_first(conversation.id)
            found["_embedded"] = {"threads": [self._thread_json(t) for t in threads]}
        found["_links"] = {
            "self": {"href": f"{base}/v2/conversations/{conversation.id}"},
            "mailbox": {"href": f"{base}/v2/mailboxes/{self.mailbox_id}"},
            "primaryCustomer": {"href": f"{base}/v2/customers/{customer.id}"},
            "createdByCustomer": {"href": f"{base}/v2/customers/{customer.id}"},
            "threads": {"href": f"{base}/v2/conversations/{conversation.id}/threads/"},
            "web": {
                "href": f"https://secure.helpscout.net/conversation/"
                f"{conversation.id}/{conversation.number}/"
            },
        }
        return found

    def _thread_json(self, thread: _Thread) -> JSON:
        base = self._base_url()
        customer = self._person_json(self._people[thread.customer_id])
        customer.pop("type", None)
        author_link = (
            "createdByCustomer" if thread.created_by.type == "customer" else "createdByUser"
        )
        author_path = "customers" if thread.created_by.type == "customer" else "users"
        return {
            "id": thread.id,
            "type": thread.type,
            "status": thread.status,
            "state": thread.state,
            "body": thread.body,
            "source": dict(thread.source),
            "customer": customer,
            "createdBy": self._person_json(thread.created_by),
            "to": list(thread.to),
            "cc": [],
            "bcc": [],
            "createdAt": _iso(thread.created_at),
            "_embedded": {"attachments": []},
            "_links": {
                author_link: {"href": f"{base}/v2/{author_path}/{thread.created_by.id}"},
                "customer": {"href": f"{base}/v2/customers/{thread.customer_id}"},
            },
        }

    def _customer_json(self, customer: _Person) -> JSON:
        found: JSON = {"id": customer.id}
        if customer.first is not None:
            found["firstName"] = customer.first
        if customer.last is not None:
            found["lastName"] = customer.last
        found.update(
            {
                "gender": "unknown",
                "photoType": "unknown",
                "photoUrl": "",
                "createdAt": _iso(customer.created_at),
                "updatedAt": _iso(customer.created_at),
                "_embedded": {
                    "emails": [{"id": customer.email_id, "value": customer.email, "type": "work"}],
                    "phones": [],
                    "chats": [],
                    "social_profiles": [],
                    "websites": [],
                },
                "_links": {"self": {"href": f"{self._base_url()}/v2/customers/{customer.id}"}},
            }
        )
        return found


def _status_listed(status: str, wanted: str) -> bool:
    if wanted == "all":
        return True
    if wanted == "open":
        return status in ("active", "pending")
    return status == wanted


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def fake_zendesk() -> Iterator[FakeZendesk]:
    """A fresh fake Zendesk account served on loopback for one test."""
    with FakeZendesk() as fake:
        yield fake


@pytest.fixture
def fake_helpscout() -> Iterator[FakeHelpScout]:
    """A fresh fake Help Scout account served on loopback for one test."""
    with FakeHelpScout() as fake:
        yield fake
