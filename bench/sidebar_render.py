"""Measure the sidebar's server-side render for one customer with many charges.

    .venv/bin/python bench/sidebar_render.py [--runs 30] [--charges 100] [--profile]

Times ``GET /sidebar/tickets/<id>`` (the whole page: Stripe calls, database, template) and
``GET /sidebar/panel`` (the refresh after an action) through Flask's test client, against the
fake Stripe and a scratch SQLite database, and counts the Stripe requests one render makes.
No Redis: rendering never enqueues. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import re
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import stripe
from delay_proxy import DelayProxy
from figures import NO_RATE_LIMITS
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from core import agents, audit, billing_context
from core.db import make_engine, make_session_factory, session_scope, upgrade
from core.db.models import Ticket
from core.domain import Role
from core.settings import Settings
from core.stripe_gateway import STRIPE_TIMEOUT_SECONDS, StripeGateway, make_stripe_client
from helpdesk_app import create_app
from helpdesk_app.demo import servers
from helpdesk_app.demo.seed import CARD_EXPIRY, DAY, DemoCustomer, create_charge, create_customer

KEY = "sk_test_bench"
PASSWORD = "bench password"
AGENT = "ann@example.com"
WHO = DemoCustomer("Robin Ortiz", "robin@example.com", "T-2001", "Ortiz Labs", "4242424242424242")
WARM_UPS = 3
HISTORY_DAYS = 100
DUPLICATE_PAIRS = 3
# Stripe object IDs ("cus_Nf3...", "ch_3Mx...") in a path become "{id}" in the breakdown.
_OBJECT_ID = re.compile(r"^[a-z]{2,5}_[A-Za-z0-9]{8,}$")


# --- counting Stripe requests ---------------------------------------------------------------


class CountingHTTPClient(stripe.RequestsClient):
    """stripe-python's default HTTP client, noting every request it sends (retries included)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: list[tuple[str, float]] = []  # ("GET /v1/charges", seconds)

    def request(  # type: ignore[override]  # RequestsClient's own signature
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        """Send as usual; note the method, the path pattern and how long Stripe took."""
        started = time.perf_counter()
        try:
            return super().request(method, url, headers, post_data)
        finally:
            self.sent.append(
                (f"{method.upper()} {path_pattern(url)}", time.perf_counter() - started)
            )

    def take(self) -> list[tuple[str, float]]:
        """The requests noted since the last call, forgetting them."""
        sent, self.sent = self.sent, []
        return sent


def path_pattern(url: str) -> str:
    """A request's path with object IDs replaced, e.g. ``/v1/customers/{id}``."""
    path = urllib.parse.urlsplit(url).path
    return "/".join("{id}" if _OBJECT_ID.match(part) else part for part in path.split("/"))


def counting_gateway(api_base: str) -> tuple[StripeGateway, CountingHTTPClient]:
    """The gateway the app builds (see make_stripe_client), on a counting HTTP client."""
    http = CountingHTTPClient(timeout=STRIPE_TIMEOUT_SECONDS)
    client = stripe.StripeClient(
        KEY, base_addresses={"api": api_base}, max_network_retries=2, http_client=http
    )
    return StripeGateway(client), http


# --- seeding --------------------------------------------------------------------------------


def _config_post(api_base: str, path: str, **form: Any) -> None:
    """POST to one of the fake Stripe's test-support endpoints."""
    data = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(api_base + path, data=data, timeout=10):
        pass


@dataclass
class Seeded:
    """What the benchmark customer has in Stripe."""

    customer: str
    charges: int = 0
    shapes: list[str] = field(default_factory=list)


def seed_stripe(client: stripe.StripeClient, api_base: str, charges: int) -> Seeded:
    """One customer with a monthly subscription and ``charges`` charges over ~100 days.

    Varied amounts, a few duplicate pairs, one authorization hold, one declined payment on a
    second card and one disputed charge, so every section of the panel has something to show.
    """
    seeded = Seeded(create_customer(client, WHO))
    plan = client.v1.plans.create(
        params={
            "id": "bench-pro",
            "nickname": "Pro monthly",
            "product": {"name": "Pro"},
            "amount": 4900,
            "currency": "usd",
            "interval": "month",
        }
    )
    client.v1.subscriptions.create(
        params={"customer": seeded.customer, "items": [{"plan": plan.id}]}
    )
    seeded.charges += 1  # the subscription's first invoice is paid by a charge
    seeded.shapes.append("1 subscription")

    card: Any = {"number": "4000000000009995", **CARD_EXPIRY}  # declines: insufficient funds
    declining = client.v1.payment_methods.create(params={"type": "card", "card": card})
    client.v1.payment_methods.attach(declining.id, params={"customer": seeded.customer})
    try:
        client.v1.charges.create(
            params={
                "customer": seeded.customer,
                "source": declining.id,
                "amount": 4900,
                "currency": "usd",
                "description": "Pro plan — monthly",
            }
        )
    except stripe.CardError as exc:
        failed = exc.error.charge if exc.error else None
        if failed:
            created = int(time.time() - 2 * DAY)
            _config_post(api_base, f"/_config/charges/{failed}/created", created=created)
    seeded.charges += 1
    seeded.shapes.append("1 failed")

    create_charge(
        client, api_base, seeded.customer, 12000, "Seat top-up (pending)", 1, capture=False
    )
    seeded.charges += 1
    seeded.shapes.append("1 hold")

    rng = random.Random(2026)
    pairs = min(DUPLICATE_PAIRS, max(charges - seeded.charges, 0) // 2)
    plain = max(charges - seeded.charges - 2 * pairs, 0)
    made: list[str] = []
    for n in range(plain):
        days_ago = 3 + n * (HISTORY_DAYS - 3) / max(plain, 1)
        amount = rng.randrange(500, 60000, 100)
        made.append(create_charge(client, api_base, seeded.customer, amount, "Usage", days_ago))
    for n in range(pairs):
        days_ago = 10 + 25 * n  # the same add-on taken twice, an hour apart
        create_charge(client, api_base, seeded.customer, 2900 + n, "Add-on", days_ago + 0.05)
        create_charge(client, api_base, seeded.customer, 2900 + n, "Add-on", days_ago)
    seeded.charges += plain + 2 * pairs
    seeded.shapes.append(f"{pairs} duplicate pairs")
    if made:
        _config_post(
            api_base, "/_config/disputes", charge=made[len(made) // 2], reason="fraudulent"
        )
        seeded.shapes.append("1 disputed")
    return seeded


def seed_database(database_url: str, customer_id: str) -> int:
    """An agent with a password, the customer's ticket and some history; the ticket's ID."""
    upgrade(make_engine(database_url))
    with session_scope(make_session_factory(make_engine(database_url))) as session:
        agents.save_agent(
            session, email=AGENT, name="Ann Agent", role=Role.AGENT, password=PASSWORD
        )
        ticket = Ticket(subject="Charged twice?", requester_email=WHO.email, status="open")
        session.add(ticket)
        session.flush()
        for n in range(5):
            audit.record(
                session,
                actor=AGENT,
                event="ticket.note",
                ticket_id=ticket.id,
                stripe_customer_id=customer_id,
                summary=f"Called the customer ({n + 1})",
            )
        return ticket.id


# --- the app and the measurements -----------------------------------------------------------


def sign_in(app: Flask) -> FlaskClient:
    """A test client signed in to the built-in helpdesk as the agent."""
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    if csrf is None:
        raise SystemExit("no CSRF token on /login")
    client.post("/login", data={"csrf_token": csrf[1], "email": AGENT, "password": PASSWORD})
    return client


def fetch_ok(fetch: Callable[[], TestResponse], what: str) -> TestResponse:
    """Fetch once; stop the benchmark when the app does not answer 200."""
    response = fetch()
    if response.status_code != 200:
        raise SystemExit(f"{what} answered {response.status_code}: {response.get_data()[:300]!r}")
    return response


@dataclass
class Measured:
    """Timings of one endpoint and what one render of it asked Stripe."""

    seconds: list[float]
    stripe_seconds: list[float]
    requests: Counter[str]
    requests_per_render: set[int]
    page_bytes: int


def spread_ms(seconds: list[float]) -> tuple[float, float, float, float]:
    """Median, p95, min and max, in milliseconds."""
    ordered = sorted(seconds)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return (
        statistics.median(ordered) * 1000,
        p95 * 1000,
        ordered[0] * 1000,
        ordered[-1] * 1000,
    )


def measure(
    fetch: Callable[[], TestResponse], http: CountingHTTPClient, runs: int, what: str
) -> Measured:
    """Warm up, then time ``runs`` renders, noting the Stripe requests of each."""
    for _ in range(WARM_UPS):
        fetch_ok(fetch, what)
    http.take()
    seconds, stripe_seconds, counts = [], [], set()
    requests: Counter[str] = Counter()
    page_bytes = 0
    for _ in range(runs):
        started = time.perf_counter()
        response = fetch_ok(fetch, what)
        seconds.append(time.perf_counter() - started)
        sent = http.take()
        stripe_seconds.append(sum(s for _, s in sent))
        counts.add(len(sent))
        requests = Counter(name for name, _ in sent)
        page_bytes = len(response.get_data())
    return Measured(seconds, stripe_seconds, requests, counts, page_bytes)


def profile_one(fetch: Callable[[], TestResponse], lines: int = 25) -> None:
    """cProfile one render and print where its time goes."""
    profiler = cProfile.Profile()
    profiler.enable()
    fetch()
    profiler.disable()
    stats = pstats.Stats(profiler).strip_dirs()
    print("\none full render under cProfile, by own time:")
    stats.sort_stats("tottime").print_stats(lines)


def report(name: str, m: Measured) -> None:
    """One endpoint's line of the table."""
    median, p95, low, high = spread_ms(m.seconds)
    stripe_median = statistics.median(m.stripe_seconds) * 1000
    print(
        f"  {name:<26} {median:7.1f} {p95:7.1f} {low:7.1f} {high:7.1f}"
        f" {stripe_median:9.1f} {m.page_bytes / 1024:8.1f}"
    )


def breakdown(m: Measured) -> None:
    """The Stripe requests one render makes, by method and path."""
    counts = "/".join(str(n) for n in sorted(m.requests_per_render))
    print(f"  {counts} per render:")
    for name, n in sorted(m.requests.items(), key=lambda item: (-item[1], item[0])):
        print(f"    {n:3d}  {name}")


class SerialExecutor:
    """Stands in for ``ThreadPoolExecutor`` in ``core.billing_context``: the same calls, one
    after another, as the sidebar made them before it overlapped them (the reference)."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def __enter__(self) -> SerialExecutor:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        """Run ``fn`` now; a finished future."""
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future, as a pool does
            future.set_exception(exc)
        return future

    def map(self, fn: Callable[..., Any], *iterables: Any) -> list[Any]:
        """``fn`` over the items, in order, now."""
        return [fn(*args) for args in zip(*iterables, strict=True)]


@dataclass(frozen=True)
class Variant:
    """How the gateway reaches Stripe: a simulated round trip, and serial or overlapped."""

    delay: float = 0.0  # seconds each request waits in the delaying proxy
    serial: bool = False


@dataclass
class SidebarRun:
    """What was seeded and each variant's measurements, by endpoint ("page", "panel")."""

    charges: int
    shapes: list[str]
    seeded_seconds: float
    measured: dict[Variant, dict[str, Measured]]


def run(
    runs: int = 30,
    charges: int = 100,
    variants: tuple[Variant, ...] = (Variant(),),
    endpoints: tuple[str, ...] = ("page", "panel"),
    profile: bool = False,
) -> SidebarRun:
    """Seed once, then time each endpoint under each variant; the figures."""
    scratch_dir = tempfile.TemporaryDirectory(prefix="bench-sidebar-")
    scratch = Path(scratch_dir.name)
    stripe_server = servers.start_fake_stripe()
    proxies: dict[float, DelayProxy] = {}
    try:
        began = time.perf_counter()
        seeded = seed_stripe(make_stripe_client(KEY, stripe_server.url), stripe_server.url, charges)
        settings = Settings(
            demo=True,
            database_url=f"sqlite:///{scratch / 'bench.sqlite3'}",
            redis_url=None,  # rendering never enqueues, so no Redis at all
            secret_key="bench-secret-key-0123456789",
            stripe_api_key=KEY,
            stripe_api_base=stripe_server.url,
            **NO_RATE_LIMITS,
        )
        ticket_id = seed_database(settings.database_url, seeded.customer)
        seeded_in = time.perf_counter() - began

        app = create_app(settings)
        gateway, http = counting_gateway(stripe_server.url)
        app.extensions["billing_desk"].gateway = gateway  # overrides the cached_property
        browser = sign_in(app)
        page = fetch_ok(lambda: browser.get(f"/sidebar/tickets/{ticket_id}"), "sidebar page")
        token = re.search(r'name="sidebar-token" content="([^"]+)"', page.get_data(as_text=True))
        if token is None:
            raise SystemExit("no sidebar token in the page")
        sidebar = app.test_client()  # as sidebar.js: no cookie, only the token
        headers = {"Authorization": f"Bearer {token[1]}", "X-Sidebar": "1"}
        fetches: dict[str, Callable[[], TestResponse]] = {
            "page": lambda: browser.get(f"/sidebar/tickets/{ticket_id}"),
            "panel": lambda: sidebar.get("/sidebar/panel", headers=headers),
        }

        measured: dict[Variant, dict[str, Measured]] = {}
        for variant in variants:
            base = stripe_server.url
            if variant.delay:
                if variant.delay not in proxies:
                    proxies[variant.delay] = DelayProxy(stripe_server.url, variant.delay)
                base = proxies[variant.delay].url
            gateway, http = counting_gateway(base)
            app.extensions["billing_desk"].gateway = gateway
            executor = SerialExecutor if variant.serial else ThreadPoolExecutor
            with mock.patch.object(billing_context, "ThreadPoolExecutor", executor):
                measured[variant] = {
                    name: measure(fetches[name], http, runs, name) for name in endpoints
                }
        if profile:
            profile_one(fetches["page"])
        return SidebarRun(seeded.charges, seeded.shapes, seeded_in, measured)
    finally:
        for proxy in proxies.values():
            proxy.stop()
        stripe_server.stop()
        scratch_dir.cleanup()


def main() -> None:
    """Seed, sign in, measure both endpoints and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--charges", type=int, default=100)
    parser.add_argument("--profile", action="store_true", help="cProfile one full render too")
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="simulated Stripe round trip per request"
    )
    parser.add_argument(
        "--serial", action="store_true", help="the Stripe requests one after another"
    )
    args = parser.parse_args()
    variant = Variant(args.delay_ms / 1000, args.serial)
    result = run(args.runs, args.charges, (variant,), profile=args.profile)
    full, panel = result.measured[variant]["page"], result.measured[variant]["panel"]
    print(
        f"sidebar render: {result.charges} charges ({', '.join(result.shapes)}), "
        f"{args.runs} runs after {WARM_UPS} warm-ups (seeded in {result.seeded_seconds:.1f} s); "
        f"Stripe requests {'serial' if args.serial else 'overlapped'}, "
        f"{args.delay_ms:g} ms added per request"
    )
    columns = ("median", "p95", "min", "max", "in Stripe", "page KB")
    widths = (7, 7, 7, 7, 9, 8)
    print(f"  {'ms':<26} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    report("GET /sidebar/tickets/<id>", full)
    report("GET /sidebar/panel", panel)
    print("Stripe requests, page:")
    breakdown(full)
    if panel.requests != full.requests:
        print("Stripe requests, panel:")
        breakdown(panel)
    else:
        print("Stripe requests, panel: the same")


if __name__ == "__main__":
    main()
