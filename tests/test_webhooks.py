"""POST /webhooks/stripe through the real app and worker: signatures, once-only recording, a
mirror that never goes backwards, sync errors and mass payment failures escalated once."""

from __future__ import annotations

import dataclasses
import json
import random
import time

import pytest
from sqlalchemy import func, select
from stripe_webhooks import (
    OLD_SECRET,
    SECRET,
    charge,
    customer,
    deliver,
    event,
    invoice,
    sign,
    subscription,
)

from core.db import session_scope
from core.db.models import (
    Escalation,
    PaymentAttempt,
    StripeCustomer,
    StripeEvent,
    StripeSubscription,
    Ticket,
)
from core.domain import EscalationTarget
from core.errors import ConfigError
from core.settings import Settings
from helpdesk_app import create_app
from jobs import queues, stripe_events


@pytest.fixture
def webhook_app(settings, db_engine, stripe_client, rt):
    """The app with the current secret and the one being rolled out of use."""
    configured = dataclasses.replace(settings, stripe_webhook_secret=f"{SECRET},{OLD_SECRET}")
    app = create_app(configured)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(webhook_app):
    return webhook_app.test_client()


def _events(session_factory) -> list[StripeEvent]:
    with session_scope(session_factory) as session:
        rows = list(session.scalars(select(StripeEvent)))
        session.expunge_all()
        return rows


def _queued(rt) -> int:
    return rt.queue(queues.EVENTS).count


def test_a_signed_event_is_recorded_and_queued_then_mirrored(
    client, rt, session_factory, run_worker
):
    evt = event("customer.created", customer("cus_W1", "Ada"))
    response = deliver(client, evt)
    assert response.status_code == 200
    assert response.get_json()["received"] == evt["id"]
    assert [e.id for e in _events(session_factory)] == [evt["id"]]
    assert _queued(rt) == 1
    run_worker()
    with session_scope(session_factory) as session:
        row = session.get(StripeCustomer, "cus_W1")
        assert row is not None and row.name == "Ada" and row.event_created == evt["created"]
        stored = session.get(StripeEvent, evt["id"])
        assert stored.processed_at is not None and stored.status == "processed"


def _tampered(body: bytes) -> tuple[bytes, str]:
    return body.replace(b"Ada", b"Eve"), sign(body)


@pytest.mark.parametrize(
    "case",
    [
        "tampered body",
        "wrong secret",
        "old timestamp",
        "missing header",
        "malformed header",
        "only v0 scheme",
        "future secret not configured",
    ],
)
def test_anything_not_signed_by_us_is_refused_without_a_trace(case, client, rt, session_factory):
    body = json.dumps(event("customer.created", customer("cus_W2", "Ada"))).encode()
    headers = {"Stripe-Signature": sign(body)}
    if case == "tampered body":
        body, headers["Stripe-Signature"] = _tampered(body)
    elif case == "wrong secret":
        headers["Stripe-Signature"] = sign(body, "whsec_somebody_else")
    elif case == "old timestamp":
        headers["Stripe-Signature"] = sign(body, timestamp=int(time.time()) - 301)
    elif case == "missing header":
        headers = {}
    elif case == "malformed header":
        headers["Stripe-Signature"] = "t=abc,v1=zz"
    elif case == "only v0 scheme":
        headers["Stripe-Signature"] = sign(body).replace("v1=", "v0=")
    elif case == "future secret not configured":
        headers["Stripe-Signature"] = sign(body, "whsec_test_next_rotation")
    response = client.post("/webhooks/stripe", data=body, headers=headers)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid signature"
    assert _events(session_factory) == []
    assert _queued(rt) == 0


def test_during_a_rotation_either_secret_and_a_double_signature_are_accepted(
    client, session_factory
):
    old = event("customer.created", customer("cus_W3", "Old"))
    new = event("customer.created", customer("cus_W4", "New"))
    assert deliver(client, old, OLD_SECRET).status_code == 200
    assert deliver(client, new, SECRET).status_code == 200
    both = event("customer.created", customer("cus_W5", "Both"))
    body = json.dumps(both).encode()
    # Stripe signs with each active secret: one v1 is for a secret we no longer have.
    stranger = sign(body, "whsec_retired").split(",")[1]
    header = f"{sign(body, SECRET).split(',')[0]},{stranger},{sign(body, SECRET).split(',')[1]}"
    response = client.post("/webhooks/stripe", data=body, headers={"Stripe-Signature": header})
    assert response.status_code == 200
    assert {e.id for e in _events(session_factory)} == {old["id"], new["id"], both["id"]}


def test_without_a_configured_secret_nothing_is_accepted(settings, db_engine, rt, session_factory):
    app = create_app(dataclasses.replace(settings, stripe_webhook_secret=None))
    response = deliver(app.test_client(), event("customer.created", customer("cus_W6", "X")))
    assert response.status_code == 503
    assert _events(session_factory) == []
    assert _queued(rt) == 0


def test_a_body_over_a_megabyte_is_refused(client, session_factory):
    evt = event("customer.created", customer("cus_W7", "x" * (1024 * 1024)))
    assert deliver(client, evt).status_code == 413
    assert _events(session_factory) == []


def test_a_signed_body_that_is_not_an_event_is_refused(client, rt, session_factory):
    for body in (b"not json", b'{"id": "nope", "type": "x", "created": 1}', b"[1]"):
        response = client.post(
            "/webhooks/stripe", data=body, headers={"Stripe-Signature": sign(body)}
        )
        assert response.status_code == 400
    assert _events(session_factory) == []
    assert _queued(rt) == 0


def test_a_duplicate_delivery_is_acknowledged_and_handled_once(
    client, rt, session_factory, run_worker
):
    evt = event("customer.updated", customer("cus_W8", "Once"))
    assert deliver(client, evt).status_code == 200
    run_worker()
    again = deliver(client, evt)
    assert again.status_code == 200
    assert again.get_json()["message"] == "already received"
    assert _queued(rt) == 0  # handled already: nothing queued again
    run_worker()
    [stored] = _events(session_factory)
    assert stored.attempts == 1


def test_out_of_order_events_leave_the_mirror_at_the_newest_state(
    client, session_factory, run_worker
):
    now = int(time.time())
    canceled = event(
        "customer.subscription.updated", subscription("sub_W1", "cus_W9", "canceled"), created=now
    )
    active = event(
        "customer.subscription.created",
        subscription("sub_W1", "cus_W9", "active"),
        created=now - 60,
    )
    deliver(client, canceled)
    run_worker()
    deliver(client, active)
    run_worker()
    with session_scope(session_factory) as session:
        row = session.get(StripeSubscription, "sub_W1")
        assert row.status == "canceled" and row.event_created == now
        assert row.current_period_end == 1_800_000_000
        statuses = set(session.scalars(select(StripeEvent.status)))
    assert statuses == {"processed"}


def test_a_tie_in_stripe_time_is_settled_by_the_object_stripe_has_now(
    client, stripe_client, session_factory, run_worker
):
    real = stripe_client.v1.customers.create(params={"name": "Current", "email": "t@example.com"})
    now = int(time.time())
    deliver(client, event("customer.updated", customer(real.id, "Current"), created=now))
    run_worker()
    # Same second, different state: the events cannot say which is newer; Stripe can.
    deliver(client, event("customer.updated", customer(real.id, "Stale"), created=now))
    run_worker()
    with session_scope(session_factory) as session:
        assert session.get(StripeCustomer, real.id).name == "Current"


def test_a_deleted_customer_is_marked_deleted_and_keeps_what_we_knew(
    client, session_factory, run_worker
):
    now = int(time.time())
    deliver(client, event("customer.created", customer("cus_W10", "Gone"), created=now - 5))
    deliver(client, event("customer.deleted", customer("cus_W10", "Gone"), created=now))
    run_worker()
    with session_scope(session_factory) as session:
        row = session.get(StripeCustomer, "cus_W10")
        assert row.deleted is True and row.name == "Gone"


def test_a_burst_of_500_deliveries_with_duplicates_is_handled_once_each_none_lost(
    client, session_factory, run_worker
):
    base = int(time.time()) - 1000
    unique = [
        event("customer.updated", customer(f"cus_B{i % 50}", f"v{i}"), created=base + i)
        for i in range(450)
    ]
    deliveries = unique + random.Random(7).sample(unique, 50)
    random.Random(11).shuffle(deliveries)
    answers = [deliver(client, evt).status_code for evt in deliveries]
    assert answers == [200] * 500
    run_worker()
    events = _events(session_factory)
    assert len(events) == 450
    assert {e.id for e in events} == {e["id"] for e in unique}
    assert all(e.processed_at is not None and e.attempts == 1 for e in events)
    with session_scope(session_factory) as session:
        names = {row.id: row.name for row in session.scalars(select(StripeCustomer))}
    # Each customer ends at its newest version, whatever order the worker met them in.
    assert names == {f"cus_B{c}": f"v{400 + c}" for c in range(50)}


def _failing(monkeypatch) -> None:
    def broken(*_args, **_kwargs):
        raise RuntimeError("mirror table is locked")

    monkeypatch.setattr(stripe_events.mirror, "apply", broken)


def test_a_handler_that_keeps_failing_is_a_sync_error_escalated_once(
    client, rt, session_factory, run_worker, monkeypatch
):
    _failing(monkeypatch)
    first = event("customer.updated", customer("cus_W11", "X"))
    second = event("customer.updated", customer("cus_W12", "Y"))
    deliver(client, first)
    deliver(client, second)
    rt.queue(queues.EVENTS).empty()  # the test runs each attempt itself, without the pauses
    for evt in (first, second):
        for _ in range(stripe_events.SYNC_ERROR_AFTER):
            with pytest.raises(RuntimeError):
                stripe_events.handle_event(evt["id"])
    monkeypatch.undo()
    run_worker()  # the escalation's plan step
    with session_scope(session_factory) as session:
        statuses = {e.id: (e.status, e.attempts) for e in session.scalars(select(StripeEvent))}
        assert statuses == {
            first["id"]: ("failed", 3),
            second["id"]: ("failed", 3),
        }
        tickets = list(session.scalars(select(Ticket)))
        assert [t.subject for t in tickets] == [
            "Stripe sync error: event customer.updated keeps failing"
        ]
        [escalation] = session.scalars(select(Escalation))
        assert escalation.target == EscalationTarget.ENGINEERING_PLATFORM
        assert first["id"] in escalation.reason and "mirror table is locked" in escalation.reason
        notes = [m.body for m in tickets[0].messages]
        assert any(second["id"] in body for body in notes)


def test_fewer_failures_than_the_limit_are_not_a_sync_error(
    client, rt, session_factory, monkeypatch
):
    _failing(monkeypatch)
    evt = event("customer.updated", customer("cus_W13", "X"))
    deliver(client, evt)
    for _ in range(stripe_events.SYNC_ERROR_AFTER - 1):
        with pytest.raises(RuntimeError):
            stripe_events.handle_event(evt["id"])
    monkeypatch.undo()
    stripe_events.handle_event(evt["id"])  # the retry that works
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 0
        stored = session.get(StripeEvent, evt["id"])
        assert stored.status == "processed" and "locked" in stored.last_error


def test_a_mass_failure_burst_raises_exactly_one_critical_escalation(
    client, session_factory, run_worker
):
    now = int(time.time())
    burst = [
        event("charge.failed", charge(f"ch_F{i}", f"cus_F{i}", "failed"), created=now - 300 + i)
        for i in range(40)
    ] + [
        event("charge.succeeded", charge(f"ch_S{i}", f"cus_S{i}", "succeeded"), created=now - 200)
        for i in range(5)
    ]
    for evt in burst:
        assert deliver(client, evt).status_code == 200
    run_worker()
    # A repeat delivery counts nothing twice.
    deliver(client, burst[0])
    run_worker()
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(PaymentAttempt)) == 45
        [escalation] = session.scalars(select(Escalation))
        assert escalation.target == EscalationTarget.ENGINEERING_CRITICAL
        assert "20 of 20 payments failed (100%)" in escalation.reason
        [ticket] = session.scalars(select(Ticket))
        assert ticket.subject.startswith("Mass payment failure: ")


def test_a_failed_renewal_seen_by_its_invoice_and_its_charge_counts_once(
    client, session_factory, run_worker
):
    """Current API versions link neither object to the other: the invoice's attempt and the
    charge of the same customer and amount close in time are one attempt, so 15 customers'
    failed renewals are 15 failures, not 30 (under the threshold of 20: no alarm)."""
    now = int(time.time())
    for i in range(15):
        failed = [
            event("invoice.payment_failed", invoice(f"in_R{i}", f"cus_R{i}", "open"), created=now),
            event("charge.failed", charge(f"ch_R{i}", f"cus_R{i}", "failed"), created=now + 2),
        ]
        for evt in failed if i % 2 else reversed(failed):  # either may come first
            assert deliver(client, evt).status_code == 200
    run_worker()
    with session_scope(session_factory) as session:
        attempts = list(session.scalars(select(PaymentAttempt)))
        assert len(attempts) == 15 and all(a.twin_key for a in attempts)
        assert session.scalar(select(func.count()).select_from(Escalation)) == 0


def test_failed_renewals_seen_only_by_their_invoices_raise_the_alarm(
    client, session_factory, run_worker
):
    now = int(time.time())
    for i in range(25):
        evt = event("invoice.payment_failed", invoice(f"in_V{i}", f"cus_V{i}", "open"), created=now)
        assert deliver(client, evt).status_code == 200
    run_worker()
    with session_scope(session_factory) as session:
        [escalation] = session.scalars(select(Escalation))
        assert escalation.target == EscalationTarget.ENGINEERING_CRITICAL


def test_failures_below_the_rate_are_no_mass_failure(client, session_factory, run_worker):
    now = int(time.time())
    for i in range(60):
        deliver(
            client,
            event("charge.succeeded", charge(f"ch_H{i}", "cus_H", "succeeded"), created=now - 30),
        )
    for i in range(25):
        deliver(client, event("charge.failed", charge(f"ch_G{i}", "cus_G", "failed"), created=now))
    run_worker()
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(PaymentAttempt)) == 85
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Escalation)) == 0


def test_a_new_mass_failure_needs_a_quiet_window_first(client, session_factory, run_worker):
    now = int(time.time())

    def failures(prefix: str, start: int) -> None:
        for i in range(20):
            deliver(
                client,
                event(
                    "charge.failed", charge(f"ch_{prefix}{i}", "cus_Q", "failed"), created=start + i
                ),
            )

    failures("A", now - 3 * 3600)  # an incident three hours ago
    failures("B", now - 3 * 3600 + 600)  # still the same one: within its window
    failures("C", now - 60)  # hours of quiet since: a new incident
    run_worker()
    with session_scope(session_factory) as session:
        targets = list(session.scalars(select(Escalation.target)))
    assert targets == [EscalationTarget.ENGINEERING_CRITICAL] * 2


@pytest.mark.parametrize(
    ("raw", "secrets"),
    [
        ("whsec_a", ("whsec_a",)),
        (" whsec_a , whsec_b ", ("whsec_a", "whsec_b")),
        ("", ()),
    ],
)
def test_the_webhook_secrets_setting_takes_a_rotation(raw, secrets):
    assert Settings.from_env({"STRIPE_WEBHOOK_SECRET": raw}).stripe_webhook_secrets == secrets


@pytest.mark.parametrize("raw", ["sk_test_oops", "whsec_a,sk_live_b", ","])
def test_a_webhook_secret_that_is_not_a_signing_secret_stops_start_up(raw):
    with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRET"):
        Settings.from_env({"STRIPE_WEBHOOK_SECRET": raw})


def test_an_event_whose_job_was_lost_is_queued_again_and_handled_once(
    client, rt, session_factory, run_worker
):
    """Recorded and answered 200, then Redis lost the job: Stripe will not deliver it again,
    so the worker supervisor's sweep queues it (once, however often it looks)."""
    lost = event("customer.created", customer("cus_Lost", "Lou"))
    fresh = event("customer.created", customer("cus_Fresh", "Fay"))
    assert deliver(client, lost).status_code == 200
    rt.redis.flushdb()  # the job is gone
    with session_scope(session_factory) as session:
        session.get(StripeEvent, lost["id"]).received_at -= stripe_events.RESUME_AFTER * 2
    assert deliver(client, fresh).status_code == 200  # just came: its job is queued

    assert stripe_events.resume_events(rt) == 1
    assert stripe_events.resume_events(rt) == 0  # its job is queued now
    run_worker()

    with session_scope(session_factory) as session:
        assert session.get(StripeCustomer, "cus_Lost").name == "Lou"
        assert session.get(StripeEvent, lost["id"]).status == "processed"
        assert session.get(StripeEvent, fresh["id"]).status == "processed"
    assert stripe_events.resume_events(rt) == 0  # nothing left unhandled


def test_an_event_job_lost_on_its_way_to_a_worker_is_queued_again(
    client, rt, session_factory, run_worker
):
    """A worker's BLPOP took the job and its connection dropped before the answer: the job
    says "queued" but no queue holds it. The sweep pushes it back, once."""
    lost = event("customer.created", customer("cus_Popped", "Pia"))
    assert deliver(client, lost).status_code == 200
    events_queue = rt.queue(queues.EVENTS)
    assert rt.redis.lpop(events_queue.key) == stripe_events.event_job_id(lost["id"]).encode()
    with session_scope(session_factory) as session:
        session.get(StripeEvent, lost["id"]).received_at -= stripe_events.RESUME_AFTER * 2

    assert stripe_events.resume_events(rt) == 1
    assert stripe_events.resume_events(rt) == 0  # in its queue now: left alone
    assert events_queue.count == 1
    run_worker()

    with session_scope(session_factory) as session:
        assert session.get(StripeCustomer, "cus_Popped").name == "Pia"
        assert session.get(StripeEvent, lost["id"]).status == "processed"
