"""Mail intake never loses or doubles an email: backlogs, kills, restarts, UIDVALIDITY, IDLE.

Every test runs against pymap and against Dovecot (Debian's dovecot-imapd), each a fresh
server per test. `make test` makes sure Dovecot is there (tests/preflight.py installs it where it
can, or stops naming it), so a missing Dovecot fails these tests rather than dropping them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import MAILBOX_PASSWORD, MAILBOX_USER
from imapclient import IMAPClient
from sqlalchemy import func, select

from core.db import session_scope
from core.db.models import InboundEmail, MailboxCursor, Ticket
from core.settings import Settings
from helpdesk_app.demo import servers
from jobs.inbound import enqueue_inbound
from mail import imap as imap_module
from mail import poller
from mail.imap import ImapConfig

pytestmark = pytest.mark.e2e

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = servers.LOOPBACK


def _server_kinds(only: str | None = None) -> list[str]:
    """The servers to run on: both, always (a missing Dovecot fails, naming the package)."""
    return [kind for kind in ("pymap", "dovecot") if only in (None, kind)]


class ImapServer:
    """A fresh IMAP server for one test, which the test may restart on the same port."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.directory: Path | None = None
        if kind == "dovecot":
            self.directory = Path(tempfile.mkdtemp(prefix="billing-desk-dovecot-"))
            self.server = servers.start_dovecot(MAILBOX_USER, MAILBOX_PASSWORD, self.directory)
        else:
            self.server = servers.start_imap_server(MAILBOX_USER, MAILBOX_PASSWORD)

    @property
    def port(self) -> int:
        """Where it listens."""
        return self.server.port

    def client(self, folder: str = "INBOX") -> IMAPClient:
        """A logged-in client with ``folder`` selected (created if missing)."""
        client = IMAPClient(LOOPBACK, port=self.port, ssl=False)
        client.login(MAILBOX_USER, MAILBOX_PASSWORD)
        if not client.folder_exists(folder):
            client.create_folder(folder)
        client.select_folder(folder)
        return client

    def restart(self) -> None:
        """Stop it, dropping every connection, and start it again on the same port.

        Dovecot keeps its mail on disk; pymap's is in memory, so it comes back empty and with
        a new UIDVALIDITY.
        """
        self.server = servers.restart_server(self.server)

    def stop(self) -> None:
        """Stop it and remove its files."""
        servers.stop_process_group(self.server)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(params=_server_kinds())
def imap(request: pytest.FixtureRequest) -> Iterator[ImapServer]:
    """A fresh pymap, or a fresh Dovecot, for this test."""
    server = ImapServer(request.param)
    yield server
    server.stop()


@pytest.fixture(params=_server_kinds(only="dovecot"))
def dovecot(request: pytest.FixtureRequest) -> Iterator[ImapServer]:
    """A fresh Dovecot for a test of something only Dovecot can do."""
    server = ImapServer(request.param)
    yield server
    server.stop()


@pytest.fixture
def imap_settings(settings: Settings, imap: ImapServer) -> Settings:
    """The test settings, with the mailbox on this test's IMAP server."""
    return dataclasses.replace(settings, imap_port=imap.port)


def mail(n: int, *, body_bytes: int = 0, message_id: bool = True) -> bytes:
    """A small customer email (CRLF line ends, as on the wire), optionally with a large body."""
    headers = (
        f"From: person{n}@example.com\r\nTo: billing@example.com\r\nSubject: Question {n}\r\n"
        + (f"Message-ID: <r{n}@example.com>\r\n" if message_id else "")
    )
    body = f"How do I download invoice {n}?\r\n"
    line = "x" * 76 + "\r\n"
    body += line * (body_bytes // len(line))
    return f"{headers}\r\n{body}".encode()


def append_all(client: IMAPClient, folder: str, messages: list[bytes]) -> None:
    """Append many messages over one connection, 100 per MULTIAPPEND."""
    for start in range(0, len(messages), 100):
        client.multiappend(folder, messages[start : start + 100])


def on_stored_for(rt) -> Callable[[int], None]:
    return lambda email_id: enqueue_inbound(rt, email_id)


def poll(settings: Settings, rt, folder: str | None = None) -> poller.PollResult:
    """One poll of one folder, as `poll-mail --once` does it."""
    config = ImapConfig.from_settings(settings, folder)
    return poller.poll_mailbox_once(config, rt.session_factory, on_stored_for(rt))


def stored(rt) -> list[tuple[str | None, str]]:
    """(Message-ID, status) of every stored email."""
    with session_scope(rt.session_factory) as session:
        rows = session.execute(select(InboundEmail.message_id, InboundEmail.status))
        return [(message_id, status) for message_id, status in rows]


def stored_count(rt) -> int:
    with session_scope(rt.session_factory) as session:
        return session.scalar(select(func.count()).select_from(InboundEmail)) or 0


def cursor_exists(rt) -> bool:
    with session_scope(rt.session_factory) as session:
        return session.scalar(select(func.count()).select_from(MailboxCursor)) > 0


def assert_each_stored_once(rt, numbers: range) -> None:
    message_ids = [message_id for message_id, _ in stored(rt)]
    assert sorted(message_ids) == sorted(f"<r{n}@example.com>" for n in numbers)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``condition`` held; fail after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.02)
    return time.monotonic() - started


@contextlib.contextmanager
def running_poller(settings: Settings, rt, interval: float = 3600) -> Iterator[None]:
    """The poll loop of `poll-mail` on a thread (IDLE on), stopped and joined at the end."""
    stop = threading.Event()
    thread = threading.Thread(
        target=poller.run,
        args=(ImapConfig.all_from_settings(settings), rt.session_factory, on_stored_for(rt)),
        kwargs={"interval": interval, "idle": settings.imap_idle, "stop": stop},
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "the poller did not stop"


class FaultyProxy:
    """A TCP proxy in front of the IMAP server that can cut or silence open connections."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[tuple[socket.socket, socket.socket, threading.Event]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection((LOOPBACK, self.target_port))
            except OSError:
                return
            silenced = threading.Event()
            with self.lock:
                self.open.append((client, upstream, silenced))
            for source, sink in ((client, upstream), (upstream, client)):
                pump = threading.Thread(target=self._pump, args=(source, sink, silenced))
                pump.daemon = True
                pump.start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, silenced: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not silenced.is_set():
                    sink.sendall(data)
        if silenced.is_set():
            return  # a half-open connection never says it is gone
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every open connection, as a failing network or server would."""
        with self.lock:
            cutting, self.open = self.open, []
        for client, upstream, _ in cutting:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def silence(self) -> None:
        """Let open connections swallow everything, both ways, without closing (half-open:
        a NAT or firewall that forgot them). New connections work."""
        with self.lock:
            for _, _, silenced in self.open:
                silenced.set()

    def close(self) -> None:
        """Stop listening and drop every connection."""
        self.listener.close()
        with self.lock:
            for _, _, silenced in self.open:
                silenced.clear()
        self.cut()


# --- load ----------------------------------------------------------------------------------


def test_a_backlog_of_1000_messages_is_stored_once_each_in_batches(
    imap, imap_settings, rt, record_property, monkeypatch
):
    total = 1000
    started = time.monotonic()
    append_all(imap.client(), "INBOX", [mail(n) for n in range(total)])
    appended = time.monotonic() - started
    fetches: list[int] = []
    fetch = imap_module.Mailbox.fetch

    def counted_fetch(self, uids):
        fetches.append(len(uids))
        return fetch(self, uids)

    monkeypatch.setattr(imap_module.Mailbox, "fetch", counted_fetch)

    started = time.monotonic()
    result = poll(imap_settings, rt)
    polled = time.monotonic() - started

    assert (result.stored, result.duplicates) == (total, 0)
    assert_each_stored_once(rt, range(total))
    assert fetches == [poller.BATCH_SIZE] * (total // poller.BATCH_SIZE)
    figures = (
        f"{imap.kind}: appended {total} in {appended:.2f}s, "
        f"stored in {polled:.2f}s ({total / polled:.0f} messages/s)"
    )
    record_property("backlog", figures)
    print(figures)


def test_a_backlog_of_stored_messages_becomes_one_ticket_each(
    mailbox_client, rt, poll_mail, run_worker, record_property
):
    # After storing, the IMAP server plays no part: one server (pymap) is enough here. The
    # count is what is tested (none lost, none doubled); throughput is bench/'s to measure.
    total = 200
    append_all(mailbox_client, "INBOX", [mail(n) for n in range(total)])
    assert poll_mail().stored == total

    started = time.monotonic()
    run_worker()
    worked = time.monotonic() - started

    with session_scope(rt.session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == total
    assert [status for _, status in stored(rt)] == ["processed"] * total
    figures = f"{total} stored emails became tickets in {worked:.1f}s ({total / worked:.0f}/s)"
    record_property("tickets", figures)
    print(figures)


# --- faults --------------------------------------------------------------------------------


def test_a_poller_killed_mid_batch_and_restarted_stores_every_message_once(
    imap, imap_settings, rt, tmp_path
):
    total = 400
    append_all(imap.client(), "INBOX", [mail(n) for n in range(total)])
    # The killed poller's lease on the folder lapses after MAIL_LEASE_SECONDS: short here.
    env = {**os.environ, **imap_settings.to_env(), "MAIL_LEASE_SECONDS": "3"}
    command = [sys.executable, "-m", "helpdesk_app", "poll-mail"]
    with open(tmp_path / "poller.log", "wb") as log:
        process = subprocess.Popen(
            command, env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_until(lambda: stored_count(rt) >= 60, 60, "the poller stored 60 messages")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    at_kill = stored_count(rt)
    assert 0 < at_kill < total, "killed too late to test anything"

    with open(tmp_path / "restarted.log", "wb") as log:
        restarted = subprocess.Popen(
            command, env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_until(lambda: stored_count(rt) >= total, 60, "the restart stored the rest")
        finally:
            restarted.send_signal(signal.SIGTERM)  # how a deploy stops it: cleanly, at once
            returncode = restarted.wait(10)

    assert returncode == 0, (tmp_path / "restarted.log").read_text()
    assert_each_stored_once(rt, range(total))


def test_a_connection_cut_mid_fetch_is_resumed_without_loss_or_duplicates(
    imap, imap_settings, rt, caplog
):
    total = 600
    append_all(imap.client(), "INBOX", [mail(n, body_bytes=2048) for n in range(total)])
    proxy = FaultyProxy(imap.port)
    try:
        with running_poller(dataclasses.replace(imap_settings, imap_port=proxy.port), rt):
            wait_until(lambda: stored_count(rt) >= 50, 30, "the first batch was stored")
            proxy.cut()
            at_cut = stored_count(rt)
            wait_until(lambda: stored_count(rt) >= total, 60, "every message was stored")
    finally:
        proxy.close()
    assert at_cut < total, "cut too late to test anything"
    assert_each_stored_once(rt, range(total))
    assert {status for _, status in stored(rt)} == {"received"}  # nothing quarantined


def test_a_half_open_idle_connection_is_given_up_and_replaced(imap, imap_settings, rt, monkeypatch):
    # Shortened here: renewing IDLE (10 minutes) and the read timeout (60 s) bound how long
    # a connection that silently died can hold up mail.
    monkeypatch.setattr(poller, "IDLE_RENEW_SECONDS", 1.0)
    monkeypatch.setattr(imap_module, "FETCH_TIMEOUT_SECONDS", 1.0)
    proxy = FaultyProxy(imap.port)
    try:
        with running_poller(dataclasses.replace(imap_settings, imap_port=proxy.port), rt):
            wait_until(lambda: cursor_exists(rt), 10, "the first poll happened")
            proxy.silence()
            imap.client().append("INBOX", mail(1))
            waited = wait_until(lambda: stored_count(rt) == 1, 15, "the message was stored")
    finally:
        proxy.close()
    assert_each_stored_once(rt, range(1, 2))
    assert waited < 10


def test_a_restarted_server_is_reconnected_with_backoff_and_mail_keeps_arriving(
    imap, imap_settings, rt, caplog
):
    imap.client().append("INBOX", mail(1))
    with running_poller(imap_settings, rt):
        wait_until(lambda: stored_count(rt) == 1, 10, "the first message was stored")
        imap.restart()
        imap.client().append("INBOX", mail(2))
        waited = wait_until(lambda: stored_count(rt) == 2, 20, "mail after the restart arrived")
    assert_each_stored_once(rt, range(1, 3))
    assert any("unavailable" in r.getMessage() for r in caplog.records), "no reconnect was logged"
    assert waited < 10


def test_a_uidvalidity_change_rescans_without_duplicates_and_keeps_new_mail(
    imap, imap_settings, rt
):
    folder = "Billing"
    settings = dataclasses.replace(imap_settings, imap_folder=folder)
    old = [mail(1), mail(2), mail(3, message_id=False)]
    client = imap.client(folder)
    append_all(client, folder, old)
    assert poll(settings, rt).stored == 3
    with session_scope(rt.session_factory) as session:
        first_epoch = session.scalars(select(MailboxCursor.uidvalidity)).one()

    # The folder is deleted and made again (a migration, a restored backup): UIDs restart at
    # 1, and the new message takes a UID the old epoch had already passed.
    client.close_folder()
    client.delete_folder(folder)
    client.create_folder(folder)
    append_all(client, folder, [mail(4), *old])
    result = poll(settings, rt)

    assert (result.stored, result.duplicates) == (1, 3)
    assert sorted(str(message_id) for message_id, _ in stored(rt)) == [
        "<r1@example.com>",
        "<r2@example.com>",
        "<r4@example.com>",
        "None",
    ]
    with session_scope(rt.session_factory) as session:
        assert session.scalars(select(MailboxCursor.uidvalidity)).one() != first_epoch


def test_dovecot_uidvalidity_bumped_by_doveadm_rescans_without_duplicates(dovecot, settings, rt):
    settings = dataclasses.replace(settings, imap_port=dovecot.port)
    append_all(dovecot.client(), "INBOX", [mail(1), mail(2)])
    assert poll(settings, rt).stored == 2
    assert dovecot.directory is not None
    servers.doveadm(
        dovecot.directory,
        *("mailbox", "update", "-u", MAILBOX_USER, "--uid-validity", "4242", "INBOX"),
    )
    dovecot.client().append("INBOX", mail(3))

    result = poll(settings, rt)

    assert (result.stored, result.duplicates) == (1, 2)
    assert_each_stored_once(rt, range(1, 4))


def test_dovecot_message_it_cannot_read_is_quarantined_and_the_next_still_arrives(
    dovecot, settings, rt
):
    settings = dataclasses.replace(settings, imap_port=dovecot.port)
    append_all(dovecot.client(), "INBOX", [mail(1), mail(2), mail(3)])
    assert dovecot.directory is not None
    files = sorted((dovecot.directory / "mail" / MAILBOX_USER / "cur").iterdir())
    files[1].chmod(0)  # Dovecot fails the FETCH, then says BYE: the "MIME of death"

    result = poll(settings, rt)

    assert (result.stored, result.quarantined) == (3, 1)
    rows = {message_id: status for message_id, status in stored(rt)}
    assert rows == {
        "<r1@example.com>": "received",
        "<r3@example.com>": "received",
        None: "quarantined",
    }
    with session_scope(rt.session_factory) as session:
        quarantined = session.scalars(
            select(InboundEmail).where(InboundEmail.status == "quarantined")
        ).one()
        assert quarantined.error.startswith("The mail server would not send this message")
        assert quarantined.size > 0
    again = poll(settings, rt)
    assert (again.stored, again.duplicates) == (0, 0)  # not retried forever, nothing lost


# --- IDLE and several folders ----------------------------------------------------------------


def test_mail_appended_during_idle_is_stored_at_once_in_every_folder(
    imap, imap_settings, rt, caplog
):
    settings = dataclasses.replace(imap_settings, imap_extra_folders=("Refunds",))
    client = imap.client("Refunds")
    caplog.set_level(logging.DEBUG, logger="mail.imap")

    def idling() -> int:
        return sum("idling on" in r.getMessage() for r in caplog.records)

    with running_poller(settings, rt, interval=3600):
        wait_until(lambda: idling() >= 2, 10, "both folders are in IDLE")
        client.append("INBOX", mail(1))
        to_inbox = wait_until(lambda: stored_count(rt) == 1, 5, "the INBOX message was stored")
        client.append("Refunds", mail(2))
        to_refunds = wait_until(lambda: stored_count(rt) == 2, 5, "the Refunds message was stored")

    assert_each_stored_once(rt, range(1, 3))
    with session_scope(rt.session_factory) as session:
        cursors = session.scalars(select(MailboxCursor.mailbox)).all()
    assert sorted(name.rsplit("/", 1)[1] for name in cursors) == ["INBOX", "Refunds"]
    print(f"{imap.kind}: IDLE delivered in {to_inbox:.2f}s and {to_refunds:.2f}s")


def test_without_idle_the_folder_is_polled_every_interval(imap, imap_settings, rt):
    settings = dataclasses.replace(imap_settings, imap_idle=False)
    with running_poller(settings, rt, interval=0.2):
        wait_until(lambda: cursor_exists(rt), 10, "the first poll happened")
        imap.client().append("INBOX", mail(1))
        wait_until(lambda: stored_count(rt) == 1, 5, "the message was stored")
    assert_each_stored_once(rt, range(1, 2))


# --- size limit and processed folder ---------------------------------------------------------


def test_a_message_over_the_size_limit_is_stored_as_headers_only_and_not_downloaded(
    imap, imap_settings, rt
):
    settings = dataclasses.replace(imap_settings, max_message_bytes=100 * 1024)
    big = mail(1, body_bytes=300 * 1024)
    client = imap.client()
    append_all(client, "INBOX", [big, mail(2)])

    result = poll(settings, rt)

    assert (result.stored, result.oversized) == (2, 1)
    with session_scope(rt.session_factory) as session:
        oversized = session.scalars(
            select(InboundEmail).where(InboundEmail.status == "oversized")
        ).one()
        assert oversized.message_id == "<r1@example.com>"
        assert oversized.raw == big.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        assert oversized.size == len(big)
        assert oversized.error == (
            f"Message of {len(big) / 1024:.1f} kB is over the 100 kB limit; it was not downloaded."
        )
    assert poll(settings, rt).stored == 0  # the same message is never stored twice
    flags = client.get_flags(client.search(["ALL"]))
    assert not any(b"\\Seen" in f for f in flags.values())


def test_stored_mail_is_moved_to_the_processed_folder_when_one_is_configured(
    imap, imap_settings, rt
):
    settings = dataclasses.replace(imap_settings, imap_processed_folder="Processed")
    client = imap.client()
    append_all(client, "INBOX", [mail(1), mail(2)])
    # Stored by a poller that did not move mail (or stopped before moving it)...
    assert poll(imap_settings, rt).stored == 2
    client.append("INBOX", mail(3))

    result = poll(settings, rt)

    # ...is moved with the new message, once stored; nothing is lost or stored twice.
    assert (result.stored, result.moved) == (1, 3)
    assert_each_stored_once(rt, range(1, 4))
    client.select_folder("INBOX")
    assert client.search(["ALL"]) == []
    client.select_folder("Processed", readonly=True)
    assert len(client.search(["ALL"])) == 3
    assert poll(settings, rt).stored == 0
