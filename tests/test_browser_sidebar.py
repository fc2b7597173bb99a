"""The sidebar in a real browser: Debian's Chromium, driven by Playwright, on a live server.

The app runs on a werkzeug server on loopback and an RQ worker drains the queues in a
background thread, so the browser sees confirmations, polling and refreshed panels exactly as
an agent does. Every page fails its test if a dialog opens, a script throws, or a request
leaves the live server's origin. Chromium is not optional here: CI installs it (.ci/run).
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, FrameLocator, Page, expect, sync_playwright
from sqlalchemy import func, select
from werkzeug.serving import make_server

from core import agents
from core.db import session_scope
from core.db.models import Action, Ticket, TicketMessage
from core.domain import Role
from helpdesk_app import create_app
from helpdesk_app.demo.seed import (
    DemoCustomer,
    create_charge,
    create_customer,
    create_declined_charge,
    create_subscription,
    open_dispute,
)
from jobs import queues
from jobs.runtime import Runtime
from jobs.worker import make_worker

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
PASSWORD = "correct horse battery"
ANN, LEE = "ann@example.com", "lee@example.com"
ALICE = DemoCustomer("Alice Martin", "alice@example.com", "T-1042", "Northwind", "4242424242424242")
SIDEBAR = 'iframe[title="Billing sidebar"]'
# Long enough for a worker pass (every 0.2 s) plus the sidebar's 0.7 s poll, on a slow CI box.
WORK_TIMEOUT = 15_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- servers ------------------------------------------------------------------------------


@pytest.fixture
def live_server(settings, rt) -> Iterator[str]:
    """The web app on a free loopback port, serving requests in threads; yields its origin."""
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)
    server.server_close()


class BackgroundWorker:
    """Drains every queue every 0.2 s in a thread until stopped, as a worker process would:
    the production worker class, which times jobs out with a timer thread off the main thread
    and leaves signals to the main thread (the fixture stops it with an event)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.stop = threading.Event()
        self.passes = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="rq-worker", daemon=True)

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                make_worker(self.rt).work(burst=True, logging_level="WARNING")
                self.passes += 1
                self.stop.wait(0.2)
        except BaseException as exc:  # surfaced by the fixture: a dead worker fails the test
            self.error = exc

    def settle(self, timeout: float = WORK_TIMEOUT / 1000) -> None:
        """Wait until the queues are empty and a whole pass has run since: nothing left to do."""
        deadline = time.monotonic() + timeout
        while any(self.rt.queue(n).count for n in queues.ALL_QUEUES):
            assert time.monotonic() < deadline, "the worker did not empty the queues"
            time.sleep(0.05)
        target = self.passes + 2
        while self.passes < target:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, "the worker did not finish its pass"
            time.sleep(0.05)


@pytest.fixture
def worker(rt: Runtime) -> Iterator[BackgroundWorker]:
    """An RQ worker in a background thread for the length of the test."""
    background = BackgroundWorker(rt)
    background.thread.start()
    yield background
    background.stop.set()
    background.thread.join(10)
    assert not background.thread.is_alive(), "the worker thread did not stop"
    assert background.error is None, f"the worker thread died: {background.error!r}"


# --- the browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless; missing Chromium is a failure, never a skip."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make test does, as root)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@dataclasses.dataclass
class Watched:
    """What a page did that it must not: dialogs, script errors, requests to other origins."""

    dialogs: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    foreign_requests: list[str] = dataclasses.field(default_factory=list)

    def assert_clean(self) -> None:
        """Fail if anything happened."""
        assert dataclasses.asdict(self) == dataclasses.asdict(Watched())


@pytest.fixture
def open_page(browser: Browser, live_server: str) -> Iterator[Callable[..., tuple[Page, Watched]]]:
    """Open a page in a fresh browser context (its own cookies), watched until the test ends."""
    opened: list[tuple[Page, Watched]] = []

    def opener(width: int = 1280, height: int = 900) -> tuple[Page, Watched]:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(10_000)
        page = context.new_page()
        watched = Watched()

        def on_dialog(dialog) -> None:
            watched.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        def on_request(request) -> None:
            url = request.url
            if not url.startswith(("data:", "blob:", "about:")) and not url.startswith(
                live_server + "/"
            ):
                watched.foreign_requests.append(url)

        page.on("dialog", on_dialog)
        page.on("pageerror", lambda error: watched.errors.append(str(error)))
        page.on("request", on_request)
        opened.append((page, watched))
        return page, watched

    yield opener
    for page, _ in opened:
        page.context.close()
    for _, watched in opened:
        watched.assert_clean()


@pytest.fixture
def page(open_page) -> Page:
    """A watched page at desktop size."""
    return open_page()[0]


# --- people, tickets, customers -----------------------------------------------------------


@pytest.fixture
def people(session_factory) -> None:
    """An agent and a Support Lead who sign in with a password."""
    with session_scope(session_factory) as session:
        agents.save_agent(session, email=ANN, name="Ann Agent", role=Role.AGENT, password=PASSWORD)
        agents.save_agent(
            session, email=LEE, name="Lee Lead", role=Role.SUPPORT_LEAD, password=PASSWORD
        )


def make_ticket(session_factory, who: DemoCustomer, subject: str, body: str) -> int:
    """A built-in helpdesk ticket with the customer's email as its first message."""
    with session_scope(session_factory) as session:
        ticket = Ticket(
            subject=subject,
            requester_email=who.email,
            requester_name=who.name,
            status="open",
        )
        ticket.messages.append(
            TicketMessage(kind="inbound", author=who.email, body=body, message_id=None)
        )
        session.add(ticket)
        session.flush()
        return ticket.id


@pytest.fixture
def alice(stripe_client, rt) -> dict[str, str]:
    """Alice: two $49 charges an hour apart today, and an $800 charge last week."""
    customer = create_customer(stripe_client, ALICE)
    base = rt.settings.stripe_api_base
    return {
        "customer": customer,
        "first": create_charge(stripe_client, base, customer, 4900, "Pro", days_ago=0.05),
        "second": create_charge(stripe_client, base, customer, 4900, "Pro"),
        "big": create_charge(stripe_client, base, customer, 80000, "Enterprise", days_ago=7),
    }


@pytest.fixture
def alice_ticket(session_factory, people, alice) -> int:
    """Alice's ticket about being charged twice."""
    return make_ticket(session_factory, ALICE, "Charged twice", "I was charged $49 twice today.")


def refunds(stripe_client, charge: str) -> list:
    """The refunds Stripe holds for a charge."""
    return stripe_client.v1.refunds.list(params={"charge": charge}).data


def count_refund_actions(session_factory) -> int:
    """Refund steps in the database (a plan's confirmation and close are steps too)."""
    with session_scope(session_factory) as session:
        return session.scalar(
            select(func.count()).select_from(Action).where(Action.kind == "refund")
        )


# --- driving the UI -----------------------------------------------------------------------


def sign_in(page: Page, base: str, email: str) -> None:
    """Sign in to the built-in helpdesk through its form."""
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".whoami")).to_contain_text("Sign out")


def open_ticket(page: Page, base: str, ticket_id: int) -> FrameLocator:
    """The ticket page, and the sidebar in its iframe once it has loaded."""
    page.goto(f"{base}/tickets/{ticket_id}")
    sidebar = page.frame_locator(SIDEBAR)
    expect(sidebar.locator("section.customer h2.name")).to_be_visible()
    return sidebar


def confirm_identity(sidebar: FrameLocator) -> None:
    """Tick the playbook's three identity checks and confirm them."""
    badge = sidebar.locator("section.customer .badge")
    expect(badge).to_have_text("Not verified")
    checklist = sidebar.locator("form.checklist")
    for name in ("email", "organisation", "tenant"):
        checklist.locator(f'input[name="{name}"]').check()
    checklist.get_by_role("button", name="Confirm identity").click()
    expect(badge).to_have_text("Verified")


def review_refund(sidebar: FrameLocator, charge_id: str, reason: str | None = None):
    """Open a charge's refund form and ask for the confirmation; returns the sheet."""
    charge = sidebar.locator(f'li.charge[data-charge-id="{charge_id}"]')
    charge.get_by_role("button", name="Refund…").click()
    form = charge.locator("form.inline-form")
    expect(form).to_be_visible()
    if reason:
        form.locator('select[name="reason"]').select_option(reason)
    form.get_by_role("button", name="Review refund").click()
    sheet = sidebar.locator("#sheet")
    expect(sheet).to_be_visible()
    return sheet


# --- the flows ----------------------------------------------------------------------------


def test_an_agent_refunds_a_duplicate_through_the_confirmation(
    page, live_server, worker, alice_ticket, alice, stripe_client
):
    sign_in(page, live_server, ANN)
    sidebar = open_ticket(page, live_server, alice_ticket)
    confirm_identity(sidebar)
    newer = sidebar.locator(f'li.charge[data-charge-id="{alice["second"]}"]')
    expect(newer.locator(".pill-dup")).to_have_text("Duplicate?")
    older = sidebar.locator(f'li.charge[data-charge-id="{alice["first"]}"]')
    expect(older.locator(".pill-dup")).to_have_count(0)
    expect(newer.locator('select[name="reason"]')).to_have_value("duplicate")

    sheet = review_refund(sidebar, alice["second"])
    expect(sheet.locator(".amount")).to_have_text("$49.00")
    expect(sheet.locator(".policy")).to_contain_text("Within the $500.00 refund limit")
    confirm = sheet.get_by_role("button", name="Confirm", exact=True)
    expect(confirm).to_be_focused()
    confirm.click()

    expect(sheet.locator(".action-status")).to_contain_text("Done", timeout=WORK_TIMEOUT)
    expect(newer.locator(".pill-refunded")).to_have_text("Refunded")
    expect(older.locator(".pill-ok")).to_have_text("Paid")
    issued = refunds(stripe_client, alice["second"])
    assert [(r.amount, r.reason) for r in issued] == [(4900, "duplicate")]
    expect(sheet).to_contain_text(issued[0].id)
    assert refunds(stripe_client, alice["first"]) == []


# Two confirmations of one intent sent at once, as a replaying extension or a second tab would.
REPLAY_CONFIRM = """async () => {
  const token = document.querySelector('meta[name="sidebar-token"]').content;
  const form = document.querySelector('#sheet form[data-remote]');
  const body = new URLSearchParams({intent: form.querySelector('input[name="intent"]').value});
  const send = () => fetch(form.action, {
    method: "POST", body, credentials: "omit", headers: {Authorization: "Bearer " + token},
  }).then(async (r) => ({status: r.status, html: await r.text()}));
  window.__replayed = Promise.all([send(), send()]);
}"""


def test_a_double_click_and_replayed_confirmations_make_one_refund(
    page, live_server, worker, alice_ticket, alice, stripe_client, session_factory
):
    sign_in(page, live_server, ANN)
    sidebar = open_ticket(page, live_server, alice_ticket)
    confirm_identity(sidebar)
    sheet = review_refund(sidebar, alice["second"])
    frame = page.locator(SIDEBAR).element_handle().content_frame()
    assert frame is not None

    frame.evaluate(REPLAY_CONFIRM)  # in flight while the agent double-clicks
    sheet.get_by_role("button", name="Confirm", exact=True).dblclick()
    replayed = frame.evaluate("() => window.__replayed")

    assert [r["status"] for r in replayed] == [200, 200]
    (action_id,) = {re.search(r'data-action-id="(\d+)"', r["html"])[1] for r in replayed}
    expect(sheet.locator(".action-status")).to_contain_text("Done", timeout=WORK_TIMEOUT)
    expect(sheet.locator(f'[data-action-id="{action_id}"]')).to_have_count(1)
    worker.settle()
    issued = refunds(stripe_client, alice["second"])
    assert [(r.amount, r.reason) for r in issued] == [(4900, "duplicate")]
    assert count_refund_actions(session_factory) == 1


def test_a_large_refund_waits_for_a_lead_who_approves_it(
    open_page, live_server, worker, alice_ticket, alice, stripe_client
):
    ann, _ = open_page()
    sign_in(ann, live_server, ANN)
    sidebar = open_ticket(ann, live_server, alice_ticket)
    confirm_identity(sidebar)
    sheet = review_refund(sidebar, alice["big"], reason="requested_by_customer")
    expect(sheet.locator(".amount")).to_have_text("$800.00")
    expect(sheet).to_contain_text("Confirming sends it to the Support Lead for approval")
    expect(sheet.get_by_role("button", name="Confirm", exact=True)).to_have_count(0)
    sheet.get_by_role("button", name="Request approval").click()
    expect(sheet.locator(".action-status")).to_contain_text(
        "Waiting for approval by the Support Lead"
    )
    worker.settle()
    assert refunds(stripe_client, alice["big"]) == []

    lee, _ = open_page()
    sign_in(lee, live_server, LEE)
    lead_sidebar = open_ticket(lee, live_server, alice_ticket)
    card = lead_sidebar.locator("section.approval[data-approval-id]")
    expect(card).to_contain_text("$800.00")
    expect(card).to_contain_text(f"Requested by {ANN}")
    card.get_by_placeholder("Note for the ticket (optional)").fill("Long-time customer")
    card.get_by_role("button", name="Approve").click()
    expect(lead_sidebar.locator("section.approval")).to_have_count(0)

    worker.settle()
    issued = refunds(stripe_client, alice["big"])
    assert [(r.amount, r.reason) for r in issued] == [(800_00, "requested_by_customer")]
    lee.reload()
    notes = lee.locator("article.message-note .body")
    approval = notes.filter(has_text=re.compile(rf"approved by {re.escape(LEE)}"))
    expect(approval).to_have_count(1)
    expect(approval).to_contain_text("Long-time customer")
    expect(notes.filter(has_text=re.compile("^Approval needed"))).to_have_count(1)
    expect(lead_sidebar.locator(f'li.charge[data-charge-id="{alice["big"]}"]')).to_contain_text(
        "Refunded"
    )


MALLORY = DemoCustomer(
    """<img src=x onerror="fetch('http://evil.invalid/x')"><script>alert(1)</script>""",
    "mallory@example.com",
    "T-666",
    "<b>Evil</b> Corp",
    "4242424242424242",
)
MALICIOUS_BODY = "Refund please <img src=x onerror=alert(2)> and <script>alert(3)</script> thanks"


def test_customer_and_email_content_stays_inert_text(
    open_page, live_server, worker, session_factory, people, stripe_client, rt
):
    customer = create_customer(stripe_client, MALLORY)
    charge = create_charge(stripe_client, rt.settings.stripe_api_base, customer, 4900, "Pro")
    ticket_id = make_ticket(session_factory, MALLORY, "<script>alert(4)</script>", MALICIOUS_BODY)
    page, watched = open_page()
    sign_in(page, live_server, ANN)
    sidebar = open_ticket(page, live_server, ticket_id)

    expect(sidebar.locator("section.customer h2.name")).to_have_text(MALLORY.name)
    expect(page.locator("article.message-inbound .body")).to_have_text(MALICIOUS_BODY)
    expect(page.locator("h1")).to_contain_text("<script>alert(4)</script>")
    confirm_identity(sidebar)
    sheet = review_refund(sidebar, charge)
    expect(sheet).to_contain_text("$49.00")
    expect(sheet.get_by_role("button", name="Confirm", exact=True)).to_be_visible()
    expect(sidebar.get_by_text("<script>alert(1)</script>", exact=False).first).to_be_visible()

    for root in (page, sidebar):
        expect(root.locator("img")).to_have_count(0)
        expect(root.locator("body script:not([src])")).to_have_count(0)
        expect(root.locator("b")).to_have_count(0)
    watched.assert_clean()


# --- how it looks -------------------------------------------------------------------------


@pytest.fixture
def output_dir() -> Path:
    """Where screenshots go: BILLING_DESK_TEST_OUTPUT, else test-output/ in the repository."""
    configured = os.environ.get("BILLING_DESK_TEST_OUTPUT")
    directory = Path(configured) if configured else Path(__file__).parents[1] / "test-output"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file, from its header."""
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_MAGIC and header[12:16] == b"IHDR", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


@pytest.fixture
def rich_customer(stripe_client, rt) -> dict[str, str]:
    """Much of what the sidebar shows: subscription, duplicate, hold, decline, dispute, refund."""
    base = rt.settings.stripe_api_base
    customer = create_customer(stripe_client, ALICE)
    create_subscription(stripe_client, base, customer, "Pro", 4900, days_ago=0.05)
    # The renewal was taken an hour ago; this takes it again.
    doubled = create_charge(stripe_client, base, customer, 4900, "Pro plan — monthly")
    create_charge(stripe_client, base, customer, 12000, "Seat top-up (pending)", capture=False)
    disputed = create_charge(stripe_client, base, customer, 2900, "Add-on", days_ago=20)
    open_dispute(base, disputed)
    partial = create_charge(stripe_client, base, customer, 9900, "Annual upgrade", days_ago=40)
    stripe_client.v1.refunds.create(params={"charge": partial, "amount": 2500})
    create_declined_charge(stripe_client, customer, 4900, "Pro plan — monthly")
    return {"customer": customer, "doubled": doubled}


def test_screenshots_of_the_sidebar_at_320_and_the_ticket_at_1280(
    open_page, live_server, worker, people, session_factory, rich_customer, output_dir
):
    ticket_id = make_ticket(
        session_factory, ALICE, "Charged twice", "Hi, I was charged twice for Pro today."
    )
    narrow, _ = open_page(width=320, height=1400)
    sign_in(narrow, live_server, ANN)
    narrow.goto(f"{live_server}/sidebar/tickets/{ticket_id}")
    for shown in ("Subscription", "Failed payments", "Disputes", "Charges"):
        expect(narrow.locator("section.card h2", has_text=shown)).to_be_visible()
    doubled = narrow.locator(f'li.charge[data-charge-id="{rich_customer["doubled"]}"]')
    expect(narrow.locator(".pill-dup")).to_have_count(1)
    expect(doubled.locator(".pill-dup")).to_have_text("Duplicate?")
    expect(narrow.locator(".pill-hold")).to_have_count(1)
    expect(narrow.locator(".failed .mono")).to_have_text("insufficient_funds")
    overflow = narrow.evaluate("() => document.documentElement.scrollWidth")
    assert overflow <= 320, f"the sidebar is {overflow}px wide at a 320px viewport"
    sidebar_png = output_dir / "sidebar-320.png"
    narrow.screenshot(path=sidebar_png, full_page=True)

    wide, _ = open_page(width=1280, height=900)
    sign_in(wide, live_server, ANN)
    open_ticket(wide, live_server, ticket_id)
    ticket_png = output_dir / "ticket-1280.png"
    wide.screenshot(path=ticket_png, full_page=True)

    assert png_size(sidebar_png)[0] == 320 and png_size(sidebar_png)[1] >= 1400
    assert png_size(ticket_png)[0] == 1280
    for shot in (sidebar_png, ticket_png):
        assert shot.stat().st_size > 20_000, f"{shot} is suspiciously small"
