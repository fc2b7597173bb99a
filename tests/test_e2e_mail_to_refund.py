"""End to end: an email in the mailbox ends as a Stripe refund, a sent email and a closed ticket.

Everything here is real: pymap over IMAP, the fake Stripe over HTTP, aiosmtpd over SMTP, Redis
with an RQ worker, and the database.
"""

from __future__ import annotations

import email.utils

import pytest
from customer_mail import customer_email
from sqlalchemy import func, select

import jobs.inbound
from core.db import session_scope
from core.db.models import Action, AuditEvent, InboundEmail, OutboundEmail, Ticket
from core.domain import RESOLUTION_REFUND_ISSUED
from helpdesk_app.demo.seed import DemoCustomer, create_charge, create_customer
from jobs.inbound import process_inbound_email
from jobs.plans import run_step

pytestmark = pytest.mark.e2e

ALICE = DemoCustomer("Alice Martin", "alice@example.com", "T-1042", "Northwind", "4242424242424242")


DOUBLE_CHARGE = customer_email(
    "Charged twice",
    "Hello,\n\nI was charged twice today for my subscription, $49.00 two times. "
    "Please fix this.\n\nAlice\n",
)


@pytest.fixture
def twin_charges(stripe_client, rt) -> tuple[str, str, str]:
    """Alice, charged $49.00 twice today; returns (customer, older charge, newer charge)."""
    customer = create_customer(stripe_client, ALICE)
    api_base = rt.settings.stripe_api_base
    older = create_charge(stripe_client, api_base, customer, 4900, "Pro", days_ago=0.1)
    newer = create_charge(stripe_client, api_base, customer, 4900, "Pro")
    return customer, older, newer


def refunds_in_stripe(stripe_client, charge_ids):
    return [
        refund
        for charge_id in charge_ids
        for refund in stripe_client.v1.refunds.list(params={"charge": charge_id}).data
    ]


def marks(outbox) -> list[str]:
    """Which of our templates each sent email is."""
    return [str(message["X-Billing-Desk"]) for message in outbox]


def counts(session_factory):
    with session_scope(session_factory) as session:
        return {
            model.__name__: session.scalar(select(func.count()).select_from(model))
            for model in (Ticket, InboundEmail, Action, OutboundEmail, AuditEvent)
        }


def test_double_charge_email_is_refunded_confirmed_and_closed_once(
    stripe_client, mailbox_client, outbox, rt, poll_mail, run_worker, twin_charges
):
    customer, older, newer = twin_charges
    mailbox_client.append("INBOX", DOUBLE_CHARGE)

    assert poll_mail().stored == 1
    run_worker()

    refunds = refunds_in_stripe(stripe_client, [older, newer])
    assert len(refunds) == 1
    refund = refunds[0]
    assert (refund.charge, refund.amount, refund.reason) == (newer, 4900, "duplicate")

    assert len(outbox) == 1
    sent = outbox[0]
    assert sent["To"] == ALICE.email
    text = sent.get_body(("plain",)).get_content()
    assert refund.id in text and "$49.00" in text and "5–10 business days" in text
    assert refund.id in sent.get_body(("html",)).get_content()
    assert sent["In-Reply-To"]  # threaded onto the customer's email

    with session_scope(rt.session_factory) as session:
        ticket = session.scalars(select(Ticket)).one()
        assert ticket.status == "closed"
        assert ticket.resolution == RESOLUTION_REFUND_ISSUED
        assert ticket.category == "duplicate_charge"
        assert ticket.stripe_customer_id == customer
        notes = [m.body for m in ticket.messages if m.kind == "note"]
        assert any(refund.id in note for note in notes)
        action = session.scalars(select(Action).where(Action.kind == "refund")).one()
        assert (action.status, action.stripe_object_id) == ("succeeded", refund.id)
        email_id = session.scalars(select(InboundEmail.id)).one()
    before = counts(rt.session_factory)

    # Nothing doubles: poll again, run every job again, directly and through the worker.
    assert poll_mail().stored == 0
    process_inbound_email(email_id)
    run_step(action.id)
    run_worker()

    assert len(refunds_in_stripe(stripe_client, [older, newer])) == 1
    assert marks(outbox).count("refund_confirmation") == 1
    assert counts(rt.session_factory) == before


def test_a_retried_refund_job_finds_the_refund_it_already_made(
    stripe_client, mailbox_client, outbox, rt, poll_mail, run_worker, twin_charges
):
    """A worker that died after Stripe refunded but before recording it must not refund again."""
    _customer, older, newer = twin_charges
    mailbox_client.append("INBOX", DOUBLE_CHARGE)
    poll_mail()
    # Run only the inbound job: the refund action is queued, not yet run.
    process_inbound_email(rt.session_factory().scalars(select(InboundEmail.id)).one())
    with session_scope(rt.session_factory) as session:
        action = session.scalars(select(Action).where(Action.kind == "refund")).one()
    # The "crashed" first attempt: Stripe got the refund, our database never heard.
    stripe_client.v1.refunds.create(
        params={
            "charge": newer,
            "amount": 4900,
            "reason": "duplicate",
            "metadata": {"idempotency_key": action.idempotency_key},
        }
    )

    run_worker()

    assert len(refunds_in_stripe(stripe_client, [older, newer])) == 1
    assert marks(outbox).count("refund_confirmation") == 1
    with session_scope(rt.session_factory) as session:
        assert session.get(Action, action.id).status == "succeeded"
        assert session.scalars(select(Ticket)).one().status == "closed"


def test_an_email_about_something_else_opens_a_ticket_and_leaves_stripe_alone(
    stripe_client, mailbox_client, outbox, rt, poll_mail, run_worker, twin_charges
):
    customer, first, second = twin_charges
    mailbox_client.append(
        "INBOX",
        customer_email("Question", "Hi! How do I update the card on my account? Thanks, Alice"),
    )

    poll_mail()
    run_worker()

    assert refunds_in_stripe(stripe_client, [first, second]) == []
    assert marks(outbox) == ["acknowledgement"]
    with session_scope(rt.session_factory) as session:
        ticket = session.scalars(select(Ticket)).one()
        assert (ticket.status, ticket.category) == ("open", "other")
        assert ticket.stripe_customer_id == customer  # context for the agent all the same
        assert session.scalars(select(Action.kind)).all() == ["reply"]


def test_a_double_charge_with_no_true_duplicate_asks_for_the_charge(
    stripe_client, mailbox_client, outbox, rt, poll_mail, run_worker
):
    """Charges of different amounts are not a duplicate: nothing is refunded, and the customer
    is asked for the charge's date, amount and last 4 (Servinix: "Gather information")."""
    customer = create_customer(stripe_client, ALICE)
    a = create_charge(stripe_client, rt.settings.stripe_api_base, customer, 4900, "Pro")
    b = create_charge(stripe_client, rt.settings.stripe_api_base, customer, 1900, "Add-on")
    mailbox_client.append("INBOX", DOUBLE_CHARGE)

    poll_mail()
    run_worker()

    assert refunds_in_stripe(stripe_client, [a, b]) == []
    assert marks(outbox) == ["verification_request"]
    body = outbox[0].get_body(("plain",)).get_content()
    assert "date and amount of the charge" in body and "last 4 digits" in body
    with session_scope(rt.session_factory) as session:
        ticket = session.scalars(select(Ticket)).one()
        assert (ticket.status, ticket.category) == ("open", "duplicate_charge")
        assert any("No two succeeded" in m.body for m in ticket.messages if m.kind == "note")


def test_an_auto_reply_to_our_confirmation_does_not_reopen_but_a_person_does(
    mailbox_client, outbox, rt, poll_mail, run_worker, twin_charges
):
    mailbox_client.append("INBOX", DOUBLE_CHARGE)
    poll_mail()
    run_worker()
    confirmation_id = outbox[0]["Message-ID"]

    def reply(extra_headers: str, body: str) -> bytes:
        return (
            f"From: Alice Martin <{ALICE.email}>\r\nTo: billing@example.com\r\n"
            f"Subject: Re: Your refund\r\nIn-Reply-To: {confirmation_id}\r\n"
            f"Message-ID: {email.utils.make_msgid()}\r\n{extra_headers}\r\n{body}\r\n"
        ).encode()

    mailbox_client.append("INBOX", reply("Auto-Submitted: auto-replied\r\n", "I am away."))
    poll_mail()
    run_worker()
    with session_scope(rt.session_factory) as session:
        ticket = session.scalars(select(Ticket)).one()
        assert (
            ticket.status == "closed"
            and len([m for m in ticket.messages if m.kind == "inbound"]) == 2
        )
    assert len(outbox) == 1  # no answer to a robot

    mailbox_client.append("INBOX", reply("", "Thanks, but I was charged a third time!"))
    poll_mail()
    run_worker()
    with session_scope(rt.session_factory) as session:
        assert session.scalars(select(Ticket)).one().status == "open"
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1


def test_a_strangers_reply_naming_a_customers_message_opens_its_own_ticket(
    mailbox_client, outbox, rt, poll_mail, run_worker, twin_charges
):
    """Another person's mail carrying our confirmation's Message-ID in In-Reply-To (seen in a
    forward, or guessed) neither reopens Alice's ticket nor lands in her thread."""
    mailbox_client.append("INBOX", DOUBLE_CHARGE)
    poll_mail()
    run_worker()
    confirmation_id = outbox[0]["Message-ID"]
    stranger = (
        "From: Mallory <mallory@example.net>\r\nTo: billing@example.com\r\n"
        f"Subject: Re: Your refund\r\nIn-Reply-To: {confirmation_id}\r\n"
        f"Message-ID: {email.utils.make_msgid()}\r\n\r\nPlease send the refund to my card.\r\n"
    ).encode()
    mailbox_client.append("INBOX", stranger)
    poll_mail()
    run_worker()

    with session_scope(rt.session_factory) as session:
        alice, other = session.scalars(select(Ticket).order_by(Ticket.id)).all()
        assert alice.status == "closed"
        assert all(m.author != "mallory@example.net" for m in alice.messages)
        assert other.requester_email == "mallory@example.net"
        notes = [m.body for m in other.messages if m.kind == "note"]
        assert any(f"answers ticket #{alice.id}" in note for note in notes)
    # Alice's confirmation; the stranger hears only on their own ticket.
    assert marks(outbox)[0] == "refund_confirmation"
    assert all("mallory@example.net" in m["To"] for m in outbox[1:])


def test_a_customer_writing_twice_about_one_duplicate_gets_one_refund(
    stripe_client, mailbox_client, outbox, rt, poll_mail, run_worker, twin_charges
):
    """The second email ("Charged twice!!") repeats the first's subject: it joins the first
    ticket, reopened, and nothing runs twice."""
    _customer, older, newer = twin_charges
    mailbox_client.append("INBOX", DOUBLE_CHARGE)
    mailbox_client.append(
        "INBOX", customer_email("Charged twice!!", "You double charged me today.")
    )

    assert poll_mail().stored == 2
    run_worker()

    assert len(refunds_in_stripe(stripe_client, [older, newer])) == 1
    assert marks(outbox) == ["refund_confirmation"]
    with session_scope(rt.session_factory) as session:
        (ticket,) = session.scalars(select(Ticket)).all()
        inbound = [m for m in ticket.messages if m.kind == "inbound"]
        assert len(inbound) == 2


def test_a_flood_from_one_sender_folds_into_one_ticket(
    mailbox_client, outbox, rt, poll_mail, run_worker
):
    """30 emails in a minute from one address, each with its own subject: three tickets (a
    customer may have three questions), then every further email joins the newest; one
    acknowledgement per ticket, none per email."""
    for n in range(30):
        mailbox_client.append(
            "INBOX", customer_email(f"Question {n}", f"Where is invoice {n}?", "flood@example.net")
        )
    assert poll_mail().stored == 30
    run_worker()
    with session_scope(rt.session_factory) as session:
        tickets = session.scalars(select(Ticket).order_by(Ticket.id)).all()
        assert len(tickets) == 3
        assert sum(1 for m in tickets[-1].messages if m.kind == "inbound") == 28
        assert any("opened 3 tickets" in m.body for m in tickets[-1].messages)
    assert len(outbox) <= 3


def test_a_triage_job_that_died_before_queueing_its_refund_queues_it_when_retried(
    stripe_client, mailbox_client, outbox, rt, poll_mail, run_worker, twin_charges, monkeypatch
):
    _customer, older, newer = twin_charges
    mailbox_client.append("INBOX", DOUBLE_CHARGE)
    poll_mail()
    email_id = rt.session_factory().scalars(select(InboundEmail.id)).one()
    real_enqueue = jobs.inbound.queues.enqueue_once

    def die(*args, **kwargs):
        raise SystemExit("worker killed")

    monkeypatch.setattr(jobs.inbound.queues, "enqueue_once", die)
    with pytest.raises(SystemExit):
        process_inbound_email(email_id)  # triage committed, refund not queued
    monkeypatch.setattr(jobs.inbound.queues, "enqueue_once", real_enqueue)
    run_worker()  # the inbound job RQ had queued now runs again, as after a crash
    process_inbound_email(email_id)
    run_worker()

    assert len(refunds_in_stripe(stripe_client, [older, newer])) == 1
    assert marks(outbox).count("refund_confirmation") == 1
