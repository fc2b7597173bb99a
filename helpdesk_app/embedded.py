"""Entry points for the sidebar inside Zendesk and Help Scout.

Each helpdesk proves the request came from its installation of our app (Zendesk: an RS256
JWT posted as ``token``; Help Scout: an HMAC of the query). The agent behind it must be linked
to one of our agent records (``billing-desk agents link``): roles are ours, never the iframe's.
In Zendesk the agent is the JWT's ``sub`` and nothing else: ZAF's ``currentUser`` is whatever
the browser says, so a page that could post a form could otherwise pick its own agent.
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import Blueprint, g, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from core import one_time_tokens
from core.agents import agent_for_identity
from core.db.models import Ticket
from core.domain import HelpdeskName
from core.errors import ConfigError, InvalidInput, NotFound, Unauthorized
from core.helpdesks.helpscout import ACCOUNT as HELPSCOUT_ACCOUNT
from core.helpdesks.helpscout import HelpScoutHelpdesk
from core.helpdesks.mirrored import mirror_ticket
from core.helpdesks.zendesk import ZendeskHelpdesk
from helpdesk_app.auth import (
    current_agent,
    current_agent_session,
    login_required,
    mint_sidebar_token,
)
from helpdesk_app.services import get_services, get_session
from helpdesk_app.sidebar import render_sidebar
from helpdesk_app.signed_requests import verify_helpscout_params, verify_zendesk_token

bp = Blueprint("embedded", __name__)

ZAF_SDK = "https://static.zdassets.com/zendesk_app_framework_sdk/2.0/zaf_sdk.min.js"
_BOOTSTRAP_SALT = "billing-desk.zendesk-bootstrap"
# Seconds between Zendesk's signed load and ZAF's answer; the bootstrap is also single-use.
BOOTSTRAP_MAX_AGE = 300


def _bootstrap_serializer() -> URLSafeTimedSerializer:
    secret = get_services().settings.secret_key
    if not secret:
        raise ConfigError("SECRET_KEY", "is not set")
    return URLSafeTimedSerializer(secret, salt=_BOOTSTRAP_SALT)


def _not_linked(helpdesk: str, account: str, user_id: str) -> tuple[str, int]:
    return render_template(
        "not_linked.html", helpdesk=helpdesk, account=account, user_id=user_id
    ), 403


def _no_agent() -> tuple[str, int]:
    return render_template("zendesk_no_agent.html"), 401


@bp.post("/zendesk/sidebar")
def zendesk_sidebar() -> Any:
    """Zendesk's signed first request: verify it, then let ZAF tell us which ticket is open."""
    settings = get_services().settings
    if not settings.zendesk_app_public_key or not settings.zendesk_subdomain:
        raise ConfigError("ZENDESK_APP_PUBLIC_KEY", "and ZENDESK_SUBDOMAIN must be set")
    claims = verify_zendesk_token(
        request.form.get("token", ""),
        public_key_pem=settings.zendesk_app_public_key,
        subdomain=settings.zendesk_subdomain,
        installation_id=settings.zendesk_installation_id,
    )
    if claims.user_id is None:
        return _no_agent()
    # A random id lets the bootstrap be spent on first use (see _spend_bootstrap).
    bootstrap = _bootstrap_serializer().dumps(
        {
            "sub": claims.subdomain,
            "user": claims.user_id,
            "inst": claims.installation_id,
            "jti": secrets.token_urlsafe(16),
        }
    )
    g.csp_script_src = ZAF_SDK
    return render_template("zendesk.html", bootstrap=bootstrap, zaf_sdk=ZAF_SDK)


def _spend_bootstrap(db: Session, raw: str, ticket_id: str) -> dict[str, Any]:
    """The bootstrap's claims, on its first use only: it opens one ticket, once, then is spent."""
    try:
        data = _bootstrap_serializer().loads(raw, max_age=BOOTSTRAP_MAX_AGE)
    except BadSignature as exc:
        raise Unauthorized("Zendesk bootstrap token missing, forged or expired") from exc
    if not isinstance(data, dict) or not data.get("jti") or not data.get("user"):
        raise Unauthorized("Zendesk bootstrap token names no agent or has no id")
    bound_to = f"zendesk:{data['sub']}:ticket:{ticket_id}"[:200]
    if not one_time_tokens.spend(
        db, kind=one_time_tokens.ZENDESK_BOOTSTRAP, token_id=str(data["jti"]), bound_to=bound_to
    ):
        raise Unauthorized("Zendesk bootstrap token was used already")
    db.commit()  # spent even if what follows refuses: a replay must never get a second try
    return data


@bp.post("/zendesk/sidebar/ticket")
def zendesk_ticket() -> Any:
    """The open ticket, as ZAF reported it, bound to the verified installation and agent."""
    db = get_session()
    ticket_id = request.form.get("ticket_id", "")
    data = _spend_bootstrap(db, request.form.get("bootstrap", ""), ticket_id)
    # Only the verified JWT's subject names the agent; the form is the browser's word.
    account, user_id = data["sub"], str(data["user"])
    try:
        agent = agent_for_identity(
            db, helpdesk=HelpdeskName.ZENDESK, account=account, external_user_id=user_id
        )
    except NotFound:
        return _not_linked(HelpdeskName.ZENDESK, account, user_id)
    services = get_services()
    if services.settings.helpdesk == HelpdeskName.ZENDESK and ticket_id.isdigit():
        # The team works in this Zendesk and we hold its API token: the ticket and its
        # requester are read from Zendesk itself, not from what ZAF said in the browser.
        zendesk = services.helpdesks.named(HelpdeskName.ZENDESK, db)
        assert isinstance(zendesk, ZendeskHelpdesk)
        ticket = db.get(Ticket, zendesk.receive(ticket_id)[0])
        assert ticket is not None
    else:
        ticket = mirror_ticket(
            db,
            helpdesk=HelpdeskName.ZENDESK,
            account=account,
            external_id=ticket_id,
            subject=request.form.get("subject", ""),
            requester_email=request.form.get("requester_email", ""),
            requester_name=request.form.get("requester_name"),
            organization=request.form.get("organization"),
        )
    db.commit()
    return render_sidebar(ticket, mint_sidebar_token(agent, ticket), agent)


# Help Scout's App Platform loads our callback URL with the conversation and customer IDs as
# kebab-case query params (``conversation-id``, ``customer-id``) and an ``X-HelpScout-Signature``
# over the others (developer.helpscout.com/apps/guides/signature-validation, and apps built on
# it). Nothing in that signed query names the customer's email or the agent: the conversation
# is read from Help Scout's API, and the agent is whoever the query signs (``user-id``, when
# Help Scout sends it) or else whoever is signed in to Billing Desk in a window of their own.
HELPSCOUT_CONVERSATION = ("conversation-id", "conversationId")
HELPSCOUT_USER = ("user-id", "userId")
_OPEN_SALT = "billing-desk.helpscout-open"
OPEN_MAX_AGE = 600


def _signed(names: tuple[str, ...]) -> str:
    """The first of these query params Help Scout sent (the signature covers them all)."""
    for name in names:
        value = request.args.get(name, "").strip()
        if value:
            return value
    return ""


def _open_serializer() -> URLSafeTimedSerializer:
    secret = get_services().settings.secret_key
    if not secret:
        raise ConfigError("SECRET_KEY", "is not set")
    return URLSafeTimedSerializer(secret, salt=_OPEN_SALT)


@bp.get("/helpscout/sidebar")
def helpscout_sidebar() -> Any:
    """Help Scout's signed sidebar request: verify, mirror the conversation from Help Scout's
    API, and show the sidebar (or, with no agent in the signed query, a way to open it)."""
    services = get_services()
    settings = services.settings
    if not settings.helpscout_app_secret:
        raise ConfigError("HELPSCOUT_APP_SECRET", "is not set")
    verify_helpscout_params(list(request.args.items(multi=True)), settings.helpscout_app_secret)
    conversation_id = _signed(HELPSCOUT_CONVERSATION)
    if not conversation_id.isdigit():
        raise InvalidInput("Help Scout did not say which conversation is open.")
    db = get_session()
    ticket_id, _snapshot = _helpscout(db).receive(conversation_id)
    db.commit()
    ticket = db.get(Ticket, ticket_id)
    assert ticket is not None
    user_id = _signed(HELPSCOUT_USER)
    if not user_id:
        token = _open_serializer().dumps({"t": ticket.id})
        return render_template(
            "helpscout_open.html", ticket=ticket, open_url=url_for(".helpscout_open", token=token)
        )
    try:
        # Help Scout's user IDs span the account: a link made under a mailbox ID counts too.
        agent = agent_for_identity(
            db, helpdesk=HelpdeskName.HELPSCOUT, account=None, external_user_id=user_id
        )
    except NotFound:
        return _not_linked(HelpdeskName.HELPSCOUT, HELPSCOUT_ACCOUNT, user_id)
    return render_sidebar(ticket, mint_sidebar_token(agent, ticket), agent)


@bp.get("/helpscout/open/<token>")
@login_required
def helpscout_open(token: str) -> Any:
    """The sidebar of a Help Scout conversation in a window of its own, for the agent signed
    in to Billing Desk; the token (from a verified Help Scout request) names the conversation."""
    try:
        data = _open_serializer().loads(token, max_age=OPEN_MAX_AGE)
    except BadSignature as exc:
        raise Unauthorized("Help Scout link missing, forged or expired") from exc
    db = get_session()
    ticket = db.get(Ticket, data.get("t")) if isinstance(data, dict) else None
    if ticket is None or ticket.helpdesk != HelpdeskName.HELPSCOUT:
        raise NotFound("That conversation is not known here.")
    agent = current_agent()
    assert agent is not None
    return render_sidebar(ticket, mint_sidebar_token(agent, ticket, current_agent_session()), agent)


def _helpscout(db: Session) -> HelpScoutHelpdesk:
    helpdesk = get_services().helpdesks.named(HelpdeskName.HELPSCOUT, db)
    assert isinstance(helpdesk, HelpScoutHelpdesk)
    return helpdesk
