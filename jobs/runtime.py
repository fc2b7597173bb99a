"""Per-process wiring for workers: settings, database, Redis, Stripe, policy. Built once, lazily.

Job functions take IDs, so they fetch their clients from here; tests install their own Runtime.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from sqlalchemy.orm import Session, sessionmaker

from core.db import check_connection, make_engine, make_session_factory
from core.errors import ConfigError
from core.helpdesks import Helpdesks
from core.helpdesks.http import RetryRules
from core.policy import PolicyConfig, load_policy
from core.settings import Settings
from core.stripe_gateway import StripeGateway, make_gateway
from jobs.queues import get_queue
from mail.smtp import SmtpConfig


def connect_redis(url: str) -> Redis:
    """A Redis connection that is known to answer, or a ConfigError naming REDIS_URL."""
    try:
        connection = Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
        connection.ping()
    except (RedisError, ValueError) as exc:
        raise ConfigError("REDIS_URL", f"cannot connect to {url} ({exc})") from None
    return connection


class SharedMinuteBudget:
    """A helpdesk account's per-minute request budget, kept in Redis so that every worker,
    poller and web process spends from the same one (Help Scout's limit is per account)."""

    WINDOWS_AHEAD = 5

    def __init__(
        self,
        redis: Redis,
        name: str,
        per_minute: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.name = name
        self.per_minute = per_minute
        self.clock = clock

    def acquire(self, cost: int = 1) -> float:
        """Book ``cost`` requests in the first minute with room; the seconds until it."""
        now = self.clock()
        current = int(now // 60)
        try:
            for window in range(current, current + self.WINDOWS_AHEAD):
                key = f"billing-desk:budget:{self.name}:{window}"
                booked = int(self.redis.incrby(key, cost))  # type: ignore[arg-type]
                if booked == cost:
                    self.redis.expire(key, 60 * (self.WINDOWS_AHEAD + 1))
                if booked <= self.per_minute:
                    return max(0.0, window * 60 - now)
        except RedisError:
            return 0.0  # no shared count: the helpdesk's own 429 still holds us back
        return (current + self.WINDOWS_AHEAD) * 60 - now


def build_helpdesks(settings: Settings, redis: Redis, rules: RetryRules | None = None) -> Helpdesks:
    """A process's helpdesk adapters, with Help Scout's budget shared through Redis."""
    budget = SharedMinuteBudget(redis, "helpscout", settings.helpscout_requests_per_minute)
    return Helpdesks(settings, helpscout_budget=budget, rules=rules)


@dataclass
class Runtime:
    """The clients one worker, poller or web process uses."""

    settings: Settings
    session_factory: sessionmaker[Session]
    redis: Redis
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    @cached_property
    def gateway(self) -> StripeGateway:
        """The Stripe gateway, built on first use."""
        return make_gateway(self.settings)

    @cached_property
    def smtp(self) -> SmtpConfig:
        """Where outgoing mail goes."""
        return SmtpConfig.from_settings(self.settings)

    @cached_property
    def helpdesks(self) -> Helpdesks:
        """The helpdesk adapters, their clients built once for this process."""
        return build_helpdesks(self.settings, self.redis)

    def queue(self, name: str) -> Queue:
        """A queue on this process's Redis."""
        return get_queue(name, self.redis)

    def after_fork(self) -> None:
        """In a process forked from the one that built this runtime: open connections of its
        own, leaving the parent's to the parent (SQLAlchemy's advice for pools across fork is
        ``dispose(close=False)``; redis-py's pool is reset the same way), and build the
        Stripe client here."""
        self.session_factory.kw["bind"].dispose(close=False)
        self.redis.connection_pool.reset()
        self.__dict__.pop("gateway", None)  # cached_property: built again on first use
        self.__dict__.pop("helpdesks", None)  # its HTTP pools and token are the parent's


def build_runtime(settings: Settings) -> Runtime:
    """Connect everything a worker needs, failing early with the setting at fault."""
    settings.require_redis()
    if settings.redis_url is None:
        raise ConfigError("REDIS_URL", "is not set")
    engine = make_engine(settings.database_url)
    check_connection(engine)
    # The worker supervisor forks its workers from this process: it must hold no pooled
    # connection a child could inherit and share (SQLAlchemy's advice for pools across fork).
    engine.dispose()
    return Runtime(
        settings=settings,
        session_factory=make_session_factory(engine),
        redis=connect_redis(settings.redis_url),
        policy=load_policy(settings.policy_file),
    )


_current: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    """Make ``runtime`` the one jobs in this process use (worker start-up and tests)."""
    global _current
    _current = runtime


def current() -> Runtime:
    """The installed runtime; a worker started by RQ's CLI builds it from the environment."""
    global _current
    if _current is None:
        _current = build_runtime(Settings.from_env(os.environ))
    return _current
