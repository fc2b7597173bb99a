"""Escalations per the playbooks' matrix, each with its SLA."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select

from core.actions.account import AccountAction
from core.actions.base import (
    Ask,
    Effects,
    Outcome,
    Proposal,
    Requested,
    idempotency_key,
    params_of,
    text_field,
)
from core.db.models import Action, Escalation, Ticket
from core.domain import ActionKind, EscalationTarget
from core.errors import HelpdeskError, InvalidInput
from core.plans import escalation_params
from core.policy import sla_due, sla_text

NOTICE_TEMPLATE = "escalation_notice"


def open_escalation(
    action: Action, fx: Effects, target: EscalationTarget, reason: str
) -> tuple[Escalation, str]:
    """The escalation of this action, opened once with its SLA due time, the ticket put in the
    team's queue (in a hosted helpdesk, its group or team), and the team told (once); returns
    it and what became of the notice."""
    escalation, placed = _open(action, fx, target, reason)
    notice = fx.notify_team(
        escalation,
        template=NOTICE_TEMPLATE,
        subject=f"Escalated to {target.label}: ticket #{action.ticket_id}",
    )
    return escalation, f"{notice}{placed}"


def _open(
    action: Action, fx: Effects, target: EscalationTarget, reason: str
) -> tuple[Escalation, str]:
    with fx.transaction() as session:
        existing = session.scalar(select(Escalation).where(Escalation.action_id == action.id))
        if existing is not None:
            session.expunge(existing)
            return existing, ""
        ticket = session.get(Ticket, action.ticket_id) if action.ticket_id else None
        placed = ""
        if ticket is not None:
            try:
                fx.helpdesk(session, ticket.id).assign(ticket.id, team=target)
            except HelpdeskError as exc:
                if exc.retryable:
                    raise  # nothing is recorded: the step runs again
                # The helpdesk has no such group: the escalation, its SLA and the team's
                # queue here still stand, and the note says what to set up.
                ticket.team = str(target)
                placed = f" (not placed in the helpdesk: {exc})"
        now = fx.now()
        escalation = Escalation(
            ticket_id=action.ticket_id,
            action_id=action.id,
            target=str(target),
            reason=reason,
            requested_by=action.requested_by,
            stripe_customer_id=action.stripe_customer_id,
            created_at=now,
            due_at=sla_due(target, now, fx.policy),
        )
        session.add(escalation)
        session.flush()
        session.expunge(escalation)
        return escalation, placed


class Escalate(AccountAction):
    """Hand the ticket to a team per the escalation matrix."""

    kind = ActionKind.ESCALATE

    def propose(self, ask: Ask, form: Mapping[str, str]) -> Proposal:
        """Escalate to a target, with the reason; the SLA is stated."""
        try:
            target = EscalationTarget(form.get("target") or "")
        except ValueError:
            raise InvalidInput("Choose who to escalate to.") from None
        why = text_field(form, "text", "The reason")
        ticket_id = ask.context.ticket.id
        requested = Requested(
            self.kind,
            idempotency_key(self.kind, ticket_id, str(target), why),
            params=escalation_params(target, why),
        )
        return Proposal(
            requested,
            f"Escalate to {target.label}",
            f"ticket #{ticket_id}",
            self.judge(ask, requested),
            details=(sla_text(target, ask.config),),
        )

    def describe(self, action: Action) -> str:
        """``Escalate to Finance``."""
        params = params_of(action)
        return f"Escalate to {params.get('target_label', params.get('target'))}"

    def execute(self, action: Action, fx: Effects) -> Outcome:
        """Open the escalation with its SLA."""
        params = params_of(action)
        target = EscalationTarget(params["target"])
        escalation, notice = open_escalation(action, fx, target, params.get("text", ""))
        return Outcome(
            None,
            f"Escalated to {sla_text(target, fx.policy)}, due {escalation.due_at:%d %b %H:%M} "
            f"UTC; the team's notice: {notice}. Reason: {params.get('text')}",
        )
