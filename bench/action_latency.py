"""How long an agent's click waits while a mail backlog is being triaged, per worker layout.

    .venv/bin/python bench/action_latency.py [--emails 500] [--clicks 10] [--layouts ...]

For each layout it puts ``--emails`` billing emails in a pymap mailbox (bench/worker_models.py's
mix and servers), stores and queues them with the real ``billing-desk poll-mail --once``, starts
the layout's real ``billing-desk worker`` processes, and once triage is under way an agent
adds a note through the sidebar (sign-in, preview, confirm: the web app's own routes, in this
process) every second, ``--clicks`` times. A click's latency is from the confirmation's answer
to its step recorded as succeeded. Layouts (``--layouts``, comma-separated):

- ``shared``: ``billing-desk worker --processes 2``, one pool on both queues (actions first);
- ``split``: ``--queue actions --processes 1`` beside ``--queue mail --processes 1``;
- ``procfile``: as the Procfile runs them, ``--queue actions --processes 1`` beside
  ``--queue mail`` (a mail worker per CPU).

Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from figures import NO_RATE_LIMITS
from redis import Redis
from sqlalchemy import func, select
from worker_models import ROOT, Bench

from core import agents
from core.db import make_engine, make_session_factory, session_scope
from core.db.models import Action, InboundEmail, Ticket
from core.domain import Role
from core.settings import Settings
from helpdesk_app import create_app
from jobs.queues import ALL_QUEUES

LAYOUTS = {
    "shared": [["--processes", "2"]],
    "split": [
        ["--queue", "actions", "--processes", "1"],
        ["--queue", "automation", "--queue", "mail", "--processes", "1"],
    ],
    "procfile": [
        ["--queue", "actions", "--processes", "1"],
        ["--queue", "automation", "--queue", "mail"],
    ],
}
AGENT, PASSWORD = "ann@bench.example", "bench password 1234"
CLICK_TIMEOUT_SECONDS = 300


def signed_in_sidebar(app, ticket_id: int):
    """The sidebar of one ticket, as sidebar.js speaks to it (bearer token), after sign-in."""
    client = app.test_client()
    answer = client.get("/login")
    page = answer.get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf, f"no sign-in form: {answer.status_code} {page[:500]}"
    client.post("/login", data={"csrf_token": csrf.group(1), "email": AGENT, "password": PASSWORD})
    page = client.get(f"/sidebar/tickets/{ticket_id}").get_data(as_text=True)
    token = re.search(r'name="sidebar-token" content="([^"]+)"', page)
    assert token, "no sidebar token"
    headers = {"Authorization": f"Bearer {token.group(1)}", "X-Sidebar": "1"}
    return app.test_client(), headers


def click_note(client, headers, text: str) -> None:
    """Preview and confirm a note, as an agent does."""
    page = client.post(
        "/sidebar/actions/preview", data={"kind": "note", "text": text}, headers=headers
    ).get_data(as_text=True)
    intent = re.search(r'name="intent" value="([^"]+)"', page)
    assert intent, f"no confirmation offered: {page[:300]}"
    answer = client.post("/sidebar/actions", data={"intent": intent.group(1)}, headers=headers)
    assert answer.status_code == 200, answer.status_code


def run_layout(bench: Bench, layout: str, clicks: int, idle_clicks: int = 0) -> dict[str, float]:
    settings: Settings = bench.prepare_run()
    factory = make_session_factory(make_engine(settings.database_url))
    with session_scope(factory) as session:
        agents.save_agent(session, email=AGENT, name="Ann", role=Role.AGENT, password=PASSWORD)
    bench.poll(settings, f"{layout}.poll.log")
    processes = []
    started = time.perf_counter()
    for index, args in enumerate(LAYOUTS[layout]):
        log = open(bench.scratch / f"{layout}-{index}.worker.log", "wb")  # noqa: SIM115
        # Not --burst: a pool for the actions queue alone would stop before the first click.
        command = [sys.executable, "-m", "helpdesk_app", "worker", *args]
        processes.append(
            subprocess.Popen(
                command, env=bench.env(settings), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        )

    def processed() -> int:
        with session_scope(factory) as session:
            query = select(func.count()).where(InboundEmail.status == "processed")
            return session.scalar(query) or 0

    while processed() < 20:  # triage under way: the backlog is what the clicks wait behind
        time.sleep(0.2)
    with session_scope(factory) as session:
        ticket_id = session.scalars(select(Ticket.id).order_by(Ticket.id)).first()
    app = create_app(
        dataclasses.replace(settings, secret_key=secrets.token_hex(32), **NO_RATE_LIMITS)
    )
    client, headers = signed_in_sidebar(app, ticket_id)

    def click_times(count: int, tag: str) -> tuple[list[float], list[int]]:
        latencies, left_behind = [], []
        for n in range(count):
            click_note(client, headers, f"Called the customer ({tag} {n})")
            clicked = time.perf_counter()
            left_behind.append(bench.emails - processed())
            while True:
                with session_scope(factory) as session:
                    status = session.scalars(
                        select(Action.status)
                        .where(Action.kind == "note")
                        .order_by(Action.id.desc())
                    ).first()
                if status == "succeeded":
                    latencies.append(time.perf_counter() - clicked)
                    break
                if time.perf_counter() - clicked > CLICK_TIMEOUT_SECONDS:
                    raise SystemExit(
                        f"{layout}: a click did not run within {CLICK_TIMEOUT_SECONDS}s"
                    )
                time.sleep(0.01)
            time.sleep(max(0.0, 1.0 - (time.perf_counter() - clicked)))
        return latencies, left_behind

    latencies, left_behind = click_times(clicks, "backlog")
    deadline = time.perf_counter() + 1800
    while processed() < bench.emails:
        if time.perf_counter() > deadline:
            raise SystemExit(f"{layout}: only {processed()} of {bench.emails} emails processed")
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    idle: list[float] = []
    if idle_clicks:
        # The reference: the same click once the backlog and its plans' steps are done.
        rt_redis = Redis.from_url(settings.redis_url or "")
        while any(rt_redis.llen(f"rq:queue:{name}") for name in ALL_QUEUES):
            if time.perf_counter() > deadline:
                break
            time.sleep(0.2)
        idle, _ = click_times(idle_clicks, "idle")
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout=120)
    return {
        "median": statistics.median(latencies),
        "p90": sorted(latencies)[max(0, round(0.9 * len(latencies)) - 1)],
        "max": max(latencies),
        "backlog": statistics.median(left_behind),
        "tickets_per_second": bench.emails / seconds,
        "idle_median": statistics.median(idle) if idle else float("nan"),
        "idle_max": max(idle) if idle else float("nan"),
    }


def measure(
    emails: int = 500,
    clicks: int = 10,
    layouts: tuple[str, ...] = ("procfile",),
    idle_clicks: int = 5,
) -> dict[str, dict[str, float]]:
    """Each layout's figures (seconds, tickets/s), with ``idle_clicks`` clicks after the
    backlog as the reference."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    bench = Bench(scratch, emails)
    try:
        return {layout: run_layout(bench, layout, clicks, idle_clicks) for layout in layouts}
    finally:
        bench.stop()


def main() -> None:
    """Run each layout once and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--emails", type=int, default=500)
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--idle-clicks", type=int, default=0, help="clicks after the backlog")
    parser.add_argument("--layouts", default="shared,split,procfile")
    args = parser.parse_args()
    layouts = tuple(name.strip() for name in args.layouts.split(",") if name.strip())
    print(
        f"{datetime.date.today()}, {os.cpu_count()} CPUs, {args.emails} emails, "
        f"{args.clicks} clicks per layout"
    )
    for layout, figures in measure(args.emails, args.clicks, layouts, args.idle_clicks).items():
        print(
            f"{layout:<8} click to step done: median {figures['median'] * 1000:.0f} ms, "
            f"p90 {figures['p90'] * 1000:.0f} ms, max {figures['max'] * 1000:.0f} ms "
            f"(median {figures['backlog']:.0f} emails still queued at a click); "
            f"backlog {figures['tickets_per_second']:.1f} tickets/s; after it: median "
            f"{figures['idle_median'] * 1000:.0f} ms, max {figures['idle_max'] * 1000:.0f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
