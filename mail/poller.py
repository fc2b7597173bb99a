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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core import log_context
from core.db import session_scope
from core.db.models import InboundEmail, MailboxCursor
from core.domain import InboundStatus
from core.errors import BillingDeskError, MailboxError
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
# Failures in a row after which a poller gives its folder's lease up to any other poller.
RELEASE_AFTER_FAILURES = 3
# Statuses the inbound job still has to see; re-queued when a poller starts.
UNPROCESSED = tuple(s for s in InboundStatus if s.waiting)


class FolderLease(Protocol):
    """The right to work one folder, held by one poller at a time and only for a while.

    Several pollers (on one machine or many) may read the same folder; only the holder
    fetches, stores and moves the cursor. A holder that stops renewing (killed, paused,
    cut off) loses it when it expires, and a waiting poller takes it over.
    """

    @property
    def renew_every(self) -> float:
        """Seconds between renewals (and between a waiting poller's attempts)."""
        ...

    def acquire(self) -> bool:
        """Take the lease if nobody holds it (or keep it, if this poller still does)."""
        ...

    def renew(self) -> bool:
        """Extend the lease; False if it is no longer this poller's."""
        ...

    def release(self) -> None:
        """Give the lease up, if still held, so another poller may take it at once."""
        ...


class Unshared:
    """The lease of a folder only one poller reads: always held (one-off polls, tests)."""

    renew_every = float("inf")

    def acquire(self) -> bool:
        """Always granted."""
        return True

    def renew(self) -> bool:
        """Never lost."""
        return True

    def release(self) -> None:
        """Nothing to give up."""


UNSHARED = Unshared()


class LeaseLost(BillingDeskError):
    """Another poller holds this folder's lease now: stop working it before the next write."""


def _still_held(lease: FolderLease, mailbox: Mailbox) -> None:
    if not lease.renew():
        raise LeaseLost(f"the lease on {mailbox.config.name} was lost")


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


def _cursor(session: Session, mailbox: Mailbox, lock: bool = False) -> MailboxCursor:
    # Locked (FOR UPDATE) when it is to be moved: pollers moving one cursor take turns.
    cursor = session.get(MailboxCursor, mailbox.config.name, with_for_update=lock)
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
    lease: FolderLease = UNSHARED,
) -> PollResult:
    """Store every message newer than the cursor and call on_stored(email_id) for each new one.

    With a processed folder, stored messages are then moved there (and any stored earlier
    but not moved, e.g. by a poller that stopped in between).

    The lease is renewed before each fetch and again before each batch is stored with its
    cursor move: a poller that lost it (paused past its expiry, taken over) raises LeaseLost
    without writing. The dedupe key stays the last guard for the moment between the check
    and the commit.
    """
    result = PollResult()
    _still_held(lease, mailbox)
    mailbox.select()
    with session_scope(session_factory) as session:
        last_uid = _cursor(session, mailbox).last_uid
    if mailbox.config.processed_folder:
        _move_left_behind(mailbox, session_factory, last_uid, result)
    uids = mailbox.uids_after(last_uid)
    for start in range(0, len(uids), batch_size):
        batch = uids[start : start + batch_size]
        _still_held(lease, mailbox)
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
        _still_held(lease, mailbox)
        stored = _store_batch(session_factory, mailbox, incoming, batch[-1], lease)
        for message, email_id in stored:
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
    lease: FolderLease = UNSHARED,
) -> list[tuple[Incoming, int | None]]:
    """Store a batch and advance the cursor past it in one transaction; None for duplicates."""
    try:
        return _store(session_factory, mailbox, incoming, through_uid, lease)
    except IntegrityError:
        # Another poller stored one of these a moment ago: store the rest one by one.
        stored = [
            stored
            for message in incoming
            for stored in _store_or_skip(session_factory, mailbox, message, lease)
        ]
        _store(session_factory, mailbox, [], through_uid, lease)
        return stored


def _store_or_skip(
    session_factory: sessionmaker[Session],
    mailbox: Mailbox,
    message: Incoming,
    lease: FolderLease,
) -> list[tuple[Incoming, int | None]]:
    try:
        return _store(session_factory, mailbox, [message], message.uid, lease)
    except IntegrityError:
        return [(message, None)]


def _store(
    session_factory: sessionmaker[Session],
    mailbox: Mailbox,
    incoming: Sequence[Incoming],
    through_uid: int,
    lease: FolderLease = UNSHARED,
) -> list[tuple[Incoming, int | None]]:
    """Store messages and move the cursor in one transaction, which commits only if the lease
    is still held once the cursor row is locked and the rows are written: a poller that lost
    its lease while it waited for the database (or was paused) rolls back. A new holder's
    writes queue behind the lock, so a commit after this check still comes before them."""
    with session_scope(session_factory) as session:
        cursor = _cursor(session, mailbox, lock=True)
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
        _still_held(lease, mailbox)
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
    lease: FolderLease = UNSHARED,
) -> PollResult:
    """Connect, poll once and log out: for one-off polls outside the loop below.

    A folder whose lease another poller holds is left to it: nothing is polled.
    """
    if not lease.acquire():
        log.info("%s is being read by another poller; left to it", config.name)
        return PollResult()
    try:
        mailbox = connect(config)
        try:
            return poll_once(mailbox, session_factory, on_stored, lease=lease)
        finally:
            mailbox.close()
    finally:
        lease.release()


def watch(
    config: ImapConfig,
    session_factory: sessionmaker[Session],
    on_stored: Callable[[int], None],
    *,
    interval: float,
    idle: bool,
    stop: threading.Event,
    connect: Callable[[ImapConfig], Mailbox] = Mailbox.connect,
    lease: FolderLease = UNSHARED,
) -> None:
    """Keep one folder stored and handed on until ``stop`` is set; never raises.

    Only while holding the folder's lease: a poller without it waits (saying so once) and
    tries again every ``lease.renew_every`` seconds; the holder renews it as often (in IDLE
    and in the pauses after failures too), and gives it up when it stops, or after
    RELEASE_AFTER_FAILURES failures in a row so that another poller may try. A holder that
    finds its lease gone drops the folder before its next fetch or cursor move and goes back
    to waiting.

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
    failures = 0
    held = waiting = False
    while not stop.is_set():
        try:
            if not held:
                if not lease.acquire():
                    if not waiting:
                        log.info("%s is being read by another poller; waiting", config.name)
                        waiting = True
                    stop.wait(lease.renew_every)
                    continue
                held, waiting = True, False
                if lease is not UNSHARED:
                    log.info("holding the lease on %s", config.name)
                # The last holder may have stopped between storing mail and handing it on.
                failed = True
            if mailbox is None:
                mailbox = connect(config)
                log.info("reading %s", config.name)
            result = poll_once(mailbox, session_factory, on_stored, lease=lease)
            _log_result(config, result)
            if failed:
                # A failure may have come between storing mail and handing it on (the queue
                # down): hand on again what is still waiting. Handing on twice is harmless.
                for email_id in pending_email_ids(session_factory, config.name):
                    on_stored(email_id)
                failed = False
            backoff, failures = MIN_BACKOFF_SECONDS, 0
            _wait(mailbox, lease, interval=interval, idle=idle, stop=stop)
        except LeaseLost:
            log.warning("lost the lease on %s: another poller reads it now", config.name)
            held = False
            if mailbox is not None:
                mailbox.close()
                mailbox = None
        except Exception as exc:  # the loop outlives every failure, and logs it
            if isinstance(exc, MailboxError):
                log.warning("%s unavailable: %s", config.name, exc)
            else:
                log.exception("polling %s failed", config.name)
            failed = True
            failures += 1
            if mailbox is not None:
                mailbox.abandon()
                mailbox = None
            if held and failures >= RELEASE_AFTER_FAILURES:
                # Another poller (perhaps on a machine that can reach the server) may go on.
                _release(lease, config)
                held = False
            pause = backoff * random.uniform(0.8, 1.2)
            log.info("retrying %s in %.1fs", config.name, pause)
            if held:
                held = _pause_holding(lease, pause, stop)
            else:
                stop.wait(pause)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
    if mailbox is not None:
        mailbox.close()
    if held:
        _release(lease, config)


def _wait(
    mailbox: Mailbox, lease: FolderLease, *, interval: float, idle: bool, stop: threading.Event
) -> None:
    """Wait for news (IDLE) or for ``interval``, renewing the lease as often as it needs.

    One IDLE for the whole wait, renewed from inside it: ending and re-issuing an IDLE for
    each renewal would open gaps in which a server's notice of new mail can be missed.
    """
    renew_at = time.monotonic() + lease.renew_every
    lost = False

    def renewed_if_due() -> bool:
        nonlocal renew_at, lost
        if time.monotonic() >= renew_at:
            renew_at = time.monotonic() + lease.renew_every
            lost = not lease.renew()
        return not lost

    if idle and mailbox.supports_idle():
        mailbox.wait_for_news(min(interval, IDLE_RENEW_SECONDS), stop, renewed_if_due)
    else:
        deadline = time.monotonic() + interval
        while renewed_if_due() and not stop.wait(min(deadline, renew_at) - time.monotonic()):
            if time.monotonic() >= deadline:
                break
    if lost:
        raise LeaseLost(f"the lease on {mailbox.config.name} was lost")


def _pause_holding(lease: FolderLease, seconds: float, stop: threading.Event) -> bool:
    """Pause after a failure, renewing the lease meanwhile; False once it is lost."""
    deadline = time.monotonic() + seconds
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        stop.wait(min(left, lease.renew_every))
        try:
            if not lease.renew():
                return False
        except Exception:  # Redis unreachable: assume the worst, take it again later
            log.warning("could not renew a lease", exc_info=True)
            return False
    return True


def _release(lease: FolderLease, config: ImapConfig) -> None:
    try:
        lease.release()
    except Exception:  # a lease not given up expires on its own
        log.warning("could not release the lease on %s", config.name, exc_info=True)


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
    lease_for: Callable[[ImapConfig], FolderLease] = lambda _config: UNSHARED,
) -> None:
    """Read every folder until ``stop`` is set; with ``once``, poll each folder one time.

    ``lease_for`` gives each folder its lease when several pollers may read it (the CLI
    passes Redis leases); by default each folder is this process's alone.

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
            result = poll_mailbox_once(
                config, session_factory, on_stored, connect, lease=lease_for(config)
            )
            _log_result(config, result)
        return
    threads = [
        threading.Thread(
            target=watch,
            args=(config, session_factory, on_stored),
            kwargs={
                "interval": interval,
                "idle": idle,
                "stop": stop,
                "connect": connect,
                "lease": lease_for(config),
            },
            name=f"imap:{config.folder}",
            daemon=True,
        )
        for config in configs
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
