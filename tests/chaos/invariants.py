"""What must hold once the faults stop and the system has drained: nothing lost, nothing twice.

Each check returns anomalies as sentences; the run passes only with none.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from email.message import EmailMessage

import stripe
from redis import Redis
from rq import Queue
from rq.registry import StartedJobRegistry
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.db import session_scope
from core.db.models import (
    Action,
    AuditEvent,
    InboundEmail,
    OutboundEmail,
    Plan,
    StripeEvent,
    Ticket,
    TicketMessage,
)
from core.domain import ActionStatus, InboundStatus, OutboundStatus, PlanStatus
from jobs import queues
from tests.chaos.load import REFUND_TEMPLATES, Customer

# Where an action or a plan may rest: done, or waiting for a person on purpose.
RESTING_ACTIONS = {
    ActionStatus.SUCCEEDED,
    ActionStatus.SUGGESTED,
    ActionStatus.PENDING_APPROVAL,
    ActionStatus.SKIPPED,
    ActionStatus.REJECTED,
}
RESTING_PLANS = {PlanStatus.DONE, PlanStatus.SUGGESTED, PlanStatus.WAITING}


def backlog(factory: sessionmaker[Session], redis: Redis, appended: int, events: int) -> list[str]:
    """What is still to be done (empty once drained): unstored or unprocessed mail, queued
    or running steps, unprocessed events, jobs queued or started."""
    left: list[str] = []
    with session_scope(factory) as session:
        stored = session.scalar(select(func.count()).select_from(InboundEmail)) or 0
        if stored < appended:
            left.append(f"{appended - stored} email(s) not stored")
        waiting = [s for s in InboundStatus if s.waiting]
        unprocessed = session.scalar(select(func.count()).where(InboundEmail.status.in_(waiting)))
        if unprocessed:
            left.append(f"{unprocessed} email(s) not processed")
        busy = session.scalar(
            select(func.count()).where(
                Action.status.in_((ActionStatus.QUEUED, ActionStatus.PLANNED)),
                Action.plan_id.in_(select(Plan.id).where(Plan.status == PlanStatus.RUNNING)),
            )
        )
        if busy:
            left.append(f"{busy} plan step(s) queued or running")
        recorded = session.scalar(select(func.count()).select_from(StripeEvent)) or 0
        if recorded < events:
            left.append(f"{events - recorded} Stripe event(s) not recorded")
        pending_events = session.scalar(
            select(func.count()).where(StripeEvent.processed_at.is_(None))
        )
        if pending_events:
            left.append(f"{pending_events} Stripe event(s) not processed")
    for name in queues.ALL_QUEUES:
        queued = Queue(name, connection=redis).count
        started = StartedJobRegistry(name, connection=redis).count
        if queued or started:
            left.append(f"queue {name}: {queued} queued, {started} started")
    return left


def check_mail(factory: sessionmaker[Session], customers: Iterable[Customer]) -> list[str]:
    """Every appended email is stored once, processed, and on a ticket once."""
    anomalies: list[str] = []
    with session_scope(factory) as session:
        stored = Counter(session.scalars(select(InboundEmail.message_id)))
        on_tickets = Counter(
            session.scalars(
                select(TicketMessage.message_id).where(TicketMessage.inbound_email_id.is_not(None))
            )
        )
        statuses = dict(
            session.execute(select(InboundEmail.message_id, InboundEmail.status)).tuples().all()
        )
        for customer in customers:
            mid = customer.message_id
            if mid is None:
                continue
            if stored[mid] != 1:
                anomalies.append(f"{customer.label}: email {mid} stored {stored[mid]} times")
            if on_tickets[mid] != 1:
                anomalies.append(
                    f"{customer.label}: email {mid} on tickets {on_tickets[mid]} times"
                )
            if stored[mid] and statuses.get(mid) != InboundStatus.PROCESSED:
                anomalies.append(f"{customer.label}: email {mid} left {statuses.get(mid)}")
    return anomalies


def check_money(client: stripe.StripeClient, customers: Iterable[Customer]) -> list[str]:
    """Every intended refund exists in Stripe once; nothing else is refunded; no charge twice."""
    anomalies: list[str] = []
    for customer in customers:
        for charge in customer.charges:
            refunds = client.v1.refunds.list(params={"charge": charge, "limit": 100}).data
            wanted = 1 if charge == customer.refund_charge else 0
            if len(refunds) != wanted:
                anomalies.append(
                    f"{customer.label}: charge {charge} refunded {len(refunds)} times"
                    f" (expected {wanted}): {[r.id for r in refunds]}"
                )
    return anomalies


def check_outbox(
    factory: sessionmaker[Session], sent: list[EmailMessage], customers: Iterable[Customer]
) -> list[str]:
    """Every email we recorded as sent reached the SMTP server, none went out twice (a resend
    after a lost answer carries the same Message-ID, which a mail program shows once), and
    each expected confirmation went out once, naming the refund."""
    anomalies: list[str] = []
    by_id: dict[str, list[EmailMessage]] = defaultdict(list)
    for message in sent:
        by_id[str(message["Message-ID"])].append(message)
    with session_scope(factory) as session:
        rows = session.execute(
            select(OutboundEmail.message_id, OutboundEmail.status, OutboundEmail.to_address)
        ).all()
    recorded = {mid for mid, _, _ in rows}
    for mid, status, to in rows:
        if status == OutboundStatus.SENT and mid not in by_id:
            anomalies.append(f"email {mid} to {to} recorded as sent but never reached SMTP")
        if status == OutboundStatus.PENDING:
            anomalies.append(f"email {mid} to {to} left pending")
    for mid in by_id:
        if mid not in recorded:
            anomalies.append(f"email {mid} reached SMTP with no record of it")
    for customer in customers:
        to_them = {
            mid: messages[0]
            for mid, messages in by_id.items()
            if customer.email in str(messages[0]["To"])
        }
        templates = Counter(str(m["X-Billing-Desk"]) for m in to_them.values())
        for template, times in templates.items():
            if times > 1:
                anomalies.append(f"{customer.label}: {template} sent {times} times")
        confirmations = [
            m for m in to_them.values() if str(m["X-Billing-Desk"]) in REFUND_TEMPLATES
        ]
        expected = 1 if customer.confirmation else 0
        if len(confirmations) != expected:
            anomalies.append(
                f"{customer.label}: {len(confirmations)} refund confirmation(s), expected"
                f" {expected}"
            )
        elif confirmations and customer.confirmation != str(confirmations[0]["X-Billing-Desk"]):
            anomalies.append(
                f"{customer.label}: confirmation {confirmations[0]['X-Billing-Desk']},"
                f" expected {customer.confirmation}"
            )
    return anomalies


def check_refund_ids_in_confirmations(
    client: stripe.StripeClient, sent: list[EmailMessage], customers: Iterable[Customer]
) -> list[str]:
    """A confirmation names the refund Stripe holds for the customer's charge."""
    anomalies: list[str] = []
    for customer in customers:
        if customer.refund_charge is None:
            continue
        refunds = client.v1.refunds.list(params={"charge": customer.refund_charge}).data
        if len(refunds) != 1:
            continue  # check_money says so
        for message in sent:
            if customer.email not in str(message["To"]):
                continue
            if str(message["X-Billing-Desk"]) not in REFUND_TEMPLATES:
                continue
            text = message.get_body(("plain",))
            if text is None or refunds[0].id not in text.get_content():
                anomalies.append(f"{customer.label}: confirmation does not name {refunds[0].id}")
    return anomalies


def check_actions(factory: sessionmaker[Session]) -> list[str]:
    """No action or plan stuck or failed; every finished action audited, once."""
    anomalies: list[str] = []
    with session_scope(factory) as session:
        audits = Counter(
            session.execute(
                select(AuditEvent.action_id, AuditEvent.event).where(
                    AuditEvent.action_id.is_not(None)
                )
            ).all()
        )
        for action in session.scalars(select(Action).order_by(Action.id)):
            where = f"action {action.id} ({action.kind}, ticket {action.ticket_id})"
            if action.status == ActionStatus.PLANNED:
                plan = session.get(Plan, action.plan_id) if action.plan_id else None
                if plan is None or plan.status not in RESTING_PLANS:
                    anomalies.append(f"{where} left planned in a {plan and plan.status} plan")
                continue
            if action.status not in RESTING_ACTIONS:
                anomalies.append(f"{where} left {action.status}: {action.error or ''}".rstrip())
            if action.status in (ActionStatus.SUCCEEDED, ActionStatus.FAILED):
                times = audits[(action.id, f"{action.kind}.{action.status}")]
                if times != 1:
                    anomalies.append(f"{where}: {times} '{action.status}' audit events")
        for plan in session.scalars(select(Plan)):
            if plan.status not in RESTING_PLANS:
                anomalies.append(f"plan {plan.id} (ticket {plan.ticket_id}) left {plan.status}")
    return anomalies


def check_events(factory: sessionmaker[Session], event_ids: set[str]) -> list[str]:
    """Every delivered Stripe event is recorded once and processed."""
    anomalies: list[str] = []
    with session_scope(factory) as session:
        rows = dict(session.execute(select(StripeEvent.id, StripeEvent.processed_at)).all())
    for event_id in sorted(event_ids):
        if event_id not in rows:
            anomalies.append(f"Stripe event {event_id} never recorded")
        elif rows[event_id] is None:
            anomalies.append(f"Stripe event {event_id} never processed")
    return anomalies


def check_tickets(factory: sessionmaker[Session], customers: Iterable[Customer]) -> list[str]:
    """The agent's tickets were closed by their confirm-and-close."""
    anomalies: list[str] = []
    with session_scope(factory) as session:
        for customer in customers:
            if customer.ticket_id is None:
                continue
            ticket = session.get(Ticket, customer.ticket_id)
            if ticket is None or ticket.status != "closed":
                anomalies.append(
                    f"{customer.label}: ticket {customer.ticket_id} is"
                    f" {ticket.status if ticket else 'gone'}, not closed"
                )
    return anomalies


def ticket_stories(factory: sessionmaker[Session], customers: Iterable[Customer]) -> str:
    """What became of each customer's ticket, for reading beside the anomalies: category,
    status, team, why automation stopped, each step and each note."""
    lines: list[str] = []
    with session_scope(factory) as session:
        for customer in customers:
            tickets = session.scalars(
                select(Ticket).where(Ticket.requester_email == customer.email).order_by(Ticket.id)
            ).all()
            lines.append(f"{customer.label} ({customer.email}, {customer.stripe_id}):")
            if not tickets:
                lines.append("  no ticket")
            for ticket in tickets:
                lines.append(
                    f"  ticket {ticket.id}: {ticket.category} ({ticket.category_confidence}),"
                    f" {ticket.status}, team {ticket.team}, {ticket.resolution or ''};"
                    f" automation blocked: {ticket.automation_blocked}"
                )
                for action in session.scalars(
                    select(Action).where(Action.ticket_id == ticket.id).order_by(Action.id)
                ):
                    lines.append(
                        f"    step {action.id} {action.kind} {action.status}"
                        f" {action.stripe_object_id or ''} {action.error or ''}".rstrip()
                    )
                for message in ticket.messages:
                    if message.kind == "note":
                        lines.append(f"    note: {' '.join(message.body.split())[:300]}")
    return "\n".join(lines) + "\n"
