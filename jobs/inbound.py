"""process_inbound_email: a stored email becomes a triaged ticket, and its playbook starts.

The line of steps: parse (card numbers removed, here and in the stored copy), guard against
loops, thread onto a ticket, and for a new ticket: extract entities, classify the sender's own
words, match the Stripe customer and cross-check it with the email, then ask the playbook.

The playbook's decision is stored as a plan (one per email) whose steps the runner in
jobs.plans advances. Each step here can run again after a crash: the ticket message is keyed by
the email, the plan by the email and its refund by the charge, and the email is marked processed
last.
"""

from __future__ import annotations

import email.utils
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, timedelta

from redis.exceptions import LockError
from redis.lock import Lock
from rq import get_current_job
from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit, log_context
from core.actions import MAIL_AGENT, describe, request_plan
from core.customers import Claims, CustomerMatch, match_sender, open_claims
from core.db import queries, session_scope
from core.db.models import InboundEmail, Plan, Ticket, TicketMessage, utcnow
from core.domain import (
    ActionKind,
    Category,
    Charge,
    HelpdeskName,
    InboundStatus,
    MatchKind,
    MessageKind,
    Subscription,
)
from core.errors import BillingDeskError, HelpdeskUnavailable, InvalidInput
from core.helpdesks.base import BILLING_DESK_TAG, category_tag
from core.playbooks import (
    CHARGEBACK_FILED,
    TicketFacts,
    Triage,
    dispute_acknowledgement,
    plan_ticket,
    triage_plan_keys,
)
from jobs import queues, runtime
from jobs.plans import queue_due_steps
from mail.authentication import SenderAuthentication, authenticate_sender
from mail.budget import Budget, OverBudget
from mail.classifier import Classification, classify
from mail.conversations import find_ticket_for
from mail.extract import Entities, extract
from mail.loop_guard import automated_reason
from mail.parsing import ParsedEmail, read_email

log = logging.getLogger(__name__)
ACTOR = MAIL_AGENT
EARLIER_REFUNDS_DAYS = 30
# Stored mail still waiting a while after it came is looked for in the queue, at most this many
# emails a sweep (the supervisor's, every minute).
RESUME_AFTER = queues.RESUME_AFTER
RESUME_BATCH = 500


def enqueue_inbound(rt: runtime.Runtime, email_id: int) -> bool:
    """Queue a stored email for processing (once: the job ID is the email's); True when this
    call queued it."""
    job_id = f"inbound-{email_id}"
    if queues.enqueue_once(rt.queue(queues.MAIL), process_inbound_email, email_id, job_id=job_id):
        log.info("email %s queued for processing as job %s", email_id, job_id)
        return True
    return False


def resume_inbound(rt: runtime.Runtime) -> int:
    """Queue again the stored emails still waiting a while after they came whose job the queue
    lost (Redis lost its data, a job lost on its way to a worker): the poller hands each email
    on once, and will not again. Returns how many were queued."""
    before = utcnow() - RESUME_AFTER
    waiting_statuses = [status for status in InboundStatus if status.waiting]
    with session_scope(rt.session_factory) as session:
        waiting = session.scalars(
            select(InboundEmail.id)
            .where(InboundEmail.status.in_(waiting_statuses), InboundEmail.received_at < before)
            .order_by(InboundEmail.id)
            .limit(RESUME_BATCH)
        ).all()
    # A job still queued, running or waiting for its retry is left alone (one job per email).
    return sum(enqueue_inbound(rt, email_id) for email_id in waiting)


def process_inbound_email(email_id: int) -> str:
    """Thread, classify and triage one stored email; start the playbook for new tickets."""
    rt = runtime.current()
    log_context.add(email_id=email_id)
    with session_scope(rt.session_factory) as session:
        stored = session.get(InboundEmail, email_id)
        if stored is None:
            log.error("inbound email %s does not exist", email_id)
            return "missing"
        if stored.status == InboundStatus.PROCESSED:
            # A run that died after its commit may not have queued its plan's first step yet.
            queue_due_steps(rt, stored.ticket_id)
            return "already processed"
        if not InboundStatus(stored.status).waiting:
            # Quarantined mail waits for a person; nothing of it can be read here.
            log.warning("inbound email %s is %s: not processed", email_id, stored.status)
            return stored.status
        raw = stored.raw  # as received: a redacted copy no longer carries a valid signature
        budget = Budget(rt.settings.mail_time_budget_seconds)
        reading = read_email(raw)  # parsed once: the redacted copy is made from this tree
        parsed = reading.parsed
        if parsed.card_data_found:
            # PCI: no card number is kept, in the stored copy any more than on the ticket.
            stored.raw = reading.redacted_raw()
        oversized = stored.status == InboundStatus.OVERSIZED
        our_address = email.utils.parseaddr(rt.settings.mail_from)[1]
        automated = automated_reason(parsed, our_address)
        body = _oversized_body(stored, parsed) if oversized else parsed.text
        ticket_id, onto_dispute = _thread(session, rt, stored, parsed, automated, body, our_address)
        log_context.add(ticket_id=ticket_id)
        is_new = _opened_by(session, ticket_id, email_id)
        email_day = (parsed.date or stored.received_at).date()
        if onto_dispute and not automated:
            _acknowledge_dispute(session, rt, ticket_id)

    if oversized or automated or not is_new:
        if oversized:
            why = "the email was too large to download, so nothing of its text can be read"
        elif automated:
            why = f"automated mail ({automated})"
        else:
            why = "a reply on an existing ticket"
        _finish(rt, email_id, ticket_id, note=f"No automation: {why}.")
        if onto_dispute:
            queue_due_steps(rt, ticket_id)  # its acknowledgement
        return "oversized" if oversized else "threaded"

    try:
        budget.check("parsing the email")
    except OverBudget as exc:
        _over_budget(rt, email_id, ticket_id, exc)
        return "over budget"
    notes = ""
    if parsed.headers_cut:
        notes += (
            " Header fields too long to read whole were cut: "
            f"{', '.join(parsed.headers_cut[:5])} (the stored email keeps them)."
        )
    if parsed.repairs:
        notes += (
            " Reading the email took repairs (if its text looks wrong, the stored email "
            f"has the original): {'; '.join(parsed.repairs)}."
        )
    opening = Reading(
        subject=parsed.subject,
        text=parsed.text,
        own_words=parsed.for_classification,
        sender=parsed.from_address,
        sender_name=parsed.from_name,
        day=email_day,
        notes=notes,
    )

    def authenticate() -> SenderAuthentication:
        if parsed.from_field == "From":
            return authenticate_sender(raw, parsed.from_address, rt.settings.mail_authserv_ids)
        return SenderAuthentication(
            False,
            f"The email's From names no address; {parsed.from_address} comes from its "
            f"{parsed.from_field}, which nothing authenticates.",
        )

    def mark_done(session: Session) -> None:
        _mark_processed(session, email_id)

    try:
        return triage(rt, ticket_id, f"email-{email_id}", opening, authenticate, mark_done, budget)
    except OverBudget as exc:
        _over_budget(rt, email_id, ticket_id, exc)
        return "over budget"


@dataclass(frozen=True)
class Reading:
    """What triage reads of the message that opened a ticket, wherever it came from."""

    subject: str
    text: str  # the whole readable text: what entities are read from
    own_words: str  # the sender's own new words: what the classifier reads
    sender: str
    sender_name: str | None
    day: date
    notes: str = ""  # how reading went, for the triage note


def triage(
    rt: runtime.Runtime,
    ticket_id: int,
    key: str,
    reading: Reading,
    authenticate: Callable[[], SenderAuthentication],
    mark_done: Callable[[Session], None],
    budget: Budget,
) -> str:
    """Classify a new ticket's first message, match its Stripe customer, store the playbook's
    plan, and note (and, in a hosted helpdesk, tag) the ticket; OverBudget when reading takes
    longer than the budget. The plan is stored once per ``key``; ``mark_done`` records, in the
    same transaction, that the message was handled.

    A hosted ticket can reach us twice at once (its webhook, and a BCC copy of its email):
    one triage per ticket runs at a time, and a ticket triaged already is left as it is."""
    with _one_triage_at_a_time(rt, ticket_id):
        with session_scope(rt.session_factory) as session:
            ticket = session.get(Ticket, ticket_id)
            if ticket is not None and ticket.category is not None:
                mark_done(session)
                audit.record(
                    session,
                    actor=ACTOR,
                    event="ticket.triaged_already",
                    ticket_id=ticket_id,
                    key=key,
                )
                return "triaged already"
        entities = extract(
            reading.text, today=reading.day, sender_name=reading.sender_name, budget=budget
        )
        # The sender's own words: a quoted reply or a signature says nothing about this problem.
        classification = classify(reading.subject, reading.own_words)
        budget.check("classifying the email")
        # Below the confidence threshold a person decides; the customer is still looked up.
        confident = classification.is_confident(rt.policy.min_classifier_confidence)
        category = classification.category if confident else Category.OTHER
        match, stripe_facts = _lookup(rt, reading.sender, category, entities)
        sender = authenticate()
        with session_scope(rt.session_factory) as session:
            facts = _facts(session, rt, key, category, match, stripe_facts, entities, sender)
            decision = plan_ticket(facts, rt.policy)
            helpdesk = rt.helpdesks.for_ticket(session, ticket_id)
            helpdesk.set_triage(
                ticket_id,
                category=classification.category,
                confidence=classification.confidence,
                stripe_customer_id=decision.customer.id if decision.customer else None,
            )
            ticket = session.get(Ticket, ticket_id)
            assert ticket is not None
            if decision.customer is not None:
                # Found by the sender's address: not verified, unless the sender is authenticated
                # (then the email comes from the customer's own address, proven).
                ticket.customer_match = (
                    MatchKind.AUTHENTICATED if sender.authenticated else MatchKind.EMAIL
                )
            _record_entities(ticket, entities, match)
            stored_plan = _store_plan(session, ticket_id, key, decision)
            note = (
                _triage_note(classification, match, entities, decision, stored_plan) + reading.notes
            )
            if ticket.helpdesk != HelpdeskName.LOCAL:
                # Agents find what we did by the tags, in the helpdesk's own views and triggers.
                helpdesk.add_tags(ticket_id, [BILLING_DESK_TAG, category_tag(category)])
            helpdesk.add_internal_note(
                ticket_id, note + _earlier_refunds(session, ticket_id, decision), author=ACTOR
            )
            mark_done(session)
        queue_due_steps(rt, ticket_id)
        return str(decision.next)


# Longer than one triage takes (the reading budget and a few Stripe calls).
TRIAGE_LOCK_SECONDS = 120


@contextmanager
def _one_triage_at_a_time(rt: runtime.Runtime, ticket_id: int) -> Iterator[None]:
    key = f"billing-desk:triage:{ticket_id}"
    lock = rt.redis.lock(key, timeout=TRIAGE_LOCK_SECONDS)
    job = get_current_job()
    token = f"job:{job.id}" if job is not None else None
    if not (token and _take_over(lock, key, token)) and not lock.acquire(
        blocking_timeout=TRIAGE_LOCK_SECONDS, token=token
    ):
        raise HelpdeskUnavailable(f"ticket {ticket_id} is being triaged by another job")
    try:
        yield
    finally:
        try:
            lock.release()
        except LockError:
            log.warning("the triage lock of ticket %s expired before triage ended", ticket_id)


def _take_over(lock: Lock, key: str, token: str) -> bool:
    """Take the triage lock over from this same job's earlier run, if that run holds it.

    A job runs again only once its last run is over: its worker was killed, or lost Redis,
    and the job was put back. Waiting for the lock that run left (up to its 120 s) would only
    hold the ticket, and a worker, for nothing.
    """
    if lock.redis.get(key) != token.encode():
        return False
    lock.local.token = token.encode()
    try:
        lock.reacquire()
    except LockError:  # it expired, and someone else took it, in between
        return False
    log.info("took the triage lock %s over from this job's earlier run", key)
    return True


def _over_budget(rt: runtime.Runtime, email_id: int, ticket_id: int, exc: OverBudget) -> None:
    note = (
        f"No automation: reading this email took too long ({exc}). It is kept whole "
        "(the raw message is stored) for a person to read."
    )
    _finish(rt, email_id, ticket_id, note=note, on_ticket=True)


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


def _thread(
    session: Session,
    rt: runtime.Runtime,
    stored: InboundEmail,
    parsed: ParsedEmail,
    automated: str | None,
    body: str,
    our_address: str,
) -> tuple[int, bool]:
    """The email's ticket, found or opened, with the email added to it once; and whether it
    joined the ticket of the sender's undecided dispute."""
    existing = session.scalar(
        select(TicketMessage.ticket_id).where(TicketMessage.inbound_email_id == stored.id)
    )
    if existing is not None:
        return existing, False
    threading = find_ticket_for(session, parsed, our_address)
    ticket_id = threading.ticket_id
    if ticket_id is None:
        ticket_id = _home_ticket(session, rt, stored, parsed, body)
    helpdesk = rt.helpdesks.for_ticket(session, ticket_id)
    mirrored = _mirrored_without_email(session, ticket_id) if helpdesk.sends_replies else None
    if mirrored is not None:
        # The helpdesk's webhook brought this message first: it is the same one, not another,
        # and nothing about it needs saying on the ticket.
        mirrored.inbound_email_id = stored.id
        mirrored.message_id = parsed.message_id or mirrored.message_id
        stored.ticket_id = ticket_id
        session.flush()
        return ticket_id, threading.dispute
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
    if threading.folded:
        then = (
            "no playbook acts on it: Finance answers the bank here"
            if threading.dispute
            else "no automation runs on it"
        )
        helpdesk.add_internal_note(
            ticket_id,
            f"{threading.folded}: this email joins this ticket instead of opening another "
            f"({then}).",
            author=ACTOR,
        )
    elif threading.named is not None:
        # Never onto another person's conversation: a Message-ID is no proof of who writes.
        helpdesk.add_internal_note(
            ticket_id,
            f"This email answers ticket #{threading.named}, but its sender "
            f"({parsed.from_address or 'no address'}) is not part of that conversation, so it "
            "was opened as a ticket of its own.",
            author=ACTOR,
        )
    stored.ticket_id = ticket_id
    return ticket_id, threading.dispute


# A copy (BCC or forward) of mail the team's helpdesk also received finds the helpdesk's ticket;
# the helpdesk may file it a little after we fetch it, so the job asks again this many times.
FIND_ATTEMPTS = 3
FIND_SINCE_DAYS = 7


def _home_ticket(
    session: Session,
    rt: runtime.Runtime,
    stored: InboundEmail,
    parsed: ParsedEmail,
    body: str,
) -> int:
    """The ticket a new email opens: in the built-in helpdesk, or in the team's hosted one,
    where it attaches to the helpdesk's own ticket for this message when there is one (the
    team BCCs or forwards its billing address to us) instead of opening a second."""
    helpdesk = rt.helpdesks.for_home(session)
    requester = parsed.from_address or "unknown"
    subject = parsed.subject or "(no subject)"
    if rt.helpdesks.home != HelpdeskName.LOCAL and "@" in requester:
        since = stored.received_at - timedelta(days=FIND_SINCE_DAYS)
        found = helpdesk.find_ticket(requester_email=requester, subject=subject, since=since)
        if found is not None:
            return found
        if _attempt() < FIND_ATTEMPTS:
            raise HelpdeskUnavailable(
                f"no {rt.helpdesks.home} ticket for {requester}'s email yet; asking again soon"
            )
        log.info("no %s ticket for email %s: opening one", rt.helpdesks.home, stored.id)
        return helpdesk.open_ticket(
            subject=subject, requester_email=requester, requester_name=parsed.from_name, body=body
        )
    return helpdesk.open_ticket(
        subject=subject, requester_email=requester, requester_name=parsed.from_name
    )


def _attempt() -> int:
    """Which run of this job this is (1 for the first; RQ counts the retries left)."""
    job = get_current_job()
    if job is None or job.retries_left is None:
        return FIND_ATTEMPTS  # not run by a worker: no second run will come
    return queues.STANDARD_RETRY.max - job.retries_left + 1


def _mirrored_without_email(session: Session, ticket_id: int) -> TicketMessage | None:
    """The earliest customer message a hosted helpdesk's webhook mirrored that no email of
    ours is matched with yet: a BCC copy arriving after the webhook is that message."""
    return session.scalars(
        select(TicketMessage)
        .where(
            TicketMessage.ticket_id == ticket_id,
            TicketMessage.kind == MessageKind.INBOUND,
            TicketMessage.external_id.is_not(None),
            TicketMessage.inbound_email_id.is_(None),
        )
        .order_by(TicketMessage.id)
        .limit(1)
    ).first()


def _acknowledge_dispute(session: Session, rt: runtime.Runtime, ticket_id: int) -> None:
    """The chargeback playbook's answer, once per dispute ticket: Finance has the dispute."""
    ticket = session.get(Ticket, ticket_id)
    draft = dispute_acknowledgement(
        ticket_id, ticket.stripe_customer_id if ticket else None, rt.policy
    )
    if draft is not None:
        request_plan(
            session, ticket_id=ticket_id, draft=draft, requested_by=ACTOR, requester_role=None
        )


def _opened_by(session: Session, ticket_id: int, email_id: int) -> bool:
    """Whether this email is the ticket's first message, i.e. it opened the ticket."""
    first = session.scalar(
        select(TicketMessage.inbound_email_id)
        .where(TicketMessage.ticket_id == ticket_id)
        .order_by(TicketMessage.id)
        .limit(1)
    )
    return first == email_id


def _lookup(
    rt: runtime.Runtime, sender: str, category: Category, entities: Entities
) -> tuple[CustomerMatch, StripeFacts]:
    """Find the sender's Stripe customer, cross-check it with what the email says, and fetch
    what its category's playbook reads from Stripe."""
    try:
        candidates = rt.gateway.find_customers_by_email(sender) if "@" in sender else []
        match = match_sender(
            sender,
            candidates,
            tenant_ids=entities.tenant_ids,
            organization=entities.organization,
        )
        customer = match.customer
        if customer is None or match.blocked or entities.chargeback_filed:
            # Nothing will be done with the account: an agent looks first.
            return match, StripeFacts()
        charges = rt.gateway.list_charges(customer.id)
        if category in _READS_INVOICES:
            charges = _with_invoices(rt, charges)
        subscriptions = (
            rt.gateway.list_subscriptions(customer.id) if category in _READS_SUBSCRIPTIONS else []
        )
        shared = _card_shared_with(rt, customer.id, charges) if category in _READS_CARDS else {}
    except BillingDeskError as exc:
        if exc.retryable:
            raise
        log.warning("Stripe lookup for %s failed: %s", sender, exc)
        return CustomerMatch(
            None, (), "the Stripe lookup failed (see the worker log)"
        ), StripeFacts()
    return match, StripeFacts(charges, subscriptions, shared)


@dataclass(frozen=True)
class StripeFacts:
    """What the playbook reads of the customer in Stripe."""

    charges: list[Charge] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)
    card_shared_with: dict[str, tuple[str, ...]] = field(default_factory=dict)


_READS_SUBSCRIPTIONS = frozenset(
    [Category.CHARGE_AFTER_CANCELLATION, Category.CANCELLATION_REQUEST, Category.PAYMENT_FAILED]
)
_READS_CARDS = frozenset([Category.DUPLICATE_CHARGE, Category.AUTHORIZATION_HOLD])
# The playbook that tells a charge for another subscription by the invoice it paid.
_READS_INVOICES = frozenset([Category.CHARGE_AFTER_CANCELLATION])
MAX_INVOICES_LOOKED_UP = 10
MAX_CARDS_LOOKED_UP = 3


def _with_invoices(rt: runtime.Runtime, charges: list[Charge]) -> list[Charge]:
    """The charges (newest first, as the gateway lists them), the most recent ones with the
    invoice each paid (a request per charge on current API versions, so only the latest few)."""
    return [
        replace(c, invoice_id=rt.gateway.invoice_paid_by(c)) if n < MAX_INVOICES_LOOKED_UP else c
        for n, c in enumerate(charges)
    ]


def _card_shared_with(
    rt: runtime.Runtime, customer_id: str, charges: list[Charge]
) -> dict[str, tuple[str, ...]]:
    """For the customer's recent charges, the other Stripe customers their card also paid for
    (PenguinMails: "Two separate accounts? (Search by last 4 digits of card)")."""
    by_card: dict[str, list[Charge]] = {}
    for charge in sorted(charges, key=lambda c: c.created, reverse=True):
        if charge.card_fingerprint:
            by_card.setdefault(charge.card_fingerprint, []).append(charge)
    shared: dict[str, tuple[str, ...]] = {}
    for fingerprint in list(by_card)[:MAX_CARDS_LOOKED_UP]:
        others = rt.gateway.other_customers_on_card(fingerprint, customer_id)
        if others:
            for charge in by_card[fingerprint]:
                shared[charge.id] = others
    return shared


def _facts(
    session: Session,
    rt: runtime.Runtime,
    key: str,
    category: Category,
    match: CustomerMatch,
    stripe_facts: StripeFacts,
    entities: Entities,
    sender: SenderAuthentication,
) -> TicketFacts:
    """What the playbook decides on: the email's reading, and our records of the customer."""
    now = utcnow()
    customer = match.customer
    claims, in_flight, recent = Claims.none(), {}, 0
    if customer is not None:
        claims = open_claims(session, customer)
        in_flight = queries.in_flight_by_charge(session, customer.id)
        charges = stripe_facts.charges
        currency = charges[0].amount.currency if charges else "usd"
        since = now - timedelta(days=rt.policy.customer_refund_window_days)
        recent = queries.refunded_since(session, customer.id, currency, since)
    return TicketFacts(
        category=category,
        match=match,
        now=now,
        email_key=key,
        charges=stripe_facts.charges,
        chargeback_filed=entities.chargeback_filed,
        claims=claims,
        in_flight_by_charge=in_flight,
        customer_recent=recent,
        sender_authenticated=sender.authenticated,
        sender_authentication=sender.reason,
        subscriptions=stripe_facts.subscriptions,
        card_shared_with=stripe_facts.card_shared_with,
        amounts_mentioned=entities.amounts,
        locked_out=entities.locked_out,
        wants_immediate=entities.wants_immediate,
    )


def _store_plan(session: Session, ticket_id: int, email_key: str, triage: Triage) -> str | None:
    """Store the triage's plans, once per email; a step another ticket already requested (the
    same duplicate from a second email) leaves this ticket to an agent. Returns a sentence for
    the note when the playbook's plan was not stored."""
    keys = triage_plan_keys(email_key)
    if session.scalar(select(Plan.id).where(Plan.key.in_(keys)).limit(1)) is not None:
        # Triage ran before (a crash before the email was marked processed): its decision
        # stands, even where our records have moved since (its own refund is in flight now).
        return None
    not_stored = None
    for draft in triage.plans:
        try:
            request_plan(
                session, ticket_id=ticket_id, draft=draft, requested_by=ACTOR, requester_role=None
            )
        except InvalidInput as exc:
            if draft is triage.plan:
                not_stored = f"No plan: {exc}"
    return not_stored


def _earlier_refunds(session: Session, ticket_id: int, triage: Triage) -> str:
    """A pointer to this customer's refunds of the last days on other tickets, if any."""
    if triage.customer is None:
        return ""
    since = utcnow() - timedelta(days=EARLIER_REFUNDS_DAYS)
    earlier = queries.actions_of(session, triage.customer.id, [ActionKind.REFUND], since=since)
    return "".join(
        f" Already on ticket #{a.ticket_id}: {describe(a)} "
        f"({a.status}, {a.stripe_object_id or 'not yet issued'})."
        for a in earlier
        if a.ticket_id != ticket_id
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
    classification: Classification,
    match: CustomerMatch,
    entities: Entities,
    triage: Triage,
    not_stored: str | None,
) -> str:
    signals = "; ".join(classification.reasons)
    plan = f" Plan: {triage.plan.title}." if triage.plan and not not_stored else ""
    if not_stored:
        plan = f" {not_stored}"
    return (
        f"Triage: {classification.category} (confidence {classification.confidence:.2f}; "
        f"{signals}). Customer: {match.how}.{_entities_summary(entities)} "
        f"Next: {triage.next} — {triage.reason}{plan}"
    )


def _finish(
    rt: runtime.Runtime,
    email_id: int,
    ticket_id: int,
    note: str,
    on_ticket: bool = False,
) -> None:
    """Mark the email processed with why nothing more ran; ``on_ticket`` also notes it there."""
    with session_scope(rt.session_factory) as session:
        _mark_processed(session, email_id)
        audit.record(session, actor=ACTOR, event="email.threaded", ticket_id=ticket_id, note=note)
        if on_ticket:
            rt.helpdesks.for_ticket(session, ticket_id).add_internal_note(
                ticket_id, note, author=ACTOR
            )


def _mark_processed(session: Session, email_id: int) -> None:
    stored = session.get(InboundEmail, email_id)
    assert stored is not None
    # An oversized email keeps its error sentence, which says so.
    stored.status = InboundStatus.PROCESSED
    stored.processed_at = utcnow()
