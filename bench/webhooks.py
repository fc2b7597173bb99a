"""Stripe webhooks and reconcile: how fast events are acknowledged and how fast the mirror fills.

    .venv/bin/python bench/webhooks.py [--events 2000] [--senders 4] [--objects 300]

One web process (the app served by werkzeug's threaded server in this process, on SQLite and an
embedded Redis, or REDIS_URL / DATABASE_URL when set: a PostgreSQL URL gets a scratch database
of its own, dropped after) receives ``--events`` signed deliveries (10 % of them duplicates)
from ``--senders`` threads over HTTP: sustained events per second and the acknowledgement's
p50 / p99, beside a minimal endpoint that only verifies the signature. A worker then drains
the events queue (events handled per second). Last, reconcile walks a fake Stripe holding
``--objects`` customers, each with a charge: objects per second, beside listing them alone.

Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
import stripe
from flask import Flask, request
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from figures import NO_RATE_LIMITS  # noqa: E402
from stripe_webhooks import SECRET, customer, event, sign  # noqa: E402

from core import mirror  # noqa: E402
from core.db import make_engine, upgrade  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.stripe_gateway import make_stripe_client  # noqa: E402
from helpdesk_app import create_app  # noqa: E402
from helpdesk_app.demo import servers  # noqa: E402
from jobs import runtime  # noqa: E402
from jobs.reconcile import reconcile  # noqa: E402
from jobs.worker import drain_queues  # noqa: E402

KEY = "sk_test_bench_webhooks"


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


@dataclass(frozen=True)
class AckFigures:
    """One endpoint's acknowledgements."""

    deliveries: int
    unique: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    refused: int
    statuses: dict[int, int]  # answers by HTTP status

    @property
    def per_second(self) -> float:
        """Sustained acknowledgements per second."""
        return self.deliveries / self.seconds


@dataclass(frozen=True)
class WebhookFigures:
    """Ours and the reference endpoint's acknowledgements, handling and reconcile."""

    ours: AckFigures
    reference: AckFigures
    handled_per_second: float
    reconcile_objects: int
    reconcile_per_second: float
    listing_per_second: float  # the same objects listed from Stripe, stored nowhere
    reconcile_lines: str


def reference_app(secret: str) -> Flask:
    """The least a Stripe webhook endpoint can do: verify the signature with stripe-python
    (``Webhook.construct_event``, as Stripe's docs show it) and answer 200."""
    app = Flask("reference-webhook")

    @app.post("/webhooks/stripe")
    def receive() -> tuple[str, int]:
        try:
            stripe.Webhook.construct_event(
                request.get_data(), request.headers.get("Stripe-Signature", ""), secret
            )
        except (ValueError, stripe.SignatureVerificationError):
            return "", 400
        return "", 200

    return app


def deliveries(count: int) -> tuple[list[dict], int]:
    """``count`` signed-to-be events, 10 % of them repeats, shuffled; and how many unique."""
    unique = [
        event(
            "customer.updated", customer(f"cus_bench{i % 200}", f"v{i}"), created=1_700_000_000 + i
        )
        for i in range(int(count * 0.9))
    ]
    sent = unique + random.Random(1).sample(unique, count - len(unique))
    random.Random(2).shuffle(sent)
    return sent, len(unique)


def deliver(app: Flask, count: int, senders: int) -> AckFigures:
    """Serve ``app`` with werkzeug's threaded server and send it ``count`` signed events from
    ``senders`` threads over HTTP."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request, either app
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/webhooks/stripe"
    events, unique = deliveries(count)
    local = threading.local()

    def send(evt: dict) -> tuple[float, int]:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        body = json.dumps(evt).encode()
        began = time.perf_counter()
        answer = session.post(url, data=body, headers={"Stripe-Signature": sign(body)}, timeout=30)
        return time.perf_counter() - began, answer.status_code

    began = time.perf_counter()
    with ThreadPoolExecutor(senders) as pool:
        results = list(pool.map(send, events))
    elapsed = time.perf_counter() - began
    server.shutdown()
    server.server_close()
    latencies = [r[0] * 1000 for r in results]
    return AckFigures(
        count,
        unique,
        elapsed,
        statistics.median(latencies),
        _percentile(latencies, 0.99),
        max(latencies),
        sum(1 for r in results if r[1] != 200),
        dict(Counter(r[1] for r in results)),
    )


def measure(events: int = 2000, senders: int = 4, objects: int = 300) -> WebhookFigures:
    """Our endpoint and the reference, the events' handling, and reconcile; the figures."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    stripe_server = servers.start_fake_stripe(log_path=scratch / "fake-stripe.log")
    redis_url = os.environ.get("REDIS_URL")
    embedded = None
    if not redis_url:
        embedded = servers.start_embedded_redis(scratch / "redis")
        redis_url = f"redis://127.0.0.1:{embedded.port}/0"
    admin_url = os.environ.get("DATABASE_URL")
    scratch_database = None
    if admin_url and "postgres" in admin_url:
        # A database of its own, dropped after: the shared one may be in use by tests.
        scratch_database = f"bench_webhooks_{uuid.uuid4().hex[:10]}"
        with _admin(admin_url) as connection:
            connection.execute(text(f'CREATE DATABASE "{scratch_database}"'))
        url = make_url(admin_url).set(database=scratch_database)
        database_url = url.render_as_string(hide_password=False)
    else:
        database_url = admin_url or f"sqlite:///{scratch / 'bench.sqlite3'}"
    try:
        upgrade(make_engine(database_url))
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            stripe_api_key=KEY,
            stripe_api_base=stripe_server.url,
            secret_key="bench-secret-key-0123456789",
            stripe_webhook_secret=SECRET,
            **NO_RATE_LIMITS,
        )
        rt = runtime.build_runtime(settings)
        rt.redis.flushdb()
        reference = deliver(reference_app(SECRET), events, senders)
        ours = deliver(create_app(settings), events, senders)
        began = time.perf_counter()
        drain_queues(rt, logging_level="WARNING")
        handled = ours.unique / (time.perf_counter() - began)
        count, rate, listing, lines = reconcile_rate(rt, stripe_server, objects)
        return WebhookFigures(ours, reference, handled, count, rate, listing, lines)
    finally:
        stripe_server.stop()
        if embedded is not None:
            embedded.stop()
        if admin_url and scratch_database:
            with _admin(admin_url) as connection:
                connection.execute(
                    text(f'DROP DATABASE IF EXISTS "{scratch_database}" WITH (FORCE)')
                )


@contextlib.contextmanager
def _admin(admin_url: str) -> Iterator[Connection]:
    engine = make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def reconcile_rate(rt, stripe_server, objects: int) -> tuple[int, float, float, str]:
    """Fill the fake Stripe with customers and charges, list them once without storing
    anything (the reference), then reconcile an empty mirror: objects, both rates, summary."""
    request = urllib.request.Request(f"{stripe_server.url}/_config/data", method="DELETE")
    with urllib.request.urlopen(request, timeout=30):
        pass
    client = make_stripe_client(KEY, stripe_server.url)
    for n in range(objects):
        cus = client.v1.customers.create(params={"email": f"c{n}@bench.example"})
        card = client.v1.payment_methods.create(
            params={
                "type": "card",
                "card": {
                    "number": "4242424242424242",
                    "exp_month": 12,
                    "exp_year": 2030,
                    "cvc": "123",
                },
            }
        )
        client.v1.payment_methods.attach(card.id, params={"customer": cus.id})
        client.v1.charges.create(
            params={"amount": 1000, "currency": "usd", "customer": cus.id, "source": card.id}
        )
    runtime.install(rt)
    began = time.perf_counter()
    listed = sum(1 for kind in mirror.KINDS for _ in rt.gateway.iter_objects(kind))
    listing = listed / (time.perf_counter() - began)
    summary = reconcile(rt)
    return (
        summary.objects,
        summary.objects / summary.seconds,
        listing,
        "; ".join(summary.lines()),
    )


def main() -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--objects", type=int, default=300)
    args = parser.parse_args()
    figures = measure(args.events, args.senders, args.objects)
    for name, ack in (("ours", figures.ours), ("reference", figures.reference)):
        print(
            f"webhook acknowledgement, {name}: {ack.deliveries} deliveries ({ack.unique} unique) "
            f"from {args.senders} senders in {ack.seconds:.1f} s = {ack.per_second:.0f} events/s;"
            f" ack p50 {ack.p50_ms:.1f} ms, p99 {ack.p99_ms:.1f} ms, max {ack.max_ms:.1f} ms; "
            f"non-200: {ack.refused} (answers by status: {ack.statuses})"
        )
    handled = figures.handled_per_second
    print(f"handling: {figures.ours.unique} events by one worker: {handled:.0f}/s")
    print(
        f"reconcile: {figures.reconcile_objects} objects = {figures.reconcile_per_second:.0f} "
        f"objects/s (listing alone {figures.listing_per_second:.0f}/s; {figures.reconcile_lines})"
    )


if __name__ == "__main__":
    main()
