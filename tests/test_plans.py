"""Stored plans end to end: a suggestion an agent starts, a step judged again just before it
runs (and sent back for a new approval, or stopped), and the steps after a stop skipped.

Real servers throughout: the fake Stripe, Redis with the worker, the database, the sidebar.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from customer_mail import DOUBLE_CHARGE, customer_email
from sidebar_client import open_sidebar
from sqlalchemy import select

from core.actions import request_plan
from core.db import session_scope
from core.db.models import Action, InboundEmail, Plan, Ticket
from core.domain import ActionKind, Category, Money
from core.plans import PlanDraft, StepDraft
from core.policy import Mode
from helpdesk_app.cli import main
from helpdesk_app.demo.seed import DemoCustomer, create_charge, create_customer
from jobs import queues
from jobs.inbound import process_inbound_email
from jobs.plans import resume_plans

pytestmark = pytest.mark.e2e

ALICE = DemoCustomer("Alice Martin", "alice@example.com", "T-1042", "Northwind", "4242424242424242")


@pytest.fixture
def twins(stripe_client, rt):
    """Alice, charged $49.00 twice today."""
    customer = create_customer(stripe_client, ALICE)
    base = rt.settings.stripe_api_base
    older = create_charge(stripe_client, base, customer, 4900, "Pro", days_ago=0.1)
    newer = create_charge(stripe_client, base, customer, 4900, "Pro")
    return customer, older, newer


def double_charge_email() -> bytes:
    return customer_email("Charged twice", DOUBLE_CHARGE)


def refunds(stripe_client, charge: str):
    return stripe_client.v1.refunds.list(params={"charge": charge}).data


def steps(session_factory, ticket_id: int) -> list[tuple[str, str]]:
    with session_scope(session_factory) as session:
        return [
            (a.kind, a.status)
            for a in session.scalars(
                select(Action).where(Action.ticket_id == ticket_id).order_by(Action.id)
            )
        ]


def ticket_of(session_factory) -> Ticket:
    with session_scope(session_factory) as session:
        return session.scalars(select(Ticket)).one()


def test_a_suggested_plan_waits_for_an_agent_who_starts_it_once(
    app,
    people,
    rt,
    twins,
    stripe_client,
    run_worker,
    outbox,
    session_factory,
    poll_mail,
    mailbox_client,
):
    """In suggest mode the mail agent prepares the duplicate's refund; an agent confirms the
    customer and starts it (two agents at once start it once); it then runs to the close."""
    modes = {**rt.policy.category_modes, Category.DUPLICATE_CHARGE: Mode.SUGGEST}
    rt.policy = dataclasses.replace(rt.policy, category_modes=modes)
    _customer, _older, newer = twins
    mailbox_client.append("INBOX", double_charge_email())
    poll_mail()
    run_worker()
    assert refunds(stripe_client, newer) == [] and outbox == []
    ticket_id = ticket_of(session_factory).id
    assert steps(session_factory, ticket_id) == [
        ("refund", "suggested"),
        ("confirm_refund", "suggested"),
        ("close", "suggested"),
    ]
    with session_scope(session_factory) as session:
        plan = session.scalars(select(Plan)).one()
        assert plan.status == "suggested"
        plan_id = plan.id

    ann = open_sidebar(app, "ann@example.com", ticket_id)
    panel = ann.get("/panel").get_data(as_text=True)
    assert 'data-plan-status="suggested"' in panel and "Review and start" in panel
    # The email's sender is authenticated and writes from the customer's own address: the
    # identity is proven without the checklist.
    page = ann.post(f"/plans/{plan_id}/preview", {}).get_data(as_text=True)
    intent = re.search(r'name="intent" value="([^"]+)"', page).group(1)
    bea = open_sidebar(app, "bea@example.com", ticket_id)
    bea_page = bea.post(f"/plans/{plan_id}/preview", {}).get_data(as_text=True)
    bea_intent = re.search(r'name="intent" value="([^"]+)"', bea_page).group(1)
    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(
                lambda pair: pair[0].post(f"/plans/{plan_id}/start", {"intent": pair[1]}),
                [(ann, intent), (bea, bea_intent)],
            )
        )
    # One starts it; the other is refused (already started, or nothing left to refund).
    codes = sorted(a.status_code for a in answers)
    assert codes[0] == 200 and codes[1] in (400, 403)
    run_worker()
    assert len(refunds(stripe_client, newer)) == 1 and len(outbox) == 1
    assert ticket_of(session_factory).status == "closed"
    with session_scope(session_factory) as session:
        first = session.scalars(select(Action).order_by(Action.id)).first()
        assert first.requested_by in ("ann@example.com", "bea@example.com")
        assert first.requester_role == "agent"


def _open_dispute(fake_stripe, charge: str) -> None:
    data = urllib.parse.urlencode({"charge": charge, "reason": "fraudulent"}).encode()
    urllib.request.urlopen(f"{fake_stripe.url}/_config/disputes", data=data, timeout=10).close()


def test_a_step_the_worker_finds_refused_stops_the_plan_and_skips_the_rest(
    app, people, twins, fake_stripe, stripe_client, run_worker, outbox, session_factory, new_ticket
):
    """Disputed between the agent's click and the worker: no refund, no email, no close."""
    customer, _older, newer = twins
    ticket_id = new_ticket(ALICE.email, subject="Charged twice")
    ann = open_sidebar(app, "ann@example.com", ticket_id)
    ann.verify(customer)
    _, _, intent = ann.preview(
        kind="refund", charge_id=newer, reason="duplicate", confirm_and_close="on"
    )
    ann.confirm(intent)
    _open_dispute(fake_stripe, newer)
    run_worker()
    assert refunds(stripe_client, newer) == [] and outbox == []
    assert steps(session_factory, ticket_id) == [
        ("refund", "failed"),
        ("confirm_refund", "skipped"),
        ("close", "skipped"),
    ]
    with session_scope(session_factory) as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket.status == "open"
        assert any("Refund not issued: Dispute" in m.body for m in ticket.messages)
        assert session.scalars(select(Plan.status)).one() == "stopped"


def test_a_claim_that_appears_after_the_approval_sends_the_step_back(
    app, people, stripe_client, rt, run_worker, session_factory, new_ticket
):
    """A lead approved a $600 refund; before the worker ran it, a card-not-recognised ticket of
    the same customer arrived: the worker asks Security first, then refunds once."""
    customer = create_customer(stripe_client, ALICE)
    big = create_charge(stripe_client, rt.settings.stripe_api_base, customer, 60000, "Seats")
    ticket_id = new_ticket(ALICE.email, subject="Refund please")
    ann = open_sidebar(app, "ann@example.com", ticket_id)
    ann.verify(customer)
    _, _, intent = ann.preview(kind="refund", charge_id=big, reason="duplicate")
    answer = ann.confirm(intent).get_data(as_text=True)
    action_id = int(re.search(r'data-action-id="(\d+)"', answer)[1])
    lee = open_sidebar(app, "lee@example.com", ticket_id)
    lee.post(f"/actions/{action_id}/decision", {"decision": "approve"})
    with session_scope(session_factory) as session:
        session.add(
            Ticket(
                subject="What is this charge?",
                requester_email=ALICE.email,
                status="open",
                category="card_not_recognized",
                stripe_customer_id=customer,
            )
        )
    run_worker()
    assert refunds(stripe_client, big) == []
    with session_scope(session_factory) as session:
        action = session.get(Action, action_id)
        assert (action.status, action.approval_role) == ("pending_approval", "security")
        notes = [m.body for m in session.get(Ticket, ticket_id).messages if m.kind == "note"]
        assert any("Waiting for Security" in n for n in notes)
    sam = open_sidebar(app, "sam@example.com", ticket_id)
    sam.post(f"/actions/{action_id}/decision", {"decision": "approve"})
    run_worker()
    assert len(refunds(stripe_client, big)) == 1


def test_an_email_processed_twice_stores_one_plan(
    rt, twins, stripe_client, run_worker, session_factory, mailbox_client, poll_mail
):
    """A triage job run again finds its plan: one plan, one refund."""
    mailbox_client.append("INBOX", double_charge_email())
    poll_mail()
    with session_scope(session_factory) as session:
        email_id = session.scalars(select(InboundEmail.id)).one()
    process_inbound_email(email_id)
    with session_scope(session_factory) as session:
        session.get(InboundEmail, email_id).status = "received"  # as if the commit was lost
    process_inbound_email(email_id)
    run_worker()
    with session_scope(session_factory) as session:
        assert len(session.scalars(select(Plan)).all()) == 1
    assert len(refunds(stripe_client, twins[2])) == 1


def test_a_dismissed_suggestion_never_runs(
    app, people, twins, session_factory, run_worker, new_ticket
):
    """An agent drops the mail agent's suggestion: every step skipped, starting it refused."""
    customer, _older, newer = twins
    ticket_id = new_ticket(ALICE.email, subject="Charged twice")
    with session_scope(session_factory) as session:
        draft = PlanDraft(
            key="triage:test",
            title="Refund the duplicate",
            reason="Suggested.",
            steps=(
                StepDraft(
                    ActionKind.REFUND,
                    "duplicate-refund:test",
                    customer_id=customer,
                    charge_id=newer,
                    amount=Money(4900, "usd"),
                    reason="duplicate",
                ),
            ),
            suggested=True,
        )
        plan, _ = request_plan(
            session,
            ticket_id=ticket_id,
            draft=draft,
            requested_by="mail-agent",
            requester_role=None,
        )
        plan_id = plan.id
    ann = open_sidebar(app, "ann@example.com", ticket_id)
    ann.verify(customer)
    page = ann.post(f"/plans/{plan_id}/preview", {}).get_data(as_text=True)
    intent = re.search(r'name="intent" value="([^"]+)"', page).group(1)
    panel = ann.post(f"/plans/{plan_id}/dismiss", {}).get_data(as_text=True)
    assert 'data-plan-status="stopped"' in panel
    assert ann.post(f"/plans/{plan_id}/start", {"intent": intent}).status_code == 400
    run_worker()
    assert steps(session_factory, ticket_id) == [("refund", "skipped")]


def test_a_step_whose_job_was_lost_is_resumed(
    app,
    people,
    twins,
    rt,
    stripe_client,
    run_worker,
    session_factory,
    monkeypatch,
    capsys,
    new_ticket,
):
    """The web process stored the plan but its job never reached Redis (or Redis lost it):
    `billing-desk plans resume` queues the due step once; a queued one is left alone."""
    customer, _older, newer = twins
    ticket_id = new_ticket(ALICE.email, subject="Charged twice")
    ann = open_sidebar(app, "ann@example.com", ticket_id)
    ann.verify(customer)
    _, _, intent = ann.preview(kind="refund", charge_id=newer, reason="duplicate")
    ann.confirm(intent)
    rt.redis.flushdb()  # the job is gone; the plan says its step is queued
    run_worker()
    assert refunds(stripe_client, newer) == []
    for name, value in rt.settings.to_env().items():
        monkeypatch.setenv(name, value)
    main(["plans", "resume"])
    assert "1 plan step(s) queued again" in capsys.readouterr().out
    main(["plans", "resume"])  # its job is queued now: not queued twice
    assert "0 plan step(s) queued again" in capsys.readouterr().out
    run_worker()
    assert len(refunds(stripe_client, newer)) == 1


def test_a_step_lost_on_its_way_to_a_worker_is_resumed_once(
    app, people, twins, rt, stripe_client, run_worker, session_factory, new_ticket
):
    """The job's ID was popped from its queue by a worker whose connection dropped before it
    read the answer: "queued", in no queue, and its unique ID keeps a plain enqueue out."""
    customer, _older, newer = twins
    ticket_id = new_ticket(ALICE.email, subject="Charged twice")
    ann = open_sidebar(app, "ann@example.com", ticket_id)
    ann.verify(customer)
    _, _, intent = ann.preview(kind="refund", charge_id=newer, reason="duplicate")
    ann.confirm(intent)
    actions_queue = rt.queue(queues.ACTIONS)
    popped = rt.redis.lpop(actions_queue.key)
    assert popped is not None and popped.decode().startswith("action-")
    run_worker()
    assert refunds(stripe_client, newer) == []  # no worker has it

    assert resume_plans(rt) == 1
    assert resume_plans(rt) == 0  # back in its queue: not pushed twice
    run_worker()
    assert len(refunds(stripe_client, newer)) == 1
