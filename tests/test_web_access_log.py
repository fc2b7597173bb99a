"""`billing-desk web` (gunicorn) writes access-log lines without signed queries or link tokens.

A real web process is started on a free port with the test settings, as production runs it;
the test makes the requests a Help Scout sidebar and a customer's click would make, then reads
what the process logged.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from fake_helpdesks import FakeHelpScout
from test_sidebar_embedding import BOB, HELPSCOUT_SECRET, helpscout_url

from core import agents
from core.db import session_scope
from core.db.models import Action
from core.domain import Role
from core.links import update_card_token
from helpdesk_app.access_log import redacted_path
from helpdesk_app.demo import servers
from helpdesk_app.demo.seed import create_customer

pytestmark = pytest.mark.e2e


@pytest.fixture
def web_settings(settings, fake_helpscout: FakeHelpScout):
    """The test settings, with a Help Scout app (its API the fake) and this process's URL."""
    port = servers.free_port()
    return replace(
        settings,
        helpscout_app_secret=HELPSCOUT_SECRET,
        helpscout_client_id=fake_helpscout.client_id,
        helpscout_client_secret=fake_helpscout.client_secret,
        helpscout_api_url=fake_helpscout.url,
        public_url=f"http://127.0.0.1:{port}",
    )


@pytest.fixture
def web(web_settings, db_engine, tmp_path: Path):
    """`billing-desk web` in a child process; yields (base URL, a function reading its log)."""
    port = int(web_settings.public_url.rsplit(":", 1)[1])
    # gunicorn's own line format, as LOG_FORMAT=text writes it (JSON: test_observability).
    env = {**os.environ, **web_settings.to_env(), "LOG_FORMAT": "text"}
    log_path = tmp_path / "web.log"
    argv = [sys.executable, "-m", "helpdesk_app", "web", "--port", str(port), "--workers", "1"]
    server = servers.spawn("web", argv, log_path, port=port, env=env)
    try:
        yield web_settings.public_url, server, log_path
    finally:
        server.stop()


@pytest.fixture
def update_card_link(stripe_client, session_factory, web_settings):
    """A live update-card token for Bob, as the worker would have emailed it."""
    customer = create_customer(stripe_client, BOB)
    with session_scope(session_factory) as session:
        action = Action(
            kind="send_update_card_link",
            status="succeeded",
            idempotency_key="access-log-test",
            requested_by="lee@example.com",
            stripe_customer_id=customer,
        )
        session.add(action)
        session.flush()
        action_id = action.id
    assert web_settings.secret_key
    return update_card_token(web_settings.secret_key, customer, action_id)


def test_access_log_has_request_lines_but_no_signed_query_or_link_token(
    web, update_card_link, stripe_client, session_factory, fake_helpscout
):
    base, server, log_path = web
    create_customer(stripe_client, BOB)
    with session_scope(session_factory) as session:
        ann = agents.save_agent(session, email="ann@example.com", name="Ann", role=Role.AGENT)
        agents.link_identity(session, ann, helpdesk="helpscout", account="", external_user_id="5")
    conversation = fake_helpscout.create_conversation("Card", "Hello", BOB.email, "Bob", "Chen")
    signed = helpscout_url(
        [("conversation-id", str(conversation)), ("customer-id", "1"), ("user-id", "5")]
    )
    signature = signed.rsplit("X-HelpScout-Signature=", 1)[1]

    sidebar = requests.get(base + signed, timeout=30)
    assert sidebar.status_code == 200 and "Bob Chen" in sidebar.text
    # The page's own assets are fetched with the signed page as their Referer.
    asset = requests.get(base + "/static/app.css", headers={"Referer": base + signed}, timeout=30)
    assert asset.status_code == 200
    click = requests.get(
        f"{base}/billing/update-card/{update_card_link}", allow_redirects=False, timeout=30
    )
    assert click.status_code == 303
    again = requests.get(
        f"{base}//billing/update%2Dcard/{update_card_link}?utm=mail",
        allow_redirects=False,
        timeout=30,
    )
    assert again.status_code in (308, 410)
    server.stop()

    log = log_path.read_text(encoding="utf-8", errors="replace")
    assert '"GET /helpscout/sidebar HTTP/1.1" 200' in log
    assert '"GET /static/app.css HTTP/1.1" 200' in log
    assert f'"{base}/helpscout/sidebar"' in log  # the Referer, without its query
    assert '"GET /billing/update-card/<token> HTTP/1.1" 303' in log
    secrets = [
        signature,
        quote(signature, safe=""),
        "X-HelpScout-Signature",
        "customerEmail",
        "bob%40example.com",
        "bob@example.com",
        update_card_link,
        *(part for part in update_card_link.split(".") if len(part) >= 10),
        "utm=mail",
    ]
    leaked = [secret for secret in secrets if secret and secret in log]
    assert leaked == [], log


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        ("/helpscout/sidebar?conversationId=1&X-HelpScout-Signature=abc%3D", "/helpscout/sidebar"),
        ("/billing/update-card/eyJjIjoiY3VzIn0.Z1x2ab.sig-_x", "/billing/update-card/<token>"),
        ("/billing/update-card/TOKEN?utm=mail#top", "/billing/update-card/<token>"),
        ("//billing//update-card/TOKEN", "/billing/update-card/<token>"),
        ("/billing/update%2Dcard/TOKEN", "/billing/update-card/<token>"),
        ("/billing/update%252Dcard/TOKEN", "/billing/update-card/<token>"),
        ("/billing/UPDATE-CARD/TOKEN/", "/billing/UPDATE-CARD/<token>/"),
        (
            "http://billing.example.com/billing/update-card/TOKEN?x=1",
            "/billing/update-card/<token>",
        ),
        ("/tickets/3%0A127.0.0.1 - - fake line", "/tickets/3%0A127.0.0.1%20-%20-%20fake%20line"),
        ("/billing/card-updated", "/billing/card-updated"),
        ("*", "*"),
        ("", "-"),
    ],
)
def test_logged_paths_drop_queries_and_tokens(target, logged):
    """Whatever the spelling the router accepts, the token never reaches the log line."""
    assert redacted_path(target) == logged
