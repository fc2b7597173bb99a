"""Attacks on the web app's endpoints that no other test file makes (SECURITY.md cites each):
every sign-in-only page and sidebar route refuses the unauthenticated, forged, expired and
cross-site requests, another ticket's plans and actions stay out of reach of this ticket's
token, an oversized body is refused before a view reads it, and the public pages give nothing.
"""

from __future__ import annotations

import io
import re
import time

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sidebar_client import PASSWORD, open_sidebar
from sqlalchemy import func, select

from core.db import session_scope
from core.db.models import Action, Agent, AuditEvent, Plan, Ticket
from helpdesk_app.security import MAX_REQUEST_BYTES

ANN = "ann@example.com"
EVIL = "https://evil.example"


def _written(session_factory) -> tuple[int, int, int]:
    """How many plans, actions and audit events there are: an attack must add none."""
    with session_scope(session_factory) as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(model))
            for model in (Plan, Action, AuditEvent)
        )


def _signed_in(app, email: str = ANN):
    """A browser signed in to the built-in helpdesk through its login form."""
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
    client.post("/login", data={"csrf_token": csrf, "email": email, "password": PASSWORD})
    return client, csrf


def _csrf_of(client, ticket_id: int) -> str:
    page = client.get(f"/tickets/{ticket_id}").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page)[1]


@pytest.fixture
def ticket(new_ticket) -> int:
    return new_ticket("alice@example.com", "duplicate_charge")


def _suggest(session_factory, ticket_id: int, key: str) -> tuple[int, int]:
    """A one-step plan the mail agent suggested on a ticket: (plan ID, action ID)."""
    with session_scope(session_factory) as session:
        plan = Plan(
            ticket_id=ticket_id, key=key, source="mail-agent", title="Note", status="suggested"
        )
        session.add(plan)
        session.flush()
        step = Action(
            ticket_id=ticket_id,
            plan_id=plan.id,
            position=0,
            kind="note",
            status="suggested",
            idempotency_key=f"{key}-note",
            requested_by="mail-agent",
            params={"text": "Bob's note"},
        )
        session.add(step)
        session.flush()
        return plan.id, step.id


@pytest.fixture
def suggested(session_factory, new_ticket) -> tuple[int, int]:
    """A plan the mail agent suggested on another customer's ticket: (plan ID, action ID)."""
    return _suggest(session_factory, new_ticket("bob@example.com", "refund_request"), "mail:bob")


# --- the built-in helpdesk's pages: a signed-in agent only --------------------------------

SIGNED_IN_ONLY = [
    ("GET", "/"),
    ("GET", "/quarantine"),
    ("GET", "/tickets/{t}"),
    ("GET", "/tickets/{t}/thread"),
    ("GET", "/sidebar/tickets/{t}"),
    ("GET", "/helpscout/open/any-token"),
    ("POST", "/tickets/{t}/reply"),
    ("POST", "/tickets/{t}/notes"),
    ("POST", "/tickets/{t}/status"),
    ("POST", "/tickets/{t}/assignee"),
    ("POST", "/tickets/{t}/team"),
    ("POST", "/tickets/{t}/category"),
]


@pytest.mark.parametrize("method, path", SIGNED_IN_ONLY)
@pytest.mark.parametrize("cookie", [None, "forged-session-cookie"])
def test_a_visitor_who_is_not_signed_in_is_sent_to_sign_in(
    app, ticket, session_factory, method, path, cookie
):
    client = app.test_client()
    if cookie is not None:
        client.set_cookie("billing_desk_session", cookie)
    before = _written(session_factory)

    response = client.open(path.format(t=ticket), method=method, data={"text": "x"})

    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")
    assert _written(session_factory) == before


# --- the sidebar: our own bearer token, bound to ticket and agent --------------------------

SIDEBAR_ROUTES = [
    ("GET", "/sidebar/panel", {}),
    ("GET", "/sidebar/search?q=alice", {}),
    ("GET", "/sidebar/actions/{a}", {}),
    ("POST", "/sidebar/customer", {"customer_id": "cus_X"}),
    ("POST", "/sidebar/verify", {"customer_id": "cus_X", "email": "on"}),
    ("POST", "/sidebar/actions/preview", {"kind": "note", "text": "x"}),
    ("POST", "/sidebar/actions", {"intent": "x"}),
    ("POST", "/sidebar/actions/{a}/decision", {"decision": "approve"}),
    ("POST", "/sidebar/plans/{p}/preview", {}),
    ("POST", "/sidebar/plans/{p}/start", {"intent": "x"}),
    ("POST", "/sidebar/plans/{p}/dismiss", {"note": "x"}),
]
SIDEBAR_POSTS = [route for route in SIDEBAR_ROUTES if route[0] == "POST"]


def _expired_token(secret: str, data: dict, ttl: int) -> str:
    """A sidebar token we really signed, but longer ago than its TTL: a replayed old token."""

    class Past(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - ttl - 60

    return URLSafeTimedSerializer(secret, salt="billing-desk.sidebar", signer=Past).dumps(data)


@pytest.mark.parametrize("method, path, form", SIDEBAR_ROUTES)
@pytest.mark.parametrize("token", ["missing", "not bearer", "another key", "expired"])
def test_every_sidebar_route_refuses_a_missing_forged_or_expired_token(
    app, settings, people, ticket, suggested, session_factory, method, path, form, token
):
    with session_scope(session_factory) as session:
        ann_id = session.scalar(select(Agent.id).where(Agent.email == ANN))
    data = {"g": ann_id, "t": ticket, "h": "local", "a": ""}
    signed = {
        "another key": URLSafeTimedSerializer("not-our-key", salt="billing-desk.sidebar").dumps(
            data
        ),
        "expired": _expired_token(settings.secret_key, data, settings.sidebar_token_ttl),
    }
    headers = {"X-Sidebar": "1"}
    if token == "not bearer":
        headers["Authorization"] = "Basic " + signed["another key"]
    elif token in signed:
        headers["Authorization"] = f"Bearer {signed[token]}"
    plan_id, action_id = suggested
    before = _written(session_factory)

    response = app.test_client().open(
        path.format(a=action_id, p=plan_id), method=method, data=form, headers=headers
    )

    assert response.status_code == 401
    assert _written(session_factory) == before


@pytest.mark.parametrize("method, path, form", SIDEBAR_POSTS)
@pytest.mark.parametrize("origin", [EVIL, "http://localhost.evil.example", "https://localhost"])
def test_every_sidebar_post_from_another_site_is_refused(
    app, people, ticket, suggested, session_factory, method, path, form, origin
):
    sidebar = open_sidebar(app, ANN, ticket)
    plan_id, action_id = suggested
    before = _written(session_factory)

    response = sidebar.client.open(
        path.format(a=action_id, p=plan_id),
        method=method,
        data=form,
        headers={**sidebar.headers, "Origin": origin},
    )

    assert response.status_code == 403
    assert _written(session_factory) == before


@pytest.mark.parametrize(
    "method, path, form",
    [
        ("GET", "/sidebar/actions/{a}", {}),
        ("POST", "/sidebar/actions/{a}/decision", {"decision": "reject"}),
        ("POST", "/sidebar/plans/{p}/preview", {}),
        ("POST", "/sidebar/plans/{p}/start", {"intent": "x"}),
        ("POST", "/sidebar/plans/{p}/dismiss", {"note": "not needed"}),
    ],
)
def test_another_tickets_plan_or_action_is_out_of_reach_of_this_tickets_token(
    app, people, ticket, suggested, session_factory, method, path, form
):
    """IDs are guessable; the token's ticket is what decides: another customer's plan and its
    step are not found, and stay as they were."""
    sidebar = open_sidebar(app, ANN, ticket)
    plan_id, action_id = suggested
    before = _written(session_factory)

    response = sidebar.client.open(
        path.format(a=action_id, p=plan_id), method=method, data=form, headers=sidebar.headers
    )

    assert response.status_code == 404
    assert "Bob" not in response.get_data(as_text=True)
    assert _written(session_factory) == before
    with session_scope(session_factory) as session:
        assert session.get(Plan, plan_id).status == "suggested"
        assert session.get(Action, action_id).status == "suggested"


def test_a_dismissal_note_is_cut_before_the_audit_trail_keeps_it_for_ever(
    app, people, ticket, session_factory
):
    plan_id, _ = _suggest(session_factory, ticket, "mail:alice")
    sidebar = open_sidebar(app, ANN, ticket)

    response = sidebar.post(f"/plans/{plan_id}/dismiss", {"note": "spam " * 20_000})

    assert response.status_code == 200
    with session_scope(session_factory) as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.event == "plan.dismissed")
        ).one()
        assert 0 < len(event.detail["note"]) <= 1000
        assert session.get(Plan, plan_id).status == "stopped"


def test_a_search_of_one_character_is_refused(app, people, ticket):
    sidebar = open_sidebar(app, ANN, ticket)
    response = sidebar.get("/search?q=a")
    assert response.status_code == 400
    assert "at least 2 characters" in response.get_data(as_text=True)


# --- size: no body over the cap reaches a view -----------------------------------------------


def _huge_upload() -> dict:
    return {"upload": (io.BytesIO(b"x" * (MAX_REQUEST_BYTES + 1)), "huge.bin"), "text": "x"}


@pytest.mark.parametrize("path", ["/login", "/logout", "/zendesk/sidebar/ticket"])
def test_an_oversized_body_to_a_public_form_is_refused_before_it_is_read(app, path):
    response = app.test_client().post(path, data=_huge_upload(), content_type="multipart/form-data")
    assert response.status_code == 413


def test_an_oversized_note_from_a_signed_in_agent_is_refused(app, people, ticket, session_factory):
    client, _ = _signed_in(app)
    form = {**_huge_upload(), "csrf_token": _csrf_of(client, ticket)}
    before = _written(session_factory)

    response = client.post(
        f"/tickets/{ticket}/notes", data=form, content_type="multipart/form-data"
    )

    assert response.status_code == 413
    assert _written(session_factory) == before
    with session_scope(session_factory) as session:
        assert session.get(Ticket, ticket).messages == []


def test_an_oversized_form_field_to_the_sidebar_is_refused(app, people, ticket, session_factory):
    sidebar = open_sidebar(app, ANN, ticket)
    before = _written(session_factory)

    response = sidebar.post("/actions/preview", {"kind": "note", "text": "x" * MAX_REQUEST_BYTES})

    assert response.status_code == 413
    assert _written(session_factory) == before


# --- the public pages ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/static/../core/settings.py",
        "/static/%2e%2e/core/settings.py",
        "/static/..%2fpyproject.toml",
        "/static//etc/passwd",
    ],
)
def test_static_files_never_leave_the_static_folder(app, path):
    response = app.test_client().get(path, follow_redirects=True)  # "//" redirects to "/" first
    assert response.status_code == 404
    assert "SECRET_KEY" not in response.get_data(as_text=True)


def test_the_sidebar_script_is_served_as_a_script_that_cannot_be_sniffed(app):
    response = app.test_client().get("/static/sidebar.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_card_updated_page_needs_nothing_and_shows_nobody(app, people, ticket):
    response = app.test_client().get("/billing/card-updated?customer=cus_X&email=ann@example.com")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "cus_X" not in page and "ann@example.com" not in page
    assert "frame-ancestors 'self'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize("token", ["forged", "eyJ0IjoxfQ.Zz9abc.bad-signature", "x" * 5000])
def test_a_forged_update_card_link_opens_nothing(app, session_factory, token):
    before = _written(session_factory)
    response = app.test_client().get(f"/billing/update-card/{token}")
    assert response.status_code in (401, 410) and "Location" not in response.headers
    assert _written(session_factory) == before


@pytest.mark.parametrize(
    "what, form",
    [("team", {"team": "everyone"}), ("category", {"category": "free_money"})],
)
def test_a_property_no_menu_offers_is_a_clear_400(app, people, ticket, session_factory, what, form):
    client, _ = _signed_in(app)
    response = client.post(
        f"/tickets/{ticket}/{what}", data={**form, "csrf_token": _csrf_of(client, ticket)}
    )
    assert response.status_code == 400
    with session_scope(session_factory) as session:
        found = session.get(Ticket, ticket)
        assert (found.team, found.category) == (None, "duplicate_charge")


# --- operations: RQ's dashboard, /metrics, the probes ---------------------------------------

ADMIN_RQ = [
    ("GET", "/admin/rq/"),
    ("GET", "/admin/rq/0/"),
    ("GET", "/admin/rq/0/data/job/j1.json"),
    ("GET", "/admin/rq/0/data/jobs/actions/failed/10/asc/1.json"),
    ("GET", "/admin/rq/0/data/queues.json"),
    ("GET", "/admin/rq/0/data/workers.json"),
    ("GET", "/admin/rq/0/view"),
    ("GET", "/admin/rq/0/view/job/j1"),
    ("GET", "/admin/rq/0/view/jobs"),
    ("GET", "/admin/rq/0/view/jobs/actions/failed/10/asc/1"),
    ("GET", "/admin/rq/0/view/queues"),
    ("GET", "/admin/rq/0/view/workers"),
    ("GET", "/admin/rq/favicon.ico"),
    ("GET", "/admin/rq/static/js/main.js"),
    ("POST", "/admin/rq/job/j1/delete"),
    ("POST", "/admin/rq/job/j1/requeue"),
    ("POST", "/admin/rq/queue/actions/failed/empty"),
    ("POST", "/admin/rq/queue/actions/compact"),
    ("GET", "/admin/rq/requeue/actions"),
    ("POST", "/admin/rq/requeue/actions"),
]
ADMIN_RQ_POSTS = [route for route in ADMIN_RQ if route[0] == "POST"]


@pytest.fixture
def admin(session_factory, team_password_hash, people) -> str:
    """Ada, the one admin."""
    from core import agents
    from core.domain import Role

    with session_scope(session_factory) as session:
        agent = agents.save_agent(session, email="ada@example.com", name="Ada", role=Role.ADMIN)
        agent.password_hash = team_password_hash
    return "ada@example.com"


@pytest.mark.parametrize("method, path", ADMIN_RQ)
def test_rq_dashboard_sends_visitors_to_sign_in_and_refuses_other_roles(app, people, method, path):
    # Some of its URLs first redirect (308) to their canonical form: follow, then judge.
    visitor = app.test_client().open(path, method=method, follow_redirects=True)
    assert visitor.request.path == "/login" and "/admin/rq" in visitor.request.args["next"]
    for email in ("ann@example.com", "lee@example.com", "fin@example.com", "sam@example.com"):
        client, _ = _signed_in(app, email)
        refused = client.open(
            path,
            method=method,
            headers={"X-Requested-With": "XMLHttpRequest"},
            follow_redirects=True,
        )
        assert refused.status_code == 403, email


@pytest.mark.parametrize("method, path", ADMIN_RQ_POSTS)
@pytest.mark.parametrize(
    "headers",
    [
        {"X-Requested-With": "XMLHttpRequest", "Origin": EVIL},
        {"X-Requested-With": "XMLHttpRequest", "Referer": f"{EVIL}/page"},
        {"X-Requested-With": "XMLHttpRequest"},
        {"Origin": "http://localhost"},
    ],
    ids=["cross-origin", "cross-site-referer", "no-origin", "plain-form-post"],
)
def test_rq_dashboard_changes_need_our_origin_and_its_own_script(app, admin, method, path, headers):
    client, _ = _signed_in(app, admin)
    response = client.open(path, method=method, headers=headers)
    assert response.status_code == 403


def test_rq_dashboards_requeue_all_takes_no_get(app, admin):
    client, _ = _signed_in(app, admin)
    assert client.get("/admin/rq/requeue/actions").status_code == 405


@pytest.mark.parametrize(
    "environ, headers",
    [
        ({"REMOTE_ADDR": "203.0.113.9"}, {}),
        ({"REMOTE_ADDR": "127.0.0.1"}, {"X-Forwarded-For": "203.0.113.9"}),
        ({"REMOTE_ADDR": "127.0.0.1"}, {"Forwarded": "for=203.0.113.9"}),
        ({"REMOTE_ADDR": "203.0.113.9"}, {"Authorization": "Bearer guessed-token-0123456789"}),
    ],
    ids=["from-afar", "through-a-proxy", "through-a-forwarded-proxy", "guessed-token"],
)
def test_metrics_are_not_for_the_internet(app, environ, headers):
    response = app.test_client().get("/metrics", environ_base=environ, headers=headers)
    assert response.status_code == 403
    assert "refund" not in response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_the_probes_change_nothing_and_take_no_post(app, session_factory, path):
    before = _written(session_factory)
    assert app.test_client().post(path).status_code == 405
    assert app.test_client().get(path).status_code in (200, 503)
    assert _written(session_factory) == before
