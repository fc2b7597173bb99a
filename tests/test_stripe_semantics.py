"""Stripe behaviour the fake used to hide, met by the product against the fake that now has it.

- Stripe stores a 5xx for an idempotency key and replays it for a day: a refund whose request
  failed that way is found on the next attempt (no second refund), and one that keeps failing
  ends failed instead of counting as in flight for ever. A 409 (the same key still running)
  is no server error: the key is kept, and the next attempt gets that request's refund.
- A comp keeps the discounts the subscription had (``discounts`` replaces the set).
- A billing-portal session needs a configuration on an account with no default.
- The other customer on a card is found however many charges the customer has on it.
- A customer deleted in Stripe (answered 200 ``deleted: true``) is no match for a ticket.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from customer_mail import DOUBLE_CHARGE, customer_email
from fake_stripe_support import fake_delete, fake_get, fake_post
from rq import Queue
from sqlalchemy import select

from core.customers import find_candidates
from core.db import queries, session_scope
from core.db.models import Action, InboundEmail, Ticket
from core.domain import ActionKind, ActionStatus
from core.errors import GatewayUnavailable, StripeOutcomeUnknown
from core.stripe_gateway import StripeGateway
from helpdesk_app.demo.seed import DemoCustomer, create_charge, create_customer
from jobs import queues
from jobs.inbound import process_inbound_email
from jobs.plans import run_step
from jobs.worker import drain_queues

pytestmark = pytest.mark.e2e

ALICE = DemoCustomer("Alice Martin", "alice@example.com", "T-1042", "Northwind", "4242424242424242")
BOB = DemoCustomer("Bob Stone", "bob@example.com", "T-2077", "Southwind", "4242424242424242")


@pytest.fixture
def faults(fake_stripe):
    """Arm a fault in the fake Stripe; every fault is disarmed after the test."""
    yield lambda **form: fake_post(fake_stripe, "/_config/faults", **form)
    fake_delete(fake_stripe, "/_config/faults")


def triaged_duplicate(rt, stripe_client, mailbox_client, poll_mail) -> tuple[int, str]:
    """A double charge emailed and triaged: its refund step's ID (queued), and the charge."""
    customer = create_customer(stripe_client, ALICE)
    base = rt.settings.stripe_api_base
    create_charge(stripe_client, base, customer, 4900, "Pro", days_ago=0.1)
    newer = create_charge(stripe_client, base, customer, 4900, "Pro")
    mailbox_client.append("INBOX", customer_email("Charged twice", DOUBLE_CHARGE))
    poll_mail()
    with session_scope(rt.session_factory) as session:
        email_id = session.scalars(select(InboundEmail.id)).one()
    assert process_inbound_email(email_id) == "auto"
    with session_scope(rt.session_factory) as session:
        refund = session.scalars(select(Action).where(Action.kind == ActionKind.REFUND)).one()
        return refund.id, newer


def refunds_of(stripe_client, charge: str) -> list:
    return list(stripe_client.v1.refunds.list(params={"charge": charge}).data)


def test_a_refund_stripe_answered_500_after_making_it_is_found_not_made_twice(
    rt, stripe_client, mailbox_client, poll_mail, faults
):
    action_id, charge = triaged_duplicate(rt, stripe_client, mailbox_client, poll_mail)
    # Stripe makes the refund, then fails on its way back; it answers that 500 to every retry
    # with the same key (stripe-python's own retries included) for a day.
    faults(method="POST", path_prefix="/v1/refunds", status=500, count=1, after_execution="true")

    with pytest.raises(StripeOutcomeUnknown):
        run_step(action_id)  # the job fails; RQ runs it again later
    assert len(refunds_of(stripe_client, charge)) == 1  # made, though we were told 500

    assert run_step(action_id) == "succeeded"

    (refund,) = refunds_of(stripe_client, charge)
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        assert action is not None
        assert (action.status, action.stripe_object_id) == (ActionStatus.SUCCEEDED, refund.id)
        assert action.params["stripe_keys_spent"] == 1


def test_each_attempt_after_a_server_error_sends_a_fresh_key_until_one_goes_through(
    rt, stripe_client, mailbox_client, poll_mail, faults, fake_stripe, monkeypatch
):
    """A 500 Stripe stores for a key would be all that key ever gets for a day: after one,
    the next attempt looks for the refund, then asks under a key of its own."""
    action_id, charge = triaged_duplicate(rt, stripe_client, mailbox_client, poll_mail)
    with session_scope(rt.session_factory) as session:
        key = session.get(Action, action_id).idempotency_key  # type: ignore[union-attr]
    sent: list[str] = []
    original = requests.Session.send

    def record(session, request, **kwargs):
        if request.method == "POST" and request.url.endswith("/v1/refunds"):
            sent.append(request.headers.get("Idempotency-Key"))
        return original(session, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", record)
    faults(method="POST", path_prefix="/v1/refunds", status=500, count=6)

    for _ in range(2):
        with pytest.raises(StripeOutcomeUnknown):
            run_step(action_id)
    fake_delete(fake_stripe, "/_config/faults")
    assert run_step(action_id) == "succeeded"

    # stripe-python retries each attempt twice itself, under the attempt's key.
    assert sent == [key] * 3 + [f"{key}:retry-1"] * 3 + [f"{key}:retry-2"]
    (refund,) = refunds_of(stripe_client, charge)
    assert refund.metadata["idempotency_key"] == key  # what the next attempt looks for


def test_a_second_run_while_stripe_is_still_making_the_refund_waits_for_it(
    rt, stripe_client, mailbox_client, poll_mail, faults, fake_stripe
):
    """A retried job while the first run's refund is still being made (a slow Stripe): Stripe
    answers the same key 409. That is no server error: the key is not spent (a fresh one
    would make a second refund); the next attempt gets the first one's refund."""
    action_id, charge = triaged_duplicate(rt, stripe_client, mailbox_client, poll_mail)
    faults(method="POST", path_prefix="/v1/refunds", hold="true", count=1)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(run_step, action_id)
        deadline = time.monotonic() + 30
        while fake_get(fake_stripe, "/_config/faults")["held"] == 0:
            assert time.monotonic() < deadline, "the first refund request never reached Stripe"
            time.sleep(0.02)
        with pytest.raises(GatewayUnavailable) as second:
            run_step(action_id)
        assert not isinstance(second.value, StripeOutcomeUnknown)
        fake_post(fake_stripe, "/_config/faults/release")
        assert first.result(timeout=30) == "succeeded"

    (refund,) = refunds_of(stripe_client, charge)
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        assert action is not None
        assert (action.status, action.stripe_object_id) == (ActionStatus.SUCCEEDED, refund.id)
        assert "stripe_keys_spent" not in action.params


def test_a_refund_stripe_keeps_failing_ends_failed_and_no_longer_in_flight(
    rt, stripe_client, mailbox_client, poll_mail, faults
):
    action_id, charge = triaged_duplicate(rt, stripe_client, mailbox_client, poll_mail)
    faults(method="POST", path_prefix="/v1/refunds", status=500, count=50)
    rt.redis.flushdb()  # the step's job, queued again below without retries left
    Queue(queues.AUTOMATION, connection=rt.redis).enqueue(run_step, action_id)

    drain_queues(rt)

    assert refunds_of(stripe_client, charge) == []
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        assert action is not None
        assert action.status == ActionStatus.FAILED
        assert "Stripe" in (action.error or "")
        customer = session.scalars(select(Ticket.stripe_customer_id)).one()
        assert customer and queries.in_flight_by_charge(session, customer) == {}


def test_a_comp_keeps_the_discount_the_subscription_had(stripe_client, fake_stripe):
    gateway = StripeGateway(stripe_client)
    customer = create_customer(stripe_client, ALICE)
    plan = stripe_client.v1.plans.create(
        params={"amount": 4900, "currency": "usd", "interval": "month", "product": {"name": "Pro"}}
    )
    loyalty = stripe_client.v1.coupons.create(params={"percent_off": 10, "duration": "forever"})
    sub = stripe_client.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": plan.id}],
            "discounts": [{"coupon": loyalty.id}],
        }
    )

    coupon, comped = gateway.comp_subscription(
        sub.id, duration_in_months=None, idempotency_key="comp:keeps"
    )
    again, _ = gateway.comp_subscription(
        sub.id, duration_in_months=None, idempotency_key="comp:keeps", request_key="comp:k:2"
    )

    assert again == coupon
    assert set(comped.coupon_ids) == {loyalty.id, coupon}
    (listed,) = gateway.list_subscriptions(customer)
    assert sorted(listed.coupon_ids) == sorted([loyalty.id, coupon])  # once each


def test_a_portal_session_on_an_account_without_a_default_configuration(stripe_client):
    gateway = StripeGateway(stripe_client)
    customer = create_customer(stripe_client, ALICE)

    url = gateway.create_portal_session(customer, return_url="https://desk.example.com/back")

    assert url.startswith("http")
    configurations = stripe_client.v1.billing_portal.configurations.list().data
    assert [c.to_dict().get("metadata", {}).get("billing_desk") for c in configurations] == [
        "portal_configuration"
    ]
    # A second gateway (another process) finds ours instead of making another.
    StripeGateway(stripe_client).create_portal_session(customer, return_url="https://x.test/")
    assert len(stripe_client.v1.billing_portal.configurations.list().data) == 1


def test_the_other_customer_on_a_card_is_found_behind_many_charges_of_the_customer(
    rt, stripe_client
):
    gateway = StripeGateway(stripe_client)
    base = rt.settings.stripe_api_base
    alice, bob = create_customer(stripe_client, ALICE), create_customer(stripe_client, BOB)
    create_charge(stripe_client, base, bob, 700, "Bob's", days_ago=3)
    for n in range(105):  # more than one page of search results, all newer than Bob's
        create_charge(stripe_client, base, alice, 100 + n, f"Alice {n}")
    fingerprint = gateway.list_charges(alice, limit=1)[0].card_fingerprint
    assert fingerprint

    assert gateway.other_customers_on_card(fingerprint, alice) == (bob,)


def test_a_customer_deleted_in_stripe_is_no_match_for_the_ticket(
    stripe_client, session_factory, new_ticket
):
    gateway = StripeGateway(stripe_client)
    customer = create_customer(stripe_client, ALICE)
    ticket_id = new_ticket("alice@example.com", stripe_customer_id=customer)
    stripe_client.v1.customers.delete(customer)

    with session_scope(session_factory) as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        candidates, _ = find_candidates(gateway, ticket)
    assert candidates == []
