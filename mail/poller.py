"""The poll loop: store each new message, then move the cursor, then hand it on.

The raw message and the cursor move are committed together, so a crash loses nothing (the
message is fetched again) and doubles nothing (the dedupe key refuses a second copy).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.db import session_scope
from core.db.models import InboundEmail, MailboxCursor
from core.errors import MailboxError
from mail.imap import ImapConfig, Mailbox
from mail.parsing import dedupe_key, message_id_of

log = logging.getLogger(__name__)
BATCH_SIZE = 50
MAX_BACKOFF_SECONDS = 300


@dataclass
class PollResult:
    """What one poll did."""

    stored: int = 0
    duplicates: int = 0


def _cursor(session: Session, mailbox: Mailbox) -> MailboxCursor:
    cursor = session.get(MailboxCursor, mailbox.config.name)
    if cursor is None:
        cursor = MailboxCursor(
            mailbox=mailbox.config.name, uidvalidity=mailbox.uidvalidity, last_uid=0
        )
        session.add(cursor)
    elif cursor.uidvalidity != mailbox.uidvalidity:
        # UIDs from the old epoch mean nothing now: rescan; the dedupe key drops what we have.
        log.warning("UIDVALIDITY of %s changed; rescanning", mailbox.config.name)
        cursor.uidvalidity = mailbox.uidvalidity
        cursor.last_uid = 0
    return cursor


def poll_once(
    mailbox: Mailbox,
    session_factory: sessionmaker[Session],
    on_stored: Callable[[int], None],
    batch_size: int = BATCH_SIZE,
) -> PollResult:
    """Store every message newer than the cursor and call on_stored(email_id) for each new one."""
    result = PollResult()
    mailbox.select()
    with session_scope(session_factory) as session:
        last_uid = _cursor(session, mailbox).last_uid
    uids = mailbox.uids_after(last_uid)
    for start in range(0, len(uids), batch_size):
        for message in mailbox.fetch(uids[start : start + batch_size]):
            try:
                email_id = _store(session_factory, mailbox, message.uid, message.raw)
            except IntegrityError:
                email_id = None  # another poller stored the same message a moment ago
            if email_id is None:
                result.duplicates += 1
            else:
                result.stored += 1
                on_stored(email_id)
    return result


def _store(
    session_factory: sessionmaker[Session], mailbox: Mailbox, uid: int, raw: bytes
) -> int | None:
    """Store one message and advance the cursor in one transaction; None for a duplicate."""
    message_id = message_id_of(raw)
    key = dedupe_key(raw, message_id)
    with session_scope(session_factory) as session:
        cursor = _cursor(session, mailbox)
        cursor.last_uid = max(cursor.last_uid, uid)
        if session.scalar(select(InboundEmail.id).where(InboundEmail.dedupe_key == key)):
            return None  # fetched before (a rescan, or a crash after storing): keep one copy
        stored = InboundEmail(
            mailbox=mailbox.config.name,
            uidvalidity=mailbox.uidvalidity,
            uid=uid,
            message_id=message_id[:998] if message_id else None,
            dedupe_key=key,
            raw=raw,
            size=len(raw),
        )
        session.add(stored)
        session.flush()
        return stored.id


def pending_email_ids(session_factory: sessionmaker[Session]) -> list[int]:
    """Stored emails not yet processed, oldest first: re-queued when a poller starts."""
    with session_scope(session_factory) as session:
        return list(
            session.scalars(
                select(InboundEmail.id)
                .where(InboundEmail.status == "received")
                .order_by(InboundEmail.id)
            )
        )


def poll_mailbox_once(
    config: ImapConfig, session_factory: sessionmaker[Session], on_stored: Callable[[int], None]
) -> PollResult:
    """Connect, poll once and log out: for one-off polls outside the loop below."""
    mailbox = Mailbox.connect(config)
    try:
        return poll_once(mailbox, session_factory, on_stored)
    finally:
        mailbox.close()


def run(
    connect: Callable[[], Mailbox],
    session_factory: sessionmaker[Session],
    on_stored: Callable[[int], None],
    *,
    interval: float,
    stop: threading.Event,
    once: bool = False,
) -> None:
    """Poll until ``stop`` is set; a lost connection is retried with growing pauses.

    With ``once``, poll a single time and let a connection error propagate.
    """
    for email_id in pending_email_ids(session_factory):
        on_stored(email_id)  # stored by an earlier run that stopped before handing it on
    mailbox: Mailbox | None = None
    backoff = 1.0
    while not stop.is_set():
        try:
            if mailbox is None:
                mailbox = connect()
            result = poll_once(mailbox, session_factory, on_stored)
            if result.stored or result.duplicates:
                log.info(
                    "stored %d new message(s), %d duplicate(s)", result.stored, result.duplicates
                )
            backoff = 1.0
        except MailboxError as exc:
            if once:
                raise
            log.warning("mailbox unavailable (%s); retrying in %.0fs", exc, backoff)
            if mailbox is not None:
                mailbox.close()
            mailbox = None
            stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            continue
        if once:
            break
        stop.wait(interval)
    if mailbox is not None:
        mailbox.close()
