"""The sidebar inside Zendesk and Help Scout, account actions, and the update-card link.

Zendesk and Help Scout requests are signed here with keys the tests generate; their APIs are
pinned with ``responses`` (everything else, Stripe included, goes to the real fake servers).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from dataclasses import replace
from urllib.parse import urlencode

import jwt
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sidebar_client import PASSWORD, Sidebar, open_sidebar
from sqlalchemy import select

from core import agents
from core.db import session_scope
from core.db.models import Action, AuditEvent, SpentToken, Ticket
from core.domain import Role
from core.links import update_card_token
from helpdesk_app import create_app
from helpdesk_app.auth import mint_sidebar_token
from helpdesk_app.demo.seed import (
    DemoCustomer,
    create_customer,
    create_subscription,
)

pytestmark = pytest.mark.e2e

SUBDOMAIN, INSTALLATION, ZENDESK_USER = "acme", "360001", "9001"


def user_url(user_id: str, subdomain: str = SUBDOMAIN) -> str:
    """A Zendesk user as the ZAF JWT's `sub` names it: that user's API URL."""
    return f"https://{subdomain}.zendesk.com/api/v2/users/{user_id}.json"


HELPSCOUT_SECRET = "helpscout-app-secret-0123"
BOB = DemoCustomer("Bob Chen", "bob@example.com", "T-1077", "Chen Logistics", "5555555555554444")


@pytest.fixture(scope="module")
def zendesk_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public.decode()


@pytest.fixture
def embedded_settings(settings, zendesk_key):
    return replace(
        settings,
        zendesk_subdomain=SUBDOMAIN,
        zendesk_app_public_key=zendesk_key[1],
        zendesk_installation_id=INSTALLATION,
        zendesk_email="bot@acme.example",
        zendesk_api_token="zendesk-token",
        helpscout_app_secret=HELPSCOUT_SECRET,
    )


@pytest.fixture
def app(embedded_settings, db_engine, stripe_client, rt):
    rt.settings = embedded_settings  # the worker writes back to the same (mocked) helpdesks
    app = create_app(embedded_settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def linked_agent(session_factory):
    with session_scope(session_factory) as session:
        ann = agents.save_agent(
            session, email="ann@example.com", name="Ann", role=Role.AGENT, password=PASSWORD
        )
        agents.link_identity(
            session, ann, helpdesk="zendesk", account=SUBDOMAIN, external_user_id=ZENDESK_USER
        )
        agents.link_identity(session, ann, helpdesk="helpscout", account="", external_user_id="5")


def zendesk_token(private_key, **overrides) -> str:
    now = int(time.time())
    claims = {
        "iss": f"{SUBDOMAIN}.zendesk.com",
        "aud": f"https://{SUBDOMAIN}.zendesk.com/api/v2/apps/installations/{INSTALLATION}.json",
        "iat": now,
        "exp": now + 300,
        "sub": user_url(ZENDESK_USER),
        "context": {"product": "support", "location": "ticket_sidebar"},
        **overrides,
    }
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(claims, private_key, algorithm="RS256")


def open_in_zendesk(client, private_key, ticket_form: dict, **claims):
    first = client.post(
        "/zendesk/sidebar?origin=https://acme.zendesk.com&app_guid=x",
        data={"token": zendesk_token(private_key, **claims)},
    )
    if first.status_code != 200:
        return first, None
    bootstrap = re.search(r'name="bootstrap" value="([^"]+)"', first.get_data(as_text=True))[1]
    return first, client.post(
        "/zendesk/sidebar/ticket", data={"bootstrap": bootstrap, **ticket_form}
    )


ZENDESK_TICKET = {
    "ticket_id": "4242",
    "subject": "Refund please",
    "requester_email": "bob@example.com",
    "requester_name": "Bob Chen",
    "organization": "Chen Logistics",
}


def test_zendesk_sidebar_verifies_the_jwt_and_knows_the_agent(
    app, linked_agent, zendesk_key, stripe_client, session_factory
):
    create_customer(stripe_client, BOB)
    first, sidebar = open_in_zendesk(app.test_client(), zendesk_key[0], ZENDESK_TICKET)
    assert first.status_code == 200
    csp = first.headers["Content-Security-Policy"]
    assert "https://static.zdassets.com/" in csp and "https://acme.zendesk.com" in csp
    assert sidebar.status_code == 200
    page = sidebar.get_data(as_text=True)
    assert 'name="sidebar-token"' in page and "Bob Chen" in page
    with session_scope(session_factory) as session:
        ticket = session.scalars(select(Ticket)).one()
        assert (ticket.helpdesk, ticket.helpdesk_account, ticket.external_id) == (
            "zendesk",
            SUBDOMAIN,
            "4242",
        )
        assert ticket.organization == "Chen Logistics"


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": int(time.time()) - 120},
        {"aud": f"https://{SUBDOMAIN}.zendesk.com/api/v2/apps/installations/999.json"},
        {"iss": "evil.zendesk.com"},
    ],
    ids=["expired", "other-installation", "other-account"],
)
def test_zendesk_refuses_bad_tokens(app, linked_agent, zendesk_key, claims):
    first, _ = open_in_zendesk(app.test_client(), zendesk_key[0], ZENDESK_TICKET, **claims)
    assert first.status_code == 401


def test_zendesk_refuses_a_token_signed_with_another_key(app, linked_agent):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    first, _ = open_in_zendesk(app.test_client(), other, ZENDESK_TICKET)
    assert first.status_code == 401


def test_an_unlinked_zendesk_user_is_told_how_to_get_access(app, linked_agent, zendesk_key):
    _, sidebar = open_in_zendesk(
        app.test_client(), zendesk_key[0], ZENDESK_TICKET, sub=user_url("31337")
    )
    assert sidebar.status_code == 403
    assert "billing-desk agents link" in sidebar.get_data(as_text=True)


@pytest.mark.parametrize(
    "subject",
    [None, f"agent-{ZENDESK_USER}", user_url(ZENDESK_USER, subdomain="evil"), ""],
    ids=["no-sub", "not-an-id", "other-subdomain", "empty"],
)
def test_zendesk_never_takes_the_agent_from_the_browser(
    app, linked_agent, zendesk_key, session_factory, subject
):
    """Without a usable `sub` no agent is identified, whatever user_id the page posts."""
    forged = {**ZENDESK_TICKET, "user_id": ZENDESK_USER}  # ZAF's currentUser, browser-supplied
    first, sidebar = open_in_zendesk(app.test_client(), zendesk_key[0], forged, sub=subject)
    assert first.status_code == 401 and sidebar is None
    assert "Zendesk did not say which agent is signed in" in first.get_data(as_text=True)
    assert 'name="bootstrap"' not in first.get_data(as_text=True)
    with session_scope(session_factory) as session:
        assert session.scalars(select(Ticket)).all() == []


@pytest.mark.parametrize("subject", ["31337", user_url("31337")], ids=["bare-id", "user-url"])
def test_the_signed_sub_names_the_agent_not_the_page(app, linked_agent, zendesk_key, subject):
    """A token signed for user 31337 opens no linked agent's sidebar, whatever the page posts."""
    forged = {**ZENDESK_TICKET, "user_id": ZENDESK_USER}
    first, sidebar = open_in_zendesk(app.test_client(), zendesk_key[0], forged, sub=subject)
    assert first.status_code == 200
    assert sidebar.status_code == 403
    assert "31337" in sidebar.get_data(as_text=True)


def zendesk_bootstrap(client, private_key) -> str:
    """The bootstrap our first Zendesk page hands to ZAF's script."""
    first = client.post("/zendesk/sidebar", data={"token": zendesk_token(private_key)})
    assert first.status_code == 200, first.get_data(as_text=True)
    return re.search(r'name="bootstrap" value="([^"]+)"', first.get_data(as_text=True))[1]


@pytest.mark.parametrize(
    ("replay", "other_process"),
    [
        ({}, False),
        ({"ticket_id": "4343", "subject": "Someone else's ticket"}, False),
        ({}, True),
        ({"ticket_id": "4343"}, True),
    ],
    ids=["same-ticket", "other-ticket", "same-ticket-other-process", "other-ticket-other-process"],
)
def test_a_zendesk_bootstrap_opens_one_ticket_once(
    app,
    embedded_settings,
    linked_agent,
    zendesk_key,
    stripe_client,
    session_factory,
    replay,
    other_process,
):
    """The first use spends the bootstrap and binds it to its ticket; any replay gets 401."""
    create_customer(stripe_client, BOB)
    client = app.test_client()
    bootstrap = zendesk_bootstrap(client, zendesk_key[0])
    first = client.post("/zendesk/sidebar/ticket", data={"bootstrap": bootstrap, **ZENDESK_TICKET})
    assert first.status_code == 200
    # Another web process shares nothing with this one but the database.
    again = create_app(embedded_settings).test_client() if other_process else client
    replayed = again.post(
        "/zendesk/sidebar/ticket", data={"bootstrap": bootstrap, **ZENDESK_TICKET, **replay}
    )
    assert replayed.status_code == 401
    assert 'name="sidebar-token"' not in replayed.get_data(as_text=True)
    with session_scope(session_factory) as session:
        assert [t.external_id for t in session.scalars(select(Ticket))] == ["4242"]
        spent = session.scalars(select(SpentToken)).one()
        assert (spent.kind, spent.bound_to) == ("zendesk_bootstrap", "zendesk:acme:ticket:4242")


def test_an_unlinked_agents_bootstrap_is_spent_too(app, linked_agent, zendesk_key):
    """Refusing an unlinked agent still spends the bootstrap: no second try with it."""
    client = app.test_client()
    first = client.post(
        "/zendesk/sidebar", data={"token": zendesk_token(zendesk_key[0], sub=user_url("31337"))}
    )
    bootstrap = re.search(r'name="bootstrap" value="([^"]+)"', first.get_data(as_text=True))[1]
    form = {"bootstrap": bootstrap, **ZENDESK_TICKET}
    assert client.post("/zendesk/sidebar/ticket", data=form).status_code == 403
    assert client.post("/zendesk/sidebar/ticket", data=form).status_code == 401


def test_zendesk_sidebars_have_no_sign_in_session_and_outlive_a_sign_out(
    app, linked_agent, zendesk_key, stripe_client
):
    """Signing out of the built-in helpdesk ends its sidebars, not the agent's Zendesk ones."""
    create_customer(stripe_client, BOB)
    _, page = open_in_zendesk(app.test_client(), zendesk_key[0], ZENDESK_TICKET)
    token = re.search(r'name="sidebar-token" content="([^"]+)"', page.get_data(as_text=True))[1]
    browser = app.test_client()
    login = browser.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login)[1]
    form = {"csrf_token": csrf, "email": "ann@example.com", "password": PASSWORD}
    assert browser.post("/login", data=form).status_code == 302
    inbox = browser.get("/").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', inbox)[1]
    assert browser.post("/logout", data={"csrf_token": csrf}).status_code == 302
    assert Sidebar(app.test_client(), token).get("/panel").status_code == 200


def test_a_built_in_tickets_sidebar_token_must_name_a_live_sign_in(
    app, linked_agent, session_factory
):
    """A token for one of our own tickets minted without a sign-in session is refused."""
    with session_scope(session_factory) as session:
        ticket = Ticket(subject="Local", requester_email=BOB.email, status="open")
        session.add(ticket)
        session.flush()
        ann = agents.find_by_email(session, "ann@example.com")
        with app.test_request_context():
            token = mint_sidebar_token(ann, ticket)
    assert Sidebar(app.test_client(), token).get("/panel").status_code == 401


def test_a_forged_bootstrap_is_refused(app, linked_agent):
    response = app.test_client().post(
        "/zendesk/sidebar/ticket", data={"bootstrap": "forged", **ZENDESK_TICKET}
    )
    assert response.status_code == 401


@responses.activate
def test_a_note_on_a_zendesk_ticket_is_written_to_zendesk(
    app, linked_agent, zendesk_key, stripe_client, fake_stripe, run_worker
):
    responses.add_passthru(fake_stripe.url)
    put = responses.put(
        f"https://{SUBDOMAIN}.zendesk.com/api/v2/tickets/4242.json", json={"ticket": {}}
    )
    create_customer(stripe_client, BOB)
    client = app.test_client()
    _, page = open_in_zendesk(client, zendesk_key[0], ZENDESK_TICKET)
    token = re.search(r'name="sidebar-token" content="([^"]+)"', page.get_data(as_text=True))[1]
    sidebar = Sidebar(app.test_client(), token)
    _, _, intent = sidebar.preview(kind="note", text="Called the customer back")
    sidebar.confirm(intent)
    run_worker()
    assert put.call_count == 1
    body = json.loads(put.calls[0].request.body)
    assert body["ticket"]["comment"]["public"] is False
    assert "Called the customer back" in body["ticket"]["comment"]["body"]


def helpscout_url(
    params: list[tuple[str, str]], secret: str = HELPSCOUT_SECRET, *, php: bool = True
) -> str:
    """A sidebar URL signed as Help Scout signs it: HMAC-SHA1 over the other params as JSON
    (PHP's json_encode in Help Scout's example; a plain JSON encoder in apps that use it)."""
    if php:
        payload = json.dumps(dict(params), separators=(",", ":")).replace("/", "\\/")
    else:
        payload = json.dumps(dict(params), separators=(",", ":"), ensure_ascii=False)
    signature = base64.b64encode(
        hmac.new(secret.encode(), payload.encode(), hashlib.sha1).digest()
    ).decode()
    return "/helpscout/sidebar?" + urlencode([*params, ("X-HelpScout-Signature", signature)])


@pytest.fixture
def helpscout_app(app, fake_helpscout, embedded_settings, rt):
    """The app with Help Scout's API (the fake) configured, and Bob's conversation in it."""
    settings = replace(
        embedded_settings,
        helpscout_client_id=fake_helpscout.client_id,
        helpscout_client_secret=fake_helpscout.client_secret,
        helpscout_api_url=fake_helpscout.url,
    )
    rt.settings = settings
    rt.__dict__.pop("helpdesks", None)
    app = create_app(settings)
    app.config["TESTING"] = True
    conversation = fake_helpscout.create_conversation(
        "Card update", "How do I change my card?", BOB.email, "Bob", "Chen"
    )
    return app, str(conversation)


def test_helpscout_sidebar_takes_the_params_help_scout_sends(
    helpscout_app, linked_agent, stripe_client
):
    app, conversation = helpscout_app
    create_customer(stripe_client, BOB)
    params = [("conversation-id", conversation), ("customer-id", "40001"), ("user-id", "5")]
    response = app.test_client().get(helpscout_url(params))
    assert response.status_code == 200, response.get_data(as_text=True)
    # Who the customer is comes from Help Scout's API, never from the query.
    assert "Bob Chen" in response.get_data(as_text=True)
    assert "https://secure.helpscout.net" in response.headers["Content-Security-Policy"]
    plain = app.test_client().get(helpscout_url(params, php=False))
    assert plain.status_code == 200


def test_helpscout_sidebar_without_a_signed_agent_opens_under_our_sign_in(
    helpscout_app, linked_agent, stripe_client
):
    app, conversation = helpscout_app
    create_customer(stripe_client, BOB)
    client = app.test_client()
    page = client.get(helpscout_url([("conversation-id", conversation), ("customer-id", "1")]))
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    link = re.search(r'href="(/helpscout/open/[^"]+)"', html)
    assert link is not None and "cus_" not in html  # nothing of Stripe before our sign-in
    assert client.get(link.group(1)).status_code == 302  # to the sign-in page
    client.post(
        "/login",
        data={"email": "ann@example.com", "password": PASSWORD, "csrf_token": _csrf(client)},
    )
    opened = client.get(link.group(1))
    assert opened.status_code == 200
    assert "Bob Chen" in opened.get_data(as_text=True)


def _csrf(client) -> str:
    page = client.get("/login").get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match is not None
    return match.group(1)


@pytest.mark.parametrize("how", ["wrong-secret", "tampered", "unsigned", "camel-unsigned"])
def test_helpscout_refuses_unsigned_or_tampered_requests(helpscout_app, linked_agent, how):
    app, conversation = helpscout_app
    params = [("conversation-id", conversation), ("customer-id", "1"), ("user-id", "5")]
    url = {
        "wrong-secret": helpscout_url(params, secret="wrong-secret"),
        "tampered": helpscout_url(params).replace("user-id=5", "user-id=6"),
        "unsigned": f"/helpscout/sidebar?conversation-id={conversation}&user-id=5",
        "camel-unsigned": f"/helpscout/sidebar?conversationId={conversation}&userId=5",
    }[how]
    assert app.test_client().get(url).status_code == 401


# --- account actions through the worker ------------------------------------------------------


@pytest.fixture
def bob(stripe_client, rt, session_factory):
    customer = create_customer(stripe_client, BOB)
    subscription = create_subscription(
        stripe_client, rt.settings.stripe_api_base, customer, "Business", 9900
    )
    with session_scope(session_factory) as session:
        ticket = Ticket(subject="Account", requester_email=BOB.email, status="open")
        session.add(ticket)
        session.flush()
        agents.save_agent(
            session, email="lee@example.com", name="Lee", role=Role.SUPPORT_LEAD, password=PASSWORD
        )
        ticket_id = ticket.id
    return {"customer": customer, "subscription": subscription, "ticket": ticket_id}


def test_cancel_at_period_end_comp_and_trial_extension_reach_stripe(
    app, bob, stripe_client, run_worker, session_factory
):
    sidebar = open_sidebar(app, "lee@example.com", bob["ticket"])
    sub = bob["subscription"]
    _, page, _ = sidebar.preview(kind="cancel_subscription", subscription_id=sub)
    assert "confirm" in page.lower() and "identity" in page  # locked until verified
    sidebar.verify(bob["customer"])
    for form in (
        {"kind": "cancel_subscription", "subscription_id": sub, "mode": "at_period_end"},
        {"kind": "comp_coupon", "subscription_id": sub, "months": "2"},
        {"kind": "extend_trial", "subscription_id": sub, "days": "30"},
    ):
        _, page, intent = sidebar.preview(**form)
        assert intent, page
        sidebar.confirm(intent)
    run_worker()
    stripe_sub = stripe_client.v1.subscriptions.retrieve(
        sub, params={"expand": ["discounts"]}
    ).to_dict()
    assert stripe_sub["cancel_at_period_end"] is True
    assert stripe_sub["trial_end"] >= stripe_sub["items"]["data"][0]["current_period_end"]
    # A discount names its coupon under ``source`` in current API versions.
    coupons = [(d.get("source") or d)["coupon"] for d in stripe_sub["discounts"]]
    coupons = [c if isinstance(c, str) else c["id"] for c in coupons]
    assert len(coupons) == 1
    assert stripe_client.v1.coupons.retrieve(coupons[0]).percent_off == 100
    with session_scope(session_factory) as session:
        done = session.scalars(select(Action.status)).all()
        assert done == ["succeeded"] * 3
        notes = [m.body for m in session.get(Ticket, bob["ticket"]).messages]
        assert any("cancelled at period end" in n for n in notes)
        assert any(coupons[0] in n for n in notes)


def test_update_card_link_opens_a_portal_session_when_clicked(
    app, bob, run_worker, outbox, embedded_settings, fake_stripe
):
    sidebar = open_sidebar(app, "lee@example.com", bob["ticket"])
    sidebar.verify(bob["customer"])
    _, page, intent = sidebar.preview(kind="send_update_card_link")
    assert "bob@example.com" in page
    sidebar.confirm(intent)
    sidebar.confirm(intent)
    run_worker()
    assert len(outbox) == 1
    text = outbox[0].get_body(("plain",)).get_content()
    link = re.search(r"http://\S+/billing/update-card/\S+", text)[0]
    path = link.split("://", 1)[1].split("/", 1)[1]
    response = app.test_client().get("/" + path)
    assert response.status_code == 303
    assert response.headers["Location"].startswith(f"{fake_stripe.url}/_portal/")
    # A forged link is refused; an expired one explains itself.
    assert app.test_client().get("/billing/update-card/forged").status_code == 401
    expired = update_card_token(embedded_settings.secret_key, bob["customer"], 1)
    short = replace(embedded_settings, update_card_link_ttl_hours=1)
    stale_app = create_app(short)
    original = time.time
    try:
        time.time = lambda: original() + 2 * 3600  # type: ignore[assignment]
        stale = stale_app.test_client().get(f"/billing/update-card/{expired}")
    finally:
        time.time = original  # type: ignore[assignment]
    assert stale.status_code == 410 and "expired" in stale.get_data(as_text=True)


@pytest.fixture
def update_card_path(app, bob, run_worker, outbox):
    """The path of the update-card link a lead emailed to Bob."""
    sidebar = open_sidebar(app, "lee@example.com", bob["ticket"])
    sidebar.verify(bob["customer"])
    _, _, intent = sidebar.preview(kind="send_update_card_link")
    sidebar.confirm(intent)
    run_worker()
    text = outbox[0].get_body(("plain",)).get_content()
    link = re.search(r"http://\S+/billing/update-card/\S+", text)[0]
    return "/" + link.split("://", 1)[1].split("/", 1)[1]


@pytest.mark.parametrize("other_process", [False, True], ids=["same-process", "other-process"])
def test_an_update_card_link_works_once(
    app, embedded_settings, update_card_path, fake_stripe, session_factory, other_process
):
    """The first click opens the portal; any later click is told the link was used, audited."""
    first = app.test_client().get(update_card_path)
    assert first.status_code == 303
    assert first.headers["Location"].startswith(f"{fake_stripe.url}/_portal/")
    again = create_app(embedded_settings) if other_process else app
    for _ in range(2):
        second = again.test_client().get(update_card_path)
        page = second.get_data(as_text=True)
        assert second.status_code == 410 and "Location" not in second.headers
        assert "This link was already used. Ask us for a new one." in page
        assert "expired" not in page
    with session_scope(session_factory) as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
        link_events = [e.event for e in events if e.event.startswith("update_card_link.")]
        assert link_events == [
            "update_card_link.opened",
            "update_card_link.reused",
            "update_card_link.reused",
        ]
        reused = [e for e in events if e.event == "update_card_link.reused"]
        assert all(e.action_id is not None and e.stripe_customer_id for e in reused)


def test_an_update_card_link_that_failed_to_open_still_works(
    app, embedded_settings, update_card_path
):
    """Stripe down at the first click: nothing is spent, so the next click opens the portal."""
    broken = create_app(replace(embedded_settings, stripe_api_base="http://127.0.0.1:9"))
    assert broken.test_client().get(update_card_path).status_code == 503
    assert app.test_client().get(update_card_path).status_code == 303
    assert app.test_client().get(update_card_path).status_code == 410


def test_frame_ancestors_follow_the_configured_helpdesks(settings, db_engine):
    plain = create_app(settings).test_client().get("/login")
    assert plain.headers["Content-Security-Policy"].endswith("frame-ancestors 'self'")
    custom = replace(settings, frame_ancestors=("https://support.example.com",))
    response = create_app(custom).test_client().get("/login")
    assert (
        "frame-ancestors 'self' https://support.example.com"
        in response.headers["Content-Security-Policy"]
    )


def test_helpscout_open_link_is_refused_when_forged_or_for_another_helpdesks_ticket(
    helpscout_app, linked_agent, session_factory
):
    app, _conversation = helpscout_app
    client = app.test_client()
    client.post(
        "/login",
        data={"email": "ann@example.com", "password": PASSWORD, "csrf_token": _csrf(client)},
    )
    assert client.get("/helpscout/open/not-a-token").status_code == 401
    with session_scope(session_factory) as session:
        local = Ticket(subject="Ours", requester_email=BOB.email, status="open")
        session.add(local)
        session.flush()
        local_id = local.id
    with app.test_request_context():
        from helpdesk_app.embedded import _open_serializer

        token = _open_serializer().dumps({"t": local_id})
    assert client.get(f"/helpscout/open/{token}").status_code == 404


def test_helpscout_agents_linked_under_a_mailbox_id_are_still_known(
    helpscout_app, session_factory, stripe_client
):
    """Links made when the sidebar named Help Scout accounts by mailbox: the user ID alone
    identifies a Help Scout user, so they still work; two agents on one user ID do not."""
    app, conversation = helpscout_app
    create_customer(stripe_client, BOB)
    with session_scope(session_factory) as session:
        kim = agents.save_agent(
            session, email="kim@example.com", name="Kim", role=Role.AGENT, password=PASSWORD
        )
        agents.link_identity(session, kim, helpdesk="helpscout", account="77", external_user_id="8")
    params = [("conversation-id", conversation), ("customer-id", "1"), ("user-id", "8")]
    assert app.test_client().get(helpscout_url(params)).status_code == 200
    with session_scope(session_factory) as session:
        lou = agents.save_agent(
            session, email="lou@example.com", name="Lou", role=Role.AGENT, password=PASSWORD
        )
        agents.link_identity(session, lou, helpdesk="helpscout", account="78", external_user_id="8")
    assert app.test_client().get(helpscout_url(params)).status_code == 403  # ambiguous


def test_a_zendesk_teams_sidebar_reads_the_ticket_from_zendesk_not_the_browser(
    embedded_settings, fake_zendesk, linked_agent, zendesk_key, stripe_client, session_factory
):
    """With HELPDESK=zendesk the requester is Zendesk's word, whatever ZAF's page posts."""
    create_customer(stripe_client, BOB)
    settings = replace(
        embedded_settings,
        helpdesk="zendesk",
        zendesk_email=fake_zendesk.email,
        zendesk_api_token=fake_zendesk.api_token,
        zendesk_api_url=fake_zendesk.url,
    )
    app = create_app(settings)
    ticket = fake_zendesk.create_ticket("Refund please", "Refund me", BOB.email, "Bob Chen")
    form = {**ZENDESK_TICKET, "ticket_id": str(ticket), "requester_email": "eve@example.com"}
    form["requester_name"] = "Eve Impostor"
    _, page = open_in_zendesk(app.test_client(), zendesk_key[0], form)
    assert page is not None and page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Bob Chen" in html and "Eve Impostor" not in html
    with session_scope(session_factory) as session:
        mirror = session.scalars(select(Ticket)).one()
        assert (mirror.external_id, mirror.requester_email) == (str(ticket), BOB.email)
