"""Who is asking: built-in helpdesk sign-in, and our own short-lived sidebar tokens.

A helpdesk proves itself once (Zendesk JWT, Help Scout signature, or our own sign-in); we then
mint a sidebar token bound to that helpdesk account, ticket and agent. The sidebar sends it in
an ``Authorization`` header, never a cookie, so a forged cross-site request cannot carry it:
that header is the sidebar's CSRF protection. The agent's role is read from our database on
every request, so a role change or deactivation takes effect at once.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, g, redirect, render_template, request, session, url_for
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from core import audit
from core.db.models import Agent, Ticket
from core.domain import Role
from core.errors import Forbidden, TooManyAttempts, Unauthorized
from core.sign_in import SignInLimits, sign_in
from helpdesk_app.services import get_services, get_session

bp = Blueprint("auth", __name__)

F = TypeVar("F", bound=Callable[..., Any])

_SIDEBAR_SALT = "billing-desk.sidebar"


@dataclass(frozen=True)
class SidebarSession:
    """A verified sidebar request: this agent, on this ticket, in this helpdesk account."""

    agent: Agent
    ticket: Ticket

    @property
    def role(self) -> Role:
        """The agent's role, from our records."""
        return Role(self.agent.role)


def _serializer(salt: str) -> URLSafeTimedSerializer:
    secret = get_services().settings.secret_key
    if not secret:
        raise Unauthorized("SECRET_KEY is not set: no token can be minted or checked")
    return URLSafeTimedSerializer(secret, salt=salt)


def mint_sidebar_token(agent: Agent, ticket: Ticket) -> str:
    """A token for the sidebar of one ticket, for one agent, valid SIDEBAR_TOKEN_TTL seconds."""
    return _serializer(_SIDEBAR_SALT).dumps(
        {"g": agent.id, "t": ticket.id, "h": ticket.helpdesk, "a": ticket.helpdesk_account}
    )


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("no sidebar token in the Authorization header")
    return token.strip()


def _check_origin() -> None:
    """Refuse a state-changing request whose Origin is another site (on top of the header)."""
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        own = urlsplit(request.host_url)
        sent = urlsplit(origin)
        if (sent.scheme, sent.netloc) != (own.scheme, own.netloc):
            raise Forbidden(f"cross-origin request from {origin}")


def sidebar_session() -> SidebarSession:
    """The verified sidebar session of this request, or Unauthorized."""
    if "sidebar_session" in g:
        cached: SidebarSession = g.sidebar_session
        return cached
    settings = get_services().settings
    try:
        data = _serializer(_SIDEBAR_SALT).loads(_bearer(), max_age=settings.sidebar_token_ttl)
    except SignatureExpired as exc:
        raise Unauthorized("sidebar token expired") from exc
    except BadSignature as exc:
        raise Unauthorized("sidebar token is not ours") from exc
    if request.method != "GET":
        _check_origin()
    db = get_session()
    agent = db.get(Agent, data.get("g"))
    ticket = db.get(Ticket, data.get("t"))
    if agent is None or not agent.active:
        raise Unauthorized("the token's agent is unknown or deactivated")
    if ticket is None or (ticket.helpdesk, ticket.helpdesk_account) != (data["h"], data["a"]):
        raise Unauthorized("the token's ticket does not match")
    g.sidebar_session = SidebarSession(agent=agent, ticket=ticket)
    return g.sidebar_session


# --- the built-in helpdesk's own sign-in --------------------------------------------------


def current_agent() -> Agent | None:
    """The agent signed in to the built-in helpdesk, if any (and still active)."""
    agent_id = session.get("agent_id")
    if agent_id is None:
        return None
    agent = get_session().get(Agent, agent_id)
    return agent if agent is not None and agent.active else None


def login_required(view: F) -> F:
    """Send visitors who are not signed in to the sign-in page, then back."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_agent() is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def csrf_token() -> str:
    """The signed-in browser's CSRF token for the built-in helpdesk's forms."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    token: str = session["csrf"]
    return token


def check_csrf() -> None:
    """Refuse a form post that does not carry the session's CSRF token."""
    sent = request.form.get("csrf_token", "")
    if not sent or not secrets.compare_digest(sent, session.get("csrf", "")):
        abort(400, "The form expired. Reload the page and try again.")


def _is_local_path(target: str) -> bool:
    """True for a path on this site, as a browser would read it after its own clean-up."""
    # Browsers drop tabs and newlines and read a backslash as "/", so "/<TAB>/evil" and
    # "/<backslash>evil" both go to //evil, another host: none of those characters is allowed.
    if any(char.isspace() or not char.isprintable() or char == "\\" for char in target):
        return False
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return False
    return target.startswith("/") and not target.startswith("//")


def _safe_next(target: str | None) -> str:
    # Only local paths: an open redirect would let a phishing link borrow our sign-in page.
    if target and _is_local_path(target):
        return target
    return url_for("helpdesk.inbox")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Sign in to the built-in helpdesk with email and password."""
    if request.method == "POST":
        check_csrf()
        db = get_session()
        try:
            agent = sign_in(
                db,
                email=request.form.get("email", ""),
                password=request.form.get("password", ""),
                # The peer's address: behind a proxy, werkzeug's ProxyFix must set it.
                address=request.remote_addr or "",
                limits=SignInLimits.from_settings(get_services().settings),
            )
        except TooManyAttempts as refused:
            flash(refused.public_message)  # the same words whether the password was right
            return render_template("login.html"), 429
        db.commit()  # the attempt counts (and a failure is audited) in every web process
        if agent is None:
            flash("Wrong email or password.")
            return render_template("login.html"), 401
        session.clear()
        session["agent_id"] = agent.id
        audit.record(db, actor=agent.email, event="agent.signed_in")
        db.commit()
        return redirect(_safe_next(request.args.get("next")))
    return render_template("login.html")


@bp.post("/logout")
def logout() -> Any:
    """Sign out."""
    check_csrf()
    session.clear()
    return redirect(url_for("auth.login"))


def init_app(app: Any) -> None:
    """Session cookie settings and the template helpers for sign-in state."""
    secure = get_services().settings.public_url.startswith("https://")
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        # The built-in helpdesk is first-party, so Lax is enough; the embedded sidebar uses
        # bearer tokens, never cookies, so it needs no SameSite=None cookie at all.
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure,
        SESSION_COOKIE_NAME="billing_desk_session",
    )
    app.context_processor(lambda: {"current_agent": current_agent(), "csrf_token": csrf_token})
