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

from flask import Blueprint, g, render_template, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from core import one_time_tokens
from core.agents import agent_for_identity
from core.domain import HelpdeskName
from core.errors import ConfigError, NotFound, Unauthorized
from core.helpdesks.mirrored import mirror_ticket
from helpdesk_app.auth import mint_sidebar_token
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


# Help Scout's App Platform renders our URL in the conversation sidebar and signs its query.
HELPSCOUT_PARAMS = ("conversationId", "customerEmail", "customerName", "subject", "userId")


@bp.get("/helpscout/sidebar")
def helpscout_sidebar() -> Any:
    """Help Scout's signed sidebar request: verify, mirror the conversation, show the sidebar."""
    settings = get_services().settings
    if not settings.helpscout_app_secret:
        raise ConfigError("HELPSCOUT_APP_SECRET", "is not set")
    verify_helpscout_params(list(request.args.items(multi=True)), settings.helpscout_app_secret)
    args = request.args
    account = args.get("mailboxId", "")
    db = get_session()
    try:
        agent = agent_for_identity(
            db,
            helpdesk=HelpdeskName.HELPSCOUT,
            account=account,
            external_user_id=args.get("userId", ""),
        )
    except NotFound:
        return _not_linked(HelpdeskName.HELPSCOUT, account, args.get("userId", ""))
    ticket = mirror_ticket(
        db,
        helpdesk=HelpdeskName.HELPSCOUT,
        account=account,
        external_id=args.get("conversationId", ""),
        subject=args.get("subject", ""),
        requester_email=args.get("customerEmail", ""),
        requester_name=args.get("customerName"),
    )
    db.commit()
    return render_sidebar(ticket, mint_sidebar_token(agent, ticket), agent)
