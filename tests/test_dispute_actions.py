"""Finance answers a dispute from the sidebar: submit the evidence or accept it, through the
real app, worker and fake Stripe; everyone else is refused on the server."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from fake_stripe_support import open_dispute
from sidebar_client import open_sidebar
from sqlalchemy import func, select

from core.db import session_scope
from core.db.models import Action, Agent, AuditEvent
from helpdesk_app.demo.seed import DemoCustomer, create_charge, create_customer
from jobs.disputes import dispute_event

pytestmark = pytest.mark.e2e

CARA = DemoCustomer("Cara Chargeback", "cara@example.com", "T-88", "Cobalt", "4242424242424242")


@pytest.fixture
def disputed(rt, stripe_client, fake_stripe, run_worker, session_factory, people):
    """Cara's $49 charge disputed, its ticket opened and escalated to Finance."""
    rt.settings = replace(rt.settings, usage_source="demo")
    customer = create_customer(stripe_client, CARA)
    charge = create_charge(stripe_client, rt.settings.stripe_api_base, customer, 4900, "Pro", 2)

    def make(**form) -> tuple[int, str]:
        dp = open_dispute(fake_stripe, charge, **form)
        dispute_event(rt, "charge.dispute.created", dp)
        run_worker()
        with session_scope(session_factory) as session:
            step = session.scalars(
                select(Action).where(Action.kind == "escalate").order_by(Action.id.desc())
            ).first()
            return step.ticket_id, dp["id"]

    return make


def dispute_status(stripe_client, dispute_id: str):
    return stripe_client.v1.disputes.retrieve(dispute_id)


def test_finance_sees_the_dispute_and_its_two_actions_others_see_none(app, disputed):
    ticket_id, dispute_id = disputed(reason="product_not_received")
    fin = open_sidebar(app, "fin@example.com", ticket_id).get("/panel").get_data(as_text=True)
    assert dispute_id in fin and "$49.00" in fin and "product not received" in fin
    assert "needs response" in fin and "Evidence due" in fin
    assert "Recommended: challenge" in fin and "Sign-ins:" in fin
    assert "Submit evidence…" in fin and "Accept…" in fin
    for who in ("ann@example.com", "lee@example.com"):
        page = open_sidebar(app, who, ticket_id).get("/panel").get_data(as_text=True)
        assert dispute_id in page and "Recommended: challenge" in page
        assert "Submit evidence…" not in page and "Accept…" not in page


def test_finance_submits_the_evidence_once_however_often_it_is_confirmed(
    app, disputed, stripe_client, run_worker, session_factory
):
    ticket_id, dispute_id = disputed(reason="product_not_received")
    fin = open_sidebar(app, "fin@example.com", ticket_id)
    form = {"kind": "submit_dispute_evidence", "dispute_id": dispute_id}
    _, page, intent = fin.preview(**form)
    assert intent is not None and "access_activity_log" in page and "submit=true" in page
    with ThreadPoolExecutor(3) as pool:  # a double click and a retry at once
        answers = list(pool.map(fin.confirm, [intent, intent, intent]))
    assert all(a.status_code == 200 for a in answers)
    run_worker()
    dispute = dispute_status(stripe_client, dispute_id)
    assert dispute.status == "under_review"
    assert dispute.evidence_details.submission_count == 1
    assert "198." in dispute.evidence.access_activity_log or "203." in (
        dispute.evidence.access_activity_log
    )
    assert dispute.evidence.customer_email_address == CARA.email
    with session_scope(session_factory) as session:
        (step,) = session.scalars(
            select(Action).where(Action.kind == "submit_dispute_evidence")
        ).all()
        assert step.status == "succeeded" and step.requested_by == "fin@example.com"
        audited = session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.event == "submit_dispute_evidence.succeeded")
        )
        assert audited == 1
    action_id = int(re.search(r'data-action-id="(\d+)"', answers[0].get_data(as_text=True))[1])
    assert "Done" in fin.get(f"/actions/{action_id}").get_data(as_text=True)
    # Submitted now: Stripe takes no second response, and the sidebar offers none.
    _, page, again = fin.preview(**form)
    assert again is None and "under review" in page


def test_finance_accepts_a_dispute_and_is_told_it_cannot_be_undone(
    app, disputed, stripe_client, run_worker
):
    ticket_id, dispute_id = disputed(reason="general")
    fin = open_sidebar(app, "fin@example.com", ticket_id)
    _, page, intent = fin.preview(kind="accept_dispute", dispute_id=dispute_id)
    assert intent is not None and "cannot be undone" in page and "closes" in page
    fin.confirm(intent)
    fin.confirm(intent)
    run_worker()
    assert dispute_status(stripe_client, dispute_id).status == "lost"


@pytest.mark.parametrize("who", ["ann@example.com", "lee@example.com", "sam@example.com"])
@pytest.mark.parametrize("kind", ["submit_dispute_evidence", "accept_dispute"])
def test_others_are_refused_on_the_server_even_with_a_forged_form(
    app, disputed, stripe_client, run_worker, session_factory, who, kind
):
    ticket_id, dispute_id = disputed(reason="general")
    sidebar = open_sidebar(app, who, ticket_id)
    status, page, intent = sidebar.preview(kind=kind, dispute_id=dispute_id)
    assert status == 200 and intent is None and "Only Finance or an admin" in page
    # Finance's own confirmation, replayed by someone else, is refused too.
    _, _, fins = open_sidebar(app, "fin@example.com", ticket_id).preview(
        kind=kind, dispute_id=dispute_id
    )
    assert sidebar.confirm(fins).status_code == 403
    assert sidebar.confirm("forged." + fins[7:]).status_code == 400
    run_worker()
    assert dispute_status(stripe_client, dispute_id).status == "needs_response"
    with session_scope(session_factory) as session:
        assert session.scalars(select(Action).where(Action.kind == kind)).all() == []


def test_a_dispute_of_another_customer_cannot_be_named(app, disputed):
    ticket_id, _ = disputed(reason="general")
    fin = open_sidebar(app, "fin@example.com", ticket_id)
    status, page, intent = fin.preview(kind="accept_dispute", dispute_id="dp_someone_else")
    assert intent is None and status == 400 and "of this customer" in page


def test_the_worker_asks_our_records_again_before_it_answers_stripe(
    app, disputed, stripe_client, run_worker, session_factory
):
    """Finance confirmed, then lost the Finance role before a worker ran the step."""
    ticket_id, dispute_id = disputed(reason="general")
    fin = open_sidebar(app, "fin@example.com", ticket_id)
    _, _, intent = fin.preview(kind="accept_dispute", dispute_id=dispute_id)
    fin.confirm(intent)
    with session_scope(session_factory) as session:
        session.scalars(select(Agent).where(Agent.email == "fin@example.com")).one().role = "agent"
    run_worker()
    assert dispute_status(stripe_client, dispute_id).status == "needs_response"
    with session_scope(session_factory) as session:
        step = session.scalars(select(Action).where(Action.kind == "accept_dispute")).one()
        assert step.status == "failed" and "Only Finance or an admin" in step.error


def test_an_inquiry_can_be_answered_with_evidence(app, disputed, stripe_client, run_worker):
    ticket_id, dispute_id = disputed(reason="general", status="warning_needs_response")
    fin = open_sidebar(app, "fin@example.com", ticket_id)
    panel = fin.get("/panel").get_data(as_text=True)
    assert "An inquiry" in panel and "Submit evidence…" in panel
    _, page, intent = fin.preview(kind="submit_dispute_evidence", dispute_id=dispute_id)
    assert intent is not None and "inquiry, not yet a chargeback" in page
    fin.confirm(intent)
    run_worker()
    assert dispute_status(stripe_client, dispute_id).status == "warning_under_review"
