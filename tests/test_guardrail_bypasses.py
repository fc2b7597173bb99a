"""The ways around the refund approvals a review found, each tried the way the reviewer did:
through the sidebar, on real servers (fake Stripe, Redis with the worker, the database). Each
test failed on the code before the action core; each now shows the refusal or the approval the
money needs.
"""

from __future__ import annotations

import html
import re

import pytest
from sidebar_client import open_sidebar
from sqlalchemy import select

from core.db import session_scope
from core.db.models import Action, Ticket
from helpdesk_app.demo.seed import (
    DemoCustomer,
    create_charge,
    create_customer,
    create_subscription,
)

pytestmark = pytest.mark.e2e

ERIN = DemoCustomer(
    "Erin Walsh", "erin@example.com", "T-1150", "Walsh Analytics", "5200828282828210"
)
OTTO = DemoCustomer("Otto Other", "otto@example.com", "T-1300", "Other Co", "4242424242424242")


@pytest.fixture
def erin(stripe_client, rt):
    """Erin, with an $800 module charge from two days ago and a $49 one from today."""
    customer = create_customer(stripe_client, ERIN)
    base = rt.settings.stripe_api_base
    module = create_charge(stripe_client, base, customer, 80000, "Analytics module", days_ago=2)
    small = create_charge(stripe_client, base, customer, 4900, "Pro")
    return {"customer": customer, "module": module, "small": small}


def refunds(stripe_client, charge: str):
    return stripe_client.v1.refunds.list(params={"charge": charge}).data


def seen(response) -> str:
    """What the agent reads: the page's text with HTML escapes undone."""
    return html.unescape(response.get_data(as_text=True))


class Reading:
    """A sidebar whose previews come back as the text an agent reads."""

    def __init__(self, sidebar) -> None:
        self.sidebar = sidebar

    def __getattr__(self, name):
        return getattr(self.sidebar, name)

    def preview(self, **form):
        status, page, intent = self.sidebar.preview(**form)
        return status, html.unescape(page), intent


def verified_sidebar(app, agent: str, ticket_id: int, customer: str):
    sidebar = open_sidebar(app, agent, ticket_id)
    sidebar.verify(customer)
    return Reading(sidebar)


def refund_preview(sidebar, charge: str, amount: str, reason: str = "requested_by_customer"):
    return sidebar.preview(kind="refund", charge_id=charge, reason=reason, amount=amount)


def action_id(answer) -> int:
    return int(re.search(r'data-action-id="(\d+)"', answer.get_data(as_text=True))[1])


# --- another ticket, another customer ---------------------------------------------------


def test_a_customer_chosen_on_an_unrelated_ticket_cannot_be_confirmed(
    app, people, erin, session_factory, new_ticket
):
    """On Otto's ticket, Ann picks Erin and ticks the three boxes: refused, and the refund with
    it, because the ticket's requester is not Erin's address."""
    otto_ticket = new_ticket(OTTO.email, "other")
    sidebar = Reading(open_sidebar(app, "ann@example.com", otto_ticket))
    chosen = seen(sidebar.post("/customer", {"customer_id": erin["customer"]}))
    assert (
        "Chosen by an agent: the ticket's requester otto@example.com is not this customer" in chosen
    )
    assert "cannot be confirmed for this ticket" in chosen
    boxes = {"customer_id": erin["customer"], "email": "on", "organisation": "on", "tenant": "on"}
    refused = sidebar.post("/verify", boxes)
    assert refused.status_code == 403
    assert "Account email: ticket says otto@example.com" in seen(refused)
    _, page, intent = refund_preview(sidebar, erin["module"], "400.00")
    assert intent is None and "disagree about who this is" in page
    with session_scope(session_factory) as session:
        assert session.get(Ticket, otto_ticket).customer_verified_by is None


def test_a_conflicting_tenant_refuses_confirmation(app, people, erin, session_factory, new_ticket):
    """Erin writes, but her ticket names another tenant: no one can confirm her on it."""
    erin_ticket = new_ticket(ERIN.email, "refund_request", tenant_id="T-9999")
    sidebar = open_sidebar(app, "lee@example.com", erin_ticket)
    boxes = {"customer_id": erin["customer"], "email": "on", "organisation": "on", "tenant": "on"}
    refused = sidebar.post("/verify", boxes)
    assert refused.status_code == 403 and "Tenant ID: ticket says T-9999" in seen(refused)


def test_a_claim_on_any_of_the_customers_open_tickets_gates_her_refunds(
    app, people, erin, session_factory, new_ticket
):
    """Erin has an open unused-module ticket; on her other ticket (category other) the same
    charge still needs the account manager, and a lead for the $500 limit."""
    new_ticket(ERIN.email, "unused_module", stripe_customer_id=erin["customer"])
    other = new_ticket(ERIN.email, "other")
    sidebar = verified_sidebar(app, "ann@example.com", other, erin["customer"])
    _, page, intent = refund_preview(sidebar, erin["module"], "800.00")
    assert intent is not None
    assert "account manager" in page and "Support Lead" in page
    _, page, _ = refund_preview(sidebar, erin["small"], "49.00")
    assert "Refunds for unused modules need the account manager" in page


def test_card_not_recognised_elsewhere_waits_for_security(
    app, people, erin, session_factory, stripe_client, run_worker, new_ticket
):
    """A card-not-recognised claim on another ticket of hers: Security clears any refund."""
    new_ticket(ERIN.email, "card_not_recognized", stripe_customer_id=erin["customer"])
    other = new_ticket(ERIN.email, "other")
    ann = verified_sidebar(app, "ann@example.com", other, erin["customer"])
    _, page, intent = refund_preview(ann, erin["small"], "49.00", reason="duplicate")
    assert "No refund until Security clears it" in page
    answer = ann.confirm(intent)
    run_worker()
    assert refunds(stripe_client, erin["small"]) == []
    lee = open_sidebar(app, "lee@example.com", other)
    assert lee.post(
        f"/actions/{action_id(answer)}/decision", {"decision": "approve"}
    ).status_code == (403)
    sam = open_sidebar(app, "sam@example.com", other)
    sam.post(f"/actions/{action_id(answer)}/decision", {"decision": "approve"})
    run_worker()
    assert len(refunds(stripe_client, erin["small"])) == 1


# --- split refunds ----------------------------------------------------------------------


def test_an_800_refund_as_two_400s_needs_a_lead_for_the_second(
    app, people, erin, session_factory, stripe_client, run_worker, new_ticket
):
    """The first $400 runs; the second, queued or after the first landed, needs a lead."""
    erin_ticket = new_ticket(ERIN.email, "refund_request")
    ann = verified_sidebar(app, "ann@example.com", erin_ticket, erin["customer"])
    _, page, first = refund_preview(ann, erin["module"], "400.00")
    assert "Within the $500.00 refund limit" in page
    ann.confirm(first)
    # While the first waits for a worker...
    _, page, _ = refund_preview(ann, erin["module"], "400.00")
    assert "this charge would have $800.00 back" in page and "Request approval" in page
    run_worker()
    assert [r.amount for r in refunds(stripe_client, erin["module"])] == [40000]
    # ...and after it landed.
    _, page, second = refund_preview(ann, erin["module"], "400.00")
    assert "this charge would have $800.00 back" in page
    answer = ann.confirm(second)
    assert "Waiting for approval by the Support Lead" in seen(answer)
    run_worker()
    assert len(refunds(stripe_client, erin["module"])) == 1


def test_refunds_split_across_charges_count_for_the_customer(
    app, people, stripe_client, rt, session_factory, run_worker, new_ticket
):
    """$400 on one charge and $200 on another: over the $500 a customer may have back in 30
    days without a lead."""
    customer = create_customer(stripe_client, ERIN)
    base = rt.settings.stripe_api_base
    one = create_charge(stripe_client, base, customer, 40000, "Seat pack", days_ago=1)
    two = create_charge(stripe_client, base, customer, 20000, "Add-on", days_ago=1)
    erin_ticket = new_ticket(ERIN.email, "refund_request")
    ann = verified_sidebar(app, "ann@example.com", erin_ticket, customer)
    _, _, first = refund_preview(ann, one, "400.00")
    ann.confirm(first)
    run_worker()
    _, page, _ = refund_preview(ann, two, "200.00")
    assert "This customer would have $600.00 refunded in 30 days" in page


# --- comps and free time ----------------------------------------------------------------


@pytest.fixture
def erin_subscribed(stripe_client, rt):
    customer = create_customer(stripe_client, ERIN)
    return customer, create_subscription(
        stripe_client, rt.settings.stripe_api_base, customer, "Pro", 4900
    )


def test_a_twelve_month_comp_needs_a_lead(
    app, people, erin_subscribed, session_factory, new_ticket
):
    customer, sub = erin_subscribed
    erin_ticket = new_ticket(ERIN.email, "general_dissatisfaction")
    ann = verified_sidebar(app, "ann@example.com", erin_ticket, customer)
    _, page, _ = ann.preview(kind="comp_coupon", subscription_id=sub, months="12")
    assert "A comp of 12 months is more than the 1" in page and "Request approval" in page
    _, page, _ = ann.preview(kind="comp_coupon", subscription_id=sub, months="1")
    assert "Within the comp and free-time limits" in page


def test_repeated_trial_extensions_need_a_lead_after_the_first(
    app, people, erin_subscribed, session_factory, run_worker, stripe_client, new_ticket
):
    """Three +30-day extensions in a row: the first runs, the next one waits for a lead, and a
    +365 days never runs alone."""
    customer, sub = erin_subscribed
    erin_ticket = new_ticket(ERIN.email, "other")
    ann = verified_sidebar(app, "ann@example.com", erin_ticket, customer)
    _, page, _ = ann.preview(kind="extend_trial", subscription_id=sub, days="365")
    assert "365 free days is more than the 30" in page
    _, page, first = ann.preview(kind="extend_trial", subscription_id=sub, days="30")
    assert "Within the comp and free-time limits" in page
    ann.confirm(first)
    run_worker()
    _, page, second = ann.preview(kind="extend_trial", subscription_id=sub, days="30")
    assert "already had 1 comp(s) or free time" in page
    assert "Waiting for approval by the Support Lead" in seen(ann.confirm(second))
    run_worker()
    with session_scope(session_factory) as session:
        statuses = session.scalars(
            select(Action.status).where(Action.kind == "extend_trial").order_by(Action.id)
        ).all()
    assert statuses == ["succeeded", "pending_approval"]


# --- where confirmations and links go ---------------------------------------------------


def test_a_confirmation_never_goes_to_an_address_only_the_ticket_gave(
    app, people, stripe_client, rt, session_factory, run_worker, outbox, new_ticket
):
    """A Stripe customer without an email: the refund is issued, but no confirmation goes to
    the ticket's requester, the ticket stays open for an agent, and no billing link is sent."""
    customer = create_customer(stripe_client, ERIN)
    stripe_client.v1.customers.update(customer, params={"email": ""})  # Stripe unsets it
    assert not stripe_client.v1.customers.retrieve(customer).email
    charge = create_charge(stripe_client, rt.settings.stripe_api_base, customer, 4900, "Pro")
    requester = "someone@elsewhere.test"
    erin_ticket = new_ticket(
        requester,
        "duplicate_charge",
        stripe_customer_id=customer,
        customer_match="explicit",
        tenant_id=ERIN.tenant_id,
    )
    lee = Reading(open_sidebar(app, "lee@example.com", erin_ticket))
    _, page, intent = lee.preview(
        kind="refund", charge_id=charge, reason="duplicate", confirm_and_close="on"
    )
    assert "no confirmation is sent" in page
    lee.confirm(intent)
    _, page, link = lee.preview(kind="send_update_card_link")
    assert link is None and "own address" in page
    run_worker()
    assert len(refunds(stripe_client, charge)) == 1
    assert outbox == []
    with session_scope(session_factory) as session:
        assert session.get(Ticket, erin_ticket).status == "open"
