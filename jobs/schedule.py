"""Periodic work the worker supervisor queues: the SLA check, once a minute; the check for
Stripe events that never reached us, once an hour; the full drift check, once a day.

An escalation nobody picked up by its due time is breached: it is marked once (compare and
set, so two supervisors mark it once), noted on the ticket, and re-escalated: its team and the
Support Lead are told. The notices are idempotent emails, sent again by the next round if SMTP
was down, and never twice.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from sqlalchemy import select, update

from core import audit
from core.db import session_scope
from core.db.models import Escalation, OutboundEmail, StripeCustomer, utcnow
from core.domain import EscalationStatus, EscalationTarget, OutboundStatus
from core.errors import BillingDeskError
from core.escalations import due_breaches
from jobs import queues, runtime
from jobs.effects import send_team_email, team_email_key
from jobs.reconcile import reconcile
from jobs.stripe_events import raise_sync_error, recover_missed_events, resolve_sync_errors

log = logging.getLogger(__name__)
BREACH_TEMPLATE = "sla_breach_notice"
# Who hears of every breach besides the team that missed it (the matrix's first level).
REESCALATE_TO = EscalationTarget.SUPPORT_LEAD
# Breach notices still unsent are tried again for this long.
RESEND_WINDOW = timedelta(days=2)
# The full walk costs a request per 100 objects of the whole account: daily. Missed deliveries,
# drift's usual cause, cost a request per 100 events of the window: hourly, over two hours
# (overlapping), ending when Stripe may still be retrying a delivery.
DRIFT_CHECK_SECONDS = 86400
DRIFT_EXAMPLES = 10
MISSED_EVENTS_CHECK_SECONDS = 3600
MISSED_EVENTS_LOOKBACK_SECONDS = 7200
DELIVERY_GRACE_SECONDS = 600


def enqueue_sla_check(rt: runtime.Runtime) -> None:
    """Queue this minute's SLA check (once, whichever supervisor asks)."""
    minute = int(time.time() // 60)
    queues.enqueue_once(rt.queue(queues.AUTOMATION), check_slas, job_id=f"sla-check-{minute}")


def check_slas() -> int:
    """Find escalations past due, re-escalate each once; returns how many breached now."""
    rt = runtime.current()
    now = utcnow()
    with session_scope(rt.session_factory) as session:
        due = [e.id for e in due_breaches(session, now)]
    breached = [e for e in due if _mark_breached(rt, e)]
    with session_scope(rt.session_factory) as session:
        # Breached in this round, or in an earlier one whose notices SMTP did not all take.
        recent = session.scalars(
            select(Escalation).where(
                Escalation.status == EscalationStatus.OPEN,
                Escalation.breached_at >= now - RESEND_WINDOW,
            )
        ).all()
        keys = {e.id: _notice_keys(e) for e in recent}
        sent = set(
            session.scalars(
                select(OutboundEmail.dedupe_key).where(
                    OutboundEmail.dedupe_key.in_([k for ks in keys.values() for k in ks]),
                    OutboundEmail.status == OutboundStatus.SENT,
                )
            )
        )
    for escalation_id, notice_keys in keys.items():
        if not set(notice_keys) <= sent:
            _notify(rt, escalation_id)
    if breached:
        log.warning("SLA check: %d escalation(s) breached", len(breached))
    return len(breached)


def enqueue_drift_checks(rt: runtime.Runtime) -> None:
    """Queue this hour's missed-events check and this day's drift check (once each, whoever
    asks)."""
    automation = rt.queue(queues.AUTOMATION)
    hour = int(time.time() // MISSED_EVENTS_CHECK_SECONDS)
    queues.enqueue_once(automation, check_missed_events, job_id=f"missed-events-{hour}")
    day = int(time.time() // DRIFT_CHECK_SECONDS)
    queues.enqueue_once(automation, check_drift, job_id=f"drift-check-{day}")


def check_missed_events() -> int:
    """Events Stripe made in the last hours that never reached our endpoint are recorded and
    handled now, and are a Stripe sync error (deliveries are failing). Returns how many."""
    rt = runtime.current()
    if not rt.settings.stripe_webhook_secrets:
        # No endpoint is set up to receive them (`billing-desk reconcile` keeps the mirror).
        log.info("missed-events check: STRIPE_WEBHOOK_SECRET is not set; nothing to compare")
        return 0
    until = int(time.time()) - DELIVERY_GRACE_SECONDS
    missed = recover_missed_events(rt, until - MISSED_EVENTS_LOOKBACK_SECONDS, until)
    if not missed:
        return 0
    examples = ", ".join(missed[:DRIFT_EXAMPLES])
    raise_sync_error(
        rt,
        summary=f"{len(missed)} Stripe events never reached the webhook endpoint",
        details=(
            f"Stripe made {len(missed)} events in the last "
            f"{MISSED_EVENTS_LOOKBACK_SECONDS // 3600} hours that our endpoint never recorded "
            f"({examples}{' and more' if len(missed) > DRIFT_EXAMPLES else ''}); they are "
            "handled now. Check the endpoint's deliveries in the Stripe Dashboard and "
            "STRIPE_WEBHOOK_SECRET."
        ),
    )
    log.warning("missed-events check: %d events recovered from Stripe's list", len(missed))
    return len(missed)


def check_drift() -> int:
    """The periodic drift check: reconcile, and escalate what it had to repair as a Stripe sync
    error (once per incident); a clean check ends the incident. Returns the drift found."""
    rt = runtime.current()
    with session_scope(rt.session_factory) as session:
        filled = session.scalar(select(StripeCustomer.id).limit(1)) is not None
    if not filled:
        # Nothing to compare with yet: `billing-desk reconcile` (or the webhooks) fill it.
        log.info("drift check: the Stripe mirror is empty; run billing-desk reconcile")
        return 0
    summary = reconcile(rt)
    if not summary.drift:
        resolve_sync_errors(rt)
        log.info("drift check: the mirror matches Stripe (%d objects)", summary.objects)
        return 0
    examples = ", ".join(summary.drift[:DRIFT_EXAMPLES])
    more = len(summary.drift) - DRIFT_EXAMPLES
    raise_sync_error(
        rt,
        summary=f"the mirror drifted from Stripe ({len(summary.drift)} objects)",
        details=(
            f"The drift check found {len(summary.drift)} objects the webhooks had not brought "
            f"into the mirror: {examples}{f' and {more} more' if more > 0 else ''}. Reconcile "
            f"repaired them ({'; '.join(summary.lines())}). Look for webhook deliveries failing "
            "in the Stripe Dashboard and for failed events in stripe_events."
        ),
    )
    log.warning("drift check: %d objects had drifted; repaired", len(summary.drift))
    return len(summary.drift)


def _mark_breached(rt: runtime.Runtime, escalation_id: int) -> bool:
    """Mark one breach, once, and say so on the ticket; False if another round did."""
    now = utcnow()
    with session_scope(rt.session_factory) as session:
        claimed = session.execute(
            update(Escalation)
            .where(
                Escalation.id == escalation_id,
                Escalation.status == EscalationStatus.OPEN,
                Escalation.breached_at.is_(None),
            )
            .values(breached_at=now)
        ).rowcount
        if not claimed:
            return False
        escalation = session.get(Escalation, escalation_id)
        assert escalation is not None
        target = EscalationTarget(escalation.target)
        also = "" if target is REESCALATE_TO else f" and {REESCALATE_TO.label}"
        if escalation.ticket_id is not None:
            rt.helpdesks.for_ticket(session, escalation.ticket_id).add_internal_note(
                escalation.ticket_id,
                f"SLA breached: {target.label} had until {escalation.due_at:%d %b %H:%M} UTC "
                f"and nobody picked the ticket up. Re-escalated: {target.label}{also} "
                "notified.",
                author="billing-desk",
            )
        audit.record(
            session,
            actor="billing-desk",
            event="escalation.breached",
            ticket_id=escalation.ticket_id,
            escalation=escalation.id,
            target=str(target),
        )
    return True


def _teams_told(escalation: Escalation) -> list[EscalationTarget]:
    """Who hears of a breach: the team that missed it, and the Support Lead."""
    return list(dict.fromkeys([EscalationTarget(escalation.target), REESCALATE_TO]))


def _notice_keys(escalation: Escalation) -> list[str]:
    """The breach notices' dedupe keys (as jobs.effects.send_team_email records them)."""
    return [
        team_email_key(BREACH_TEMPLATE, escalation.id, team) for team in _teams_told(escalation)
    ]


def _notify(rt: runtime.Runtime, escalation_id: int) -> None:
    with session_scope(rt.session_factory) as session:
        escalation = session.get(Escalation, escalation_id)
        assert escalation is not None
        session.expunge(escalation)
    target = EscalationTarget(escalation.target)
    subject = f"SLA breached: ticket #{escalation.ticket_id} ({target.label})"
    for team in _teams_told(escalation):
        try:
            send_team_email(rt, escalation, template=BREACH_TEMPLATE, subject=subject, team=team)
        except BillingDeskError as exc:
            # Tried again next minute: the notice is recorded and sent once.
            log.warning("SLA breach notice for escalation %s not sent: %s", escalation_id, exc)
