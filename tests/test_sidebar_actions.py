"""The sidebar's actions end to end: form → policy → confirmation → Action → worker → Stripe.

Real fake-Stripe server, real Redis and RQ worker, real database; the browser is Flask's test
client here (tests/test_browser_sidebar.py drives Chromium).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from sidebar_client import PASSWORD, open_sidebar
from sqlalchemy import func, select

from core import agents
from core.db import session_scope
from core.db.models import Action, AuditEvent, Escalation, Plan, Ticket, TicketMessage
from helpdesk_app.demo.seed import DemoCustomer, create_charge, create_customer

pytestmark = pytest.mark.e2e

ALICE = DemoCustomer("Alice Martin", "alice@example.com", "T-1042", "Northwind", "4242424242424242")


@pytest.fixture
def ticket_id(session_factory):
    with session_scope(session_factory) as session:
        ticket = Ticket(subject="Charged twice", requester_email=ALICE.email, status="open")
        session.add(ticket)
        session.flush()
        return ticket.id


@pytest.fixture
def alice(stripe_client, rt):
    """Alice with two $49 charges an hour apart and one $800 charge last week."""
    customer = create_customer(stripe_client, ALICE)
    base = rt.settings.stripe_api_base
    first = create_charge(stripe_client, base, customer, 4900, "Pro", days_ago=0.05)
    second = create_charge(stripe_client, base, customer, 4900, "Pro")
    big = create_charge(stripe_client, base, customer, 80000, "Enterprise", days_ago=7)
    return {"customer": customer, "first": first, "second": second, "big": big}


def refunds(stripe_client, charge: str):
    return stripe_client.v1.refunds.list(params={"charge": charge}).data


def count(session_factory, model) -> int:
    with session_scope(session_factory) as session:
        return session.scalar(select(func.count()).select_from(model))


def test_refund_is_locked_until_identity_is_confirmed(app, people, ticket_id, alice):
    sidebar = open_sidebar(app, "ann@example.com", ticket_id)
    panel = sidebar.get("/panel").get_data(as_text=True)
    assert "Not verified" in panel
    status, page, intent = sidebar.preview(
        kind="refund", charge_id=alice["second"], reason="duplicate"
    )
    assert status == 200 and intent is None and "confirm their identity" in page
    sidebar.verify(alice["customer"])
    assert "Verified" in sidebar.get("/panel").get_data(as_text=True)
    _, page, intent = sidebar.preview(kind="refund", charge_id=alice["second"], reason="duplicate")
    assert intent is not None and "$49.00" in page and "Within the $500.00 refund limit" in page


def test_a_duplicate_is_refunded_once_however_often_it_is_confirmed(
    app, people, ticket_id, alice, stripe_client, run_worker, session_factory, outbox
):
    sidebar = open_sidebar(app, "ann@example.com", ticket_id)
    sidebar.verify(alice["customer"])
    panel = sidebar.get("/panel").get_data(as_text=True)
    assert "Duplicate?" in panel
    form = {"kind": "refund", "charge_id": alice["second"], "reason": "duplicate"}
    _, _, intent = sidebar.preview(**form, confirm_and_close="on")
    _, _, second_tab = sidebar.preview(**form, confirm_and_close="on")
    with ThreadPoolExecutor(4) as pool:  # a double click, a retry and a second tab at once
        answers = list(pool.map(sidebar.confirm, [intent, intent, intent, second_tab]))
    assert all(a.status_code == 200 for a in answers)
    # One plan, and in it one refund (then its confirmation and the close).
    assert count(session_factory, Plan) == 1
    with session_scope(session_factory) as session:
        kinds = session.scalars(select(Action.kind).order_by(Action.position)).all()
        assert kinds == ["refund", "confirm_refund", "close"]
    run_worker()
    issued = refunds(stripe_client, alice["second"])
    assert len(issued) == 1 and issued[0].amount == 4900 and issued[0].reason == "duplicate"
    action_id = int(re.search(r'data-action-id="(\d+)"', answers[0].get_data(as_text=True))[1])
    status = sidebar.get(f"/actions/{action_id}").get_data(as_text=True)
    assert "Done" in status and issued[0].id in status
    assert len(outbox) == 1 and issued[0].id in outbox[0].get_body(("plain",)).get_content()
    with session_scope(session_factory) as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket.status == "closed"
        notes = [m.body for m in ticket.messages if m.kind == "note"]
        assert any(issued[0].id in n and "ann@example.com" in n for n in notes)
    # Confirming again after it is done still changes nothing.
    sidebar.confirm(intent)
    run_worker()
    assert len(refunds(stripe_client, alice["second"])) == 1


def test_a_partial_refund_then_another_is_bounded_by_the_charge(
    app, people, ticket_id, alice, stripe_client, run_worker
):
    sidebar = open_sidebar(app, "ann@example.com", ticket_id)
    sidebar.verify(alice["customer"])
    form = {"kind": "refund", "charge_id": alice["first"], "reason": "requested_by_customer"}
    _, _, intent = sidebar.preview(**form, amount="30.00")
    sidebar.confirm(intent)
    # While the first waits for a worker, the rest of the charge is all that is left.
    _, page, refused = sidebar.preview(**form, amount="20.00")
    assert refused is None and "$19.00" in page
    run_worker()
    _, _, intent = sidebar.preview(**form, amount="19.00")
    assert intent is not None
    sidebar.confirm(intent)
    run_worker()
    assert sorted(r.amount for r in refunds(stripe_client, alice["first"])) == [1900, 3000]


def test_an_agents_large_refund_waits_for_a_lead_who_approves_it(
    app, people, ticket_id, alice, stripe_client, run_worker, session_factory
):
    ann = open_sidebar(app, "ann@example.com", ticket_id)
    ann.verify(alice["customer"])
    _, page, intent = ann.preview(
        kind="refund", charge_id=alice["big"], reason="requested_by_customer"
    )
    assert "$800.00" in page and "need a Support Lead" in page and "Request approval" in page
    answer = ann.confirm(intent).get_data(as_text=True)
    assert "Waiting for approval by the Support Lead" in answer
    run_worker()
    assert refunds(stripe_client, alice["big"]) == []
    action_id = int(re.search(r'data-action-id="(\d+)"', answer)[1])

    # Another agent cannot approve, nor can Ann approve her own request.
    otto = open_sidebar(app, "otto@example.com", ticket_id)
    refused = otto.post(f"/actions/{action_id}/decision", {"decision": "approve"})
    assert refused.status_code == 403
    assert ann.post(f"/actions/{action_id}/decision", {"decision": "approve"}).status_code == 403

    lee = open_sidebar(app, "lee@example.com", ticket_id)
    assert f'data-approval-id="{action_id}"' in lee.get("/panel").get_data(as_text=True)
    lee.post(
        f"/actions/{action_id}/decision", {"decision": "approve", "note": "Long-time customer"}
    )
    run_worker()
    issued = refunds(stripe_client, alice["big"])
    assert len(issued) == 1 and issued[0].amount == 80000
    with session_scope(session_factory) as session:
        notes = [m.body for m in session.get(Ticket, ticket_id).messages if m.kind == "note"]
        assert any("approved by lee@example.com" in n and "Long-time customer" in n for n in notes)
        assert any("Approval needed" in n for n in notes)
        events = session.scalars(select(AuditEvent.event)).all()
        assert "refund.approved" in events and "refund.succeeded" in events


def test_a_lead_refunds_over_the_threshold_without_approval(
    app, people, ticket_id, alice, stripe_client, run_worker
):
    lee = open_sidebar(app, "lee@example.com", ticket_id)
    lee.verify(alice["customer"])
    _, page, intent = lee.preview(
        kind="refund", charge_id=alice["big"], reason="requested_by_customer"
    )
    assert "Your role (Support Lead) allows it" in page
    lee.confirm(intent)
    run_worker()
    assert len(refunds(stripe_client, alice["big"])) == 1


@pytest.mark.parametrize(
    ("role_email", "reason", "allowed"),
    [("ann@example.com", "fraudulent", False), ("sam@example.com", "fraudulent", True)],
)
def test_fraudulent_refunds_are_for_security_only(
    app, people, ticket_id, alice, role_email, reason, allowed
):
    sidebar = open_sidebar(app, role_email, ticket_id)
    sidebar.verify(alice["customer"])
    _, page, intent = sidebar.preview(kind="refund", charge_id=alice["second"], reason=reason)
    assert (intent is not None) is allowed
    if not allowed:
        assert "Only Security may refund as fraudulent" in page


def test_a_disputed_charge_points_to_the_dispute_instead(
    app, people, ticket_id, alice, fake_stripe, stripe_client
):
    import urllib.parse
    import urllib.request

    data = urllib.parse.urlencode({"charge": alice["second"], "reason": "fraudulent"}).encode()
    urllib.request.urlopen(f"{fake_stripe.url}/_config/disputes", data=data, timeout=10).close()
    sidebar = open_sidebar(app, "lee@example.com", ticket_id)
    sidebar.verify(alice["customer"])
    panel = sidebar.get("/panel").get_data(as_text=True)
    assert "Disputed" in panel and "Under dispute" in panel
    # The playbook accepts a dispute when fraud is suspected (the fraudulent reason).
    assert "Accept: fraud is suspected" in panel
    _, page, intent = sidebar.preview(kind="refund", charge_id=alice["second"], reason="duplicate")
    assert intent is None and "cannot be refunded outside the dispute process" in page


@pytest.mark.parametrize(
    ("category", "target"),
    [("chargeback", "finance"), ("card_not_recognized", "security"), ("other", None)],
)
def test_the_escalate_form_starts_at_the_categorys_route(
    app, people, ticket_id, alice, session_factory, category, target
):
    """The escalation matrix picks the team the form offers first."""
    with session_scope(session_factory) as session:
        session.get(Ticket, ticket_id).category = category
    panel = open_sidebar(app, "ann@example.com", ticket_id).get("/panel").get_data(as_text=True)
    selected = re.findall(r'<option value="(\w+)" selected>', panel)
    assert [s for s in selected if s in ("finance", "security", "support_lead")] == (
        [target] if target else []
    )


def test_card_not_recognised_waits_for_security(
    app, people, ticket_id, alice, session_factory, run_worker, stripe_client
):
    with session_scope(session_factory) as session:
        session.get(Ticket, ticket_id).category = "card_not_recognized"
    ann = open_sidebar(app, "ann@example.com", ticket_id)
    ann.verify(alice["customer"])
    _, page, intent = ann.preview(kind="refund", charge_id=alice["second"], reason="duplicate")
    assert "No refund until Security clears it" in page
    answer = ann.confirm(intent).get_data(as_text=True)
    action_id = int(re.search(r'data-action-id="(\d+)"', answer)[1])
    lee = open_sidebar(app, "lee@example.com", ticket_id)
    assert lee.post(f"/actions/{action_id}/decision", {"decision": "approve"}).status_code == 403
    sam = open_sidebar(app, "sam@example.com", ticket_id)
    sam.post(f"/actions/{action_id}/decision", {"decision": "approve"})
    run_worker()
    assert len(refunds(stripe_client, alice["second"])) == 1


def test_escalation_and_note_land_on_the_ticket_with_the_sla(
    app, people, ticket_id, alice, run_worker, session_factory
):
    sidebar = open_sidebar(app, "ann@example.com", ticket_id)
    _, page, intent = sidebar.preview(kind="escalate", target="finance", text="Chargeback filed")
    assert "Finance · SLA 48h" in page
    sidebar.confirm(intent)
    _, _, intent = sidebar.preview(kind="note", text="Customer called, <b>angry</b>")
    sidebar.confirm(intent)
    run_worker()
    with session_scope(session_factory) as session:
        escalation = session.scalars(select(Escalation)).one()
        assert escalation.target == "finance"
        hours = (escalation.due_at - escalation.created_at).total_seconds() / 3600
        assert hours == pytest.approx(48)
        notes = [m.body for m in session.scalars(select(TicketMessage))]
        assert any("Escalated to Finance · SLA 48h" in n for n in notes)
        assert any("Customer called, <b>angry</b>" in n for n in notes)
    history = sidebar.get("/panel").get_data(as_text=True)
    assert "<b>angry" not in history


def test_the_sidebar_token_is_required_and_bound(app, people, ticket_id, alice, session_factory):
    sidebar = open_sidebar(app, "ann@example.com", ticket_id)
    bare = app.test_client()
    assert bare.get("/sidebar/panel").status_code == 401
    forged = {"Authorization": "Bearer " + sidebar.headers["Authorization"][8:-2] + "xx"}
    assert bare.get("/sidebar/panel", headers=forged).status_code == 401
    cross_site = {**sidebar.headers, "Origin": "https://evil.example"}
    response = sidebar.client.post(
        "/sidebar/actions/preview", data={"kind": "note", "text": "x"}, headers=cross_site
    )
    assert response.status_code == 403
    with session_scope(session_factory) as session:
        agents.find_by_email(session, "ann@example.com").active = False
    assert sidebar.get("/panel").status_code == 401


def test_an_intent_for_one_ticket_is_refused_on_another(
    app, people, ticket_id, alice, session_factory
):
    with session_scope(session_factory) as session:
        other = Ticket(subject="Other", requester_email=ALICE.email, status="open")
        session.add(other)
        session.flush()
        other_id = other.id
    first = open_sidebar(app, "ann@example.com", ticket_id)
    _, _, intent = first.preview(kind="note", text="hello")
    second = open_sidebar(app, "ann@example.com", other_id)
    assert second.confirm(intent).status_code == 403


def test_a_customer_picked_from_search_still_needs_confirming(
    app, people, ticket_id, stripe_client, session_factory
):
    """Henry has two accounts on one email: picking one is not proof it is him."""
    first = create_customer(stripe_client, ALICE)
    second = create_customer(stripe_client, ALICE)
    sidebar = open_sidebar(app, "ann@example.com", ticket_id)
    panel = sidebar.get("/panel").get_data(as_text=True)
    assert "2 Stripe customers share" in panel and first in panel and second in panel
    found = sidebar.get("/search", query_string={"q": second}).get_data(as_text=True)
    assert second in found
    chosen = sidebar.post("/customer", {"customer_id": second}).get_data(as_text=True)
    assert second in chosen and first not in chosen and "Not verified" in chosen
    sidebar.verify(second)
    assert "Verified" in sidebar.get("/panel").get_data(as_text=True)
    with session_scope(session_factory) as session:
        ticket = session.get(Ticket, ticket_id)
        assert (ticket.stripe_customer_id, ticket.customer_verified_by) == (
            second,
            "ann@example.com",
        )


def test_an_unused_module_refund_over_the_limit_needs_both_approvals(
    app, people, ticket_id, alice, stripe_client, run_worker, session_factory
):
    """The account manager approves the module refund; the $500 limit still needs a lead."""
    with session_scope(session_factory) as session:
        session.get(Ticket, ticket_id).category = "unused_module"
    ann = open_sidebar(app, "ann@example.com", ticket_id)
    ann.verify(alice["customer"])
    _, page, intent = ann.preview(
        kind="refund", charge_id=alice["big"], reason="requested_by_customer"
    )
    assert "account manager" in page and "Support Lead" in page
    answer = ann.confirm(intent).get_data(as_text=True)
    action_id = int(re.search(r'data-action-id="(\d+)"', answer)[1])
    lee = open_sidebar(app, "lee@example.com", ticket_id)
    # The lead is not the account manager: the first approval is not theirs to give.
    assert lee.post(f"/actions/{action_id}/decision", {"decision": "approve"}).status_code == 403
    avery = open_sidebar(app, "avery@example.com", ticket_id)
    avery.post(f"/actions/{action_id}/decision", {"decision": "approve"})
    run_worker()
    assert refunds(stripe_client, alice["big"]) == []
    assert avery.post(f"/actions/{action_id}/decision", {"decision": "approve"}).status_code == 403
    lee.post(f"/actions/{action_id}/decision", {"decision": "approve"})
    run_worker()
    assert len(refunds(stripe_client, alice["big"])) == 1
    with session_scope(session_factory) as session:
        notes = [m.body for m in session.get(Ticket, ticket_id).messages if m.kind == "note"]
        assert any(
            "Waiting for Support Lead. Approved so far by avery@example.com" in n for n in notes
        )
        assert any(
            "Approvals: avery@example.com (Account manager), lee@example.com" in n for n in notes
        )


def signed_in_client(app, email: str):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    client.post("/login", data={"csrf_token": csrf, "email": email, "password": PASSWORD})
    return client


def test_the_ticket_and_the_sidebar_show_the_plan_and_where_it_stands(
    app, people, ticket_id, alice, run_worker
):
    """A confirmed refund is a plan of steps, shown step by step until it is done."""
    sidebar = open_sidebar(app, "ann@example.com", ticket_id)
    sidebar.verify(alice["customer"])
    form = {"kind": "refund", "charge_id": alice["second"], "reason": "duplicate"}
    _, page, intent = sidebar.preview(**form, confirm_and_close="on")
    assert "Then: email the confirmation with the refund ID to alice@example.com" in page
    sidebar.confirm(intent)
    panel = sidebar.get("/panel").get_data(as_text=True)
    assert 'data-plan-status="running"' in panel
    assert re.findall(r'data-step-status="(\w+)"', panel) == ["queued", "planned", "planned"]
    run_worker()
    panel = sidebar.get("/panel").get_data(as_text=True)
    assert 'data-plan-status="done"' in panel
    assert re.findall(r'data-step-status="(\w+)"', panel) == ["succeeded"] * 3
    page = signed_in_client(app, "ann@example.com").get(f"/tickets/{ticket_id}")
    text = page.get_data(as_text=True)
    assert "data-plan-id" in text and "Email the refund confirmation to alice@example.com" in text
    assert "Close the ticket: Resolved — Refund issued" in text
