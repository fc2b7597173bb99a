"""The fake Stripe behaves as Stripe documents: signed webhook events, test PaymentMethod ids,
idempotency with faults, limits, search negation, deleted customers, portal configurations,
current response shapes and dispute statuses."""

from __future__ import annotations

import http.server
import json
import queue
import threading
import time
import typing
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
import stripe
from test_fake_stripe import config, customer, make_client, start_server, stop_server

SECRET = "whsec_test_fake_stripe_semantics"
DAY = 24 * 3600
WAIT = 15  # seconds a delivery may take before a test gives up (never asserted on)


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    proc, server_port = start_server(tmp_path_factory.mktemp("fake_stripe") / "stderr.log")
    try:
        yield server_port
    finally:
        stop_server(proc)


@pytest.fixture(autouse=True)
def _empty_store(port: int) -> Iterator[None]:
    assert config(port, "DELETE", "/_config/data")[0] == 200
    yield
    config(port, "POST", "/_config/webhook_endpoint", url="")


@pytest.fixture
def client(port: int) -> stripe.StripeClient:
    return make_client(port)


# --- a webhook endpoint ----------------------------------------------------------------------


@dataclass
class Receiver:
    """An HTTP endpoint recording what it is sent, answering the statuses it is told to."""

    url: str
    received: queue.Queue[tuple[dict[str, str], bytes]] = field(default_factory=queue.Queue)
    statuses: list[int] = field(default_factory=list)  # answered in turn, then 200

    def next(self) -> tuple[dict[str, str], bytes]:
        """The next delivery (headers, raw body)."""
        return self.received.get(timeout=WAIT)

    def event(self) -> dict[str, Any]:
        """The next delivered event, after checking its signature as stripe-python does."""
        headers, body = self.next()
        event = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], SECRET)
        return typing.cast(dict[str, Any], json.loads(body)) if event else {}

    def events_until(self, event_type: str) -> list[dict[str, Any]]:
        """Delivered events up to and including the first of ``event_type``."""
        events = [self.event()]
        while events[-1]["type"] != event_type:
            events.append(self.event())
        return events


@pytest.fixture
def receiver(port: int) -> Iterator[Receiver]:
    statuses: list[int] = []
    received: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.put((dict(self.headers), body))
            self.send_response(statuses.pop(0) if statuses else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/stripe/webhook"
    assert config(port, "POST", "/_config/webhook_endpoint", url=url, secret=SECRET)[0] == 200
    try:
        yield Receiver(url, received, statuses)
    finally:
        server.shutdown()
        server.server_close()


def deliveries(port: int, event_id: str) -> list[dict[str, Any]]:
    status, body = config(port, "GET", f"/_config/webhook_deliveries?event={event_id}")
    assert status == 200
    return typing.cast(list[dict[str, Any]], body["data"])


# --- webhook delivery ------------------------------------------------------------------------


def test_events_are_signed_like_stripe_and_carry_the_request(
    receiver: Receiver, client: stripe.StripeClient
) -> None:
    cus = client.v1.customers.create(
        params={"email": "a@example.com"}, options={"idempotency_key": "create-a"}
    )
    headers, body = receiver.next()
    assert headers["Content-Type"].startswith("application/json")
    event = stripe.StripeClient("sk_test_x").construct_event(
        body, headers["Stripe-Signature"], SECRET
    )
    assert (event.type, event.data.object.id, event.livemode) == ("customer.created", cus.id, False)
    assert event.request.idempotency_key == "create-a"
    assert event.request.id.startswith("req_")
    assert event.api_version == stripe.api_version
    assert client.v1.events.retrieve(event.id).data.object.email == "a@example.com"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, headers["Stripe-Signature"], "whsec_other")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            body.replace(b"a@example.com", b"b@example.com"), headers["Stripe-Signature"], SECRET
        )


def test_updates_carry_previous_attributes_and_deletion_is_announced(
    receiver: Receiver, client: stripe.StripeClient
) -> None:
    cus = customer(client, email="old@example.com")
    client.v1.customers.update(cus.id, params={"email": "new@example.com"})
    client.v1.customers.delete(cus.id)
    created, updated, deleted = (receiver.event() for _ in range(3))
    assert [e["type"] for e in (created, updated, deleted)] == [
        "customer.created",
        "customer.updated",
        "customer.deleted",
    ]
    assert updated["data"]["previous_attributes"] == {"email": "old@example.com"}
    assert updated["data"]["object"]["email"] == "new@example.com"
    assert created["created"] <= updated["created"] <= deleted["created"]


def test_a_failing_endpoint_is_retried_in_order(
    port: int, receiver: Receiver, client: stripe.StripeClient
) -> None:
    receiver.statuses.extend([500, 503])
    first = customer(client, name="first")
    second = customer(client, name="second")
    names = [receiver.event()["data"]["object"]["name"] for _ in range(4)]
    assert names == ["first", "first", "first", "second"]  # the second waits for the first
    event_id = client.v1.events.list(params={"type": "customer.created", "limit": 2}).data[1].id
    attempts = deliveries(port, event_id)
    assert [(a["attempt"], a["status"], a["delivered"]) for a in attempts] == [
        (1, 500, False),
        (2, 503, False),
        (3, 200, True),
    ]
    assert client.v1.events.retrieve(event_id).pending_webhooks == 0
    assert first.id != second.id


def test_an_unreachable_endpoint_never_breaks_the_api(
    port: int, client: stripe.StripeClient
) -> None:
    dead = "http://127.0.0.1:9/unreachable"
    assert config(port, "POST", "/_config/webhook_endpoint", url=dead, secret=SECRET)[0] == 200
    cus = customer(client)
    event = client.v1.events.list(params={"type": "customer.created"}).data[0]
    deadline = time.monotonic() + WAIT
    while not deliveries(port, event.id) and time.monotonic() < deadline:
        time.sleep(0.05)
    (attempt, *_) = deliveries(port, event.id)
    assert (attempt["status"], attempt["delivered"]) == (None, False)
    assert "Error" in attempt["error"]
    assert client.v1.customers.retrieve(cus.id).id == cus.id


def test_resend_delivers_the_same_event_again(
    port: int, receiver: Receiver, client: stripe.StripeClient
) -> None:
    customer(client)
    first = receiver.event()
    status, _ = config(port, "POST", f"/_config/events/{first['id']}/resend")
    assert status == 200
    again = receiver.event()
    assert (again["id"], again["data"]) == (first["id"], first["data"])
    assert config(port, "POST", "/_config/events/evt_missing/resend")[0] == 404


def test_webhook_endpoint_config_is_validated(port: int) -> None:
    url = "http://127.0.0.1:9/x"
    assert config(port, "POST", "/_config/webhook_endpoint", url=url, secret="plain")[0] == 400
    assert config(port, "POST", "/_config/webhook_endpoint", url=url)[0] == 400
    assert config(port, "POST", "/_config/webhook_endpoint", url=url, extra="1")[0] == 400


def test_events_list_newest_first_by_type_and_bounded(client: stripe.StripeClient) -> None:
    first, second = customer(client), customer(client)
    listed = client.v1.events.list(params={"type": "customer.created"}).data
    assert [e.data.object.id for e in listed] == [second.id, first.id]
    page = client.v1.events.list(params={"limit": 1, "starting_after": listed[0].id}).data
    assert [e.id for e in page] == [listed[1].id]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.events.list(params={"limit": 101})


# --- test payment methods and their events ----------------------------------------------------


def pay(client: stripe.StripeClient, payment_method: str, **params: Any) -> Any:
    cus = customer(client)
    return client.v1.payment_intents.create(
        params={
            "amount": 2500,
            "currency": "usd",
            "customer": cus.id,
            "payment_method": payment_method,
            "confirm": True,
            **params,
        }
    )


@pytest.mark.parametrize(
    ("payment_method", "code", "decline_code"),
    [
        ("pm_card_chargeDeclined", "card_declined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card", "expired_card"),
        ("pm_card_chargeDeclinedIncorrectCvc", "incorrect_cvc", "incorrect_cvc"),
        ("pm_card_chargeDeclinedFraudulent", "card_declined", "fraudulent"),
        ("pm_card_chargeDeclinedLostCard", "card_declined", "lost_card"),
        ("pm_card_chargeDeclinedStolenCard", "card_declined", "stolen_card"),
    ],
)
def test_declining_test_payment_methods(
    client: stripe.StripeClient, payment_method: str, code: str, decline_code: str
) -> None:
    with pytest.raises(stripe.CardError) as raised:
        pay(client, payment_method)
    error = raised.value
    assert (error.http_status, error.code, error.error.decline_code) == (402, code, decline_code)
    charge = client.v1.charges.retrieve(error.error.charge)
    assert (charge.status, charge.failure_code) == ("failed", code)
    assert charge.outcome.reason == decline_code
    assert charge.payment_method.startswith("pm_") and charge.payment_method != payment_method


def test_charge_events_follow_a_payment(receiver: Receiver, client: stripe.StripeClient) -> None:
    intent = pay(client, "pm_card_mastercard")
    assert intent.status == "succeeded"
    assert intent.payment_method not in ("pm_card_mastercard", None)
    types = [e["type"] for e in receiver.events_until("payment_intent.succeeded")]
    assert types.index("charge.succeeded") < types.index("payment_intent.succeeded")
    client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 500})
    refund_events = receiver.events_until("charge.refunded")
    assert "refund.created" in [e["type"] for e in refund_events]
    refunded = refund_events[-1]["data"]
    assert (refunded["object"]["amount_refunded"], refunded["previous_attributes"]) == (
        500,
        {**refunded["previous_attributes"], "amount_refunded": 0},
    )


def test_a_declined_payment_is_announced(receiver: Receiver, client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.CardError):
        pay(client, "pm_card_chargeDeclinedInsufficientFunds")
    failed = receiver.events_until("charge.failed")[-1]
    assert failed["data"]["object"]["failure_code"] == "card_declined"


def test_confirm_accepts_a_new_payment_method_after_a_decline(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.CardError) as raised:
        pay(client, "pm_card_chargeDeclined")
    intent_id = client.v1.charges.retrieve(raised.value.error.charge).payment_intent
    assert client.v1.payment_intents.retrieve(intent_id).status == "requires_payment_method"
    retried = client.v1.payment_intents.confirm(
        intent_id, params={"payment_method": "pm_card_visa"}
    )
    assert retried.status == "succeeded"


def test_a_test_payment_method_can_be_the_customers_default(client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(
        params={"invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    default = cus.invoice_settings.default_payment_method
    assert default.startswith("pm_") and default != "pm_card_visa"
    assert client.v1.payment_methods.retrieve(default).customer == cus.id


@pytest.mark.parametrize(
    ("payment_method", "status"),
    [
        ("pm_card_createDispute", "needs_response"),
        ("pm_card_createDisputeInquiry", "warning_needs_response"),
    ],
)
def test_disputing_test_cards_open_a_dispute(
    receiver: Receiver, client: stripe.StripeClient, payment_method: str, status: str
) -> None:
    intent = pay(client, payment_method)
    assert intent.status == "succeeded"
    created = receiver.events_until("charge.dispute.created")[-1]["data"]["object"]
    assert (created["status"], created["reason"]) == (status, "fraudulent")
    assert created["charge"] == intent.latest_charge
    assert 6 * DAY < created["evidence_details"]["due_by"] - time.time() <= 7 * DAY
    assert client.v1.charges.retrieve(intent.latest_charge).disputed is True


def test_dispute_lifecycle_sends_its_events(
    port: int, receiver: Receiver, client: stripe.StripeClient
) -> None:
    intent = pay(client, "pm_card_createDispute")
    dispute = client.v1.disputes.list(params={"charge": intent.latest_charge}).data[0]
    submitted = client.v1.disputes.update(
        dispute.id,
        params={"evidence": {"uncategorized_text": "Delivered."}, "submit": True},
    )
    assert submitted.status == "under_review"
    updated = receiver.events_until("charge.dispute.updated")[-1]["data"]
    assert updated["previous_attributes"]["status"] == "needs_response"
    status, body = config(port, "POST", f"/_config/disputes/{dispute.id}", status="won")
    assert (status, body["status"]) == (200, "won")
    closed = receiver.events_until("charge.dispute.closed")[-1]["data"]["object"]
    assert closed["status"] == "won"
    assert config(port, "POST", f"/_config/disputes/{dispute.id}", status="nope")[0] == 400


def test_dispute_statuses_are_exactly_stripe_pythons() -> None:
    from helpdesk_app.demo.fake_stripe import DISPUTE_STATUSES

    (literal, _str) = typing.get_args(stripe.Dispute.__annotations__["status"])
    assert set(typing.get_args(literal)) == DISPUTE_STATUSES


def test_an_inquiry_closes_as_warning_closed(client: stripe.StripeClient) -> None:
    intent = pay(client, "pm_card_createDisputeInquiry")
    dispute = client.v1.disputes.list(params={"charge": intent.latest_charge}).data[0]
    assert client.v1.disputes.close(dispute.id).status == "warning_closed"


def test_subscription_changes_are_announced(
    receiver: Receiver, client: stripe.StripeClient
) -> None:
    cus = client.v1.customers.create(
        params={"invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    product = client.v1.products.create(params={"name": "Pro"})
    plan = client.v1.plans.create(
        params={"amount": 4900, "currency": "usd", "interval": "month", "product": product.id}
    )
    sub = client.v1.subscriptions.create(params={"customer": cus.id, "items": [{"plan": plan.id}]})
    types = [e["type"] for e in receiver.events_until("customer.subscription.created")]
    assert {"invoice.created", "invoice.finalized", "invoice.paid"} <= set(types)
    client.v1.subscriptions.update(sub.id, params={"metadata": {"ticket": "T-9"}})
    updated = receiver.events_until("customer.subscription.updated")[-1]["data"]
    assert updated["previous_attributes"] == {"metadata": {}}
    client.v1.subscriptions.cancel(sub.id)
    assert receiver.events_until("customer.subscription.deleted")[-1]["data"]["object"]["id"]


# --- idempotency -----------------------------------------------------------------------------


def arm_fault(port: int, **form: Any) -> None:
    assert config(port, "POST", "/_config/faults", **form)[0] == 200


def test_a_500_after_execution_is_stored_and_replayed(
    port: int, client: stripe.StripeClient
) -> None:
    arm_fault(port, path_prefix="/v1/customers", status=500, after_execution="true")
    key = str(uuid.uuid4())
    for _ in range(2):  # the retry gets the stored 500, not a second customer
        with pytest.raises(stripe.APIError) as raised:
            client.v1.customers.create(params={"name": "Once"}, options={"idempotency_key": key})
        assert raised.value.http_status == 500
    assert [c.name for c in client.v1.customers.list().data] == ["Once"]  # it WAS created


def test_a_500_before_execution_is_not_stored(port: int, client: stripe.StripeClient) -> None:
    arm_fault(port, path_prefix="/v1/customers", status=500)
    key = str(uuid.uuid4())
    with pytest.raises(stripe.APIError):
        client.v1.customers.create(params={"name": "Retry"}, options={"idempotency_key": key})
    assert client.v1.customers.list().data == []
    created = client.v1.customers.create(params={"name": "Retry"}, options={"idempotency_key": key})
    assert created.name == "Retry"


def test_429_is_a_rate_limit_error_and_not_stored(port: int, client: stripe.StripeClient) -> None:
    arm_fault(port, path_prefix="/v1/customers", status=429)
    key = str(uuid.uuid4())
    with pytest.raises(stripe.RateLimitError) as raised:
        client.v1.customers.create(options={"idempotency_key": key})
    assert raised.value.error.code == "rate_limit"
    assert client.v1.customers.create(options={"idempotency_key": key}).id.startswith("cus_")


def test_faults_are_validated(port: int) -> None:
    assert config(port, "POST", "/_config/faults", path_prefix="/v1/x", status=404)[0] == 400
    assert config(port, "POST", "/_config/faults", path_prefix="/_config/data")[0] == 400
    assert config(port, "POST", "/_config/faults", path_prefix="/v1/x", count=0)[0] == 400


def test_a_concurrent_request_with_the_same_key_is_refused(
    port: int, client: stripe.StripeClient
) -> None:
    arm_fault(port, path_prefix="/v1/customers", hold="true")
    key = str(uuid.uuid4())
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            client.v1.customers.create, params={"name": "Slow"}, options={"idempotency_key": key}
        )
        deadline = time.monotonic() + WAIT
        while config(port, "GET", "/_config/faults")[1]["held"] == 0:
            assert time.monotonic() < deadline, "the first request never arrived"
            time.sleep(0.02)
        with pytest.raises(stripe.APIError) as raised:  # stripe-python's class for a 409
            client.v1.customers.create(params={"name": "Slow"}, options={"idempotency_key": key})
        assert (raised.value.http_status, raised.value.error.type) == (409, "idempotency_error")
        assert config(port, "POST", "/_config/faults/release")[0] == 200
        created = first.result(timeout=WAIT)
    replayed = client.v1.customers.create(params={"name": "Slow"}, options={"idempotency_key": key})
    assert replayed.id == created.id
    assert len(client.v1.customers.list().data) == 1


def test_idempotency_keys_expire_after_24_hours(port: int, client: stripe.StripeClient) -> None:
    key = str(uuid.uuid4())
    first = client.v1.customers.create(options={"idempotency_key": key})
    assert client.v1.customers.create(options={"idempotency_key": key}).id == first.id
    assert config(port, "POST", "/_config/idempotency", age_seconds=23 * 3600)[0] == 200
    assert client.v1.customers.create(options={"idempotency_key": key}).id == first.id
    assert config(port, "POST", "/_config/idempotency", age_seconds=3600)[0] == 200
    assert client.v1.customers.create(options={"idempotency_key": key}).id != first.id


# --- lists, search, deletion -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/customers", "/v1/invoices", "/v1/events", "/v1/plans"])
@pytest.mark.parametrize("limit", ["0", "101"])
def test_every_list_bounds_limit(port: int, path: str, limit: str) -> None:
    make = make_client(port)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        make.raw_request("get", path, limit=limit)
    assert raised.value.http_status == 400


def test_search_negation_and_pages(client: stripe.StripeClient) -> None:
    for n in range(3):
        customer(client, email=f"c{n}@example.com", name="Keep" if n else "Drop")
    page = client.v1.customers.search(params={"query": "-name:'Drop'", "limit": 1})
    assert (len(page.data), page.has_more) == (1, True)
    rest = client.v1.customers.search(
        params={"query": "-name:'Drop'", "limit": 1, "page": page.next_page}
    )
    assert (rest.has_more, rest.next_page) == (False, None)
    assert {c.name for c in [*page.data, *rest.data]} == {"Keep"}
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.search(params={"query": "-name:'Drop'", "limit": 101})


def test_charge_search_negation(client: stripe.StripeClient) -> None:
    ok = pay(client, "pm_card_visa")
    with pytest.raises(stripe.CardError):
        pay(client, "pm_card_chargeDeclined")
    found = client.v1.charges.search(params={"query": "-status:'failed'"}).data
    assert [c.id for c in found] == [ok.latest_charge]
    assert isinstance(ok.latest_charge, str)  # an id unless expanded


def test_a_deleted_customer_reads_as_a_stub(client: stripe.StripeClient) -> None:
    cus = customer(client, email="gone@example.com")
    deleted = client.v1.customers.delete(cus.id)
    stub = {"id": cus.id, "object": "customer", "deleted": True}
    assert deleted.to_dict() == stub
    assert client.v1.customers.retrieve(cus.id).to_dict() == stub
    assert client.v1.customers.list().data == []
    assert client.v1.customers.search(params={"query": "email:'gone@example.com'"}).data == []
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.retrieve("cus_never_existed")


# --- billing portal ---------------------------------------------------------------------------

FEATURES = {"invoice_history": {"enabled": True}}


def test_portal_sessions_need_a_configuration(port: int, client: stripe.StripeClient) -> None:
    cus = customer(client)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.billing_portal.sessions.create(params={"customer": cus.id})
    assert "default configuration" in raised.value.user_message
    own = client.v1.billing_portal.configurations.create(params={"features": FEATURES})
    assert (own.is_default, own.active) == (False, True)
    session = client.v1.billing_portal.sessions.create(
        params={"customer": cus.id, "configuration": own.id}
    )
    assert session.configuration == own.id
    with pytest.raises(stripe.InvalidRequestError):  # API-made ones are never the default
        client.v1.billing_portal.sessions.create(params={"customer": cus.id})

    client.v1.billing_portal.configurations.update(own.id, params={"active": False})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing_portal.sessions.create(
            params={"customer": cus.id, "configuration": own.id}
        )

    status, default = config(port, "POST", "/_config/billing_portal/default")
    assert (status, default["is_default"]) == (200, True)
    plain = client.v1.billing_portal.sessions.create(params={"customer": cus.id})
    assert plain.configuration == default["id"]
    listed = client.v1.billing_portal.configurations.list(params={"is_default": True}).data
    assert [c.id for c in listed] == [default["id"]]
    inactive = client.v1.billing_portal.configurations.list(params={"active": False}).data
    assert [c.id for c in inactive] == [own.id]
    assert client.v1.billing_portal.configurations.retrieve(own.id).active is False


# --- response shapes --------------------------------------------------------------------------


def test_invoice_payments_link_a_payment_intent_to_its_invoice(
    client: stripe.StripeClient,
) -> None:
    sub = subscription(client)
    (payment,) = client.v1.invoice_payments.list(params={"invoice": sub.latest_invoice}).data
    assert (payment.invoice, payment.status, payment.amount_paid) == (
        sub.latest_invoice,
        "paid",
        4900,
    )
    intent = payment.payment.payment_intent
    assert intent == client.v1.invoices.retrieve(sub.latest_invoice).payment_intent
    by_intent = client.v1.invoice_payments.list(
        params={"payment": {"type": "payment_intent", "payment_intent": intent}}
    ).data
    assert [p.id for p in by_intent] == [payment.id]
    charge = client.v1.charges.list(params={"customer": sub.customer}).data[0]
    assert "invoice" not in charge
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoice_payments.list(params={"payment": {"type": "charge"}})


def subscription(client: stripe.StripeClient, **params: Any) -> Any:
    cus = client.v1.customers.create(
        params={"invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    product = client.v1.products.create(params={"name": "Pro"})
    plan = client.v1.plans.create(
        params={"amount": 4900, "currency": "usd", "interval": "month", "product": product.id}
    )
    return client.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": plan.id}], **params}
    )


def test_discounts_replace_the_set_and_can_keep_one(client: stripe.StripeClient) -> None:
    for coupon in ("A", "B", "C"):
        client.v1.coupons.create(params={"id": coupon, "percent_off": 10, "duration": "forever"})
    sub = subscription(client, discounts=[{"coupon": "A"}, {"coupon": "B"}], expand=["discounts"])
    kept = sub.discounts[0].id
    new = client.v1.subscriptions.update(
        sub.id, params={"discounts": [{"discount": kept}, {"coupon": "C"}]}
    )
    assert new.discounts[0] == kept and len(new.discounts) == 2
    only_c = client.v1.subscriptions.update(
        sub.id, params={"discounts": [{"coupon": "C"}], "expand": ["discounts"]}
    )
    assert [d.source.coupon for d in only_c.discounts] == ["C"]  # A was dropped


def test_concurrent_plain_requests_still_work(client: stripe.StripeClient) -> None:
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda _: customer(client).id, range(8)))
    assert len(set(ids)) == 8
