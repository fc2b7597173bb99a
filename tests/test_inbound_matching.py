"""Which Stripe customer an email is from, and when the email's own words stop automation.

The first half is the pure decision (core.playbooks); the second drives process_inbound_email
with emails stored as the poller stores them, the fake Stripe and the worker.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from customer_mail import customer_email as mail_from_customer
from sqlalchemy import func, select

from core.customers import match_sender, same_organization
from core.db import session_scope
from core.db.models import Action, InboundEmail, OutboundEmail, Ticket, TicketMessage
from core.domain import ActionKind, Category, Charge, Customer, Money
from core.playbooks import CHARGEBACK_FILED, Next, TicketFacts, plan_ticket
from core.policy import PolicyConfig
from helpdesk_app.demo.seed import DemoCustomer, create_charge, create_customer
from jobs.inbound import process_inbound_email
from jobs.plans import run_step
from mail.parsing import dedupe_key, message_id_of

SENDER = "alice@example.com"
ALICE = Customer("cus_alice", SENDER, "Alice", {"tenant_id": "T-1042", "organization": "Northwind"})
ALICE_2 = Customer("cus_alice2", SENDER, "Alice", {"tenant_id": "T-1043", "organization": "Other"})
NO_METADATA = Customer("cus_bare", SENDER, "Alice")


# --- the decision -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidates", "tenants", "organization", "customer", "blocked"),
    [
        ([], [], None, None, None),
        ([ALICE], [], None, ALICE, None),
        ([ALICE], ["T-1042"], "Northwind Bakery", ALICE, None),
        ([ALICE], ["t-1042"], None, ALICE, None),
        (
            [ALICE],
            ["T-2001"],
            None,
            ALICE,
            "The email mentions tenant T-2001 but alice@example.com's Stripe customer is tenant "
            "T-1042: check who this is before any refund.",
        ),
        ([ALICE], ["T-1042", "T-2001"], None, ALICE, "mentions tenant T-2001"),
        (
            [ALICE],
            [],
            "Contoso Ltd",
            ALICE,
            "The email is signed for Contoso Ltd but alice@example.com's Stripe customer is "
            "Northwind: check who this is before any refund.",
        ),
        ([NO_METADATA], ["T-2001"], "Contoso Ltd", NO_METADATA, None),  # nothing to compare
        ([ALICE, ALICE_2], ["T-1043"], None, ALICE_2, None),
        ([ALICE, ALICE_2], ["T-1043"], "Contoso Ltd", ALICE_2, "signed for Contoso Ltd"),
        ([ALICE, ALICE_2], ["T-9999"], None, None, None),
        ([ALICE, ALICE_2], [], "Northwind", None, None),  # only a tenant ID picks
    ],
)
def test_match_customer(candidates, tenants, organization, customer, blocked):
    match = match_sender(SENDER, candidates, tenant_ids=tenants, organization=organization)
    assert match.customer == customer
    assert match.candidates == tuple(candidates)
    if blocked is None:
        assert match.blocked is None
    else:
        assert match.blocked is not None and blocked in match.blocked
    assert match.how


@pytest.mark.parametrize(
    ("ours", "theirs", "same"),
    [
        ("Northwind", "Northwind Bakery", True),
        ("Northwind Bakery Ltd.", "northwind bakery", True),
        ("Okafor & Sons", "Okafor and Sons", True),
        ("Weber GmbH", "Weber", True),
        ("Contoso", "Northwind", False),
        ("Bakery Northwind", "Northwind", False),
        ("Inc.", "Northwind", True),  # nothing left to compare
    ],
)
def test_same_organization(ours, theirs, same):
    assert same_organization(ours, theirs) is same


NOON = datetime(2026, 3, 3, 12, tzinfo=UTC)


def paid(charge_id: str, at: datetime) -> Charge:
    return Charge(charge_id, "cus_alice", Money(4900, "usd"), 0, at, "succeeded", True, False)


TWIN = [paid("ch_b", NOON + timedelta(hours=1)), paid("ch_a", NOON)]


def facts(category: Category, blocked: str | None = None, **changes) -> TicketFacts:
    """An authenticated sender's email (unless ``changes`` say otherwise)."""
    match = match_sender(SENDER, [ALICE])
    match = type(match)(match.customer, match.candidates, match.how, blocked)
    changes.setdefault("sender_authenticated", True)
    return TicketFacts(category, match, NOON + timedelta(hours=2), "email-1", TWIN, **changes)


@pytest.mark.parametrize("category", [Category.DUPLICATE_CHARGE, Category.CHARGEBACK])
def test_a_filed_chargeback_is_never_refunded_whatever_the_category(category):
    """Finance (48h) at once and an acknowledgement; no step of the plan moves money."""
    triage = plan_ticket(facts(category, chargeback_filed=True), PolicyConfig())
    assert (triage.next, triage.customer) == (Next.AGENT, ALICE)
    assert triage.reason.startswith(CHARGEBACK_FILED)
    assert triage.plan is not None and not triage.plan.suggested
    escalate, ack = triage.plan.steps
    assert (escalate.kind, escalate.params["target"]) == (ActionKind.ESCALATE, "finance")
    assert (ack.kind, ack.params["template"]) == (ActionKind.REPLY, "chargeback_acknowledgement")


def test_a_blocked_match_goes_to_an_agent_with_the_reason():
    triage = plan_ticket(facts(Category.DUPLICATE_CHARGE, "Tenant differs."), PolicyConfig())
    assert (triage.next, triage.reason) == (Next.AGENT, "Automation blocked. Tenant differs.")
    assert plan_ticket(facts(Category.DUPLICATE_CHARGE), PolicyConfig()).next is Next.AUTO


def test_an_unauthenticated_sender_gets_the_same_plan_as_a_suggestion_saying_why():
    why = "The sender example.com is not authenticated: mx reports dmarc=fail."
    triage = plan_ticket(
        facts(Category.DUPLICATE_CHARGE, sender_authenticated=False, sender_authentication=why),
        PolicyConfig(),
    )
    assert triage.next is Next.SUGGEST
    assert triage.plan is not None and triage.plan.suggested
    assert [s.kind for s in triage.plan.steps] == ["refund", "confirm_refund", "close"]
    assert why in triage.reason and "An agent starts the plan." in triage.reason


# --- through the inbound job --------------------------------------------------------------

ALICE_DEMO = DemoCustomer("Alice Martin", SENDER, "T-1042", "Northwind", "4242424242424242")
HENRY_PERSONAL = DemoCustomer(
    "Henry Park", "henry@example.com", "T-1230", "(personal)", "3566002020360505"
)
HENRY_COMPANY = DemoCustomer(
    "Henry Park", "henry@example.com", "T-1231", "Park Robotics", "3566002020360505"
)
_uids = itertools.count(1)


def customer_email(body: str, subject: str = "Charged twice", sender: str = SENDER) -> bytes:
    return mail_from_customer(subject, body, sender)


def store(rt, raw: bytes, *, status: str = "received", error: str | None = None) -> int:
    """Store a message as the poller does."""
    message_id = message_id_of(raw)
    with session_scope(rt.session_factory) as session:
        row = InboundEmail(
            mailbox="INBOX",
            uidvalidity=1,
            uid=next(_uids),
            message_id=message_id,
            dedupe_key=dedupe_key(raw, message_id),
            raw=raw,
            size=len(raw),
            status=status,
            error=error,
        )
        session.add(row)
        session.flush()
        return row.id


def twin_charges(stripe_client, rt, who: DemoCustomer = ALICE_DEMO) -> tuple[str, str, str]:
    customer = create_customer(stripe_client, who)
    api_base = rt.settings.stripe_api_base
    older = create_charge(stripe_client, api_base, customer, 4900, "Pro", days_ago=0.1)
    newer = create_charge(stripe_client, api_base, customer, 4900, "Pro")
    return customer, older, newer


def refunds(stripe_client, *charge_ids):
    return [
        refund
        for charge_id in charge_ids
        for refund in stripe_client.v1.refunds.list(params={"charge": charge_id}).data
    ]


def the_ticket(session) -> Ticket:
    return session.scalars(select(Ticket)).one()


def notes(ticket: Ticket) -> str:
    return "\n".join(m.body for m in ticket.messages if m.kind == "note")


DOUBLE = "I was charged twice today, $49.00 two times. Please refund one.\n\n"


@pytest.mark.e2e
def test_a_tenant_id_contradicting_stripe_blocks_automation(stripe_client, rt, run_worker):
    customer, older, newer = twin_charges(stripe_client, rt)
    email_id = store(rt, customer_email(DOUBLE + "Thanks,\nAlice Martin\nContoso (tenant T-2001)"))

    assert process_inbound_email(email_id) == "agent"
    run_worker()

    assert refunds(stripe_client, older, newer) == []
    with session_scope(rt.session_factory) as session:
        ticket = the_ticket(session)
        assert ticket.automation_blocked == (
            "The email mentions tenant T-2001 but alice@example.com's Stripe customer is tenant "
            "T-1042: check who this is before any refund."
        )
        assert (ticket.tenant_id, ticket.organization) == ("T-2001", "Contoso")
        assert ticket.entities["tenant_ids"] == ["T-2001"]
        assert ticket.entities["amounts"] == [{"amount": 4900, "currency": "usd"}]
        assert (ticket.category, ticket.stripe_customer_id) == ("duplicate_charge", customer)
        assert "Automation blocked. The email mentions tenant T-2001" in notes(ticket)
        # Only the acknowledgement: nothing touches the account.
        kinds = session.scalars(select(Action.kind)).all()
        assert kinds == ["reply"]


@pytest.mark.e2e
def test_an_organisation_contradicting_stripe_blocks_automation(stripe_client, rt, run_worker):
    _customer, older, newer = twin_charges(stripe_client, rt)
    email_id = store(rt, customer_email(DOUBLE + "Best regards,\nAlice Martin\nContoso Ltd\n"))

    process_inbound_email(email_id)
    run_worker()

    assert refunds(stripe_client, older, newer) == []
    with session_scope(rt.session_factory) as session:
        ticket = the_ticket(session)
        assert "signed for Contoso Ltd" in ticket.automation_blocked
        assert "Northwind" in ticket.automation_blocked


@pytest.mark.e2e
def test_an_email_that_agrees_with_stripe_is_refunded_and_keeps_its_entities(
    stripe_client, rt, run_worker, outbox
):
    _customer, older, newer = twin_charges(stripe_client, rt)
    raw = customer_email(
        DOUBLE + "Thanks,\nAlice Martin\nNorthwind Bakery (tenant T-1042)\n",
        sender="Alice@Example.COM",
    )
    email_id = store(rt, raw)

    assert process_inbound_email(email_id) == "auto"
    run_worker()

    assert [r.charge for r in refunds(stripe_client, older, newer)] == [newer]
    assert len(outbox) == 1
    with session_scope(rt.session_factory) as session:
        ticket = the_ticket(session)
        assert ticket.status == "closed" and ticket.automation_blocked is None
        assert (ticket.tenant_id, ticket.organization) == ("T-1042", "Northwind Bakery")
        assert "Read in the email: tenant T-1042; organisation Northwind Bakery" in notes(ticket)


@pytest.mark.e2e
def test_a_tenant_id_picks_one_of_several_customers_sharing_an_address(
    stripe_client, rt, run_worker
):
    create_customer(stripe_client, HENRY_PERSONAL)
    company, older, newer = twin_charges(stripe_client, rt, HENRY_COMPANY)
    raw = customer_email(DOUBLE + "Henry\nPark Robotics, tenant T-1231", sender="henry@example.com")

    process_inbound_email(store(rt, raw))
    run_worker()

    assert [r.charge for r in refunds(stripe_client, older, newer)] == [newer]
    with session_scope(rt.session_factory) as session:
        ticket = the_ticket(session)
        assert ticket.stripe_customer_id == company
        assert "picked among 2 customers with henry@example.com by tenant T-1231" in notes(ticket)


@pytest.mark.e2e
def test_several_customers_and_no_tenant_id_go_to_an_agent(stripe_client, rt, run_worker):
    create_customer(stripe_client, HENRY_PERSONAL)
    _company, older, newer = twin_charges(stripe_client, rt, HENRY_COMPANY)

    process_inbound_email(store(rt, customer_email(DOUBLE, sender="henry@example.com")))
    run_worker()

    assert refunds(stripe_client, older, newer) == []
    with session_scope(rt.session_factory) as session:
        ticket = the_ticket(session)
        assert ticket.stripe_customer_id is None
        assert "2 Stripe customers share henry@example.com" in notes(ticket)


@pytest.mark.e2e
def test_a_customer_who_filed_a_chargeback_is_never_refunded_automatically(
    stripe_client, rt, run_worker
):
    _customer, older, newer = twin_charges(stripe_client, rt)
    raw = customer_email(
        "You charged me $49.00 twice today, so I have disputed the second payment with my bank."
    )

    process_inbound_email(store(rt, raw))
    run_worker()

    assert refunds(stripe_client, older, newer) == []
    with session_scope(rt.session_factory) as session:
        ticket = the_ticket(session)
        assert ticket.automation_blocked == CHARGEBACK_FILED
        assert ticket.entities["chargeback_filed"] is True
        assert CHARGEBACK_FILED in notes(ticket)


@pytest.mark.e2e
def test_an_oversized_email_becomes_a_ticket_that_says_so(stripe_client, rt, run_worker):
    headers = (
        b"From: Big Files <big@example.com>\r\nTo: billing@example.com\r\n"
        b"Subject: Logs for the double charge\r\nMessage-ID: <big@example.com>\r\n\r\n"
    )
    email_id = store(
        rt,
        headers,
        status="oversized",
        error="Message of 31.5 MB is over the 25 MB limit; it was not downloaded.",
    )

    assert process_inbound_email(email_id) == "oversized"
    assert process_inbound_email(email_id) == "already processed"
    run_worker()

    with session_scope(rt.session_factory) as session:
        ticket = the_ticket(session)
        (message,) = [m for m in ticket.messages if m.kind == "inbound"]
        assert "too large to download" in message.body
        assert "Message of 31.5 MB is over the 25 MB limit" in message.body
        assert "From: Big Files <big@example.com>" in message.body
        assert "Subject: Logs for the double charge" in message.body
        assert (ticket.subject, ticket.category) == ("Logs for the double charge", None)
        stored = session.get(InboundEmail, email_id)
        assert stored.status == "processed" and "31.5 MB" in stored.error
        assert session.scalar(select(func.count()).select_from(Action)) == 0


@pytest.mark.e2e
def test_quarantined_mail_waits_for_a_person(rt):
    email_id = store(rt, b"", status="quarantined", error="The server would not send it.")
    assert process_inbound_email(email_id) == "quarantined"
    with session_scope(rt.session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 0


@pytest.mark.e2e
def test_card_numbers_leave_the_ticket_and_the_stored_copy_and_attachments_are_listed(
    stripe_client, rt, run_worker, data_dir
):
    raw = (data_dir / "emails" / "attachments.eml").read_bytes()
    card = (data_dir / "emails" / "card_number.eml").read_bytes()
    with_attachments, with_card = store(rt, raw), store(rt, card)
    with session_scope(rt.session_factory) as session:
        key = session.get(InboundEmail, with_card).dedupe_key

    process_inbound_email(with_attachments)
    process_inbound_email(with_card)

    with session_scope(rt.session_factory) as session:
        messages = {
            m.inbound_email_id: m
            for m in session.scalars(select(TicketMessage).where(TicketMessage.kind == "inbound"))
        }
        assert [a["filename"] for a in messages[with_attachments].attachments] == [
            "invoice-2026-03.pdf",
            "statement.png",
            "notes.txt",
        ]
        assert messages[with_card].attachments == []
        body = messages[with_card].body
        assert "[card ending 4242]" in body and "4242-4242" not in body
        stored = session.get(InboundEmail, with_card)
        assert b"4242-4242" not in stored.raw and b"0566 5566" not in stored.raw
        assert b"CVV 123" not in stored.raw
        assert stored.dedupe_key == key  # the identity of what was fetched does not change
        assert b"5555 5555 5555 4444" not in session.get(InboundEmail, with_attachments).raw
        ticket = session.get(Ticket, messages[with_card].ticket_id)
        assert ticket.subject == "Please charge this card instead: [card ending 5556]"


@pytest.mark.e2e
def test_the_hourly_cap_holds_back_a_confirmation_and_says_why(
    stripe_client, rt, run_worker, outbox
):
    _customer, older, newer = twin_charges(stripe_client, rt)
    with session_scope(rt.session_factory) as session:
        for index in range(rt.settings.auto_reply_limit_per_hour):
            session.add(
                OutboundEmail(
                    dedupe_key=f"earlier:{index}",
                    to_address=SENDER,
                    subject="Earlier",
                    message_id=f"<earlier-{index}@example.com>",
                    status="sent",
                )
            )

    process_inbound_email(store(rt, customer_email(DOUBLE)))
    run_worker()

    assert len(refunds(stripe_client, older, newer)) == 1  # the refund itself still happens
    assert outbox == []
    with session_scope(rt.session_factory) as session:
        ticket = the_ticket(session)
        assert "Not sent: the refund confirmation email." in notes(ticket)
        assert "limit is 5 (AUTO_REPLY_LIMIT_PER_HOUR)" in notes(ticket)
        held = session.scalars(
            select(OutboundEmail).where(OutboundEmail.ticket_id == ticket.id)
        ).one()
        assert held.status == "rate_limited"
        action_id = session.scalars(select(Action.id).where(Action.kind == "confirm_refund")).one()

    run_step(action_id)  # a rerun neither sends nor notes it again
    assert outbox == []
    with session_scope(rt.session_factory) as session:
        assert notes(the_ticket(session)).count("Not sent:") == 1
