"""The ticket sidebar: Stripe context and guarded one-click actions, in any helpdesk's iframe.

The first page load proves who is asking (built-in sign-in here; Zendesk and Help Scout in
``embedded``) and embeds a sidebar token. Everything after that is a fetch from
``static/sidebar.js`` carrying the token in the Authorization header, answered with HTML
fragments rendered (and escaped) by Jinja.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, render_template, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from core import actions, audit
from core.billing_context import BillingContext, load_context
from core.db.models import Action, Agent, Ticket, utcnow
from core.domain import ActionKind, ActionStatus, Money
from core.errors import BillingDeskError, Forbidden, InvalidInput
from core.policy.declines import retry_schedule
from core.proposals import propose, recheck
from helpdesk_app.auth import (
    SidebarSession,
    current_agent_session,
    login_required,
    mint_sidebar_token,
    sidebar_session,
)
from helpdesk_app.services import get_services, get_session
from jobs.actions import enqueue_action, enqueue_decision_note

bp = Blueprint("sidebar", __name__, url_prefix="/sidebar")

# A confirmation older than this is refused: the agent reviews again with fresh numbers.
INTENT_MAX_AGE = 15 * 60
_INTENT_SALT = "billing-desk.intent"


def render_sidebar(ticket: Ticket, token: str, agent: Agent) -> str:
    """The whole sidebar page for a ticket, token embedded for the script."""
    return render_template("sidebar.html", token=token, me=agent, **_panel_vars(ticket))


def _panel_vars(ticket: Ticket) -> dict[str, Any]:
    """Everything the panel template shows; Stripe trouble becomes a message, not an error."""
    services = get_services()
    try:
        context: BillingContext | None = load_context(
            services.gateway, get_session(), ticket, services.policy
        )
        problem = None
    except BillingDeskError as exc:
        context, problem = None, exc.public_message
    return {
        "ctx": context,
        "problem": problem,
        "ticket": ticket,
        "retry_schedule": retry_schedule(services.policy),
        "dashboard": services.settings.stripe_dashboard_url,
        "describe": actions.describe,
        "zip": zip,
    }


def _panel(session: SidebarSession) -> str:
    return render_template("sidebar/panel.html", me=session.agent, **_panel_vars(session.ticket))


@bp.get("/tickets/<int:ticket_id>")
@login_required
def local_sidebar(ticket_id: int) -> str:
    """The built-in helpdesk's sidebar: the signed-in agent on one of our tickets."""
    ticket = get_session().get(Ticket, ticket_id)
    if ticket is None or ticket.helpdesk != "local":
        abort(404, "No such ticket.")
    signed_in = current_agent_session()
    assert signed_in is not None
    token = mint_sidebar_token(signed_in.agent, ticket, signed_in)
    return render_sidebar(ticket, token, signed_in.agent)


@bp.get("/panel")
def panel() -> str:
    """The panel again, e.g. after an action finished."""
    return _panel(sidebar_session())


@bp.get("/search")
def search() -> str:
    """Customers matching the search box: email, name, tenant ID or Stripe ID."""
    sidebar_session()
    query = (request.args.get("q") or "").strip()
    if len(query) < 2:
        raise InvalidInput("Type at least 2 characters.")
    found = get_services().gateway.search_customers(query[:200])
    return render_template("sidebar/search.html", customers=found, query=query)


@bp.post("/customer")
def choose_customer() -> str:
    """The agent picks which Stripe customer this ticket is about (not yet verified)."""
    session = sidebar_session()
    customer = get_services().gateway.get_customer(_field("customer_id", "customer"))
    ticket, db = session.ticket, get_session()
    if ticket.stripe_customer_id != customer.id:
        ticket.stripe_customer_id = customer.id
        ticket.customer_match = "agent"
        ticket.customer_verified_by = ticket.customer_verified_at = None
        audit.record(
            db,
            actor=session.agent.email,
            event="customer.chosen",
            ticket_id=ticket.id,
            stripe_customer_id=customer.id,
        )
        db.commit()
    return _panel(session)


@bp.post("/verify")
def verify_customer() -> str:
    """The agent confirms the playbook's identity checklist for the shown customer."""
    session = sidebar_session()
    customer_id = _field("customer_id", "customer")
    confirmed = [c for c in ("email", "organisation", "tenant") if request.form.get(c) == "on"]
    if len(confirmed) < 3:
        raise InvalidInput(
            "Confirm all three with the customer: account email, organisation and tenant ID."
        )
    ticket, db = session.ticket, get_session()
    customer = get_services().gateway.get_customer(customer_id)
    ticket.stripe_customer_id = customer.id
    ticket.customer_match = ticket.customer_match or "agent"
    ticket.customer_verified_by = session.agent.email
    ticket.customer_verified_at = utcnow()
    audit.record(
        db,
        actor=session.agent.email,
        event="customer.verified",
        ticket_id=ticket.id,
        stripe_customer_id=customer.id,
        checks=confirmed,
    )
    db.commit()
    return _panel(session)


def _field(name: str, label: str) -> str:
    value = (request.form.get(name) or "").strip()
    if not value:
        raise InvalidInput(f"Choose a {label}.")
    return value


def _intents() -> URLSafeTimedSerializer:
    secret = get_services().settings.secret_key
    assert secret, "the sidebar token check has already required SECRET_KEY"
    return URLSafeTimedSerializer(secret, salt=_INTENT_SALT)


@bp.post("/actions/preview")
def preview() -> str:
    """What an action will do, to whom, for how much, and what policy says: confirm or not."""
    session = sidebar_session()
    services = get_services()
    context = load_context(services.gateway, get_session(), session.ticket, services.policy)
    proposal = propose(
        request.form.get("kind", ""), context, request.form, session.role, services.policy, utcnow()
    )
    intent = _intents().dumps(
        {**proposal.to_intent(), "ticket": session.ticket.id, "agent": session.agent.id}
    )
    return render_template("sidebar/confirm.html", proposal=proposal, intent=intent)


@bp.post("/actions")
def confirm() -> str:
    """Carry out a confirmed proposal: one Action per idempotency key, queued for a worker."""
    session = sidebar_session()
    try:
        intent = _intents().loads(request.form.get("intent", ""), max_age=INTENT_MAX_AGE)
    except BadSignature as exc:
        raise InvalidInput("This confirmation expired. Review the action again.") from exc
    if (intent["ticket"], intent["agent"]) != (session.ticket.id, session.agent.id):
        raise Forbidden("the confirmation belongs to another ticket or agent")
    db = get_session()
    existing = actions.action_by_key(db, intent["key"])
    if existing is None:
        services = get_services()
        context = load_context(services.gateway, db, session.ticket, services.policy)
        decision = recheck(context, intent, session.role, services.policy)
        amount = Money(intent["amount"], intent["currency"]) if intent["amount"] else None
        existing, _ = actions.request_action(
            db,
            kind=ActionKind(intent["kind"]),
            idempotency_key=intent["key"],
            ticket_id=session.ticket.id,
            requested_by=session.agent.email,
            decision=decision,
            customer_id=session.ticket.stripe_customer_id,
            charge_id=intent["charge"],
            amount=amount,
            reason=intent["reason"],
            params=intent["params"],
        )
        db.commit()
        _dispatch(existing)
    return render_template("sidebar/action.html", action=existing, describe=actions.describe)


def _dispatch(action: Action) -> None:
    """Queue the work for an action's current state: run it, and note approvals on the ticket."""
    queue = get_services().actions_queue
    if action.approval_role:  # first, so the approval is noted before the outcome
        enqueue_decision_note(queue, action)
    if action.status == ActionStatus.QUEUED:
        enqueue_action(queue, action.id)


@bp.get("/actions/<int:action_id>")
def action_status(action_id: int) -> str:
    """One action's progress, polled by the sidebar until it is done or failed."""
    session = sidebar_session()
    action = get_session().get(Action, action_id)
    if action is None or action.ticket_id != session.ticket.id:
        abort(404, "No such action on this ticket.")
    return render_template("sidebar/action.html", action=action, describe=actions.describe)


@bp.post("/actions/<int:action_id>/decision")
def decide(action_id: int) -> str:
    """A Support Lead (or the role policy named) approves or rejects a pending action."""
    session = sidebar_session()
    db = get_session()
    action = db.get(Action, action_id)
    if action is None or action.ticket_id != session.ticket.id:
        abort(404, "No such action on this ticket.")
    verdict = request.form.get("decision")
    if verdict not in ("approve", "reject"):
        raise InvalidInput("Approve or reject.")
    actions.decide(
        db,
        action,
        session.agent,
        approve=verdict == "approve",
        note=(request.form.get("note") or "")[:1000],
    )
    db.commit()
    _dispatch(action)
    # The sheet follows the action until it is done; the panel refreshes after.
    return render_template("sidebar/action.html", action=action, describe=actions.describe)
