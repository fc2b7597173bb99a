"""Per-client rate limits on every route (Flask-Limiter), counted in our Redis.

Each route belongs to one surface, and each surface gives every client one budget, shared by
all of that surface's routes (``RATE_LIMIT_*`` settings):

- the sidebar's API (bearer sidebar token): per agent and helpdesk account named by the
  verified token, reads (GET) apart from writes (every other method), so one agent's script
  cannot flood Stripe; a request without a valid token counts against its address;
- the built-in helpdesk's pages and RQ's dashboard (session): per signed-in agent, else address;
- public routes (sign-in, update-card links, the Zendesk and Help Scout launchers): per address;
- webhooks: per address, generous (see ``Surface.WEBHOOKS``);
- the probes and ``/metrics``: never limited (an orchestrator or a scraper must not be refused;
  ``/metrics`` answers loopback or its token only, ``/readyz`` caches Stripe's answer).

The client address is the TCP peer's (``request.remote_addr``), as sign-in's lockout takes
it: no forwarding header is believed, so a client cannot pick the address it is counted under.
Behind reverse proxies of our own, ``TRUSTED_PROXIES`` says how many: the app then takes the
client's address from their X-Forwarded-For hops alone (werkzeug's ProxyFix, in create_app).

Redis going away must not take the site down: each process then counts in its own memory
(Flask-Limiter's in-memory fallback, the same limits per process) and tries Redis again now
and then; any other failure of the limiter lets the request through (``swallow_errors``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any, cast

from flask import Flask, current_app, request
from flask_limiter import Limit, Limiter

from core.settings import Settings
from helpdesk_app.auth import current_agent, sidebar_token_claims
from jobs.runtime import redis_client

log = logging.getLogger(__name__)

_KEY = "billing_desk_rate_limits"
# Every count's Redis key carries it, between limits' own prefix and the client's key.
KEY_PREFIX = "billing-desk"
# Redis is on our own network: a limiter that cannot hear from it within this long gives up
# on it and counts in memory, rather than holding every request up.
STORAGE_TIMEOUT_SECONDS = 0.5


class Surface(StrEnum):
    """Which budget a request spends; its value names the counter in Redis."""

    SIDEBAR_READS = "sidebar-reads"
    SIDEBAR_WRITES = "sidebar-writes"
    PAGES = "pages"
    PUBLIC = "public"
    # Per client address, counted before the signature is checked, on purpose: the address is
    # the TCP peer's, which a forger cannot choose, so a forged flood spends only the forger's
    # own budget and Stripe's (or Zendesk's, Help Scout's) addresses keep theirs. Counting only
    # verified deliveries would leave forgeries unlimited; keying on anything in the request
    # (account, event ID) would let a forger spend Stripe's budget.
    WEBHOOKS = "webhooks"
    EXEMPT = "exempt"


# Routes that are not their blueprint's usual kind.
_ENDPOINTS = {
    "auth.login": Surface.PUBLIC,
    "auth.logout": Surface.PAGES,
    "sidebar.local_sidebar": Surface.PAGES,  # the built-in helpdesk's page that mints a token
}
_BLUEPRINTS = {
    "helpdesk": Surface.PAGES,
    "rq_dashboard": Surface.PAGES,
    "embedded": Surface.PUBLIC,
    "billing_links": Surface.PUBLIC,
    "webhooks": Surface.WEBHOOKS,
    "health": Surface.EXEMPT,
    "observability": Surface.EXEMPT,
}
# Static files are left alone by Flask-Limiter itself (any endpoint named ``static``).
STATIC = "static"


def surface_of(endpoint: str, method: str) -> Surface | None:
    """The surface a route belongs to, or None for a route nobody has classified."""
    if endpoint in _ENDPOINTS:
        return _ENDPOINTS[endpoint]
    blueprint, _, _ = endpoint.rpartition(".")
    if blueprint == "sidebar":
        return Surface.SIDEBAR_READS if method in ("GET", "HEAD") else Surface.SIDEBAR_WRITES
    return _BLUEPRINTS.get(blueprint)


def current_surface() -> Surface:
    """This request's surface; a route nobody classified is limited as a public one."""
    return surface_of(request.endpoint or "", request.method) or Surface.PUBLIC


def client_address() -> str:
    """The TCP peer's address (see the module's docstring for why no header is believed)."""
    return request.remote_addr or "unknown"


def _by_address() -> str:
    return f"address:{client_address()}"


def _by_agent() -> str:
    try:
        agent = current_agent()
    except Exception:  # the database's trouble is the view's to report, not the limiter's
        log.warning("rate limit: could not read the session; counting the address")
        agent = None
    return f"agent:{agent.id}" if agent is not None else _by_address()


def _by_sidebar_token() -> str:
    claims = sidebar_token_claims()
    if claims is None:
        return _by_address()
    return f"agent:{claims.get('g')}:{claims.get('h')}:{claims.get('a')}"


def is_api_request() -> bool:
    """True for the sidebar's API and the webhooks, whose refusals are JSON."""
    return current_surface() in (Surface.SIDEBAR_READS, Surface.SIDEBAR_WRITES, Surface.WEBHOOKS)


def retry_after_seconds() -> int:
    """Seconds until the limit this request broke lets the client in again (at least 1)."""
    limiter: Limiter | None = current_app.extensions.get(_KEY)
    breached = limiter.current_limit if limiter is not None else None
    if breached is None:
        return 1
    try:
        reset_at = breached.reset_at
    except Exception:  # the storage went away since: the window's length is an upper bound
        return max(1, breached.limit.get_expiry())
    return max(1, math.ceil(reset_at - time.time()))


def _limit(rate: str, surface: Surface, key: Callable[[], str]) -> Limit:
    return Limit(
        rate,
        key_function=key,
        scope=surface.value,
        shared=True,  # one budget for all of the surface's routes
        exempt_when=lambda: current_surface() is not surface,
    )


def _storage(settings: Settings) -> tuple[str, dict[str, Any]]:
    """Where counts are kept: our Redis, with timeouts of its own; memory without one."""
    if settings.redis_url is None:
        return "memory://", {}
    # redis_client reads every REDIS_URL we accept (Sentinel too) and connects on first use,
    # so an app whose Redis is down still starts.
    client = redis_client(
        settings.redis_url,
        socket_connect_timeout=STORAGE_TIMEOUT_SECONDS,
        socket_timeout=STORAGE_TIMEOUT_SECONDS,
    )
    return "redis://", {"connection_pool": client.connection_pool}


def init_app(app: Flask, settings: Settings) -> Limiter:
    """Count every request against its surface's budget, before any view runs."""
    storage_uri, storage_options = _storage(settings)
    limiter = Limiter(
        key_func=_by_address,
        default_limits=[
            _limit(settings.rate_limit_sidebar_reads, Surface.SIDEBAR_READS, _by_sidebar_token),
            _limit(settings.rate_limit_sidebar_writes, Surface.SIDEBAR_WRITES, _by_sidebar_token),
            _limit(settings.rate_limit_pages, Surface.PAGES, _by_agent),
            _limit(settings.rate_limit_public, Surface.PUBLIC, _by_address),
            _limit(settings.rate_limit_webhooks, Surface.WEBHOOKS, _by_address),
        ],
        # No burst of twice the rate across a window's edge, in one counter per key.
        strategy="sliding-window-counter",
        storage_uri=storage_uri,
        storage_options=cast(dict[str, str | int], storage_options),
        key_prefix=KEY_PREFIX,
        in_memory_fallback_enabled=True,
        swallow_errors=True,
    )
    limiter.request_filter(lambda: current_surface() is Surface.EXEMPT)
    limiter.init_app(app)
    app.extensions[_KEY] = limiter
    return limiter
