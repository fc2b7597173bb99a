"""What an agent does to a ticket in the built-in helpdesk: reply to the customer, add an
internal note, change its status, assign it to a person or a team queue, correct its category.

Every change is audited and leaves a short internal note saying who changed what, so the
thread tells the story without the audit trail. Working a ticket (assigning it to yourself,
replying, changing its status) picks up the escalations waiting for your team.

Gates: refund judgement (core.policy.refunds) reads the categories of a customer's open
tickets, and some of them hold refunds for a role: a card not recognised for Security, a
chargeback for Finance, an unused module or a dissatisfied customer for the account manager.
Anyone may put a ticket in such a category; only that role (or an admin) may take the claim
out of what refund judgement reads, whether by correcting the category or by moving the
ticket out of the statuses it counts. The role is always our own ``Agent.role``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from core import agents, audit, escalations
from core.actions import Requested, action_type, request_plan
from core.actions.base import Ask, Asking
from core.actions.reply import agent_reply
from core.billing_context import BillingContext
from core.db.models import Action, Agent, Plan, Ticket
from core.domain import (
    ActionKind,
    ActionStatus,
    Category,
    EscalationTarget,
    HelpdeskName,
    Role,
    TicketStatus,
)
from core.errors import InvalidInput, PolicyDenied
from core.helpdesks import LocalHelpdesk
from core.inbox import team_label
from core.plans import PlanDraft, StepDraft
from core.policy import Asker, PolicyConfig, satisfies

MAX_NOTE = 10_000
MAX_FORM_KEY = 64
CLOSED_RESOLUTION = "Closed"
# Ticket IDs are 32-bit integers on PostgreSQL; a bigger number from a URL names no ticket
# (and SQLite's driver would refuse to even send it).
MAX_TICKET_ID = 2**31 - 1

# The role each gated category waits for (core.policy.refunds, _approvals_needed).
CATEGORY_GATES: dict[Category, Role] = {
    Category.CARD_NOT_RECOGNIZED: Role.SECURITY,
    Category.CHARGEBACK: Role.FINANCE,
    Category.UNUSED_MODULE: Role.ACCOUNT_MANAGER,
    Category.GENERAL_DISSATISFACTION: Role.ACCOUNT_MANAGER,
}
# The statuses whose tickets refund judgement reads: core.db.queries.open_tickets_of counts
# active tickets (open and pending). tests/test_helpdesk_work.py holds the two together.
CLAIMING_STATUSES = frozenset(s for s in TicketStatus if s.active)


# --- reading what the form sent --------------------------------------------------------------


def parse_status(value: str | None) -> TicketStatus:
    """A ticket status from a form; InvalidInput names the choices."""
    try:
        return TicketStatus((value or "").strip())
    except ValueError:
        raise InvalidInput(f"Choose a status: {', '.join(TicketStatus)}.") from None


def parse_category(value: str | None) -> Category:
    """A category from a form; InvalidInput for anything else."""
    try:
        return Category((value or "").strip())
    except ValueError:
        raise InvalidInput("Choose one of the categories.") from None


def parse_team(value: str | None) -> EscalationTarget | None:
    """A team queue from a form, or None for no team."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        return EscalationTarget(text)
    except ValueError:
        raise InvalidInput("Choose one of the team queues.") from None


def parse_form_key(value: str | None) -> str:
    """The reply form's own key: one form sent twice (a double click) is one reply."""
    key = (value or "").strip()
    if not key or len(key) > MAX_FORM_KEY or not key.isascii() or not key.isprintable():
        raise InvalidInput("The form expired. Reload the page and try again.")
    return key


def local_ticket(session: Session, ticket_id: int) -> Ticket | None:
    """One of the built-in helpdesk's own tickets (mirrored ones are worked where they live)."""
    if not 0 < ticket_id <= MAX_TICKET_ID:
        return None
    ticket = session.get(Ticket, ticket_id)
    return ticket if ticket is not None and ticket.helpdesk == HelpdeskName.LOCAL else None


# --- gates -----------------------------------------------------------------------------------


def gate_of(ticket: Ticket) -> Role | None:
    """The role that must agree before this ticket's claim stops counting, if it has one."""
    if ticket.category is None or TicketStatus(ticket.status) not in CLAIMING_STATUSES:
        return None
    try:
        return CATEGORY_GATES.get(Category(ticket.category))
    except ValueError:
        return None


def may_lift(agent: Agent, ticket: Ticket) -> bool:
    """Whether this agent may take the ticket's gated claim out of refund judgement."""
    gate = gate_of(ticket)
    return gate is None or satisfies(Role(agent.role), gate)


def _check_gate(agent: Agent, ticket: Ticket, status: TicketStatus, category: str | None) -> None:
    """Refuse a change that takes a gated claim out of what refund judgement reads, unless
    the agent's role holds that gate."""
    gate = gate_of(ticket)
    still_claimed = status in CLAIMING_STATUSES and category == ticket.category
    if gate is None or still_claimed or satisfies(Role(agent.role), gate):
        return
    change = (
        "move it to another category"
        if category != ticket.category
        else f"set it to {status}, which takes that claim out of refund judgement"
    )
    raise PolicyDenied(
        f"Ticket #{ticket.id} is about {_words(ticket.category)}, which holds the customer's "
        f"refunds for {gate.label}: only {gate.label} or an admin may {change}. Your role is "
        f"{Role(agent.role).label}; put it in their queue with a note instead."
    )


def _words(category: str | None) -> str:
    return (category or "nothing").replace("_", " ")


# --- changes ---------------------------------------------------------------------------------


def _noted(
    session: Session, ticket: Ticket, agent: Agent, event: str, text: str, **detail: Any
) -> None:
    """Audit a change and say it on the ticket, in the agent's name."""
    audit.record(session, actor=agent.email, event=event, ticket_id=ticket.id, **detail)
    LocalHelpdesk(session).add_internal_note(
        ticket.id, f"{text}, by {agent.email}.", author=agent.email
    )


def _work(session: Session, ticket: Ticket, agent: Agent) -> None:
    """The agent works the ticket: escalations to the teams their role works are picked up."""
    escalations.pick_up(session, ticket.id, agent.email, Role(agent.role))


def add_note(session: Session, ticket: Ticket, agent: Agent, text: str) -> None:
    """A note only agents see, in the agent's name; audited."""
    body = _plain(text)
    if not body:
        raise InvalidInput("Write the note first.")
    if len(body) > MAX_NOTE:
        raise InvalidInput(f"The note is longer than {MAX_NOTE} characters.")
    LocalHelpdesk(session).add_internal_note(ticket.id, body, author=agent.email)
    audit.record(session, actor=agent.email, event="ticket.noted", ticket_id=ticket.id)


def set_status(session: Session, ticket: Ticket, agent: Agent, status: TicketStatus) -> bool:
    """Move the ticket to a status; solving or closing resolves its escalations. False when
    it already had that status."""
    was = TicketStatus(ticket.status)
    if status is was:
        return False
    _check_gate(agent, ticket, status, ticket.category)
    _work(session, ticket, agent)
    if status is TicketStatus.CLOSED:
        LocalHelpdesk(session).close(ticket.id, resolution=CLOSED_RESOLUTION, actor=agent.email)
    else:
        ticket.status = status
        ticket.resolution = None
        ticket.closed_at = None
        if status is TicketStatus.SOLVED:
            escalations.resolve(session, ticket.id, agent.email)
    _noted(
        session,
        ticket,
        agent,
        "ticket.status_changed",
        f"Status: {was} → {status}",
        was=str(was),
        now=str(status),
    )
    return True


def assign(session: Session, ticket: Ticket, agent: Agent, assignee: str | None) -> bool:
    """Give the ticket to an active agent (by email), or to nobody. False when unchanged."""
    person = agents.find_by_email(session, assignee) if assignee else None
    if assignee and (person is None or not person.active):
        raise InvalidInput("Choose one of the active agents.")
    new = person.email if person is not None else None
    if new == ticket.assignee:
        return False
    was, ticket.assignee = ticket.assignee, new
    if person is not None and person.id == agent.id:
        _work(session, ticket, agent)
    text = f"Assigned to {person.name} <{person.email}>" if person else "Unassigned"
    _noted(session, ticket, agent, "ticket.assigned", text, was=was, now=new)
    return True


def set_team(session: Session, ticket: Ticket, agent: Agent, team: EscalationTarget | None) -> bool:
    """Put the ticket in a team's queue, or in none. False when unchanged."""
    new = str(team) if team is not None else None
    if new == ticket.team:
        return False
    was, ticket.team = ticket.team, new
    if team is not None:
        text = f"Moved to the {team.label} queue"
    else:
        text = f"Taken out of the {team_label(was)} queue" if was else "No team"
    _noted(session, ticket, agent, "ticket.team_changed", text, was=was, now=new)
    return True


def correct_category(session: Session, ticket: Ticket, agent: Agent, category: Category) -> bool:
    """Correct what the ticket is about; taking it out of a gated category is that gate's
    role's to do (see the module's docstring). False when unchanged."""
    if str(category) == ticket.category:
        return False
    _check_gate(agent, ticket, TicketStatus(ticket.status), str(category))
    was = ticket.category
    ticket.category = str(category)
    # The category is a person's now, not the classifier's guess.
    ticket.category_confidence = None
    _noted(
        session,
        ticket,
        agent,
        "ticket.category_corrected",
        f"Category: {was or 'none'} → {category}",
        was=was,
        now=str(category),
    )
    return True


def reply(
    session: Session,
    ticket: Ticket,
    agent: Agent,
    text: str,
    *,
    form_key: str,
    config: PolicyConfig,
    now: datetime,
    then_pending: bool = False,
) -> tuple[Plan, Action | None]:
    """Ask a worker to email the agent's words to the ticket's requester (never an address
    from the request): a one-step plan, once per form. Optionally the ticket waits for the
    customer (pending). Returns the plan and the step due to run, if this call made it."""
    params = agent_reply(_plain(text))
    if then_pending:
        _check_gate(agent, ticket, TicketStatus.PENDING, ticket.category)
    digest = hashlib.sha256(
        json.dumps([ticket.id, agent.email, form_key, params["text"]]).encode()
    ).hexdigest()
    key = f"helpdesk:reply:{digest[:40]}"
    requested = Requested(ActionKind.REPLY, key, params=params)
    # The reply's judgement needs no Stripe data; the context says the customer is unknown
    # here, so a rule that someday needs their identity refuses rather than passes.
    context = BillingContext(ticket=ticket, candidates=[])
    asking = Asking(asker=Asker.CONFIRMATION, requester_role=Role(agent.role))
    decision = action_type(ActionKind.REPLY).judge(Ask(context, asking, config, now), requested)
    step = StepDraft(
        ActionKind.REPLY,
        key,
        decision=decision,
        customer_id=ticket.stripe_customer_id,
        params=params,
    )
    draft = PlanDraft(key=key, title="Reply to the customer", reason=decision.reason, steps=(step,))
    plan, created = request_plan(
        session,
        ticket_id=ticket.id,
        draft=draft,
        requested_by=agent.email,
        requester_role=Role(agent.role),
    )
    if not created:
        return plan, None
    _work(session, ticket, agent)
    if then_pending:
        set_status(session, ticket, agent, TicketStatus.PENDING)
    due = next((s for s in plan.steps if s.status == ActionStatus.QUEUED), None)
    return plan, due


def _plain(text: str) -> str:
    """Text as a browser's form sends it, with one kind of line break and no outer spaces."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()
