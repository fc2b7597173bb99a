"""One poller per mailbox folder at a time, across processes and machines: a lease in Redis.

The lease is a redis-py ``Lock``: taken with ``SET key token NX PX ttl`` under a random token,
renewed by a Lua compare-and-set on that token (``reacquire``: the TTL is set back to its
full length only if the key still holds our token), released by a compare-and-delete. A
holder that dies stops renewing and its key expires after the TTL; a waiting poller then
takes it. The poller (mail/poller.py) sees only its small FolderLease protocol, so mail/
stays free of Redis.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from redis import Redis
from redis.exceptions import LockError
from redis.lock import Lock

from mail.imap import ImapConfig

log = logging.getLogger(__name__)

KEY_PREFIX = "billing-desk:mail-lease:"
# Renewed three times per TTL: two renewals may be missed (a slow Redis, a long batch)
# before the lease lapses.
RENEWALS_PER_TTL = 3


def lease_key(config: ImapConfig) -> str:
    """The Redis key of a folder's lease: user, host, port and folder, as its cursor is named.

    The lease guards the cursor, so pollers that would move the same cursor share one lease.
    Host names are case-insensitive; folder names are not (RFC 3501).
    """
    return f"{KEY_PREFIX}{config.user}@{config.host.lower()}:{config.port}/{config.folder}"


class RedisFolderLease:
    """A folder's lease in Redis for one poller thread (FolderLease)."""

    def __init__(self, redis: Redis, key: str, ttl_seconds: float) -> None:
        self.key = key
        self.ttl_seconds = ttl_seconds
        # thread_local=False: the token belongs to this object, which one poller thread uses.
        self._lock = Lock(redis, key, timeout=ttl_seconds, blocking=False, thread_local=False)

    @property
    def renew_every(self) -> float:
        """Seconds between renewals, and between a waiting poller's attempts."""
        return self.ttl_seconds / RENEWALS_PER_TTL

    @property
    def token(self) -> str | None:
        """This holder's random token while it believes it holds the lease."""
        token = self._lock.local.token
        return token.decode() if isinstance(token, bytes) else token

    def acquire(self) -> bool:
        """Keep the lease if the key still holds our token, else take it if nobody holds it."""
        if self._lock.local.token is not None and self.renew():
            return True
        return bool(self._lock.acquire(blocking=False, token=secrets.token_hex(16)))

    def renew(self) -> bool:
        """Set the TTL back to its full length if the lease is still ours; False if not."""
        if self._lock.local.token is None:
            return False
        try:
            self._lock.reacquire()
        except LockError:  # LockNotOwnedError: expired, or another poller's token now
            self._lock.local.token = None
            return False
        return True

    def release(self) -> None:
        """Delete the key if it still holds our token (never another poller's lease)."""
        if self._lock.local.token is None:
            return
        try:
            self._lock.release()
        except LockError:
            log.info("the lease %s had already passed to another poller", self.key)


def redis_leases(redis: Redis, ttl_seconds: float) -> Callable[[ImapConfig], RedisFolderLease]:
    """The ``lease_for`` of mail.poller.run: a lease per folder, on this process's Redis."""
    return lambda config: RedisFolderLease(redis, lease_key(config), ttl_seconds)
