"""process_inbound_email: a stored email becomes a triaged ticket, and its playbook starts.

Each step can run again after a crash: the ticket message is keyed by the email, the refund
action by the charge, and the email is marked processed last.
"""

from __future__ import annotations

import email.utils
import logging
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core import actions, audit
from core.db import session_scope
from core.db.models import InboundEmail, Ticket, TicketMessage, utcnow
from core.domain import Category, MessageKind
from core.errors import BillingDeskError
from core.helpdesks import make_helpdesk
from core.playbooks import Plan, Step, plan_ticket
from jobs import queues, runtime
from jobs.refunds import issue_refund
from mail.classifier import Classification, classify
from mail.conversations import find_ticket_for
from mail.loop_guard import automated_reason
from mail.parsing import ParsedEmail, parse_email

log = logging.getLogger(__name__)
ACTOR = "mail-agent"
EARLIER_REFUNDS_DAYS = 30


def enqueue_inbound(rt: runtime.Runtime, email_id: int) -> None:
    """Queue a stored email for processing (once: the job ID is the email's)."""
    queues.enqueue_once(
        rt.queue(queues.MAIL), process_inbound_email, email_id, job_id=f"inbound-{email_id}"
    )


def process_inbound_email(email_id: int) -> str:
    """Thread, classify and triage one stored email; start the playbook for new tickets."""
    rt = runtime.current()
    with session_scope(rt.session_factory) as session:
        stored = session.get(InboundEmail, email_id)
        if stored is None:
            log.error("inbound email %s does not exist", email_id)
            return "missing"
        if stored.status == "processed":
            # A run that died after its commit may not have queued its refund yet.
            _enqueue_refunds(rt, stored.ticket_id)
            return "already processed"
        parsed = parse_email(stored.raw)
        automated = automated_reason(parsed, email.utils.parseaddr(rt.settings.mail_from)[1])
        ticket_id = _thread(session, "local", stored, parsed, automated)
        is_new = _opened_by(session, ticket_id, email_id)

    if automated or not is_new:
        why = f"automated mail ({automated})" if automated else "a reply on an existing ticket"
        _finish(rt.session_factory, email_id, ticket_id, note=f"No automation: {why}.")
        return "threaded"

    classification = classify(parsed.subject, parsed.text)
    plan = _plan(rt, parsed, classification)
    with session_scope(rt.session_factory) as session:
        # Tickets opened from email live in the built-in helpdesk.
        helpdesk = make_helpdesk("local", session)
        helpdesk.set_triage(
            ticket_id,
            category=classification.category,
            confidence=classification.confidence,
            stripe_customer_id=plan.customer.id if plan.customer else None,
        )
        ticket = session.get(Ticket, ticket_id)
        if ticket is not None and plan.customer is not None:
            # Found by the sender's address only: the sidebar shows it as not verified.
            ticket.customer_match = "email"
        _start_plan(session, ticket_id, plan)
        note = _triage_note(classification, plan) + _earlier_refunds(session, ticket_id, plan)
        helpdesk.add_internal_note(ticket_id, note, author=ACTOR)
        _mark_processed(session, email_id)
    _enqueue_refunds(rt, ticket_id)
    return str(plan.step)


def _enqueue_refunds(rt: runtime.Runtime, ticket_id: int | None) -> None:
    """Queue the ticket's requested refunds; a refund requested by another ticket stays there."""
    if ticket_id is None:
        return
    with session_scope(rt.session_factory) as session:
        action_ids = actions.queued_action_ids(session, ticket_id)
    for action_id in action_ids:
        queues.enqueue_once(
            rt.queue(queues.ACTIONS), issue_refund, action_id, job_id=f"refund-{action_id}"
        )


def _thread(
    session: Session,
    helpdesk_name: str,
    stored: InboundEmail,
    parsed: ParsedEmail,
    automated: str | None,
) -> int:
    """The email's ticket, found or opened, with the email added to it once."""
    existing = session.scalar(
        select(TicketMessage.ticket_id).where(TicketMessage.inbound_email_id == stored.id)
    )
    if existing is not None:
        return existing
    helpdesk = make_helpdesk(helpdesk_name, session)
    ticket_id = find_ticket_for(session, parsed)
    if ticket_id is None:
        ticket_id = helpdesk.open_ticket(
            subject=parsed.subject or "(no subject)",
            requester_email=parsed.from_address or "unknown",
            requester_name=parsed.from_name,
        )
    helpdesk.add_message(
        ticket_id,
        kind=MessageKind.INBOUND,
        author=parsed.from_address or "unknown",
        body=parsed.text or "(empty message)",
        message_id=parsed.message_id,
        inbound_email_id=stored.id,
        reopen=automated is None,
    )
    stored.ticket_id = ticket_id
    return ticket_id


def _opened_by(session: Session, ticket_id: int, email_id: int) -> bool:
    """Whether this email is the ticket's first message, i.e. it opened the ticket."""
    first = session.scalar(
        select(TicketMessage.inbound_email_id)
        .where(TicketMessage.ticket_id == ticket_id)
        .order_by(TicketMessage.id)
        .limit(1)
    )
    return first == email_id


def _plan(rt: runtime.Runtime, parsed: ParsedEmail, classification: Classification) -> Plan:
    """Look up the sender in Stripe (and their charges, for a duplicate) and ask the playbook."""
    # Below the confidence threshold a person decides; the customer is still looked up.
    category = classification.category if classification.is_confident() else Category.OTHER
    try:
        customers = rt.gateway.find_customers_by_email(parsed.from_address)
        wants_charges = category is Category.DUPLICATE_CHARGE and len(customers) == 1
        charges = rt.gateway.list_charges(customers[0].id) if wants_charges else []
    except BillingDeskError as exc:
        if exc.retryable:
            raise
        log.warning("Stripe lookup for %s failed: %s", parsed.from_address, exc)
        customers, charges = [], []
    return plan_ticket(category, customers, charges, rt.policy)


def _start_plan(session: Session, ticket_id: int, plan: Plan) -> None:
    """Record the refund the plan calls for; its key makes one refund per duplicate charge."""
    if plan.step is not Step.AUTO_REFUND:
        return
    assert plan.charge is not None and plan.amount is not None and plan.refund_reason
    actions.request_refund(
        session,
        idempotency_key=f"duplicate-refund:{plan.charge.id}",
        ticket_id=ticket_id,
        charge=plan.charge,
        amount=plan.amount,
        reason=plan.refund_reason,
        requested_by=ACTOR,
        policy_reason=plan.reason,
    )


def _earlier_refunds(session: Session, ticket_id: int, plan: Plan) -> str:
    """A pointer to this customer's refunds of the last days on other tickets, if any."""
    if plan.customer is None:
        return ""
    since = utcnow() - timedelta(days=EARLIER_REFUNDS_DAYS)
    earlier = actions.recent_refunds(session, plan.customer.id, since, excluding_ticket=ticket_id)
    return "".join(
        f" Already on ticket #{a.ticket_id}: refund of {actions.action_amount(a)} on "
        f"{a.stripe_charge_id} ({a.status}, {a.stripe_object_id or 'not yet issued'})."
        for a in earlier
    )


def _triage_note(classification: Classification, plan: Plan) -> str:
    signals = "; ".join(classification.reasons)
    customer = plan.customer.id if plan.customer else "no Stripe customer matched"
    return (
        f"Triage: {classification.category} (confidence {classification.confidence:.2f}; "
        f"{signals}). Customer: {customer}. Next: {plan.step} — {plan.reason}"
    )


def _finish(factory: sessionmaker[Session], email_id: int, ticket_id: int, note: str) -> None:
    with session_scope(factory) as session:
        _mark_processed(session, email_id)
        audit.record(session, actor=ACTOR, event="email.threaded", ticket_id=ticket_id, note=note)


def _mark_processed(session: Session, email_id: int) -> None:
    stored = session.get(InboundEmail, email_id)
    assert stored is not None
    stored.status = "processed"
    stored.processed_at = utcnow()
