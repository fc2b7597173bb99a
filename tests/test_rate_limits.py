"""Per-client rate limits on every surface, counted in the real Redis the app uses.

Each test builds the app with small limits of its own ("3 per hour": no window can pass in the
middle of a burst; "2 per 2 seconds" where the reset is the point). Clients are Flask's test
client with the peer address set per client, the way a TCP peer's address reaches the app.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
import time

import pytest
from sidebar_client import PASSWORD, Sidebar, open_sidebar
from sqlalchemy import func, select
from stripe_webhooks import SECRET, customer, deliver, event, sign

from core.db import session_scope
from core.db.models import Action, StripeEvent, Ticket
from core.errors import ConfigError
from core.settings import Settings
from helpdesk_app import create_app
from helpdesk_app.demo.seed import DemoCustomer, create_charge, create_customer
from helpdesk_app.rate_limits import STATIC, Surface, surface_of

ALICE = DemoCustomer("Alice Martin", "alice@example.com", "T-1042", "Northwind", "4242424242424242")
OFFICE = "198.51.100.7"
CAFE = "198.51.100.8"
STRIPE = "54.187.174.169"  # one of Stripe's published webhook addresses
FORGER = "203.0.113.66"


@pytest.fixture
def limited_app(settings, db_engine, stripe_client, rt):
    """Build the app on the test servers with these RATE_LIMIT_* values; ``rt`` empties the
    test Redis first, so no count is left from another test."""

    def build(**limits):
        app = create_app(dataclasses.replace(settings, stripe_webhook_secret=SECRET, **limits))
        app.config["TESTING"] = True
        return app

    return build


def client_at(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def sign_in(app, email: str, address: str = OFFICE):
    client = client_at(app, address)
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = client.post("/login", data={"csrf_token": csrf, "email": email, "password": PASSWORD})
    assert answer.status_code == 302
    return client


def assert_refused(response, *, json_body: bool) -> int:
    """A 429 with a Retry-After of whole seconds; JSON or a page as asked; the wait."""
    assert response.status_code == 429
    wait = int(response.headers["Retry-After"])
    assert wait >= 1
    if json_body:
        assert response.is_json
        assert response.json["error"] == "rate_limited" and response.json["retry_after"] == wait
    else:
        assert response.mimetype == "text/html"
        assert "Too many requests" in response.get_data(as_text=True)
    return wait


@pytest.fixture
def ticket_id(session_factory):
    with session_scope(session_factory) as session:
        ticket = Ticket(subject="Charged twice", requester_email=ALICE.email, status="open")
        session.add(ticket)
        session.flush()
        return ticket.id


@pytest.fixture
def alice(stripe_client, rt):
    """Alice with two $49 charges."""
    found = create_customer(stripe_client, ALICE)
    base = rt.settings.stripe_api_base
    first = create_charge(stripe_client, base, found, 4900, "Pro", days_ago=0.05)
    second = create_charge(stripe_client, base, found, 4900, "Pro")
    return {"customer": found, "first": first, "second": second}


def refund_actions(session_factory) -> int:
    with session_scope(session_factory) as session:
        return session.scalar(
            select(func.count()).select_from(Action).where(Action.kind == "refund")
        )


# --- settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "RATE_LIMIT_SIDEBAR_READS",
        "RATE_LIMIT_SIDEBAR_WRITES",
        "RATE_LIMIT_PAGES",
        "RATE_LIMIT_PUBLIC",
        "RATE_LIMIT_WEBHOOKS",
    ],
)
@pytest.mark.parametrize("bad", ["lots", "30/fortnight", "0/minute", "30 minute"])
def test_a_rate_that_is_not_one_fails_at_start_up_naming_the_setting(name, bad):
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({name: bad})
    assert refused.value.setting == name and repr(bad) in str(refused.value)


def test_rates_are_read_from_the_environment_with_defaults():
    settings = Settings.from_env({"RATE_LIMIT_SIDEBAR_WRITES": "10 per minute;100/hour"})
    assert settings.rate_limit_sidebar_writes == "10 per minute;100/hour"
    assert Settings.from_env({}).rate_limit_sidebar_writes == "30/minute"


def test_every_route_of_the_app_belongs_to_a_surface(app):
    unclassified = [
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        if rule.endpoint.rpartition(".")[2] != STATIC and surface_of(rule.endpoint, method) is None
    ]
    assert unclassified == []
    assert surface_of("webhooks.stripe_webhook", "POST") is Surface.WEBHOOKS
    assert surface_of("sidebar.panel", "GET") is Surface.SIDEBAR_READS
    assert surface_of("sidebar.confirm", "POST") is Surface.SIDEBAR_WRITES
    assert surface_of("sidebar.local_sidebar", "GET") is Surface.PAGES
    assert surface_of("health.readyz", "GET") is Surface.EXEMPT


# --- the sidebar: per agent and helpdesk account ------------------------------------------


def test_sidebar_writes_past_the_limit_do_nothing_and_other_agents_are_not_affected(
    limited_app, people, ticket_id, alice, stripe_client, run_worker, session_factory
):
    app = limited_app(rate_limit_sidebar_writes="4/hour")
    ann = open_sidebar(app, "ann@example.com", ticket_id)
    ann.verify(alice["customer"])  # 1
    _, _, first = ann.preview(kind="refund", charge_id=alice["first"], reason="duplicate")  # 2
    _, _, second = ann.preview(kind="refund", charge_id=alice["second"], reason="duplicate")  # 3
    assert first and second
    assert ann.confirm(first).status_code == 200  # 4
    refused = ann.confirm(second)  # 5: refused before the view runs
    assert_refused(refused, json_body=False)  # the sidebar's own script gets its sheet
    assert refund_actions(session_factory) == 1
    # A fresh token for the same agent does not buy a fresh budget.
    again = open_sidebar(app, "ann@example.com", ticket_id)
    assert_refused(again.confirm(second), json_body=False)
    run_worker()
    assert len(stripe_client.v1.refunds.list(params={"charge": alice["first"]}).data) == 1
    assert stripe_client.v1.refunds.list(params={"charge": alice["second"]}).data == []
    assert refund_actions(session_factory) == 1
    # Reads are a budget of their own, and another agent's writes are theirs.
    assert ann.get("/panel").status_code == 200
    lee = open_sidebar(app, "lee@example.com", ticket_id)
    _, _, lees = lee.preview(kind="refund", charge_id=alice["second"], reason="duplicate")
    assert lees and lee.confirm(lees).status_code == 200
    assert refund_actions(session_factory) == 2


def test_a_script_reading_the_sidebar_api_is_refused_in_json(limited_app, people, ticket_id):
    app = limited_app(rate_limit_sidebar_reads="3/hour")
    token = open_sidebar(app, "ann@example.com", ticket_id).headers["Authorization"]
    script = client_at(app, OFFICE)
    for _ in range(3):
        assert script.get("/sidebar/panel", headers={"Authorization": token}).status_code == 200
    assert_refused(script.get("/sidebar/panel", headers={"Authorization": token}), json_body=True)
    assert_refused(
        script.get("/sidebar/search?q=alice", headers={"Authorization": token}), json_body=True
    )
    bea = open_sidebar(app, "bea@example.com", ticket_id)
    assert bea.get("/panel").status_code == 200


def test_forged_sidebar_tokens_spend_their_address_not_an_agents_budget(
    limited_app, people, ticket_id
):
    app = limited_app(rate_limit_sidebar_reads="3/hour")
    forger = Sidebar(client_at(app, FORGER), "not-a-token-of-ours")
    for _ in range(3):
        assert forger.get("/panel").status_code == 401
    assert_refused(forger.get("/panel"), json_body=False)
    ann = open_sidebar(app, "ann@example.com", ticket_id)
    ann.client.environ_base["REMOTE_ADDR"] = FORGER  # even from the forger's address
    assert ann.get("/panel").status_code == 200


# --- the built-in helpdesk's pages: per signed-in agent ------------------------------------


def test_pages_are_limited_per_signed_in_agent(limited_app, people):
    app = limited_app(rate_limit_pages="3/hour")
    ann = sign_in(app, "ann@example.com")
    bea = sign_in(app, "bea@example.com")  # the same office address
    for _ in range(3):
        assert ann.get("/").status_code == 200
    assert_refused(ann.get("/quarantine"), json_body=False)
    assert bea.get("/").status_code == 200


# --- public routes and webhooks: per client address ------------------------------------------


def test_public_routes_are_limited_per_address_whatever_the_headers_say(limited_app, people):
    app = limited_app(rate_limit_public="3/hour")
    office = client_at(app, OFFICE)
    for _ in range(3):
        assert office.get("/login").status_code == 200
    forged = {"X-Forwarded-For": CAFE, "X-Real-IP": CAFE, "Forwarded": f"for={CAFE}"}
    assert_refused(office.get("/login", headers=forged), json_body=False)
    assert_refused(office.get("/billing/update-card/whatever"), json_body=False)
    assert_refused(office.post("/zendesk/sidebar", data={"token": "x"}), json_body=False)
    assert client_at(app, CAFE).get("/login").status_code == 200


PROXY = "10.0.0.5"  # our own load balancer


def test_behind_our_proxy_each_client_counts_by_the_address_the_proxy_saw(limited_app, people):
    """TRUSTED_PROXIES=1: the proxy's last X-Forwarded-For entry is the client; anything the
    client wrote further left does not choose whose budget it spends."""
    app = limited_app(rate_limit_public="3/hour", trusted_proxies=1)
    proxy = client_at(app, PROXY)
    for _ in range(3):
        assert proxy.get("/login", headers={"X-Forwarded-For": OFFICE}).status_code == 200
    assert_refused(proxy.get("/login", headers={"X-Forwarded-For": OFFICE}), json_body=False)
    # The office cannot pass itself off as the cafe: its own header is kept, the proxy appends.
    forged = {"X-Forwarded-For": f"{CAFE}, {OFFICE}"}
    assert_refused(proxy.get("/login", headers=forged), json_body=False)
    assert proxy.get("/login", headers={"X-Forwarded-For": CAFE}).status_code == 200


def test_without_trusted_proxies_the_proxy_is_one_client(limited_app, people):
    app = limited_app(rate_limit_public="3/hour")
    proxy = client_at(app, PROXY)
    for address in (OFFICE, CAFE, FORGER):
        assert proxy.get("/login", headers={"X-Forwarded-For": address}).status_code == 200
    assert_refused(proxy.get("/login", headers={"X-Forwarded-For": STRIPE}), json_body=False)


def test_a_forged_webhook_flood_does_not_block_stripe(limited_app, rt, session_factory):
    app = limited_app(rate_limit_webhooks="5/hour")
    forger = client_at(app, FORGER)
    body = json.dumps(event("customer.created", customer("cus_RL1", "Eve"))).encode()
    answers = [
        forger.post(
            "/webhooks/stripe",
            data=body,
            headers={"Stripe-Signature": sign(body, "whsec_not_stripes_0123456789")},
        )
        for _ in range(8)
    ]
    assert [a.status_code for a in answers[:5]] == [400] * 5
    for refused in answers[5:]:
        assert_refused(refused, json_body=True)
    genuine = event("customer.created", customer("cus_RL2", "Ada"))
    assert deliver(client_at(app, STRIPE), genuine).status_code == 200
    with session_scope(session_factory) as session:
        assert session.scalars(select(StripeEvent.id)).all() == [genuine["id"]]


def test_a_limit_lets_the_client_in_again_once_its_window_has_passed(limited_app, people):
    app = limited_app(rate_limit_public="2/2 seconds")
    office = client_at(app, OFFICE)
    assert [office.get("/login").status_code for _ in range(2)] == [200, 200]
    assert_refused(office.get("/login"), json_body=False)
    deadline = time.monotonic() + 15  # a bound on the wait, not a figure under test
    status = 429
    while status == 429 and time.monotonic() < deadline:
        time.sleep(0.25)
        status = office.get("/login").status_code
    assert status == 200


# --- what is never limited, and Redis going away ---------------------------------------------


def test_the_probes_are_never_limited(limited_app):
    app = limited_app(rate_limit_public="1/hour", rate_limit_pages="1/hour")
    probe = client_at(app, OFFICE)
    assert [probe.get("/healthz").status_code for _ in range(5)] == [200] * 5
    assert probe.get("/login").status_code == 200
    assert probe.get("/login").status_code == 429
    assert probe.get("/healthz").status_code == 200


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the socket is closed


def test_without_redis_requests_are_served_and_still_limited_per_process(
    settings, db_engine, people
):
    gone = f"redis://127.0.0.1:{_closed_port()}/0"
    app = create_app(dataclasses.replace(settings, redis_url=gone, rate_limit_public="3/hour"))
    app.config["TESTING"] = True
    office = client_at(app, OFFICE)
    assert [office.get("/login").status_code for _ in range(3)] == [200] * 3
    assert_refused(office.get("/login"), json_body=False)  # counted in this process's memory
    assert client_at(app, CAFE).get("/login").status_code == 200
    assert office.get("/healthz").status_code == 200
