"""A small wrapper over imapclient: connect, select, list new UIDs, fetch without marking read."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Self

import imapclient
from imapclient.exceptions import IMAPClientError

from core.errors import MailboxError
from core.settings import Settings

FETCH_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class ImapConfig:
    """One mailbox to read."""

    host: str
    port: int
    user: str
    password: str
    folder: str = "INBOX"
    ssl: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> ImapConfig:
        """The IMAP part of the settings."""
        settings.require_imap()
        assert settings.imap_host and settings.imap_user and settings.imap_password
        return cls(
            host=settings.imap_host,
            port=settings.imap_port,
            user=settings.imap_user,
            password=settings.imap_password,
            folder=settings.imap_folder,
            ssl=settings.imap_ssl,
        )

    @property
    def name(self) -> str:
        """A stable name for the cursor of this mailbox."""
        return f"{self.user}@{self.host}:{self.port}/{self.folder}"


@dataclass(frozen=True)
class FetchedMessage:
    """One message exactly as the server holds it."""

    uid: int
    raw: bytes


class Mailbox:
    """One selected IMAP folder."""

    def __init__(self, client: imapclient.IMAPClient, config: ImapConfig) -> None:
        self.client = client
        self.config = config
        self.uidvalidity = 0

    @classmethod
    def connect(cls, config: ImapConfig) -> Self:
        """Log in and select the folder, or raise MailboxError."""
        try:
            client = imapclient.IMAPClient(
                config.host, port=config.port, ssl=config.ssl, timeout=FETCH_TIMEOUT_SECONDS
            )
            client.login(config.user, config.password)
        except (TimeoutError, IMAPClientError, OSError) as exc:
            raise MailboxError(f"IMAP {config.host}:{config.port}: {exc}") from exc
        mailbox = cls(client, config)
        mailbox.select()
        return mailbox

    def select(self) -> int:
        """Select the folder (read-only: we never change mail) and return its UIDVALIDITY."""
        try:
            info = self.client.select_folder(self.config.folder, readonly=True)
        except (IMAPClientError, OSError) as exc:
            raise MailboxError(f"IMAP select {self.config.folder}: {exc}") from exc
        self.uidvalidity = int(info[b"UIDVALIDITY"])
        return self.uidvalidity

    def uids_after(self, last_uid: int) -> list[int]:
        """UIDs greater than last_uid, ascending; read or unread alike."""
        try:
            # "N:*" always includes the highest UID, even when it is <= N: filter it out.
            uids = self.client.search(["UID", f"{last_uid + 1}:*"])
        except (IMAPClientError, OSError) as exc:
            raise MailboxError(f"IMAP search: {exc}") from exc
        return sorted(uid for uid in uids if uid > last_uid)

    def fetch(self, uids: Sequence[int]) -> Iterator[FetchedMessage]:
        """Raw messages for these UIDs, in UID order; BODY.PEEK leaves the \\Seen flag alone."""
        if not uids:
            return
        try:
            response = self.client.fetch(list(uids), ["BODY.PEEK[]"])
        except (IMAPClientError, OSError) as exc:
            raise MailboxError(f"IMAP fetch: {exc}") from exc
        for uid in sorted(response):
            raw = response[uid].get(b"BODY[]")
            if raw is not None:
                yield FetchedMessage(uid=uid, raw=bytes(raw))

    def close(self) -> None:
        """Log out, ignoring a connection that is already gone."""
        with contextlib.suppress(IMAPClientError, OSError):
            self.client.logout()
