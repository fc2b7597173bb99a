"""Who is asking: built-in helpdesk sign-in, and our own short-lived sidebar tokens.

A helpdesk proves itself once (Zendesk JWT, Help Scout signature, or our own sign-in); we then
mint a sidebar token bound to that helpdesk account, ticket and agent. The sidebar sends it in
an ``Authorization`` header, never a cookie, so a forged cross-site request cannot carry it:
that header is the sidebar's CSRF protection. The agent's role is read from our database on
every request, so a role change or deactivation takes effect at once.

The built-in helpdesk's sign-in is a server-side session record (``core.agent_sessions``):
the cookie carries its random id, and sign-out or deactivation revokes it, which also ends the
sidebars opened from it (their tokens name the record). Zendesk and Help Scout sidebars have no
such session; their tokens live out their short TTL.
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
from sqlalchemy.orm import Session

from core import agent_sessions, audit
from core.db import session_scope
from core.db.models import Agent, AgentSession, Ticket
from core.domain import HelpdeskName, Role
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


def mint_sidebar_token(agent: Agent, ticket: Ticket, signed_in: AgentSession | None = None) -> str:
    """A token for the sidebar of one ticket, for one agent, valid SIDEBAR_TOKEN_TTL seconds.

    From the built-in helpdesk it names the sign-in session too, and dies with it.
    """
    data = {"g": agent.id, "t": ticket.id, "h": ticket.helpdesk, "a": ticket.helpdesk_account}
    if signed_in is not None:
        data["s"] = signed_in.id
    return _serializer(_SIDEBAR_SALT).dumps(data)


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


def sidebar_token_claims() -> dict[str, Any] | None:
    """This request's sidebar token's claims if we signed it and it is fresh, else None.

    Signature and age only, no database read (rate limits key on it before the view runs);
    ``sidebar_session`` checks the rest.
    """
    try:
        claims = _serializer(_SIDEBAR_SALT).loads(
            _bearer(), max_age=get_services().settings.sidebar_token_ttl
        )
    except (Unauthorized, BadSignature):  # SignatureExpired is a BadSignature
        return None
    return claims if isinstance(claims, dict) else None


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
    # A built-in ticket's sidebar lives only as long as the sign-in it was opened from.
    if (ticket.helpdesk == HelpdeskName.LOCAL or "s" in data) and not agent_sessions.is_live(
        db, data.get("s"), agent.id
    ):
        raise Unauthorized("the sign-in this sidebar was opened from has ended")
    g.sidebar_session = SidebarSession(agent=agent, ticket=ticket)
    return g.sidebar_session


# --- the built-in helpdesk's own sign-in --------------------------------------------------


def current_agent_session() -> AgentSession | None:
    """The live server-side session behind this browser's cookie, if any."""
    if "agent_session" not in g:
        record = agent_sessions.find_live(get_session(), session.get("sid"))
        if record is not None and agent_sessions.needs_touch(record):
            # Its own transaction, so noting the visit never commits a view's half-done work.
            with session_scope(get_services().session_factory) as db:
                agent_sessions.touch(db, record.id)
        g.agent_session = record
    found: AgentSession | None = g.agent_session
    return found


def current_agent() -> Agent | None:
    """The agent signed in to the built-in helpdesk, if any (session live, agent active)."""
    record = current_agent_session()
    return record.agent if record is not None else None


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
        _begin_session(db, agent)
        return redirect(_safe_next(request.args.get("next")))
    return render_template("login.html")


def _begin_session(db: Session, agent: Agent) -> None:
    """A fresh server-side session for the agent, its id in the cookie; audited."""
    previous = current_agent_session()
    if previous is not None:
        agent_sessions.revoke(previous)  # signing in again replaces this browser's session
    session.clear()  # a new id at every sign-in: a cookie planted beforehand gains nothing
    session_id, record = agent_sessions.start(db, agent)
    session["sid"] = session_id
    g.agent_session = record
    audit.record(db, actor=agent.email, event="agent.signed_in", agent_session=record.id)
    db.commit()


@bp.post("/logout")
def logout() -> Any:
    """Sign out: the session ends on the server, so a copy of the cookie is worthless too."""
    check_csrf()
    record = current_agent_session()
    if record is not None:
        agent_sessions.revoke(record)
        audit.record(get_session(), actor=record.agent.email, event="agent.signed_out")
        get_session().commit()
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
