"""RQ's dashboard under ``/admin/rq``, for admins only, on our own Redis connection.

rq-dashboard's blueprint is mounted as it ships, with three guards of ours in front:

- Who: an agent signed in to the built-in helpdesk whose role in our records is ``admin``;
  anyone else signed in gets 403, a visitor is sent to sign in.
- Cross-site: its state-changing routes (requeue, delete, empty, compact) are POSTs made by
  its own jQuery. Each must come from our origin (``Origin``, or ``Referer`` where a browser
  sends no Origin) and carry ``X-Requested-With: XMLHttpRequest``, a header another site's
  page cannot add without a CORS preflight we never grant. "Requeue all" also answers GET in
  rq-dashboard; here it takes POST only.
- Its pages use inline scripts and underscore templates (``new Function``): they get a CSP of
  their own allowing that, still framed by nobody and loading nothing from elsewhere.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, abort, current_app, redirect, request, url_for

from core.domain import Role
from core.settings import DEFAULT_REDIS_URL, Settings
from helpdesk_app.auth import current_agent
from helpdesk_app.services import get_services

URL_PREFIX = "/admin/rq"
_BLUEPRINT = "rq_dashboard"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_POST_ONLY = frozenset({"rq_dashboard.requeue_all"})
DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _same_origin() -> bool:
    """Whether the request says it comes from a page of ours."""
    own = urlsplit(request.host_url)
    sent = request.headers.get("Origin") or request.headers.get("Referer")
    if not sent or sent == "null":
        return False
    parts = urlsplit(sent)
    return (parts.scheme, parts.netloc) == (own.scheme, own.netloc)


def _admins_only() -> Any:
    """Sign-in, the admin role, and for changes our origin and the XHR header."""
    agent = current_agent()
    if agent is None:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    if Role(agent.role) is not Role.ADMIN:
        abort(403, "RQ's dashboard is for admins.")
    if request.endpoint in _POST_ONLY and request.method != "POST":
        abort(405)
    if request.method not in _SAFE_METHODS and not (
        _same_origin() and request.headers.get("X-Requested-With") == "XMLHttpRequest"
    ):
        abort(403, "Changes to the queues are made from the dashboard's own page.")
    _our_connection()  # rq-dashboard's own hook reads it next
    return None


def _our_connection() -> None:
    """The dashboard works on this process's Redis client, whatever instance it names."""
    current_app.redis_conn = get_services().redis  # type: ignore[attr-defined]


def _dashboard_csp(response: Response) -> Response:
    if request.blueprint == _BLUEPRINT:
        response.headers["Content-Security-Policy"] = DASHBOARD_CSP
        response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask, settings: Settings) -> None:
    """Mount the dashboard with its guards; call after ``security.init_app`` (our CSP for its
    pages must be set before the app-wide one would be)."""
    import rq_dashboard

    # Only read for the instance switcher (shown with any password masked); the connection
    # used is ours, set by _our_connection.
    app.config["RQ_DASHBOARD_REDIS_URL"] = (settings.redis_url or DEFAULT_REDIS_URL,)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    hooks = app.before_request_funcs.setdefault(_BLUEPRINT, [])
    hooks.insert(0, _admins_only)  # before rq-dashboard's own hook opens any connection
    hooks.append(_our_connection)  # again: for an instance number, its hook connects anew
    app.after_request(_dashboard_csp)
