"""What the account actions share (everything but refunds and a plan's follow-ups): their
judgement by ``core.policy.judge_action``, asked the same way in the sidebar and at the worker."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from core.actions.base import (
    ActionType,
    Ask,
    Asking,
    Effects,
    Requested,
    StepRefused,
    approvals_of,
)
from core.billing_context import FREE_TIME, BillingContext
from core.customers import Identity, identity_now
from core.db import queries
from core.db.models import Action, Ticket
from core.domain import ActionKind, Role
from core.policy import ActionQuestion, Asker, Decision, judge_action


def who(context: BillingContext) -> str:
    """The customer as a proposal's target names them."""
    customer = context.customer
    return f"{customer.name or customer.email} ({customer.id})" if customer else "this ticket"


def _question(
    kind: ActionKind,
    asking: Asking,
    identity: Identity | None,
    grants: int,
    terms: dict[str, Any],
) -> ActionQuestion:
    return ActionQuestion(
        kind=kind,
        asker=asking.asker,
        requester_role=asking.requester_role,
        identity_confirmed=bool(identity and identity.confirmed),
        identity_conflict=identity.conflict if identity else None,
        customer_email=identity.email if identity else None,
        grants_in_window=grants,
        approvals=asking.approvals,
        **terms,
    )


class AccountAction(ActionType):
    """An action judged by ``judge_action``: in the sidebar from the ticket's context, and again
    just before a worker runs it, from Stripe and our records then."""

    def terms(self, params: dict[str, Any]) -> dict[str, Any]:
        """The size of what is given (a comp's months, free days), for policy's limits."""
        return {}

    def judge(self, ask: Ask, requested: Requested) -> Decision:
        """Policy's answer for this request on the context's customer."""
        context = ask.context
        terms = self.terms(requested.params)
        question = _question(
            self.kind, ask.asking, context.identity, context.free_time_grants, terms
        )
        return judge_action(question, ask.config)

    def allowed_now(self, action: Action, fx: Effects) -> ActionQuestion:
        """Ask policy again just before the step runs; StepRefused unless it may go ahead.
        Returns the question, whose facts (the customer's address now) the step may use."""
        with fx.transaction() as session:
            ticket = session.get(Ticket, action.ticket_id) if action.ticket_id else None
            customer_id = action.stripe_customer_id or ""
            identity = identity_now(fx.gateway, ticket, customer_id)
            since = fx.now() - timedelta(days=fx.policy.free_time_window_days)
            grants = queries.actions_of(
                session, customer_id, FREE_TIME, since=since, excluding=action.id
            )
        asking = Asking(
            Asker.WORKER,
            Role(action.requester_role) if action.requester_role else None,
            approvals_of(action),
        )
        terms = self.terms(dict(action.params or {}))
        question = _question(self.kind, asking, identity, len(grants), terms)
        decision = judge_action(question, fx.policy)
        if not decision.allowed:
            raise StepRefused(decision)
        return question
