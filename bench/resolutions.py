"""Automatic resolutions through the production processes: arrival-to-closed time, and how many
a single worker closes per minute from a backlog.

    .venv/bin/python bench/resolutions.py [--emails 100] [--interval 1.0] [--backlog 200]
        [--phases latency,throughput] [--layout procfile|one] [--database-url URL]

Every email comes from its own Stripe customer (its own address, so the per-address auto-reply
limit never holds a reply back), is "authenticated" (our receiving server's DMARC pass), and
is of a kind the playbooks resolve on their own, in turn:

- ``duplicate_charge``: two charges of $49.00 today, an hour apart → refund the duplicate,
  confirm, close "Resolved — Refund issued";
- ``refund_request``: a $49.00 charge one day old, "renewed by accident yesterday" → refund,
  confirm, close;
- ``charge_after_cancellation``: a subscription cancelled 10 days ago, its renewal charged
  3 days ago → prorated refund (all of it), confirm, close;
- ``authorization_hold``: an uncaptured $120.00 charge → explain the hold, close.

Five wordings per kind; the bench classifies every wording first (``mail.classifier``) and
says if one lands in another category or below the confidence the policy needs.

The product's own processes run as children, with the settings in their environment:
``billing-desk poll-mail`` (continuous, IMAP IDLE, as the Procfile's ``mailpoll``) and the
workers. Before each phase four warm-up emails (one per kind, not counted) go through and
close, so the classifier's load is not in the figures.

- ``latency``: ``--emails`` emails appended one at a time, every ``--interval`` seconds, to
  the workers of ``--layout``: ``procfile`` (``worker --queue actions --processes 1`` beside
  ``worker --queue mail``, a mail worker per CPU) or ``one`` (``worker --processes 1`` on both
  queues). Arrival is the moment the IMAP APPEND returned (the bench's clock); closed is the
  ticket's ``closed_at``. The time is split at ``InboundEmail.received_at`` (the poller stored
  it) and ``processed_at`` (triage done, plan stored).
- ``throughput``: ``--backlog`` emails appended at once (MULTIAPPEND, 100 a command) to one
  ``worker --processes 1`` serving both queues; resolutions per minute from the first close
  to the last ((closed - 1) / span), and from the first append to the last close.

Each phase starts from a fresh database, Redis database and mailbox and an emptied fake
Stripe. SQLite and an embedded Redis unless ``--database-url`` (PostgreSQL: a scratch
database of its own, dropped after) or REDIS_URL (that database is flushed) say otherwise.
Prints figures; asserts nothing about time. Tickets that did not close are listed with their
status, notes and plan steps; the emails the SMTP sink received for the phase's customers are
counted by template; each email's times (seconds from its arrival to stored, triaged and
closed) go to ``latency.csv`` / ``throughput.csv`` in the logs' directory.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import email.utils
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import psutil
from imapclient import IMAPClient
from redis import Redis
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker
from worker_models import KEY, PASSWORD, ROOT, USER, Bench

from core.db import make_engine, make_session_factory, session_scope, upgrade
from core.db.models import Action, InboundEmail, Plan, Ticket
from core.policy import PolicyConfig
from core.settings import Settings
from helpdesk_app.demo import servers
from helpdesk_app.demo.seed import (
    DAY,
    DemoCustomer,
    create_charge,
    create_customer,
    create_subscription,
    set_subscription_state,
)

WORKERS = {
    "procfile": [
        ["--queue", "actions", "--processes", "1"],
        ["--queue", "automation", "--queue", "mail"],
    ],
    "one": [["--processes", "1"]],
}
POLL_SECONDS = 0.2
WARM_UP_TIMEOUT = 180.0
STALL_TIMEOUT = 90.0  # no ticket closed for this long after the last arrival: give up waiting

# (subject, body) per kind; {name} is the customer's. Each wording was checked with
# mail.classifier (and is again at every run).
WORDINGS: dict[str, list[tuple[str, str]]] = {
    "duplicate_charge": [
        (
            "Charged twice today",
            "Hi,\n\nI was charged twice for the Pro plan today: $49.00 two times on my card. "
            "Could you refund the extra one?\n\nThanks,\n{name}\n",
        ),
        (
            "Double charge on my card",
            "Hello, my bank app shows two identical payments of $49.00 to you this morning. I "
            "only have one subscription. Please refund the duplicate.\n\n{name}\n",
        ),
        (
            "Duplicate payment",
            "You took my payment twice today, same amount both times. Can one of them be "
            "reversed?\n{name}\n",
        ),
        (
            "Two charges for one renewal",
            "Hi team, my renewal went through twice a little while ago ($49 each). Please give "
            "me back the second one. Regards, {name}\n",
        ),
        (
            "Billed two times",
            "Hey, I see I've been billed two times for the same thing today. 49 dollars, twice. "
            "Can you fix that?\n\n{name}\n",
        ),
    ],
    "refund_request": [
        (
            "Refund please",
            "Hi, my plan renewed by accident yesterday and I did not mean to keep it. Could I "
            "get a refund for the renewal please?\n\n{name}\n",
        ),
        (
            "Refund for the renewal",
            "Hello, I forgot to switch off auto-renew and my subscription renewed yesterday. "
            "Could I have a refund?\n{name}\n",
        ),
        (
            "Can I get my money back?",
            "Hi there, the $49 renewal charged yesterday was a mistake on my side, I meant to "
            "stop the plan. I'd like a refund if possible.\n\nThanks, {name}\n",
        ),
        (
            "Refund request",
            "Good morning, my account renewed yesterday by accident. I would like a refund of "
            "that payment as I will not use the service this month.\n{name}\n",
        ),
        (
            "Please refund the renewal",
            "Hi, yesterday my yearly... sorry, monthly plan renewed without me meaning it to. "
            "Can you refund it?\n{name}\n",
        ),
    ],
    "charge_after_cancellation": [
        (
            "Charged after I cancelled",
            "Hi, I cancelled my Pro subscription ten days ago but you still charged me $49 on "
            "the renewal. Please refund it.\n\n{name}\n",
        ),
        (
            "Billed after cancellation",
            "Hello, I cancelled my subscription last week and yet I was billed $49.00 three "
            "days ago. Please refund this charge.\n{name}\n",
        ),
        (
            "Why was I charged? I cancelled",
            "I cancelled my account ten days ago and there is still a new charge from you on "
            "my card. I should not have been charged after cancelling. Please refund.\n{name}\n",
        ),
        (
            "Still being charged after cancelling",
            "Hi, I ended my plan over a week ago but your system renewed it anyway and took "
            "$49. Can you refund the charge after my cancellation?\n\nBest, {name}\n",
        ),
        (
            "Cancelled but charged anyway",
            "Hello team, I cancelled my subscription before the renewal date, but I was still "
            "charged for another month. Please refund it.\n{name}\n",
        ),
    ],
    "authorization_hold": [
        (
            "Pending charge on my card",
            "Hi, there is a pending authorization of $120.00 on my card from you that I don't "
            "understand. It says pending, not posted. Is this a hold? When will it go away?\n"
            "{name}\n",
        ),
        (
            "Pending charge of $120 on my card",
            "Hi, there is a pending charge of $120.00 from you on my card. Can you tell me what "
            "it is and whether it will actually be taken?\n\n{name}\n",
        ),
        (
            "Authorization hold?",
            "Hello, my bank shows a $120 authorization from your company that hasn't gone "
            "through yet. Is it a temporary hold? How long until it drops off?\n{name}\n",
        ),
        (
            "Pending transaction",
            "There's a pending transaction of 120 dollars from you on my statement. It hasn't "
            "posted. What is it for and when does it disappear?\n{name}\n",
        ),
        (
            "Hold on my card",
            "Hi, why is there a hold of $120.00 on my credit card from you? It shows as "
            "pending. Will it be released?\nThanks, {name}\n",
        ),
    ],
}
KINDS = tuple(WORDINGS)


@dataclass
class Sent:
    """One email of a phase: who sent it, what kind, and when it arrived (bench clock)."""

    n: int
    kind: str
    who: DemoCustomer
    raw: bytes
    arrived: float | None = None


@dataclass
class Outcome:
    """What became of one email, from the database."""

    sent: Sent
    status: str | None = None
    resolution: str | None = None
    received: float | None = None
    processed: float | None = None
    closed: float | None = None
    notes: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)

    @property
    def total(self) -> float | None:
        if self.closed is None or self.sent.arrived is None:
            return None
        return self.closed - self.sent.arrived


def check_wordings() -> None:
    """Classify every wording as the worker will; print the ones that would miss."""
    from mail.classifier import classify_many
    from mail.classifier import load as load_classifier

    load_classifier()
    min_confidence = PolicyConfig().min_classifier_confidence  # policy.toml's, the default
    items = [
        (kind, subject, body.format(name="Pat Quinn"))
        for kind, wordings in WORDINGS.items()
        for subject, body in wordings
    ]
    results = classify_many([(subject, body) for _, subject, body in items])
    misses = []
    for (kind, subject, _), result in zip(items, results, strict=True):
        if result.category != kind or result.confidence < min_confidence:
            misses.append(f"  {kind}: {subject!r} -> {result.category} {result.confidence:.2f}")
    lowest = min(r.confidence for r in results)
    print(
        f"classifier: {len(items) - len(misses)}/{len(items)} wordings in their category at "
        f">= {min_confidence} (lowest confidence {lowest:.2f})"
    )
    for miss in misses:
        print(miss)


def make_email(sent_n: int, kind: str, who: DemoCustomer) -> bytes:
    wordings = WORDINGS[kind]
    subject, body = wordings[(sent_n // len(KINDS)) % len(wordings)]
    msg = EmailMessage()
    msg["From"] = email.utils.formataddr((who.name, who.email))
    msg["To"] = USER
    msg["Subject"] = subject
    msg["Message-ID"] = email.utils.make_msgid(domain=who.email.rpartition("@")[2])
    msg["Date"] = email.utils.formatdate()
    msg.set_content(body.format(name=who.name))
    return servers.sender_verified(msg.as_bytes())  # DMARC passed at our mail server


class Resolutions:
    """The embedded servers (bench/worker_models.py's), the database, and the processes."""

    def __init__(self, scratch: Path, database_url: str | None) -> None:
        self.scratch = scratch
        self.bench = Bench(scratch, 0)
        self.admin_url = database_url if database_url and "postgres" in database_url else None
        self.pg_databases: list[str] = []
        self.runs = 0
        self.processes: list[subprocess.Popen[bytes]] = []

    # --- state ------------------------------------------------------------------------------

    def fresh_settings(self) -> Settings:
        """A migrated empty database, an empty Redis database, mailbox and fake Stripe."""
        self.runs += 1
        if self.admin_url:
            name = f"bench_resolutions_{uuid.uuid4().hex[:10]}"
            admin = make_engine(self.admin_url).execution_options(isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
            admin.dispose()
            self.pg_databases.append(name)
            url = make_url(self.admin_url).set(database=name)
            database_url = url.render_as_string(hide_password=False)
        else:
            database_url = f"sqlite:///{self.scratch / f'run-{self.runs}.sqlite3'}"
        bench = self.bench
        settings = servers.embedded_settings(
            database_url=database_url,
            redis_url=bench.redis_url or "",
            stripe=bench.stripe,
            stripe_key=KEY,
            imap=bench.imap,
            mailbox_user=USER,
            mailbox_password=PASSWORD,
            smtp=bench.smtp,
        )
        upgrade(make_engine(settings.database_url))
        Redis.from_url(settings.redis_url or "").flushdb()
        request = urllib.request.Request(f"{bench.stripe.url}/_config/data", method="DELETE")
        with urllib.request.urlopen(request, timeout=30):
            pass
        with self.inbox() as inbox:
            existing = inbox.search(["ALL"])
            if existing:
                inbox.delete_messages(existing)
                inbox.expunge()
        bench.smtp.messages.clear()
        return settings

    def inbox(self) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.bench.imap.port, ssl=False)
        client.login(USER, PASSWORD)
        client.select_folder("INBOX")
        return client

    def seed(self, tag: str, count: int, offset: int = 0) -> list[Sent]:
        """``count`` customers, each with the Stripe history its email's kind needs."""
        client, api = self.bench.stripe_client, self.bench.stripe.url
        emails = []
        for n in range(offset, offset + count):
            kind = KINDS[n % len(KINDS)]
            who = DemoCustomer(
                f"Customer {tag}{n}",
                f"{tag}{n}@{tag}{n}.bench.example",
                f"T-{20000 + n}",
                f"Org {tag}{n}",
                "4242424242424242",
            )
            customer = create_customer(client, who)
            if kind == "duplicate_charge":
                create_charge(client, api, customer, 4900, "Pro plan — monthly", days_ago=0.05)
                create_charge(client, api, customer, 4900, "Pro plan — monthly")
            elif kind == "refund_request":
                create_charge(client, api, customer, 4900, "Pro plan — monthly", days_ago=1)
            elif kind == "charge_after_cancellation":
                sub = create_subscription(client, api, customer, "Pro", 4900, days_ago=33)
                create_charge(client, api, customer, 4900, "Pro plan — monthly", days_ago=3)
                set_subscription_state(
                    api, sub, status="canceled", canceled_at=int(time.time() - 10 * DAY)
                )
            else:
                create_charge(client, api, customer, 12000, "Seat top-up", capture=False)
            emails.append(Sent(n, kind, who, make_email(n, kind, who)))
        return emails

    # --- processes ----------------------------------------------------------------------------

    def start(self, settings: Settings, phase: str, worker_sets: list[list[str]]) -> None:
        """The poller and the workers, as the Procfile starts them (not --burst)."""
        commands = [["poll-mail"]] + [["worker", *args] for args in worker_sets]
        for index, args in enumerate(commands):
            log = open(self.scratch / f"{phase}-{index}-{args[0]}.log", "wb")  # noqa: SIM115
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "helpdesk_app", *args],
                    env=self.bench.env(settings),
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stopped with its children
                )
            )

    def stop_processes(self) -> None:
        """SIGTERM each process (a supervisor stops its workers), then SIGKILL what is left of
        its process group."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):  # a worker that outlived its supervisor
                os.killpg(process.pid, signal.SIGKILL)
        self.processes.clear()

    def check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise SystemExit(f"{process.args} exited with {process.returncode}")

    def stop(self) -> None:
        self.stop_processes()
        self.bench.stop()
        if self.admin_url and self.pg_databases:
            admin = make_engine(self.admin_url).execution_options(isolation_level="AUTOCOMMIT")
            with admin.connect() as connection:
                for name in self.pg_databases:
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

    # --- measuring ----------------------------------------------------------------------------

    def closed_count(self, factory: sessionmaker, emails: list[Sent]) -> int:
        addresses = [s.who.email for s in emails]
        with session_scope(factory) as session:
            query = select(Ticket.requester_email).where(
                Ticket.requester_email.in_(addresses), Ticket.status == "closed"
            )
            return len(session.scalars(query).all())

    def wait_closed(self, factory: sessionmaker, emails: list[Sent], timeout: float) -> int:
        """Until every email's ticket is closed, or nothing closed for ``timeout`` seconds."""
        last, last_change = -1, time.perf_counter()
        while True:
            self.check_alive()
            count = self.closed_count(factory, emails)
            if count >= len(emails):
                return count
            if count != last:
                last, last_change = count, time.perf_counter()
            elif time.perf_counter() - last_change > timeout:
                return count
            time.sleep(POLL_SECONDS)

    def warm_up(self, settings: Settings, factory: sessionmaker) -> None:
        """One email of each kind through every process, not counted."""
        emails = self.seed("w", len(KINDS))
        started = time.perf_counter()
        with self.inbox() as inbox:
            inbox.multiappend("INBOX", [s.raw for s in emails])
        closed = self.wait_closed(factory, emails, WARM_UP_TIMEOUT)
        print(
            f"  warm-up: {closed}/{len(emails)} closed in {time.perf_counter() - started:.1f} s "
            "(start-up and the classifier's load included)",
            flush=True,
        )
        if closed < len(emails):
            report_unclosed(outcomes(factory, emails))

    def latency(self, emails_count: int, interval: float, layout: str) -> list[Outcome]:
        settings = self.fresh_settings()
        factory = make_session_factory(make_engine(settings.database_url))
        seeded = time.perf_counter()
        emails = self.seed("a", emails_count)
        print(f"  seeded {emails_count} customers in {time.perf_counter() - seeded:.1f} s")
        self.start(settings, "latency", WORKERS[layout])
        try:
            self.warm_up(settings, factory)
            with self.inbox() as inbox:
                next_at = time.perf_counter()
                for sent in emails:
                    time.sleep(max(0.0, next_at - time.perf_counter()))
                    inbox.append("INBOX", sent.raw)
                    sent.arrived = time.time()
                    next_at += interval
            self.wait_closed(factory, emails, STALL_TIMEOUT)
        finally:
            self.stop_processes()
        print(f"  emails to the customers: {replies(self.bench.smtp, emails)}")
        return outcomes(factory, emails)

    def throughput(self, backlog: int) -> tuple[list[Outcome], float]:
        settings = self.fresh_settings()
        factory = make_session_factory(make_engine(settings.database_url))
        seeded = time.perf_counter()
        emails = self.seed("b", backlog)
        print(f"  seeded {backlog} customers in {time.perf_counter() - seeded:.1f} s")
        self.start(settings, "throughput", WORKERS["one"])
        try:
            self.warm_up(settings, factory)
            appended = time.time()
            with self.inbox() as inbox:
                for start in range(0, len(emails), 100):
                    inbox.multiappend("INBOX", [s.raw for s in emails[start : start + 100]])
                    now = time.time()
                    for sent in emails[start : start + 100]:
                        sent.arrived = now
            self.wait_closed(factory, emails, STALL_TIMEOUT)
        finally:
            self.stop_processes()
        print(f"  emails to the customers: {replies(self.bench.smtp, emails)}")
        return outcomes(factory, emails), appended


def replies(sink: servers.SmtpSink, emails: list[Sent]) -> str:
    """The emails the SMTP sink received for these customers, by our template."""
    addresses = {s.who.email for s in emails}
    sent = Counter(
        str(m["X-Billing-Desk"])
        for m in list(sink.messages)
        if email.utils.parseaddr(str(m["To"]))[1] in addresses
    )
    return ", ".join(f"{template} ×{n}" for template, n in sorted(sent.items())) or "none"


def outcomes(factory: sessionmaker, emails: list[Sent]) -> list[Outcome]:
    """Each email's ticket, times and, for one not closed, why."""
    by_address = {s.who.email: Outcome(s) for s in emails}
    with session_scope(factory) as session:
        tickets = session.scalars(
            select(Ticket).where(Ticket.requester_email.in_(list(by_address)))
        ).all()
        for ticket in tickets:
            outcome = by_address[ticket.requester_email]
            outcome.status, outcome.resolution = ticket.status, ticket.resolution
            if ticket.closed_at is not None:
                outcome.closed = ticket.closed_at.timestamp()
            inbound = session.scalars(
                select(InboundEmail).where(InboundEmail.ticket_id == ticket.id)
            ).first()
            if inbound is not None:
                outcome.received = inbound.received_at.timestamp()
                if inbound.processed_at is not None:
                    outcome.processed = inbound.processed_at.timestamp()
            if ticket.status != "closed":
                outcome.notes = [m.body for m in ticket.messages if m.kind == "note"]
                for plan in session.scalars(select(Plan).where(Plan.ticket_id == ticket.id)):
                    steps = session.scalars(
                        select(Action).where(Action.plan_id == plan.id).order_by(Action.position)
                    )
                    described = ", ".join(
                        f"{a.kind} {a.status}" + (f" ({a.error})" if a.error else "") for a in steps
                    )
                    outcome.steps.append(f"plan {plan.title!r} {plan.status}: {described}")
    return list(by_address.values())


def nearest_rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(fraction * len(ordered)) - 1)]


def describe(values: list[float]) -> str:
    if not values:
        return "—"
    return (
        f"median {statistics.median(values):.2f} s, p95 {nearest_rank(values, 0.95):.2f} s, "
        f"max {max(values):.2f} s"
    )


def report_unclosed(results: list[Outcome]) -> None:
    for outcome in results:
        if outcome.status == "closed":
            continue
        sent = outcome.sent
        print(f"    not closed: #{sent.n} {sent.kind} {sent.who.email}: ticket {outcome.status}")
        for note in outcome.notes:
            print(f"      note: {note}")
        for step in outcome.steps:
            print(f"      {step}")


def write_csv(path: Path, results: list[Outcome]) -> None:
    """Every email's times, in seconds from its arrival, for a closer look."""
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["n", "kind", "status", "resolution", "stored", "triaged", "closed"])
        for o in results:
            since = [
                f"{t - o.sent.arrived:.3f}" if t is not None and o.sent.arrived else ""
                for t in (o.received, o.processed, o.closed)
            ]
            writer.writerow([o.sent.n, o.sent.kind, o.status, o.resolution, *since])


def report_latency(results: list[Outcome]) -> None:
    closed = [o for o in results if o.total is not None]
    print(f"  closed {len(closed)}/{len(results)}")
    print(f"  arrival -> closed:       {describe([o.total for o in closed if o.total])}")
    poll = [o.received - o.sent.arrived for o in closed if o.received and o.sent.arrived]
    triage = [o.processed - o.received for o in closed if o.processed and o.received]
    steps = [o.closed - o.processed for o in closed if o.closed and o.processed]
    late = sum(p > 0.5 for p in poll)
    print(f"    arrival -> stored:     {describe(poll)}; {late} stored more than 0.5 s after")
    print(f"    stored -> triaged:     {describe(triage)}")
    print(f"    triaged -> closed:     {describe(steps)}")
    stored = [o.closed - o.received for o in closed if o.closed and o.received]
    print(f"  stored -> closed:        {describe(stored)} (the product, IMAP's notice left out)")
    print("  arrival -> closed by kind:")
    for kind in KINDS:
        times = [o.total for o in closed if o.sent.kind == kind and o.total is not None]
        count = sum(o.sent.kind == kind for o in results)
        print(f"    {kind:<26} {len(times)}/{count} closed, {describe(times)}")
    resolutions = Counter(o.resolution for o in closed)
    print("  resolutions: " + ", ".join(f"{r} ×{n}" for r, n in resolutions.most_common()))
    slowest = sorted(closed, key=lambda o: o.total or 0.0, reverse=True)[:3]
    print("  slowest: " + "; ".join(f"#{o.sent.n} {o.sent.kind} {split(o)}" for o in slowest))
    report_unclosed(results)


def split(outcome: Outcome) -> str:
    """An email's time, and its parts: to stored, to triaged, to closed."""
    sent, received, processed, closed = (
        outcome.sent.arrived,
        outcome.received,
        outcome.processed,
        outcome.closed,
    )
    if None in (sent, received, processed, closed):
        return "—"
    assert sent and received and processed and closed
    return (
        f"{closed - sent:.2f} s (stored {received - sent:.2f}, triaged {processed - received:.2f}"
        f", closed {closed - processed:.2f})"
    )


def report_throughput(results: list[Outcome], appended: float) -> None:
    closes = sorted(o.closed for o in results if o.closed is not None)
    print(f"  closed {len(closes)}/{len(results)}")
    if len(closes) >= 2:
        span = closes[-1] - closes[0]
        print(
            f"  first -> last close: {span:.1f} s, {(len(closes) - 1) / span * 60:.0f} "
            "resolutions/min"
        )
        whole = closes[-1] - appended
        print(
            f"  first append -> last close: {whole:.1f} s, {len(closes) / whole * 60:.0f} "
            f"resolutions/min (first close {closes[0] - appended:.1f} s after the append)"
        )
    report_unclosed(results)


def load() -> str:
    """The load average, and the Python processes not ours: others sharing the machine."""
    mine = {os.getpid(), *(c.pid for c in psutil.Process().children(recursive=True))}
    others = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["pid"] not in mine and any("python" in part for part in cmdline[:1]):
            others.append(" ".join(cmdline[1:4]))
    averages = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"load average {averages}; other Python processes: {'; '.join(others) or 'none'}"


def bare_store_classify(bench: Bench, emails: list[Sent]) -> list[float]:
    """The reference: for each of the same emails, seconds from its IMAP APPEND to it stored
    and classified by the least an importer can do, already connected and told where to look:
    one UID FETCH, one INSERT of the raw bytes into a plain table, ``mail.classifier`` on the
    parsed text (loaded before). No IDLE wait, no Stripe, no plan, no reply, no close."""
    from email import message_from_bytes, policy

    from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table

    from mail.classifier import classify_many

    engine = make_engine(f"sqlite:///{bench.scratch / 'bare.sqlite3'}")
    table = Table(
        "bare_mail",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("raw", LargeBinary),
        Column("category", String(40)),
    )
    table.create(engine)
    writer = IMAPClient("127.0.0.1", port=bench.imap.port, ssl=False)
    writer.login(USER, PASSWORD)
    reader = IMAPClient("127.0.0.1", port=bench.imap.port, ssl=False)
    reader.login(USER, PASSWORD)
    reader.select_folder("INBOX")
    times = []
    for sent in emails:
        appended = writer.append("INBOX", sent.raw)
        started = time.perf_counter()
        reader.noop()  # the reader's session learns of the new message
        uid = int(appended.split(b"]")[0].split()[-1]) if b"APPENDUID" in appended else None
        if uid is None:
            uid = max(reader.search(["ALL"]))
        raw = reader.fetch([uid], ["RFC822"])[uid][b"RFC822"]
        parsed = message_from_bytes(raw, policy=policy.default)
        body = parsed.get_body(preferencelist=("plain",))
        text_ = body.get_content() if body is not None else ""
        category = classify_many([(str(parsed["Subject"] or ""), str(text_))])[0].category
        with engine.begin() as connection:
            connection.execute(table.insert(), {"raw": raw, "category": str(category)})
        times.append(time.perf_counter() - started)
    writer.logout()
    reader.logout()
    engine.dispose()
    return times


@dataclass
class ResolutionFigures:
    """The latency phase's and the throughput phase's figures, and the reference's."""

    emails: int = 0
    closed: int = 0
    arrival_to_closed: list[float] = field(default_factory=list)
    stored_to_closed: list[float] = field(default_factory=list)
    late_stores: int = 0  # stored more than 0.5 s after arrival
    bare_store_classify: list[float] = field(default_factory=list)
    backlog: int = 0
    backlog_closed: int = 0
    per_minute: float | None = None  # first close to last close
    per_minute_whole: float | None = None  # first append to last close


def latency_figures(figures: ResolutionFigures, results: list[Outcome]) -> None:
    """The latency phase's outcomes into ``figures``."""
    closed = [o for o in results if o.total is not None]
    figures.emails, figures.closed = len(results), len(closed)
    figures.arrival_to_closed = [o.total for o in closed if o.total is not None]
    figures.stored_to_closed = [o.closed - o.received for o in closed if o.closed and o.received]
    figures.late_stores = sum(
        1 for o in closed if o.received and o.sent.arrived and o.received - o.sent.arrived > 0.5
    )


def throughput_figures(figures: ResolutionFigures, results: list[Outcome], appended: float) -> None:
    """The throughput phase's outcomes into ``figures``."""
    closes = sorted(o.closed for o in results if o.closed is not None)
    figures.backlog, figures.backlog_closed = len(results), len(closes)
    if len(closes) >= 2:
        figures.per_minute = (len(closes) - 1) / (closes[-1] - closes[0]) * 60
        figures.per_minute_whole = len(closes) / (closes[-1] - appended) * 60


def measure(
    emails: int = 100,
    interval: float = 1.0,
    backlog: int = 200,
    phases: tuple[str, ...] = ("latency", "throughput"),
    layout: str = "procfile",
    database_url: str | None = None,
) -> ResolutionFigures:
    """Run the phases (printing as it goes) and the reference; the figures."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-resolutions-"))
    database = "PostgreSQL" if database_url and "postgres" in database_url else "SQLite"
    redis = "Redis at REDIS_URL" if os.environ.get("REDIS_URL") else "embedded Redis"
    print(
        f"{datetime.date.today()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{database}, {redis}; logs in {scratch}",
        flush=True,
    )
    print(load())
    check_wordings()
    figures = ResolutionFigures()
    bench = Resolutions(scratch, database_url)
    try:
        if "latency" in phases:
            print(
                f"latency: {emails} emails, one every {interval:g} s, workers "
                f"{layout!r}: " + " + ".join(f"worker {' '.join(w)}" for w in WORKERS[layout]),
                flush=True,
            )
            results = bench.latency(emails, interval, layout)
            write_csv(scratch / "latency.csv", results)
            report_latency(results)
            latency_figures(figures, results)
            print(f"  {load()}", flush=True)
            figures.bare_store_classify = bare_store_classify(
                bench.bench, [o.sent for o in results]
            )
            print(
                "  reference, the same emails' APPEND -> fetched, stored and classified by a "
                f"bare loop: {describe(figures.bare_store_classify)}",
                flush=True,
            )
        if "throughput" in phases:
            print(
                f"throughput: a backlog of {backlog} emails appended at once, one "
                "worker --processes 1 on both queues",
                flush=True,
            )
            results, appended = bench.throughput(backlog)
            write_csv(scratch / "throughput.csv", results)
            report_throughput(results, appended)
            throughput_figures(figures, results, appended)
            print(f"  {load()}", flush=True)
    finally:
        bench.stop()
    return figures


def main() -> None:
    """Run the phases and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--emails", type=int, default=100)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--backlog", type=int, default=200)
    parser.add_argument("--phases", default="latency,throughput")
    parser.add_argument("--layout", choices=sorted(WORKERS), default="procfile")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    args = parser.parse_args()
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    measure(args.emails, args.interval, args.backlog, phases, args.layout, args.database_url)


if __name__ == "__main__":
    main()
