"""The built-in helpdesk in a real browser: Debian's Chromium, driven by Playwright, against
the live server with a worker draining the queues in the background (the fixtures of
tests/test_browser_sidebar.py). An agent replies and sees it in the thread, assigns, sets the
status; a Finance person's inbox leads with what waits for them. Every page fails its test if a
dialog opens, a script throws, or a request leaves the live server's origin.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import test_browser_sidebar as sidebar_browser
from playwright.sync_api import Page, expect
from sqlalchemy import select
from test_browser_sidebar import ALICE, SIDEBAR, WORK_TIMEOUT, make_ticket, png_size, sign_in

from core import agents
from core.db import session_scope
from core.db.models import Escalation, Ticket, TicketMessage, utcnow
from core.domain import Role
from helpdesk_app.demo.seed import create_charge, create_customer

pytestmark = pytest.mark.browser

# The sidebar's browser fixtures, shared by name (pytest finds fixtures in this module's
# namespace): the live server, the background worker, Chromium and its watched pages.
browser = sidebar_browser.browser
live_server = sidebar_browser.live_server
worker = sidebar_browser.worker
open_page = sidebar_browser.open_page
page = sidebar_browser.page
output_dir = sidebar_browser.output_dir

PASSWORD = "correct horse battery"
ANN, BEA, FIN = "ann@example.com", "bea@example.com", "fin@example.com"
CUSTOMER_MESSAGE_ID = "<charged-twice@alice.example.com>"


@pytest.fixture
def people(session_factory) -> None:
    """An agent, a second agent and a Finance person, signing in with a password."""
    with session_scope(session_factory) as session:
        for email, name, role in [
            (ANN, "Ann Agent", Role.AGENT),
            (BEA, "Bea Agent", Role.AGENT),
            (FIN, "Fin Finance", Role.FINANCE),
        ]:
            agents.save_agent(session, email=email, name=name, role=role, password=PASSWORD)


@pytest.fixture
def alice_ticket(session_factory, people) -> int:
    """Alice's ticket, her email (with its Message-ID) the first message."""
    ticket_id = make_ticket(session_factory, ALICE, "Charged twice", "I was charged twice today.")
    with session_scope(session_factory) as session:
        first = session.scalar(select(TicketMessage).where(TicketMessage.ticket_id == ticket_id))
        first.message_id = CUSTOMER_MESSAGE_ID
    return ticket_id


def open_ticket(page: Page, base: str, ticket_id: int) -> None:
    """The ticket page, once its thread and sidebar frame are there."""
    page.goto(f"{base}/tickets/{ticket_id}")
    expect(page.locator("#ticket-live .meta")).to_be_visible()


def escalate(session_factory, ticket_id: int, target: str, due_in: timedelta) -> None:
    """An open escalation to a team, due ``due_in`` from now (negative: breached)."""
    with session_scope(session_factory) as session:
        session.add(
            Escalation(
                ticket_id=ticket_id,
                target=target,
                reason="Per the playbook",
                requested_by="mail-agent",
                due_at=utcnow() + due_in,
            )
        )


def test_an_agent_replies_and_sees_it_in_the_thread(
    page, live_server, worker, alice_ticket, outbox
):
    sign_in(page, live_server, ANN)
    open_ticket(page, live_server, alice_ticket)
    expect(page.get_by_role("tab", name="Reply")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("textbox", name="Internal note")).to_be_hidden()

    page.get_by_role("textbox", name="Reply to the customer").fill(
        "Hi Alice,\n\nWe refunded the second charge."
    )
    page.get_by_role("button", name="Send", exact=True).click()

    expect(page.locator(".notice-ok")).to_contain_text(f"Reply on its way to {ALICE.email}")
    sent = page.locator("article.message-outbound:not(.message-sending) .body")
    expect(sent).to_contain_text("We refunded the second charge.", timeout=WORK_TIMEOUT)
    expect(page.locator("article.message-sending")).to_have_count(0)
    worker.settle()
    assert len(outbox) == 1
    assert outbox[0]["To"] == ALICE.email and outbox[0]["In-Reply-To"] == CUSTOMER_MESSAGE_ID


def test_an_agent_writes_a_note_assigns_and_sets_the_status(
    page, live_server, alice_ticket, session_factory
):
    sign_in(page, live_server, ANN)
    open_ticket(page, live_server, alice_ticket)
    meta = page.locator("#ticket-live .meta")

    page.get_by_role("tab", name="Internal note").click()
    expect(page.get_by_role("textbox", name="Reply to the customer")).to_be_hidden()
    page.get_by_role("textbox", name="Internal note").fill("Bank confirmed the duplicate.")
    page.get_by_role("button", name="Add note").click()
    notes = page.locator("article.message-note .body")
    expect(notes.filter(has_text="Bank confirmed the duplicate.")).to_have_count(1)

    page.get_by_label("Assignee").select_option(label="Bea Agent")
    page.get_by_role("button", name="Assign").click()
    expect(meta.locator(".assignee")).to_have_text(f"Assigned to {BEA}")
    page.get_by_role("button", name="Take it").click()
    expect(meta.locator(".assignee")).to_have_text(f"Assigned to {ANN}")
    expect(page.get_by_role("button", name="Take it")).to_have_count(0)

    page.get_by_label("Team queue").select_option("finance")
    page.get_by_role("button", name="Move").click()
    expect(meta.locator(".tag-team")).to_have_text("Finance queue")

    page.get_by_label("Status").select_option("pending")
    page.get_by_role("button", name="Set status").click()
    expect(meta.locator(".status")).to_have_text("Pending")
    page.get_by_label("Status").select_option("solved")
    page.get_by_role("button", name="Set status").click()
    expect(meta.locator(".status")).to_have_text("Solved")

    expect(notes.filter(has_text=re.compile(r"^Status: pending → solved, by "))).to_have_count(1)
    expect(notes.filter(has_text=f"Assigned to Bea Agent <{BEA}>")).to_have_count(1)
    with session_scope(session_factory) as session:
        ticket = session.get(Ticket, alice_ticket)
        assert (ticket.status, ticket.assignee, ticket.team) == ("solved", ANN, "finance")


def test_an_agent_cannot_take_a_chargeback_out_of_its_category(
    page, live_server, people, session_factory
):
    ticket_id = make_ticket(session_factory, ALICE, "I disputed it", "I told my bank.")
    with session_scope(session_factory) as session:
        session.get(Ticket, ticket_id).category = "chargeback"
    sign_in(page, live_server, ANN)
    open_ticket(page, live_server, ticket_id)
    expect(page.locator(".properties .hint-locked")).to_contain_text("only Finance or an admin")
    page.get_by_label("Category").select_option("refund_request")
    page.get_by_role("button", name="Correct").click()
    expect(page.locator(".notice-error")).to_contain_text("only Finance or an admin may move it")
    with session_scope(session_factory) as session:
        assert session.get(Ticket, ticket_id).category == "chargeback"


def test_the_thread_shows_a_sidebar_action_without_a_reload(
    page, live_server, worker, alice_ticket, stripe_client
):
    create_customer(stripe_client, ALICE)
    sign_in(page, live_server, ANN)
    open_ticket(page, live_server, alice_ticket)
    page.evaluate("() => { window.__samePage = true; }")
    sidebar = page.frame_locator(SIDEBAR)
    sidebar.get_by_role("button", name="Note…").click()
    sidebar.get_by_placeholder("Internal note (agents only)").fill("Noted from the sidebar")
    sidebar.get_by_role("button", name="Review").last.click()
    sidebar.get_by_role("button", name="Confirm", exact=True).click()
    expect(sidebar.locator(".action-status")).to_contain_text("Done", timeout=WORK_TIMEOUT)

    note = page.locator("article.message-note .body", has_text="Noted from the sidebar")
    expect(note).to_have_count(1, timeout=WORK_TIMEOUT)
    assert page.evaluate("() => window.__samePage === true"), "the ticket page was reloaded"


@pytest.fixture
def finance_work(session_factory, people) -> dict[str, int]:
    """Tickets escalated to Finance (one breached), one assigned to Ann, one nobody's."""
    made = {
        "later": make_ticket(session_factory, ALICE, "Chargeback notice", "My bank says..."),
        "breached": make_ticket(session_factory, ALICE, "Disputed twice", "Why two disputes?"),
        "ann's": make_ticket(session_factory, ALICE, "Card update", "New card, please."),
        "nobody's": make_ticket(session_factory, ALICE, "Invoice copy", "Could I get it?"),
    }
    escalate(session_factory, made["later"], "finance", timedelta(hours=20))
    escalate(session_factory, made["breached"], "finance", -timedelta(minutes=45))
    with session_scope(session_factory) as session:
        session.get(Ticket, made["ann's"]).assignee = ANN
    return made


def test_waiting_for_me_lists_what_is_theirs_breached_first(open_page, live_server, finance_work):
    fin, _ = open_page()
    sign_in(fin, live_server, FIN)
    rows = fin.locator(".waiting-list tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_have_attribute("data-ticket-id", str(finance_work["breached"]))
    expect(rows.nth(0)).to_have_class(re.compile(r"\brow-breached\b"))
    expect(rows.nth(0).locator(".sla")).to_contain_text(re.compile(r"breached \d+m ago"))
    expect(rows.nth(1)).to_have_attribute("data-ticket-id", str(finance_work["later"]))
    expect(rows.nth(1).locator(".reasons")).to_have_text("Escalated to Finance")

    ann, _ = open_page()
    sign_in(ann, live_server, ANN)
    mine = ann.locator(".waiting-list tbody tr")
    # Hers, and the front line's: the ticket in nobody's hands and no team's queue.
    expect(mine).to_have_count(2)
    nobodys, anns = finance_work["nobody's"], finance_work["ann's"]
    theirs = ann.locator(f'.waiting-list tr[data-ticket-id="{nobodys}"]')
    expect(theirs.locator(".reasons")).to_have_text("Unassigned, in no team's queue")
    mine = ann.locator(f'.waiting-list tr[data-ticket-id="{anns}"]')
    expect(mine.locator(".reasons")).to_have_text("Assigned to you")
    mine.get_by_role("link").click()
    expect(ann.locator("h1")).to_contain_text("Card update")


def test_the_inbox_filters_and_searches(page, live_server, finance_work):
    sign_in(page, live_server, ANN)
    page.get_by_label("SLA").select_option("breached")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator(".all-list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-ticket-id", str(finance_work["breached"]))
    expect(page.locator(".waiting")).to_have_count(0)

    page.get_by_role("link", name="Clear").click()
    page.get_by_label("Search tickets").fill("invoice")
    page.get_by_label("Search tickets").press("Enter")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Invoice copy")


# --- how it looks ------------------------------------------------------------------------------


def test_screenshots_of_waiting_for_me_and_a_ticket_with_a_reply(
    open_page,
    live_server,
    worker,
    finance_work,
    alice_ticket,
    session_factory,
    output_dir,
    stripe_client,
    rt,
):
    customer = create_customer(stripe_client, ALICE)
    base = rt.settings.stripe_api_base
    create_charge(stripe_client, base, customer, 4900, "Pro plan — monthly", days_ago=0.05)
    create_charge(stripe_client, base, customer, 4900, "Pro plan — monthly")
    with session_scope(session_factory) as session:
        session.get(Ticket, alice_ticket).assignee = FIN
        session.get(Ticket, alice_ticket).category = "duplicate_charge"
    fin, _ = open_page(width=1280, height=900)
    sign_in(fin, live_server, FIN)
    expect(fin.locator(".waiting-list tbody tr")).to_have_count(3)
    inbox_png = output_dir / "helpdesk-waiting-for-me-1280.png"
    fin.screenshot(path=inbox_png, full_page=True)

    open_ticket(fin, live_server, alice_ticket)
    fin.get_by_role("textbox", name="Reply to the customer").fill(
        "Hi Alice,\n\nYou were charged twice: we refunded the second charge of $49.00.\n"
        "It reaches your card in 5–10 business days.\n\nFin"
    )
    fin.get_by_role("button", name="Send", exact=True).click()
    sent = fin.locator("article.message-outbound:not(.message-sending)")
    expect(sent).to_have_count(1, timeout=WORK_TIMEOUT)
    expect(fin.frame_locator(SIDEBAR).locator("section.customer h2.name")).to_be_visible()
    ticket_png = output_dir / "helpdesk-ticket-with-reply-1280.png"
    fin.screenshot(path=ticket_png, full_page=True)

    for shot in (inbox_png, ticket_png):
        assert png_size(shot)[0] == 1280
        assert shot.stat().st_size > 20_000, f"{shot} is suspiciously small"
