"""``/webhooks/zendesk`` and ``/webhooks/helpscout``: what is refused, what is recorded, once.

The routes' only proof is the signature: no cookie, no CSRF token, no session. Everything
refused leaves no row and no job; a verified delivery is recorded once by its key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from core.db import session_scope
from core.db.models import HelpdeskEvent
from helpdesk_app import create_app
from jobs import queues

SECRET, OLD_SECRET = "new-webhook-secret", "old-webhook-secret"


@pytest.fixture
def client(settings, rt):
    configured = replace(
        settings,
        zendesk_subdomain="acme",
        zendesk_webhook_secret=f"{OLD_SECRET},{SECRET}",
        helpscout_webhook_secret=SECRET,
    )
    app = create_app(configured)
    app.config["TESTING"] = True
    return app.test_client()


def zendesk_headers(body: bytes, secret: str = SECRET, stamp: str | None = None) -> dict:
    stamp = stamp or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = hmac.new(secret.encode(), stamp.encode() + body, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "X-Zendesk-Webhook-Signature": base64.b64encode(digest).decode(),
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
    }


def helpscout_headers(body: bytes, event: str = "convo.created", secret: str = SECRET) -> dict:
    digest = hmac.new(secret.encode(), body, hashlib.sha1).digest()
    return {
        "Content-Type": "application/json",
        "X-HelpScout-Event": event,
        "X-HelpScout-Signature": base64.b64encode(digest).decode(),
    }


def created(ticket_id: int = 101, event_id: str = "evt-1") -> bytes:
    return json.dumps(
        {
            "type": "zen:event-type:ticket.created",
            "id": event_id,
            "subject": f"zen:ticket:{ticket_id}",
            "detail": {"id": str(ticket_id)},
            "event": {},
        }
    ).encode()


def recorded(rt) -> list[tuple[str, str, str]]:
    with session_scope(rt.session_factory) as session:
        rows = session.scalars(select(HelpdeskEvent).order_by(HelpdeskEvent.id)).all()
        return [(r.helpdesk, r.external_id, r.kind) for r in rows]


def queued(rt) -> int:
    return rt.queue(queues.MAIL).count


def test_a_verified_zendesk_delivery_is_recorded_and_queued_once(client, rt):
    body = created()
    first = client.post("/webhooks/zendesk", data=body, headers=zendesk_headers(body))
    again = client.post("/webhooks/zendesk", data=body, headers=zendesk_headers(body))
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.get_json()["duplicate"] is True
    assert recorded(rt) == [("zendesk", "101", "created")]
    assert queued(rt) == 1


def test_a_secret_being_rotated_out_still_verifies(client, rt):
    body = created()
    response = client.post(
        "/webhooks/zendesk", data=body, headers=zendesk_headers(body, OLD_SECRET)
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "what",
    ["tampered", "other-secret", "stale", "future", "no-signature", "no-timestamp", "bad-stamp"],
)
def test_a_zendesk_delivery_that_does_not_verify_leaves_no_trace(client, rt, what):
    body = created()
    headers = zendesk_headers(body, "someone-else" if what == "other-secret" else SECRET)
    if what == "tampered":
        body = created(ticket_id=999)
    elif what in ("stale", "future"):
        stamp = "2020-01-01T00:00:00Z" if what == "stale" else "2099-01-01T00:00:00Z"
        headers = zendesk_headers(body, stamp=stamp)
    elif what == "no-signature":
        del headers["X-Zendesk-Webhook-Signature"]
    elif what == "no-timestamp":
        del headers["X-Zendesk-Webhook-Signature-Timestamp"]
    elif what == "bad-stamp":
        headers = zendesk_headers(body, stamp="yesterday")
    response = client.post("/webhooks/zendesk", data=body, headers=headers)
    assert response.status_code == 401
    assert recorded(rt) == [] and queued(rt) == 0


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", json.dumps({"type": "zen:event-type:ticket.created"}).encode()],
    ids=["not-json", "not-an-object", "no-ticket"],
)
def test_a_signed_body_that_names_no_ticket_is_refused(client, rt, body):
    response = client.post("/webhooks/zendesk", data=body, headers=zendesk_headers(body))
    assert response.status_code == 400
    assert recorded(rt) == []


def test_an_agents_comment_and_other_events_are_acknowledged_and_dropped(client, rt):
    agent_comment = json.dumps(
        {
            "type": "zen:event-type:ticket.comment_added",
            "id": "evt-2",
            "subject": "zen:ticket:101",
            "event": {"comment": {"id": "5", "is_public": True, "author": {"is_staff": True}}},
        }
    ).encode()
    status_change = json.dumps(
        {"type": "zen:event-type:ticket.status_changed", "id": "evt-3", "subject": "zen:ticket:1"}
    ).encode()
    for body in (agent_comment, status_change):
        response = client.post("/webhooks/zendesk", data=body, headers=zendesk_headers(body))
        assert response.status_code == 200 and "ignored" in response.get_json()
    assert recorded(rt) == [] and queued(rt) == 0


def test_a_trigger_body_naming_the_ticket_is_taken(client, rt):
    body = json.dumps({"ticket_id": "202"}).encode()
    response = client.post("/webhooks/zendesk", data=body, headers=zendesk_headers(body))
    assert response.status_code == 200
    assert recorded(rt) == [("zendesk", "202", "created")]


def test_an_oversized_delivery_is_refused_before_it_is_read(client, rt):
    body = b'{"x": "' + b"a" * (1024 * 1024 + 10) + b'"}'
    for path, headers in (
        ("/webhooks/zendesk", zendesk_headers(body)),
        ("/webhooks/helpscout", helpscout_headers(body)),
    ):
        assert client.post(path, data=body, headers=headers).status_code == 413
    assert recorded(rt) == []


def test_unconfigured_secrets_refuse_every_delivery(settings, rt):
    client = create_app(replace(settings, zendesk_subdomain="acme")).test_client()
    body = created()
    assert (
        client.post("/webhooks/zendesk", data=body, headers=zendesk_headers(body)).status_code
        == 503
    )
    hs = client.post("/webhooks/helpscout", data=body, headers=helpscout_headers(body))
    assert hs.status_code == 503
    assert recorded(rt) == []


def conversation(conversation_id: int = 880001, thread_id: int = 3000001) -> bytes:
    return json.dumps(
        {
            "id": conversation_id,
            "subject": "Charged twice",
            "_embedded": {
                "threads": [
                    {"id": thread_id, "type": "customer", "createdAt": "2026-12-01T10:00:00Z"}
                ]
            },
        }
    ).encode()


def test_help_scout_deliveries_are_keyed_by_conversation_and_customer_thread(client, rt):
    body = conversation()
    for _ in range(2):  # a redelivery or a replay: Help Scout signs no time
        response = client.post("/webhooks/helpscout", data=body, headers=helpscout_headers(body))
        assert response.status_code == 200
    reply = conversation(thread_id=3000002)
    headers = helpscout_headers(reply, "convo.customer.reply.created")
    assert client.post("/webhooks/helpscout", data=reply, headers=headers).status_code == 200
    assert recorded(rt) == [
        ("helpscout", "880001", "created"),
        ("helpscout", "880001", "customer_reply"),
    ]
    with session_scope(rt.session_factory) as session:
        assert session.scalar(select(func.count()).select_from(HelpdeskEvent)) == 2


@pytest.mark.parametrize("what", ["tampered", "other-secret", "unsigned"])
def test_a_help_scout_delivery_that_does_not_verify_is_refused_never_410(client, rt, what):
    body = conversation()
    headers = helpscout_headers(body, secret="someone-else" if what == "other-secret" else SECRET)
    if what == "tampered":
        body = conversation(conversation_id=1)
    if what == "unsigned":
        del headers["X-HelpScout-Signature"]
    response = client.post("/webhooks/helpscout", data=body, headers=headers)
    # 410 would make Help Scout turn the webhook off for good.
    assert response.status_code == 401
    assert recorded(rt) == []
