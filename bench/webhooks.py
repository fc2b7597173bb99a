"""Stripe webhooks and reconcile: how fast events are acknowledged and how fast the mirror fills.

    .venv/bin/python bench/webhooks.py [--events 2000] [--senders 4] [--objects 300]

One web process (the app served by werkzeug's threaded server in this process, on SQLite and an
embedded Redis, or REDIS_URL / DATABASE_URL when set) receives ``--events`` signed deliveries
(10 % of them duplicates) from ``--senders`` threads over HTTP: sustained events per second and
the acknowledgement's p50 / p99. A worker then drains the events queue (events handled per
second). Last, reconcile walks a fake Stripe holding ``--objects`` customers, each with a
charge: objects per second.

Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from werkzeug.serving import make_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from stripe_webhooks import SECRET, customer, event, sign  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--objects", type=int, default=300)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    stripe_server = servers.start_fake_stripe(log_path=scratch / "fake-stripe.log")
    redis_url = os.environ.get("REDIS_URL")
    embedded = None
    if not redis_url:
        embedded = servers.start_embedded_redis(scratch / "redis")
        redis_url = f"redis://127.0.0.1:{embedded.port}/0"
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{scratch / 'bench.sqlite3'}"
    try:
        upgrade(make_engine(database_url))
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            stripe_api_key=KEY,
            stripe_api_base=stripe_server.url,
            secret_key="bench-secret-key-0123456789",
            stripe_webhook_secret=SECRET,
        )
        rt = runtime.build_runtime(settings)
        rt.redis.flushdb()
        acknowledgement(settings, rt, args.events, args.senders)
        reconcile_rate(rt, stripe_server, args.objects)
    finally:
        stripe_server.stop()
        if embedded is not None:
            embedded.stop()


def acknowledgement(settings, rt, count: int, senders: int) -> None:
    """Deliver ``count`` signed events over HTTP to one web process; then drain them."""
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/webhooks/stripe"
    unique = [
        event(
            "customer.updated", customer(f"cus_bench{i % 200}", f"v{i}"), created=1_700_000_000 + i
        )
        for i in range(int(count * 0.9))
    ]
    deliveries = unique + random.Random(1).sample(unique, count - len(unique))
    random.Random(2).shuffle(deliveries)
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
        results = list(pool.map(send, deliveries))
    elapsed = time.perf_counter() - began
    server.shutdown()
    latencies = [r[0] * 1000 for r in results]
    refused = sum(1 for r in results if r[1] != 200)
    print(
        f"webhook acknowledgement: {count} deliveries ({len(unique)} unique) from {senders} "
        f"senders in {elapsed:.1f} s = {count / elapsed:.0f} events/s; ack p50 "
        f"{statistics.median(latencies):.1f} ms, p99 {_percentile(latencies, 0.99):.1f} ms, "
        f"max {max(latencies):.1f} ms; non-200: {refused}"
    )
    began = time.perf_counter()
    drain_queues(rt, logging_level="WARNING")
    elapsed = time.perf_counter() - began
    rate = len(unique) / elapsed
    print(f"handling: {len(unique)} events by one worker in {elapsed:.1f} s = {rate:.0f}/s")


def reconcile_rate(rt, stripe_server, objects: int) -> None:
    """Fill the fake Stripe with customers and charges, then reconcile an empty mirror."""
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
    summary = reconcile(rt)
    print(
        f"reconcile: {summary.objects} objects in {summary.seconds:.1f} s = "
        f"{summary.objects / summary.seconds:.0f} objects/s ({'; '.join(summary.lines())})"
    )


if __name__ == "__main__":
    main()
