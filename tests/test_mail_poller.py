"""The poller against a real IMAP server: what it stores, what it leaves alone, what it resumes."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, update

from core.db import session_scope
from core.db.models import InboundEmail, MailboxCursor, Ticket
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
        lambda: Mailbox.connect(config),
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
