"""The Zendesk and Help Scout fakes answer plain ``requests`` the way the vendors document."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fake_helpdesks
import pytest
import requests
from fake_helpdesks import FakeHelpScout, FakeZendesk
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

# The fakes' fixtures, bound by assignment: an imported name that every test argument
# redefines would trip ruff's F811.
fake_zendesk = fake_helpdesks.fake_zendesk
fake_helpscout = fake_helpdesks.fake_helpscout

TIMEOUT = 5


# --- helpers ----------------------------------------------------------------------------


def zd(fake: FakeZendesk, method: str, path: str, **kwargs: Any) -> requests.Response:
    """A request to the fake Zendesk with the account's API token."""
    auth = (f"{fake.email}/token", fake.api_token)
    return requests.request(method, fake.url + path, auth=auth, timeout=TIMEOUT, **kwargs)


def hs_token(fake: FakeHelpScout) -> str:
    """A fresh access token from the fake Help Scout's client-credentials grant."""
    form = {
        "grant_type": "client_credentials",
        "client_id": fake.client_id,
        "client_secret": fake.client_secret,
    }
    response = requests.post(fake.url + "/v2/oauth2/token", data=form, timeout=TIMEOUT)
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def hs(fake: FakeHelpScout, method: str, path: str, token: str, **kwargs: Any) -> requests.Response:
    """A request to the fake Help Scout with a bearer token."""
    headers = {"Authorization": f"Bearer {token}"}
    return requests.request(method, fake.url + path, headers=headers, timeout=TIMEOUT, **kwargs)


@dataclass
class Receiver:
    """A loopback endpoint that records the webhooks it is sent and answers 200."""

    url: str
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on a free loopback port for one test."""
    received: list[tuple[dict[str, str], bytes]] = []

    def app(environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        received.append((dict(request.headers), request.get_data()))
        return Response("ok")(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield Receiver(f"http://127.0.0.1:{server.server_port}/hooks", received)
    finally:
        server.shutdown()
        server.server_close()


# --- Zendesk: authentication and reading ------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [
        None,
        ("agent@acme.test/token", "wrong-token"),
        ("agent@acme.test", "zd-token"),  # a password login, not token auth
        ("someone@acme.test/token", "zd-token"),
    ],
)
def test_zendesk_refuses_anything_but_the_accounts_token(
    fake_zendesk: FakeZendesk, auth: tuple[str, str] | None
) -> None:
    """Only Basic ``{email}/token:{api_token}`` gets in; the rest is 401 with Zendesk's body."""
    ticket_id = fake_zendesk.create_ticket("Refund", "Please refund", "ann@example.com")
    response = requests.get(
        f"{fake_zendesk.url}/api/v2/tickets/{ticket_id}.json", auth=auth, timeout=TIMEOUT
    )
    assert response.status_code == 401
    assert response.json() == {"error": "Couldn't authenticate you"}


def test_zendesk_ticket_has_zendesks_fields_and_sideloads_users(
    fake_zendesk: FakeZendesk,
) -> None:
    """Show Ticket answers the ticket; ``include=users`` adds requester and submitter."""
    ticket_id = fake_zendesk.create_ticket(
        "Double charge", "I was charged twice", "ann@example.com", "Ann Lee", flags=[2]
    )
    response = zd(fake_zendesk, "GET", f"/api/v2/tickets/{ticket_id}.json?include=users")

    assert response.status_code == 200
    ticket = response.json()["ticket"]
    assert ticket["id"] == ticket_id
    assert ticket["url"] == f"{fake_zendesk.url}/api/v2/tickets/{ticket_id}.json"
    assert ticket["subject"] == ticket["raw_subject"] == "Double charge"
    assert ticket["description"] == "I was charged twice"
    assert ticket["status"] == "new"
    assert ticket["tags"] == [] and ticket["custom_fields"] == []
    assert ticket["via"]["channel"] == "email"
    assert ticket["via"]["source"]["from"] == {"address": "ann@example.com", "name": "Ann Lee"}
    assert ticket["updated_at"].endswith("Z") and len(ticket["updated_at"]) == 20
    users = response.json()["users"]
    assert [u["email"] for u in users] == ["ann@example.com"]
    assert users[0]["id"] == ticket["requester_id"] == ticket["submitter_id"]
    assert users[0]["role"] == "end-user"
    comment = fake_zendesk.comments(ticket_id)[0]
    assert comment["metadata"]["flags"] == [2] and comment["metadata"]["trusted"] is False


def test_zendesk_missing_records_are_404_record_not_found(fake_zendesk: FakeZendesk) -> None:
    """A ticket or user that does not exist answers Zendesk's RecordNotFound."""
    for path in ("/api/v2/tickets/999999.json", "/api/v2/users/1.json"):
        response = zd(fake_zendesk, "GET", path)
        assert response.status_code == 404
        assert response.json() == {"error": "RecordNotFound", "description": "Not found"}


def test_zendesk_user_shows_role_and_verification(fake_zendesk: FakeZendesk) -> None:
    """Show User answers the user with its role."""
    user_id = fake_zendesk.add_user("Bo Agent", "bo@acme.test", role="agent", verified=True)
    user = zd(fake_zendesk, "GET", f"/api/v2/users/{user_id}.json").json()["user"]
    assert {k: user[k] for k in ("id", "name", "email", "role", "verified", "active")} == {
        "id": user_id,
        "name": "Bo Agent",
        "email": "bo@acme.test",
        "role": "agent",
        "verified": True,
        "active": True,
    }


def test_zendesk_comments_cursor_pagination_walks_every_page(fake_zendesk: FakeZendesk) -> None:
    """``page[size]`` pages follow ``links.next`` (a full URL on the fake) until has_more ends."""
    ticket_id = fake_zendesk.create_ticket("Refund", "first", "ann@example.com")
    for n in range(2, 6):
        fake_zendesk.add_comment(ticket_id, f"comment {n}", "ann@example.com")

    bodies: list[str] = []
    url: str | None = f"{fake_zendesk.url}/api/v2/tickets/{ticket_id}/comments.json?page[size]=2"
    pages = 0
    while url is not None:
        assert url.startswith(fake_zendesk.url)
        page = zd(fake_zendesk, "GET", url.removeprefix(fake_zendesk.url)).json()
        pages += 1
        bodies += [c["body"] for c in page["comments"]]
        assert page["meta"]["has_more"] is (page["links"]["next"] is not None)
        assert page["meta"]["after_cursor"]
        url = page["links"]["next"]

    assert pages == 3
    assert bodies == ["first", "comment 2", "comment 3", "comment 4", "comment 5"]
    comment = fake_zendesk.comments(ticket_id)[0]
    assert comment["type"] == "Comment" and comment["public"] is True
    assert comment["plain_body"] == "first" and comment["attachments"] == []


def test_zendesk_comments_page_size_is_capped_at_100(fake_zendesk: FakeZendesk) -> None:
    """A page larger than Zendesk's maximum is served at 100."""
    ticket_id = fake_zendesk.create_ticket("Refund", "first", "ann@example.com")
    for n in range(105):
        fake_zendesk.add_comment(ticket_id, f"c{n}", "ann@example.com")
    page = zd(fake_zendesk, "GET", f"/api/v2/tickets/{ticket_id}/comments.json?page[size]=500")
    assert len(page.json()["comments"]) == 100
    assert page.json()["meta"]["has_more"] is True


def test_zendesk_comments_without_cursor_use_offset_pagination(fake_zendesk: FakeZendesk) -> None:
    """No ``page[...]`` parameter: Zendesk's offset pagination (next_page, count)."""
    ticket_id = fake_zendesk.create_ticket("Refund", "first", "ann@example.com")
    fake_zendesk.add_comment(ticket_id, "second", "ann@example.com")
    page = zd(fake_zendesk, "GET", f"/api/v2/tickets/{ticket_id}/comments.json?per_page=1")
    assert page.json()["count"] == 2
    assert page.json()["previous_page"] is None
    next_page = page.json()["next_page"]
    assert next_page.startswith(fake_zendesk.url)
    second = zd(fake_zendesk, "GET", next_page.removeprefix(fake_zendesk.url)).json()
    assert [c["body"] for c in second["comments"]] == ["second"]
    assert second["next_page"] is None


# --- Zendesk: writing -------------------------------------------------------------------


def test_zendesk_update_applies_fields_and_comment_and_returns_an_audit(
    fake_zendesk: FakeZendesk,
) -> None:
    """PUT a ticket: status, tags (replace, add, remove), a private comment; an audit back."""
    group_id = fake_zendesk.add_group("Billing")
    ticket_id = fake_zendesk.create_ticket("Refund", "Please refund", "ann@example.com")
    fake_zendesk.agent_edit(ticket_id, tags=["old", "keep"])
    change = {
        "status": "pending",
        "group_id": group_id,
        "tags": ["keep", "refund"],
        "additional_tags": ["billing_desk"],
        "remove_tags": ["refund"],
        "comment": {"body": "Refund issued", "public": False},
    }
    response = zd(fake_zendesk, "PUT", f"/api/v2/tickets/{ticket_id}.json", json={"ticket": change})

    assert response.status_code == 200
    ticket = response.json()["ticket"]
    assert ticket["status"] == "pending" and ticket["group_id"] == group_id
    assert ticket["tags"] == ["keep", "billing_desk"]
    audit = response.json()["audit"]
    assert audit["ticket_id"] == ticket_id
    event_types = [e["type"] for e in audit["events"]]
    assert event_types[0] == "Comment" and "Change" in event_types
    comments = fake_zendesk.comments(ticket_id)
    assert comments[-1]["body"] == "Refund issued" and comments[-1]["public"] is False
    assert comments[-1]["author_id"] == fake_zendesk.agent_id
    assert comments[-1]["audit_id"] == audit["id"]


def test_zendesk_updated_at_changes_on_every_update_even_within_a_second(
    fake_zendesk: FakeZendesk,
) -> None:
    """Back-to-back updates each move ``updated_at`` forward."""
    ticket_id = fake_zendesk.create_ticket("Refund", "Please refund", "ann@example.com")
    stamps = [fake_zendesk.ticket(ticket_id)["updated_at"]]
    for status in ("open", "pending", "open"):
        path = f"/api/v2/tickets/{ticket_id}.json"
        response = zd(fake_zendesk, "PUT", path, json={"ticket": {"status": status}})
        stamps.append(response.json()["ticket"]["updated_at"])
    assert stamps == sorted(set(stamps))


def test_zendesk_safe_update_is_refused_after_an_agent_edit(fake_zendesk: FakeZendesk) -> None:
    """A stale ``updated_stamp`` with ``safe_update`` is 409; the fresh one goes through."""
    ticket_id = fake_zendesk.create_ticket("Refund", "Please refund", "ann@example.com")
    stale = fake_zendesk.ticket(ticket_id)["updated_at"]
    fake_zendesk.agent_edit(ticket_id, comment="Looking into it")
    path = f"/api/v2/tickets/{ticket_id}.json"

    def put(stamp: str) -> requests.Response:
        change = {"status": "solved", "safe_update": True, "updated_stamp": stamp}
        change["assignee_email"] = fake_zendesk.email  # Zendesk solves assigned tickets only
        return zd(fake_zendesk, "PUT", path, json={"ticket": change})

    refused = put(stale)
    assert refused.status_code == 409
    assert refused.json()["error"] == "UpdateConflict"
    assert fake_zendesk.ticket(ticket_id)["status"] == "new"
    assert put(fake_zendesk.ticket(ticket_id)["updated_at"]).status_code == 200
    assert fake_zendesk.ticket(ticket_id)["status"] == "solved"


def test_zendesk_closed_ticket_refuses_updates_and_tag_changes(fake_zendesk: FakeZendesk) -> None:
    """A closed ticket answers 422 RecordInvalid to PUT and to the tag endpoints."""
    ticket_id = fake_zendesk.create_ticket("Refund", "Please refund", "ann@example.com")
    fake_zendesk.agent_edit(ticket_id, status="closed")
    path = f"/api/v2/tickets/{ticket_id}.json"
    update = zd(fake_zendesk, "PUT", path, json={"ticket": {"comment": {"body": "hi"}}})
    assert update.status_code == 422
    assert update.json()["details"]["status"] == [
        {"description": "Status: closed prevents ticket update"}
    ]
    tags = zd(fake_zendesk, "PUT", f"/api/v2/tickets/{ticket_id}/tags.json", json={"tags": ["x"]})
    assert tags.status_code == 422
    assert len(fake_zendesk.comments(ticket_id)) == 1


def test_zendesk_unknown_group_is_422_and_changes_nothing(fake_zendesk: FakeZendesk) -> None:
    """An update naming a group that does not exist is refused whole."""
    ticket_id = fake_zendesk.create_ticket("Refund", "Please refund", "ann@example.com")
    change = {"group_id": 123, "status": "open"}
    response = zd(fake_zendesk, "PUT", f"/api/v2/tickets/{ticket_id}.json", json={"ticket": change})
    assert response.status_code == 422
    assert response.json()["error"] == "RecordInvalid"
    assert fake_zendesk.ticket(ticket_id)["status"] == "new"


def test_zendesk_tags_put_adds_post_sets_delete_removes(fake_zendesk: FakeZendesk) -> None:
    """Each tags verb answers the whole current list."""
    ticket_id = fake_zendesk.create_ticket("Refund", "Please refund", "ann@example.com")
    path = f"/api/v2/tickets/{ticket_id}/tags.json"
    assert zd(fake_zendesk, "PUT", path, json={"tags": ["a", "b"]}).json() == {"tags": ["a", "b"]}
    assert zd(fake_zendesk, "PUT", path, json={"tags": ["c"]}).json() == {"tags": ["a", "b", "c"]}
    assert zd(fake_zendesk, "POST", path, json={"tags": ["z"]}).json() == {"tags": ["z"]}
    assert zd(fake_zendesk, "PUT", path, json={"tags": ["y"]}).json() == {"tags": ["z", "y"]}
    assert zd(fake_zendesk, "DELETE", path, json={"tags": ["z"]}).json() == {"tags": ["y"]}
    assert zd(fake_zendesk, "GET", path).json() == {"tags": ["y"]}


def test_zendesk_add_tags_honours_safe_update(fake_zendesk: FakeZendesk) -> None:
    """Add Tags with a stale stamp is 409 and adds nothing."""
    ticket_id = fake_zendesk.create_ticket("Refund", "Please refund", "ann@example.com")
    stale = fake_zendesk.ticket(ticket_id)["updated_at"]
    fake_zendesk.agent_edit(ticket_id, tags=["vip"])
    body = {"tags": ["billing"], "safe_update": "true", "updated_stamp": stale}
    response = zd(fake_zendesk, "PUT", f"/api/v2/tickets/{ticket_id}/tags.json", json=body)
    assert response.status_code == 409
    assert fake_zendesk.ticket(ticket_id)["tags"] == ["vip"]


def test_zendesk_create_ticket_makes_the_requester(fake_zendesk: FakeZendesk) -> None:
    """POST tickets: 201 with the ticket; an unknown requester email becomes an end user."""
    group_id = fake_zendesk.add_group("Billing")
    ticket = {
        "subject": "Your refund",
        "comment": {"body": "We refunded you", "public": True},
        "requester": {"email": "new@example.com", "name": "New Person"},
        "tags": ["billing_desk"],
        "group_id": group_id,
    }
    response = zd(fake_zendesk, "POST", "/api/v2/tickets.json", json={"ticket": ticket})
    assert response.status_code == 201
    created = response.json()["ticket"]
    assert created["status"] == "new" and created["tags"] == ["billing_desk"]
    assert created["description"] == "We refunded you"
    assert fake_zendesk.user(created["requester_id"])["email"] == "new@example.com"
    assert created["submitter_id"] == fake_zendesk.agent_id


def test_zendesk_search_filters_requester_status_and_words_newest_first(
    fake_zendesk: FakeZendesk,
) -> None:
    """Search supports type, requester, status comparisons and free words."""
    older = fake_zendesk.create_ticket("Refund please", "charged twice", "ann@example.com")
    newer = fake_zendesk.create_ticket("Another refund", "again", "ann@example.com")
    solved = fake_zendesk.create_ticket("Refund done", "thanks", "ann@example.com")
    fake_zendesk.agent_edit(solved, status="solved")
    fake_zendesk.create_ticket("Refund", "not mine", "bob@example.com")

    query = "type:ticket requester:ann@example.com status<solved refund"
    response = zd(fake_zendesk, "GET", "/api/v2/search.json", params={"query": query})
    body = response.json()
    assert [r["id"] for r in body["results"]] == [newer, older]
    assert body["count"] == 2 and body["next_page"] is None
    assert {r["result_type"] for r in body["results"]} == {"ticket"}
    words = zd(fake_zendesk, "GET", "/api/v2/search.json", params={"query": "CHARGED twice"})
    assert [r["id"] for r in words.json()["results"]] == [older]


def test_zendesk_groups_are_listed(fake_zendesk: FakeZendesk) -> None:
    """List Groups answers every group with a count."""
    group_id = fake_zendesk.add_group("Billing")
    body = zd(fake_zendesk, "GET", "/api/v2/groups.json").json()
    assert body["count"] == 1 and body["next_page"] is None
    assert body["groups"][0]["id"] == group_id and body["groups"][0]["name"] == "Billing"


def test_zendesk_records_each_request(fake_zendesk: FakeZendesk) -> None:
    """The request log has method, path, query, JSON body, headers and the answered status."""
    ticket_id = fake_zendesk.create_ticket("Refund", "Please refund", "ann@example.com")
    zd(
        fake_zendesk,
        "PUT",
        f"/api/v2/tickets/{ticket_id}.json",
        json={"ticket": {"status": "open"}},
    )
    zd(fake_zendesk, "GET", "/api/v2/search.json", params={"query": "refund"})
    put, search = fake_zendesk.requests
    assert (put.method, put.path, put.body, put.status) == (
        "PUT",
        f"/api/v2/tickets/{ticket_id}.json",
        {"ticket": {"status": "open"}},
        200,
    )
    assert put.headers["Authorization"].startswith("Basic ")
    assert put.headers["Content-Type"] == "application/json"
    assert search.query == {"query": "refund"}
    assert fake_zendesk.requests_to("GET", r"/search\.json$") == [search]


# --- faults -----------------------------------------------------------------------------


def test_zendesk_fault_fires_exactly_times_times(fake_zendesk: FakeZendesk) -> None:
    """Two armed 429s with Retry-After answer two requests; the third gets the ticket."""
    ticket_id = fake_zendesk.create_ticket("Refund", "Please refund", "ann@example.com")
    fake_zendesk.fail_next("GET", r"/tickets/\d+\.json$", 429, times=2)
    path = f"/api/v2/tickets/{ticket_id}.json"
    answers = [zd(fake_zendesk, "GET", path) for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 200]
    assert answers[0].headers["Retry-After"] == "1"
    assert [r.status for r in fake_zendesk.requests] == [429, 429, 200]


@pytest.mark.parametrize("status", [500, 503])
def test_zendesk_server_errors_can_be_injected(fake_zendesk: FakeZendesk, status: int) -> None:
    """A 5xx fault answers once, with an injected body when given."""
    fake_zendesk.fail_next("PUT", r"/tickets/", status, body={"error": "Boom"})
    ticket_id = fake_zendesk.create_ticket("Refund", "Please refund", "ann@example.com")
    path = f"/api/v2/tickets/{ticket_id}.json"
    first = zd(fake_zendesk, "PUT", path, json={"ticket": {"status": "open"}})
    assert (first.status_code, first.json()) == (status, {"error": "Boom"})
    assert fake_zendesk.ticket(ticket_id)["status"] == "new"
    assert zd(fake_zendesk, "PUT", path, json={"ticket": {"status": "open"}}).status_code == 200


def test_dropped_connection_fault_closes_the_socket_without_an_answer(
    fake_zendesk: FakeZendesk,
) -> None:
    """``status=None`` drops the connection: the client sees a connection error, once."""
    fake_zendesk.fail_next("GET", r"/groups\.json$", None)
    with pytest.raises(requests.ConnectionError):
        zd(fake_zendesk, "GET", "/api/v2/groups.json")
    assert zd(fake_zendesk, "GET", "/api/v2/groups.json").status_code == 200
    assert [r.status for r in fake_zendesk.requests] == [None, 200]


# --- Zendesk webhooks -------------------------------------------------------------------


def zendesk_signature(secret: str, timestamp: str, body: bytes) -> str:
    """What a receiver computes: base64(HMAC-SHA256(secret, timestamp + body))."""
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def test_zendesk_comment_added_event_is_signed_and_replayable(
    fake_zendesk: FakeZendesk, receiver: Receiver
) -> None:
    """The event body has Zendesk's schema; its signature verifies; a replay is identical."""
    ticket_id = fake_zendesk.create_ticket("Refund", "Please refund", "ann@example.com")
    comment_id = fake_zendesk.add_comment(ticket_id, "Any news?", "ann@example.com")
    delivery = fake_zendesk.deliver_event(
        receiver.url, "s3cret", "ticket.comment_added", ticket_id, comment_id
    )
    assert delivery.status_code == 200
    headers, body = receiver.received[0]
    assert body == delivery.body
    timestamp = headers["X-Zendesk-Webhook-Signature-Timestamp"]
    assert headers["X-Zendesk-Webhook-Signature"] == zendesk_signature("s3cret", timestamp, body)
    assert headers["X-Zendesk-Webhook-Id"] and headers["X-Zendesk-Webhook-Invocation-Id"]

    payload = json.loads(body)
    assert payload["type"] == "zen:event-type:ticket.comment_added"
    assert payload["subject"] == f"zen:ticket:{ticket_id}"
    assert payload["zendesk_event_version"] == "2022-11-06"
    assert payload["account_id"] == fake_zendesk.account_id
    assert payload["detail"]["id"] == str(ticket_id) and payload["detail"]["status"] == "NEW"
    comment = payload["event"]["comment"]
    assert comment["id"] == str(comment_id) and comment["body"] == "Any news?"
    assert comment["is_public"] is True and comment["author"]["is_staff"] is False

    delivery.replay()
    replayed_headers, replayed_body = receiver.received[1]
    assert replayed_body == delivery.body
    assert (
        replayed_headers["X-Zendesk-Webhook-Signature"]
        == delivery.headers["X-Zendesk-Webhook-Signature"]
    )


def test_zendesk_tampered_event_fails_verification(
    fake_zendesk: FakeZendesk, receiver: Receiver
) -> None:
    """``tamper`` changes the body after signing; a stale timestamp is sent as asked."""
    ticket_id = fake_zendesk.create_ticket("Refund", "Please refund", "ann@example.com")
    delivery = fake_zendesk.deliver_event(
        receiver.url, "s3cret", "zen:event-type:ticket.created", ticket_id,
        timestamp="2020-01-01T00:00:00Z", tamper=True,
    )  # fmt: skip
    headers, body = receiver.received[0]
    assert headers["X-Zendesk-Webhook-Signature-Timestamp"] == "2020-01-01T00:00:00Z"
    expected = zendesk_signature("s3cret", "2020-01-01T00:00:00Z", body)
    assert headers["X-Zendesk-Webhook-Signature"] != expected
    assert b"(tampered)" in delivery.body


# --- Help Scout: authentication ---------------------------------------------------------


def test_helpscout_grants_tokens_and_counts_them(fake_helpscout: FakeHelpScout) -> None:
    """The client-credentials grant answers a bearer token; each grant is counted."""
    form = {"grant_type": "client_credentials", "client_id": "hs-id", "client_secret": "hs-secret"}
    response = requests.post(fake_helpscout.url + "/v2/oauth2/token", data=form, timeout=TIMEOUT)
    grant = response.json()
    assert grant["token_type"] == "bearer" and grant["expires_in"] == 172800
    assert len(grant["access_token"]) == 32
    hs_token(fake_helpscout)
    assert fake_helpscout.tokens_granted == 2


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"client_id": "hs-id", "client_secret": "nope"}, 401, "invalid_client"),
        ({"client_id": "other", "client_secret": "hs-secret"}, 401, "invalid_client"),
    ],
)
def test_helpscout_refuses_wrong_client_credentials(
    fake_helpscout: FakeHelpScout, form: dict[str, str], status: int, error: str
) -> None:
    """Wrong credentials are 401 invalid_client and grant nothing."""
    data = {"grant_type": "client_credentials", **form}
    response = requests.post(fake_helpscout.url + "/v2/oauth2/token", data=data, timeout=TIMEOUT)
    assert response.status_code == status and response.json()["error"] == error
    assert fake_helpscout.tokens_granted == 0


def test_helpscout_api_needs_a_live_bearer_token(fake_helpscout: FakeHelpScout) -> None:
    """No token, a made-up token, or an expired one: 401. A fresh grant works again."""
    conversation_id = fake_helpscout.create_conversation("Refund", "Please", "ann@example.com")
    path = f"/v2/conversations/{conversation_id}"
    assert requests.get(fake_helpscout.url + path, timeout=TIMEOUT).status_code == 401
    assert hs(fake_helpscout, "GET", path, "made-up").status_code == 401
    token = hs_token(fake_helpscout)
    assert hs(fake_helpscout, "GET", path, token).status_code == 200
    fake_helpscout.expire_tokens()
    assert hs(fake_helpscout, "GET", path, token).status_code == 401
    assert hs(fake_helpscout, "GET", path, hs_token(fake_helpscout)).status_code == 200


# --- Help Scout: reading ----------------------------------------------------------------


def test_helpscout_conversation_has_v2_fields_and_embeds_threads(
    fake_helpscout: FakeHelpScout,
) -> None:
    """Get Conversation answers the v2 object; ``embed=threads`` adds ``_embedded.threads``."""
    conversation_id = fake_helpscout.create_conversation(
        "Double charge", "<p>Charged twice</p>", "ann@example.com", "Ann", "Lee"
    )
    token = hs_token(fake_helpscout)
    plain = hs(fake_helpscout, "GET", f"/v2/conversations/{conversation_id}", token).json()
    assert "_embedded" not in plain and "assignee" not in plain and "closedAt" not in plain
    assert plain["status"] == "active" and plain["state"] == "published"
    assert plain["type"] == "email" and plain["mailboxId"] == fake_helpscout.mailbox_id
    assert plain["threads"] == 1 and plain["preview"] == "Charged twice"
    customer = {"type": "customer", "email": "ann@example.com", "first": "Ann", "last": "Lee"}
    assert plain["primaryCustomer"] == {"id": plain["primaryCustomer"]["id"], **customer}
    assert plain["createdBy"] == plain["primaryCustomer"]
    assert plain["source"] == {"type": "email", "via": "customer"}
    assert plain["_links"]["self"]["href"].startswith(fake_helpscout.url)

    path = f"/v2/conversations/{conversation_id}?embed=threads"
    embedded = hs(fake_helpscout, "GET", path, token).json()
    (thread,) = embedded["_embedded"]["threads"]
    assert thread["type"] == "customer" and thread["body"] == "<p>Charged twice</p>"
    assert thread["createdBy"]["type"] == "customer" and thread["state"] == "published"
    assert thread["customer"]["email"] == "ann@example.com"


def test_helpscout_threads_pages_link_to_each_other() -> None:
    """List Threads pages (newest first) carry ``next`` links until the last page."""
    with FakeHelpScout(threads_page_size=2) as fake:
        conversation_id = fake.create_conversation("Refund", "one", "ann@example.com")
        for body in ("two", "three", "four", "five"):
            fake.add_customer_reply(conversation_id, body)
        token = hs_token(fake)
        bodies: list[str] = []
        numbers: list[int] = []
        url: str | None = f"{fake.url}/v2/conversations/{conversation_id}/threads"
        while url is not None:
            page = hs(fake, "GET", url.removeprefix(fake.url), token).json()
            bodies += [t["body"] for t in page["_embedded"]["threads"]]
            numbers.append(page["page"]["number"])
            assert page["page"]["totalElements"] == 5 and page["page"]["totalPages"] == 3
            url = page["_links"].get("next", {}).get("href")
    assert bodies == ["five", "four", "three", "two", "one"]
    assert numbers == [1, 2, 3]


def test_helpscout_lists_conversations_by_email_subject_and_status(
    fake_helpscout: FakeHelpScout,
) -> None:
    """List Conversations filters by mailbox, status and an AND of query terms."""
    refund = fake_helpscout.create_conversation("Refund please", "x", "ann@example.com")
    fake_helpscout.create_conversation("Invoice", "x", "ann@example.com")
    closed = fake_helpscout.create_conversation("Old refund", "x", "ann@example.com")
    fake_helpscout.agent_edit(closed, status="closed")
    fake_helpscout.create_conversation("Refund", "x", "bob@example.com")
    token = hs_token(fake_helpscout)

    def listed(**params: str) -> list[int]:
        params = {"mailbox": str(fake_helpscout.mailbox_id), **params}
        body = hs(fake_helpscout, "GET", "/v2/conversations", token, params=params).json()
        return [c["id"] for c in body["_embedded"]["conversations"]]

    assert listed(query='(email:"ann@example.com" AND subject:"refund")') == [refund]
    assert listed(query='(email:"ann@example.com" AND subject:"refund")', status="all") == [
        closed,
        refund,
    ]
    assert listed(status="closed") == [closed]
    assert listed(mailbox="1") == []


def test_helpscout_customer_has_embedded_emails(fake_helpscout: FakeHelpScout) -> None:
    """Get Customer answers names and ``_embedded.emails``."""
    customer_id = fake_helpscout.add_customer("ann@example.com", "Ann", "Lee")
    token = hs_token(fake_helpscout)
    customer = hs(fake_helpscout, "GET", f"/v2/customers/{customer_id}", token).json()
    assert (customer["id"], customer["firstName"], customer["lastName"]) == (
        customer_id,
        "Ann",
        "Lee",
    )
    (email,) = customer["_embedded"]["emails"]
    assert email["value"] == "ann@example.com" and email["type"] == "work"


# --- Help Scout: writing ----------------------------------------------------------------


def test_helpscout_note_and_reply_answer_201_with_resource_id(
    fake_helpscout: FakeHelpScout,
) -> None:
    """Create Note/Reply: 201, empty body, Location and Resource-ID of the new thread."""
    conversation_id = fake_helpscout.create_conversation("Refund", "Please", "ann@example.com")
    fake_helpscout.agent_edit(conversation_id, status="closed")
    customer_id = fake_helpscout.conversation(conversation_id)["primaryCustomer"]["id"]
    token = hs_token(fake_helpscout)
    base = f"/v2/conversations/{conversation_id}"

    note = hs(fake_helpscout, "POST", f"{base}/notes", token, json={"text": "<p>Checked</p>"})
    assert note.status_code == 201 and note.content == b""
    note_id = int(note.headers["Resource-ID"])
    assert note.headers["Location"] == f"{fake_helpscout.url}{base}/threads/{note_id}"
    assert fake_helpscout.conversation(conversation_id)["status"] == "closed"

    reply_body = {"customer": {"id": customer_id}, "text": "<p>Refunded</p>"}
    reply = hs(fake_helpscout, "POST", f"{base}/reply", token, json=reply_body)
    assert reply.status_code == 201
    newest = fake_helpscout.threads(conversation_id)[0]
    assert newest["id"] == int(reply.headers["Resource-ID"])
    assert newest["type"] == "reply" and newest["createdBy"]["type"] == "user"
    assert newest["to"] == ["ann@example.com"]
    # A reply without an explicit status reactivates the conversation.
    assert fake_helpscout.conversation(conversation_id)["status"] == "active"


def test_helpscout_patch_changes_status_owner_and_subject(fake_helpscout: FakeHelpScout) -> None:
    """JSON Patch replace on /status, /assignTo, /subject answers 204 and applies."""
    conversation_id = fake_helpscout.create_conversation("Refund", "Please", "ann@example.com")
    team_id = fake_helpscout.add_team("Billing")
    token = hs_token(fake_helpscout)
    path = f"/v2/conversations/{conversation_id}"
    for patch in (
        {"op": "replace", "path": "/status", "value": "pending"},
        {"op": "replace", "path": "/assignTo", "value": team_id},
        {"op": "replace", "path": "/subject", "value": "Refund (double charge)"},
    ):
        assert hs(fake_helpscout, "PATCH", path, token, json=patch).status_code == 204
    conversation = fake_helpscout.conversation(conversation_id)
    assert conversation["status"] == "pending"
    assert conversation["assignee"]["id"] == team_id
    assert conversation["subject"] == "Refund (double charge)"


@pytest.mark.parametrize(
    "patch",
    [
        {"op": "add", "path": "/status", "value": "closed"},
        {"op": "replace", "path": "/colour", "value": "red"},
        {"op": "replace", "path": "/status", "value": "finished"},
        {"op": "replace", "path": "/assignTo", "value": 12345},
    ],
)
def test_helpscout_bad_patch_is_400_with_help_scouts_error_shape(
    fake_helpscout: FakeHelpScout, patch: dict[str, Any]
) -> None:
    """An unsupported op, path or value answers 400 with logRef and embedded errors."""
    conversation_id = fake_helpscout.create_conversation("Refund", "Please", "ann@example.com")
    token = hs_token(fake_helpscout)
    path = f"/v2/conversations/{conversation_id}"
    response = hs(fake_helpscout, "PATCH", path, token, json=patch)
    assert response.status_code == 400
    error = response.json()
    assert error["logRef"] and error["message"]
    assert {"path", "message", "source"} <= set(error["_embedded"]["errors"][0])
    assert fake_helpscout.conversation(conversation_id)["status"] == "active"


def test_helpscout_tags_put_replaces_the_whole_list(fake_helpscout: FakeHelpScout) -> None:
    """Update Tags sets exactly the given tags (204)."""
    conversation_id = fake_helpscout.create_conversation("Refund", "Please", "ann@example.com")
    fake_helpscout.agent_edit(conversation_id, tags=["vip", "refund"])
    token = hs_token(fake_helpscout)
    path = f"/v2/conversations/{conversation_id}/tags"
    response = hs(fake_helpscout, "PUT", path, token, json={"tags": ["billing-desk"]})
    assert response.status_code == 204
    tags = fake_helpscout.conversation(conversation_id)["tags"]
    assert [t["tag"] for t in tags] == ["billing-desk"]
    assert {"id", "color", "tag"} == set(tags[0])


def test_helpscout_merged_conversation_redirects_reads_and_refuses_writes(
    fake_helpscout: FakeHelpScout,
) -> None:
    """After a merge the old id answers 301 to the new one for reads and 404 for writes."""
    old = fake_helpscout.create_conversation("Refund", "first", "ann@example.com")
    new = fake_helpscout.create_conversation("Refund again", "second", "ann@example.com")
    fake_helpscout.merge(old, new)
    token = hs_token(fake_helpscout)

    for suffix in ("?embed=threads", "/threads?page=1"):
        path = f"/v2/conversations/{old}{suffix}"
        moved = hs(fake_helpscout, "GET", path, token, allow_redirects=False)
        assert moved.status_code == 301
        assert moved.headers["Location"] == f"{fake_helpscout.url}/v2/conversations/{new}{suffix}"
    followed = hs(fake_helpscout, "GET", f"/v2/conversations/{old}", token)
    assert followed.json()["id"] == new and followed.json()["threads"] == 2

    note = hs(fake_helpscout, "POST", f"/v2/conversations/{old}/notes", token, json={"text": "x"})
    assert note.status_code == 404


def test_helpscout_merge_can_redirect_writes_too(fake_helpscout: FakeHelpScout) -> None:
    """``redirect_writes`` answers 301 to writes on the old id as well."""
    old = fake_helpscout.create_conversation("Refund", "first", "ann@example.com")
    new = fake_helpscout.create_conversation("Refund again", "second", "ann@example.com")
    fake_helpscout.merge(old, new, redirect_writes=True)
    token = hs_token(fake_helpscout)
    path = f"/v2/conversations/{old}/tags"
    moved = hs(fake_helpscout, "PUT", path, token, json={"tags": ["x"]}, allow_redirects=False)
    assert moved.status_code == 301
    assert moved.headers["Location"] == f"{fake_helpscout.url}/v2/conversations/{new}/tags"


# --- Help Scout: rate budget and faults -------------------------------------------------


def test_helpscout_rate_budget_answers_429_with_retry_after() -> None:
    """Past ``per_minute`` (writes counting 2) the API answers 429 until the window ends."""
    now = [1000.0]
    with FakeHelpScout(per_minute=4, clock=lambda: now[0]) as fake:
        conversation_id = fake.create_conversation("Refund", "Please", "ann@example.com")
        token = hs_token(fake)  # the token endpoint is not counted
        path = f"/v2/conversations/{conversation_id}"
        first = hs(fake, "GET", path, token)
        assert first.headers["X-RateLimit-Limit-Minute"] == "4"
        assert first.headers["X-RateLimit-Remaining-Minute"] == "3"
        note = hs(fake, "POST", f"{path}/notes", token, json={"text": "x"})
        assert note.headers["X-RateLimit-Remaining-Minute"] == "1"
        assert hs(fake, "GET", path, token).headers["X-RateLimit-Remaining-Minute"] == "0"

        now[0] += 20
        limited = hs(fake, "GET", path, token)
        assert limited.status_code == 429
        assert limited.headers["X-RateLimit-Retry-After"] == "40"
        assert limited.headers["X-RateLimit-Remaining-Minute"] == "0"

        now[0] += 40
        assert hs(fake, "GET", path, token).status_code == 200
        for _ in range(3):
            hs(fake, "GET", path, token)
        assert hs(fake, "GET", path, token).status_code == 429
        fake.reset_rate_window()
        assert hs(fake, "GET", path, token).status_code == 200


def test_helpscout_faults_fire_exactly_times_times(fake_helpscout: FakeHelpScout) -> None:
    """An armed 429 carries Help Scout's retry headers; a 503 follows; then the real answer."""
    conversation_id = fake_helpscout.create_conversation("Refund", "Please", "ann@example.com")
    token = hs_token(fake_helpscout)
    fake_helpscout.fail_next("GET", rf"/conversations/{conversation_id}$", 429, times=2)
    fake_helpscout.fail_next("GET", rf"/conversations/{conversation_id}$", 503)
    path = f"/v2/conversations/{conversation_id}"
    answers = [hs(fake_helpscout, "GET", path, token) for _ in range(4)]
    assert [a.status_code for a in answers] == [429, 429, 503, 200]
    assert answers[0].headers["X-RateLimit-Retry-After"] == "1"
    assert answers[0].headers["Retry-After"] == "1"
    assert "X-RateLimit-Remaining-Minute" in answers[2].headers


# --- Help Scout webhooks ----------------------------------------------------------------


def test_helpscout_webhook_is_signed_with_hmac_sha1(
    fake_helpscout: FakeHelpScout, receiver: Receiver
) -> None:
    """The body is the conversation with threads; the signature is base64 HMAC-SHA1."""
    conversation_id = fake_helpscout.create_conversation("Refund", "Please", "ann@example.com")
    fake_helpscout.add_customer_reply(conversation_id, "Any news?")
    delivery = fake_helpscout.deliver(
        receiver.url, "hs-hook-secret", "convo.customer.reply.created", conversation_id
    )
    assert delivery.status_code == 200
    headers, body = receiver.received[0]
    expected = base64.b64encode(hmac.new(b"hs-hook-secret", body, hashlib.sha1).digest()).decode()
    assert headers["X-Helpscout-Signature"] == expected
    assert headers["X-Helpscout-Event"] == "convo.customer.reply.created"
    payload = json.loads(body)
    assert payload["id"] == conversation_id
    assert [t["body"] for t in payload["_embedded"]["threads"]] == ["Any news?", "Please"]

    tampered = fake_helpscout.deliver(
        receiver.url, "hs-hook-secret", "convo.created", conversation_id, tamper=True
    )
    signature = tampered.headers["X-HelpScout-Signature"]
    recomputed = hmac.new(b"hs-hook-secret", tampered.body, hashlib.sha1).digest()
    assert signature != base64.b64encode(recomputed).decode()
    tampered.replay()
    assert receiver.received[-1][1] == tampered.body


def test_zendesk_solves_only_an_assigned_ticket(fake_zendesk: FakeZendesk) -> None:
    """Solving an unassigned ticket is refused; ``assignee_email`` assigns it on the way."""
    ticket_id = fake_zendesk.create_ticket("Refund", "Please refund", "ann@example.com")
    path = f"/api/v2/tickets/{ticket_id}.json"
    refused = zd(fake_zendesk, "PUT", path, json={"ticket": {"status": "solved"}})
    assert refused.status_code == 422
    unknown = {"status": "solved", "assignee_email": "nobody@acme.test"}
    assert zd(fake_zendesk, "PUT", path, json={"ticket": unknown}).status_code == 422
    solved = {"status": "solved", "assignee_email": fake_zendesk.email}
    assert zd(fake_zendesk, "PUT", path, json={"ticket": solved}).status_code == 200
    state = fake_zendesk.ticket(ticket_id)
    assert (state["status"], state["assignee_id"]) == ("solved", fake_zendesk.agent_id)
