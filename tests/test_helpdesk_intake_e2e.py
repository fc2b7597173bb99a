"""End to end: a ticket in Zendesk or Help Scout, announced by its signed webhook, ends as a
Stripe refund, a public reply with the refund ID, the category's tags and a solved (closed)
ticket in that helpdesk; and a team that BCCs its billing address to our mailbox gets the same
on the helpdesk's own ticket. Forged and replayed deliveries change nothing; the same event
twice does the work once.

Real parts: the web app on a port, the helpdesks' HTTP fakes on theirs (they call the app as
the vendors do), the fake Stripe, Redis with the production worker, IMAP for the BCC copy.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from customer_mail import customer_email
from fake_helpdesks import FakeHelpScout, FakeZendesk
from sqlalchemy import func, select
from werkzeug.serving import make_server

from core.db import session_scope
from core.db.models import Action, HelpdeskEvent, Ticket
from core.domain import RESOLUTION_REFUND_ISSUED
from core.settings import Settings
from helpdesk_app import create_app
from helpdesk_app.demo.seed import DemoCustomer, create_charge, create_customer
from jobs.helpdesk_events import process_helpdesk_event
from jobs.plans import run_step

pytestmark = pytest.mark.e2e

SECRET = "zendesk-and-help-scout-webhook-secret"
ALICE = DemoCustomer("Alice Martin", "alice@example.com", "T-1042", "Northwind", "4242424242424242")
JADE = DemoCustomer("Jade Park", "jade@example.com", "T-1201", "Park Labs", "4000056655665556")
DOUBLE_CHARGE = (
    "Hello,\n\nI was charged twice today for my subscription, $49.00 two times. "
    "Please refund one of them.\n\nAlice"
)


@dataclass
class Home:
    """The app on a port, with the team's helpdesk behind it."""

    url: str
    settings: Settings


def _serve(settings: Settings) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


def _install(rt, settings: Settings) -> None:
    """The worker runs on the same settings as the app (the helpdesks' clients rebuilt)."""
    rt.settings = settings
    rt.__dict__.pop("helpdesks", None)


@pytest.fixture
def zendesk_home(settings, rt, fake_zendesk: FakeZendesk) -> Iterator[Home]:
    home = dataclasses.replace(
        settings,
        helpdesk="zendesk",
        zendesk_subdomain=fake_zendesk.subdomain,
        zendesk_email=fake_zendesk.email,
        zendesk_api_token=fake_zendesk.api_token,
        zendesk_api_url=fake_zendesk.url,
        zendesk_webhook_secret=SECRET,
    )
    _install(rt, home)
    for url in _serve(home):
        yield Home(url, home)


@pytest.fixture
def helpscout_home(settings, rt, fake_helpscout: FakeHelpScout) -> Iterator[Home]:
    home = dataclasses.replace(
        settings,
        helpdesk="helpscout",
        helpscout_client_id=fake_helpscout.client_id,
        helpscout_client_secret=fake_helpscout.client_secret,
        helpscout_api_url=fake_helpscout.url,
        helpscout_mailbox_id=str(fake_helpscout.mailbox_id),
        helpscout_webhook_secret=SECRET,
    )
    _install(rt, home)
    for url in _serve(home):
        yield Home(url, home)


@pytest.fixture
def twin_charges(stripe_client, rt) -> tuple[str, str, str]:
    customer = create_customer(stripe_client, ALICE)
    api_base = rt.settings.stripe_api_base
    older = create_charge(stripe_client, api_base, customer, 4900, "Pro", days_ago=0.1)
    newer = create_charge(stripe_client, api_base, customer, 4900, "Pro")
    return customer, older, newer


def refunds(stripe_client, charges) -> list:
    return [
        refund
        for charge in charges
        for refund in stripe_client.v1.refunds.list(params={"charge": charge}).data
    ]


def counts(rt) -> dict[str, int]:
    with session_scope(rt.session_factory) as session:
        return {
            model.__name__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Ticket, Action, HelpdeskEvent)
        }


def zendesk_replies(fake: FakeZendesk, ticket_id: int) -> list[str]:
    return [
        c["body"]
        for c in fake.comments(ticket_id)
        if c["public"] and c["author_id"] == fake.agent_id
    ]


# --- Zendesk -------------------------------------------------------------------------------


def test_a_zendesk_duplicate_charge_ticket_is_refunded_answered_tagged_and_solved_once(
    zendesk_home, fake_zendesk, stripe_client, run_worker, rt, outbox, twin_charges
):
    _customer, older, newer = twin_charges
    ticket = fake_zendesk.create_ticket("Charged twice", DOUBLE_CHARGE, ALICE.email, ALICE.name)
    delivery = fake_zendesk.deliver_event(
        f"{zendesk_home.url}/webhooks/zendesk", SECRET, "ticket.created", ticket
    )
    assert delivery.status_code == 200
    run_worker()

    [refund] = refunds(stripe_client, [older, newer])
    assert (refund.charge, refund.amount, refund.reason) == (newer, 4900, "duplicate")
    state = fake_zendesk.ticket(ticket)
    assert state["status"] == "solved"
    assert {"billing_desk", "billing_duplicate_charge"} <= set(state["tags"])
    [reply] = zendesk_replies(fake_zendesk, ticket)
    assert refund.id in reply and "$49.00" in reply
    notes = [c["body"] for c in fake_zendesk.comments(ticket) if not c["public"]]
    assert any(n.startswith("Triage: duplicate_charge") for n in notes)
    assert any(RESOLUTION_REFUND_ISSUED in n for n in notes)
    assert outbox == []  # Zendesk emails its public reply; we send nothing ourselves
    with session_scope(rt.session_factory) as session:
        mirror = session.scalars(select(Ticket)).one()
        assert (mirror.helpdesk, mirror.external_id) == ("zendesk", str(ticket))
        assert (mirror.status, mirror.category) == ("closed", "duplicate_charge")
    before = counts(rt)

    # The same delivery again (a retry or a replay), and the same ticket's event again.
    assert delivery.replay().status_code == 200
    again = fake_zendesk.deliver_event(
        f"{zendesk_home.url}/webhooks/zendesk", SECRET, "ticket.created", ticket
    )
    assert again.status_code == 200
    run_worker()
    assert len(refunds(stripe_client, [older, newer])) == 1
    assert len(zendesk_replies(fake_zendesk, ticket)) == 1
    after = counts(rt)
    assert after["Ticket"] == before["Ticket"] and after["Action"] == before["Action"]
    assert after["HelpdeskEvent"] == before["HelpdeskEvent"] + 1  # recorded, did nothing


@pytest.mark.parametrize("forgery", ["tampered", "wrong-secret", "stale", "unsigned"])
def test_a_forged_or_replayed_zendesk_webhook_is_refused_with_no_effect(
    zendesk_home, fake_zendesk, stripe_client, run_worker, rt, twin_charges, forgery
):
    ticket = fake_zendesk.create_ticket("Charged twice", DOUBLE_CHARGE, ALICE.email, ALICE.name)
    url = f"{zendesk_home.url}/webhooks/zendesk"
    if forgery == "unsigned":
        import requests

        response = requests.post(url, json={"ticket_id": ticket}, timeout=10)
    else:
        stale = datetime.now(UTC) - timedelta(minutes=10)
        response = fake_zendesk.deliver_event(
            url,
            "another-secret" if forgery == "wrong-secret" else SECRET,
            "ticket.created",
            ticket,
            tamper=forgery == "tampered",
            timestamp=stale.strftime("%Y-%m-%dT%H:%M:%SZ") if forgery == "stale" else None,
        ).response
    assert response.status_code == 401
    run_worker()
    assert counts(rt) == {"Ticket": 0, "Action": 0, "HelpdeskEvent": 0}
    assert refunds(stripe_client, twin_charges[1:]) == []
    assert fake_zendesk.requests == []  # not even read


def test_a_ticket_zendesk_flags_waits_for_an_agent(
    zendesk_home, fake_zendesk, stripe_client, run_worker, rt, twin_charges
):
    """Zendesk was not sure the author is who they say (not signed in): no money moves."""
    ticket = fake_zendesk.create_ticket(
        "Charged twice", DOUBLE_CHARGE, ALICE.email, ALICE.name, via_channel="web", flags=(3,)
    )
    fake_zendesk.deliver_event(
        f"{zendesk_home.url}/webhooks/zendesk", SECRET, "ticket.created", ticket
    )
    run_worker()
    assert refunds(stripe_client, twin_charges[1:]) == []
    assert fake_zendesk.ticket(ticket)["status"] != "solved"
    notes = [c["body"] for c in fake_zendesk.comments(ticket) if not c["public"]]
    assert any("flagged" in n for n in notes)


def test_a_zendesk_escalation_puts_the_ticket_in_the_teams_group(
    zendesk_home, fake_zendesk, stripe_client, run_worker, rt
):
    create_customer(stripe_client, JADE)
    security = fake_zendesk.add_group("Security")
    ticket = fake_zendesk.create_ticket(
        "Charge I don't recognise",
        "There's a charge on my card from you that I don't recognise. I never signed up "
        "for this and I think my card was used without my permission.\n\nJade",
        JADE.email,
        JADE.name,
    )
    fake_zendesk.deliver_event(
        f"{zendesk_home.url}/webhooks/zendesk", SECRET, "ticket.created", ticket
    )
    run_worker()
    state = fake_zendesk.ticket(ticket)
    assert state["group_id"] == security
    assert state["status"] != "solved"
    assert "billing_card_not_recognized" in state["tags"]


def test_a_bcc_copy_attaches_to_the_zendesk_ticket_instead_of_opening_another(
    zendesk_home,
    fake_zendesk,
    stripe_client,
    mailbox_client,
    poll_mail,
    run_worker,
    rt,
    twin_charges,
):
    _customer, older, newer = twin_charges
    ticket = fake_zendesk.create_ticket("Charged twice", DOUBLE_CHARGE, ALICE.email, ALICE.name)
    mailbox_client.append("INBOX", customer_email("Charged twice", DOUBLE_CHARGE))
    assert poll_mail().stored == 1
    run_worker()

    assert len(refunds(stripe_client, [older, newer])) == 1
    assert fake_zendesk.requests_to("POST", r"/api/v2/tickets\.json$") == []  # none opened
    assert fake_zendesk.ticket(ticket)["status"] == "solved"
    assert len(zendesk_replies(fake_zendesk, ticket)) == 1
    # Zendesk's own webhook for the same ticket comes too: nothing more happens.
    fake_zendesk.deliver_event(
        f"{zendesk_home.url}/webhooks/zendesk", SECRET, "ticket.created", ticket
    )
    run_worker()
    assert len(refunds(stripe_client, [older, newer])) == 1
    assert len(zendesk_replies(fake_zendesk, ticket)) == 1
    triage_notes = [c for c in fake_zendesk.comments(ticket) if c["body"].startswith("Triage:")]
    assert len(triage_notes) == 1
    with session_scope(rt.session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1


# --- Help Scout ----------------------------------------------------------------------------


def test_a_help_scout_duplicate_charge_conversation_is_refunded_answered_tagged_and_closed(
    helpscout_home, fake_helpscout, stripe_client, run_worker, rt, outbox, twin_charges
):
    _customer, older, newer = twin_charges
    conversation = fake_helpscout.create_conversation(
        "Charged twice", DOUBLE_CHARGE, ALICE.email, "Alice", "Martin"
    )
    url = f"{helpscout_home.url}/webhooks/helpscout"
    delivery = fake_helpscout.deliver(url, SECRET, "convo.created", conversation)
    assert delivery.status_code == 200
    run_worker()

    [refund] = refunds(stripe_client, [older, newer])
    assert refund.charge == newer
    state = fake_helpscout.conversation(conversation)
    assert state["status"] == "closed"
    assert {"billing_desk", "billing_duplicate_charge"} <= {t["tag"] for t in state["tags"]}
    threads = fake_helpscout.threads(conversation)
    replies = [t["body"] for t in threads if t["type"] == "reply"]
    assert len(replies) == 1 and refund.id in replies[0]
    assert outbox == []
    before = counts(rt)

    assert delivery.replay().status_code == 200  # Help Scout signs no time: the key catches it
    fake_helpscout.deliver(url, SECRET, "convo.created", conversation)
    run_worker()
    assert len(refunds(stripe_client, [older, newer])) == 1
    replies = [t for t in fake_helpscout.threads(conversation) if t["type"] == "reply"]
    assert len(replies) == 1
    assert counts(rt) == before


@pytest.mark.parametrize("forgery", ["tampered", "wrong-secret"])
def test_a_forged_help_scout_webhook_is_refused_with_no_effect(
    helpscout_home, fake_helpscout, run_worker, rt, forgery
):
    conversation = fake_helpscout.create_conversation("Charged twice", DOUBLE_CHARGE, ALICE.email)
    fake_helpscout.requests.clear()
    delivery = fake_helpscout.deliver(
        f"{helpscout_home.url}/webhooks/helpscout",
        "another-secret" if forgery == "wrong-secret" else SECRET,
        "convo.created",
        conversation,
        tamper=forgery == "tampered",
    )
    assert delivery.status_code == 401
    run_worker()
    assert counts(rt) == {"Ticket": 0, "Action": 0, "HelpdeskEvent": 0}
    assert fake_helpscout.requests == []


def test_a_customer_reply_in_help_scout_is_mirrored_and_keeps_the_ticket_open(
    helpscout_home, fake_helpscout, stripe_client, run_worker, rt
):
    create_customer(stripe_client, JADE)
    conversation = fake_helpscout.create_conversation(
        "Question about my invoice", "Can you send me last month's invoice?", JADE.email
    )
    url = f"{helpscout_home.url}/webhooks/helpscout"
    fake_helpscout.deliver(url, SECRET, "convo.created", conversation)
    run_worker()
    fake_helpscout.add_customer_reply(conversation, "Any news? Also my card changed.")
    fake_helpscout.deliver(url, SECRET, "convo.customer.reply.created", conversation)
    run_worker()
    with session_scope(rt.session_factory) as session:
        mirror = session.scalars(select(Ticket)).one()
        customer_messages = [m.body for m in mirror.messages if m.kind == "inbound"]
        assert len(customer_messages) == 2 and "card changed" in customer_messages[1]
        assert mirror.category is not None  # triaged once, from the first message


def test_a_failed_helpdesk_write_leaves_the_work_retryable_and_it_is_done_once(
    zendesk_home, fake_zendesk, stripe_client, run_worker, rt, twin_charges
):
    """Zendesk fails a write (503) during intake, and again right after the refund: each
    time the job stays retryable, and its retry finds what was already done."""
    _customer, older, newer = twin_charges
    ticket = fake_zendesk.create_ticket("Charged twice", DOUBLE_CHARGE, ALICE.email, ALICE.name)
    comment_put = r"/tickets/\d+\.json$"
    fake_zendesk.fail_next("PUT", comment_put, 503)  # the triage note
    fake_zendesk.deliver_event(
        f"{zendesk_home.url}/webhooks/zendesk", SECRET, "ticket.created", ticket
    )
    run_worker()  # the intake job fails; RQ would run it again after a pause
    with session_scope(rt.session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Action)) == 0
        event_id = session.scalars(select(HelpdeskEvent.id)).one()
    assert refunds(stripe_client, [older, newer]) == []

    process_helpdesk_event(event_id)  # the retry
    fake_zendesk.fail_next("PUT", comment_put, 503)  # the refund's note, after Stripe refunded
    run_worker()
    assert len(refunds(stripe_client, [older, newer])) == 1
    for _ in range(5):  # the step's own retries, as RQ runs them
        with session_scope(rt.session_factory) as session:
            queued = session.scalars(
                select(Action.id).where(Action.status == "queued").order_by(Action.id)
            ).all()
        for action_id in queued:
            run_step(action_id)
        run_worker()
    assert len(refunds(stripe_client, [older, newer])) == 1
    assert len(zendesk_replies(fake_zendesk, ticket)) == 1
    assert fake_zendesk.ticket(ticket)["status"] == "solved"
    notes = [c["body"] for c in fake_zendesk.comments(ticket) if not c["public"]]
    assert sum(n.startswith("Triage:") for n in notes) == 1
    assert sum(n.startswith("Refund re_") for n in notes) == 1
    failed = [r for r in fake_zendesk.requests_to("PUT", comment_put) if r.status == 503]
    assert [r.body["ticket"]["comment"]["body"][:7] for r in failed] == ["Triage:", "Refund "]


def test_a_bcc_copy_after_the_webhook_is_the_same_message_and_changes_nothing(
    zendesk_home,
    fake_zendesk,
    stripe_client,
    mailbox_client,
    poll_mail,
    run_worker,
    rt,
    twin_charges,
):
    _customer, older, newer = twin_charges
    ticket = fake_zendesk.create_ticket("Charged twice", DOUBLE_CHARGE, ALICE.email, ALICE.name)
    fake_zendesk.deliver_event(
        f"{zendesk_home.url}/webhooks/zendesk", SECRET, "ticket.created", ticket
    )
    run_worker()
    assert fake_zendesk.ticket(ticket)["status"] == "solved"
    comments_before = len(fake_zendesk.comments(ticket))

    mailbox_client.append("INBOX", customer_email("Charged twice", DOUBLE_CHARGE))
    assert poll_mail().stored == 1
    run_worker()
    assert len(refunds(stripe_client, [older, newer])) == 1
    assert len(fake_zendesk.comments(ticket)) == comments_before  # no second note or reply
    assert fake_zendesk.requests_to("POST", r"/api/v2/tickets\.json$") == []
    with session_scope(rt.session_factory) as session:
        mirror = session.scalars(select(Ticket)).one()
        [message] = [m for m in mirror.messages if m.kind == "inbound"]
        assert message.external_id is not None and message.inbound_email_id is not None
        assert mirror.status == "closed"
