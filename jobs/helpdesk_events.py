"""process_helpdesk_event: a Zendesk or Help Scout ticket, named by its webhook, goes through
the same triage as mail, and the result is written back to that ticket.

The webhook route (helpdesk_app.webhooks) has verified the delivery and recorded it once; this
job reads the ticket and its thread from the helpdesk (the webhook body is only a pointer: the
helpdesk's API is the source of truth, and a merged conversation is followed there), mirrors
each customer message once (keyed by the helpdesk's own ID for it), and for a ticket not yet
triaged classifies its first customer message, matches the Stripe customer and stores the
category's plan, tagging the ticket and noting the reasons. The plan's steps then reply, note,
assign the group and solve through the ticket's helpdesk. A run that dies part way runs again:
mirrored messages are found by their ID, the plan by its key, and the event is marked done last.
"""

from __future__ import annotations

import logging

from redis import Redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import session_scope
from core.db.models import HelpdeskEvent, Ticket, TicketMessage, utcnow
from core.domain import MessageKind
from core.helpdesks.base import ThreadEntry, TicketSnapshot
from core.helpdesks.mirrored import MirroredHelpdesk
from jobs import queues, runtime
from jobs.inbound import ACTOR, Reading, triage
from jobs.plans import queue_due_steps
from mail.authentication import SenderAuthentication
from mail.budget import Budget, OverBudget
from mail.parsing import text_for_classification
from mail.redact import redact_cards
from mail.sanitize import html_to_text

log = logging.getLogger(__name__)
# Where a customer's message reached the helpdesk, for the helpdesk's word on its sender.
SENDER_CHANNELS = frozenset({"email", "web", "beacon"})
MAX_BODY_CHARS = 100_000


def enqueue_helpdesk_event(redis: Redis, event_id: int) -> None:
    """Queue a recorded webhook delivery (once: the job ID is the delivery's)."""
    queues.enqueue_once(
        queues.get_queue(queues.MAIL, redis),
        process_helpdesk_event,
        event_id,
        job_id=f"helpdesk-event-{event_id}",
    )


def process_helpdesk_event(event_id: int) -> str:
    """Mirror the event's ticket, and triage it if it is new to us."""
    rt = runtime.current()
    with session_scope(rt.session_factory) as session:
        event = session.get(HelpdeskEvent, event_id)
        if event is None:
            log.error("helpdesk event %s does not exist", event_id)
            return "missing"
        if event.processed_at is not None:
            queue_due_steps(rt, event.ticket_id)
            return "already processed"
        helpdesk = rt.helpdesks.named(event.helpdesk, session)
        if not isinstance(helpdesk, MirroredHelpdesk) or helpdesk.account != event.account:
            _done(event, f"not this deployment's {event.helpdesk} account")
            return "ignored"
        ticket_id, snapshot = helpdesk.receive(event.external_id)
        event.ticket_id = ticket_id
        _mirror_customer_messages(session, helpdesk, ticket_id, snapshot)
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        first = next(iter(snapshot.customer_entries), None)
        if ticket.category is not None or first is None:
            why = "triaged already" if first is not None else "no message from the customer"
            _done(event, f"mirrored; {why}")
            return "mirrored"
        key = f"{event.helpdesk}-{event.account}-{snapshot.external_id}"
        service = helpdesk.service

    def authenticate() -> SenderAuthentication:
        return helpdesk_sender(rt.settings.helpdesk_trust_senders, service, first, snapshot)

    def mark_done(session: Session) -> None:
        done = session.get(HelpdeskEvent, event_id)
        assert done is not None
        _done(done, "triaged")

    text = _text(first)
    opening = Reading(
        subject=snapshot.subject,
        text=text,
        own_words=text_for_classification(text),
        sender=snapshot.requester_email,
        sender_name=snapshot.requester_name,
        day=(first.created_at or utcnow()).date(),
    )
    budget = Budget(rt.settings.mail_time_budget_seconds)
    try:
        return triage(rt, ticket_id, key, opening, authenticate, mark_done, budget)
    except OverBudget as exc:
        with session_scope(rt.session_factory) as session:
            rt.helpdesks.for_ticket(session, ticket_id).add_internal_note(
                ticket_id,
                f"No automation: reading this message took too long ({exc}); a person reads it.",
                author=ACTOR,
            )
            done = session.get(HelpdeskEvent, event_id)
            assert done is not None
            _done(done, "over budget")
        return "over budget"


def helpdesk_sender(
    trust: bool, service: str, entry: ThreadEntry, snapshot: TicketSnapshot
) -> SenderAuthentication:
    """Whether the helpdesk vouches for the sender of the ticket's first message: it received
    the message itself (by email or its web form), from the requester, and did not flag it."""
    if not trust:
        return SenderAuthentication(
            False,
            f"{service}'s checks of senders are not taken as authentication "
            "(HELPDESK_TRUST_SENDERS is off).",
        )
    if entry.author_email.lower() != snapshot.requester_email.lower():
        return SenderAuthentication(
            False, f"The first message in {service} is not from the requester."
        )
    if entry.channel not in SENDER_CHANNELS:
        return SenderAuthentication(
            False,
            f"The message reached {service} by {entry.channel or 'an unknown channel'}, "
            "not from the customer's own mailbox or sign-in.",
        )
    if not entry.trusted:
        return SenderAuthentication(
            False, f"{service} flagged this message: it is not sure the sender is who they say."
        )
    return SenderAuthentication(
        True, f"{service} received this message from {entry.author_email} and did not flag it."
    )


def _text(entry: ThreadEntry) -> str:
    """An entry's readable text, card numbers removed, bounded."""
    body = entry.body[:MAX_BODY_CHARS]
    text = html_to_text(body) if entry.body_is_html else body
    return redact_cards(text)[0]


def _mirror_customer_messages(
    session: Session, helpdesk: MirroredHelpdesk, ticket_id: int, snapshot: TicketSnapshot
) -> None:
    """Record each customer message of the ticket once. A message that
    reached us by email first (a BCC copy) is the same message: it takes the helpdesk's ID
    instead of being recorded twice."""
    known = set(
        session.scalars(
            select(TicketMessage.external_id).where(
                TicketMessage.ticket_id == ticket_id, TicketMessage.external_id.is_not(None)
            )
        )
    )
    unlinked = list(
        session.scalars(
            select(TicketMessage)
            .where(
                TicketMessage.ticket_id == ticket_id,
                TicketMessage.kind == MessageKind.INBOUND,
                TicketMessage.external_id.is_(None),
                TicketMessage.inbound_email_id.is_not(None),
            )
            .order_by(TicketMessage.id)
        )
    )
    for entry in snapshot.customer_entries:
        if entry.external_id in known:
            continue
        if unlinked:
            unlinked.pop(0).external_id = entry.external_id[:64]
            continue
        helpdesk.local.add_message(
            ticket_id,
            kind=MessageKind.INBOUND,
            author=entry.author_email or snapshot.requester_email,
            body=_text(entry) or "(empty message)",
            external_id=entry.external_id[:64],
        )
    session.flush()


def _done(event: HelpdeskEvent, outcome: str) -> None:
    event.processed_at = utcnow()
    event.outcome = outcome
