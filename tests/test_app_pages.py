"""The built-in helpdesk pages and the sidebar, through Flask's test client."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from datetime import timedelta
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from sidebar_client import Sidebar
from sqlalchemy import select

from core import agents
from core.db import session_scope
from core.db.models import AgentSession, AuditEvent, SignInAttempt
from core.domain import MessageKind, Role
from core.helpdesks import LocalHelpdesk
from helpdesk_app import create_app
from helpdesk_app.cli import cli
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


# --- sign-in lockouts ------------------------------------------------------------------------


def test_five_wrong_passwords_lock_the_account_with_one_answer_for_any_password(
    anonymous, client, session_factory
):
    """Locked, the right and the wrong password get the same 429 page; nobody is signed in."""
    guesser = client.application.test_client()
    for _ in range(5):
        assert sign_in(guesser, "ann@example.com", "guess").status_code == 401
    right = sign_in(guesser, "ann@example.com", PASSWORD)
    wrong = sign_in(guesser, "ann@example.com", "guess")
    assert right.status_code == wrong.status_code == 429
    assert right.get_data(as_text=True) == wrong.get_data(as_text=True)
    assert "Too many failed sign-ins" in right.get_data(as_text=True)
    assert "Wrong email or password" not in right.get_data(as_text=True)
    assert guesser.get("/").status_code == 302  # no session was started
    with session_scope(session_factory) as session:
        events = [e.event for e in session.scalars(select(AuditEvent))]
    assert events.count("agent.sign_in_failed") == 5
    assert events.count("agent.sign_in_locked") == 1


def test_the_lockout_is_shared_by_every_web_process_and_ends(settings, client, session_factory):
    """Failures in one process lock the account in another; fifteen minutes later it opens."""
    first, second = (create_app(settings).test_client() for _ in range(2))
    for n in range(5):
        sign_in(first if n % 2 else second, "ann@example.com", "guess")
    assert sign_in(second, "ann@example.com", PASSWORD).status_code == 429
    with session_scope(session_factory) as session:
        for row in session.scalars(select(SignInAttempt)):
            row.at -= timedelta(minutes=15, seconds=1)
    assert sign_in(first, "ann@example.com", PASSWORD).status_code == 302


def test_one_address_guessing_many_emails_is_refused_and_cannot_hide_behind_a_header(
    settings, client
):
    """The client address is the peer's; a forged X-Forwarded-For changes nothing."""
    app = create_app(replace(settings, sign_in_address_failures=3))
    attacker = {"environ_base": {"REMOTE_ADDR": "203.0.113.9"}}
    guesser = app.test_client()
    for n in range(3):
        headers = {"X-Forwarded-For": f"192.0.2.{n}"}
        response = sign_in(guesser, f"guess{n}@example.com", "guess", headers=headers, **attacker)
        assert response.status_code == 401
    for forged in ("192.0.2.77", "198.51.100.1, 10.0.0.1"):
        headers = {"X-Forwarded-For": forged, "X-Real-IP": forged}
        response = sign_in(guesser, "ann@example.com", PASSWORD, headers=headers, **attacker)
        assert response.status_code == 429
    elsewhere = {"environ_base": {"REMOTE_ADDR": "198.51.100.20"}}
    assert sign_in(app.test_client(), "ann@example.com", PASSWORD, **elsewhere).status_code == 302


# --- server-side sessions ----------------------------------------------------------------

COOKIE = "billing_desk_session"


def sign_out(client):
    page = client.get("/").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return client.post("/logout", data={"csrf_token": csrf})


def copy_of(client):
    """A second browser holding a copy of this one's session cookie."""
    other = client.application.test_client()
    other.set_cookie(COOKIE, client.get_cookie(COOKIE).value)
    return other


def sidebar_token(client, ticket_id):
    page = client.get(f"/sidebar/tickets/{ticket_id}").get_data(as_text=True)
    return re.search(r'name="sidebar-token" content="([^"]+)"', page).group(1)


def test_a_cookie_copied_before_sign_out_is_refused_after_it(client):
    thief = copy_of(client)
    assert thief.get("/").status_code == 200  # the copy works while the session lives
    assert sign_out(client).status_code == 302
    refused = thief.get("/")
    assert refused.status_code == 302 and refused.headers["Location"].startswith("/login")
    assert client.get("/").status_code == 302


def test_signing_out_ends_the_sidebars_opened_from_that_sign_in(client, ticket_id):
    sidebar = Sidebar(client.application.test_client(), sidebar_token(client, ticket_id))
    assert sidebar.get("/panel").status_code == 200
    sign_out(client)
    assert sidebar.get("/panel").status_code == 401


def test_deactivating_an_agent_ends_every_session_they_have(
    client, ticket_id, settings, session_factory, monkeypatch
):
    """`billing-desk agents deactivate` revokes the sessions: reactivating does not revive them."""
    laptop = client
    phone = client.application.test_client()
    assert sign_in(phone, "ann@example.com").status_code == 302
    sidebar = Sidebar(client.application.test_client(), sidebar_token(laptop, ticket_id))
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    result = CliRunner().invoke(cli, ["agents", "deactivate", "ann@example.com"])
    assert result.exit_code == 0, result.output
    assert "2 signed-in session(s) ended" in result.output
    with session_scope(session_factory) as session:
        agents.find_by_email(session, "ann@example.com").active = True
    for browser in (laptop, phone, copy_of(laptop)):
        assert browser.get("/").status_code == 302
    assert sidebar.get("/panel").status_code == 401
    with session_scope(session_factory) as session:
        events = [e.event for e in session.scalars(select(AuditEvent))]
    assert "agent.deactivated" in events


def test_the_cookie_carries_a_random_id_stored_only_hashed(client, session_factory):
    app = client.application
    cookie = client.get_cookie(COOKIE).value
    data = app.session_interface.get_signing_serializer(app).loads(cookie)
    assert set(data) >= {"sid"} and "agent_id" not in data
    with session_scope(session_factory) as session:
        (record,) = session.scalars(select(AgentSession)).all()
        assert record.token_hash == hashlib.sha256(data["sid"].encode()).hexdigest()
        assert data["sid"] not in record.token_hash
        assert record.revoked_at is None and record.agent.email == "ann@example.com"


def test_a_session_notes_when_it_was_last_seen(client, session_factory):
    with session_scope(session_factory) as session:
        record = session.scalars(select(AgentSession)).one()
        record.last_seen_at -= timedelta(hours=1)
        stale = record.last_seen_at
    client.get("/")
    with session_scope(session_factory) as session:
        assert session.scalars(select(AgentSession)).one().last_seen_at > stale


def test_signing_in_again_replaces_the_browsers_previous_session(client):
    before = copy_of(client)
    assert sign_in(client, "ann@example.com").status_code == 302
    assert client.get("/").status_code == 200
    assert before.get("/").status_code == 302


@pytest.mark.parametrize(
    ("public_url", "secure"), [("http://127.0.0.1:8000", False), ("https://desk.example", True)]
)
def test_the_session_cookie_is_httponly_lax_and_secure_on_https(
    settings, client, public_url, secure
):
    app = create_app(replace(settings, public_url=public_url))
    response = sign_in(app.test_client(), "ann@example.com")
    assert response.status_code == 302
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith(COOKIE))
    flags = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")[1:]}
    assert "httponly" in flags and flags["samesite"].strip() == "SameSite=Lax"
    assert ("secure" in flags) is secure


def test_sign_out_needs_the_forms_csrf_token(client):
    assert client.post("/logout").status_code == 400
    assert client.post("/logout", data={"csrf_token": "forged"}).status_code == 400
    assert client.get("/").status_code == 200  # still signed in


def test_linking_helpdesk_users_names_the_account_only_where_it_matters(
    client, settings, session_factory, monkeypatch
):
    """Zendesk user IDs are per subdomain; Help Scout's span the account, so need none."""
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    runner = CliRunner()
    link = ["agents", "link", "ann@example.com", "--user-id", "5"]
    missing = runner.invoke(cli, [*link, "--helpdesk", "zendesk"])
    assert missing.exit_code != 0 and "--account" in missing.output
    helpscout = runner.invoke(cli, [*link, "--helpdesk", "helpscout", "--account", "77"])
    assert helpscout.exit_code == 0, helpscout.output
    assert helpscout.output.strip() == "helpscout user 5 is ann@example.com (agent)"
    with session_scope(session_factory) as session:
        found = agents.agent_for_identity(
            session, helpdesk="helpscout", account="", external_user_id="5"
        )
        assert found.email == "ann@example.com"
