"""The exact HTTP the gateway sends to Stripe, and how Stripe's errors come back to us."""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import responses
import stripe

from core.domain import Charge, Money, RefundReason
from core.errors import (
    ConfigError,
    GatewayError,
    GatewayUnavailable,
    NotFound,
    StripeOutcomeUnknown,
)
from core.stripe_gateway import (
    MAX_CARD_SEARCH_PAGES,
    StripeGateway,
    make_stripe_client,
    request_key,
)

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
        (500, error_json("Something went wrong", type_="api_error"), StripeOutcomeUnknown),
    ],
)
@responses.activate
def test_stripe_errors_are_wrapped(gateway, status, body, error):
    responses.post(f"{API}/v1/refunds", json=body, status=status)
    with pytest.raises(error):
        gateway.refund(
            "ch_1", Money(100, "usd"), RefundReason.DUPLICATE, idempotency_key="k", metadata={}
        )


@responses.activate
def test_a_rate_limited_request_is_retried_and_a_lasting_one_is_retryable_later(monkeypatch):
    """stripe-python never retries 429 itself; ours does, with its backoff, then gives up
    with an error the job retries later."""
    monkeypatch.setattr(stripe.RequestsClient, "_sleep_time_seconds", lambda self, n: 0)
    gateway = StripeGateway(make_stripe_client("sk_test_unit", network_retries=2))
    limited = error_json("Too many requests", type_="rate_limit_error", code="rate_limit")
    url = f"{API}/v1/charges/ch_1"
    responses.get(url, json=limited, status=429)
    responses.get(url, json=charge_json_for_retry())
    assert gateway.get_charge("ch_1").id == "ch_1"
    assert len(responses.calls) == 2

    responses.reset()
    responses.get(url, json=limited, status=429)
    with pytest.raises(GatewayUnavailable) as raised:
        gateway.get_charge("ch_1")
    assert raised.value.retryable and len(responses.calls) == 3  # the first try and 2 retries


@responses.activate
def test_a_request_in_progress_under_the_same_key_is_retried_later_under_that_key(gateway):
    """409: the first request with the key is still running. Its outcome is Stripe's to give
    back under the same key; spending the key (a fresh one next time) could refund twice."""
    busy = error_json("There is currently another in-progress request using this key.")
    busy["error"]["type"] = "idempotency_error"
    responses.post(f"{API}/v1/refunds", json=busy, status=409)
    with pytest.raises(GatewayUnavailable) as raised:
        gateway.refund(
            "ch_1", Money(100, "usd"), RefundReason.DUPLICATE, idempotency_key="k", metadata={}
        )
    assert raised.value.retryable and not isinstance(raised.value, StripeOutcomeUnknown)


@responses.activate
def test_a_refund_whose_key_a_server_error_spent_is_sent_under_a_fresh_request_key(gateway):
    responses.post(f"{API}/v1/refunds", json=refund_json())
    gateway.refund(
        "ch_1",
        Money(4900, "usd"),
        RefundReason.DUPLICATE,
        idempotency_key="refund:ch_1",
        metadata={},
        request_key=request_key("refund:ch_1", spent=1),
    )
    (call,) = responses.calls
    assert call.request.headers["Idempotency-Key"] == "refund:ch_1:retry-1"
    assert form_of(call)["metadata[idempotency_key]"] == "refund:ch_1"  # what find_refund reads
    assert request_key("refund:ch_1") == "refund:ch_1"


@responses.activate
def test_a_deleted_customer_is_not_found_though_stripe_answers_200(gateway):
    stub = {"id": "cus_gone", "object": "customer", "deleted": True}
    responses.get(f"{API}/v1/customers/cus_gone", json=stub)
    with pytest.raises(NotFound):
        gateway.get_customer("cus_gone")
    assert gateway.search_customers("cus_gone") == []


@responses.activate
def test_the_invoice_a_charge_paid_is_read_through_its_payment_intent(gateway):
    responses.get(
        f"{API}/v1/invoice_payments",
        json={
            "object": "list",
            "url": "/v1/invoice_payments",
            "has_more": False,
            "data": [{"id": "inpay_1", "object": "invoice_payment", "invoice": "in_7"}],
        },
    )
    charge = replace(_mapped_charge(), invoice_id=None, payment_intent_id="pi_3")
    assert gateway.invoice_paid_by(charge) == "in_7"
    assert query_of(responses.calls[0]) == {
        "payment[type]": ["payment_intent"],
        "payment[payment_intent]": ["pi_3"],
        "limit": ["1"],
    }
    # An older API version's charge says its invoice itself: no request.
    assert gateway.invoice_paid_by(replace(charge, invoice_id="in_old")) == "in_old"
    assert gateway.invoice_paid_by(replace(charge, payment_intent_id=None)) is None
    assert len(responses.calls) == 1


def charge_json_for_retry():
    return {
        "id": "ch_1",
        "object": "charge",
        "amount": 100,
        "currency": "usd",
        "created": 1763700000,
        "status": "succeeded",
    }


def _mapped_charge() -> Charge:
    return Charge(
        id="ch_1",
        customer_id="cus_1",
        amount=Money(100, "usd"),
        amount_refunded=0,
        created=datetime(2026, 1, 1, tzinfo=UTC),
        status="succeeded",
        captured=True,
        disputed=False,
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


# --- request shapes of the subscription, portal and fraud actions ---------------------------


def subscription_json(**changes):
    return {
        "id": "sub_1",
        "object": "subscription",
        "customer": "cus_1",
        "status": "active",
        "created": 1763000000,
        "cancel_at_period_end": False,
        "cancel_at": None,
        "canceled_at": None,
        "trial_end": None,
        "discounts": [],
        "latest_invoice": "in_1",
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_1",
                    "object": "subscription_item",
                    "quantity": 1,
                    "current_period_start": 1763000000,
                    "current_period_end": 1765592000,
                    "price": {
                        "id": "price_1",
                        "object": "price",
                        "nickname": "Pro monthly",
                        "product": "prod_1",
                        "unit_amount": 4900,
                        "currency": "usd",
                        "recurring": {"interval": "month", "interval_count": 1},
                    },
                }
            ],
        },
        **changes,
    }


def form_of(call) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(call.request.body or ""))


def query_of(call) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(urllib.parse.urlparse(call.request.url).query)


@responses.activate
def test_cancel_at_period_end_updates_the_subscription(gateway):
    responses.post(
        f"{API}/v1/subscriptions/sub_1",
        json=subscription_json(cancel_at_period_end=True, cancel_at=1765592000),
    )
    sub = gateway.cancel_subscription("sub_1", at_period_end=True, idempotency_key="cancel:7")
    (call,) = responses.calls
    assert call.request.headers["Idempotency-Key"] == "cancel:7"
    assert form_of(call) == {"cancel_at_period_end": "true", "expand[0]": "discounts"}
    assert (sub.cancel_at_period_end, sub.cancel_at) == (
        True,
        datetime(2025, 12, 13, 2, 13, 20, tzinfo=UTC),
    )


@responses.activate
def test_cancel_now_deletes_the_subscription(gateway):
    responses.delete(
        f"{API}/v1/subscriptions/sub_1",
        json=subscription_json(status="canceled", canceled_at=1763100000),
    )
    sub = gateway.cancel_subscription("sub_1", at_period_end=False, idempotency_key="cancel:8")
    (call,) = responses.calls
    assert call.request.method == "DELETE"
    assert call.request.headers["Idempotency-Key"] == "cancel:8"
    assert query_of(call) == {"expand[0]": ["discounts"]}
    assert sub.status == "canceled"
    assert sub.canceled_at == datetime.fromtimestamp(1763100000, UTC)


@pytest.mark.parametrize(("status_now", "raises"), [("canceled", False), ("active", True)])
@responses.activate
def test_cancel_now_retried_after_success_finds_it_canceled(gateway, status_now, raises):
    responses.delete(
        f"{API}/v1/subscriptions/sub_1",
        json=error_json("This subscription is already canceled."),
        status=400,
    )
    responses.get(f"{API}/v1/subscriptions/sub_1", json=subscription_json(status=status_now))
    if raises:
        with pytest.raises(GatewayError):
            gateway.cancel_subscription("sub_1", at_period_end=False, idempotency_key="k")
    else:
        sub = gateway.cancel_subscription("sub_1", at_period_end=False, idempotency_key="k")
        assert sub.status == "canceled"


@pytest.mark.parametrize(
    ("months", "terms"),
    [
        (None, {"duration": "once"}),
        (3, {"duration": "repeating", "duration_in_months": "3"}),
    ],
)
@responses.activate
def test_comp_creates_a_deterministic_coupon_then_applies_it(gateway, months, terms):
    responses.post(f"{API}/v1/coupons", json={"id": "ignored", "object": "coupon"})
    coupon_id = "billing_desk_comp_" + hashlib.sha256(b"comp:9").hexdigest()[:24]
    loyalty = {"id": "di_loyal", "object": "discount", "source": {"coupon": "loyalty10"}}
    discount = {"id": "di_1", "object": "discount", "source": {"coupon": coupon_id}}
    responses.get(f"{API}/v1/subscriptions/sub_1", json=subscription_json(discounts=[loyalty]))
    responses.post(
        f"{API}/v1/subscriptions/sub_1", json=subscription_json(discounts=[loyalty, discount])
    )

    coupon, sub = gateway.comp_subscription(
        "sub_1", duration_in_months=months, idempotency_key="comp:9"
    )
    create, read, apply = responses.calls
    assert create.request.headers["Idempotency-Key"] == "comp:9:coupon"
    assert form_of(create) == {
        "id": coupon_id,
        "name": "Complimentary (100% off)",
        "percent_off": "100",
        "metadata[idempotency_key]": "comp:9",
        **terms,
    }
    assert query_of(read) == {"expand[0]": ["discounts"]}
    assert apply.request.headers["Idempotency-Key"] == "comp:9"
    # ``discounts`` replaces the set: the discount the customer had is named to keep it.
    assert form_of(apply) == {
        "discounts[0][discount]": "di_loyal",
        "discounts[1][coupon]": coupon_id,
        "expand[0]": "discounts",
    }
    assert (coupon, sub.coupon_ids) == (coupon_id, ("loyalty10", coupon_id))


@responses.activate
def test_comp_already_applied_by_an_earlier_attempt_is_not_applied_again(gateway):
    coupon_id = "billing_desk_comp_" + hashlib.sha256(b"comp:9").hexdigest()[:24]
    responses.post(f"{API}/v1/coupons", json={"id": coupon_id, "object": "coupon"})
    applied = {"id": "di_1", "object": "discount", "source": {"coupon": coupon_id}}
    responses.get(f"{API}/v1/subscriptions/sub_1", json=subscription_json(discounts=[applied]))

    coupon, sub = gateway.comp_subscription(
        "sub_1", duration_in_months=None, idempotency_key="comp:9", request_key="comp:9:retry-1"
    )

    assert [c.request.method for c in responses.calls] == ["POST", "GET"]  # no second update
    assert (coupon, sub.coupon_ids) == (coupon_id, (coupon_id,))


@pytest.mark.parametrize(("existing_months", "ok"), [(3, True), (6, False)])
@responses.activate
def test_comp_reuses_the_coupon_it_made_before(gateway, existing_months, ok):
    responses.post(
        f"{API}/v1/coupons",
        json=error_json("Coupon already exists.", code="resource_already_exists"),
        status=400,
    )
    responses.get(
        re.compile(rf"{API}/v1/coupons/billing_desk_comp_\w+"),
        json={
            "id": "c",
            "object": "coupon",
            "percent_off": 100,
            "duration": "repeating",
            "duration_in_months": existing_months,
        },
    )
    responses.get(f"{API}/v1/subscriptions/sub_1", json=subscription_json())
    responses.post(f"{API}/v1/subscriptions/sub_1", json=subscription_json())
    if ok:
        gateway.comp_subscription("sub_1", duration_in_months=3, idempotency_key="comp:1")
        assert responses.calls[-1].request.url == f"{API}/v1/subscriptions/sub_1"
    else:
        with pytest.raises(GatewayError):
            gateway.comp_subscription("sub_1", duration_in_months=3, idempotency_key="comp:1")
        assert len(responses.calls) == 2


@responses.activate
def test_set_trial_end_sends_a_unix_time_without_proration(gateway):
    responses.post(f"{API}/v1/subscriptions/sub_1", json=subscription_json(status="trialing"))
    until = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
    sub = gateway.set_trial_end("sub_1", trial_end=until, idempotency_key="trial:3")
    (call,) = responses.calls
    assert call.request.headers["Idempotency-Key"] == "trial:3"
    assert form_of(call) == {
        "trial_end": str(int(until.timestamp())),
        "proration_behavior": "none",
        "expand[0]": "discounts",
    }
    assert sub.status == "trialing"


def configurations_json(*data):
    return {
        "object": "list",
        "data": list(data),
        "has_more": False,
        "url": "/v1/billing_portal/configurations",
    }


@responses.activate
def test_portal_session_opens_the_payment_method_update_flow(gateway):
    default = {"id": "bpc_default", "object": "billing_portal.configuration", "is_default": True}
    responses.get(f"{API}/v1/billing_portal/configurations", json=configurations_json(default))
    responses.post(
        f"{API}/v1/billing_portal/sessions",
        json={
            "id": "bps_1",
            "object": "billing_portal.session",
            "url": "https://billing.stripe.com/p/session/test_1",
        },
    )
    url = gateway.create_portal_session("cus_1", return_url="https://desk.example.com/back")
    assert url == "https://billing.stripe.com/p/session/test_1"
    assert query_of(responses.calls[0]) == {"active": ["true"], "limit": ["100"]}
    assert form_of(responses.calls[1]) == {
        "customer": "cus_1",
        "return_url": "https://desk.example.com/back",
        "flow_data[type]": "payment_method_update",
        "flow_data[after_completion][type]": "redirect",
        "flow_data[after_completion][redirect][return_url]": "https://desk.example.com/back",
    }


@responses.activate
def test_an_account_without_a_default_portal_configuration_gets_ours_made_once(gateway):
    """A new account has no default portal configuration until someone saves the Dashboard's
    settings, and Stripe refuses sessions without one: ours is made (once) and named."""
    configurations = f"{API}/v1/billing_portal/configurations"
    responses.get(configurations, json=configurations_json())
    made = {"id": "bpc_ours", "object": "billing_portal.configuration", "is_default": False}
    responses.post(configurations, json=made)
    session = {"id": "bps_1", "object": "billing_portal.session", "url": "https://x.test/s"}
    responses.post(f"{API}/v1/billing_portal/sessions", json=session)

    for _ in range(2):
        gateway.create_portal_session("cus_1", return_url="https://desk.example.com/back")

    calls = [(c.request.method, urllib.parse.urlparse(c.request.url).path) for c in responses.calls]
    assert calls == [
        ("GET", "/v1/billing_portal/configurations"),
        ("POST", "/v1/billing_portal/configurations"),
        ("POST", "/v1/billing_portal/sessions"),
        ("POST", "/v1/billing_portal/sessions"),  # looked up once per gateway
    ]
    create = responses.calls[1]
    assert create.request.headers["Idempotency-Key"] == "billing-desk-portal-configuration-v1"
    assert form_of(create)["features[subscription_cancel][mode]"] == "at_period_end"
    assert form_of(create)["metadata[billing_desk]"] == "portal_configuration"
    assert form_of(responses.calls[2])["configuration"] == "bpc_ours"


@responses.activate
def test_our_portal_configuration_made_earlier_is_found_by_its_metadata(gateway):
    ours = {
        "id": "bpc_ours",
        "object": "billing_portal.configuration",
        "is_default": False,
        "metadata": {"billing_desk": "portal_configuration"},
    }
    other = {"id": "bpc_other", "object": "billing_portal.configuration", "is_default": False}
    responses.get(f"{API}/v1/billing_portal/configurations", json=configurations_json(other, ours))
    session = {"id": "bps_1", "object": "billing_portal.session", "url": "https://x.test/s"}
    responses.post(f"{API}/v1/billing_portal/sessions", json=session)
    gateway.create_portal_session("cus_1", return_url="https://desk.example.com/back")
    assert form_of(responses.calls[1])["configuration"] == "bpc_ours"
    assert len(responses.calls) == 2


@pytest.mark.parametrize(
    ("reason", "sent_reason"),
    [
        ("Card reported stolen", "Card reported stolen"),
        ("x" * 600, "x" * 500),
        ("  ", "(none given)"),
    ],
)
@responses.activate
def test_flag_fraud_writes_customer_metadata(gateway, reason, sent_reason):
    responses.post(
        f"{API}/v1/customers/cus_1",
        json={"id": "cus_1", "object": "customer", "email": None, "name": None, "metadata": {}},
    )
    gateway.flag_fraud("cus_1", reason=reason, flagged_by="agent-7", idempotency_key="fraud:1")
    (call,) = responses.calls
    assert call.request.headers["Idempotency-Key"] == "fraud:1"
    assert form_of(call) == {
        "metadata[billing_desk_fraud_flag]": "true",
        "metadata[billing_desk_fraud_reason]": sent_reason,
        "metadata[billing_desk_fraud_flagged_by]": "agent-7",
    }


# --- reads: searches, subscriptions, disputes ------------------------------------------------


def search_json(*data, url="/v1/customers/search"):
    return {"object": "search_result", "url": url, "data": list(data), "has_more": False}


def customer_json(id_, name=None, **metadata):
    return {"id": id_, "object": "customer", "email": None, "name": name, "metadata": metadata}


@responses.activate
def test_search_text_is_one_or_query_best_match_first(gateway):
    responses.get(
        f"{API}/v1/customers/search",
        json=search_json(
            customer_json("cus_name", name="ACME"),
            customer_json("cus_org", organization="acme"),
            customer_json("cus_tenant", tenant_id="Acme"),
        ),
    )
    found = gateway.search_customers("  Acme ", limit=5)
    assert [c.id for c in found] == ["cus_tenant", "cus_org", "cus_name"]
    (call,) = responses.calls
    assert query_of(call) == {
        "query": ["metadata['tenant_id']:'Acme' OR metadata['organization']:'Acme' OR name:'Acme'"],
        "limit": ["5"],
    }


@pytest.mark.parametrize(("status", "found"), [(200, ["cus_1"]), (404, [])])
@responses.activate
def test_search_by_customer_id_retrieves_it(gateway, status, found):
    body = customer_json("cus_1") if status == 200 else error_json("No such customer")
    responses.get(f"{API}/v1/customers/cus_1", json=body, status=status)
    assert [c.id for c in gateway.search_customers("cus_1")] == found
    assert len(responses.calls) == 1


def test_search_for_nothing_asks_nothing(gateway):
    assert gateway.search_customers("   ") == []


@responses.activate
def test_tenant_lookup_keeps_only_the_exact_tenant_id(gateway):
    responses.get(
        f"{API}/v1/customers/search",
        json=search_json(
            customer_json("cus_1", tenant_id="t-9"), customer_json("cus_2", tenant_id="T-9")
        ),
    )
    assert [c.id for c in gateway.find_customers_by_tenant("t-9")] == ["cus_1"]
    assert query_of(responses.calls[0])["query"] == ["metadata['tenant_id']:'t-9'"]


def card_charge_json(id_, customer, created):
    return {
        "id": id_,
        "object": "charge",
        "amount": 1000,
        "currency": "usd",
        "customer": customer,
        "created": created,
        "status": "succeeded",
    }


@responses.activate
def test_other_customers_on_card_leave_the_customer_out_and_follow_every_page(gateway):
    """A customer with hundreds of charges on their card does not hide the other customer:
    the search excludes the customer's own charges and follows ``next_page``."""
    url = f"{API}/v1/charges/search"
    first = {
        **search_json(card_charge_json("ch_3", "cus_bob", 300), url="/v1/charges/search"),
        "has_more": True,
        "next_page": "page_2",
    }
    second = search_json(
        card_charge_json("ch_2", "cus_carol", 200),
        card_charge_json("ch_1", "cus_bob", 100),
        url="/v1/charges/search",
    )
    responses.get(url, json=first)  # responses answers in the order registered
    responses.get(url, json=second)

    assert gateway.other_customers_on_card("fp'1", "cus_alice") == ("cus_bob", "cus_carol")

    queries = [query_of(call) for call in responses.calls]
    assert queries[0] == {
        "query": ["payment_method_details.card.fingerprint:'fp\\'1' AND -customer:'cus_alice'"],
        "limit": ["100"],
    }
    assert queries[1]["page"] == ["page_2"]


@responses.activate
def test_other_customers_on_card_stop_after_a_bounded_number_of_pages(gateway):
    endless = {
        **search_json(card_charge_json("ch_1", "cus_bob", 100), url="/v1/charges/search"),
        "has_more": True,
        "next_page": "again",
    }
    responses.get(f"{API}/v1/charges/search", json=endless)
    assert gateway.other_customers_on_card("fp1", "cus_alice") == ("cus_bob",)
    assert len(responses.calls) == MAX_CARD_SEARCH_PAGES


@responses.activate
def test_disputes_map_due_date_and_refundability(gateway):
    def dispute(id_, created, due_by, status):
        return {
            "id": id_,
            "object": "dispute",
            "charge": "ch_1",
            "amount": 2000,
            "currency": "usd",
            "reason": "fraudulent",
            "status": status,
            "created": created,
            "is_charge_refundable": status.startswith("warning_"),
            "evidence_details": {"due_by": due_by},
        }

    responses.get(
        f"{API}/v1/disputes",
        json={
            "object": "list",
            "url": "/v1/disputes",
            "has_more": False,
            "data": [
                dispute("dp_old", 1763000000, 0, "lost"),
                dispute("dp_new", 1763500000, 1764000000, "warning_needs_response"),
            ],
        },
    )
    new, old = gateway.list_disputes("ch_1")
    assert query_of(responses.calls[0]) == {"charge": ["ch_1"], "limit": ["100"]}
    assert (new.id, new.evidence_due_by, new.is_charge_refundable, new.is_inquiry) == (
        "dp_new",
        datetime.fromtimestamp(1764000000, UTC),
        True,
        True,
    )
    assert (old.id, old.evidence_due_by, old.is_open, old.amount) == (
        "dp_old",
        None,
        False,
        Money(2000, "usd"),
    )


@responses.activate
def test_list_subscriptions_fetches_the_invoice_only_when_failing(gateway):
    responses.get(
        f"{API}/v1/subscriptions",
        json={
            "object": "list",
            "url": "/v1/subscriptions",
            "has_more": False,
            "data": [
                subscription_json(id="sub_old", created=1700000000, status="canceled"),
                subscription_json(id="sub_due", created=1763000000, status="past_due"),
                subscription_json(id="sub_ok", created=1762000000, latest_invoice="in_ok"),
            ],
        },
    )
    responses.get(
        f"{API}/v1/invoices/in_1",
        json={
            "id": "in_1",
            "object": "invoice",
            "attempt_count": 3,
            "next_payment_attempt": 1763600000,
        },
    )
    subs = gateway.list_subscriptions("cus_1")
    assert [s.id for s in subs] == ["sub_due", "sub_ok", "sub_old"]
    assert query_of(responses.calls[0]) == {
        "customer": ["cus_1"],
        "status": ["all"],
        "limit": ["100"],
        "expand[0]": ["data.discounts"],
    }
    assert len(responses.calls) == 2  # one list, one invoice for the past_due subscription
    due, ok, _ = subs
    assert (due.attempt_count, due.next_payment_attempt) == (
        3,
        datetime.fromtimestamp(1763600000, UTC),
    )
    assert (ok.attempt_count, ok.next_payment_attempt, ok.latest_invoice_id) == (
        None,
        None,
        "in_ok",
    )


NEW_API_SHAPE = subscription_json(
    discounts=[
        {"id": "di_1", "object": "discount", "source": {"type": "coupon", "coupon": "COMP"}},
        "di_unexpanded",
    ],
    latest_invoice={
        "id": "in_9",
        "object": "invoice",
        "attempt_count": 2,
        "next_payment_attempt": None,
    },
)
OLD_API_SHAPE = {
    "id": "sub_2",
    "object": "subscription",
    "customer": "cus_1",
    "status": "trialing",
    "current_period_start": 1763000000,
    "current_period_end": 1764000000,
    "cancel_at_period_end": True,
    "cancel_at": 1764000000,
    "canceled_at": 1763100000,
    "trial_end": 1764000000,
    "discount": {"object": "discount", "coupon": {"id": "OLD10", "object": "coupon"}},
    "latest_invoice": None,
    "items": {
        "object": "list",
        "data": [
            {
                "id": "si_2",
                "quantity": 3,
                "plan": {
                    "id": "plan_team",
                    "nickname": None,
                    "product": {"id": "prod_2", "name": "Team"},
                    "amount": 1500,
                    "currency": "eur",
                    "interval": "year",
                },
            }
        ],
    },
}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            NEW_API_SHAPE,
            {
                "plan_name": "Pro monthly",
                "price": Money(4900, "usd"),
                "interval": "month",
                "current_period_start": datetime.fromtimestamp(1763000000, UTC),
                "current_period_end": datetime.fromtimestamp(1765592000, UTC),
                "coupon_ids": ("COMP",),
                "latest_invoice_id": "in_9",
                "attempt_count": 2,
                "next_payment_attempt": None,
                "cancel_at": None,
            },
        ),
        (
            OLD_API_SHAPE,
            {
                "plan_name": "Team",
                "price": Money(4500, "eur"),
                "interval": "year",
                "current_period_end": datetime.fromtimestamp(1764000000, UTC),
                "cancel_at_period_end": True,
                "canceled_at": datetime.fromtimestamp(1763100000, UTC),
                "trial_end": datetime.fromtimestamp(1764000000, UTC),
                "coupon_ids": ("OLD10",),
                "latest_invoice_id": None,
            },
        ),
        (
            subscription_json(
                items={
                    "object": "list",
                    "data": [
                        {
                            "id": "si_3",
                            "price": {
                                "id": "price_tiered",
                                "unit_amount": None,
                                "currency": "usd",
                            },
                        }
                    ],
                }
            ),
            {"plan_name": "price_tiered", "price": None, "interval": None},
        ),
    ],
    ids=["new-api", "old-api", "tiered"],
)
@responses.activate
def test_subscription_mapping(gateway, data, expected):
    responses.post(f"{API}/v1/subscriptions/{data['id']}", json=data)
    sub = gateway.set_trial_end(
        data["id"], trial_end=datetime(2026, 1, 1, tzinfo=UTC), idempotency_key="k"
    )
    assert {name: getattr(sub, name) for name in expected} == expected


@responses.activate
def test_charge_maps_failure_message_advice_code_and_invoice(gateway):
    responses.get(
        f"{API}/v1/charges/ch_1",
        json={
            "id": "ch_1",
            "object": "charge",
            "amount": 4900,
            "currency": "usd",
            "created": 1763000000,
            "status": "failed",
            "failure_code": "card_declined",
            "failure_message": "Your card has insufficient funds.",
            "invoice": "in_1",
            "outcome": {
                "type": "issuer_declined",
                "reason": "insufficient_funds",
                "advice_code": "try_again_later",
            },
        },
    )
    charge = gateway.get_charge("ch_1")
    assert (charge.failure_message, charge.advice_code, charge.invoice_id) == (
        "Your card has insufficient funds.",
        "try_again_later",
        "in_1",
    )


# --- against the fake Stripe ---------------------------------------------------------------


def fake_config(server, path: str, **form) -> dict:
    request = urllib.request.Request(
        f"{server.url}{path}", data=urllib.parse.urlencode(form).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def paying_customer(client, number: str = "4242424242424242", **params):
    cus = client.v1.customers.create(params=params)
    pm = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    client.v1.payment_methods.attach(pm.id, params={"customer": cus.id})
    client.v1.customers.update(
        cus.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    return cus, pm


def subscribe(client, customer_id: str, **params):
    plan = client.v1.plans.create(
        params={
            "amount": 4900,
            "currency": "usd",
            "interval": "month",
            "nickname": "Pro monthly",
            "product": {"name": "Pro"},
        }
    )
    return client.v1.subscriptions.create(
        params={"customer": customer_id, "items": [{"price": plan.id}], **params}
    )


@pytest.fixture
def live(stripe_client) -> StripeGateway:
    return StripeGateway(stripe_client)


def test_search_customers_against_the_fake(stripe_client, live):
    made = {
        name: stripe_client.v1.customers.create(params=params).id
        for name, params in {
            "tenant": {"name": "Globex", "metadata": {"tenant_id": "globex"}},
            "org": {"email": "ops@initech.example", "metadata": {"organization": "Globex"}},
            "other": {"name": "Initech", "email": "Boss@Initech.example"},
        }.items()
    }
    assert [c.id for c in live.search_customers("globex")] == [made["tenant"], made["org"]]
    assert [c.id for c in live.search_customers("Initech")] == [made["other"]]
    assert [c.id for c in live.search_customers("boss@initech.example")] == [made["other"]]
    assert [c.id for c in live.search_customers(made["org"])] == [made["org"]]
    assert live.search_customers("cus_doesnotexist") == []
    assert [c.id for c in live.find_customers_by_tenant("globex")] == [made["tenant"]]
    assert live.find_customers_by_tenant("GLOBEX") == []


def test_subscription_actions_against_the_fake(stripe_client, live):
    cus, _ = paying_customer(stripe_client)
    sub = subscribe(stripe_client, cus.id)

    (listed,) = live.list_subscriptions(cus.id)
    assert (listed.id, listed.status, listed.plan_name) == (sub.id, "active", "Pro monthly")
    assert (listed.price, listed.interval) == (Money(4900, "usd"), "month")
    assert listed.current_period_end > listed.current_period_start

    coupon, comped = live.comp_subscription(sub.id, duration_in_months=2, idempotency_key="c:1")
    again, _ = live.comp_subscription(sub.id, duration_in_months=2, idempotency_key="c:1")
    assert again == coupon
    assert comped.coupon_ids == (coupon,)
    assert stripe_client.v1.coupons.retrieve(coupon).duration_in_months == 2

    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    trial = live.set_trial_end(sub.id, trial_end=until, idempotency_key="t:1")
    assert (trial.status, trial.trial_end, trial.current_period_end) == ("trialing", until, until)

    at_end = live.cancel_subscription(sub.id, at_period_end=True, idempotency_key="x:1")
    assert (at_end.cancel_at_period_end, at_end.cancel_at) == (True, until)
    now = live.cancel_subscription(sub.id, at_period_end=False, idempotency_key="x:2")
    assert now.status == "canceled"
    assert now.canceled_at is not None
    assert live.cancel_subscription(sub.id, at_period_end=False, idempotency_key="x:2").status == (
        "canceled"
    )
    assert [s.status for s in live.list_subscriptions(cus.id)] == ["canceled"]


def test_past_due_subscription_shows_its_retry_schedule(fake_stripe, stripe_client, live):
    cus, _ = paying_customer(stripe_client)
    sub = subscribe(stripe_client, cus.id)
    healthy = subscribe(stripe_client, cus.id)
    fake_config(fake_stripe, f"/_config/subscriptions/{sub.id}", status="past_due")
    next_try = int(datetime.now(UTC).timestamp()) + 86400
    fake_config(
        fake_stripe,
        f"/_config/invoices/{sub.latest_invoice}",
        next_payment_attempt=next_try,
        attempt_count=2,
    )
    by_id = {s.id: s for s in live.list_subscriptions(cus.id)}
    assert by_id[sub.id].status == "past_due"
    assert by_id[sub.id].attempt_count == 2
    assert by_id[sub.id].next_payment_attempt == datetime.fromtimestamp(next_try, UTC)
    assert (by_id[healthy.id].attempt_count, by_id[healthy.id].next_payment_attempt) == (None, None)


def test_same_card_disputes_portal_and_fraud_flag_against_the_fake(
    fake_stripe, stripe_client, live
):
    alice, alice_card = paying_customer(stripe_client, name="Alice")
    bob, bob_card = paying_customer(stripe_client, name="Bob")
    paid = stripe_client.v1.charges.create(
        params={"amount": 2000, "currency": "usd", "customer": alice.id, "source": alice_card.id}
    )
    stripe_client.v1.charges.create(
        params={"amount": 700, "currency": "usd", "customer": bob.id, "source": bob_card.id}
    )
    fingerprint = live.get_charge(paid.id).card_fingerprint
    assert fingerprint
    assert live.other_customers_on_card(fingerprint, alice.id) == (bob.id,)
    assert live.other_customers_on_card(fingerprint, bob.id) == (alice.id,)

    fake_config(fake_stripe, "/_config/disputes", charge=paid.id, reason="fraudulent")
    (dispute,) = live.list_disputes(paid.id)
    assert (dispute.charge_id, dispute.reason, dispute.is_open) == (paid.id, "fraudulent", True)
    assert dispute.evidence_due_by is not None

    url = live.create_portal_session(alice.id, return_url="https://desk.example.com/back")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert "https://desk.example.com/back" in response.read().decode()
    with pytest.raises(NotFound):
        live.create_portal_session("cus_missing", return_url="https://desk.example.com/back")

    flagged = live.flag_fraud(
        alice.id, reason="Stolen card", flagged_by="agent-1", idempotency_key="f:1"
    )
    assert flagged.metadata["billing_desk_fraud_flag"] == "true"
    assert flagged.metadata["billing_desk_fraud_reason"] == "Stolen card"


def test_failed_charge_maps_decline_against_the_fake(stripe_client, live):
    cus, pm = paying_customer(stripe_client, number="4000000000009995")
    with pytest.raises(stripe.CardError):
        stripe_client.v1.charges.create(
            params={"amount": 2000, "currency": "usd", "customer": cus.id, "source": pm.id}
        )
    (failed,) = live.list_charges(cus.id)
    assert (failed.status, failed.decline_code) == ("failed", "insufficient_funds")
    assert failed.failure_message == "Your card has insufficient funds."
