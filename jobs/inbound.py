"""process_inbound_email: a stored email becomes a triaged ticket, and its playbook starts.

The line of steps: parse (card numbers removed, here and in the stored copy), guard against
loops, thread onto a ticket, and for a new ticket: extract entities, classify the sender's own
words, match the Stripe customer and cross-check it with the email, then ask the playbook.

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
from core.domain import Category, HelpdeskName, InboundStatus, MessageKind
from core.errors import BillingDeskError
from core.helpdesks import make_helpdesk
from core.playbooks import CHARGEBACK_FILED, CustomerMatch, Plan, Step, match_customer, plan_ticket
from jobs import queues, runtime
from jobs.refunds import issue_refund
from mail.classifier import Classification, classify
from mail.conversations import find_ticket_for
from mail.extract import Entities, extract
from mail.loop_guard import automated_reason
from mail.parsing import ParsedEmail, parse_email
from mail.redact import redact_raw_message

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
        if stored.status == InboundStatus.PROCESSED:
            # A run that died after its commit may not have queued its refund yet.
            _enqueue_refunds(rt, stored.ticket_id)
            return "already processed"
        if not InboundStatus(stored.status).waiting:
            # Quarantined mail waits for a person; nothing of it can be read here.
            log.warning("inbound email %s is %s: not processed", email_id, stored.status)
            return stored.status
        parsed = parse_email(stored.raw)
        if parsed.card_data_found:
            # PCI: no card number is kept, in the stored copy any more than on the ticket.
            stored.raw = redact_raw_message(stored.raw, parsed.text)
        oversized = stored.status == InboundStatus.OVERSIZED
        automated = automated_reason(parsed, email.utils.parseaddr(rt.settings.mail_from)[1])
        body = _oversized_body(stored, parsed) if oversized else parsed.text
        ticket_id = _thread(session, HelpdeskName.LOCAL, stored, parsed, automated, body)
        is_new = _opened_by(session, ticket_id, email_id)
        email_day = (parsed.date or stored.received_at).date()

    if oversized or automated or not is_new:
        if oversized:
            why = "the email was too large to download, so nothing of its text can be read"
        elif automated:
            why = f"automated mail ({automated})"
        else:
            why = "a reply on an existing ticket"
        _finish(rt.session_factory, email_id, ticket_id, note=f"No automation: {why}.")
        return "oversized" if oversized else "threaded"

    entities = extract(parsed.text, today=email_day, sender_name=parsed.from_name)
    # The sender's own words: a quoted reply or a signature says nothing about this problem.
    classification = classify(parsed.subject, parsed.for_classification)
    match, plan = _plan(rt, parsed, classification, entities)
    with session_scope(rt.session_factory) as session:
        # Tickets opened from email live in the built-in helpdesk.
        helpdesk = make_helpdesk(HelpdeskName.LOCAL, session)
        helpdesk.set_triage(
            ticket_id,
            category=classification.category,
            confidence=classification.confidence,
            stripe_customer_id=plan.customer.id if plan.customer else None,
        )
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        if plan.customer is not None:
            # Found by the sender's address: the sidebar shows it as not verified.
            ticket.customer_match = "email"
        _record_entities(ticket, entities, match)
        _start_plan(session, ticket_id, plan)
        note = _triage_note(classification, match, entities, plan) + _earlier_refunds(
            session, ticket_id, plan
        )
        helpdesk.add_internal_note(ticket_id, note, author=ACTOR)
        _mark_processed(session, email_id)
    _enqueue_refunds(rt, ticket_id)
    return str(plan.step)


def _oversized_body(stored: InboundEmail, parsed: ParsedEmail) -> str:
    """What a ticket says of an email the poller did not download: who, what, and why not."""
    sender = parsed.from_address or "an unknown sender"
    if parsed.from_name:
        sender = f"{parsed.from_name} <{sender}>"
    why = stored.error or "It is over the mailbox size limit."
    return (
        f"This email was too large to download, so only its headers were kept. {why}\n\n"
        f"From: {sender}\nSubject: {parsed.subject or '(no subject)'}\n\n"
        "Ask the customer to send it again without the large attachments."
    )


def _record_entities(ticket: Ticket, entities: Entities, match: CustomerMatch) -> None:
    """Keep what the email said on the ticket, and why automation stood back, if it did."""
    ticket.entities = entities.to_dict()
    if entities.tenant_id:
        ticket.tenant_id = entities.tenant_id[:64]
    if entities.organization:
        ticket.organization = entities.organization[:200]
    ticket.automation_blocked = CHARGEBACK_FILED if entities.chargeback_filed else match.blocked


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
    body: str,
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
        body=body or "(empty message)",
        message_id=parsed.message_id,
        inbound_email_id=stored.id,
        reopen=automated is None,
    )
    if parsed.attachments:
        message = session.scalars(
            select(TicketMessage).where(TicketMessage.inbound_email_id == stored.id)
        ).one()
        # Listed so the agent knows they exist; their content is never stored.
        message.attachments = [attachment.to_dict() for attachment in parsed.attachments]
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


def _plan(
    rt: runtime.Runtime, parsed: ParsedEmail, classification: Classification, entities: Entities
) -> tuple[CustomerMatch, Plan]:
    """Find the sender's Stripe customer, cross-check it with what the email says, fetch the
    charges a duplicate needs, and ask the playbook."""
    # Below the confidence threshold a person decides; the customer is still looked up.
    confident = classification.is_confident(rt.policy.min_classifier_confidence)
    category = classification.category if confident else Category.OTHER
    sender = parsed.from_address
    try:
        candidates = rt.gateway.find_customers_by_email(sender) if "@" in sender else []
        match = match_customer(
            sender,
            candidates,
            tenant_ids=entities.tenant_ids,
            organization=entities.organization,
        )
        # Charges are only needed where the playbook could refund: one customer, nothing amiss.
        refundable = category is Category.DUPLICATE_CHARGE and not (
            match.blocked or entities.chargeback_filed
        )
        customer = match.customer
        charges = rt.gateway.list_charges(customer.id) if customer and refundable else []
    except BillingDeskError as exc:
        if exc.retryable:
            raise
        log.warning("Stripe lookup for %s failed: %s", sender, exc)
        match = CustomerMatch(None, (), "the Stripe lookup failed (see the worker log)")
        charges = []
    customers = [match.customer] if match.customer else list(match.candidates)
    plan = plan_ticket(
        category,
        customers,
        charges,
        rt.policy,
        chargeback_filed=entities.chargeback_filed,
        blocked=match.blocked,
    )
    return match, plan


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


def _entities_summary(entities: Entities) -> str:
    """What the email said, in a few words for the note; empty if nothing was read."""
    parts = []
    if entities.tenant_ids:
        parts.append("tenant " + ", ".join(entities.tenant_ids))
    if entities.organization:
        parts.append(f"organisation {entities.organization}")
    if entities.amounts:
        parts.append("amounts " + ", ".join(m.format() for m in entities.amounts[:5]))
    if entities.dates:
        parts.append("dates " + ", ".join(d.isoformat() for d in entities.dates[:5]))
    if entities.card_last4:
        parts.append("card ending " + ", ".join(entities.card_last4))
    if entities.stripe_ids:
        parts.append("Stripe IDs " + ", ".join(entities.stripe_ids[:5]))
    if entities.chargeback_filed:
        parts.append("says a chargeback was filed")
    return f" Read in the email: {'; '.join(parts)}." if parts else ""


def _triage_note(
    classification: Classification, match: CustomerMatch, entities: Entities, plan: Plan
) -> str:
    signals = "; ".join(classification.reasons)
    return (
        f"Triage: {classification.category} (confidence {classification.confidence:.2f}; "
        f"{signals}). Customer: {match.how}.{_entities_summary(entities)} "
        f"Next: {plan.step} — {plan.reason}"
    )


def _finish(factory: sessionmaker[Session], email_id: int, ticket_id: int, note: str) -> None:
    with session_scope(factory) as session:
        _mark_processed(session, email_id)
        audit.record(session, actor=ACTOR, event="email.threaded", ticket_id=ticket_id, note=note)


def _mark_processed(session: Session, email_id: int) -> None:
    stored = session.get(InboundEmail, email_id)
    assert stored is not None
    # An oversized email keeps its error sentence, which says so.
    stored.status = InboundStatus.PROCESSED
    stored.processed_at = utcnow()
