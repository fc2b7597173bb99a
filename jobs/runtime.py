"""Per-process wiring for workers: settings, database, Redis, Stripe, policy. Built once, lazily.

Job functions take IDs, so they fetch their clients from here; tests install their own Runtime.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis import Redis
from redis.exceptions import RedisError
from redis.sentinel import Sentinel
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

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelUrl:
    """``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``.

    The user and password are the master's (Redis AUTH); ``?sentinel_password=`` (and
    ``sentinel_username=``) are the Sentinels' own when they ask for one. ``rediss+sentinel``
    speaks TLS to the Sentinels and the master alike. redis-py's ``from_url`` reads no
    Sentinel URL, so this one is read here and handed to ``redis.sentinel.Sentinel``.
    """

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False

    @classmethod
    def parse(cls, url: str) -> SentinelUrl:
        """Read a Sentinel URL, or raise ValueError saying what is wrong with it."""
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in SENTINEL_SCHEMES:
            raise ValueError("a Sentinel URL starts with redis+sentinel:// or rediss+sentinel://")
        parts = urlsplit(f"//{rest}")
        userinfo, _, hosts = parts.netloc.rpartition("@")
        username, has_password, password = userinfo.partition(":")
        sentinels = tuple(_host_port(host) for host in hosts.split(",") if host)
        if not sentinels:
            raise ValueError("name at least one Sentinel host")
        path = [unquote(segment) for segment in parts.path.split("/") if segment]
        if not path or len(path) > 2:
            raise ValueError("the path is /service_name or /service_name/db")
        if len(path) == 2 and not path[1].isdigit():
            raise ValueError(f"the database must be a number, not {path[1]!r}")
        query = parse_qs(parts.query)
        unknown = set(query) - {"sentinel_username", "sentinel_password"}
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(sorted(unknown))}")
        return cls(
            sentinels=sentinels,
            service_name=path[0],
            db=int(path[1]) if len(path) == 2 else 0,
            username=unquote(username) or None,
            password=unquote(password) if has_password else None,
            sentinel_username=query.get("sentinel_username", [None])[-1],
            sentinel_password=query.get("sentinel_password", [None])[-1],
            ssl=SENTINEL_SCHEMES[scheme],
        )

    def connect(self, **options: Any) -> Redis:
        """A client of the service's current master, following failovers as Sentinel
        announces them; ``options`` go to every connection (timeouts, health checks)."""
        timeouts = {k: v for k, v in options.items() if k.startswith("socket_")}
        sentinel = Sentinel(
            list(self.sentinels),
            sentinel_kwargs={
                **timeouts,
                "username": self.sentinel_username,
                "password": self.sentinel_password,
                "ssl": self.ssl,
            },
        )
        return sentinel.master_for(
            self.service_name,
            db=self.db,
            username=self.username,
            password=self.password,
            ssl=self.ssl,
            **options,
        )


def _host_port(host: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port``; Sentinel's own port by default."""
    name, colon, port = host.rpartition(":")
    if not colon or host.endswith("]"):
        return host.strip("[]"), SENTINEL_PORT
    if not port.isdigit():
        raise ValueError(f"bad port in {host!r}")
    return name.strip("[]"), int(port)


def redis_client(url: str, **overrides: Any) -> Redis:
    """A client for REDIS_URL: a plain Redis URL (redis-py's from_url), or a Sentinel URL;
    ``overrides`` replace the connection options (a caller's own timeouts)."""
    options: dict[str, Any] = {
        "socket_connect_timeout": 5,
        "health_check_interval": 30,
        **overrides,
    }
    if url.partition("://")[0] in SENTINEL_SCHEMES:
        return SentinelUrl.parse(url).connect(**options)
    return Redis.from_url(url, **options)


def connect_redis(url: str) -> Redis:
    """A Redis connection that is known to answer, or a ConfigError naming REDIS_URL."""
    try:
        connection = redis_client(url)
        connection.ping()
    except (RedisError, ValueError) as exc:
        raise ConfigError(
            "REDIS_URL", f"cannot connect to {_without_secrets(url)} ({exc})"
        ) from None
    return connection


def _without_secrets(url: str) -> str:
    """The URL with its password and query left out, for error messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest = rest.split("?", 1)[0]
    _userinfo, at, hosts = rest.rpartition("@")
    return f"{scheme}://{'***@' if at else ''}{hosts}"


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
