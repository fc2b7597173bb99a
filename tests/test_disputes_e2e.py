"""A dispute from the bank to Finance's queue the way production gets one: Stripe's test card
``pm_card_createDispute`` is charged in the fake Stripe, which signs and delivers its events
to the web app over HTTP; the worker mirrors them and opens the dispute's ticket, escalated to
Finance with the evidence of use and a recommendation. The customer's own emails about it then
join that ticket instead of opening others, she is told once that her bank's dispute process
decides, and no refund goes around the dispute.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator

import pytest
from customer_mail import customer_email
from fake_stripe_support import fake_get, fake_post
from sqlalchemy import select
from werkzeug.serving import make_server

from core.db import session_scope
from core.db.models import (
    Action,
    Escalation,
    InboundEmail,
    StripeDispute,
    StripeEvent,
    Ticket,
    TicketMessage,
)
from helpdesk_app import create_app
from helpdesk_app.demo.seed import DemoCustomer, create_customer
from jobs.inbound import process_inbound_email

pytestmark = pytest.mark.e2e

SECRET = "whsec_e2e_disputes_0123456789"
NINA = DemoCustomer("Nina Berg", "nina@example.com", "T-1344", "Berg Events", "4242424242424242")
DELIVERY_TIMEOUT_SECONDS = 30


@pytest.fixture
def webhooks_to_the_app(settings, rt, fake_stripe) -> Iterator[str]:
    """The web app on a real port with a signing secret, and the fake Stripe delivering its
    events there (stopped afterwards: the fake outlives the test)."""
    app = create_app(dataclasses.replace(settings, stripe_webhook_secret=SECRET))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/webhooks/stripe"
    fake_post(fake_stripe, "/_config/webhook_endpoint", url=url, secret=SECRET)
    yield url
    fake_post(fake_stripe, "/_config/webhook_endpoint", url="")
    server.shutdown()


def wait_for_delivery(fake_stripe, event_type: str) -> list[dict]:
    """The fake's delivery attempts once an event of this type was delivered (2xx)."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        attempts = fake_get(fake_stripe, "/_config/webhook_deliveries")["data"]
        if any(a["type"] == event_type and a["delivered"] for a in attempts):
            return attempts
        time.sleep(0.05)
    pytest.fail(f"no {event_type} delivered within {DELIVERY_TIMEOUT_SECONDS} s")


def test_a_disputed_payment_reaches_finance_by_webhook_with_evidence_and_advice(
    webhooks_to_the_app,
    rt,
    fake_stripe,
    stripe_client,
    run_worker,
    session_factory,
    outbox,
    mailbox_client,
    poll_mail,
):
    customer = create_customer(stripe_client, NINA)
    stripe_client.v1.payment_intents.create(
        params={
            "amount": 4900,
            "currency": "usd",
            "customer": customer,
            "payment_method": "pm_card_createDispute",
            "confirm": True,
        }
    )
    attempts = wait_for_delivery(fake_stripe, "charge.dispute.created")
    assert all(a["delivered"] for a in attempts), attempts  # every signature was accepted
    run_worker()

    with session_scope(session_factory) as session:
        (dispute,) = session.scalars(select(StripeDispute)).all()
        assert dispute.status == "needs_response" and dispute.ticket_id is not None
        ticket = session.get(Ticket, dispute.ticket_id)
        assert ticket is not None
        assert (ticket.category, ticket.team) == ("chargeback", "finance")
        assert (ticket.requester_email, ticket.stripe_customer_id) == (NINA.email, customer)
        (escalation,) = session.scalars(select(Escalation)).all()
        assert escalation.target == "finance" and escalation.ticket_id == ticket.id
        step = session.scalars(select(Action).where(Action.kind == "escalate")).one()
        assert step.params["dispute_id"] == dispute.id
        # The card's bank says fraud: the playbook accepts those rather than fight them.
        assert step.params["recommendation"] == "accept"
        assert step.params["evidence"]  # assembled from the demo usage source all the same
        events = {e.type for e in session.scalars(select(StripeEvent))}
        assert {"customer.created", "charge.succeeded", "charge.dispute.created"} <= events
        ticket_id = ticket.id
    assert any("finance" in m["To"] for m in outbox)  # the team's notice

    # Her emails about it come after the webhook: they join the dispute's ticket, and she is
    # told (once) that her bank's dispute process decides.
    for text in ("I asked my bank to reverse it.", "Any news? I asked my bank to reverse it."):
        mailbox_client.append("INBOX", customer_email("Chargeback", text, NINA.email, NINA.name))
    poll_mail()
    with session_scope(session_factory) as session:
        email_ids = session.scalars(select(InboundEmail.id).order_by(InboundEmail.id)).all()
    assert [process_inbound_email(i) for i in email_ids] == ["threaded", "threaded"]
    run_worker()

    with session_scope(session_factory) as session:
        assert [t.id for t in session.scalars(select(Ticket))] == [ticket_id]
        notes = session.scalars(
            select(TicketMessage.body).where(
                TicketMessage.ticket_id == ticket_id, TicketMessage.kind == "note"
            )
        ).all()
        assert any("dispute open with their bank" in n for n in notes)
        refunds = session.scalars(select(Action).where(Action.kind == "refund")).all()
        assert refunds == []
        escalations = session.scalars(select(Escalation)).all()
        assert len(escalations) == 1  # Finance has it once
    to_nina = [str(m["X-Billing-Desk"]) for m in outbox if NINA.email in str(m["To"])]
    assert to_nina == ["chargeback_acknowledgement"]
