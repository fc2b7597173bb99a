"""What views use: settings, a request-scoped database session, the Stripe gateway."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from flask import Flask, current_app, g
from redis import Redis
from rq import Queue
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_session_factory
from core.helpdesks import Helpdesks
from core.helpdesks.http import RetryRules
from core.policy import PolicyConfig, load_policy
from core.settings import Settings
from core.stripe_gateway import StripeGateway, make_gateway
from jobs.queues import ACTIONS, get_queue
from jobs.runtime import build_helpdesks, connect_redis

_KEY = "billing_desk"
WEB_REQUEST_RULES = RetryRules(attempts=2, longest_wait=2.0, first_backoff=0.25)


@dataclass
class Services:
    """Clients built once per web process."""

    settings: Settings
    session_factory: sessionmaker[Session]

    policy: PolicyConfig

    @cached_property
    def gateway(self) -> StripeGateway:
        """The Stripe gateway, built on first use."""
        return make_gateway(self.settings)

    @cached_property
    def redis(self) -> Redis:
        """The Redis that workers take jobs from, connected on first use."""
        self.settings.require_redis()
        assert self.settings.redis_url is not None
        return connect_redis(self.settings.redis_url)

    @cached_property
    def helpdesks(self) -> Helpdesks:
        """The helpdesk adapters, their clients built once for this process; a web request
        waits for a helpdesk a moment at most (a worker waits longer, and retries later)."""
        return build_helpdesks(self.settings, self.redis, WEB_REQUEST_RULES)

    @property
    def actions_queue(self) -> Queue:
        """The queue agents' actions go to."""
        return get_queue(ACTIONS, self.redis)


def init_app(app: Flask, settings: Settings) -> None:
    """Attach services to the app and close each request's session when it ends."""
    engine = make_engine(settings.database_url)
    app.extensions[_KEY] = Services(
        settings, make_session_factory(engine), load_policy(settings.policy_file)
    )
    app.teardown_appcontext(_close_session)


def get_services() -> Services:
    """The current app's services."""
    services: Services = current_app.extensions[_KEY]
    return services


def get_session() -> Session:
    """This request's database session, opened on first use."""
    if "db_session" not in g:
        g.db_session = get_services().session_factory()
    session: Session = g.db_session
    return session


def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
