"""Zendesk and Help Scout adapters: exact request shapes, error mapping, local mirror, registry."""

from __future__ import annotations

import base64
import dataclasses
import json
import urllib.parse
from collections.abc import Callable, Iterator

import pytest
import requests
import responses
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import AuditEvent, Ticket, TicketMessage
from core.domain import MessageKind, TicketStatus
from core.errors import ConfigError, HelpdeskError, HelpdeskUnavailable, NotFound
from core.helpdesks import (
    SUPPORTED,
    Helpdesk,
    Helpdesks,
    HelpScoutClient,
    HelpScoutHelpdesk,
    LocalHelpdesk,
    ZendeskClient,
    ZendeskHelpdesk,
)
from core.helpdesks.http import Transport
from core.settings import Settings

ZENDESK = "https://acme.zendesk.com"
ZENDESK_TICKET = f"{ZENDESK}/api/v2/tickets/123.json"
ZENDESK_AUTH = "Basic " + base64.b64encode(b"agent@acme.test/token:zd-token").decode()
HELPSCOUT = "https://api.helpscout.net"
HELPSCOUT_TOKEN = f"{HELPSCOUT}/v2/oauth2/token"
CONVERSATION = f"{HELPSCOUT}/v2/conversations/123"
RESOLUTION = "Resolved — Refund issued"
LEAK = "SECRET-BODY-DETAIL"

SETTINGS = Settings(
    zendesk_subdomain="acme",
    zendesk_email="agent@acme.test",
    zendesk_api_token="zd-token",
    helpscout_client_id="hs-id",
    helpscout_client_secret="hs-secret",
)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def session(session_factory) -> Iterator[Session]:
    with session_factory() as session:
        yield session


@pytest.fixture
def http() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as mock:
        yield mock


def mirrored_ticket(session: Session, helpdesk: str, account: str | None = None) -> int:
    if account is None:
        account = "" if helpdesk == "helpscout" else "acme"  # Help Scout IDs span the account
    ticket = Ticket(
        helpdesk=helpdesk,
        helpdesk_account=account,
        external_id="123",
        subject="Charged twice",
        requester_email="pat@example.com",
        status=TicketStatus.OPEN,
    )
    session.add(ticket)
    session.flush()
    return ticket.id


def no_sleep(seconds: float) -> None:
    """Retries and rate limits here wait for nothing: the mocks answer at once."""


def zendesk(session: Session) -> ZendeskHelpdesk:
    client = ZendeskClient(
        subdomain="acme",
        email="agent@acme.test",
        api_token="zd-token",
        transport=Transport("Zendesk", sleep=no_sleep),
    )
    return ZendeskHelpdesk(session, client)


def helpscout(session: Session, clock: Callable[[], float] | None = None) -> HelpScoutHelpdesk:
    client = HelpScoutClient(
        client_id="hs-id",
        client_secret="hs-secret",
        transport=Transport("Help Scout", sleep=no_sleep),
        **({"clock": clock} if clock is not None else {}),
    )
    return HelpScoutHelpdesk(session, client)


def make_helpdesk(name: str, session: Session, settings: Settings | None = None) -> Helpdesk:
    return Helpdesks(settings or Settings()).named(name, session)


def helpdesk_for_ticket(session: Session, ticket_id: int, settings: Settings) -> Helpdesk:
    return Helpdesks(settings).for_ticket(session, ticket_id)


def messages(session: Session, ticket_id: int) -> list[tuple[str, str]]:
    rows = session.scalars(select(TicketMessage).where(TicketMessage.ticket_id == ticket_id))
    return [(row.kind, row.body) for row in rows]


def body(call) -> object:
    return json.loads(call.request.body)


def grant_tokens(http: responses.RequestsMock, *tokens: str) -> None:
    for token in tokens:
        http.post(HELPSCOUT_TOKEN, json={"access_token": token, "expires_in": 7200})


# --- Zendesk ------------------------------------------------------------------------------


def test_zendesk_note_is_a_private_comment_and_is_mirrored(session, http):
    ticket_id = mirrored_ticket(session, "zendesk")
    http.put(ZENDESK_TICKET, json={"ticket": {"id": 123}})

    zendesk(session).add_internal_note(ticket_id, "Refund re_1 issued.", author="billing-desk")

    (call,) = http.calls
    assert call.request.method == "PUT"
    assert call.request.url == ZENDESK_TICKET
    assert call.request.headers["Authorization"] == ZENDESK_AUTH
    assert call.request.req_kwargs["timeout"] == 15
    assert body(call) == {"ticket": {"comment": {"body": "Refund re_1 issued.", "public": False}}}
    assert messages(session, ticket_id) == [("note", "Refund re_1 issued.")]


def test_zendesk_close_solves_with_note_and_tag_and_closes_the_mirror(session, http):
    ticket_id = mirrored_ticket(session, "zendesk")
    http.get(ZENDESK_TICKET, json={"ticket": {"id": 123, "assignee_id": None}, "users": []})
    http.put(ZENDESK_TICKET, json={"ticket": {"id": 123}})

    zendesk(session).close(ticket_id, resolution=RESOLUTION, actor="finance@acme.test")

    assert http.calls[0].request.params == {"include": "users"}
    assert body(http.calls[1]) == {
        "ticket": {
            "status": "solved",
            "comment": {"body": f"{RESOLUTION} (by finance@acme.test)", "public": False},
            "additional_tags": ["billing_desk"],
            # Zendesk solves only assigned tickets: unassigned, it becomes the token's agent's.
            "assignee_email": "agent@acme.test",
        }
    }
    ticket = session.get(Ticket, ticket_id)
    assert (ticket.status, ticket.resolution) == (TicketStatus.CLOSED, RESOLUTION)
    events = session.scalars(select(AuditEvent.event).where(AuditEvent.ticket_id == ticket_id))
    assert list(events) == ["ticket.closed"]


@pytest.mark.parametrize(
    ("kind", "comment"),
    [
        (MessageKind.OUTBOUND, {"body": "Your refund is on its way.", "public": True}),
        (MessageKind.NOTE, {"body": "Your refund is on its way.", "public": False}),
        (MessageKind.INBOUND, None),
    ],
)
def test_zendesk_messages_by_kind(session, http, kind, comment):
    """Replies are public comments, notes private ones; customer mail is only mirrored."""
    ticket_id = mirrored_ticket(session, "zendesk")
    if comment is not None:
        http.put(ZENDESK_TICKET, json={"ticket": {"id": 123}})

    zendesk(session).add_message(
        ticket_id, kind=kind, author="billing@acme.test", body="Your refund is on its way."
    )

    assert [body(call) for call in http.calls] == (
        [{"ticket": {"comment": comment}}] if comment else []
    )
    assert messages(session, ticket_id) == [(kind.value, "Your refund is on its way.")]


def test_zendesk_triage_is_local_and_a_ticket_is_opened_for_the_requester(session, http):
    ticket_id = mirrored_ticket(session, "zendesk")
    desk = zendesk(session)

    desk.set_triage(
        ticket_id, category="duplicate_charge", confidence=0.9, stripe_customer_id="cus_1"
    )
    assert len(http.calls) == 0
    ticket = session.get(Ticket, ticket_id)
    assert (ticket.category, ticket.stripe_customer_id) == ("duplicate_charge", "cus_1")

    http.post(f"{ZENDESK}/api/v2/tickets.json", status=201, json={"ticket": {"id": 456}})
    opened = desk.open_ticket(
        subject="Charged twice", requester_email="pat@example.com", requester_name="Pat", body="Hi"
    )
    assert body(http.calls[0]) == {
        "ticket": {
            "subject": "Charged twice",
            "comment": {"body": "Hi", "public": True},
            "requester": {"email": "pat@example.com", "name": "Pat"},
        }
    }
    assert session.get(Ticket, opened).external_id == "456"


@pytest.mark.parametrize(
    ("helpdesk", "account", "error"),
    [
        ("zendesk", "other", HelpdeskError),  # same numeric ID, another account's ticket
        ("local", "", HelpdeskError),
        ("helpscout", "acme", HelpdeskError),
        (None, None, NotFound),
    ],
)
def test_zendesk_refuses_tickets_that_are_not_its_own(session, http, helpdesk, account, error):
    ticket_id = mirrored_ticket(session, helpdesk, account) if helpdesk else 999_999

    with pytest.raises(error):
        zendesk(session).add_internal_note(ticket_id, "note", author="billing-desk")
    assert len(http.calls) == 0


# --- Help Scout ---------------------------------------------------------------------------


def test_helpscout_token_is_granted_by_client_credentials_and_cached(session, http):
    ticket_id = mirrored_ticket(session, "helpscout", "4321")
    grant_tokens(http, "tok-1")
    http.post(f"{CONVERSATION}/notes", status=201)
    desk = helpscout(session)

    desk.add_internal_note(ticket_id, "first", author="billing-desk")
    desk.add_internal_note(ticket_id, "second", author="billing-desk")

    token_call, *note_calls = http.calls
    assert token_call.request.url == HELPSCOUT_TOKEN
    assert urllib.parse.parse_qs(token_call.request.body) == {
        "grant_type": ["client_credentials"],
        "client_id": ["hs-id"],
        "client_secret": ["hs-secret"],
    }
    assert [call.request.url for call in note_calls] == [f"{CONVERSATION}/notes"] * 2
    assert [call.request.headers["Authorization"] for call in note_calls] == ["Bearer tok-1"] * 2
    assert [body(call) for call in note_calls] == [{"text": "first"}, {"text": "second"}]
    assert all(call.request.req_kwargs["timeout"] == 15 for call in http.calls)
    assert messages(session, ticket_id) == [("note", "first"), ("note", "second")]


def test_helpscout_token_is_renewed_shortly_before_it_expires(session, http):
    ticket_id = mirrored_ticket(session, "helpscout", "4321")
    grant_tokens(http, "tok-1", "tok-2")
    http.post(f"{CONVERSATION}/notes", status=201)
    clock = Clock()
    desk = helpscout(session, clock)

    desk.add_internal_note(ticket_id, "first", author="billing-desk")
    clock.now += 7200 - 30  # within the renewal margin
    desk.add_internal_note(ticket_id, "second", author="billing-desk")

    urls = [call.request.url for call in http.calls]
    assert urls.count(HELPSCOUT_TOKEN) == 2
    assert http.calls[-1].request.headers["Authorization"] == "Bearer tok-2"


def test_helpscout_401_renews_the_token_once_and_retries(session, http):
    ticket_id = mirrored_ticket(session, "helpscout", "4321")
    grant_tokens(http, "revoked", "fresh")
    http.post(f"{CONVERSATION}/notes", status=401)
    http.post(f"{CONVERSATION}/notes", status=201)

    helpscout(session).add_internal_note(ticket_id, "note", author="billing-desk")

    notes = [call for call in http.calls if call.request.url != HELPSCOUT_TOKEN]
    assert [call.request.headers["Authorization"] for call in notes] == [
        "Bearer revoked",
        "Bearer fresh",
    ]
    assert messages(session, ticket_id) == [("note", "note")]


def test_helpscout_close_sets_status_then_notes_the_resolution(session, http):
    ticket_id = mirrored_ticket(session, "helpscout", "4321")
    grant_tokens(http, "tok-1")
    http.patch(CONVERSATION, status=204)
    http.post(f"{CONVERSATION}/notes", status=201)

    helpscout(session).close(ticket_id, resolution=RESOLUTION, actor="billing-desk")

    _, patch, note = http.calls
    assert (patch.request.method, patch.request.url) == ("PATCH", CONVERSATION)
    assert body(patch) == {"op": "replace", "path": "/status", "value": "closed"}
    assert body(note) == {"text": f"{RESOLUTION} (by billing-desk)"}
    ticket = session.get(Ticket, ticket_id)
    assert (ticket.status, ticket.resolution) == (TicketStatus.CLOSED, RESOLUTION)


def test_helpscout_outbound_message_is_a_reply_to_the_requester(session, http):
    ticket_id = mirrored_ticket(session, "helpscout", "4321")
    grant_tokens(http, "tok-1")
    http.get(CONVERSATION, json={"id": 123, "primaryCustomer": {"id": 77, "email": "pat@x.test"}})
    http.post(f"{CONVERSATION}/reply", status=201)

    helpscout(session).add_message(
        ticket_id, kind=MessageKind.OUTBOUND, author="billing@acme.test", body="Refunded."
    )

    # Create Reply names the customer by Help Scout's own ID for them.
    assert body(http.calls[2]) == {"customer": {"id": 77}, "text": "Refunded."}
    assert messages(session, ticket_id) == [("outbound", "Refunded.")]


def test_helpscout_follows_a_moved_conversation_with_the_same_request(session, http):
    ticket_id = mirrored_ticket(session, "helpscout", "4321")
    grant_tokens(http, "tok-1")
    moved = f"{HELPSCOUT}/v2/conversations/456/notes"
    http.post(f"{CONVERSATION}/notes", status=301, headers={"Location": moved})
    http.post(moved, status=201)

    helpscout(session).add_internal_note(ticket_id, "note", author="billing-desk")

    followed = http.calls[-1].request
    assert (followed.method, followed.url, followed.body) == ("POST", moved, b'{"text": "note"}')
    assert followed.headers["Authorization"] == "Bearer tok-1"


def test_helpscout_does_not_follow_a_redirect_off_its_api_host(session, http):
    ticket_id = mirrored_ticket(session, "helpscout", "4321")
    grant_tokens(http, "tok-1")
    http.post(f"{CONVERSATION}/notes", status=301, headers={"Location": "https://evil.test/x"})

    with pytest.raises(HelpdeskError, match="off its API host"):
        helpscout(session).add_internal_note(ticket_id, "note", author="billing-desk")
    assert messages(session, ticket_id) == []


def test_helpscout_rejected_credentials_name_the_settings(session, http):
    ticket_id = mirrored_ticket(session, "helpscout", "4321")
    http.post(HELPSCOUT_TOKEN, status=401, json={"error": "invalid_client"})

    with pytest.raises(HelpdeskError, match="HELPSCOUT_CLIENT_ID") as raised:
        helpscout(session).add_internal_note(ticket_id, "note", author="billing-desk")
    assert not raised.value.retryable


# --- error mapping (both adapters) --------------------------------------------------------

FAILURES = [
    (400, HelpdeskError),
    (401, HelpdeskError),
    (404, HelpdeskError),
    (422, HelpdeskError),
    (429, HelpdeskUnavailable),
    (500, HelpdeskUnavailable),
    (503, HelpdeskUnavailable),
    (requests.ConnectionError("connection refused"), HelpdeskUnavailable),
    (requests.ReadTimeout("read timed out"), HelpdeskUnavailable),
]


@pytest.mark.parametrize("adapter", ["zendesk", "helpscout"])
@pytest.mark.parametrize(("failure", "error"), FAILURES)
def test_failures_map_onto_our_errors_and_leave_the_mirror_alone(
    session, http, adapter, failure, error
):
    ticket_id = mirrored_ticket(session, adapter)
    if adapter == "zendesk":
        desk: ZendeskHelpdesk | HelpScoutHelpdesk = zendesk(session)
        method, url = responses.PUT, ZENDESK_TICKET
    else:
        desk = helpscout(session)
        grant_tokens(http, "tok-1")  # granted again after a 401, as it would be
        method, url = responses.POST, f"{CONVERSATION}/notes"
    if isinstance(failure, int):
        payload = {"error": "RecordInvalid", "description": "Nope", "details": {"x": LEAK}}
        http.add(method, url, status=failure, json=payload)
        if adapter == "helpscout" and failure == 404:
            # A write's 404 may be a merged conversation: Help Scout says to read it again.
            http.get(CONVERSATION, status=404, json={"message": "Not found"})
    else:
        http.add(method, url, body=failure)

    with pytest.raises(HelpdeskError) as raised:
        desk.add_internal_note(ticket_id, "note", author="billing-desk")

    assert type(raised.value) is error
    assert raised.value.retryable is (error is HelpdeskUnavailable)
    assert raised.value.__cause__ is not None
    message = str(raised.value)
    assert LEAK not in message
    if isinstance(failure, int):
        assert str(failure) in message
        assert "RecordInvalid: Nope" in message
    assert messages(session, ticket_id) == []


# --- registry -----------------------------------------------------------------------------


def test_registry_builds_each_supported_helpdesk(session):
    assert SUPPORTED == ("local", "zendesk", "helpscout")
    assert isinstance(make_helpdesk("local", session), LocalHelpdesk)
    assert isinstance(make_helpdesk("local", session, SETTINGS), LocalHelpdesk)
    assert isinstance(make_helpdesk("zendesk", session, SETTINGS), ZendeskHelpdesk)
    assert isinstance(make_helpdesk("helpscout", session, SETTINGS), HelpScoutHelpdesk)


@pytest.mark.parametrize(
    ("name", "blank", "setting"),
    [
        ("zendesk", "zendesk_subdomain", "ZENDESK_SUBDOMAIN"),
        ("zendesk", "zendesk_email", "ZENDESK_EMAIL"),
        ("zendesk", "zendesk_api_token", "ZENDESK_API_TOKEN"),
        ("helpscout", "helpscout_client_id", "HELPSCOUT_CLIENT_ID"),
        ("helpscout", "helpscout_client_secret", "HELPSCOUT_CLIENT_SECRET"),
    ],
)
def test_registry_names_the_missing_setting(session, name, blank, setting):
    settings = dataclasses.replace(SETTINGS, **{blank: None})
    with pytest.raises(ConfigError) as raised:
        make_helpdesk(name, session, settings)
    assert raised.value.setting == setting


def test_a_ticket_of_an_unknown_helpdesk_is_refused(session):
    with pytest.raises(HelpdeskError, match="unknown helpdesk 'nope'"):
        make_helpdesk("nope", session, SETTINGS)


@pytest.mark.parametrize("name", ["zendesk", "helpscout"])
def test_registry_without_settings_names_the_first_credential(session, name):
    with pytest.raises(ConfigError, match=name.upper()):
        make_helpdesk(name, session)


@pytest.mark.parametrize(
    ("helpdesk", "adapter"),
    [("local", LocalHelpdesk), ("zendesk", ZendeskHelpdesk), ("helpscout", HelpScoutHelpdesk)],
)
def test_helpdesk_for_ticket_follows_the_ticket_row(session, helpdesk, adapter):
    ticket_id = mirrored_ticket(session, helpdesk)
    assert isinstance(helpdesk_for_ticket(session, ticket_id, SETTINGS), adapter)


def test_helpdesk_for_a_missing_ticket_is_not_found(session):
    with pytest.raises(NotFound):
        helpdesk_for_ticket(session, 999_999, SETTINGS)
