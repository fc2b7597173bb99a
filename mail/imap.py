"""A small wrapper over imapclient: connect, select, list new UIDs, fetch without marking read.

Every imapclient or socket error leaves this module as a MailboxError, so the poller has one
thing to catch. Nothing here deletes mail: reads use BODY.PEEK (no \\Seen flag), and the only
change ever made is moving stored mail to a processed folder when one is configured.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Self

import imapclient
from imapclient.exceptions import IMAPClientError

from core.errors import ConfigError, MailboxError
from core.settings import Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 15
# Also bounds a command on a half-open connection, e.g. the DONE that ends an IDLE
# (imapclient #449: idle_done() hangs forever on a severed connection without one).
FETCH_TIMEOUT_SECONDS = 60
# RFC 2177: re-issue IDLE at least every 29 minutes; imapclient's docs advise every 10.
IDLE_RENEW_SECONDS = 10 * 60
# The most of a header block stored for a message too large to download.
HEADER_BYTES = 256 * 1024
# How often a waiting IDLE looks up to check whether it was asked to stop.
IDLE_CHECK_SECONDS = 1.0
# Untagged responses during IDLE that need no poll: keep-alives ("* OK Still here") and
# flag changes made by people reading the mailbox.
_QUIET_IDLE_RESPONSES = {b"OK", b"FETCH"}


@dataclass(frozen=True)
class ImapConfig:
    """One mailbox folder to read, and what to do with what is read from it."""

    host: str
    port: int
    user: str
    password: str
    folder: str = "INBOX"
    ssl: bool = True
    # Stored mail is moved here when set (never deleted); the folder is created if missing.
    processed_folder: str | None = None
    # Larger messages are not downloaded; only their headers are stored.
    max_message_bytes: int = 25 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings, folder: str | None = None) -> ImapConfig:
        """The IMAP part of the settings, for ``folder`` (default: the main folder)."""
        settings.require_imap()
        assert settings.imap_host and settings.imap_user and settings.imap_password
        return cls(
            host=settings.imap_host,
            port=settings.imap_port,
            user=settings.imap_user,
            password=settings.imap_password,
            folder=folder or settings.imap_folder,
            ssl=settings.imap_ssl,
            processed_folder=settings.imap_processed_folder,
            max_message_bytes=settings.max_message_bytes,
        )

    @classmethod
    def all_from_settings(cls, settings: Settings) -> list[ImapConfig]:
        """One config per folder to read: the main folder, then the extra folders."""
        folders = list(dict.fromkeys((settings.imap_folder, *settings.imap_extra_folders)))
        if settings.imap_processed_folder in folders:
            # Moving stored mail into a folder we read would store nothing twice, but would
            # read every message again forever.
            raise ConfigError("IMAP_PROCESSED_FOLDER", "must not be one of the folders read")
        return [cls.from_settings(settings, folder) for folder in folders]

    @property
    def name(self) -> str:
        """A stable name for the cursor of this mailbox."""
        return f"{self.user}@{self.host}:{self.port}/{self.folder}"


@contextlib.contextmanager
def _wrapped(what: str) -> Iterator[None]:
    """Turn imapclient and socket errors into MailboxError, naming the command."""
    try:
        yield
    except (IMAPClientError, OSError) as exc:
        raise MailboxError(f"IMAP {what}: {exc}") from exc


class Mailbox:
    """One selected IMAP folder on its own connection."""

    def __init__(self, client: imapclient.IMAPClient, config: ImapConfig) -> None:
        self.client = client
        self.config = config
        self.uidvalidity = 0

    @classmethod
    def connect(cls, config: ImapConfig) -> Self:
        """Log in and select the folder, or raise MailboxError."""
        where = f"{config.host}:{config.port}"
        with _wrapped(f"connect to {where}"):
            client = imapclient.IMAPClient(
                config.host,
                port=config.port,
                ssl=config.ssl,
                timeout=imapclient.SocketTimeout(CONNECT_TIMEOUT_SECONDS, FETCH_TIMEOUT_SECONDS),
            )
        mailbox = cls(client, config)
        try:
            with _wrapped(f"login to {where}"):
                client.login(config.user, config.password)
            if config.processed_folder:
                mailbox._ensure_folder(config.processed_folder)
            mailbox.select()
        except MailboxError:
            mailbox.abandon()
            raise
        return mailbox

    def reconnect(self) -> None:
        """Replace this connection with a fresh one; fail if the folder's UIDs changed meaning.

        A UIDVALIDITY change aborts the caller's work on the old UIDs: the next poll rescans.
        """
        old_uidvalidity = self.uidvalidity
        self.abandon()
        fresh = type(self).connect(self.config)
        self.client = fresh.client
        self.uidvalidity = fresh.uidvalidity
        if old_uidvalidity and self.uidvalidity != old_uidvalidity:
            raise MailboxError(f"UIDVALIDITY of {self.config.folder} changed while reading it")

    def _ensure_folder(self, folder: str) -> None:
        with _wrapped(f"create folder {folder}"):
            if self.client.folder_exists(folder):
                return
            try:
                self.client.create_folder(folder)
            except IMAPClientError:
                # Another poller thread may have created it a moment ago.
                if not self.client.folder_exists(folder):
                    raise

    def select(self) -> int:
        """Select the folder and return its UIDVALIDITY.

        Read-only unless stored mail is to be moved: without a processed folder, we change
        nothing at all.
        """
        readonly = not self.config.processed_folder
        with _wrapped(f"select {self.config.folder}"):
            info = self.client.select_folder(self.config.folder, readonly=readonly)
        self._take_announced_mail()  # the folder's size as selected: the first poll reads it
        self.uidvalidity = int(info[b"UIDVALIDITY"])
        return self.uidvalidity

    def _take_announced_mail(self) -> bool:
        """Whether the answers to our last commands announced new mail; forget they did.

        A server tells of mail that arrives while a command of ours runs (a FETCH, a SEARCH)
        in that command's answer. imaplib keeps such untagged EXISTS and RECENT lines aside,
        imapclient does not hand them on, and an IDLE begun afterwards would never announce
        that mail again: it would wait for the next poll interval.
        """
        kept = self.client._imap.untagged_responses  # imaplib's, under imapclient
        exists = kept.pop("EXISTS", None)
        recent = kept.pop("RECENT", None)
        return bool(exists or recent)

    def supports_idle(self) -> bool:
        """Whether the server advertises IDLE (RFC 2177)."""
        with _wrapped("capabilities"):
            return bool(self.client.has_capability("IDLE"))

    def supports_move(self) -> bool:
        """Whether the server advertises MOVE (RFC 6851)."""
        with _wrapped("capabilities"):
            return bool(self.client.has_capability("MOVE"))

    def uids_after(self, last_uid: int) -> list[int]:
        """UIDs greater than last_uid, ascending; read or unread alike."""
        with _wrapped("search"):
            # "N:*" always includes the highest UID, even when it is <= N: filter it out.
            uids = self.client.search(["UID", f"{last_uid + 1}:*"])
        return sorted(uid for uid in uids if uid > last_uid)

    def uids_through(self, last_uid: int) -> list[int]:
        """UIDs from 1 to last_uid that are still in the folder, ascending."""
        if last_uid < 1:
            return []
        with _wrapped("search"):
            uids = self.client.search(["UID", f"1:{last_uid}"])
        return sorted(uid for uid in uids if uid <= last_uid)

    def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """RFC822.SIZE of each UID still in the folder: known before anything is downloaded."""
        response = self._fetch(uids, [b"RFC822.SIZE"], "fetch sizes")
        return {
            uid: int(data[b"RFC822.SIZE"])
            for uid, data in response.items()
            if b"RFC822.SIZE" in data
        }

    def fetch(self, uids: Sequence[int]) -> dict[int, bytes]:
        """Whole raw messages by UID; BODY.PEEK leaves the \\Seen flag alone.

        A UID the server sent nothing for is missing from the result.
        """
        response = self._fetch(uids, [b"BODY.PEEK[]"], "fetch")
        return {
            uid: bytes(data[b"BODY[]"])
            for uid, data in response.items()
            if data.get(b"BODY[]") is not None
        }

    def fetch_headers(self, uids: Sequence[int]) -> dict[int, bytes]:
        """The header block of each message (with its blank line), without \\Seen.

        At most HEADER_BYTES of it, so a message made of one huge header is not downloaded
        either; servers that do not answer partial fetches (pymap) send the whole block.
        """
        partial = f"BODY.PEEK[HEADER]<0.{HEADER_BYTES}>".encode()
        response = self._fetch(uids, [partial], "fetch headers")
        headers = {
            uid: bytes(data[b"BODY[HEADER]<0>"])
            for uid, data in response.items()
            if data.get(b"BODY[HEADER]<0>") is not None
        }
        missing = [uid for uid in uids if uid not in headers]
        response = self._fetch(missing, [b"BODY.PEEK[HEADER]"], "fetch headers")
        headers.update(
            (uid, bytes(data[b"BODY[HEADER]"]))
            for uid, data in response.items()
            if data.get(b"BODY[HEADER]") is not None
        )
        return headers

    def _fetch(self, uids: Sequence[int], items: list[bytes], what: str) -> dict[int, Any]:
        if not uids:
            return {}
        with _wrapped(what):
            response = self.client.fetch(list(uids), items)
        # Servers may add unsolicited FETCH responses (flag changes) for other UIDs.
        wanted = set(uids)
        return {uid: data for uid, data in response.items() if uid in wanted}

    def move(self, uids: Sequence[int], folder: str) -> None:
        """Move stored messages to ``folder``: MOVE, or COPY (original left) without it.

        Without MOVE the original stays where it is: we never delete or expunge mail, and
        the cursor already keeps it from being read again.
        """
        if not uids:
            return
        if self.supports_move():
            with _wrapped(f"move to {folder}"):
                self.client.move(list(uids), folder)
        else:
            with _wrapped(f"copy to {folder}"):
                self.client.copy(list(uids), folder)

    def wait_for_news(
        self,
        timeout: float,
        stop: threading.Event,
        keep_waiting: Callable[[], bool] = lambda: True,
    ) -> bool:
        """IDLE until the server reports a change, ``timeout`` passes, ``stop`` is set or
        ``keep_waiting()`` (asked about once a second) says no.

        True when the server reported something worth a poll. A connection that drops during
        the IDLE raises MailboxError when the IDLE is ended.
        """
        if self._take_announced_mail():
            return True
        news = False
        with _wrapped("idle"):
            self.client.idle()
            log.debug("idling on %s", self.config.name)
            deadline = time.monotonic() + timeout
            while not stop.is_set() and keep_waiting():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wait = min(IDLE_CHECK_SECONDS, left)
                started = time.monotonic()
                responses = self.client.idle_check(timeout=wait)
                if any(_worth_a_poll(response) for response in responses):
                    news = True
                    break
                if not responses and time.monotonic() - started < wait / 2:
                    # Readable but nothing to read: the server closed the connection.
                    # Ending the IDLE below raises on a dead connection and is harmless
                    # on a live one.
                    news = True
                    break
            # What arrived between the last check and the end of the IDLE comes with DONE's
            # answer; a new IDLE would not report it again.
            _, finishing = self.client.idle_done()
            news = news or any(_worth_a_poll(response) for response in finishing)
        return news

    def close(self) -> None:
        """Log out, ignoring a connection that is already gone."""
        with contextlib.suppress(IMAPClientError, OSError):
            self.client.logout()

    def abandon(self) -> None:
        """Drop a connection that failed, without a LOGOUT that could wait on a dead peer."""
        with contextlib.suppress(IMAPClientError, OSError):
            self.client.shutdown()


def _worth_a_poll(response: tuple[Any, ...]) -> bool:
    """Whether an untagged IDLE response may mean new mail (EXISTS, BYE, anything unknown)."""
    kinds = [part for part in response[:2] if isinstance(part, bytes)]
    return not kinds or kinds[0].upper() not in _QUIET_IDLE_RESPONSES
