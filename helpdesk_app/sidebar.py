"""The ticket sidebar: Stripe context and guarded one-click actions, in any helpdesk's iframe.

The first page load proves who is asking (built-in sign-in here; Zendesk and Help Scout in
``embedded``) and embeds a sidebar token. Everything after that is a fetch from
``static/sidebar.js`` carrying the token in the Authorization header, answered with HTML
fragments rendered (and escaped) by Jinja. Views parse, call core.actions, queue and render.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, render_template, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from core import actions, customers
from core.actions import Requested
from core.actions.dispute import evidence_step
from core.billing_context import BillingContext, load_context
from core.db.models import Action, Agent, Plan, Ticket, utcnow
from core.domain import Category, HelpdeskName, Role
from core.errors import BillingDeskError, Forbidden, InvalidInput
from core.policy import dispute_advice, escalation_route, retry_schedule, satisfies
from core.policy.disputes import DISPUTE_ROLE
from helpdesk_app.auth import (
    SidebarSession,
    current_agent_session,
    login_required,
    mint_sidebar_token,
    sidebar_session,
)
from helpdesk_app.services import get_services, get_session
from jobs.plans import enqueue_approval_note, enqueue_step

bp = Blueprint("sidebar", __name__, url_prefix="/sidebar")

# A confirmation older than this is refused: the agent reviews again with fresh numbers.
INTENT_MAX_AGE = 15 * 60
_INTENT_SALT = "billing-desk.intent"


def render_sidebar(ticket: Ticket, token: str, agent: Agent) -> str:
    """The whole sidebar page for a ticket, token embedded for the script."""
    return render_template("sidebar.html", token=token, me=agent, **_panel_vars(ticket))


def _context(ticket: Ticket) -> BillingContext:
    services = get_services()
    return load_context(services.gateway, get_session(), ticket, services.policy, utcnow())


def _panel_vars(ticket: Ticket) -> dict[str, Any]:
    """Everything the panel template shows; Stripe trouble becomes a message, not an error."""
    services = get_services()
    try:
        context: BillingContext | None = _context(ticket)
        problem = None
    except BillingDeskError as exc:
        context, problem = None, exc.public_message
    category = Category(ticket.category) if ticket.category else None
    return {
        "ctx": context,
        "problem": problem,
        "ticket": ticket,
        "retry_schedule": retry_schedule(services.policy),
        "dashboard": services.settings.stripe_dashboard_url,
        "describe": actions.describe,
        "advice": lambda dispute: dispute_advice(dispute, services.policy),
        # Disputes: the evidence and recommendation jobs.disputes stored, and who may answer.
        "dispute_evidence": lambda dispute: _dispute_evidence(context, dispute.id),
        "answers_disputes": lambda agent: satisfies(Role(agent.role), DISPUTE_ROLE),
        "route": escalation_route(category) if category else None,
        "zip": zip,
    }


def _dispute_evidence(context: BillingContext | None, dispute_id: str) -> dict[str, Any] | None:
    """The params of the step that carries a dispute's evidence, if this ticket has one."""
    step = evidence_step(context.ticket_actions, dispute_id) if context else None
    return dict(step.params or {}) if step is not None else None


def _panel(session: SidebarSession) -> str:
    return render_template("sidebar/panel.html", me=session.agent, **_panel_vars(session.ticket))


@bp.get("/tickets/<int:ticket_id>")
@login_required
def local_sidebar(ticket_id: int) -> str:
    """The built-in helpdesk's sidebar: the signed-in agent on one of our tickets."""
    ticket = get_session().get(Ticket, ticket_id)
    if ticket is None or ticket.helpdesk != HelpdeskName.LOCAL:
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
    customers.choose_customer(get_session(), session.ticket, customer, session.agent)
    get_session().commit()
    return _panel(session)


@bp.post("/verify")
def verify_customer() -> str:
    """The agent confirms the playbook's identity checklist for the customer shown."""
    session = sidebar_session()
    identity = customers.identity_of(get_services().gateway, session.ticket)
    if identity is None or identity.customer.id != _field("customer_id", "customer"):
        raise InvalidInput("Choose the customer first.")
    confirmed = [c for c in customers.CHECKLIST if request.form.get(c) == "on"]
    customers.confirm_identity(get_session(), session.ticket, identity, session.agent, confirmed)
    get_session().commit()
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


def _signed(session: SidebarSession, proposal: actions.Proposal, **extra: Any) -> str:
    """The confirmation form's signed copy of what the agent reviewed."""
    return _intents().dumps(
        {
            **proposal.requested.to_intent(),
            "title": proposal.title,
            "ticket": session.ticket.id,
            "agent": session.agent.id,
            **extra,
        }
    )


def _intent(session: SidebarSession) -> dict[str, Any]:
    """The signed confirmation back, for this ticket and agent only."""
    try:
        intent: dict[str, Any] = _intents().loads(
            request.form.get("intent", ""), max_age=INTENT_MAX_AGE
        )
    except BadSignature as exc:
        raise InvalidInput("This confirmation expired. Review the action again.") from exc
    if (intent["ticket"], intent["agent"]) != (session.ticket.id, session.agent.id):
        raise Forbidden("the confirmation belongs to another ticket or agent")
    return intent


@bp.post("/actions/preview")
def preview() -> str:
    """What an action will do, to whom, for how much, and what policy says: confirm or not."""
    session = sidebar_session()
    services = get_services()
    proposal = actions.propose(
        request.form.get("kind", ""),
        _context(session.ticket),
        request.form,
        session.agent,
        services.policy,
        utcnow(),
    )
    intent = _signed(session, proposal)
    return render_template("sidebar/confirm.html", proposal=proposal, intent=intent)


@bp.post("/actions")
def confirm() -> str:
    """Carry out a confirmed proposal: one plan per idempotency key, its first step queued."""
    session = sidebar_session()
    intent = _intent(session)
    db = get_session()
    plan, due = actions.confirm(
        db,
        _context(session.ticket),
        session.agent,
        Requested.from_intent(intent),
        str(intent.get("title") or ""),
        get_services().policy,
        utcnow(),
    )
    db.commit()
    _dispatch(plan.steps[0], due)
    return render_template("sidebar/action.html", action=plan.steps[0], describe=actions.describe)


@bp.post("/plans/<int:plan_id>/preview")
def preview_plan(plan_id: int) -> str:
    """What starting a plan the mail agent suggested would do, and what policy says."""
    session = sidebar_session()
    plan = _plan(session, plan_id)
    proposal = actions.preview_suggested(
        _context(session.ticket), plan, session.agent, get_services().policy, utcnow()
    )
    intent = _signed(session, proposal, plan=plan.id)
    return render_template("sidebar/confirm.html", proposal=proposal, intent=intent, plan=plan)


@bp.post("/plans/<int:plan_id>/start")
def start_plan(plan_id: int) -> str:
    """Start a suggested plan as this agent's request."""
    session = sidebar_session()
    plan = _plan(session, plan_id)
    if _intent(session).get("plan") != plan.id:
        raise Forbidden("the confirmation is for another plan")
    db = get_session()
    due = actions.start_plan(
        db, _context(session.ticket), plan, session.agent, get_services().policy, utcnow()
    )
    db.commit()
    _dispatch(plan.steps[0], due)
    return render_template("sidebar/action.html", action=plan.steps[0], describe=actions.describe)


@bp.post("/plans/<int:plan_id>/dismiss")
def dismiss_plan(plan_id: int) -> str:
    """Drop a suggested plan: the ticket needs something else."""
    session = sidebar_session()
    plan = _plan(session, plan_id)
    note = (request.form.get("note") or "")[:1000]  # as a decision's: the audit trail keeps it
    actions.dismiss_suggested(get_session(), plan, session.agent, note)
    get_session().commit()
    return _panel(session)


def _plan(session: SidebarSession, plan_id: int) -> Plan:
    plan = get_session().get(Plan, plan_id)
    if plan is None or plan.ticket_id != session.ticket.id:
        abort(404, "No such plan on this ticket.")
    return plan


def _dispatch(action: Action, due: Action | None) -> None:
    """Queue the work for a step's state: run what is due, and note approvals on the ticket."""
    queue = get_services().actions_queue
    if action.approval_role:  # first, so the approval is noted before the outcome
        enqueue_approval_note(queue, action)
    if due is not None:
        enqueue_step(queue, due.id)


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
    """Someone of the role policy named approves or rejects a waiting step."""
    session = sidebar_session()
    db = get_session()
    action = db.get(Action, action_id)
    if action is None or action.ticket_id != session.ticket.id:
        abort(404, "No such action on this ticket.")
    verdict = request.form.get("decision")
    if verdict not in ("approve", "reject"):
        raise InvalidInput("Approve or reject.")
    note = (request.form.get("note") or "")[:1000]
    actions.decide(db, action, session.agent, approve=verdict == "approve", note=note)
    due = actions.advance_plan(db, action.plan) if action.plan else None
    db.commit()
    _dispatch(action, due)
    # The sheet follows the action until it is done; the panel refreshes after.
    return render_template("sidebar/action.html", action=action, describe=actions.describe)
