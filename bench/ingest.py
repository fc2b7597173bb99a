"""IMAP to stored mail and IMAP to classified ticket: our poller and workers beside simpler loops
and django-helpdesk's own importer, on the same pymap mailbox.

    .venv/bin/python bench/ingest.py [--emails 300] [--no-peers]

Each method starts from the same ``--emails`` messages (bench/worker_models.py's billing mix)
appended to the INBOX of one pymap server, and a fresh SQLite database (worker_models.Bench's;
the reference loops write a plain table of their own into it):

- ``ours, stored``: the product's poller (``mail.poller.poll_mailbox_once``, in this
  process: connect, batched FETCHes, dedupe keys, store, queue each email for triage);
- ``ours, classified``: the real ``billing-desk poll-mail --once`` then ``billing-desk worker
  --burst --processes 2`` as child processes, until every email is a classified ticket
  (triage parses, classifies, looks the sender up in Stripe and plans; the plans' steps run
  too). Steady: emails over the poll (less the same command's run on an empty mailbox: its
  start-up) plus the time from the first triaged email to the last (the workers' start-up
  and classifier load left out); the start-up-included figure is kept;
- ``naive``: imapclient, one ``FETCH uid RFC822`` per message, each stored with an INSERT
  and a COMMIT of its own into a plain table (uid, raw) of the same database;
- ``batched``: one ``FETCH`` of all the UIDs (100 a command), one bulk INSERT per FETCH;
- ``naive + classify``: the naive loop parsing each message (``email.policy.default``) and
  classifying it with ``mail.classifier`` (loaded before the clock) before its INSERT;
- ``django-helpdesk``: its ``process_email`` (the ``get_email`` command) in its own scratch
  venv under ``bench/.peers/`` (made with pip from PyPI on the first run; gitignored), see
  bench/django_helpdesk_import.py. It creates a ticket per message and deletes the message.

Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

from imapclient import IMAPClient
from sqlalchemy import Column, Integer, LargeBinary, MetaData, String, Table, func, select
from sqlalchemy.engine import Engine
from worker_models import PASSWORD, USER, Bench, message

from core.db import make_engine
from core.db.models import InboundEmail
from core.settings import Settings
from jobs import runtime
from jobs.inbound import enqueue_inbound
from mail import classifier, poller
from mail.imap import ImapConfig

BENCH = Path(__file__).resolve().parent
PEERS = BENCH / ".peers"
DJANGO_HELPDESK = "django-helpdesk==2.6.1"
INSTALL_TIMEOUT = 300.0
FETCH_CHUNK = 100


@dataclass(frozen=True)
class IngestFigures:
    """Emails per second of each method; None where a method could not run (and why)."""

    emails: int
    ours_stored: float
    naive_stored: float
    batched_stored: float
    ours_classified: float
    ours_classified_wall: float
    ours_cpu_ms: float  # CPU per email: our worker processes'
    stripe_cpu_ms: float  # and the fake Stripe's, on the same cores
    naive_classified: float
    django_helpdesk: float | None
    django_helpdesk_tickets: int
    django_helpdesk_note: str


def fill_inbox(bench: Bench, emails: int) -> None:
    """Empty the INBOX and append the same ``emails`` messages again."""
    inbox = IMAPClient("127.0.0.1", port=bench.imap.port, ssl=False)
    inbox.login(USER, PASSWORD)
    inbox.select_folder("INBOX")
    existing = inbox.search(["ALL"])
    if existing:
        inbox.delete_messages(existing)
        inbox.expunge()
    batch = [message(n) for n in range(emails)]
    for start in range(0, len(batch), 100):
        inbox.multiappend("INBOX", batch[start : start + 100])
    inbox.logout()


def raw_table(engine: Engine) -> Table:
    """The simplest store of a message: its UID, its bytes, and (when classified) a category."""
    table = Table(
        "bench_raw_mail",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("uid", Integer, nullable=False),
        Column("raw", LargeBinary, nullable=False),
        Column("category", String(40)),
    )
    table.create(engine, checkfirst=True)
    return table


def timed(run: Callable[[], int]) -> tuple[float, int]:
    """Seconds a run took, and the count it returned."""
    started = time.perf_counter()
    count = run()
    return time.perf_counter() - started, count


def ours_stored(settings: Settings) -> tuple[float, int]:
    """The product's poller, once, in this process; seconds and emails stored."""
    rt = runtime.build_runtime(settings)
    runtime.install(rt)
    config = ImapConfig.from_settings(settings)

    def run() -> int:
        result = poller.poll_mailbox_once(
            config, rt.session_factory, lambda i: enqueue_inbound(rt, i)
        )
        return result.stored

    seconds, stored = timed(run)
    with rt.session_factory() as session:
        rows = session.scalar(select(func.count()).select_from(InboundEmail)) or 0
    runtime.install(None)
    return seconds, min(stored, rows)


def _text(raw: bytes) -> tuple[str, str]:
    parsed = message_from_bytes(raw, policy=policy.default)
    body = parsed.get_body(preferencelist=("plain", "html"))
    content = body.get_content() if body is not None else ""  # type: ignore[attr-defined]
    return str(parsed["Subject"] or ""), str(content)


def loop(settings: Settings, imap_port: int, *, batched: bool, classify: bool) -> int:
    """The reference loops: fetch and store every message, one at a time or in batches."""
    engine = make_engine(settings.database_url)
    table = raw_table(engine)
    client = IMAPClient("127.0.0.1", port=imap_port, ssl=False)
    client.login(USER, PASSWORD)
    client.select_folder("INBOX")
    uids = client.search(["ALL"])
    stored = 0
    if batched:
        for start in range(0, len(uids), FETCH_CHUNK):
            fetched = client.fetch(uids[start : start + FETCH_CHUNK], ["RFC822"])
            rows = [{"uid": uid, "raw": data[b"RFC822"]} for uid, data in fetched.items()]
            with engine.begin() as connection:
                connection.execute(table.insert(), rows)
            stored += len(rows)
    else:
        for uid in uids:
            raw = client.fetch([uid], ["RFC822"])[uid][b"RFC822"]
            category = None
            if classify:
                category = str(classifier.classify_many([_text(raw)])[0].category)
            with engine.begin() as connection:
                connection.execute(table.insert(), {"uid": uid, "raw": raw, "category": category})
            stored += 1
    client.logout()
    engine.dispose()
    return stored


def peer_python() -> tuple[Path | None, str]:
    """django-helpdesk's scratch venv, made on the first run; its python, or why not."""
    venv = PEERS / "django-helpdesk"
    python = venv / "bin" / "python"
    if python.exists():
        check = subprocess.run([str(python), "-c", "import helpdesk"], capture_output=True)
        if check.returncode == 0:
            return python, ""
    PEERS.mkdir(exist_ok=True)
    base = Path(sys.base_prefix) / "bin" / "python3"
    try:
        subprocess.run([str(base), "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                DJANGO_HELPDESK,
            ],
            check=True,
            capture_output=True,
            timeout=INSTALL_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return None, f"pip install {DJANGO_HELPDESK} took over {INSTALL_TIMEOUT:.0f} s"
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:]
        return None, f"pip install {DJANGO_HELPDESK} failed: {' '.join(last)[:120]}"
    return python, ""


def django_helpdesk(bench: Bench, emails: int) -> tuple[float | None, int, str]:
    """django-helpdesk's importer over the same mailbox: emails/s, tickets made, a note."""
    python, why = peer_python()
    if python is None:
        return None, 0, why
    fill_inbox(bench, emails)
    scratch = bench.scratch / "django-helpdesk"
    answer = subprocess.run(
        [
            *(str(python), str(BENCH / "django_helpdesk_import.py")),
            *("--port", str(bench.imap.port), "--user", USER, "--password", PASSWORD),
            *("--scratch", str(scratch)),
        ],
        capture_output=True,
        timeout=600,
        cwd=scratch.parent,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )
    if answer.returncode != 0:
        last = answer.stderr.decode(errors="replace").strip().splitlines()[-1:]
        return None, 0, f"its importer failed: {' '.join(last)[:120]}"
    figures = json.loads(answer.stdout.decode().strip().splitlines()[-1])
    tickets = int(figures["tickets"])
    return tickets / figures["seconds"], tickets, f"django-helpdesk {figures['version']}"


def measure(emails: int = 300, peers: bool = True) -> IngestFigures:
    """Every method over the same mailbox; the figures."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    bench = Bench(scratch, emails)
    try:
        port = bench.imap.port

        def reference(batched: bool, classify: bool) -> float:
            settings = bench.prepare_run(seed_stripe=False)
            seconds, count = timed(lambda: loop(settings, port, batched=batched, classify=classify))
            if count != emails:
                raise SystemExit(f"a reference loop stored {count} of {emails}")
            return count / seconds

        # One untimed pass of each kind first: imports, SQLAlchemy's first statements and
        # mapper set-up, the first IMAP session, paid by neither figure.
        reference(batched=False, classify=False)
        ours_stored(bench.prepare_run(seed_stripe=False))
        naive = reference(batched=False, classify=False)
        batched = reference(batched=True, classify=False)
        classifier.load()  # once per process, before the clock, as our workers do
        naive_classified = reference(batched=False, classify=True)

        settings = bench.prepare_run(seed_stripe=False)
        seconds, stored = ours_stored(settings)
        if stored != emails:
            raise SystemExit(f"our poller stored {stored} of {emails}")
        ours = stored / seconds

        settings = bench.prepare_run()
        result = bench.run_processes("cli:2", settings, "ingest-cli-2")
        # The same command again, with nothing new to store: its interpreter's start-up and
        # imports, left out of the steady figure as the workers' start-up is.
        empty_poll = bench.poll(settings, "ingest-empty.poll.log")
        first = result.first_job_seconds or 0.0
        polling = max(result.poll_seconds - empty_poll, 0.0)
        steady = emails / (polling + result.all_done_seconds - first)

        django, tickets, note = (None, 0, "not asked (--no-peers)")
        if peers:
            django, tickets, note = django_helpdesk(bench, emails)
        return IngestFigures(
            emails,
            ours,
            naive,
            batched,
            steady,
            result.tickets_per_second,
            result.memory.worker_cpu / emails * 1000,
            result.memory.stripe_cpu / emails * 1000,
            naive_classified,
            django,
            tickets,
            note,
        )
    finally:
        bench.stop()


def main() -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=300)
    parser.add_argument("--no-peers", action="store_true", help="skip django-helpdesk")
    args = parser.parse_args()
    f = measure(args.emails, peers=not args.no_peers)
    print(f"{f.emails} emails, emails/s:")
    print(
        f"  IMAP -> stored:     ours {f.ours_stored:.0f}, naive {f.naive_stored:.0f}, "
        f"batched {f.batched_stored:.0f}"
    )
    print(
        f"  IMAP -> classified: ours {f.ours_classified:.1f} steady "
        f"({f.ours_classified_wall:.1f} with start-up; CPU per email {f.ours_cpu_ms:.0f} ms "
        f"in our workers, {f.stripe_cpu_ms:.0f} ms in the fake Stripe), naive + classify "
        f"{f.naive_classified:.1f}"
    )
    django = f"{f.django_helpdesk:.1f}" if f.django_helpdesk is not None else "not run"
    print(
        f"  django-helpdesk:    {django} ({f.django_helpdesk_tickets} tickets; "
        f"{f.django_helpdesk_note})"
    )


if __name__ == "__main__":
    main()
