"""Measure the mail flow on the embedded servers: latency to a resolved refund, and throughput.

    .venv/bin/python bench/mail_to_refund.py [--refunds 20] [--backlog 200]

Prints figures; asserts nothing. Uses SQLite and an embedded Redis unless DATABASE_URL /
REDIS_URL are set (a PostgreSQL DATABASE_URL gets a scratch database of its own).
"""

from __future__ import annotations

import argparse
import email.utils
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from figures import nearest_rank
from imapclient import IMAPClient
from sqlalchemy import select

from core.db import make_engine, session_scope, upgrade
from core.db.models import Ticket
from core.settings import Settings
from core.stripe_gateway import make_stripe_client
from helpdesk_app.demo import servers
from helpdesk_app.demo.seed import DemoCustomer, create_charge, create_customer
from jobs import runtime
from jobs.inbound import enqueue_inbound
from jobs.worker import drain_queues
from mail import classifier, poller
from mail.imap import ImapConfig

USER, PASSWORD, KEY = "billing@example.com", "bench", "sk_test_bench"


def message(sender: str, subject: str, body: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, USER, subject
    msg["Message-ID"] = email.utils.make_msgid(domain="example.com")
    msg["Date"] = email.utils.formatdate()
    msg.set_content(body)
    return servers.sender_verified(msg.as_bytes())  # DMARC passed at our mail server


def poll_and_work(rt: runtime.Runtime, settings: Settings) -> tuple[float, float]:
    """One poll, then a burst worker until the queues are empty; seconds for each."""
    started = time.perf_counter()
    config = ImapConfig.from_settings(settings)
    poller.poll_mailbox_once(config, rt.session_factory, lambda i: enqueue_inbound(rt, i))
    polled = time.perf_counter()
    drain_queues(rt, logging_level="WARNING")
    return polled - started, time.perf_counter() - polled


@dataclass
class MailToRefundFigures:
    """Latency to a closed refund ticket, the empty cycle beside it, and backlog rates."""

    refunds: int = 0
    resolved: int = 0
    latencies: list[float] = field(default_factory=list)
    empty_cycles: list[float] = field(default_factory=list)  # poll + drain, nothing to do
    backlog: int = 0
    poll_per_second: float = 0.0
    triage_per_second: float = 0.0
    classify_per_second: float = 0.0  # the same emails through the classifier alone


def measure(refunds: int = 20, backlog: int = 200) -> MailToRefundFigures:
    """Run both measurements (and their references); the figures."""
    figures = MailToRefundFigures(refunds=refunds, backlog=backlog)
    scratch = Path(tempfile.mkdtemp(prefix="bench-"))
    stripe_server = servers.start_fake_stripe()
    imap = servers.start_imap_server(USER, PASSWORD)
    smtp = servers.start_smtp_sink()
    redis_server = servers.start_embedded_redis(scratch / "redis")
    try:
        settings = servers.embedded_settings(
            database_url=f"sqlite:///{scratch / 'bench.sqlite3'}",
            redis_url=f"redis://127.0.0.1:{redis_server.port}/0",
            stripe=stripe_server,
            stripe_key=KEY,
            imap=imap,
            mailbox_user=USER,
            mailbox_password=PASSWORD,
            smtp=smtp,
        )
        upgrade(make_engine(settings.database_url))
        rt = runtime.build_runtime(settings)
        runtime.install(rt)
        stripe_client = make_stripe_client(KEY, stripe_server.url)
        inbox = IMAPClient("127.0.0.1", port=imap.port, ssl=False)
        inbox.login(USER, PASSWORD)

        for n in range(refunds):
            who = DemoCustomer(f"C{n}", f"c{n}@example.com", f"T-{n}", "Org", "4242424242424242")
            customer = create_customer(stripe_client, who)
            for _ in range(2):
                create_charge(stripe_client, stripe_server.url, customer, 4900, "Pro")
            inbox.append("INBOX", message(who.email, "Charged twice", "I was charged twice today."))
            started = time.perf_counter()
            poll_and_work(rt, settings)
            figures.latencies.append(time.perf_counter() - started)
            # The reference: the same cycle again with nothing new to store or do.
            started = time.perf_counter()
            poll_and_work(rt, settings)
            figures.empty_cycles.append(time.perf_counter() - started)
        with session_scope(rt.session_factory) as session:
            figures.resolved = sum(t.status == "closed" for t in session.scalars(select(Ticket)))

        texts = [("Question", "How do I update my card?")] * backlog
        for n, (subject, body) in enumerate(texts):
            inbox.append("INBOX", message(f"p{n}@example.com", subject, body))
        poll_seconds, work_seconds = poll_and_work(rt, settings)
        figures.poll_per_second = backlog / poll_seconds
        figures.triage_per_second = backlog / work_seconds
        started = time.perf_counter()
        for item in texts:
            classifier.classify_many([item])
        figures.classify_per_second = backlog / (time.perf_counter() - started)
        inbox.logout()
    finally:
        for server in (redis_server, imap, stripe_server):
            server.stop()
        smtp.stop()
    return figures


def main() -> None:
    """Run both measurements and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--refunds", type=int, default=20)
    parser.add_argument("--backlog", type=int, default=200)
    args = parser.parse_args()
    f = measure(args.refunds, args.backlog)
    latencies = sorted(f.latencies)
    print(f"double charge -> refund, email, closed ticket ({f.resolved}/{f.refunds} resolved):")
    print(
        f"  median {statistics.median(latencies) * 1000:.0f} ms, "
        f"p95 {nearest_rank(latencies, 0.95) * 1000:.0f} ms "
        f"(the same poll + drain with nothing to do: median "
        f"{statistics.median(f.empty_cycles) * 1000:.0f} ms)"
    )
    print(f"backlog of {f.backlog} emails (no Stripe customer):")
    print(f"  poll + store: {f.poll_per_second:.0f} emails/s")
    print(f"  triage into tickets (one worker): {f.triage_per_second:.0f} emails/s")
    print(f"  the same emails through the classifier alone: {f.classify_per_second:.0f} emails/s")


if __name__ == "__main__":
    main()
