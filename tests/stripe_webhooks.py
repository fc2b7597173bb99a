"""Stripe webhook deliveries built the way Stripe builds them: an event, signed with a secret.

The signature is ours (HMAC-SHA256 over ``"{t}.{body}"``, Stripe's documented v1 scheme), not
stripe-python's, so the endpoint's verifier is checked against the spec rather than itself.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from typing import Any

SECRET = "whsec_test_current_0123456789"
OLD_SECRET = "whsec_test_previous_9876543210"

_ids = itertools.count(1)


def event(
    event_type: str, obj: dict[str, Any], *, created: int | None = None, event_id: str = ""
) -> dict[str, Any]:
    """A Stripe event of ``event_type`` carrying ``obj``."""
    return {
        "id": event_id or f"evt_test_{next(_ids):06d}_{time.time_ns() % 10**9}",
        "object": "event",
        "api_version": "2026-06-24.dahlia",
        "type": event_type,
        "created": created if created is not None else int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }


def sign(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header for ``body``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def deliver(client: Any, evt: dict[str, Any], secret: str = SECRET) -> Any:
    """POST the event, signed, to the app's endpoint; the response."""
    body = json.dumps(evt).encode()
    return client.post(
        "/webhooks/stripe",
        data=body,
        headers={"Stripe-Signature": sign(body, secret), "Content-Type": "application/json"},
    )


def customer(customer_id: str, name: str, email: str = "c@example.com") -> dict[str, Any]:
    """A Stripe customer object."""
    return {"id": customer_id, "object": "customer", "name": name, "email": email}


def subscription(sub_id: str, customer_id: str, status: str) -> dict[str, Any]:
    """A Stripe subscription object."""
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer_id,
        "status": status,
        "cancel_at_period_end": False,
        "created": 1_700_000_000,
        "items": {"data": [{"current_period_end": 1_800_000_000}]},
    }


def charge(charge_id: str, customer_id: str, status: str, amount: int = 2500) -> dict[str, Any]:
    """A Stripe charge object."""
    return {
        "id": charge_id,
        "object": "charge",
        "customer": customer_id,
        "amount": amount,
        "currency": "usd",
        "status": status,
        "amount_refunded": 0,
        "disputed": False,
        "failure_code": "card_declined" if status == "failed" else None,
        "created": int(time.time()),
    }


def invoice(
    invoice_id: str, customer_id: str, status: str, amount: int = 2500, attempt: int = 1
) -> dict[str, Any]:
    """A Stripe invoice object as current API versions send it: it names no charge."""
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": customer_id,
        "amount_due": amount,
        "amount_paid": amount if status == "paid" else 0,
        "currency": "usd",
        "status": status,
        "attempt_count": attempt,
        "created": int(time.time()),
    }
