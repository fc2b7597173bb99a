"""Watching it run: JSON logs without secrets, request IDs, probes, Prometheus metrics, and RQ's
dashboard for admins only.

Every server is real: the web app over its WSGI interface, Redis, the fake Stripe over HTTP,
the mailbox over IMAP, and `billing-desk worker` as a child process where a test needs the
production process (its log lines, its forked workers' metrics).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from customer_mail import customer_email
from itsdangerous import URLSafeTimedSerializer
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq import Queue, Retry
from rq.job import JobStatus
from sidebar_client import PASSWORD
from sqlalchemy import select
from stripe_webhooks import SECRET, charge, deliver, event

from core import agents
from core.db import session_scope
from core.db.models import Escalation, InboundEmail, Ticket, utcnow
from core.domain import Role
from core.settings import Settings
from helpdesk_app import create_app, logs
from helpdesk_app.demo.seed import DemoCustomer, create_charge, create_customer
from helpdesk_app.demo.servers import free_port, wait_for_port
from jobs import queues
from jobs.inbound import process_inbound_email
from jobs.worker import drain_queues

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60

CARD = "4242 4242 4242 4242"
SIGNED = URLSafeTimedSerializer("not-our-key", salt="x").dumps({"g": 1, "t": 2})
SECRETS = {
    "card number": CARD,
    "card number, no spaces": "4000056655665556",
    "Stripe secret key": "sk_live_51HxAbCdEfGhIjKlMnOp",
    "Stripe restricted key": "rk_test_51HxAbCdEfGhIjKlMnOp",
    "webhook secret": "whsec_AbCdEfGhIjKlMnOpQrSt",
    "bearer token": "Bearer eyJhbGciOi.J9payload-x.sig_nature_123",
    "signed token": SIGNED,
    "URL query": "https://desk.example.com/sidebar?signature=c2VjcmV0c2lnbmF0dXJl&ticket=7",
    "link token": "/billing/update-card/AbCdEf_0123456789secret",
    "link token, encoded": "https://desk.example.com//billing/update%2Dcard/AbCdEf_0123456789secret",
}
# What must not survive of each, when it differs from the whole value.
LEAKS = {
    "card number": ["4242 4242 4242 4242", "4242424242424242"],
    "bearer token": ["eyJhbGciOi.J9payload-x.sig_nature_123"],
    "URL query": ["c2VjcmV0c2lnbmF0dXJl", "ticket=7"],
    "link token": ["AbCdEf_0123456789secret"],
    "link token, encoded": ["AbCdEf_0123456789secret"],
}


def json_lines(text: str) -> list[dict]:
    """Every line of a log, parsed; a line that is not a JSON object fails the test."""
    lines = []
    for line in text.splitlines():
        if line.strip():
            parsed = json.loads(line)
            assert isinstance(parsed, dict), line
            lines.append(parsed)
    return lines


@pytest.fixture
def json_log():
    """A JSON handler on the root logger, as `billing-desk` installs it; its output."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.json_formatter())
    logs.add_filters(handler)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous)


# --- logs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_a_secret_in_a_message_its_arguments_or_a_traceback_never_reaches_the_log(json_log, kind):
    secret = SECRETS[kind]
    log = logging.getLogger("billing_desk.test")
    log.info(f"in the message: {secret} (end)")
    log.warning("in the arguments: %s and %r", secret, {"value": secret})
    try:
        raise ValueError(f"in an exception: {secret}")
    except ValueError:
        log.exception("it failed")

    lines = json_lines(json_log.getvalue())
    assert len(lines) == 3
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line)
        assert line["logger"] == "billing_desk.test"
        for leak in LEAKS.get(kind, [secret]):
            assert leak not in json.dumps(line), line
    assert lines[0]["message"].startswith("in the message: ")
    assert lines[0]["message"].endswith(" (end)")
    assert lines[1]["level"] == "WARNING"
    assert "ValueError" in lines[2]["exception"]


def test_a_card_number_becomes_its_last_four_and_ordinary_numbers_stay(json_log):
    logging.getLogger("t").info("card %s, ticket 1234, amount 4900, order 2026-12-02", CARD)
    (line,) = json_lines(json_log.getvalue())
    assert line["message"] == "card [card ending 4242], ticket 1234, amount 4900, order 2026-12-02"


@pytest.mark.parametrize(
    "message",
    [
        "sidebar token expired",
        "the sign-in's token: none",
        "helpdesk_app.observability.serve_metrics started",
        "Successfully completed jobs.plans.run_step(3) job in 0:00:00.018239s",
        "GET /healthz 200 https://desk.example.com/healthz",
        "Listening at: http://127.0.0.1:8000 (4242)",
        "STRIPE_WEBHOOK_SECRET: must be whsec_... signing secrets",
        "refund re_3PqA1b2C3d4E5f6G for ch_3PqA1b2C3d4E5f6G, customer cus_NffrFeUfNV2Hib",
    ],
)
def test_ordinary_lines_are_left_as_they_are(json_log, message):
    logging.getLogger("t").info(message)
    (line,) = json_lines(json_log.getvalue())
    assert line["message"] == message


def test_ids_bound_in_the_log_context_are_fields_of_each_line(json_log):
    from core import log_context

    log = logging.getLogger("t")
    with log_context.bound(ticket_id=7, action_id=9):
        log.info("inside")
        with log_context.bound(email_id=3):
            log.info("deeper")
    log.info("outside")
    inside, deeper, outside = json_lines(json_log.getvalue())
    assert (inside["ticket_id"], inside["action_id"]) == (7, 9)
    assert "email_id" not in inside
    assert (deeper["ticket_id"], deeper["email_id"]) == (7, 3)
    assert not {"ticket_id", "action_id", "email_id"} & set(outside)


def test_the_request_id_round_trips_and_is_on_the_requests_log_lines(app, json_log):
    def logs_one_line():
        logging.getLogger("billing_desk.view").info("in the view")
        return "ok"

    app.add_url_rule("/test-logs-a-line", view_func=logs_one_line)
    client = app.test_client()

    sent = client.get("/test-logs-a-line", headers={"X-Request-ID": "req-7f3a.2_b:1"})
    assert sent.headers["X-Request-ID"] == "req-7f3a.2_b:1"
    made = client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])
    for forged in ("two words", "x" * 200, "<script>", "a\tb"):
        answered = client.get("/healthz", headers={"X-Request-ID": forged})
        assert re.fullmatch(r"[0-9a-f]{32}", answered.headers["X-Request-ID"]), forged

    line = next(
        line for line in json_lines(json_log.getvalue()) if line["message"] == "in the view"
    )
    assert line["request_id"] == "req-7f3a.2_b:1"


ALICE = DemoCustomer("Alice Martin", "alice@example.com", "T-1042", "Northwind", "4242424242424242")
DOUBLE_CHARGE = customer_email(
    "Charged twice",
    "Hello,\n\nI was charged twice today for my subscription, $49.00 two times. "
    "Please fix this. My card is 4242 4242 4242 4242.\n\nAlice\n",
)


@pytest.fixture
def twin_charges(stripe_client, rt) -> tuple[str, str, str]:
    """Alice, charged $49.00 twice today."""
    customer = create_customer(stripe_client, ALICE)
    api_base = rt.settings.stripe_api_base
    older = create_charge(stripe_client, api_base, customer, 4900, "Pro", days_ago=0.1)
    newer = create_charge(stripe_client, api_base, customer, 4900, "Pro")
    return customer, older, newer


def run_cli(settings: Settings, *args: str, timeout: float = TIMEOUT) -> str:
    """`billing-desk ARGS` as its own process with the test settings; what it wrote."""
    env = {**os.environ, **settings.to_env(), "LOG_FORMAT": "json"}
    done = subprocess.run(
        [sys.executable, "-m", "helpdesk_app", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=timeout,
    )
    output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode == 0, output
    return output


def test_a_job_run_by_the_real_worker_logs_json_with_its_job_and_ticket(
    settings, rt, mailbox_client, poll_mail, twin_charges
):
    mailbox_client.append("INBOX", DOUBLE_CHARGE)
    assert poll_mail().stored == 1
    with session_scope(rt.session_factory) as session:
        email_id = session.scalars(select(InboundEmail.id)).one()
    process_inbound_email(email_id)  # triage here; the refund step waits on automation
    with session_scope(rt.session_factory) as session:
        ticket_id = session.scalars(select(Ticket.id)).one()

    output = run_cli(
        settings, "worker", "--burst", "--processes", "1", "--queue", queues.AUTOMATION
    )

    lines = json_lines(output)
    assert lines, output
    in_jobs = [line for line in lines if "job_id" in line]
    assert any(
        line["ticket_id"] == ticket_id and line.get("action_id") and line["job_id"]
        for line in in_jobs
        if "ticket_id" in line
    ), output
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert "4242 4242 4242 4242" not in output and "4242424242424242" not in output


# --- probes ---------------------------------------------------------------------------------


def closed_url(scheme: str) -> str:
    return f"{scheme}://127.0.0.1:{free_port()}"


def probe(settings: Settings):
    built = create_app(settings)
    built.config["TESTING"] = True
    response = built.test_client().get("/readyz")
    return response.status_code, response.get_json()


def test_healthz_answers_without_looking_at_anything(settings):
    broken = dataclasses.replace(
        settings, redis_url=closed_url("redis"), stripe_api_base=closed_url("http")
    )
    response = create_app(broken).test_client().get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_readyz_is_200_when_the_database_redis_and_stripe_answer(settings, rt):
    status, body = probe(settings)
    assert status == 200, body
    assert body == {
        "status": "ok",
        "checks": {"database": "ok", "redis": "ok", "stripe": "ok"},
    }


@pytest.mark.parametrize(
    ("failing", "change"),
    [
        ("redis", lambda s: {"redis_url": closed_url("redis") + "/0"}),
        ("stripe", lambda s: {"stripe_api_base": closed_url("http")}),
        (
            "database",
            lambda s: {
                "database_url": (
                    f"postgresql://postgres@127.0.0.1:{free_port()}/none"
                    if s.database_url.startswith("postgres")
                    else "sqlite:////nonexistent-directory/for/readyz.sqlite3"
                )
            },
        ),
    ],
)
def test_readyz_is_503_naming_the_check_that_failed_and_nothing_more(settings, rt, failing, change):
    broken = dataclasses.replace(settings, **change(settings))
    status, body = probe(broken)
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["failed"] == [failing]
    outcome = body["checks"][failing]
    assert re.fullmatch(r"failed: [A-Za-z]+", outcome), outcome  # a class name, no text
    assert "127.0.0.1" not in json.dumps(body)
    assert {name for name, value in body["checks"].items() if value == "ok"} == (
        {"database", "redis", "stripe"} - {failing}
    )


@pytest.fixture
def black_hole():
    """A loopback port that takes connections and never answers a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)  # connections wait in the backlog, never accepted, never answered
    yield server.getsockname()[1]
    server.close()


@pytest.mark.parametrize(
    ("failing", "change"),
    [
        ("redis", lambda port: {"redis_url": f"redis://127.0.0.1:{port}/0"}),
        ("stripe", lambda port: {"stripe_api_base": f"http://127.0.0.1:{port}"}),
    ],
)
def test_readyz_gives_up_on_a_server_that_never_answers(settings, rt, black_hole, failing, change):
    status, body = probe(dataclasses.replace(settings, **change(black_hole)))
    assert status == 503
    assert body["failed"] == [failing]


def test_readyz_asks_stripe_once_however_often_it_is_probed(settings, rt):
    built = create_app(settings)
    client = built.test_client()
    before = metric(scrape(client), "billing_desk_stripe_request_duration_seconds_count")
    for _ in range(5):
        assert client.get("/readyz").status_code == 200
    after = metric(scrape(client), "billing_desk_stripe_request_duration_seconds_count")
    assert after - before == 1


# --- metrics --------------------------------------------------------------------------------


def scrape(client, **headers) -> str:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_data(as_text=True)


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` with these labels (0 when there are none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_an_email_through_the_pipeline_shows_in_the_metrics(
    app, rt, mailbox_client, poll_mail, run_worker, twin_charges
):
    client = app.test_client()
    before = scrape(client)
    mailbox_client.append("INBOX", DOUBLE_CHARGE)
    assert poll_mail().stored == 1
    run_worker()
    after = scrape(client)

    assert metric(after, "billing_desk_emails_ingested_total") == 1
    assert metric(after, "billing_desk_tickets_classified_total", category="duplicate_charge") == 1
    assert metric(after, "billing_desk_refunds_total", currency="usd") == 1
    assert metric(after, "billing_desk_refunded_minor_units_total", currency="usd") == 4900
    assert (
        metric(after, "billing_desk_automatic_resolutions_total", category="duplicate_charge") == 1
    )
    stripe_calls = "billing_desk_stripe_request_duration_seconds_count"
    assert metric(after, stripe_calls, status_class="2xx") > metric(
        before, stripe_calls, status_class="2xx"
    )
    refunds = {"method": "POST", "endpoint": "/v1/refunds", "status_class": "2xx"}
    assert metric(after, stripe_calls, **refunds) - metric(before, stripe_calls, **refunds) == 1
    finished = {
        "queue": queues.MAIL,
        "job": "jobs.inbound.process_inbound_email",
        "outcome": "finished",
    }
    runs = "billing_desk_job_runs_total"
    assert metric(after, runs, **finished) - metric(before, runs, **finished) == 1


def always_fails() -> None:
    """A job that fails every time."""
    raise RuntimeError("this job always fails")


def test_a_failing_job_counts_as_retried_then_failed_and_sits_in_the_failed_registry(app, rt):
    client = app.test_client()
    before = scrape(client)
    rt.queue(queues.EVENTS).enqueue(always_fails, retry=Retry(max=1))
    drain_queues(rt)
    after = scrape(client)

    job = {"queue": queues.EVENTS, "job": "test_observability.always_fails"}
    for name in ("billing_desk_job_retries_total", "billing_desk_job_failures_total"):
        assert metric(after, name, **job) - metric(before, name, **job) == 1, name
    assert metric(after, "billing_desk_jobs_failed", **job) == 1


def test_escalations_and_sla_breaches_are_counted_by_team(app, session_factory, new_ticket):
    ticket = new_ticket("bob@example.com")
    with session_scope(session_factory) as session:
        for target, breached in (("finance", True), ("finance", False), ("security", False)):
            session.add(
                Escalation(
                    ticket_id=ticket,
                    target=target,
                    reason="test",
                    requested_by="mail-agent",
                    due_at=utcnow(),
                    breached_at=utcnow() if breached else None,
                )
            )
    text = scrape(app.test_client())
    assert metric(text, "billing_desk_escalations_total", team="finance") == 2
    assert metric(text, "billing_desk_escalations_total", team="security") == 1
    assert metric(text, "billing_desk_sla_breaches_total", team="finance") == 1
    assert metric(text, "billing_desk_sla_breaches_total", team="security") == 0
    assert metric(text, "billing_desk_escalations_open", team="finance") == 2


def test_a_stripe_webhook_observes_its_lag(settings, db_engine, rt):
    app = create_app(dataclasses.replace(settings, stripe_webhook_secret=SECRET))
    client = app.test_client()
    before = scrape(client)
    late = event(
        "charge.succeeded",
        charge("ch_lag_1", "cus_lag_1", "succeeded"),
        created=int(time.time()) - 120,
    )
    assert deliver(client, late).status_code == 200
    drain_queues(rt)
    after = scrape(client)

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    lag = "billing_desk_stripe_webhook_lag_seconds"
    assert grew(f"{lag}_count", type="charge.succeeded") == 1
    # Two minutes late: above the one-minute bucket, within the five-minute one.
    assert grew(f"{lag}_bucket", type="charge.succeeded", le="60.0") == 0
    assert grew(f"{lag}_bucket", type="charge.succeeded", le="300.0") == 1


TOKEN = "metrics-token-0123456789abcdef"


@pytest.mark.parametrize(
    ("remote", "headers", "token", "allowed"),
    [
        ("127.0.0.1", {}, None, True),
        ("::1", {}, None, True),
        ("203.0.113.9", {}, None, False),
        ("203.0.113.9", {"Authorization": f"Bearer {TOKEN}"}, TOKEN, True),
        ("203.0.113.9", {"Authorization": f"Bearer {TOKEN}x"}, TOKEN, False),
        ("203.0.113.9", {"Authorization": f"Bearer {TOKEN}"}, None, False),
        ("203.0.113.9", {"Authorization": TOKEN}, TOKEN, False),
        # A reverse proxy on this machine relays the world from loopback: not local.
        ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"}, None, False),
        ("127.0.0.1", {"Forwarded": "for=203.0.113.9"}, TOKEN, False),
        ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9", "Authorization": f"Bearer {TOKEN}"},
         TOKEN, True),
    ],
)  # fmt: skip
def test_metrics_are_for_this_machine_or_the_token_holder(
    settings, db_engine, rt, remote, headers, token, allowed
):
    app = create_app(dataclasses.replace(settings, metrics_token=token))
    response = app.test_client().get(
        "/metrics", headers=headers, environ_base={"REMOTE_ADDR": remote}
    )
    assert response.status_code == (200 if allowed else 403)
    assert ("billing_desk_refunds" in response.get_data(as_text=True)) is allowed


class WorkerWithMetrics:
    """`billing-desk worker --metrics-port P` on the actions queue, as a child process."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.port = free_port()
        path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
        env = {**os.environ, **settings.to_env(), "PYTHONPATH": path, "LOG_FORMAT": "json"}
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "helpdesk_app", "worker", "--processes", "2",
                 "--queue", queues.ACTIONS, "--metrics-port", str(self.port)],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def get(self, **headers: str) -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/metrics", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as refused:
            return refused.code, ""

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                self.get()
                return
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"no /metrics: {self.log_path.read_text()}")
                time.sleep(0.1)

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(TIMEOUT)


def test_the_worker_serves_the_metrics_of_its_forked_workers(settings, rt, tmp_path):
    worker = WorkerWithMetrics(settings, tmp_path / "worker.log")
    try:
        worker.wait_until_serving()
        queue = Queue(queues.ACTIONS, connection=Redis.from_url(settings.redis_url or ""))
        jobs = [
            queue.enqueue("jobs_for_worker_tests.record", str(tmp_path), f"job{n}")
            for n in range(4)
        ]
        deadline = time.monotonic() + TIMEOUT
        while any(job.get_status(refresh=True) != JobStatus.FINISHED for job in jobs):
            assert time.monotonic() < deadline, worker.log_path.read_text()
            time.sleep(0.1)
        # Ours: run by this supervisor's forked workers (a test Redis shared with another
        # run's workers may lend them one); it serves what its children counted.
        prefix = f"{socket.gethostname()}.{worker.process.pid}."
        for job in jobs:
            job.refresh()
        ours = [job for job in jobs if (job.worker_name or "").startswith(prefix)]
        assert ours, f"no job ran on this worker: {[job.worker_name for job in jobs]}"
        finished = {"job": "jobs_for_worker_tests.record", "outcome": "finished"}
        _status, text = worker.get()
        assert metric(text, "billing_desk_job_runs_total", **finished) == len(ours)
        assert "billing_desk_emails_ingested_total" in text  # the business totals too
        assert worker.get(**{"X-Forwarded-For": "203.0.113.9"})[0] == 403
    finally:
        assert worker.stop() == 0, worker.log_path.read_text()
    lines = json_lines(worker.log_path.read_text())
    assert any(line.get("job_id") for line in lines)


def test_a_multiprocess_scratch_directory_is_the_instances_own_and_goes_at_exit(tmp_path):
    script = (
        "from core.metrics import use_multiprocess_directory as u\n"
        "a = u(); print(a)\n"
        "import os\n"
        "if os.fork() == 0:\n"
        "    os._exit(0)\n"  # a forked child's exit leaves the directory alone
        "os.wait(); print(a.exists())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    directory, existed = done.stdout.split()
    assert existed == "True"
    assert Path(directory).name.startswith("billing-desk-metrics-")
    assert not Path(directory).exists()


# --- RQ's dashboard -------------------------------------------------------------------------


@pytest.fixture
def admins(session_factory, people, team_password_hash) -> None:
    """Ada, an admin, besides the team."""
    with session_scope(session_factory) as session:
        ada = agents.save_agent(session, email="ada@example.com", name="Ada", role=Role.ADMIN)
        ada.password_hash = team_password_hash


def signed_in(app, email: str):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    answer = client.post("/login", data={"csrf_token": csrf, "email": email, "password": PASSWORD})
    assert answer.status_code == 302
    return client


def test_the_dashboard_is_for_admins_only(app, admins):
    anonymous = app.test_client().get("/admin/rq/")
    assert anonymous.status_code == 302
    assert "/login" in anonymous.headers["Location"]
    for email in ("ann@example.com", "lee@example.com", "fin@example.com", "sam@example.com"):
        assert signed_in(app, email).get("/admin/rq/").status_code == 403, email
        assert signed_in(app, email).get("/admin/rq/0/data/queues.json").status_code == 403

    admin = signed_in(app, "ada@example.com")
    page = admin.get("/admin/rq/")
    assert page.status_code == 200
    assert "RQ" in page.get_data(as_text=True)
    assert "'unsafe-inline'" in page.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in admin.get("/").headers.get("Content-Security-Policy", "")
    names = {q["name"] for q in admin.get("/admin/rq/0/data/queues.json").get_json()["queues"]}
    assert names <= set(queues.ALL_QUEUES)


def test_only_an_admin_is_shown_the_way_to_the_dashboard(app, admins):
    assert 'href="/admin/rq/">Queues</a>' in signed_in(app, "ada@example.com").get("/").get_data(
        as_text=True
    )
    assert "/admin/rq" not in signed_in(app, "ann@example.com").get("/").get_data(as_text=True)


def test_a_cross_site_post_to_the_dashboard_is_refused(app, rt, admins):
    job = rt.queue(queues.ACTIONS).enqueue(always_fails)
    admin = signed_in(app, "ada@example.com")
    delete = f"/admin/rq/job/{job.id}/delete"

    refused = [
        {"Origin": "https://evil.example"},
        {"Origin": "https://evil.example", "X-Requested-With": "XMLHttpRequest"},
        {"Referer": "https://evil.example/page", "X-Requested-With": "XMLHttpRequest"},
        {"X-Requested-With": "XMLHttpRequest"},  # no origin at all
        {"Origin": "http://localhost"},  # a plain form post, not the dashboard's own XHR
    ]
    for headers in refused:
        assert admin.post(delete, headers=headers).status_code == 403, headers
        assert rt.redis.exists(job.key), headers
    assert admin.get(f"/admin/rq/requeue/{queues.ACTIONS}").status_code == 405
    assert (
        signed_in(app, "lee@example.com")
        .post(delete, headers={"Origin": "http://localhost", "X-Requested-With": "XMLHttpRequest"})
        .status_code
        == 403
    )

    done = admin.post(
        delete, headers={"Origin": "http://localhost", "X-Requested-With": "XMLHttpRequest"}
    )
    assert done.status_code == 200
    assert done.get_json() == {"status": "OK"}
    assert not rt.redis.exists(job.key)


def test_the_web_process_logs_json_lines_and_adds_up_its_workers_metrics(settings, rt, tmp_path):
    port = free_port()
    log_path = tmp_path / "web.log"
    env = {**os.environ, **settings.to_env(), "LOG_FORMAT": "json"}
    with open(log_path, "ab") as log:
        web = subprocess.Popen(
            [sys.executable, "-m", "helpdesk_app", "web", "--port", str(port), "--workers", "2"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_port(port, web)
        base = f"http://127.0.0.1:{port}"
        for n in range(20):  # enough for both gunicorn workers to answer some
            request = urllib.request.Request(
                f"{base}/healthz?token=sekrit{n}", headers={"X-Request-ID": f"probe-{n:04d}"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.headers["X-Request-ID"] == f"probe-{n:04d}"
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
            text = response.read().decode()
        healthz = {"method": "GET", "route": "/healthz", "status_class": "2xx"}
        assert metric(text, "billing_desk_http_request_duration_seconds_count", **healthz) == 20
    finally:
        web.terminate()
        web.wait(TIMEOUT)
    lines = json_lines(log_path.read_text())
    access = [line for line in lines if line["logger"] == "gunicorn.access"]
    assert {line.get("request_id") for line in access} >= {f"probe-{n:04d}" for n in range(20)}
    probe = next(line for line in access if line.get("request_id") == "probe-0007")
    assert (probe["http_method"], probe["http_path"], probe["http_status"]) == (
        "GET",
        "/healthz",
        200,
    )
    assert isinstance(probe["duration_ms"], int)
    assert "sekrit" not in log_path.read_text()
    assert any(line["logger"] == "gunicorn.error" for line in lines)


def test_the_poller_serves_metrics_that_count_the_mail_it_stored(
    settings, rt, mailbox_client, tmp_path
):
    mailbox_client.append("INBOX", DOUBLE_CHARGE)
    port = free_port()
    log_path = tmp_path / "poll-mail.log"
    env = {**os.environ, **settings.to_env(), "LOG_FORMAT": "json"}
    argv = [sys.executable, "-m", "helpdesk_app", "poll-mail", "--interval", "1",
            "--metrics-port", str(port)]  # fmt: skip
    with open(log_path, "ab") as log:
        poller = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, poller)
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + TIMEOUT
        while True:
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
            if metric(text, "billing_desk_emails_ingested_total") == 1:
                break
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        relayed = urllib.request.Request(url, headers={"X-Forwarded-For": "203.0.113.9"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(relayed, timeout=10)
        assert refused.value.code == 403
    finally:
        poller.terminate()
        assert poller.wait(TIMEOUT) == 0, log_path.read_text()
    lines = json_lines(log_path.read_text())
    assert any(line.get("email_id") for line in lines), log_path.read_text()
