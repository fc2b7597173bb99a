"""Stripe, Zendesk and Help Scout call us: each webhook verifies the raw body's signature,
records the delivery once, enqueues it and answers 2xx at once.

``POST /webhooks/stripe``: Stripe events (jobs.stripe_events). ``POST /webhooks/zendesk`` and
``POST /webhooks/helpscout``: a ticket created or a customer's reply in the team's helpdesk
(jobs.helpdesk_events), which then reads the ticket from the helpdesk's API.

The signature is checked over the raw body with stripe-python's own verifier, against every
configured secret (during a rotation Stripe signs with each). Nothing unverified leaves a trace:
no row, no job. The handler does no Stripe call and no handler work, so the answer comes back
in milliseconds; ``jobs.stripe_events`` does the rest. The session cookie and CSRF token are
never looked at here: the signature is this route's only proof.

Deliveries are rate limited per client address (``RATE_LIMIT_WEBHOOKS``) before the signature is
checked: the address is the TCP peer's, which a forger cannot choose, so a forged flood spends
only the forger's budget, never Stripe's (``helpdesk_app.rate_limits.Surface.WEBHOOKS``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import stripe
from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import RequestEntityTooLarge

from core.db.models import HelpdeskEvent, StripeEvent, utcnow
from core.errors import BillingDeskError
from core.helpdesks import helpscout, zendesk
from core.helpdesks.base import TicketEvent
from helpdesk_app.services import get_services, get_session
from jobs.helpdesk_events import enqueue_helpdesk_event
from jobs.stripe_events import enqueue_event

bp = Blueprint("webhooks", __name__)
log = logging.getLogger(__name__)

# Stripe's events are well under 1 MB; anything larger is not from Stripe.
MAX_EVENT_BYTES = 1024 * 1024
TOLERANCE_SECONDS = 300  # stripe-python's default: older signatures are replays


def _answer(status: int, **body: Any) -> tuple[Response, int]:
    return jsonify(body), status


def _verified(payload: str, header: str, secrets: tuple[str, ...]) -> bool:
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(
                payload, header, secret, tolerance=TOLERANCE_SECONDS
            )
        except stripe.SignatureVerificationError:
            continue
        return True
    return False


def _event_fields(payload: str) -> tuple[str, str, int] | None:
    """The event's ID, type and created time, or None when it is not an event."""
    try:
        event = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    event_id, event_type, created = event.get("id"), event.get("type"), event.get("created")
    if not (isinstance(event_id, str) and event_id.startswith("evt_") and len(event_id) <= 255):
        return None
    if not isinstance(event_type, str) or not isinstance(created, int):
        return None
    return event_id, event_type, created


@bp.post("/webhooks/stripe")
def stripe_webhook() -> tuple[Response, int]:
    """Verify a Stripe delivery, record its event once, queue it; 200 at once."""
    services = get_services()
    secrets = services.settings.stripe_webhook_secrets
    if not secrets:
        log.error("Stripe webhook refused: STRIPE_WEBHOOK_SECRET is not set")
        return _answer(503, error="webhook signing secret not configured")
    if (request.content_length or 0) > MAX_EVENT_BYTES:
        return _answer(413, error="body too large")
    request.max_content_length = MAX_EVENT_BYTES  # a body without a length is cut off too
    header = request.headers.get("Stripe-Signature", "")
    try:
        payload = request.get_data(cache=False).decode("utf-8")
    except RequestEntityTooLarge:
        return _answer(413, error="body too large")
    except UnicodeDecodeError:
        return _answer(400, error="body is not UTF-8")
    if not header or not _verified(payload, header, secrets):
        log.info("Stripe webhook refused: signature missing, wrong or too old")
        return _answer(400, error="invalid signature")
    fields = _event_fields(payload)
    if fields is None:
        return _answer(400, error="not a Stripe event")
    event_id, event_type, created = fields
    db = get_session()
    db.add(StripeEvent(id=event_id, type=event_type, created=created, payload=payload))
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        processed = db.scalar(select(StripeEvent.processed_at).where(StripeEvent.id == event_id))
        if processed is None:
            # Received before but perhaps never queued (Redis was down): queueing twice runs once.
            enqueue_event(services.redis, event_id)
        log.info("Stripe event %s (%s) already received", event_id, event_type)
        return _answer(200, received=event_id, duplicate=True, message="already received")
    enqueue_event(services.redis, event_id)
    log.info("Stripe event %s (%s) received", event_id, event_type)
    return _answer(200, received=event_id)


# --- Zendesk and Help Scout ---------------------------------------------------------------

# The kinds of ticket event the mail agent acts on; others are acknowledged and dropped.
ACTED_ON = frozenset({"created", "customer_reply"})
MAX_HELPDESK_EVENT_BYTES = 1024 * 1024


def _raw_body() -> bytes | None:
    """The raw body, or None when it is over the limit (with or without a Content-Length)."""
    if (request.content_length or 0) > MAX_HELPDESK_EVENT_BYTES:
        return None
    request.max_content_length = MAX_HELPDESK_EVENT_BYTES
    try:
        return request.get_data(cache=False)
    except RequestEntityTooLarge:
        return None


def _record(event: TicketEvent) -> tuple[Response, int]:
    """Record a verified delivery once and queue it; a repeat is answered 200 and dropped."""
    if event.kind not in ACTED_ON:
        return _answer(200, ignored=event.kind)
    services = get_services()
    db = get_session()
    db.add(
        HelpdeskEvent(
            key=event.key,
            helpdesk=event.helpdesk,
            account=event.account[:200],
            external_id=event.external_id[:64],
            kind=event.kind,
            entry_id=(event.entry_id or "")[:64] or None,
            received_at=utcnow(),
        )
    )
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        row = db.scalar(select(HelpdeskEvent).where(HelpdeskEvent.key == event.key))
        if row is not None and row.processed_at is None:
            enqueue_helpdesk_event(services.redis, row.id)  # queued twice runs once
        log.info("%s delivery %s already received", event.helpdesk, event.key)
        return _answer(200, duplicate=True, message="already received")
    row = db.scalar(select(HelpdeskEvent).where(HelpdeskEvent.key == event.key))
    assert row is not None
    enqueue_helpdesk_event(services.redis, row.id)
    log.info("%s delivery for ticket %s received", event.helpdesk, event.external_id)
    return _answer(200, received=event.external_id)


def _delivery(service: str, read: Callable[[bytes], TicketEvent]) -> tuple[Response, int]:
    """A hosted helpdesk's delivery: the body within bounds, ``read`` (verify, then parse)
    accepting it, then recorded and queued; any refusal leaves no trace."""
    body = _raw_body()
    if body is None:
        return _answer(413, error="body too large")
    try:
        event = read(body)
    except BillingDeskError as exc:
        log.info("%s webhook refused: %s", service, exc)
        return _answer(exc.http_status if exc.http_status < 500 else 400, error=str(exc))
    return _record(event)


@bp.post("/webhooks/zendesk")
def zendesk_webhook() -> tuple[Response, int]:
    """Verify a Zendesk delivery (signature over timestamp and body, signed recently), then
    record and queue the ticket it names."""
    settings = get_services().settings
    secrets, subdomain = settings.zendesk_webhook_secrets, settings.zendesk_subdomain
    if not secrets or not subdomain:
        log.error("Zendesk webhook refused: ZENDESK_WEBHOOK_SECRET or ZENDESK_SUBDOMAIN unset")
        return _answer(503, error="webhook signing secret not configured")

    def read(body: bytes) -> TicketEvent:
        zendesk.verify_webhook(body, request.headers, secrets, now=utcnow())
        return zendesk.parse_webhook(body, request.headers, subdomain)

    return _delivery("Zendesk", read)


@bp.post("/webhooks/helpscout")
def helpscout_webhook() -> tuple[Response, int]:
    """Verify a Help Scout delivery (HMAC-SHA1 over the body), then record and queue the
    conversation it names. Never 410: Help Scout deactivates a webhook that answers 410."""
    secrets = get_services().settings.helpscout_webhook_secrets
    if not secrets:
        log.error("Help Scout webhook refused: HELPSCOUT_WEBHOOK_SECRET is not set")
        return _answer(503, error="webhook signing secret not configured")

    def read(body: bytes) -> TicketEvent:
        helpscout.verify_webhook(body, request.headers, secrets)
        return helpscout.parse_webhook(body, request.headers, account=helpscout.ACCOUNT)

    return _delivery("Help Scout", read)
