"""Stripe webhook events, handled: the mirror, disputes, the mass-failure watch, sync errors.

``handle_event`` takes a recorded event's ID. It is idempotent: ``processed_at`` is set once and
a re-run after it is a no-op; before it, every write it makes is an upsert that never goes
backwards (core.mirror) or an insert by key. A failing handler is retried (STANDARD_RETRY);
after ``SYNC_ERROR_AFTER`` failed attempts, or with no retry left, the event is marked failed
and that is a Stripe sync error: Engineering Platform hears of it, once per incident.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from redis import Redis
from rq import get_current_job
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core import metrics, mirror
from core.db import session_scope
from core.db.models import PaymentAttempt, StripeEvent, StripeIncident, utcnow
from core.domain import EscalationTarget
from core.helpdesks import LocalHelpdesk
from core.policy.mass_failure import PaymentWindow, is_mass_failure, is_new_incident, window_start
from jobs import disputes, queues, runtime
from jobs.system_tickets import ACTOR, open_system_escalation

log = logging.getLogger(__name__)

# An event recorded this long ago and still unhandled has lost its job (the supervisor looks).
RESUME_AFTER = queues.RESUME_AFTER
RESUME_BATCH = 1000
# Failed attempts after which an event is a sync error (the first retries are often transient).
SYNC_ERROR_AFTER = 3
SYNC_ERROR = "sync_error"
MASS_FAILURE = "mass_failure"

# Status of a recorded event.
RECEIVED, PROCESSED, IGNORED, FAILED = "received", "processed", "ignored", "failed"

# A payment attempt is seen as its charge's event and, for an invoice, the invoice's too. Older
# API versions name the charge on the invoice; current ones do not, so an invoice's attempt and
# a charge of the same customer and amount within TWIN_SECONDS are taken for one attempt.
_FAILED_PAYMENT = frozenset({"charge.failed", "invoice.payment_failed"})
_PAID = frozenset({"charge.succeeded", "invoice.paid", "invoice.payment_succeeded"})
TWIN_SECONDS = 600


def event_job_id(event_id: str) -> str:
    """The one job of an event."""
    return f"stripe-event-{event_id}"


def enqueue_event(connection: Redis, event_id: str) -> bool:
    """Queue the handling of a recorded event (once: queueing twice runs it once)."""
    queue = queues.get_queue(queues.EVENTS, connection)
    return queues.enqueue_once(queue, handle_event, event_id, job_id=event_job_id(event_id))


def resume_events(rt: runtime.Runtime) -> int:
    """Queue again the recorded events still unhandled a while after they came, whose job the
    queue lost (Redis lost its data, or the web process died between recording and queueing):
    Stripe, answered 200, will not deliver them again. Returns how many were queued."""
    before = utcnow() - RESUME_AFTER
    with session_scope(rt.session_factory) as session:
        waiting = session.scalars(
            select(StripeEvent.id)
            # Still "received": neither handled (processed, ignored) nor given up (failed).
            # The status is indexed; the sweep runs every minute over every event kept.
            .where(StripeEvent.status == RECEIVED, StripeEvent.received_at < before)
            .order_by(StripeEvent.created)
            .limit(RESUME_BATCH)
        ).all()
    # A job still queued, running or waiting for its retry is left alone (one job per event).
    return sum(enqueue_event(rt.redis, event_id) for event_id in waiting)


def recover_missed_events(rt: runtime.Runtime, since: int, until: int) -> list[str]:
    """Record and queue the events Stripe made between ``since`` and ``until`` that never
    reached us (a delivery that kept failing, an endpoint down or misconfigured); their IDs."""
    missed: list[str] = []
    batch: list[dict[str, Any]] = []

    def ingest() -> None:
        with session_scope(rt.session_factory) as session:
            known = set(
                session.scalars(
                    select(StripeEvent.id).where(StripeEvent.id.in_([e["id"] for e in batch]))
                )
            )
            for evt in batch:
                if evt["id"] not in known:
                    session.add(
                        StripeEvent(
                            id=evt["id"],
                            type=str(evt["type"]),
                            created=int(evt["created"]),
                            payload=json.dumps(evt),
                        )
                    )
                    missed.append(str(evt["id"]))
        batch.clear()

    for evt in rt.gateway.iter_events(since, until):
        batch.append(evt)
        if len(batch) >= RESUME_BATCH:
            ingest()
    if batch:
        ingest()
    for event_id in missed:
        enqueue_event(rt.redis, event_id)
    return missed


def handle_event(event_id: str) -> str:
    """Apply one recorded Stripe event; returns its status (processed, ignored...)."""
    rt = runtime.current()
    with session_scope(rt.session_factory) as session:
        event = session.get(StripeEvent, event_id)
        if event is None:
            log.warning("Stripe event %s: not recorded; nothing to do", event_id)
            return "missing"
        if event.processed_at is not None:
            return event.status
        if not event.attempts:  # its first run: how late Stripe's delivery reached us
            metrics.observe_webhook_lag(event.type, event.created, event.received_at.timestamp())
        event.attempts += 1  # counted before the work, so a crash counts too
        payload = json.loads(event.payload)
    try:
        status = _apply(rt, payload)
    except Exception as exc:
        _record_failure(rt, event_id, exc)
        raise
    with session_scope(rt.session_factory) as session:
        session.execute(
            update(StripeEvent)
            .where(StripeEvent.id == event_id, StripeEvent.processed_at.is_(None))
            .values(processed_at=utcnow(), status=status)
        )
    log.info("Stripe event %s (%s): %s", event_id, payload.get("type"), status)
    return status


def _apply(rt: runtime.Runtime, event: Mapping[str, Any]) -> str:
    """Mirror the event's object, then what its type asks for; the status to record."""
    event_type = str(event["type"])
    created = int(event["created"])
    obj = (event.get("data") or {}).get("object") or {}
    kind = mirror.kind_of(obj)
    if kind is None:
        return IGNORED
    with session_scope(rt.session_factory) as session:
        mirror.apply(
            session,
            kind,
            obj,
            created,
            deleted=event_type == "customer.deleted",
            fetch=lambda: rt.gateway.retrieve_object(kind, str(obj["id"])),
        )
    if kind == "dispute":
        disputes.dispute_event(rt, event_type, obj)
    if event_type in _FAILED_PAYMENT or event_type in _PAID:
        _watch_payments(rt, event, obj)
    return PROCESSED


def _record_failure(rt: runtime.Runtime, event_id: str, exc: Exception) -> None:
    """Keep the error; past the limit (or the last retry) mark the event failed and raise a
    Stripe sync error."""
    job = get_current_job()
    last_try = job is not None and job.retries_left == 0
    with session_scope(rt.session_factory) as session:
        event = session.get(StripeEvent, event_id)
        assert event is not None
        event.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        given_up = event.attempts >= SYNC_ERROR_AFTER or last_try
        if given_up:
            event.status = FAILED
        event_type, attempts, error = event.type, event.attempts, event.last_error
    log.warning("Stripe event %s (%s) failed, attempt %d: %s", event_id, event_type, attempts, exc)
    if given_up:
        raise_sync_error(
            rt,
            summary=f"event {event_type} keeps failing",
            details=(
                f"Stripe event {event_id} ({event_type}) failed {attempts} times; the mirror "
                f"may be behind Stripe. Last error: {error}. Once fixed, run "
                "`billing-desk reconcile` to repair the mirror."
            ),
        )


def _next_key(session: Session, kind: str) -> str:
    count = session.scalar(select(func.count()).where(StripeIncident.kind == kind)) or 0
    return f"{kind}:{count + 1}"


def raise_sync_error(rt: runtime.Runtime, *, summary: str, details: str) -> int | None:
    """Escalate a Stripe sync error to Engineering Platform, once per incident: while one is
    open, further errors are noted on its ticket. Returns the incident's ticket ID."""
    with session_scope(rt.session_factory) as session:
        incident = session.scalar(
            select(StripeIncident)
            .where(StripeIncident.kind == SYNC_ERROR, StripeIncident.resolved_at.is_(None))
            .order_by(StripeIncident.id.desc())
            .limit(1)
        )
        if incident is not None and incident.ticket_id is not None:
            LocalHelpdesk(session).add_internal_note(
                incident.ticket_id, f"Another Stripe sync error: {details}", author=ACTOR
            )
            return incident.ticket_id
        if incident is None:
            incident = _open_incident(session, SYNC_ERROR, {"summary": summary})
            if incident is None:
                return None  # another worker opened it just now
        key = incident.key
    return _escalate(
        rt, key, EscalationTarget.ENGINEERING_PLATFORM, f"Stripe sync error: {summary}", details
    )


def resolve_sync_errors(rt: runtime.Runtime) -> None:
    """Close the open sync-error incident (a clean drift check): the next error is new."""
    with session_scope(rt.session_factory) as session:
        session.execute(
            update(StripeIncident)
            .where(StripeIncident.kind == SYNC_ERROR, StripeIncident.resolved_at.is_(None))
            .values(resolved_at=utcnow())
        )


def _open_incident(
    session: Session, kind: str, details: dict[str, Any], last_seen: int = 0
) -> StripeIncident | None:
    """A new incident of ``kind``, or None when another worker opened it at the same time."""
    incident = StripeIncident(
        key=_next_key(session, kind), kind=kind, details=details, last_seen=last_seen
    )
    try:
        with session.begin_nested():
            session.add(incident)
    except IntegrityError:
        return None
    return incident


def _escalate(
    rt: runtime.Runtime, key: str, target: EscalationTarget, subject: str, details: str
) -> int:
    ticket_id = open_system_escalation(rt, key=key, target=target, subject=subject, details=details)
    with session_scope(rt.session_factory) as session:
        session.execute(
            update(StripeIncident).where(StripeIncident.key == key).values(ticket_id=ticket_id)
        )
    return ticket_id


def _attempt_of(obj: Mapping[str, Any]) -> tuple[str, int | None]:
    """The attempt's key and amount: a charge's ID; for an invoice, the charge it names (older
    API versions), else the invoice and its attempt number."""
    if obj.get("object") == "charge":
        return f"charge:{obj['id']}", mirror.int_or_none(obj.get("amount"))
    amount = mirror.int_or_none(obj.get("amount_due"))
    charge = mirror.id_of(obj.get("charge"))
    if charge:
        return f"charge:{charge}", amount
    return f"invoice:{obj['id']}:{obj.get('attempt_count') or 0}", amount


def _counted_as_twin(
    session: Session, key: str, customer: str | None, amount: int | None, failed: bool, at: int
) -> bool:
    """Whether this attempt was counted already through its other event: a charge's through
    its invoice's, or the other way round (current API versions link neither to the other)."""
    if session.scalar(select(PaymentAttempt.key).where(PaymentAttempt.twin_key == key)):
        return True  # this event ran before and paired then
    if customer is None or amount is None:
        return False
    other = "invoice:%" if key.startswith("charge:") else "charge:%"
    twin = session.scalar(
        select(PaymentAttempt)
        .where(
            PaymentAttempt.key.like(other),
            PaymentAttempt.twin_key.is_(None),
            PaymentAttempt.customer_id == customer,
            PaymentAttempt.amount == amount,
            PaymentAttempt.failed.is_(failed),
            PaymentAttempt.occurred_at.between(at - TWIN_SECONDS, at + TWIN_SECONDS),
        )
        .order_by(func.abs(PaymentAttempt.occurred_at - at))
        .limit(1)
    )
    if twin is None:
        return False
    twin.twin_key = key
    return True


def _watch_payments(rt: runtime.Runtime, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    """Count this payment attempt; too many failures at too high a rate in the window ending
    at it is a mass payment failure, escalated to Engineering Critical once per incident."""
    event_type = str(event["type"])
    created = int(event["created"])
    failed = event_type in _FAILED_PAYMENT
    policy = rt.policy
    key, amount = _attempt_of(obj)
    customer = mirror.id_of(obj.get("customer"))
    with session_scope(rt.session_factory) as session:
        if _counted_as_twin(session, key, customer, amount, failed, created):
            return
        try:
            with session.begin_nested():
                session.add(
                    PaymentAttempt(
                        key=key,
                        failed=failed,
                        occurred_at=created,
                        customer_id=customer,
                        amount=amount,
                        event_id=str(event["id"]),
                    )
                )
        except IntegrityError:
            return  # this attempt was counted already (its other event, or a re-run)
        if not failed:
            return
        start = window_start(created, policy)
        in_window = select(PaymentAttempt).where(
            PaymentAttempt.occurred_at > start, PaymentAttempt.occurred_at <= created
        )
        attempted = session.scalar(select(func.count()).select_from(in_window.subquery())) or 0
        failures = (
            session.scalar(
                select(func.count()).select_from(
                    in_window.where(PaymentAttempt.failed.is_(True)).subquery()
                )
            )
            or 0
        )
        window = PaymentWindow(start, created, attempted, failures)
        if not is_mass_failure(window, policy):
            return
        latest = session.scalar(
            select(StripeIncident)
            .where(StripeIncident.kind == MASS_FAILURE)
            .order_by(StripeIncident.id.desc())
            .limit(1)
        )
        if latest is not None and not is_new_incident(latest.last_seen, created, policy):
            latest.last_seen = max(latest.last_seen, created)
            latest.details = dict(latest.details) | {"latest": window.describe()}
            return
        numbers = {"failed": failures, "attempted": attempted, "rate": round(window.rate, 3)}
        incident = _open_incident(
            session, MASS_FAILURE, numbers | {"window": window.describe()}, last_seen=created
        )
        if incident is None:
            return
        key = incident.key
    _escalate(
        rt,
        key,
        EscalationTarget.ENGINEERING_CRITICAL,
        f"Mass payment failure: {window.describe()}",
        f"Mass payment failure: {window.describe()}, above the policy's "
        f"{policy.mass_failure_min_failures} failures at {policy.mass_failure_min_rate:.0%} in "
        f"{policy.mass_failure_window_minutes} minutes. Check Stripe's status page, the "
        "payment method settings and the latest deploy.",
    )
