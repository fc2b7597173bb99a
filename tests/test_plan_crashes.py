"""A real worker killed with SIGKILL at each step boundary of a plan, then the work re-run:
every effect happens once (one refund, one email, one close, one note).

The plan is the duplicate charge's: refund → email the confirmation → close. The email is
triaged in this process; then ``billing-desk worker --burst`` runs as a subprocess with one
crash point armed (tests/crash_points.py). The worker pool replaces the killed worker and
puts its job back; the re-run finds what the dead one did.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from crash_points import POINTS
from customer_mail import DOUBLE_CHARGE, customer_email
from sqlalchemy import func, select

from core.db import session_scope
from core.db.models import Action, AuditEvent, InboundEmail, Plan, Ticket
from core.domain import RESOLUTION_REFUND_ISSUED
from helpdesk_app.demo.seed import DemoCustomer, create_charge, create_customer
from jobs.inbound import process_inbound_email

pytestmark = pytest.mark.e2e

TESTS = Path(__file__).resolve().parent
ALICE = DemoCustomer("Alice Martin", "alice@example.com", "T-1042", "Northwind", "4242424242424242")
WORKER_TIMEOUT_SECONDS = 180


def double_charge_email() -> bytes:
    return customer_email("Charged twice", DOUBLE_CHARGE)


def run_crashing_worker(settings, point: str | None, marker: Path) -> subprocess.CompletedProcess:
    """``billing-desk worker --processes 1 --burst --queue automation``, with one crash point
    armed (or none). The email was triaged here: plan steps are all the worker has to run."""
    env = {**os.environ, **settings.to_env()}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m"]
    command += ["crash_points", point, str(marker), "--"] if point else ["helpdesk_app"]
    command += ["worker", "--processes", "1", "--burst", "--queue", "automation"]
    return subprocess.run(
        command,
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT_SECONDS,
        check=False,
    )


@pytest.mark.parametrize("point", POINTS)
def test_a_worker_killed_at_any_step_boundary_changes_nothing_twice(
    point, settings, rt, stripe_client, outbox, mailbox_client, poll_mail, tmp_path
):
    customer = create_customer(stripe_client, ALICE)
    base = rt.settings.stripe_api_base
    older = create_charge(stripe_client, base, customer, 4900, "Pro", days_ago=0.1)
    newer = create_charge(stripe_client, base, customer, 4900, "Pro")
    mailbox_client.append("INBOX", double_charge_email())
    poll_mail()
    with session_scope(rt.session_factory) as session:
        email_id = session.scalars(select(InboundEmail.id)).one()
    assert process_inbound_email(email_id) == "auto"  # the plan is stored, its refund queued

    marker = tmp_path / "crashed"
    finished = run_crashing_worker(rt.settings, point, marker)
    assert marker.exists(), f"the worker never reached {point}:\n{finished.stderr[-3000:]}"
    assert finished.returncode == 0, finished.stderr[-3000:]

    issued = [
        r
        for charge in (older, newer)
        for r in stripe_client.v1.refunds.list(params={"charge": charge}).data
    ]
    assert [(r.charge, r.amount) for r in issued] == [(newer, 4900)]  # one refund
    # One email: a crash between the SMTP server's answer and our record of it resends the
    # same message (same Message-ID), which the customer's mail program shows once.
    assert len({m["Message-ID"] for m in outbox}) == 1
    if point != "after_smtp_send":
        assert len(outbox) == 1
    with session_scope(rt.session_factory) as session:
        ticket = session.scalars(select(Ticket)).one()
        assert (ticket.status, ticket.resolution) == ("closed", RESOLUTION_REFUND_ISSUED)
        closes = session.scalar(select(func.count()).where(AuditEvent.event == "ticket.closed"))
        assert closes == 1  # one close
        refund_notes = [m for m in ticket.messages if m.kind == "note" and issued[0].id in m.body]
        assert len(refund_notes) == 1  # one note
        sent = [m for m in ticket.messages if m.kind == "outbound"]
        assert len(sent) == 1  # the thread shows one reply
        steps = session.scalars(select(Action).order_by(Action.position)).all()
        assert [(s.kind, s.status) for s in steps] == [
            ("refund", "succeeded"),
            ("confirm_refund", "succeeded"),
            ("close", "succeeded"),
        ]
        assert steps[0].stripe_object_id == issued[0].id
        assert session.scalars(select(Plan.status)).one() == "done"


def test_a_worker_starting_queues_the_plans_whose_job_was_lost(
    settings, rt, stripe_client, outbox, mailbox_client, poll_mail, tmp_path
):
    """Redis lost the queued refund (or the process that stored the plan died before queueing
    it): the worker pool finds the plan when it starts, and runs it to the end."""
    customer = create_customer(stripe_client, ALICE)
    base = rt.settings.stripe_api_base
    create_charge(stripe_client, base, customer, 4900, "Pro", days_ago=0.1)
    newer = create_charge(stripe_client, base, customer, 4900, "Pro")
    mailbox_client.append("INBOX", double_charge_email())
    poll_mail()
    with session_scope(rt.session_factory) as session:
        email_id = session.scalars(select(InboundEmail.id)).one()
    process_inbound_email(email_id)
    rt.redis.flushdb()

    finished = run_crashing_worker(rt.settings, None, tmp_path / "unused")
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert len(stripe_client.v1.refunds.list(params={"charge": newer}).data) == 1
    assert len(outbox) == 1
    with session_scope(rt.session_factory) as session:
        assert session.scalars(select(Plan.status)).one() == "done"


@pytest.mark.parametrize(
    ("holder", "taken_over"), [("job:inbound-7", True), ("job:inbound-8", False)]
)
def test_a_rerun_takes_over_the_triage_lock_its_dead_run_left_and_no_other(
    rt, monkeypatch, holder, taken_over
):
    """Killed while triaging, a job is put back and runs again: the lock its last run held
    is its own to take over at once, not one to wait out. Another job's lock still holds."""
    from types import SimpleNamespace

    import jobs.inbound
    from core.errors import HelpdeskUnavailable

    key = "billing-desk:triage:42"
    rt.redis.set(key, holder, px=300_000)  # as the dead run left it: long to expire
    monkeypatch.setattr(jobs.inbound, "TRIAGE_LOCK_SECONDS", 1)  # how long a waiter waits
    monkeypatch.setattr(jobs.inbound, "get_current_job", lambda: SimpleNamespace(id="inbound-7"))
    if taken_over:
        with jobs.inbound._one_triage_at_a_time(rt, 42):
            assert rt.redis.get(key) == b"job:inbound-7"
        assert rt.redis.get(key) is None  # released when the triage ended
    else:
        with pytest.raises(HelpdeskUnavailable), jobs.inbound._one_triage_at_a_time(rt, 42):
            pass
        assert rt.redis.get(key) == holder.encode()
