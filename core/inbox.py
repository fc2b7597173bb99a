"""What the built-in helpdesk's inbox shows: tickets filtered and searched in the database, a
page at a time, each with the SLA of its soonest open escalation; and what is waiting for one
agent (their tickets, their teams' escalations, the approvals their role can give).

Every filter comes from a query string, so every value is checked here against its list or
its bounds: a bad one is an InvalidInput naming it, never a query the database refuses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from core import escalations
from core.actions.base import approvals_of
from core.actions.registry import describe
from core.db.models import Action, Agent, Escalation, Plan, Ticket
from core.domain import (
    ActionStatus,
    Category,
    EscalationStatus,
    EscalationTarget,
    HelpdeskName,
    PlanStatus,
    Role,
    TicketStatus,
)
from core.errors import InvalidInput
from core.policy import may_decide, satisfies

PAGE_SIZE = 50
MAX_PAGE = 10_000
MAX_SEARCH = 200
MAX_ADDRESS = 320
DUE_SOON = timedelta(hours=1)
WAITING_LIMIT = 100
# "Open or pending": still in someone's hands (TicketStatus.active).
ACTIVE = "active"
ME, UNASSIGNED = "me", "unassigned"
_NUMBER = re.compile(r"(?:#|\[?BD-)?(\d{1,9})\]?", re.IGNORECASE)


class SlaFilter(StrEnum):
    """Tickets by where their escalations stand against the SLA."""

    BREACHED = "breached"  # an open escalation past its due time
    DUE_SOON = "due_soon"  # an open escalation due within the hour
    ESCALATED = "escalated"  # any escalation not yet resolved

    @property
    def label(self) -> str:
        """As the filter's menu says it."""
        return {
            SlaFilter.BREACHED: "SLA breached",
            SlaFilter.DUE_SOON: "Due within 1h",
            SlaFilter.ESCALATED: "Any escalation",
        }[self]


@dataclass(frozen=True)
class TicketFilter:
    """What the agent asked the inbox for; empty fields filter nothing."""

    status: str = ""  # a TicketStatus, or ACTIVE
    category: str = ""
    team: str = ""
    assignee: str = ""  # ME, UNASSIGNED or an agent's email
    requester: str = ""  # the requester's email address
    sla: str = ""
    q: str = ""  # free text: subject, requester email or name, ticket number
    page: int = 1

    @classmethod
    def from_query(cls, args: Mapping[str, str]) -> TicketFilter:
        """Read and check the inbox's query string; InvalidInput names a bad value."""
        return cls(
            status=_choice(args, "status", [ACTIVE, *TicketStatus], "status"),
            category=_choice(args, "category", Category, "category"),
            team=_choice(args, "team", EscalationTarget, "team queue"),
            assignee=_text(args, "assignee", MAX_ADDRESS, "assignee"),
            requester=_text(args, "requester", MAX_ADDRESS, "requester"),
            sla=_choice(args, "sla", SlaFilter, "SLA filter"),
            q=_text(args, "q", MAX_SEARCH, "search"),
            page=_page(args.get("page")),
        )

    @property
    def is_set(self) -> bool:
        """Whether any filter or search is asked for (the page number aside)."""
        return any(getattr(self, f.name) for f in fields(self) if f.name != "page")

    def query_args(self, **changes: Any) -> dict[str, Any]:
        """The query string of this filter with some values changed, for links."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return {k: v for k, v in values.items() if v and not (k == "page" and v == 1)}


def _choice(args: Mapping[str, str], name: str, allowed: Iterable[str], label: str) -> str:
    value = (args.get(name) or "").strip()
    if value and value not in {str(a) for a in allowed}:
        raise InvalidInput(f"Unknown {label} {value[:40]!r}.")
    return value


def _text(args: Mapping[str, str], name: str, limit: int, label: str) -> str:
    value = (args.get(name) or "").strip()
    if len(value) > limit:
        raise InvalidInput(f"The {label} is longer than {limit} characters.")
    # A NUL byte would be refused by PostgreSQL; no control character belongs in a search.
    if any(not char.isprintable() for char in value):
        raise InvalidInput(f"The {label} contains characters that cannot be searched for.")
    return value


def _page(value: str | None) -> int:
    if not value:
        return 1
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise InvalidInput(f"The page must be a number from 1 to {MAX_PAGE}.")
    return int(value)


# --- SLA ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sla:
    """Where a ticket's soonest open escalation stands: its team, due time and time left."""

    target: str
    due_at: datetime
    now: datetime

    @property
    def breached(self) -> bool:
        """Past its due time and nobody picked it up."""
        return self.due_at <= self.now

    @property
    def due_soon(self) -> bool:
        """Due within the hour."""
        return not self.breached and self.due_at - self.now <= DUE_SOON

    @property
    def team(self) -> str:
        """The team the escalation waits for, as agents say it."""
        return team_label(self.target)

    @property
    def words(self) -> str:
        """``2h 05m left`` or ``breached 20m ago``."""
        if self.breached:
            return f"breached {_duration(self.now - self.due_at)} ago"
        return f"{_duration(self.due_at - self.now)} left"


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m" if minutes else "<1m"


def _soonest_open(session: Session, ticket_ids: Sequence[int], now: datetime) -> dict[int, Sla]:
    """The SLA of each ticket's soonest open escalation."""
    if not ticket_ids:
        return {}
    found: dict[int, Sla] = {}
    for escalation in session.scalars(
        select(Escalation)
        .where(
            Escalation.ticket_id.in_(ticket_ids),
            Escalation.status == EscalationStatus.OPEN,
        )
        .order_by(Escalation.due_at)
    ):
        assert escalation.ticket_id is not None
        found.setdefault(escalation.ticket_id, Sla(escalation.target, escalation.due_at, now))
    return found


def ticket_sla(session: Session, ticket_id: int, now: datetime) -> Sla | None:
    """The SLA of the ticket's soonest open escalation, if it has one."""
    return _soonest_open(session, [ticket_id], now).get(ticket_id)


# --- the ticket list ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TicketRow:
    """A ticket as the inbox lists it."""

    ticket: Ticket
    sla: Sla | None
    outcome: str | None = None  # what the playbook (or an agent's plan) did, in words


_PLAN_WORDS = {
    PlanStatus.SUGGESTED: "suggested, waits for an agent to start it",
    PlanStatus.RUNNING: "running",
    PlanStatus.WAITING: "waits for an approval",
    PlanStatus.DONE: "done",
    PlanStatus.STOPPED: "stopped",
}


def plan_outcomes(session: Session, ticket_ids: Sequence[int]) -> dict[int, str]:
    """For each ticket, its latest plan other than an acknowledgement (or that, if alone),
    with where it stands: what happened to the ticket, as the inbox says it."""
    if not ticket_ids:
        return {}
    chosen: dict[int, Plan] = {}
    for plan in session.scalars(
        select(Plan).where(Plan.ticket_id.in_(ticket_ids)).order_by(Plan.id)
    ):
        assert plan.ticket_id is not None
        current = chosen.get(plan.ticket_id)
        if current is None or not plan.key.startswith("ack:") or current.key.startswith("ack:"):
            chosen[plan.ticket_id] = plan
    return {
        ticket_id: f"{plan.title} · {_PLAN_WORDS[PlanStatus(plan.status)]}"
        for ticket_id, plan in chosen.items()
    }


@dataclass(frozen=True)
class TicketPage:
    """One page of the filtered tickets."""

    rows: list[TicketRow]
    total: int
    page: int
    page_size: int = PAGE_SIZE

    @property
    def has_next(self) -> bool:
        """Whether there are tickets after this page."""
        return self.page * self.page_size < self.total

    @property
    def first(self) -> int:
        """The position of this page's first ticket, from 1."""
        return (self.page - 1) * self.page_size + 1 if self.rows else 0


def _next_due() -> Any:
    """The due time of a ticket's soonest open escalation (NULL without one), per row."""
    return (
        select(func.min(Escalation.due_at))
        .where(Escalation.ticket_id == Ticket.id, Escalation.status == EscalationStatus.OPEN)
        .correlate(Ticket)
        .scalar_subquery()
    )


def _conditions(wanted: TicketFilter, me: str, now: datetime) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [Ticket.helpdesk == HelpdeskName.LOCAL]
    if wanted.status == ACTIVE:
        conditions.append(Ticket.status.in_([s for s in TicketStatus if s.active]))
    elif wanted.status:
        conditions.append(Ticket.status == wanted.status)
    if wanted.category:
        conditions.append(Ticket.category == wanted.category)
    if wanted.team:
        conditions.append(Ticket.team == wanted.team)
    if wanted.assignee == UNASSIGNED:
        conditions.append(Ticket.assignee.is_(None))
    elif wanted.assignee:
        person = me if wanted.assignee == ME else wanted.assignee
        conditions.append(func.lower(Ticket.assignee) == person.lower())
    if wanted.requester:
        conditions.append(func.lower(Ticket.requester_email) == wanted.requester.lower())
    if wanted.sla:
        conditions.append(_sla_condition(SlaFilter(wanted.sla), now))
    if wanted.q:
        conditions.append(_search(wanted.q))
    return conditions


def _sla_condition(sla: SlaFilter, now: datetime) -> ColumnElement[bool]:
    if sla is SlaFilter.ESCALATED:
        return exists().where(
            Escalation.ticket_id == Ticket.id,
            Escalation.status.in_([EscalationStatus.OPEN, EscalationStatus.PICKED_UP]),
        )
    due = _next_due()
    if sla is SlaFilter.BREACHED:
        return and_(due.is_not(None), due <= now)
    return and_(due > now, due <= now + DUE_SOON)


def _search(text: str) -> ColumnElement[bool]:
    """Subject, requester email or name containing the text (any case), or the ticket number."""
    needle = text.lower()
    matches: list[ColumnElement[bool]] = [
        func.lower(column).contains(needle, autoescape=True)
        for column in (Ticket.subject, Ticket.requester_email, Ticket.requester_name)
    ]
    number = _NUMBER.fullmatch(text)
    if number:
        matches.append(Ticket.id == int(number.group(1)))
    return or_(*matches)


def find_tickets(session: Session, wanted: TicketFilter, me: str, now: datetime) -> TicketPage:
    """One page of the built-in helpdesk's tickets matching the filter: by SLA (soonest due
    first) when filtering on it, otherwise most recently updated first."""
    conditions = _conditions(wanted, me, now)
    total = session.scalar(select(func.count()).select_from(Ticket).where(*conditions)) or 0
    query: Select[Ticket] = select(Ticket).where(*conditions)
    if wanted.sla:
        due = _next_due()
        query = query.order_by(due.is_(None), due, Ticket.updated_at.desc())
    query = query.order_by(Ticket.updated_at.desc(), Ticket.id.desc())
    offset = (wanted.page - 1) * PAGE_SIZE
    tickets = list(session.scalars(query.offset(offset).limit(PAGE_SIZE)))
    slas = _soonest_open(session, [t.id for t in tickets], now)
    outcomes = plan_outcomes(session, [t.id for t in tickets])
    rows = [TicketRow(t, slas.get(t.id), outcomes.get(t.id)) for t in tickets]
    return TicketPage(rows=rows, total=total, page=wanted.page)


def status_counts(session: Session) -> dict[str, int]:
    """How many of the built-in helpdesk's tickets have each status, and how many in all."""
    counts: dict[str, int] = {str(s): 0 for s in TicketStatus}
    for status, count in session.execute(
        select(Ticket.status, func.count())
        .where(Ticket.helpdesk == HelpdeskName.LOCAL)
        .group_by(Ticket.status)
    ):
        counts[status] = count
    counts[ACTIVE] = counts[TicketStatus.OPEN] + counts[TicketStatus.PENDING]
    counts["all"] = sum(counts[str(s)] for s in TicketStatus)
    return counts


# --- waiting for me ----------------------------------------------------------------------------


@dataclass
class Waiting:
    """A ticket waiting for this agent, why, and the SLA it must meet."""

    ticket: Ticket
    sla: Sla | None = None
    reasons: list[str] = field(default_factory=list)
    approvals: list[Action] = field(default_factory=list)

    def sort_key(self) -> tuple[bool, datetime, datetime]:
        """Breached first, then soonest due, then what has waited longest."""
        due = self.sla.due_at if self.sla else self.ticket.updated_at
        return (self.sla is None, due, self.ticket.updated_at)


def waiting_for(session: Session, agent: Agent, now: datetime) -> list[Waiting]:
    """What is waiting for this agent: open tickets assigned to them; tickets escalated to a
    team queue their role works, and unassigned open tickets in those queues; for agents, the
    unassigned open tickets of no team (suggested plans among them); steps waiting for an
    approval they may give. Breached SLAs first, then soonest due."""
    role = Role(agent.role)
    teams = [str(t) for t in escalations.teams_of(role)]
    found: dict[int, Waiting] = {}

    def waiting(ticket: Ticket) -> Waiting:
        return found.setdefault(ticket.id, Waiting(ticket))

    local = Ticket.helpdesk == HelpdeskName.LOCAL
    for ticket in session.scalars(
        select(Ticket)
        .where(
            local,
            func.lower(Ticket.assignee) == agent.email.lower(),
            Ticket.status == TicketStatus.OPEN,
        )
        .order_by(Ticket.updated_at)
        .limit(WAITING_LIMIT)
    ):
        waiting(ticket).reasons.append("Assigned to you")
    if teams:
        for escalation, ticket in session.execute(
            select(Escalation, Ticket)
            .join(Ticket, Escalation.ticket_id == Ticket.id)
            .where(local, Escalation.status == EscalationStatus.OPEN, Escalation.target.in_(teams))
            .order_by(Escalation.due_at)
            .limit(WAITING_LIMIT)
        ):
            waiting(ticket).reasons.append(f"Escalated to {team_label(escalation.target)}")
        for ticket in session.scalars(
            select(Ticket)
            .where(
                local,
                Ticket.team.in_(teams),
                Ticket.assignee.is_(None),
                Ticket.status == TicketStatus.OPEN,
            )
            .order_by(Ticket.updated_at)
            .limit(WAITING_LIMIT)
        ):
            if ticket.id not in found:  # an escalation to the team says it already
                reason = f"In the {team_label(ticket.team or '')} queue, unassigned"
                waiting(ticket).reasons.append(reason)
    if role is Role.AGENT:
        # The front line: open tickets in nobody's hands and no team's queue (not escalated,
        # no step waiting for someone's approval); a suggested plan waiting says so.
        suggested = set(
            session.scalars(select(Plan.ticket_id).where(Plan.status == PlanStatus.SUGGESTED))
        )
        escalated = exists().where(
            Escalation.ticket_id == Ticket.id, Escalation.status == EscalationStatus.OPEN
        )
        approving = exists().where(
            Action.ticket_id == Ticket.id, Action.status == ActionStatus.PENDING_APPROVAL
        )
        for ticket in session.scalars(
            select(Ticket)
            .where(
                local,
                Ticket.team.is_(None),
                Ticket.assignee.is_(None),
                Ticket.status == TicketStatus.OPEN,
                ~escalated,
                ~approving,
            )
            .order_by(Ticket.updated_at)
            .limit(WAITING_LIMIT)
        ):
            waiting(ticket).reasons.append(
                "A suggested plan waits for an agent"
                if ticket.id in suggested
                else "Unassigned, in no team's queue"
            )
    for action, ticket in _approvals_for(session, agent, role):
        entry = waiting(ticket)
        entry.approvals.append(action)
        entry.reasons.append(f"Your approval: {describe(action)}")
    slas = _soonest_open(session, list(found), now)
    for entry in found.values():
        entry.sla = slas.get(entry.ticket.id)
        entry.reasons = list(dict.fromkeys(entry.reasons))
    return sorted(found.values(), key=Waiting.sort_key)[:WAITING_LIMIT]


def _approvals_for(session: Session, agent: Agent, role: Role) -> list[tuple[Action, Ticket]]:
    """Steps waiting for an approval this agent may give (not their own request, not one
    they approved already)."""
    roles = [str(r) for r in Role if satisfies(role, r)]
    rows = session.execute(
        select(Action, Ticket)
        .join(Ticket, Action.ticket_id == Ticket.id)
        .where(
            Ticket.helpdesk == HelpdeskName.LOCAL,
            Action.status == ActionStatus.PENDING_APPROVAL,
            Action.approval_role.in_(roles),
        )
        .order_by(Action.created_at)
        .limit(WAITING_LIMIT)
    )
    return [
        (action, ticket)
        for action, ticket in rows
        if may_decide(
            approver=agent.email,
            approver_role=role,
            required=Role(action.approval_role or Role.SUPPORT_LEAD),
            requested_by=action.requested_by,
            given=approvals_of(action),
        ).allowed
    ]


def team_label(team: str) -> str:
    """A team queue's name as agents say it (a name from before the current list as stored)."""
    try:
        return EscalationTarget(team).label
    except ValueError:
        return team
