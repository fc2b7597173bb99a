"""What the judgements of the account actions share: the question from a ticket's context, and
the same question again at the worker."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session

from core.actions.base import Asking, Effects, approvals_of
from core.billing_context import FREE_TIME, BillingContext
from core.customers import identity_now
from core.db import queries
from core.db.models import Action, Ticket
from core.domain import ActionKind, Role
from core.policy import ActionQuestion, Asker


def context_question(
    kind: ActionKind,
    context: BillingContext,
    asking: Asking,
    *,
    months: int | None = None,
    days: int | None = None,
) -> ActionQuestion:
    """The question for an action on the context's customer, as the sidebar asks it."""
    identity = context.identity
    return ActionQuestion(
        kind=kind,
        asker=asking.asker,
        requester_role=asking.requester_role,
        identity_confirmed=bool(identity and identity.confirmed),
        identity_conflict=identity.conflict if identity else None,
        customer_email=identity.email if identity else None,
        months=months,
        days=days,
        grants_in_window=context.free_time_grants,
        approvals=asking.approvals,
    )


def worker_question(
    action: Action, fx: Effects, session: Session, *, months: int | None, days: int | None
) -> ActionQuestion:
    """The same question just before a worker runs the step, from Stripe and our records now."""
    ticket = session.get(Ticket, action.ticket_id) if action.ticket_id else None
    customer_id = action.stripe_customer_id or ""
    identity = identity_now(fx.gateway, ticket, customer_id)
    since = fx.now() - timedelta(days=fx.policy.free_time_window_days)
    grants = queries.actions_of(session, customer_id, FREE_TIME, since=since, excluding=action.id)
    return ActionQuestion(
        kind=ActionKind(action.kind),
        asker=Asker.WORKER,
        requester_role=Role(action.requester_role) if action.requester_role else None,
        identity_confirmed=bool(identity and identity.confirmed),
        identity_conflict=identity.conflict if identity else None,
        customer_email=identity.email if identity else None,
        months=months,
        days=days,
        grants_in_window=len(grants),
        approvals=approvals_of(action),
    )


def who(context: BillingContext) -> str:
    """The customer as a proposal's target names them."""
    customer = context.customer
    return f"{customer.name or customer.email} ({customer.id})" if customer else "this ticket"
