"""Probes: ``/healthz`` (the process answers) and ``/readyz`` (it can do its work).

Readiness checks the database (``SELECT 1``), Redis (``PING``) and Stripe (the balance, a
cheap authenticated read) at the same time, each within ``CHECK_TIMEOUT_SECONDS``; Stripe's
answer is kept ``STRIPE_CACHE_SECONDS`` so a probe every second does not spend the account's
rate limit. A failure names the check and the exception's class, never its text (which can
hold a URL with a password). Both are unauthenticated and read-only: GETs, no session, no CSRF.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify
from redis import Redis
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from core.stripe_gateway import StripeGateway, make_gateway
from helpdesk_app.services import get_services
from jobs.runtime import redis_client

bp = Blueprint("health", __name__)

CHECK_TIMEOUT_SECONDS = 2.0
STRIPE_CACHE_SECONDS = 10.0
_KEY = "billing_desk_health"


@dataclass
class Readiness:
    """One process's readiness checks and the clients they use (built on first use)."""

    settings: Settings
    session_factory: sessionmaker[Session]
    timeout: float = CHECK_TIMEOUT_SECONDS
    stripe_cache_seconds: float = STRIPE_CACHE_SECONDS
    clock: Callable[[], float] = time.monotonic
    _stripe_result: tuple[float, str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # A check stuck past its timeout keeps its thread; a few spares keep the next probes going.
    _pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=6, thread_name_prefix="readyz")
    )

    @cached_property
    def redis(self) -> Redis:
        """A Redis client of its own, whose connects and reads give up within the timeout."""
        assert self.settings.redis_url is not None
        return redis_client(  # every REDIS_URL we accept, Sentinel too
            self.settings.redis_url,
            socket_connect_timeout=self.timeout,
            socket_timeout=self.timeout,
        )

    @cached_property
    def gateway(self) -> StripeGateway:
        """A Stripe gateway that waits ``timeout`` at most and never retries."""
        return make_gateway(self.settings, timeout=self.timeout)

    def check_database(self) -> None:
        """SELECT 1."""
        with self.session_factory() as session:
            session.execute(text("SELECT 1"))

    def check_redis(self) -> None:
        """PING."""
        self.redis.ping()

    def check_stripe(self) -> None:
        """The balance, at most once every ``stripe_cache_seconds`` (failures too)."""
        with self._lock:
            cached = self._stripe_result
            if cached is None or self.clock() - cached[0] >= self.stripe_cache_seconds:
                cached = (self.clock(), _outcome(lambda: self.gateway.check_access()))
                self._stripe_result = cached
        if cached[1] != "ok":
            raise _Failed(cached[1])

    def run(self) -> dict[str, str]:
        """Every check at once: ``{"database": "ok", "redis": "failed: ConnectionError"...}``."""
        checks = {
            "database": self.check_database,
            "redis": self.check_redis,
            "stripe": self.check_stripe,
        }
        futures = {name: self._pool.submit(_outcome, check) for name, check in checks.items()}
        deadline = time.monotonic() + self.timeout + 0.5
        results = {}
        for name, future in futures.items():
            try:
                results[name] = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                results[name] = "failed: timeout"
        return results


class _Failed(Exception):
    """A cached failure, carrying its outcome."""


def _outcome(check: Callable[[], Any]) -> str:
    try:
        check()
    except _Failed as cached:
        return str(cached)
    except Exception as exc:  # any failure means not ready; only its class name is shown
        return f"failed: {type(exc).__name__}"
    return "ok"


@bp.get("/healthz")
def healthz() -> Any:
    """The process answers; nothing else is checked."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Any:
    """200 when the database, Redis and Stripe all answer in time; 503 naming those that do
    not."""
    readiness: Readiness | None = current_app.extensions.get(_KEY)
    if readiness is None:
        services = get_services()
        readiness = Readiness(services.settings, services.session_factory)
        current_app.extensions[_KEY] = readiness
    checks = readiness.run()
    failed = sorted(name for name, outcome in checks.items() if outcome != "ok")
    if failed:
        body = jsonify(status="unavailable", failed=failed, checks=checks)
        return body, 503, {"Cache-Control": "no-store"}
    return jsonify(status="ok", checks=checks), 200, {"Cache-Control": "no-store"}


def init_app(app: Flask) -> None:
    """The probes (their checks' clients are built at the first probe)."""
    app.register_blueprint(bp)
