"""Which worker process model turns a mailbox backlog into classified tickets fastest.

    .venv/bin/python bench/worker_models.py [--emails 1000] [--runs 3] [--models ...]

For each run it puts ``--emails`` billing emails (mixed categories; three senders in four
have a Stripe customer, the double-charge ones with two identical charges) in a pymap
mailbox, runs the real ``billing-desk poll-mail --once`` as a child process to store and
queue them, then starts one candidate worker model as child processes with the product's
settings in their environment, and times it until every email is a classified ticket and the
worker has exited (``--burst``: refunds, confirmation emails and closes included). Every run
starts from the same state: a fresh database, Redis and mailbox, and the fake Stripe emptied
and seeded again (its searches scan every customer, so a store that grew from run to run would
slow later runs down). Besides tickets per second it reports the time to the first job, the
peak memory per process (RSS, and the private part not shared with any other process), and CPU
seconds per email: the worker processes' own (from ``wait4``) and the fake Stripe's, which
shares the same CPUs (it is a single Python process and the busiest one here).

Models (``--models``, comma-separated):

- ``cli`` or ``cli:K``: ``billing-desk worker --burst`` (with ``--processes K``), what
  production runs, whatever the code of this checkout does;
- ``fork``: RQ's forking ``Worker`` with the classifier loaded before it forks, as
  ``billing-desk worker`` ran it before the pool (kept here so it can be measured again);
- ``simple``: one process running RQ's ``SimpleWorker`` (no fork, no supervisor);
- ``rq-pool:K``: RQ's ``WorkerPool`` of K ``SimpleWorker`` processes, classifier loaded first;
- ``spawn``: RQ's ``SpawnWorker`` (a fresh interpreter per job; try it with few emails);
- ``in-process``: ``jobs.worker.drain_queues`` in this process, what the tests and
  ``bench/mail_to_refund.py`` do (the classifier is loaded before the clock starts).

Prints figures; asserts nothing about time (it fails if emails are left unprocessed). Uses
SQLite and an embedded Redis unless REDIS_URL is set (database 12 on a shared machine).
"""

from __future__ import annotations

import argparse
import datetime
import email.utils
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import psutil
from imapclient import IMAPClient
from sqlalchemy import func, select

from core.db import make_engine, make_session_factory, session_scope, upgrade
from core.db.models import InboundEmail, Ticket
from core.settings import Settings
from core.stripe_gateway import make_stripe_client
from helpdesk_app.demo import servers
from helpdesk_app.demo.seed import DemoCustomer, create_charge, create_customer

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD, KEY = "billing@example.com", "bench", "sk_test_bench"
SAMPLE_SECONDS = 0.1
MEMORY_SAMPLE_SECONDS = 2.0  # reading smaps costs ~20 ms of CPU per process


@dataclass(frozen=True)
class Template:
    """One kind of billing email, modelled on the demo's customers (helpdesk_app/demo/seed.py)."""

    subject: str
    body: str
    twin_charges: bool = False  # the sender was charged twice: the playbook refunds one


TEMPLATES = (
    Template(
        "Charged twice this month",
        "Hi,\n\nI just checked my card statement and I was charged twice for the Pro plan "
        "today: $49.00 two times, about an hour apart. Could you refund the extra one?\n\n"
        "Thanks,\n{name}\n{org} (tenant {tenant})\n",
        twin_charges=True,
    ),
    Template("Updating the card on file", "Hello, how do I update the card on file? {name}\n"),
    Template(
        "My payment failed?",
        "Hi there, I got a notice that my payment failed this month. The card should be "
        "fine. What happened and what do I need to do?\n\n{name}\n",
    ),
    Template(
        "Refund for the analytics module",
        "Hello,\n\nWe bought the analytics module last week ($800) but never activated it. "
        "Could we get a refund?\n\n{name}\n{org}\n",
    ),
    Template(
        "Disputed charge",
        "I did not recognise a $199 charge so I disputed it with my bank. Please stop "
        "charging me.\n\n{name}\n",
    ),
    Template(
        "Charged after I cancelled",
        "Hi, I cancelled my Pro subscription ten days ago but you still charged me $49 on "
        "the renewal. Please refund it.\n\n{name}\n",
    ),
    Template(
        "Pending charge of $120 on my card",
        "Hi, there is a pending charge of $120.00 from you on my card but I only topped up "
        "seats once last week. Can you check?\n\n{name}\n",
    ),
    Template("Question about my bill", "Hi, which of my accounts was charged $19 this week?\n"),
    Template(
        "Please cancel",
        "Please cancel my subscription at the end of this billing period. {name}, {org}\n",
    ),
    Template(
        "Unknown charge",
        "There is a $29 charge from you on my card and I never signed up for anything.\n",
    ),
    Template("Charged twice", "I was charged twice today."),  # bench/mail_to_refund.py's
)


def has_customer(n: int) -> bool:
    """Three senders in four are Stripe customers."""
    return n % 4 != 3


def sender(n: int) -> DemoCustomer:
    """Email n's sender."""
    return DemoCustomer(
        f"Customer {n}", f"c{n}@bench.example", f"T-{10000 + n}", f"Org {n}", "4242424242424242"
    )


def message(n: int) -> bytes:
    """Email n."""
    who, template = sender(n), TEMPLATES[n % len(TEMPLATES)]
    msg = EmailMessage()
    msg["From"] = email.utils.formataddr((who.name, who.email))
    msg["To"] = USER
    msg["Subject"] = template.subject
    msg["Message-ID"] = email.utils.make_msgid(domain="bench.example")
    msg["Date"] = email.utils.formatdate()
    msg.set_content(template.body.format(name=who.name, org=who.organization, tenant=who.tenant_id))
    return servers.sender_verified(msg.as_bytes())  # DMARC passed at our mail server


# --- the candidate worker processes -------------------------------------------------------


def serve(model: str) -> None:
    """Run one worker model in this process (``serve MODEL``), built from the environment the
    way ``billing-desk worker`` builds its runtime; burst mode."""
    import logging

    from rq import SimpleWorker, SpawnWorker, Worker
    from rq.worker_pool import WorkerPool

    from jobs import queues, runtime
    from mail import classifier

    # As the CLI configures it: per-request chatter from stripe-python costs time too.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("stripe", "mail.log", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    rt = runtime.build_runtime(Settings.from_env(os.environ))
    runtime.install(rt)
    kind, _, count = model.partition(":")
    if kind != "spawn":  # a spawned work-horse is a fresh interpreter: it loads its own
        classifier.load()
    names = list(queues.ALL_QUEUES)
    if kind == "rq-pool":
        WorkerPool(
            names, connection=rt.redis, num_workers=int(count), worker_class=SimpleWorker
        ).start(burst=True)
        return
    worker_class = {"fork": Worker, "simple": SimpleWorker, "spawn": SpawnWorker}[kind]
    worker_class([rt.queue(n) for n in names], connection=rt.redis).work(
        burst=True, with_scheduler=True
    )


def worker_command(model: str) -> list[str]:
    """The command line that starts a model's processes."""
    if model == "cli" or model.startswith("cli:"):
        _, _, count = model.partition(":")
        return [
            sys.executable,
            "-m",
            "helpdesk_app",
            "worker",
            "--burst",
            *(["--processes", count] if count else []),
        ]
    return [sys.executable, str(Path(__file__).resolve()), "serve", model]


# --- measuring ----------------------------------------------------------------------------


@dataclass
class Memory:
    """Peak resident and private memory seen per process role, in MiB."""

    main_rss: float = 0.0
    main_uss: float = 0.0
    child_rss: float = 0.0
    child_uss: float = 0.0
    child_pids: set[int] = field(default_factory=set)
    worker_cpu: float = 0.0  # seconds, every process of the model together
    stripe_cpu: float = 0.0  # seconds, the fake Stripe's

    def sample(self, root: psutil.Process) -> None:
        """Read the process tree once."""
        try:
            tree = [(root, True)] + [(c, False) for c in root.children(recursive=True)]
        except psutil.Error:
            return
        for process, is_main in tree:
            try:
                info = process.memory_full_info()
            except psutil.Error:
                continue
            rss, uss = info.rss / 2**20, info.uss / 2**20
            if is_main:
                self.main_rss, self.main_uss = max(self.main_rss, rss), max(self.main_uss, uss)
            else:
                self.child_pids.add(process.pid)
                self.child_rss, self.child_uss = max(self.child_rss, rss), max(self.child_uss, uss)


@dataclass
class RunResult:
    """One run of one model."""

    emails: int
    poll_seconds: float
    first_job_seconds: float | None  # worker start to the first processed email
    all_done_seconds: float  # worker start to the last processed email
    exit_seconds: float  # worker start to its exit (every job done)
    classified: int
    memory: Memory

    @property
    def tickets_per_second(self) -> float:
        """IMAP to classified ticket: the poll and the worker, start-up included."""
        return self.emails / (self.poll_seconds + self.all_done_seconds)

    @property
    def steady_per_second(self) -> float:
        """Once the first job ran: the worker's own throughput."""
        since = self.all_done_seconds - (self.first_job_seconds or 0.0)
        return (self.emails - 1) / max(since, 1e-9)


class Bench:
    """The embedded servers and the per-run state."""

    def __init__(self, scratch: Path, emails: int) -> None:
        self.scratch = scratch
        self.emails = emails
        self.stripe = servers.start_fake_stripe(log_path=scratch / "fake-stripe.log")
        self.stripe_process = psutil.Process(self.stripe.process.pid)
        self.imap = servers.start_imap_server(USER, PASSWORD)
        self.smtp = servers.start_smtp_sink()
        self.redis_url = os.environ.get("REDIS_URL")
        self.redis_server = None
        if not self.redis_url:
            self.redis_server = servers.start_embedded_redis(scratch / "redis")
            self.redis_url = f"redis://127.0.0.1:{self.redis_server.port}/0"
        self.stripe_client = make_stripe_client(KEY, self.stripe.url)
        self.runs = 0

    def stop(self) -> None:
        """Stop every server."""
        for server in (self.redis_server, self.imap, self.stripe):
            if server is not None:
                server.stop()
        self.smtp.stop()

    def stripe_cpu(self) -> float:
        """CPU seconds the fake Stripe has used so far."""
        times = self.stripe_process.cpu_times()
        return float(times.user + times.system)

    def prepare_run(self, seed_stripe: bool = True) -> Settings:
        """A fresh database, Redis and mailbox, and the fake Stripe emptied and (unless told
        not to: a run that only stores mail needs no customers) seeded."""
        self.runs += 1
        run = self.runs
        settings = servers.embedded_settings(
            database_url=f"sqlite:///{self.scratch / f'run-{run}.sqlite3'}",
            redis_url=self.redis_url or "",
            stripe=self.stripe,
            stripe_key=KEY,
            imap=self.imap,
            mailbox_user=USER,
            mailbox_password=PASSWORD,
            smtp=self.smtp,
        )
        upgrade(make_engine(settings.database_url))
        from redis import Redis

        Redis.from_url(settings.redis_url or "").flushdb()
        request = urllib.request.Request(f"{self.stripe.url}/_config/data", method="DELETE")
        with urllib.request.urlopen(request, timeout=30):
            pass
        for n in range(self.emails if seed_stripe else 0):
            if has_customer(n):
                customer = create_customer(self.stripe_client, sender(n))
                if TEMPLATES[n % len(TEMPLATES)].twin_charges:
                    for days_ago in (0.05, 0):
                        create_charge(
                            self.stripe_client, self.stripe.url, customer, 4900, "Pro", days_ago
                        )
        inbox = IMAPClient("127.0.0.1", port=self.imap.port, ssl=False)
        inbox.login(USER, PASSWORD)
        inbox.select_folder("INBOX")
        existing = inbox.search(["ALL"])
        if existing:
            inbox.delete_messages(existing)
            inbox.expunge()
        batch = [message(n) for n in range(self.emails)]
        for start in range(0, len(batch), 100):
            inbox.multiappend("INBOX", batch[start : start + 100])
        inbox.logout()
        self.smtp.messages.clear()
        return settings

    def env(self, settings: Settings) -> dict[str, str]:
        """The environment of the product's processes: these settings, this checkout's code."""
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, **settings.to_env(), "PYTHONPATH": path}

    def poll(self, settings: Settings, log_name: str) -> float:
        """Run ``billing-desk poll-mail --once``; its seconds."""
        started = time.perf_counter()
        with open(self.scratch / log_name, "wb") as log:
            subprocess.run(
                [sys.executable, "-m", "helpdesk_app", "poll-mail", "--once"],
                env=self.env(settings),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
        return time.perf_counter() - started

    def run_processes(self, model: str, settings: Settings, log_name: str) -> RunResult:
        """Poll, then run the model's processes until they exit, sampling progress."""
        poll_seconds = self.poll(settings, f"{log_name}.poll.log")
        processed = _processed_counter(settings)
        memory = Memory()
        stripe_before = self.stripe_cpu()
        started = time.perf_counter()
        first = done = None
        with open(self.scratch / f"{log_name}.worker.log", "wb") as log:
            process = subprocess.Popen(
                worker_command(model),
                env=self.env(settings),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            root = psutil.Process(process.pid)
            next_memory = 0.0
            while True:
                # wait4: the exit status and the CPU of the process and every child it reaped.
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    process.returncode = os.waitstatus_to_exitcode(status)
                    memory.worker_cpu = usage.ru_utime + usage.ru_stime
                    break
                elapsed = time.perf_counter() - started
                count = processed()
                if first is None and count:
                    first = elapsed
                if done is None and count >= self.emails:
                    done = elapsed
                if elapsed >= next_memory:
                    memory.sample(root)
                    next_memory = elapsed + MEMORY_SAMPLE_SECONDS
                time.sleep(SAMPLE_SECONDS)
        exit_seconds = time.perf_counter() - started
        memory.stripe_cpu = self.stripe_cpu() - stripe_before
        if process.returncode != 0:
            raise SystemExit(f"{model} exited with {process.returncode}; see {log.name}")
        count = processed()
        if count < self.emails:
            raise SystemExit(f"{model}: only {count} of {self.emails} emails were processed")
        return RunResult(
            self.emails,
            poll_seconds,
            first if first is not None else exit_seconds,
            done if done is not None else exit_seconds,
            exit_seconds,
            _classified(settings),
            memory,
        )

    def run_in_process(self, settings: Settings, log_name: str) -> RunResult:
        """Poll, then drain the queues in this process as the tests do."""
        import logging

        from jobs import runtime
        from jobs.worker import drain_queues
        from mail import classifier

        logging.getLogger("rq").setLevel(logging.WARNING)
        poll_seconds = self.poll(settings, f"{log_name}.poll.log")
        rt = runtime.build_runtime(settings)
        runtime.install(rt)
        classifier.load()  # once per process; not part of the figure
        stripe_before = self.stripe_cpu()
        cpu_before = time.process_time()  # this process: the SMTP sink's thread is in it too
        started = time.perf_counter()
        drain_queues(rt, logging_level="WARNING")
        seconds = time.perf_counter() - started
        runtime.install(None)
        own = psutil.Process().memory_full_info()
        memory = Memory(main_rss=own.rss / 2**20, main_uss=own.uss / 2**20)
        memory.worker_cpu = time.process_time() - cpu_before
        memory.stripe_cpu = self.stripe_cpu() - stripe_before
        return RunResult(
            self.emails, poll_seconds, None, seconds, seconds, _classified(settings), memory
        )


def _processed_counter(settings: Settings) -> Callable[[], int]:
    factory = make_session_factory(make_engine(settings.database_url))

    def count() -> int:
        with session_scope(factory) as session:
            query = select(func.count()).where(InboundEmail.status == "processed")
            return session.scalar(query) or 0

    return count


def _classified(settings: Settings) -> int:
    factory = make_session_factory(make_engine(settings.database_url))
    with session_scope(factory) as session:
        query = select(func.count()).select_from(Ticket).where(Ticket.category.is_not(None))
        return session.scalar(query) or 0


def _span(values: list[float], digits: int = 1) -> str:
    low, high = min(values), max(values)
    if round(low, digits) == round(high, digits):
        return f"{low:.{digits}f}"
    return f"{low:.{digits}f}–{high:.{digits}f}"


def report(model: str, results: list[RunResult]) -> str:
    """One line of figures, as ranges over the runs."""
    memory = [r.memory for r in results]
    pairs = [(r.memory, r) for r in results]
    children = max(len(m.child_pids) for m in memory)
    starts = [r.first_job_seconds for r in results if r.first_job_seconds is not None]
    first = _span(starts) if starts else "—"
    child = (
        f"child RSS {_span([m.child_rss for m in memory], 0)} MiB "
        f"(private {_span([m.child_uss for m in memory], 0)}, {children} seen)"
        if children
        else "no child process"
    )
    return (
        f"{model:<12} {_span([r.tickets_per_second for r in results])} tickets/s "
        f"(steady {_span([r.steady_per_second for r in results])}/s); "
        f"poll {_span([r.poll_seconds for r in results])} s; "
        f"first job {first} s; "
        f"all done {_span([r.all_done_seconds for r in results])} s, "
        f"exit {_span([r.exit_seconds for r in results])} s; "
        f"main RSS {_span([m.main_rss for m in memory], 0)} MiB "
        f"(private {_span([m.main_uss for m in memory], 0)}); {child}; "
        f"CPU per email: workers {_span([m.worker_cpu / r.emails * 1000 for m, r in pairs], 0)}"
        f" ms, fake Stripe {_span([m.stripe_cpu / r.emails * 1000 for m, r in pairs], 0)} ms; "
        f"classified {min(r.classified for r in results)}/{results[0].emails}"
    )


def main() -> None:
    """Run every model ``--runs`` times and print the figures."""
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--emails", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="in-process,fork,simple,rq-pool:2,cli:1,cli:2,cli:3")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]

    scratch = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    print(
        f"{datetime.date.today()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{args.emails} emails per run, {args.runs} runs per model; logs in {scratch}"
    )
    bench = Bench(scratch, args.emails)
    try:
        for model in models:
            results = []
            for index in range(args.runs):
                settings = bench.prepare_run()
                log_name = f"{model.replace(':', '-')}-{index + 1}"
                if model == "in-process":
                    results.append(bench.run_in_process(settings, log_name))
                else:
                    results.append(bench.run_processes(model, settings, log_name))
                print(f"  {model} run {index + 1}: {report(model, results[-1:])}", flush=True)
            print(report(model, results), flush=True)
            if len(results) > 1:
                median = statistics.median(r.tickets_per_second for r in results)
                print(f"{'':<12} median {median:.1f} tickets/s", flush=True)
    finally:
        bench.stop()


if __name__ == "__main__":
    main()
