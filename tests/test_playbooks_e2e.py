"""Every category's playbook, end to end: an email appended to the mailbox (pymap over IMAP),
polled, triaged and run by the production worker on Redis against the fake Stripe, with the
emails caught by the SMTP server. Positive and negative cases, judged by the playbooks."""

from __future__ import annotations

import dataclasses
import socket
import time
from datetime import timedelta

import pytest
from customer_mail import customer_email
from sqlalchemy import select, update

from core.db import session_scope
from core.db.models import Action, Escalation, OutboundEmail, Ticket, utcnow
from helpdesk_app.demo.seed import (
    DemoCustomer,
    create_charge,
    create_customer,
    create_declined_charge,
    create_subscription,
    set_subscription_state,
)
from jobs.plans import run_step
from jobs.schedule import check_slas

pytestmark = pytest.mark.e2e

DAY = 86_400
PAT = DemoCustomer("Pat Quinn", "pat@example.com", "T-3001", "Quinn Studio", "4242424242424242")
TEAM_MAIL = {
    "finance": "finance@billing-desk.test",
    "security": "security@billing-desk.test",
    "support_lead": "support-lead@billing-desk.test",
    "account_manager": "account-manager@billing-desk.test",
}


@pytest.fixture
def deliver(mailbox_client, poll_mail, run_worker):
    """Append an email from Pat (authenticated unless told), poll, run the worker."""

    def send(subject: str, body: str, **kwargs) -> None:
        mailbox_client.append("INBOX", customer_email(subject, body, PAT.email, PAT.name, **kwargs))
        poll_mail()
        run_worker()

    return send


@pytest.fixture
def pat(stripe_client) -> str:
    return create_customer(stripe_client, PAT)


def to_customer(outbox) -> list[str]:
    """Our templates, in order, of the emails sent to the customer."""
    return [str(m["X-Billing-Desk"]) for m in outbox if PAT.email in str(m["To"])]


def to_teams(outbox) -> dict[str, list[str]]:
    teams: dict[str, list[str]] = {}
    for message in outbox:
        for team, address in TEAM_MAIL.items():
            if address in str(message["To"]):
                teams.setdefault(team, []).append(str(message["X-Billing-Desk"]))
    return teams


def body(message) -> str:
    return message.get_body(("plain",)).get_content()


def refunds(stripe_client, customer: str) -> list:
    charges = stripe_client.v1.charges.list(params={"customer": customer}).data
    return [r for c in charges for r in stripe_client.v1.refunds.list(params={"charge": c.id}).data]


def the_ticket(rt) -> Ticket:
    with session_scope(rt.session_factory) as session:
        ticket = session.scalars(select(Ticket)).one()
        session.expunge(ticket)
        return ticket


def escalations(rt) -> list[tuple[str, str]]:
    with session_scope(rt.session_factory) as session:
        return [(e.target, e.status) for e in session.scalars(select(Escalation))]


def notes(rt) -> str:
    with session_scope(rt.session_factory) as session:
        ticket = session.scalars(select(Ticket)).one()
        return "\n".join(m.body for m in ticket.messages if m.kind == "note")


# --- duplicate charge -----------------------------------------------------------------------


def test_an_authorization_hold_beside_the_charge_is_explained_and_not_refunded(
    rt, stripe_client, pat, deliver, outbox
):
    api = rt.settings.stripe_api_base
    create_charge(stripe_client, api, pat, 4900, "Pro", days_ago=0.1)
    create_charge(stripe_client, api, pat, 4900, "Pro (pending)", capture=False)
    deliver("Charged twice", "Hi, I was charged twice today, $49.00 two times. Please refund one.")
    assert refunds(stripe_client, pat) == []
    assert to_customer(outbox) == ["hold_explanation"]
    assert "5–7 days" in body(outbox[0]) and "$49.00" in body(outbox[0])
    ticket = the_ticket(rt)
    assert (ticket.status, ticket.resolution) == (
        "closed",
        "Resolved — Authorization hold explained",
    )


def test_two_accounts_on_one_card_go_to_an_agent_with_both_named(
    rt, stripe_client, pat, deliver, outbox
):
    api = rt.settings.stripe_api_base
    other = create_customer(
        stripe_client, DemoCustomer("Pat Q", "pq@work.example", "T-3002", "Quinn Ltd", PAT.card)
    )
    create_charge(stripe_client, api, pat, 4900, "Pro", days_ago=0.1)
    create_charge(stripe_client, api, other, 4900, "Pro")
    deliver("Charged twice", "Hi, I was charged twice today, $49.00 two times. Please refund one.")
    assert refunds(stripe_client, pat) == [] and refunds(stripe_client, other) == []
    assert pat in notes(rt) and other in notes(rt) and "two accounts" in notes(rt)
    assert to_customer(outbox) == ["acknowledgement"]
    assert the_ticket(rt).status == "open"


# --- charge after cancellation --------------------------------------------------------------


def test_a_charge_after_the_confirmed_cancellation_is_refunded_prorated_and_confirmed(
    rt, stripe_client, pat, deliver, outbox
):
    api = rt.settings.stripe_api_base
    sub = create_subscription(stripe_client, api, pat, "Pro", 4900, days_ago=33)
    renewal = create_charge(stripe_client, api, pat, 4900, "Pro plan — monthly", days_ago=3)
    set_subscription_state(api, sub, status="canceled", canceled_at=int(time.time() - 10 * DAY))
    deliver(
        "Charged after I cancelled",
        "Hello, I cancelled my subscription last week but you still charged me $49.00 for the "
        "renewal three days ago. Please refund it.",
    )
    (refund,) = refunds(stripe_client, pat)
    # Cancelled before the charged period began: all of it was unused.
    assert (refund.charge, refund.amount) == (renewal, 4900)
    assert to_customer(outbox) == ["prorated_refund_confirmation"]
    text = body(outbox[0])
    assert refund.id in text and "before the period began" in text
    ticket = the_ticket(rt)
    assert (ticket.status, ticket.resolution) == ("closed", "Resolved — Refund issued")


def test_a_cancellation_stripe_does_not_show_goes_to_the_support_lead_unrefunded(
    rt, stripe_client, pat, deliver, outbox
):
    api = rt.settings.stripe_api_base
    create_subscription(stripe_client, api, pat, "Pro", 4900, days_ago=3)
    deliver(
        "Charged after I cancelled",
        "Hello, I cancelled my subscription last week but you still charged me $49.00 for the "
        "renewal three days ago. Please refund it.",
    )
    assert refunds(stripe_client, pat) == []
    assert escalations(rt) == [("support_lead", "open")]
    assert to_customer(outbox) == ["acknowledgement"]
    assert to_teams(outbox) == {"support_lead": ["escalation_notice"]}
    assert the_ticket(rt).team == "support_lead"


# --- the account manager, Security, Finance ------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        (
            "Refund for the module we never used",
            "Hi, we were billed for the Analytics module but we never activated it and have "
            "not used it at all. Can we get a refund for the unused module?",
        ),
        (
            "Very disappointed",
            "Honestly I'm very unhappy with the service this month. It has been slow and "
            "support was unhelpful. I expected much better for what we pay.",
        ),
    ],
    ids=["unused_module", "general_dissatisfaction"],
)
def test_unused_modules_and_dissatisfaction_go_to_the_account_manager(
    rt, stripe_client, pat, deliver, outbox, subject, text
):
    create_charge(stripe_client, rt.settings.stripe_api_base, pat, 19900, "Analytics", days_ago=2)
    deliver(subject, text)
    assert refunds(stripe_client, pat) == []
    assert escalations(rt) == [("account_manager", "open")]
    assert to_customer(outbox) == ["acknowledgement"]
    assert to_teams(outbox) == {"account_manager": ["escalation_notice"]}
    assert the_ticket(rt).status == "open"


def test_a_charge_not_recognised_flags_the_customer_and_escalates_to_security(
    rt, stripe_client, pat, deliver, outbox
):
    create_charge(stripe_client, rt.settings.stripe_api_base, pat, 4900, "Pro", days_ago=1)
    deliver(
        "Charge I don't recognise",
        "Hi, there is a charge of $49.00 from your company on my card statement that I do not "
        "recognize. I never signed up for anything. Who charged me?",
    )
    assert refunds(stripe_client, pat) == []
    metadata = stripe_client.v1.customers.retrieve(pat).metadata.to_dict()
    assert any("fraud" in key for key in metadata)
    assert escalations(rt) == [("security", "open")]
    assert to_customer(outbox) == ["card_not_recognized_acknowledgement"]
    assert to_teams(outbox) == {"security": ["escalation_notice"]}


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        ("Chargeback", "I have filed a chargeback with my bank for the $49.00 charge."),
        # Said in a duplicate-charge email: still never a refund.
        (
            "Charged twice",
            "I was charged twice today, $49.00 two times, so I filed a chargeback with my bank.",
        ),
    ],
    ids=["chargeback", "said-in-a-duplicate"],
)
def test_a_chargeback_is_never_refunded_and_goes_to_finance_at_once(
    rt, stripe_client, pat, deliver, outbox, subject, text
):
    api = rt.settings.stripe_api_base
    create_charge(stripe_client, api, pat, 4900, "Pro", days_ago=0.1)
    create_charge(stripe_client, api, pat, 4900, "Pro")
    deliver(subject, text)
    assert refunds(stripe_client, pat) == []
    assert escalations(rt) == [("finance", "open")]
    assert to_customer(outbox) == ["chargeback_acknowledgement"]
    assert "dispute process" in body(next(m for m in outbox if PAT.email in str(m["To"])))
    assert to_teams(outbox) == {"finance": ["escalation_notice"]}
    with session_scope(rt.session_factory) as session:
        escalation = session.scalars(select(Escalation)).one()
        assert escalation.due_at - escalation.created_at == timedelta(hours=48)


# --- payment failed -------------------------------------------------------------------------


def test_a_failed_payment_gets_its_decline_guidance_the_secure_link_and_the_retries(
    stripe_client, pat, deliver, outbox
):
    create_declined_charge(stripe_client, pat, 2900, "Starter plan — monthly")
    deliver(
        "My payment failed",
        "Hi there, I got a notice that my payment failed this month. What do I need to do?",
    )
    (sent,) = [m for m in outbox if PAT.email in str(m["To"])]
    assert str(sent["X-Billing-Desk"]).startswith("payment_failed_")
    text = body(sent)
    assert "/billing/update-card/" in text and "$29.00" in text
    assert "3 more attempts over 14 days" in text  # Stripe's retries, from the policy
    assert "enough" in text  # insufficient funds, in words safe to say


def test_no_failed_payment_means_a_person_answers(stripe_client, pat, deliver, outbox):
    deliver(
        "My payment failed",
        "Hi there, I got a notice that my payment failed this month. What do I need to do?",
    )
    assert to_customer(outbox) == ["acknowledgement"]


def test_an_unauthenticated_sender_gets_the_guidance_without_the_link(
    stripe_client, pat, deliver, outbox
):
    create_declined_charge(stripe_client, pat, 2900, "Starter plan — monthly")
    deliver(
        "My payment failed",
        "Hi there, I got a notice that my payment failed this month. What do I need to do?",
        authenticated=False,
    )
    (sent,) = [m for m in outbox if PAT.email in str(m["To"])]
    assert "/billing/update-card/" not in body(sent) and "Manage Subscription" in body(sent)


# --- cancellation ---------------------------------------------------------------------------

CANCEL = "Hi, please cancel my subscription. I don't need the service anymore. Thanks."
LOCKED_OUT = (
    "Hi, please cancel my subscription. I can't log in to my account to do it myself, the "
    "password reset never arrives. Thanks."
)


def test_a_cancellation_is_pointed_to_self_service_first(rt, stripe_client, pat, deliver, outbox):
    sub = create_subscription(stripe_client, rt.settings.stripe_api_base, pat, "Pro", 4900)
    deliver("Cancel my subscription", CANCEL)
    assert stripe_client.v1.subscriptions.retrieve(sub).cancel_at_period_end is False
    assert to_customer(outbox) == ["self_service"]
    assert "/billing/update-card/" in body(outbox[0])


def test_a_locked_out_customer_is_cancelled_at_period_end_and_confirmed(
    rt, stripe_client, pat, deliver, outbox
):
    sub = create_subscription(stripe_client, rt.settings.stripe_api_base, pat, "Pro", 4900)
    deliver("Cancel my subscription", LOCKED_OUT)
    after = stripe_client.v1.subscriptions.retrieve(sub)
    assert after.cancel_at_period_end is True and after.status == "active"  # never at once
    assert to_customer(outbox) == ["cancellation_confirmation"]
    ticket = the_ticket(rt)
    assert (ticket.status, ticket.resolution) == ("closed", "Resolved — Cancelled at period end")


def test_a_forged_locked_out_cancellation_waits_for_an_agent(
    rt, stripe_client, pat, deliver, outbox
):
    sub = create_subscription(stripe_client, rt.settings.stripe_api_base, pat, "Pro", 4900)
    deliver("Cancel my subscription", LOCKED_OUT, authenticated=False)
    assert stripe_client.v1.subscriptions.retrieve(sub).cancel_at_period_end is False
    assert to_customer(outbox) == ["acknowledgement"]
    with session_scope(rt.session_factory) as session:
        statuses = set(session.scalars(select(Action.status).where(Action.kind != "reply")))
    assert statuses == {"suggested"}


# --- refund request -------------------------------------------------------------------------

RENEWED = (
    "Hi, my plan renewed by accident yesterday and I did not mean to keep it. Could I get a "
    "refund for the renewal please?"
)


def test_a_refund_within_seven_days_of_the_renewal_is_issued_confirmed_and_closed(
    rt, stripe_client, pat, deliver, outbox
):
    charge = create_charge(stripe_client, rt.settings.stripe_api_base, pat, 4900, "Pro", 1)
    deliver("Refund please", RENEWED)
    (refund,) = refunds(stripe_client, pat)
    assert (refund.charge, refund.amount, refund.reason) == (charge, 4900, "requested_by_customer")
    assert to_customer(outbox) == ["refund_confirmation"] and refund.id in body(outbox[0])
    assert the_ticket(rt).status == "closed"


def test_a_refund_past_the_window_goes_to_the_support_lead(rt, stripe_client, pat, deliver, outbox):
    create_charge(stripe_client, rt.settings.stripe_api_base, pat, 4900, "Pro", days_ago=20)
    deliver("Refund please", RENEWED)
    assert refunds(stripe_client, pat) == []
    assert escalations(rt) == [("support_lead", "open")]
    assert "more than 7 days old" in notes(rt)
    assert to_customer(outbox) == ["acknowledgement"]


# --- holds, other ---------------------------------------------------------------------------


def test_a_question_about_a_hold_is_explained_and_closed(rt, stripe_client, pat, deliver, outbox):
    create_charge(stripe_client, rt.settings.stripe_api_base, pat, 12000, "Seats", capture=False)
    deliver(
        "Pending charge on my card",
        "Hi, there is a pending authorization of $120.00 on my card from you that I don't "
        "understand. It says pending, not posted. Is this a hold? When will it go away?",
    )
    assert to_customer(outbox) == ["hold_explanation"] and "$120.00" in body(outbox[0])
    assert the_ticket(rt).status == "closed"


def test_anything_else_is_acknowledged_and_left_to_a_person(pat, deliver, outbox, rt):
    deliver(
        "Invoice address",
        "Hello, can you change the company address printed on our invoices to 12 High "
        "Street, Leeds? Thanks.",
    )
    assert to_customer(outbox) == ["acknowledgement"]
    assert the_ticket(rt).status == "open" and escalations(rt) == []


# --- dry run, SMTP down, SLA breach --------------------------------------------------------


def test_a_dry_run_records_what_would_happen_and_touches_nothing(
    rt, stripe_client, pat, deliver, outbox
):
    rt.settings = dataclasses.replace(rt.settings, dry_run=True)
    api = rt.settings.stripe_api_base
    create_charge(stripe_client, api, pat, 4900, "Pro", days_ago=0.1)
    create_charge(stripe_client, api, pat, 4900, "Pro")
    deliver("Charged twice", "Hi, I was charged twice today, $49.00 two times. Please refund one.")
    assert refunds(stripe_client, pat) == [] and outbox == []
    with session_scope(rt.session_factory) as session:
        assert set(session.scalars(select(Action.status))) == {"simulated"}
        assert session.scalars(select(OutboundEmail)).all() == []
    assert "Dry run — would have done: Refund" in notes(rt)
    assert the_ticket(rt).status == "open"


def test_an_email_sent_while_smtp_is_down_goes_out_once_when_it_is_back(
    rt, stripe_client, pat, mailbox_client, poll_mail, outbox
):
    """The acknowledgement's step fails while SMTP refuses connections (RQ retries it), then
    goes out once; a further run sends nothing."""
    from jobs.inbound import process_inbound_email

    mailbox_client.append(
        "INBOX",
        customer_email(
            "Invoice address", "Please change our invoice address.", PAT.email, PAT.name
        ),
    )
    poll_mail()
    with session_scope(rt.session_factory) as session:
        from core.db.models import InboundEmail

        email_id = session.scalars(select(InboundEmail.id)).one()
    process_inbound_email(email_id)
    with session_scope(rt.session_factory) as session:
        (step,) = session.scalars(select(Action.id).where(Action.kind == "reply")).all()
    working = rt.smtp
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    rt.__dict__["smtp"] = dataclasses.replace(working, port=closed_port)
    from core.errors import MailDeliveryError

    with pytest.raises(MailDeliveryError):
        run_step(step)
    assert outbox == []
    rt.__dict__["smtp"] = working
    assert run_step(step) == "succeeded"
    run_step(step)
    assert to_customer(outbox) == ["acknowledgement"]


def test_a_breached_sla_is_re_escalated_once(rt, stripe_client, pat, deliver, outbox):
    deliver("Chargeback", "I have filed a chargeback with my bank for the $49.00 charge.")
    assert to_teams(outbox) == {"finance": ["escalation_notice"]}
    with session_scope(rt.session_factory) as session:
        session.execute(update(Escalation).values(due_at=utcnow() - timedelta(minutes=1)))
    assert check_slas() == 1
    assert check_slas() == 0  # found once: one breach, one re-escalation
    teams = to_teams(outbox)
    assert teams["finance"] == ["escalation_notice", "sla_breach_notice"]
    assert teams["support_lead"] == ["sla_breach_notice"]
    assert notes(rt).count("SLA breached") == 1
    with session_scope(rt.session_factory) as session:
        assert session.scalars(select(Escalation.breached_at)).one() is not None


def test_the_mail_agents_steps_run_on_automation_and_an_agents_on_actions(
    rt, stripe_client, pat, mailbox_client, poll_mail
):
    """A click never queues behind a playbook's steps: they are on a queue of their own."""
    from rq import Queue

    from jobs import queues
    from jobs.inbound import process_inbound_email
    from jobs.plans import step_queue

    api = rt.settings.stripe_api_base
    create_charge(stripe_client, api, pat, 4900, "Pro", days_ago=0.1)
    create_charge(stripe_client, api, pat, 4900, "Pro")
    mailbox_client.append(
        "INBOX",
        customer_email("Charged twice", "Charged twice today, $49.00 two times.", PAT.email),
    )
    poll_mail()
    with session_scope(rt.session_factory) as session:
        from core.db.models import InboundEmail

        email_id = session.scalars(select(InboundEmail.id)).one()
    process_inbound_email(email_id)
    assert Queue(queues.AUTOMATION, connection=rt.redis).count == 1
    assert Queue(queues.ACTIONS, connection=rt.redis).count == 0
    assert step_queue(rt, requested_by_a_person=True).name == queues.ACTIONS
