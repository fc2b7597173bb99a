"""The exact HTTP the gateway sends to Stripe, and how Stripe's errors come back to us."""

from __future__ import annotations

import json
import urllib.parse

import pytest
import responses

from core.domain import Money, RefundReason
from core.errors import ConfigError, GatewayError, GatewayUnavailable, NotFound
from core.stripe_gateway import StripeGateway, make_stripe_client

API = "https://api.stripe.com"


@pytest.fixture
def gateway() -> StripeGateway:
    return StripeGateway(make_stripe_client("sk_test_unit", network_retries=0))


def refund_json(**changes):
    return {
        "id": "re_1",
        "object": "refund",
        "amount": 4900,
        "currency": "usd",
        "charge": "ch_1",
        "reason": "duplicate",
        "status": "succeeded",
        "metadata": {},
        **changes,
    }


def error_json(message: str, type_: str = "invalid_request_error", code: str | None = None):
    return {"error": {"message": message, "type": type_, "code": code}}


@responses.activate
def test_refund_sends_our_idempotency_key_amount_reason_and_metadata(gateway):
    responses.post(f"{API}/v1/refunds", json=refund_json())
    refund = gateway.refund(
        "ch_1",
        Money(4900, "usd"),
        RefundReason.DUPLICATE,
        idempotency_key="duplicate-refund:ch_1",
        metadata={"ticket_id": "7"},
    )
    request = responses.calls[0].request
    assert request.headers["Idempotency-Key"] == "duplicate-refund:ch_1"
    assert request.headers["Authorization"] == "Bearer sk_test_unit"
    form = dict(urllib.parse.parse_qsl(request.body))
    assert form == {
        "charge": "ch_1",
        "amount": "4900",
        "reason": "duplicate",
        "metadata[ticket_id]": "7",
        "metadata[idempotency_key]": "duplicate-refund:ch_1",
    }
    assert (refund.id, refund.amount, refund.reason) == ("re_1", Money(4900, "usd"), "duplicate")


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (
            400,
            error_json("Charge ch_1 has already been refunded.", code="charge_already_refunded"),
            GatewayError,
        ),
        (404, error_json("No such charge: 'ch_1'", code="resource_missing"), NotFound),
        (401, error_json("Invalid API Key provided", type_="invalid_request_error"), ConfigError),
        (429, error_json("Too many requests", type_="rate_limit_error"), GatewayUnavailable),
        (500, error_json("Something went wrong", type_="api_error"), GatewayUnavailable),
    ],
)
@responses.activate
def test_stripe_errors_are_wrapped(gateway, status, body, error):
    responses.post(f"{API}/v1/refunds", json=body, status=status)
    with pytest.raises(error):
        gateway.refund(
            "ch_1", Money(100, "usd"), RefundReason.DUPLICATE, idempotency_key="k", metadata={}
        )


def test_unreachable_stripe_is_retryable():
    gateway = StripeGateway(
        make_stripe_client("sk_test_unit", "http://127.0.0.1:9", network_retries=0)
    )
    with pytest.raises(GatewayUnavailable) as raised:
        gateway.get_charge("ch_1")
    assert raised.value.retryable


@responses.activate
def test_customers_by_email_asks_search_and_list_and_ignores_case(gateway):
    alice = {
        "id": "cus_1",
        "object": "customer",
        "email": "Alice@Example.com",
        "name": "A",
        "metadata": {},
    }
    other = {
        "id": "cus_2",
        "object": "customer",
        "email": "bob@example.com",
        "name": "B",
        "metadata": {},
    }
    responses.get(
        f"{API}/v1/customers/search",
        json={
            "object": "search_result",
            "data": [alice, other],
            "has_more": False,
            "url": "/v1/customers/search",
        },
    )
    responses.get(
        f"{API}/v1/customers",
        json={"object": "list", "data": [alice], "has_more": False, "url": "/v1/customers"},
    )
    found = gateway.find_customers_by_email("alice@example.com")
    assert [c.id for c in found] == ["cus_1"]
    query = urllib.parse.parse_qs(urllib.parse.urlparse(responses.calls[0].request.url).query)
    assert query["query"] == ["email:'alice@example.com'"]


@responses.activate
def test_search_quotes_are_escaped(gateway):
    responses.get(
        f"{API}/v1/customers/search",
        json={
            "object": "search_result",
            "data": [],
            "has_more": False,
            "url": "/v1/customers/search",
        },
    )
    responses.get(
        f"{API}/v1/customers",
        json={"object": "list", "data": [], "has_more": False, "url": "/v1/customers"},
    )
    gateway.find_customers_by_email("o'hara@example.com")
    query = urllib.parse.parse_qs(urllib.parse.urlparse(responses.calls[0].request.url).query)
    assert query["query"] == ["email:'o\\'hara@example.com'"]


@responses.activate
def test_charges_map_card_and_decline_without_the_card_number(gateway):
    charge = {
        "id": "ch_9",
        "object": "charge",
        "amount": 2900,
        "currency": "usd",
        "customer": "cus_1",
        "amount_refunded": 0,
        "created": 1763700000,
        "status": "failed",
        "captured": False,
        "disputed": False,
        "failure_code": "card_declined",
        "outcome": {"type": "issuer_declined", "reason": "insufficient_funds"},
        "payment_method_details": {
            "type": "card",
            "card": {"brand": "visa", "last4": "9995", "fingerprint": "fp1"},
        },
    }
    responses.get(
        f"{API}/v1/charges",
        json={"object": "list", "data": [charge], "has_more": False, "url": "/v1/charges"},
    )
    (mapped,) = gateway.list_charges("cus_1")
    assert (mapped.card_brand, mapped.card_last4, mapped.decline_code) == (
        "visa",
        "9995",
        "insufficient_funds",
    )
    assert json.dumps(mapped.__dict__, default=str).count("9995") == 1
