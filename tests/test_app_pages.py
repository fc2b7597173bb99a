"""The built-in helpdesk pages and the sidebar, through Flask's test client."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from core import agents
from core.db import session_scope
from core.domain import MessageKind, Role
from core.helpdesks import LocalHelpdesk
from helpdesk_app import create_app
from helpdesk_app.demo.seed import DemoCustomer, create_charge, create_customer

XSS = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
PASSWORD = "correct horse battery"


def sign_in(client, email, password=PASSWORD, next_path=None, **kw):
    """Sign in through the login form, CSRF token and all (``next_path`` as Flask will read it)."""
    page = client.get("/login", **kw).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    url = "/login" + (f"?next={quote(next_path, safe='')}" if next_path else "")
    form = {"csrf_token": csrf, "email": email, "password": password}
    return client.post(url, data=form, **kw)


@pytest.fixture
def anonymous(settings, db_engine, stripe_client):
    app = create_app(settings)
    app.config["TESTING"] = True
    return app.test_client()


@pytest.fixture
def client(anonymous, session_factory):
    with session_scope(session_factory) as session:
        agents.save_agent(
            session, email="ann@example.com", name="Ann Agent", role=Role.AGENT, password=PASSWORD
        )
    assert sign_in(anonymous, "ann@example.com").status_code == 302
    return anonymous


@pytest.fixture
def ticket_id(session_factory):
    with session_scope(session_factory) as session:
        desk = LocalHelpdesk(session)
        ticket = desk.open_ticket(
            subject=f"Charged twice {XSS}", requester_email="alice@example.com", requester_name=XSS
        )
        desk.add_message(ticket, kind=MessageKind.INBOUND, author="alice@example.com", body=XSS)
        return ticket


def test_inbox_lists_tickets_with_everything_escaped(client, ticket_id):
    response = client.get("/")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert f'data-ticket-id="{ticket_id}"' in page and "Charged twice" in page
    assert "<script>alert(2)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;" in page


def test_ticket_page_frames_the_sidebar_and_escapes_the_thread(client, ticket_id):
    page = client.get(f"/tickets/{ticket_id}").get_data(as_text=True)
    assert f'src="/sidebar/tickets/{ticket_id}"' in page
    assert "<script>alert(2)" not in page


def test_sidebar_shows_the_requesters_customer_and_charges(
    client, ticket_id, stripe_client, settings
):
    who = DemoCustomer(XSS, "alice@example.com", "T-1", "Org", "4242424242424242")
    customer = create_customer(stripe_client, who)
    charge = create_charge(stripe_client, settings.stripe_api_base, customer, 4900, "Pro plan")
    page = client.get(f"/sidebar/tickets/{ticket_id}").get_data(as_text=True)
    assert customer in page and f'data-charge-id="{charge}"' in page
    assert "$49.00" in page and "4242" in page and "4242424242424242" not in page
    assert "<img src=x" not in page


def test_sidebar_says_so_when_no_customer_matches(client, ticket_id):
    page = client.get(f"/sidebar/tickets/{ticket_id}").get_data(as_text=True)
    assert "No Stripe customer has the email alice@example.com" in page


def test_security_headers_and_404(client):
    response = client.get("/tickets/999999")
    assert response.status_code == 404
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'self'" in csp and "script-src 'self'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_stripe_trouble_is_a_calm_message_in_the_sidebar(settings, client, ticket_id):
    broken = settings.__class__(**{**settings.__dict__, "stripe_api_base": "http://127.0.0.1:9"})
    other = create_app(broken).test_client()
    sign_in(other, "ann@example.com")
    page = other.get(f"/sidebar/tickets/{ticket_id}")
    assert page.status_code == 200
    assert "Stripe is unavailable right now" in page.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/", "/tickets/1", "/sidebar/tickets/1"])
def test_pages_need_a_signed_in_agent(anonymous, path):
    response = anonymous.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_wrong_password_and_unknown_email_get_the_same_answer(anonymous, client):
    wrong = sign_in(anonymous, "ann@example.com", "not the password")
    unknown = sign_in(anonymous, "nobody@example.com")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong email or password." in wrong.get_data(as_text=True)


def test_sign_in_refuses_a_form_without_its_csrf_token(anonymous, client):
    response = anonymous.post("/login", data={"email": "ann@example.com", "password": PASSWORD})
    assert response.status_code == 400


# Each as Flask hands it to the view, after decoding the query string once.
OFF_SITE_TARGETS = [
    "https://evil.example/",
    "//evil.example/x",
    "/\t/evil.example/x",  # "/%09/evil.example/x": browsers drop the tab, leaving //evil
    "/\n/evil.example/x",
    "/\r/evil.example/x",
    "/\r\n/evil.example/x",
    "/\\evil.example/x",  # browsers read the backslash as a slash
    "\\\\evil.example/x",
    "/\\/evil.example/x",
    "///evil.example/x",  # "/%2F%2Fevil.example/x", decoded
    "////evil.example/x",
    "https:evil.example",
    "http:/evil.example",
    "javascript:alert(1)",
    "evil.example/x",
    "/ /evil.example",
    "/\x00/evil.example",
    "/\x0b/evil.example",
    "/\x7f/evil.example",
    "/\u00a0/evil.example",
    "/\u2028/evil.example",
    "/\u200b/evil.example",
    " /tickets/3",
]
LOCAL_TARGETS = ["/tickets/3?x=1", "/", "/quarantine", "/tickets/3?next=//evil.example"]


@pytest.mark.parametrize("target", OFF_SITE_TARGETS)
def test_sign_in_never_redirects_off_site(anonymous, client, target):
    response = sign_in(anonymous, "ann@example.com", next_path=target)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize("target", LOCAL_TARGETS)
def test_sign_in_returns_to_a_page_on_this_site(anonymous, client, target):
    response = sign_in(anonymous, "ann@example.com", next_path=target)
    assert response.headers["Location"] == target


def test_the_raw_tab_trick_in_a_sign_in_link_is_refused(anonymous, client):
    """The phishing link exactly as sent: /login?next=/%09/evil.example/x."""
    page = anonymous.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    form = {"csrf_token": csrf, "email": "ann@example.com", "password": PASSWORD}
    response = anonymous.post("/login?next=/%09/evil.example/x", data=form)
    assert response.headers["Location"] == "/"


def test_quarantined_mail_is_listed_for_agents_escaped(client, session_factory):
    from core.db.models import InboundEmail

    raw = f"From: Eve <eve@example.com>\r\nSubject: Broken {XSS}\r\n\r\n".encode()
    with session_scope(session_factory) as session:
        session.add(
            InboundEmail(
                mailbox="INBOX", uidvalidity=1, uid=7, dedupe_key="q1", raw=raw, size=len(raw),
                status="quarantined", error="The server failed FETCH twice.",
            )
        )  # fmt: skip
    inbox = client.get("/").get_data(as_text=True)
    assert "1 email in quarantine" in inbox
    page = client.get("/quarantine").get_data(as_text=True)
    assert "eve@example.com" in page and "The server failed FETCH twice." in page
    assert "<script>alert(2)" not in page and "&lt;script&gt;" in page
