"""`billing-desk demo`: every part of the product on embedded servers, with demo data."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path

import click
from imapclient import IMAPClient
from sqlalchemy import func, select

from core.db import make_engine, make_session_factory, session_scope, upgrade
from core.db.models import InboundEmail, StripeDispute
from core.domain import InboundStatus
from core.settings import Settings
from core.stripe_gateway import make_stripe_client
from helpdesk_app.demo import seed
from helpdesk_app.demo.servers import (
    ChildServer,
    embedded_settings,
    spawn,
    start_embedded_redis,
    start_fake_stripe,
    start_imap_server,
    start_smtp_sink,
    wait_for_port,
)

MAILBOX_USER = "billing@example.com"
MAILBOX_PASSWORD = "demo"
STRIPE_KEY = "sk_test_billing_desk_demo"
READY_TIMEOUT_SECONDS = 90


def _deliver(port: int, messages: list[bytes]) -> None:
    """Append messages to the demo mailbox, as a mail server would deliver them."""
    client = IMAPClient("127.0.0.1", port=port, ssl=False)
    client.login(MAILBOX_USER, MAILBOX_PASSWORD)
    for raw in messages:
        client.append("INBOX", raw)
    client.logout()


def _spawn(name: str, args: list[str], env: dict[str, str], directory: Path) -> ChildServer:
    """One of the product's own processes (`billing-desk ARGS`), logging to the demo directory."""
    argv = [sys.executable, "-m", "helpdesk_app", *args]
    return spawn(name, argv, directory / f"{name}.log", env=env)


def _wait_until_processed(settings: Settings, expected: int, children: list[ChildServer]) -> None:
    factory = make_session_factory(make_engine(settings.database_url))
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        for child in children:
            if child.process.poll() is not None:
                raise click.ClickException(
                    f"the {child.name} process stopped; see its log in the demo directory"
                )
        with session_scope(factory) as session:
            done = session.scalar(
                select(func.count()).where(InboundEmail.status == InboundStatus.PROCESSED)
            )
        if done is not None and done >= expected:
            return
        time.sleep(0.25)
    raise click.ClickException("the demo emails were not processed in time; see the logs")


def _wait_for_disputes(settings: Settings, children: list[ChildServer]) -> None:
    """Wait until each dispute in the demo's Stripe is a ticket escalated to Finance."""
    factory = make_session_factory(make_engine(settings.database_url))
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if any(child.process.poll() is not None for child in children):
            raise click.ClickException("a demo process stopped; see its log in the demo directory")
        with session_scope(factory) as session:
            disputes = session.scalars(select(StripeDispute)).all()
            if len(disputes) >= seed.DEMO_DISPUTES and all(d.ticket_id for d in disputes):
                return
        time.sleep(0.25)
    raise click.ClickException("the demo's disputes did not arrive by webhook in time")


class _Stop(Exception):
    """Raised by the signal handler so every started server is stopped on the way out."""


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def run_demo(directory: Path, web_port: int) -> None:
    """Start everything, seed it, wait until the demo mail is handled, and run until Ctrl-C."""
    # Explicit handlers: a process started in the background may inherit SIGINT as ignored,
    # and SIGTERM would otherwise skip the clean-up below.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    try:
        _run(directory, web_port)
    except _Stop:
        click.echo("\nstopped")


def _run(directory: Path, web_port: int) -> None:
    started = time.monotonic()
    directory = directory.resolve()
    shutil.rmtree(directory, ignore_errors=True)  # every demo starts fresh
    directory.mkdir(parents=True)
    # As `stripe listen --forward-to` does: the fake Stripe signs every event it makes and
    # delivers it to the demo's own webhook endpoint.
    webhook_secret = f"whsec_{secrets.token_hex(24)}"
    webhook_url = f"http://127.0.0.1:{web_port}/webhooks/stripe"
    with contextlib.ExitStack() as stack:
        stripe_server = start_fake_stripe(
            log_path=directory / "fake-stripe.log",
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
        )
        stack.callback(stripe_server.stop)
        imap = start_imap_server(MAILBOX_USER, MAILBOX_PASSWORD, log_path=directory / "imap.log")
        stack.callback(imap.stop)
        smtp = start_smtp_sink(keep_dir=directory / "outbox")
        stack.callback(smtp.stop)
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            embedded = start_embedded_redis(directory / "redis")
            stack.callback(embedded.stop)
            redis_url = f"redis://127.0.0.1:{embedded.port}/0"

        settings = embedded_settings(
            database_url=f"sqlite:///{directory / 'billing-desk.sqlite3'}",
            redis_url=redis_url,
            stripe=stripe_server,
            stripe_key=STRIPE_KEY,
            imap=imap,
            mailbox_user=MAILBOX_USER,
            mailbox_password=MAILBOX_PASSWORD,
            smtp=smtp,
            demo=True,
            secret_key=secrets.token_urlsafe(32),
            public_url=f"http://127.0.0.1:{web_port}",
            imap_poll_interval=2,
            stripe_webhook_secret=webhook_secret,
        )
        engine = make_engine(settings.database_url)
        upgrade(engine)
        with session_scope(make_session_factory(engine)) as session:
            seed.seed_agents(session)
        engine.dispose()

        env = {**os.environ, **settings.to_env()}
        children = [
            _spawn("worker", ["worker"], env, directory),
            _spawn("mailpoll", ["poll-mail"], env, directory),
            _spawn("web", ["web", "--port", str(web_port)], env, directory),
        ]
        for child in reversed(children):
            stack.callback(child.stop)
        wait_for_port(web_port, children[-1].process)
        # With the web process up, Stripe's history reaches the mirror through the webhooks,
        # and the disputes in it become tickets for Finance.
        seed.seed_stripe(make_stripe_client(STRIPE_KEY, stripe_server.url), stripe_server.url)
        emails = seed.demo_emails()
        _deliver(imap.port, emails)
        _wait_until_processed(settings, len(emails), children)
        _wait_for_disputes(settings, children)

        click.echo(
            f"\nBilling Desk demo is running (ready in {time.monotonic() - started:.1f} s).\n\n"
            f"  Inbox        {settings.public_url}/\n"
            f"  Sign in as   {', '.join(e for e, _, _ in seed.DEMO_AGENTS)}\n"
            f"               password {seed.DEMO_PASSWORD} (agent, lead, security, account"
            " manager, finance)\n"
            f"  Fake Stripe  {stripe_server.url}  (key {STRIPE_KEY})\n"
            f"  Webhooks     {webhook_url}  (signing secret {webhook_secret})\n"
            f"  IMAP         127.0.0.1:{imap.port}  {MAILBOX_USER} / {MAILBOX_PASSWORD}"
            "  (append mail here and it becomes a ticket)\n"
            f"  SMTP sink    127.0.0.1:{smtp.port}  (sent mail is kept in {directory / 'outbox'})\n"
            f"  Logs         {directory}\n\n"
            "Press Ctrl-C to stop.\n"
        )
        while all(child.process.poll() is None for child in children):
            time.sleep(0.5)
        click.echo("a demo process stopped unexpectedly; shutting down", err=True)
