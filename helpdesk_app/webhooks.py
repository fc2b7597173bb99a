"""Stripe calls us: ``POST /webhooks/stripe`` verifies, records the event once, enqueues, 2xx.

The signature is checked over the raw body with stripe-python's own verifier, against every
configured secret (during a rotation Stripe signs with each). Nothing unverified leaves a trace:
no row, no job. The handler does no Stripe call and no handler work, so the answer comes back
in milliseconds; ``jobs.stripe_events`` does the rest. The session cookie and CSRF token are
never looked at here: the signature is this route's only proof.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import stripe
from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import RequestEntityTooLarge

from core.db.models import StripeEvent
from helpdesk_app.services import get_services, get_session
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
