"""The poll loop: store each new message, then move the cursor, then hand it on.

The raw messages of a batch and the cursor move are committed together, so a crash loses
nothing (the batch is fetched again) and doubles nothing (the dedupe key refuses a second copy).

What is stored for a message:

- ``received``: the whole raw message.
- ``oversized``: larger than ``max_message_bytes`` by its RFC822.SIZE, so never downloaded;
  only its header block is stored, with its real size and a sentence saying so.
- ``quarantined``: the server would not hand it over (it failed a FETCH on its own, twice,
  the second time on a fresh connection). Whatever could be read (its headers, or nothing)
  is stored with the error, and the poller goes on with the next message: one bad message
  must never stop the mailbox ("MIME of death"). It is not retried: the error is the
  server's, and the original stays in the mailbox for a person to look at. Errors that are
  the connection's, not the message's, never quarantine anything: they end the poll, and
  the loop reconnects with backoff and fetches the same messages again. A message that is
  no email at all (an Outlook .msg or other file appended as it is, binary data with no
  header block) is quarantined too, stored whole with the reason: as a ticket it would be
  pages of junk with no sender to answer.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core import log_context
from core.db import session_scope
from core.db.models import InboundEmail, MailboxCursor
from core.domain import InboundStatus
from core.errors import MailboxError
from mail.imap import IDLE_RENEW_SECONDS, ImapConfig, Mailbox
from mail.parsing import dedupe_key, message_id_of, not_an_email

log = logging.getLogger(__name__)
# UIDs per FETCH: a backlog of thousands arrives in bounded responses.
BATCH_SIZE = 50
# Bytes per FETCH of whole messages: a batch of large mails is split further.
BATCH_BYTES = 32 * 1024 * 1024
MIN_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 300.0
FETCH_ATTEMPTS = 2
# Statuses the inbound job still has to see; re-queued when a poller starts.
UNPROCESSED = tuple(s for s in InboundStatus if s.waiting)


@dataclass
class PollResult:
    """What one poll did; ``stored`` counts oversized and quarantined messages too, and
    ``moved`` counts copies made where the server cannot MOVE."""

    stored: int = 0
    duplicates: int = 0
    oversized: int = 0
    quarantined: int = 0
    moved: int = 0


@dataclass(frozen=True)
class Incoming:
    """One message as it is about to be stored."""

    uid: int
    raw: bytes
    size: int
    message_id: str | None
    key: str
    status: InboundStatus = InboundStatus.RECEIVED
    error: str | None = None


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
    """Store every message newer than the cursor and call on_stored(email_id) for each new one.

    With a processed folder, stored messages are then moved there (and any stored earlier
    but not moved, e.g. by a poller that stopped in between).
    """
    result = PollResult()
    mailbox.select()
    with session_scope(session_factory) as session:
        last_uid = _cursor(session, mailbox).last_uid
    if mailbox.config.processed_folder:
        _move_left_behind(mailbox, session_factory, last_uid, result)
    uids = mailbox.uids_after(last_uid)
    for start in range(0, len(uids), batch_size):
        batch = uids[start : start + batch_size]
        try:
            incoming = _fetch_batch(mailbox, batch)
        except MailboxError as exc:
            log.warning(
                "fetching UIDs %d-%d of %s failed (%s); fetching them one at a time",
                batch[0],
                batch[-1],
                mailbox.config.name,
                exc,
            )
            incoming = _fetch_one_at_a_time(mailbox, batch)
        for message, email_id in _store_batch(session_factory, mailbox, incoming, batch[-1]):
            if email_id is None:
                result.duplicates += 1
                continue
            result.stored += 1
            if message.status is InboundStatus.QUARANTINED:
                result.quarantined += 1
                continue  # nothing to process: it waits for a person
            if message.status is InboundStatus.OVERSIZED:
                result.oversized += 1
            with log_context.bound(email_id=email_id):  # the enqueue's lines name the email
                on_stored(email_id)
        if mailbox.config.processed_folder:
            stored = [m.uid for m in incoming if m.status is not InboundStatus.QUARANTINED]
            result.moved += _move(mailbox, stored)
    return result


def _move(mailbox: Mailbox, uids: Sequence[int]) -> int:
    """Move stored mail to the processed folder; a failure is logged, never fatal.

    Storing matters, moving is tidiness: mail that could not be moved stays where it is
    (the cursor keeps it from being read again) and is moved by a later poll.
    """
    folder = mailbox.config.processed_folder
    if not folder or not uids:
        return 0
    try:
        mailbox.move(uids, folder)
    except MailboxError as exc:
        log.warning("could not move %d message(s) to %s: %s", len(uids), folder, exc)
        return 0
    return len(uids)


def _move_left_behind(
    mailbox: Mailbox, session_factory: sessionmaker[Session], last_uid: int, result: PollResult
) -> None:
    """Move stored mail still in the folder (a poller stopped before moving it).

    Everything behind the cursor is stored, except quarantined mail, which stays for a
    person to look at. Only with MOVE: with COPY the originals stay, and would be copied
    again on every poll.
    """
    if not last_uid or not mailbox.supports_move():
        return
    with session_scope(session_factory) as session:
        quarantined = set(
            session.scalars(
                select(InboundEmail.uid).where(
                    InboundEmail.mailbox == mailbox.config.name,
                    InboundEmail.uidvalidity == mailbox.uidvalidity,
                    InboundEmail.status == InboundStatus.QUARANTINED,
                )
            )
        )
    left = [uid for uid in mailbox.uids_through(last_uid) if uid not in quarantined]
    for start in range(0, len(left), BATCH_SIZE * 10):
        moved = _move(mailbox, left[start : start + BATCH_SIZE * 10])
        result.moved += moved
    if left:
        log.info("moved %d stored message(s) left behind in %s", len(left), mailbox.config.name)


def _fetch_batch(mailbox: Mailbox, uids: Sequence[int]) -> list[Incoming]:
    """Sizes first, then headers of oversized messages and whole bodies of the rest."""
    sizes = mailbox.sizes(uids)
    for uid in uids:
        if uid not in sizes:
            # Expunged since the search (by a person, or a poller that moved it): not ours.
            log.warning("UID %d of %s vanished before it was fetched", uid, mailbox.config.name)
    limit = mailbox.config.max_message_bytes
    too_big = [uid for uid in uids if sizes.get(uid, 0) > limit]
    headers = mailbox.fetch_headers(too_big)
    incoming = [_oversized(mailbox, uid, headers.get(uid, b""), sizes[uid]) for uid in too_big]
    wanted = [uid for uid in uids if uid in sizes and sizes[uid] <= limit]
    for group in _by_bytes(wanted, sizes, BATCH_BYTES):
        bodies = mailbox.fetch(group)
        missing = [uid for uid in group if uid not in bodies]
        if missing:
            raise MailboxError(f"the server sent no content for UID(s) {missing}")
        incoming.extend(_received(uid, bodies[uid]) for uid in group)
    return sorted(incoming, key=lambda message: message.uid)


def _by_bytes(uids: Sequence[int], sizes: dict[int, int], budget: int) -> Iterator[list[int]]:
    """Consecutive groups of UIDs whose sizes add up to at most ``budget`` (or one message)."""
    group: list[int] = []
    total = 0
    for uid in uids:
        if group and total + sizes[uid] > budget:
            yield group
            group, total = [], 0
        group.append(uid)
        total += sizes[uid]
    if group:
        yield group


def _fetch_one_at_a_time(mailbox: Mailbox, uids: Sequence[int]) -> list[Incoming]:
    """Fetch a failed batch message by message, so one bad message is all that is lost.

    A failed FETCH may have ended the connection (Dovecot says BYE when it cannot read a
    message file), so each attempt after a failure starts on a fresh connection. If that
    reconnect fails, the server is down rather than the message bad: the MailboxError ends
    the poll and nothing is quarantined.
    """
    incoming: list[Incoming] = []
    healthy = False
    for uid in uids:
        error: MailboxError | None = None
        for _attempt in range(FETCH_ATTEMPTS):
            if not healthy:
                mailbox.reconnect()
            try:
                incoming.extend(_fetch_batch(mailbox, [uid]))
                healthy = True
                break
            except MailboxError as exc:
                error, healthy = exc, False
        else:
            incoming.append(_quarantined(mailbox, uid, error))
            healthy = False
    return incoming


def _received(uid: int, raw: bytes) -> Incoming:
    message_id = message_id_of(raw)
    key = dedupe_key(raw, message_id)
    reason = not_an_email(raw)
    if reason is None:
        return Incoming(uid, raw, len(raw), message_id, key)
    log.error("quarantined UID %d: %s", uid, reason)
    error = f"{reason} It was stored as received and left in the mailbox."
    return Incoming(uid, raw, len(raw), message_id, key, InboundStatus.QUARANTINED, error)


def _oversized(mailbox: Mailbox, uid: int, headers: bytes, size: int) -> Incoming:
    limit = mailbox.config.max_message_bytes
    error = (
        f"Message of {_human_size(size)} is over the {_human_size(limit)} limit; "
        "it was not downloaded."
    )
    return _partial(mailbox, uid, headers, size, InboundStatus.OVERSIZED, error)


def _quarantined(mailbox: Mailbox, uid: int, error: MailboxError | None) -> Incoming:
    """What can still be read of a message the server would not send, and why."""
    # A server that is down now is not the message's fault: that error ends the poll.
    mailbox.reconnect()
    headers, size = b"", 0
    try:
        size = mailbox.sizes([uid]).get(uid, 0)
        headers = mailbox.fetch_headers([uid]).get(uid, b"")
    except MailboxError as exc:
        log.warning("no headers either for UID %d of %s: %s", uid, mailbox.config.name, exc)
    log.error("quarantined UID %d of %s: %s", uid, mailbox.config.name, error)
    reason = (
        f"The mail server would not send this message ({error}); it was left in the "
        "mailbox and not downloaded."
    )
    return _partial(mailbox, uid, headers, size or len(headers), InboundStatus.QUARANTINED, reason)


def _partial(
    mailbox: Mailbox, uid: int, headers: bytes, size: int, status: InboundStatus, error: str
) -> Incoming:
    """A message stored without its body; its dedupe key must still be stable across rescans."""
    message_id = message_id_of(headers) if headers else None
    if headers:
        # Message-ID, the header bytes and the size: the same for the same message.
        key = dedupe_key(headers + f"\0{status} {size}".encode(), message_id)
    else:
        # Nothing of the message itself to go by: its place in this UIDVALIDITY epoch.
        place = f"{status}\0{mailbox.config.name}\0{mailbox.uidvalidity}\0{uid}"
        key = hashlib.sha256(place.encode()).hexdigest()
    return Incoming(uid, headers, size, message_id, key, status, error)


def _human_size(size: int) -> str:
    """1536 -> '1.5 kB', 31.2 MiB -> '31.2 MB' (binary units, as the limit is set)."""
    for unit, scale in (("MB", 1024 * 1024), ("kB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


def _store_batch(
    session_factory: sessionmaker[Session],
    mailbox: Mailbox,
    incoming: Sequence[Incoming],
    through_uid: int,
) -> list[tuple[Incoming, int | None]]:
    """Store a batch and advance the cursor past it in one transaction; None for duplicates."""
    try:
        return _store(session_factory, mailbox, incoming, through_uid)
    except IntegrityError:
        # Another poller stored one of these a moment ago: store the rest one by one.
        stored = [
            stored
            for message in incoming
            for stored in _store_or_skip(session_factory, mailbox, message)
        ]
        _store(session_factory, mailbox, [], through_uid)
        return stored


def _store_or_skip(
    session_factory: sessionmaker[Session], mailbox: Mailbox, message: Incoming
) -> list[tuple[Incoming, int | None]]:
    try:
        return _store(session_factory, mailbox, [message], message.uid)
    except IntegrityError:
        return [(message, None)]


def _store(
    session_factory: sessionmaker[Session],
    mailbox: Mailbox,
    incoming: Sequence[Incoming],
    through_uid: int,
) -> list[tuple[Incoming, int | None]]:
    with session_scope(session_factory) as session:
        cursor = _cursor(session, mailbox)
        cursor.last_uid = max(cursor.last_uid, through_uid)
        keys = {message.key for message in incoming}
        known = (
            set(
                session.scalars(
                    select(InboundEmail.dedupe_key).where(InboundEmail.dedupe_key.in_(keys))
                )
            )
            if keys
            else set()
        )
        rows: list[tuple[Incoming, InboundEmail | None]] = []
        for message in incoming:
            if message.key in known:
                rows.append((message, None))  # a rescan, or a crash after storing: keep one
                continue
            known.add(message.key)
            row = InboundEmail(
                mailbox=mailbox.config.name,
                uidvalidity=mailbox.uidvalidity,
                uid=message.uid,
                message_id=message.message_id[:998] if message.message_id else None,
                dedupe_key=message.key,
                raw=message.raw,
                size=message.size,
                status=message.status,
                error=message.error,
            )
            session.add(row)
            rows.append((message, row))
        session.flush()
        return [(message, row.id if row is not None else None) for message, row in rows]


def pending_email_ids(
    session_factory: sessionmaker[Session], mailbox: str | None = None
) -> list[int]:
    """Stored emails not yet processed (of one mailbox, if given), oldest first."""
    query = select(InboundEmail.id).where(InboundEmail.status.in_(UNPROCESSED))
    if mailbox is not None:
        query = query.where(InboundEmail.mailbox == mailbox)
    with session_scope(session_factory) as session:
        return list(session.scalars(query.order_by(InboundEmail.id)))


def poll_mailbox_once(
    config: ImapConfig,
    session_factory: sessionmaker[Session],
    on_stored: Callable[[int], None],
    connect: Callable[[ImapConfig], Mailbox] = Mailbox.connect,
) -> PollResult:
    """Connect, poll once and log out: for one-off polls outside the loop below."""
    mailbox = connect(config)
    try:
        return poll_once(mailbox, session_factory, on_stored)
    finally:
        mailbox.close()


def watch(
    config: ImapConfig,
    session_factory: sessionmaker[Session],
    on_stored: Callable[[int], None],
    *,
    interval: float,
    idle: bool,
    stop: threading.Event,
    connect: Callable[[ImapConfig], Mailbox] = Mailbox.connect,
) -> None:
    """Keep one folder stored and handed on until ``stop`` is set; never raises.

    After each poll it waits in IDLE when the server offers it (a new message wakes it at
    once; the IDLE is renewed well inside RFC 2177's 29 minutes, and at least every
    ``interval`` as a safety net), else for ``interval``. A failure of any kind (server
    gone, connection cut, database down) is logged, the connection dropped, and the next
    attempt made after a pause that doubles up to five minutes, with jitter so that
    several pollers do not come back in step.
    """
    mailbox: Mailbox | None = None
    backoff = MIN_BACKOFF_SECONDS
    failed = False
    while not stop.is_set():
        try:
            if mailbox is None:
                mailbox = connect(config)
                log.info("reading %s", config.name)
            result = poll_once(mailbox, session_factory, on_stored)
            _log_result(config, result)
            if failed:
                # A failure may have come between storing mail and handing it on (the queue
                # down): hand on again what is still waiting. Handing on twice is harmless.
                for email_id in pending_email_ids(session_factory, config.name):
                    on_stored(email_id)
                failed = False
            backoff = MIN_BACKOFF_SECONDS
            if idle and mailbox.supports_idle():
                mailbox.wait_for_news(min(interval, IDLE_RENEW_SECONDS), stop)
            else:
                stop.wait(interval)
        except Exception as exc:  # the loop outlives every failure, and logs it
            if isinstance(exc, MailboxError):
                log.warning("%s unavailable: %s", config.name, exc)
            else:
                log.exception("polling %s failed", config.name)
            failed = True
            if mailbox is not None:
                mailbox.abandon()
                mailbox = None
            pause = backoff * random.uniform(0.8, 1.2)
            log.info("retrying %s in %.1fs", config.name, pause)
            stop.wait(pause)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
    if mailbox is not None:
        mailbox.close()


def _log_result(config: ImapConfig, result: PollResult) -> None:
    if result.stored or result.duplicates or result.moved:
        log.info(
            "%s: stored %d new message(s) (%d oversized, %d quarantined), %d duplicate(s), "
            "moved %d",
            config.name,
            result.stored,
            result.oversized,
            result.quarantined,
            result.duplicates,
            result.moved,
        )


def run(
    configs: Sequence[ImapConfig],
    session_factory: sessionmaker[Session],
    on_stored: Callable[[int], None],
    *,
    interval: float,
    stop: threading.Event,
    idle: bool = True,
    once: bool = False,
    connect: Callable[[ImapConfig], Mailbox] = Mailbox.connect,
) -> None:
    """Read every folder until ``stop`` is set; with ``once``, poll each folder one time.

    Each folder gets its own thread and its own connection. IDLE watches only the folder
    selected on its connection, so one connection per folder is the only way every folder
    hears of new mail at once; it also keeps a folder that fails (deleted, unreadable) from
    holding up the others. Folders are few (a main folder and perhaps a couple of others),
    well inside providers' connection limits (Gmail allows 15 per account).

    With ``once`` the folders are polled in turn on this thread and a connection error
    propagates.
    """
    for email_id in pending_email_ids(session_factory):
        on_stored(email_id)  # stored by an earlier run that stopped before handing it on
    if once:
        for config in configs:
            _log_result(config, poll_mailbox_once(config, session_factory, on_stored, connect))
        return
    threads = [
        threading.Thread(
            target=watch,
            args=(config, session_factory, on_stored),
            kwargs={"interval": interval, "idle": idle, "stop": stop, "connect": connect},
            name=f"imap:{config.folder}",
            daemon=True,
        )
        for config in configs
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
