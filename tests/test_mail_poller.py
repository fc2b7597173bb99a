"""The poller against a real IMAP server: what it stores, what it leaves alone, what it resumes."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from sqlalchemy import func, select, update

from core.db import session_scope
from core.db.models import InboundEmail, MailboxCursor, Ticket
from core.errors import ConfigError
from mail import poller
from mail.imap import ImapConfig, Mailbox

pytestmark = pytest.mark.e2e


def mail(n: int, flags: str = "") -> bytes:
    return (
        f"From: person{n}@example.com\r\nTo: billing@example.com\r\nSubject: Question {n}\r\n"
        f"Message-ID: <q{n}@example.com>\r\n\r\nHow do I download invoice {n}?\r\n"
    ).encode()


def stored_count(rt) -> int:
    with session_scope(rt.session_factory) as session:
        return session.scalar(select(func.count()).select_from(InboundEmail))


def test_mail_already_read_by_a_person_is_still_stored_and_unread_mail_stays_unread(
    mailbox_client, rt, poll_mail
):
    mailbox_client.append("INBOX", mail(1), flags=[b"\\Seen"])
    mailbox_client.append("INBOX", mail(2))
    assert poll_mail().stored == 2
    flags = mailbox_client.get_flags(mailbox_client.search(["ALL"]))
    assert sorted(b"\\Seen" in f for f in flags.values()) == [False, True]


def test_a_uidvalidity_change_rescans_without_duplicates(mailbox_client, rt, poll_mail):
    for n in range(3):
        mailbox_client.append("INBOX", mail(n))
    assert poll_mail().stored == 3
    with session_scope(rt.session_factory) as session:  # as if the server renumbered its mail
        session.execute(update(MailboxCursor).values(uidvalidity=1, last_uid=10**6))
    mailbox_client.append("INBOX", mail(3))

    result = poll_mail()

    assert (result.stored, result.duplicates) == (1, 3)
    assert stored_count(rt) == 4


def test_stored_mail_not_yet_queued_is_queued_when_the_poller_starts(
    mailbox_client, rt, settings, run_worker
):
    mailbox_client.append("INBOX", mail(1))
    config = ImapConfig.from_settings(settings)
    # A poller that died after storing, before queueing: nothing reached Redis.
    mailbox = Mailbox.connect(config)
    poller.poll_once(mailbox, rt.session_factory, on_stored=lambda _id: None)
    mailbox.close()
    queued: list[int] = []

    poller.run(
        [config],
        rt.session_factory,
        queued.append,
        interval=3600,
        stop=threading.Event(),
        once=True,
    )

    assert len(queued) == 1 and stored_count(rt) == 1


@pytest.mark.parametrize("name", ["broken_mime.eml", "no_headers.eml", "unknown_charset.eml"])
def test_malformed_mail_becomes_a_ticket_and_the_next_message_still_arrives(
    mailbox_client, rt, poll_mail, run_worker, data_dir, name
):
    mailbox_client.append("INBOX", (data_dir / "emails" / name).read_bytes())
    mailbox_client.append("INBOX", mail(9))
    assert poll_mail().stored == 2
    run_worker()
    with session_scope(rt.session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 2
        statuses = session.scalars(select(InboundEmail.status)).all()
        assert statuses == ["processed", "processed"]


class MailboxWithoutMove(Mailbox):
    """A server that does not advertise MOVE (RFC 6851), as many older ones do not."""

    def supports_move(self) -> bool:
        return False


def test_without_move_stored_mail_is_copied_once_and_the_original_left_alone(
    mailbox_client, rt, settings
):
    config = ImapConfig.from_settings(replace(settings, imap_processed_folder="Processed"))
    if mailbox_client.folder_exists("Processed"):  # the server lives as long as the session
        mailbox_client.delete_folder("Processed")
    mailbox_client.append("INBOX", mail(1), flags=[b"\\Seen"])
    mailbox_client.append("INBOX", mail(2))

    def poll():
        return poller.poll_mailbox_once(
            config, rt.session_factory, lambda _id: None, connect=MailboxWithoutMove.connect
        )

    assert (poll().moved, poll().moved) == (2, 0)  # never copied again on later polls
    flags = mailbox_client.get_flags(mailbox_client.search(["ALL"]))  # nothing deleted,
    assert sorted(b"\\Seen" in f for f in flags.values()) == [False, True]  # nor marked
    mailbox_client.select_folder("Processed", readonly=True)
    assert len(mailbox_client.search(["ALL"])) == 2
    assert stored_count(rt) == 2


def test_the_processed_folder_may_not_be_a_folder_that_is_read(settings):
    reading = replace(settings, imap_extra_folders=("Refunds", "INBOX"))
    assert [c.folder for c in ImapConfig.all_from_settings(reading)] == ["INBOX", "Refunds"]
    with pytest.raises(ConfigError, match="IMAP_PROCESSED_FOLDER"):
        ImapConfig.all_from_settings(replace(reading, imap_processed_folder="Refunds"))


def test_mail_stored_while_the_queue_was_down_is_handed_on_once_it_is_back(
    mailbox_client, rt, settings
):
    mailbox_client.append("INBOX", mail(1))
    mailbox_client.append("INBOX", mail(2))
    handed_on: list[int] = []
    failures = iter([ConnectionError("Redis is down")])  # after storing, before handing on

    def hand_on(email_id: int) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        handed_on.append(email_id)

    stop = threading.Event()
    config = ImapConfig.from_settings(settings)
    watching = threading.Thread(
        target=poller.watch,
        args=(config, rt.session_factory, hand_on),
        kwargs={"interval": 0.1, "idle": False, "stop": stop},
    )
    watching.start()
    try:
        deadline = time.monotonic() + 10
        while len(set(handed_on)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        watching.join(10)
    assert len(set(handed_on)) == 2 and stored_count(rt) == 2


def test_mail_announced_during_a_poll_is_news_for_the_idle_that_follows(settings, mailbox_client):
    """An EXISTS that came with a SEARCH's answer is not left for the next poll interval."""
    mailbox = Mailbox.connect(ImapConfig.from_settings(settings))
    try:
        assert mailbox.supports_idle()
        mailbox_client.append("INBOX", mail(1))  # arrives while our next command runs
        mailbox.uids_after(0)  # the server announces it in this SEARCH's answer
        stop = threading.Event()
        # Without the announcement kept, the IDLE hears nothing more and times out: False.
        assert mailbox.wait_for_news(timeout=10, stop=stop) is True
        # Once taken, the same announcement is not news twice.
        assert mailbox.wait_for_news(timeout=1, stop=stop) is False
    finally:
        mailbox.close()


def test_an_email_whose_job_was_lost_on_its_way_to_a_worker_is_processed_once(
    mailbox_client, rt, poll_mail, run_worker
):
    """Stored and handed on once; its job's ID then popped by a worker that never read it.
    The supervisor's sweep finds the email still waiting and pushes its job back, once."""
    from jobs import queues
    from jobs.inbound import RESUME_AFTER, resume_inbound

    mailbox_client.append("INBOX", mail(1))
    poll_mail()
    mail_queue = rt.queue(queues.MAIL)
    assert rt.redis.lpop(mail_queue.key) is not None
    run_worker()
    assert resume_inbound(rt) == 0  # just came: not looked for yet
    with session_scope(rt.session_factory) as session:
        for stored in session.scalars(select(InboundEmail)):
            stored.received_at -= 2 * RESUME_AFTER

    assert resume_inbound(rt) == 1
    assert resume_inbound(rt) == 0  # back in its queue: not pushed twice
    run_worker()
    with session_scope(rt.session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1
        assert session.scalars(select(InboundEmail.status)).all() == ["processed"]
    assert resume_inbound(rt) == 0
