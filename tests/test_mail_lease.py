"""One poller per folder at a time, across processes: a lease in Redis, taken over when its
holder dies or stalls, and checked before every fetch and every cursor move.

The lease itself is tested on the real Redis; the loop's checks on pymap in this process;
then real `billing-desk poll-mail` processes share one pymap mailbox, and one of them is
killed (SIGKILL) or paused past the lease (SIGSTOP, then SIGCONT).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from core.db import session_scope
from core.db.models import InboundEmail, MailboxCursor
from jobs.inbound import enqueue_inbound
from jobs.mail_lease import KEY_PREFIX, RedisFolderLease, lease_key, redis_leases
from mail import imap as imap_module
from mail import poller
from mail.imap import ImapConfig

pytestmark = pytest.mark.e2e

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Short, so that takeovers in these tests come within seconds (renewed every 2 s), yet long
# enough that a poller slowed by a busy machine keeps its lease.
LEASE_SECONDS = 6


def mail(n: int) -> bytes:
    return (
        f"From: person{n}@example.com\r\nTo: billing@example.com\r\nSubject: Question {n}\r\n"
        f"Message-ID: <lease{n}@example.com>\r\n\r\nWhere is invoice {n}?\r\n"
    ).encode()


def stored_message_ids(rt) -> list[str]:
    with session_scope(rt.session_factory) as session:
        return sorted(session.scalars(select(InboundEmail.message_id)))


def stored_count(rt) -> int:
    with session_scope(rt.session_factory) as session:
        return session.scalar(select(func.count()).select_from(InboundEmail)) or 0


def expected_ids(numbers: range) -> list[str]:
    return sorted(f"<lease{n}@example.com>" for n in numbers)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for ``condition`` (a bounded wait for a state, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.05)


# --- the lease on Redis ---------------------------------------------------------------------


@pytest.fixture
def config(settings) -> ImapConfig:
    return ImapConfig.from_settings(settings)


def test_one_holder_at_a_time_and_a_lapsed_lease_passes_to_the_next(rt, config):
    key = lease_key(config)
    first = RedisFolderLease(rt.redis, key, LEASE_SECONDS)
    second = RedisFolderLease(rt.redis, key, LEASE_SECONDS)

    assert first.acquire()
    assert not second.acquire()
    assert first.renew() and first.acquire()  # still its own: kept, not taken twice
    assert rt.redis.get(key).decode() == first.token
    assert 0 < rt.redis.pttl(key) <= LEASE_SECONDS * 1000

    rt.redis.pexpire(key, 1)  # the holder stalled: its lease lapses in Redis
    wait_until(lambda: not rt.redis.exists(key), 5, "the lease expired")
    assert second.acquire()

    assert not first.renew()  # lost, and it knows it
    first.release()  # a lost lease's release leaves the new holder's alone
    assert rt.redis.get(key).decode() == second.token
    assert first.token != second.token and len(second.token or "") == 32


def test_release_frees_the_folder_at_once(rt, config):
    key = lease_key(config)
    holder = RedisFolderLease(rt.redis, key, LEASE_SECONDS)
    assert holder.acquire()
    holder.release()
    assert not rt.redis.exists(key)
    assert RedisFolderLease(rt.redis, key, LEASE_SECONDS).acquire()


def test_a_renewal_after_another_poller_took_over_fails_even_with_the_key_present(rt, config):
    key = lease_key(config)
    stalled = RedisFolderLease(rt.redis, key, LEASE_SECONDS)
    assert stalled.acquire()
    rt.redis.delete(key)
    taker = RedisFolderLease(rt.redis, key, LEASE_SECONDS)
    assert taker.acquire()

    assert not stalled.renew()
    assert not stalled.acquire()  # its old token no longer counts, and the key is taken
    assert rt.redis.get(key).decode() == taker.token


@pytest.mark.parametrize(
    ("change", "same_lease"),
    [
        ({"host": "IMAP.Example.COM"}, True),  # host names are case-insensitive
        ({"folder": "Billing"}, False),
        ({"folder": "inbox/billing"}, False),
        ({"user": "refunds@example.com"}, False),
        ({"port": 1993}, False),
        ({"password": "other"}, True),  # same folder, however we sign in
    ],
)
def test_a_lease_per_folder_of_each_account(change, same_lease):
    base = ImapConfig(host="imap.example.com", port=993, user="billing@example.com", password="p")
    assert lease_key(base).startswith(KEY_PREFIX)
    assert (lease_key(replace(base, **change)) == lease_key(base)) is same_lease


# --- the loop's checks, on pymap --------------------------------------------------------------


def test_a_poller_that_loses_its_lease_mid_poll_stores_no_further_batch(
    mailbox_client, rt, config, monkeypatch
):
    for n in range(6):
        mailbox_client.append("INBOX", mail(n))
    key = lease_key(config)
    lease = RedisFolderLease(rt.redis, key, LEASE_SECONDS)
    assert lease.acquire()
    fetch = imap_module.Mailbox.fetch
    fetches: list[int] = []

    def fetch_then_lose_the_lease(self, uids):
        fetches.append(len(uids))
        bodies = fetch(self, uids)
        if len(fetches) == 2:  # another poller takes over while this one fetches batch 2
            rt.redis.delete(key)
            assert RedisFolderLease(rt.redis, key, LEASE_SECONDS).acquire()
        return bodies

    monkeypatch.setattr(imap_module.Mailbox, "fetch", fetch_then_lose_the_lease)
    mailbox = imap_module.Mailbox.connect(config)
    try:
        with pytest.raises(poller.LeaseLost):
            poller.poll_once(
                mailbox, rt.session_factory, lambda _id: None, batch_size=2, lease=lease
            )
    finally:
        mailbox.close()

    assert fetches == [2, 2]  # batch 3 was never fetched
    assert stored_message_ids(rt) == expected_ids(range(2))  # batch 2 was fetched, not stored
    with session_scope(rt.session_factory) as session:
        cursor = session.get(MailboxCursor, config.name)
        assert cursor is not None
        assert cursor.last_uid == sorted(mailbox_client.search(["ALL"]))[1]


def test_a_lease_lost_while_the_batch_is_written_rolls_the_batch_and_the_cursor_back(
    mailbox_client, rt, config, monkeypatch
):
    for n in range(4):
        mailbox_client.append("INBOX", mail(n))
    key = lease_key(config)
    lease = RedisFolderLease(rt.redis, key, LEASE_SECONDS)
    assert lease.acquire()
    flushes: list[int] = []

    def taken_over_during_the_second_write(session, _context, _instances) -> None:
        if any(isinstance(row, InboundEmail) for row in session.new):
            flushes.append(len(flushes))
            if len(flushes) == 2:  # e.g. paused, or waiting on a database lock
                rt.redis.delete(key)
                assert RedisFolderLease(rt.redis, key, LEASE_SECONDS).acquire()

    event.listen(rt.session_factory, "before_flush", taken_over_during_the_second_write)
    mailbox = imap_module.Mailbox.connect(config)
    try:
        with pytest.raises(poller.LeaseLost):
            poller.poll_once(
                mailbox, rt.session_factory, lambda _id: None, batch_size=2, lease=lease
            )
    finally:
        mailbox.close()
        event.remove(rt.session_factory, "before_flush", taken_over_during_the_second_write)

    assert stored_message_ids(rt) == expected_ids(range(2))
    with session_scope(rt.session_factory) as session:
        cursor = session.get(MailboxCursor, config.name)
        assert cursor is not None
        assert cursor.last_uid == sorted(mailbox_client.search(["ALL"]))[1]


def test_a_one_off_poll_leaves_a_folder_another_poller_holds(mailbox_client, rt, config):
    mailbox_client.append("INBOX", mail(1))
    other = RedisFolderLease(rt.redis, lease_key(config), LEASE_SECONDS)
    assert other.acquire()
    leases = redis_leases(rt.redis, LEASE_SECONDS)

    def on_stored(email_id: int) -> None:
        enqueue_inbound(rt, email_id)

    result = poller.poll_mailbox_once(config, rt.session_factory, on_stored, lease=leases(config))
    assert (result.stored, stored_count(rt)) == (0, 0)

    other.release()
    result = poller.poll_mailbox_once(config, rt.session_factory, on_stored, lease=leases(config))
    assert (result.stored, stored_count(rt)) == (1, 1)
    assert not rt.redis.exists(lease_key(config))  # released after the poll


# --- real poll-mail processes -------------------------------------------------------------


class Poller:
    """One `billing-desk poll-mail` process, logging to its own file."""

    def __init__(self, name: str, env: dict[str, str], directory: Path) -> None:
        self.name = name
        self.log_path = directory / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "helpdesk_app", "poll-mail"],
                env=env,
                cwd=PROJECT_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self, since: int = 0) -> str:
        return self.log_path.read_bytes()[since:].decode(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def holds(self) -> bool:
        return "holding the lease on" in self.log()

    def holds_now(self) -> bool:
        """Whether its last word on the lease was that it holds it."""
        events = re.findall(r"holding the lease|lost the lease|waiting", self.log())
        return bool(events) and events[-1] == "holding the lease"

    def waits(self) -> bool:
        return "being read by another poller; waiting" in self.log()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused one must hear the SIGTERM
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def stored_lines(text: str) -> list[str]:
    """The lines a poller logs after a poll that fetched anything."""
    return [line for line in text.splitlines() if "new message(s)" in line]


def stored_total(text: str) -> int:
    """How many emails a poller says it stored."""
    return sum(int(n) for n in re.findall(r"stored (\d+) new message", text))


@pytest.fixture
def two_pollers(settings, rt, mailbox_client, tmp_path) -> Iterator[tuple[Poller, Poller]]:
    """Two poll-mail processes on the test mailbox, once one holds the lease and the other
    waits; returned as (holder, waiting)."""
    env = {
        **os.environ,
        **settings.to_env(),
        "MAIL_LEASE_SECONDS": str(LEASE_SECONDS),
        # IDLE's safety-net poll, often: pymap may tell of mail that arrives during a poll in
        # that poll's own responses, which the poller does not read, instead of in the IDLE
        # after it (seen here with mail appended in quick succession).
        "IMAP_POLL_INTERVAL": "2",
        "LOG_FORMAT": "text",
    }
    pollers = [Poller("a", env, tmp_path), Poller("b", env, tmp_path)]
    try:
        wait_until(
            lambda: sum(p.holds() for p in pollers) == 1 and any(p.waits() for p in pollers),
            60,
            "one poller holds the lease and the other waits",
        )
        holder = next(p for p in pollers if p.holds())
        waiting = next(p for p in pollers if p is not holder)
        yield holder, waiting
    finally:
        for p in pollers:
            p.stop()


def test_two_pollers_on_one_mailbox_store_each_email_once_and_only_the_holder_works_it(
    two_pollers, rt, config, mailbox_client
):
    holder, waiting = two_pollers
    for n in range(20):
        mailbox_client.append("INBOX", mail(n))

    wait_until(lambda: stored_count(rt) >= 20, 30, "20 emails stored")
    assert stored_message_ids(rt) == expected_ids(range(20))
    wait_until(lambda: stored_lines(holder.log()), 10, "the holder logged what it stored")
    assert stored_lines(waiting.log()) == []
    assert waiting.log().count("being read by another poller; waiting") == 1  # said once

    assert waiting.stop() == 0
    assert rt.redis.exists(lease_key(config))  # the one that waited had nothing to release
    assert holder.stop() == 0
    assert not rt.redis.exists(lease_key(config))  # a clean stop gives the lease up


def test_a_killed_holder_is_taken_over_and_mail_after_the_kill_is_stored_once(
    two_pollers, rt, mailbox_client
):
    holder, waiting = two_pollers
    for n in range(5):
        mailbox_client.append("INBOX", mail(n))
    wait_until(lambda: stored_count(rt) >= 5, 30, "the first 5 emails stored")

    holder.process.send_signal(signal.SIGKILL)
    holder.process.wait()
    for n in range(5, 15):
        mailbox_client.append("INBOX", mail(n))

    wait_until(waiting.holds, LEASE_SECONDS * 5, "the waiting poller took the lease over")
    wait_until(lambda: stored_count(rt) >= 15, 30, "the emails sent after the kill stored")
    assert stored_message_ids(rt) == expected_ids(range(15))
    wait_until(lambda: stored_lines(waiting.log()), 10, "the new holder logged what it stored")


def test_a_paused_holder_that_lost_its_lease_writes_nothing_when_it_resumes(
    two_pollers, rt, mailbox_client
):
    holder, waiting = two_pollers
    for n in range(5):
        mailbox_client.append("INBOX", mail(n))
    wait_until(lambda: stored_count(rt) >= 5, 30, "the first 5 emails stored")
    # Paused once it is done with them (logged), not between its commit and its log line.
    wait_until(lambda: stored_total(holder.log()) == 5, 10, "the holder logged the 5")

    assert holder.holds_now() and not waiting.holds_now()
    holder.process.send_signal(signal.SIGSTOP)  # a VM paused, a process swapped out
    wait_until(waiting.holds, LEASE_SECONDS * 5, "the waiting poller took the lease over")
    for n in range(5, 10):
        mailbox_client.append("INBOX", mail(n))
    wait_until(lambda: stored_count(rt) >= 10, 30, "emails sent during the pause stored")

    resumed_at = holder.log_size()
    holder.process.send_signal(signal.SIGCONT)
    for n in range(10, 20):  # mail the resumed poller would race for, were it not stopped
        mailbox_client.append("INBOX", mail(n))
    wait_until(lambda: stored_count(rt) >= 20, 30, "emails sent after the resume stored")
    wait_until(
        lambda: "lost the lease on" in holder.log(resumed_at),
        LEASE_SECONDS * 5,
        "the resumed poller noticed it had lost the lease",
    )

    assert stored_message_ids(rt) == expected_ids(range(20))
    assert stored_lines(holder.log(resumed_at)) == []
    assert holder.process.poll() is None  # it waits its turn again, still running
    assert "being read by another poller; waiting" in holder.log(resumed_at)
