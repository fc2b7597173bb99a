"""Disputes (chargebacks) as tickets: the first event opens or joins the customer's ticket,
assembles the evidence, recommends, and escalates to Finance; later events note each new
status once.

Events arrive twice and out of order, so each run reads the dispute as Stripe has it now, and
everything it stores has a key: the plan ``dispute:<id>`` (one per dispute, which is also how
a later event finds the ticket) and one note plan per status or funds movement.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core import audit
from core.actions import workflow
from core.db import session_scope
from core.db.models import StripeDispute, Ticket, TicketMessage, utcnow
from core.domain import (
    ActionKind,
    Category,
    Charge,
    Customer,
    Dispute,
    EscalationTarget,
    MatchKind,
    MessageKind,
    TicketStatus,
)
from core.errors import NotFound
from core.evidence import CustomerMessage, Evidence, assemble, usage_period
from core.helpdesks import LocalHelpdesk
from core.plans import PlanDraft, StepDraft, escalation_params
from core.policy import judge_automatic, sla_text
from core.policy.disputes import Recommendation, recommend
from core.usage_sources import Usage, UsageSourceError, make_usage_source
from jobs import runtime
from jobs.plans import queue_due_steps
from mail.redact import redact_cards

log = logging.getLogger(__name__)
AUTHOR = "billing-desk"
FRAUD_FLAG = "billing_desk_fraud_flag"  # core.stripe_gateway.flag_fraud writes it
MESSAGES_READ = 20
_FUNDS_EVENTS = {
    "charge.dispute.funds_withdrawn": "Stripe withdrew {amount} from our balance for the dispute.",
    "charge.dispute.funds_reinstated": "Stripe reinstated {amount} to our balance.",
}
_STATUS_WORDS = {
    "won": "won: the bank decided for us and the money stays with us",
    "lost": "lost: the {amount} goes to the cardholder",
    "warning_closed": "closed as an inquiry that did not become a chargeback",
    "under_review": "under review: the bank has our evidence",
    "warning_under_review": "under review: the card issuer has our answer to the inquiry",
    "prevented": "prevented",
}


def plan_key(dispute_id: str) -> str:
    """The one plan a dispute makes: its ticket, Finance escalation and evidence."""
    return f"dispute:{dispute_id}"


def dispute_event(rt: runtime.Runtime, event_type: str, dispute: Mapping[str, Any]) -> None:
    """Handle one ``charge.dispute.*`` event; safe to call twice and out of order."""
    dispute_id = str(dispute["id"])
    # The dispute as it stands, not as this (maybe older) event saw it.
    current = rt.gateway.get_dispute(dispute_id)
    with session_scope(rt.session_factory) as session:
        first = workflow.plan_by_key(session, plan_key(dispute_id))
        ticket_id = first.ticket_id if first is not None else None
        noted_status = str(first.steps[0].params.get("status")) if first is not None else None
    if first is None:
        ticket_id = _open(rt, current)
    else:
        _note_change(rt, current, event_type, ticket_id, noted_status)
    queue_due_steps(rt, ticket_id)


# --- the first event: ticket, evidence, recommendation, Finance -----------------------------


def _open(rt: runtime.Runtime, dispute: Dispute) -> int | None:
    charge = rt.gateway.get_charge(dispute.charge_id)
    customer = _customer(rt, charge)
    with session_scope(rt.session_factory) as session:
        joined = _customer_ticket(session, customer)
        messages = _messages(session, joined, customer) if joined is not None else []
    usage, problem = _usage(rt, customer, charge)
    evidence = assemble(dispute, charge, customer, usage, messages, usage_problem=problem)
    flagged = bool(customer and customer.metadata.get(FRAUD_FLAG) == "true")
    advice = recommend(dispute, rt.policy, evidence.proof, fraud_flagged=flagged)
    with session_scope(rt.session_factory) as session:
        ticket = _ticket_for(session, customer, dispute, charge, joined)
        created = _store_plan(rt, session, ticket, customer, dispute, evidence, advice)
        if not created:
            # Another run stored the dispute's plan first: its ticket stands, ours goes.
            session.rollback()
            plan = workflow.plan_by_key(session, plan_key(dispute.id))
            return plan.ticket_id if plan is not None else None
        LocalHelpdesk(session).add_internal_note(
            ticket.id,
            _opening_note(rt, dispute, evidence, advice, joined is not None),
            author=AUTHOR,
        )
        _link_mirror(session, dispute.id, ticket.id)
        return ticket.id


def _customer(rt: runtime.Runtime, charge: Charge) -> Customer | None:
    if not charge.customer_id:
        return None
    try:
        return rt.gateway.get_customer(charge.customer_id)
    except NotFound:
        return None


def _customer_ticket(session: Session, customer: Customer | None) -> Ticket | None:
    """The customer's open ticket to join: a chargeback one first, else their newest."""
    if customer is None:
        return None
    active = [str(s) for s in TicketStatus if s.active]
    tickets = list(
        session.scalars(
            select(Ticket)
            .where(Ticket.stripe_customer_id == customer.id, Ticket.status.in_(active))
            .order_by(Ticket.id.desc())
            .limit(20)
        )
    )
    if not tickets and customer.email:
        tickets = list(
            session.scalars(
                select(Ticket)
                .where(
                    Ticket.requester_email == customer.email,
                    Ticket.stripe_customer_id.is_(None),
                    Ticket.status.in_(active),
                )
                .order_by(Ticket.id.desc())
                .limit(20)
            )
        )
    chargebacks = [t for t in tickets if t.category == Category.CHARGEBACK]
    return (chargebacks or tickets or [None])[0]


def _messages(session: Session, ticket: Ticket, customer: Customer | None) -> list[CustomerMessage]:
    """The customer's own emails on the ticket (from the address Stripe has for them: what
    anyone else wrote there is no evidence of theirs), oldest first, card numbers out again."""
    address = ((customer.email if customer else None) or "").strip().lower()
    if not address:
        return []
    rows = session.scalars(
        select(TicketMessage)
        .where(
            TicketMessage.ticket_id == ticket.id,
            TicketMessage.kind == MessageKind.INBOUND,
            func.lower(TicketMessage.author) == address,
        )
        .order_by(TicketMessage.id.desc())
        .limit(MESSAGES_READ)
    )
    return [CustomerMessage(m.created_at, redact_cards(m.body)[0]) for m in reversed(list(rows))]


def _usage(
    rt: runtime.Runtime, customer: Customer | None, charge: Charge
) -> tuple[Usage | None, str | None]:
    """The product's records of the customer's use, or why there are none."""
    if customer is None:
        return None, "the disputed charge has no Stripe customer"
    try:
        source = make_usage_source(rt.settings)
        if source is None:
            return None, "no usage source is configured (USAGE_SOURCE)"
        since, until = usage_period(charge, utcnow())
        return source.usage(customer.id, customer.email, since, until), None
    except UsageSourceError as exc:
        log.warning("usage source for %s: %s", customer.id, exc)
        return None, f"the usage source failed: {exc}"


def _ticket_for(
    session: Session,
    customer: Customer | None,
    dispute: Dispute,
    charge: Charge,
    joined: Ticket | None,
) -> Ticket:
    """The ticket found before, or a new one for the customer; about a chargeback now."""
    ticket = session.get(Ticket, joined.id) if joined is not None else None
    if ticket is None:
        ticket_id = LocalHelpdesk(session).open_ticket(
            subject=f"Dispute {dispute.id}: {dispute.amount} ({_words(dispute.reason)})",
            requester_email=(customer.email if customer else None) or "unknown",
            requester_name=customer.name if customer else None,
        )
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
    if customer is not None and not ticket.stripe_customer_id:
        ticket.stripe_customer_id = customer.id
        # Stripe itself names the customer: the disputed charge is theirs.
        ticket.customer_match = MatchKind.EXPLICIT
    if ticket.category != Category.CHARGEBACK:
        # A chargeback holds the customer's refunds for Finance (core.tickets' gates).
        ticket.category = Category.CHARGEBACK
        ticket.category_confidence = None
    audit.record(
        session,
        actor=AUTHOR,
        event="dispute.ticket",
        ticket_id=ticket.id,
        stripe_customer_id=customer.id if customer else None,
        dispute=dispute.id,
        charge=charge.id,
    )
    return ticket


def _store_plan(
    rt: runtime.Runtime,
    session: Session,
    ticket: Ticket,
    customer: Customer | None,
    dispute: Dispute,
    evidence: Evidence,
    advice: Recommendation,
) -> bool:
    """Escalate to Finance at once, the step carrying the dispute, evidence and advice."""
    target = EscalationTarget.FINANCE
    step = StepDraft(
        ActionKind.ESCALATE,
        f"{plan_key(dispute.id)}:escalate",
        decision=judge_automatic(ActionKind.ESCALATE, rt.policy),
        customer_id=customer.id if customer else None,
        charge_id=dispute.charge_id,
        params={
            **escalation_params(target, _facts(dispute)),
            "dispute_id": dispute.id,
            "status": dispute.status,
            "evidence": evidence.fields,
            "evidence_summary": list(evidence.summary),
            "recommendation": str(advice.response),
            "recommendation_reasons": list(advice.reasons),
        },
    )
    assert step.decision is not None
    draft = PlanDraft(
        key=plan_key(dispute.id),
        title=f"Dispute {dispute.id}: escalate to Finance",
        reason=f"{_facts(dispute)} {advice.headline}.",
        steps=(step,),
    )
    _, created = workflow.request_plan(
        session, ticket_id=ticket.id, draft=draft, requested_by=AUTHOR, requester_role=None
    )
    return created


def _facts(dispute: Dispute) -> str:
    due = (
        f", evidence due {dispute.evidence_due_by:%d %b %Y %H:%M} UTC"
        if dispute.evidence_due_by
        else ", no response allowed"
    )
    return (
        f"Dispute {dispute.id} on charge {dispute.charge_id}: {dispute.amount}, reason "
        f"{_words(dispute.reason)}, status {_words(dispute.status)}{due}."
    )


def _opening_note(
    rt: runtime.Runtime, dispute: Dispute, evidence: Evidence, advice: Recommendation, joined: bool
) -> str:
    kind = "inquiry" if dispute.is_inquiry else "dispute"
    lines = [
        f"The bank opened a {kind}. {_facts(dispute)}",
        "This ticket joins the customer's open conversation." if joined else "",
        f"Escalated to {sla_text(EscalationTarget.FINANCE, rt.policy)}.",
        "Evidence assembled: " + " ".join(evidence.summary),
        f"Stripe evidence fields ready: {', '.join(sorted(evidence.fields))}.",
        f"{advice.headline}: " + " ".join(advice.reasons),
        "Finance answers from the sidebar: submit the evidence, or accept the dispute. No "
        "refund while it is open: Stripe allows none outside the dispute process.",
    ]
    return "\n".join(line for line in lines if line)


def _link_mirror(session: Session, dispute_id: str, ticket_id: int) -> None:
    """Point the mirrored dispute at its ticket, when the mirror has it already."""
    row = session.get(StripeDispute, dispute_id)
    if row is not None and row.ticket_id is None:
        row.ticket_id = ticket_id


# --- later events: each new status (and funds movement) noted once --------------------------


def _note_change(
    rt: runtime.Runtime,
    dispute: Dispute,
    event_type: str,
    ticket_id: int | None,
    noted_status: str | None,
) -> None:
    funds = _FUNDS_EVENTS.get(event_type)
    if funds is not None:
        suffix, text = event_type.rsplit(".", 1)[1], funds.format(amount=dispute.amount)
        text = f"Dispute {dispute.id}: {text}"
    elif dispute.status != noted_status:
        words = _STATUS_WORDS.get(dispute.status, _words(dispute.status)).format(
            amount=dispute.amount
        )
        suffix, text = f"status:{dispute.status}", f"Dispute {dispute.id} is {words}."
    else:
        return
    key = f"{plan_key(dispute.id)}:{suffix}"
    step = StepDraft(
        ActionKind.NOTE,
        key,
        decision=judge_automatic(ActionKind.NOTE, rt.policy),
        params={"text": text, "dispute_id": dispute.id},
    )
    draft = PlanDraft(key=key, title="Note the dispute's news", reason=text, steps=(step,))
    with session_scope(rt.session_factory) as session:
        workflow.request_plan(
            session, ticket_id=ticket_id, draft=draft, requested_by=AUTHOR, requester_role=None
        )
        if ticket_id is not None:
            _link_mirror(session, dispute.id, ticket_id)


def _words(value: str) -> str:
    return value.replace("_", " ")
