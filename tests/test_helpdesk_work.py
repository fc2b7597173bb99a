"""Working tickets in the built-in helpdesk: reply, note, status, assignment, team queue,
category corrections and their gates, the inbox's filters and search, "waiting for me", and
escalations picked up by the people who work them.

Through Flask's test client on the real app, with the real worker (burst) sending replies to
the real SMTP server, a real Redis and the test database.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sidebar_client import PASSWORD
from sqlalchemy import func, select

from core import agents
from core.db import queries, session_scope
from core.db.models import (
    Action,
    AuditEvent,
    Escalation,
    Plan,
    Ticket,
    TicketMessage,
    utcnow,
)
from core.domain import EscalationStatus, Role, TicketStatus
from core.tickets import CLAIMING_STATUSES

pytestmark = pytest.mark.e2e

ANN, BEA, LEE, SAM, AVERY, FIN = (
    "ann@example.com",
    "bea@example.com",
    "lee@example.com",
    "sam@example.com",
    "avery@example.com",
    "fin@example.com",
)
ALICE = "alice@example.com"
CUSTOMER_MESSAGE_ID = "<first-mail@alice.example.com>"
XSS = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


# --- helpers ---------------------------------------------------------------------------------


class Desk:
    """One agent signed in to the built-in helpdesk, posting its forms as a browser would."""

    def __init__(self, client) -> None:
        self.client = client
        self.csrf = ""

    def sign_in(self, email: str) -> Desk:
        page = self.client.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        form = {"csrf_token": token, "email": email, "password": PASSWORD}
        assert self.client.post("/login", data=form).status_code == 302
        page = self.client.get("/").get_data(as_text=True)
        self.csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        return self

    def page(self, path: str, **query):
        return self.client.get(path, query_string=query)

    def post(self, ticket_id: int, what: str, **form):
        data = {"csrf_token": self.csrf, **form}
        return self.client.post(f"/tickets/{ticket_id}/{what}", data=data)

    def form_key(self, ticket_id: int) -> str:
        page = self.page(f"/tickets/{ticket_id}").get_data(as_text=True)
        return re.search(r'name="form_key" value="([^"]+)"', page).group(1)

    def reply(self, ticket_id: int, text: str, **extra):
        return self.post(ticket_id, "reply", text=text, form_key=self.form_key(ticket_id), **extra)


@pytest.fixture
def desk(app, people):
    """Sign in anyone of the team (conftest.TEAM) in a browser of their own."""
    return lambda email: Desk(app.test_client()).sign_in(email)


@pytest.fixture
def alice_ticket(session_factory) -> int:
    """Alice's open ticket, her email its first message."""
    with session_scope(session_factory) as session:
        ticket = Ticket(
            subject="Charged twice",
            requester_email=ALICE,
            requester_name="Alice Martin",
            status="open",
            category="duplicate_charge",
        )
        ticket.messages.append(
            TicketMessage(
                kind="inbound",
                author=ALICE,
                body="I was charged $49 twice today.",
                message_id=CUSTOMER_MESSAGE_ID,
            )
        )
        session.add(ticket)
        session.flush()
        return ticket.id


@pytest.fixture
def new_ticket(session_factory):
    """Open a built-in ticket from ``requester`` (any field may be given, status too)."""

    def make(requester: str, category: str | None = None, **fields) -> int:
        fields.setdefault("subject", "Billing")
        fields.setdefault("status", "open")
        with session_scope(session_factory) as session:
            row = Ticket(requester_email=requester, category=category, **fields)
            session.add(row)
            session.flush()
            return row.id

    return make


def ticket_of(session_factory, ticket_id: int) -> Ticket:
    with session_scope(session_factory) as session:
        ticket = session.get(Ticket, ticket_id)
        _ = ticket.messages  # loaded while the session is open
        return ticket


def notes_of(session_factory, ticket_id: int) -> list[str]:
    return [m.body for m in ticket_of(session_factory, ticket_id).messages if m.kind == "note"]


def events(session_factory, ticket_id: int, event: str) -> list[AuditEvent]:
    with session_scope(session_factory) as session:
        return list(
            session.scalars(
                select(AuditEvent).where(
                    AuditEvent.ticket_id == ticket_id, AuditEvent.event == event
                )
            )
        )


def escalate(session_factory, ticket_id: int, target: str, due_in: timedelta) -> int:
    """An open escalation of the ticket to a team, due ``due_in`` from now (negative: breached)."""
    with session_scope(session_factory) as session:
        row = Escalation(
            ticket_id=ticket_id,
            target=target,
            reason="Per the playbook",
            requested_by="mail-agent",
            due_at=utcnow() + due_in,
        )
        session.add(row)
        session.flush()
        return row.id


def escalation_status(session_factory, escalation_id: int) -> Escalation:
    with session_scope(session_factory) as session:
        return session.get(Escalation, escalation_id)


def body(response) -> str:
    return response.get_data(as_text=True)


# --- replying ----------------------------------------------------------------------------------


def test_a_reply_goes_to_the_requester_once_threaded_on_their_email(
    desk, alice_ticket, run_worker, outbox, session_factory
):
    ann = desk(ANN)
    text = f"Hi Alice,\r\n\r\nWe refunded the second charge.\r\nLine two {XSS}"
    form = {"text": text, "form_key": ann.form_key(alice_ticket), "to": "mallory@evil.example"}
    first = ann.post(alice_ticket, "reply", **form, cc="mallory@evil.example")
    again = ann.post(alice_ticket, "reply", **form)  # a double click sends the form twice
    assert first.status_code == again.status_code == 303
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Plan)) == 1

    run_worker()
    run_worker()  # a second pass finds nothing more to send
    assert len(outbox) == 1
    sent = outbox[0]
    assert sent["To"] == ALICE and "mallory" not in str(sent).lower()
    assert sent["In-Reply-To"] == CUSTOMER_MESSAGE_ID
    assert CUSTOMER_MESSAGE_ID in sent["References"]
    assert f"[BD-{alice_ticket}]" in sent["Subject"]
    plain = sent.get_body(("plain",)).get_content().replace("\r\n", "\n")  # SMTP's line ends
    assert "Hi Alice,\n\nWe refunded the second charge.\nLine two" in plain
    html = sent.get_body(("html",)).get_content()
    assert "<script>alert(2)" not in html and "&lt;script&gt;alert(2)" in html
    assert "We refunded the second charge.<br>Line two" in html

    outbound = [
        m for m in ticket_of(session_factory, alice_ticket).messages if m.kind == "outbound"
    ]
    assert len(outbound) == 1 and outbound[0].message_id == sent["Message-ID"]
    assert "\r" not in outbound[0].body  # the browser's CRLF became plain line breaks
    thread = body(ann.page(f"/tickets/{alice_ticket}/thread"))
    assert "Reply sent" in thread and "We refunded the second charge." in thread
    assert "<script>alert(2)" not in thread


def test_the_thread_shows_a_reply_as_sending_until_the_worker_sent_it(
    desk, alice_ticket, run_worker
):
    ann = desk(ANN)
    ann.reply(alice_ticket, "On its way")
    thread = body(ann.page(f"/tickets/{alice_ticket}/thread"))
    assert "Sending…" in thread and 'data-busy="yes"' in thread
    run_worker()
    thread = body(ann.page(f"/tickets/{alice_ticket}/thread"))
    assert "Sending…" not in thread and "Reply sent" in thread and 'data-busy="no"' in thread


def test_send_and_set_pending_waits_for_the_customer(
    desk, alice_ticket, run_worker, outbox, session_factory
):
    ann = desk(ANN)
    assert ann.reply(alice_ticket, "Could you send the receipt?", then="pending").status_code == 303
    assert ticket_of(session_factory, alice_ticket).status == "pending"
    run_worker()
    assert len(outbox) == 1
    assert any(
        "Status: open → pending" in n and ANN in n for n in notes_of(session_factory, alice_ticket)
    )


@pytest.mark.parametrize(
    "text, message",
    [("   ", "Write the reply first."), ("x" * 20_001, "longer than 20000 characters")],
)
def test_an_empty_or_huge_reply_is_a_clear_400(desk, alice_ticket, session_factory, text, message):
    response = desk(ANN).reply(alice_ticket, text)
    assert response.status_code == 400 and message in body(response)
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Plan)) == 0


def test_a_reply_without_the_forms_key_is_refused(desk, alice_ticket):
    response = desk(ANN).post(alice_ticket, "reply", text="Hello")
    assert response.status_code == 400 and "Reload the page" in body(response)


# --- notes -------------------------------------------------------------------------------------


def test_an_internal_note_is_the_agents_and_audited(desk, alice_ticket, session_factory, outbox):
    ann = desk(ANN)
    assert ann.post(alice_ticket, "notes", text=f"Called the bank {XSS}").status_code == 303
    (note,) = [m for m in ticket_of(session_factory, alice_ticket).messages if m.kind == "note"]
    assert note.author == ANN and note.body.startswith("Called the bank")
    assert len(events(session_factory, alice_ticket, "ticket.noted")) == 1
    page = body(ann.page(f"/tickets/{alice_ticket}"))
    assert "Internal note" in page and "<script>alert(2)" not in page
    assert outbox == []  # only agents see it
    assert ann.post(alice_ticket, "notes", text="").status_code == 400


# --- status ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["pending", "solved", "closed"])
def test_every_status_is_set_audited_and_noted(desk, alice_ticket, session_factory, status):
    ann = desk(ANN)
    assert ann.post(alice_ticket, "status", status=status).status_code == 303
    ticket = ticket_of(session_factory, alice_ticket)
    assert ticket.status == status
    assert (ticket.closed_at is not None) == (status == "closed")
    (changed,) = events(session_factory, alice_ticket, "ticket.status_changed")
    assert changed.actor == ANN and changed.detail == {"was": "open", "now": status}
    assert f"Status: open → {status}, by {ANN}." in notes_of(session_factory, alice_ticket)

    # And back to open: the resolution goes with it.
    assert ann.post(alice_ticket, "status", status="open").status_code == 303
    ticket = ticket_of(session_factory, alice_ticket)
    assert (ticket.status, ticket.resolution, ticket.closed_at) == ("open", None, None)


def test_setting_the_same_status_changes_nothing(desk, alice_ticket, session_factory):
    desk(ANN).post(alice_ticket, "status", status="open")
    assert events(session_factory, alice_ticket, "ticket.status_changed") == []
    assert notes_of(session_factory, alice_ticket) == []


@pytest.mark.parametrize("status", ["reopened", "", "OPEN", "closed\x00"])
def test_an_unknown_status_is_a_clear_400(desk, alice_ticket, session_factory, status):
    response = desk(ANN).post(alice_ticket, "status", status=status)
    assert response.status_code == 400 and "Choose a status" in body(response)
    assert ticket_of(session_factory, alice_ticket).status == "open"


# --- assignment and team queues --------------------------------------------------------------


def test_assign_to_a_person_to_yourself_and_to_nobody(desk, alice_ticket, session_factory):
    ann = desk(ANN)
    assert ann.post(alice_ticket, "assignee", assignee=BEA.upper()).status_code == 303
    assert ticket_of(session_factory, alice_ticket).assignee == BEA
    assert ann.post(alice_ticket, "assignee", assignee="me").status_code == 303
    assert ticket_of(session_factory, alice_ticket).assignee == ANN
    assert ann.post(alice_ticket, "assignee", assignee="").status_code == 303
    assert ticket_of(session_factory, alice_ticket).assignee is None
    changes = [
        (e.detail["was"], e.detail["now"])
        for e in events(session_factory, alice_ticket, "ticket.assigned")
    ]
    assert changes == [(None, BEA), (BEA, ANN), (ANN, None)]
    notes = notes_of(session_factory, alice_ticket)
    assert (
        notes[0] == f"Assigned to Bea Agent <{BEA}>, by {ANN}."
        and notes[-1] == f"Unassigned, by {ANN}."
    )


@pytest.mark.parametrize("who", ["nobody@example.com", "otto@example.com", "x" * 400])
def test_only_an_active_agent_can_be_assigned(desk, alice_ticket, session_factory, who):
    with session_scope(session_factory) as session:
        agents.deactivate(session, agents.find_by_email(session, "otto@example.com"))
    response = desk(ANN).post(alice_ticket, "assignee", assignee=who)
    assert response.status_code == 400 and "active agents" in body(response)
    assert ticket_of(session_factory, alice_ticket).assignee is None


def test_move_to_a_team_queue_and_out(desk, alice_ticket, session_factory):
    ann = desk(ANN)
    assert ann.post(alice_ticket, "team", team="finance").status_code == 303
    assert ticket_of(session_factory, alice_ticket).team == "finance"
    assert ann.post(alice_ticket, "team", team="").status_code == 303
    assert ticket_of(session_factory, alice_ticket).team is None
    assert notes_of(session_factory, alice_ticket) == [
        f"Moved to the Finance queue, by {ANN}.",
        f"Taken out of the Finance queue, by {ANN}.",
    ]
    assert len(events(session_factory, alice_ticket, "ticket.team_changed")) == 2
    assert ann.post(alice_ticket, "team", team="marketing").status_code == 400


# --- category corrections and their gates -----------------------------------------------------


def test_a_correction_is_audited_and_noted(desk, alice_ticket, session_factory):
    assert desk(ANN).post(alice_ticket, "category", category="refund_request").status_code == 303
    ticket = ticket_of(session_factory, alice_ticket)
    assert ticket.category == "refund_request" and ticket.category_confidence is None
    (corrected,) = events(session_factory, alice_ticket, "ticket.category_corrected")
    assert corrected.detail == {"was": "duplicate_charge", "now": "refund_request"}
    assert notes_of(session_factory, alice_ticket) == [
        f"Category: duplicate_charge → refund_request, by {ANN}."
    ]


@pytest.mark.parametrize(
    "gated", ["card_not_recognized", "chargeback", "unused_module", "general_dissatisfaction"]
)
def test_anyone_may_put_a_ticket_into_a_gated_category(desk, alice_ticket, session_factory, gated):
    assert desk(ANN).post(alice_ticket, "category", category=gated).status_code == 303
    assert ticket_of(session_factory, alice_ticket).category == gated


# (gated category, people who may take a ticket out of it, people who may not)
GATES = [
    ("card_not_recognized", [SAM], [ANN, LEE, FIN, AVERY]),
    ("chargeback", [FIN], [ANN, LEE, SAM, AVERY]),
    ("unused_module", [AVERY], [ANN, LEE, SAM, FIN]),
    ("general_dissatisfaction", [AVERY], [ANN, LEE, SAM, FIN]),
]


@pytest.mark.parametrize("gated, allowed, refused", GATES)
def test_leaving_a_gated_category_needs_the_gates_role(
    desk, new_ticket, session_factory, gated, allowed, refused
):
    for who in refused:
        ticket_id = new_ticket(ALICE, gated)
        # The role is ours: whatever the form claims, the agent's own record decides.
        response = desk(who).post(ticket_id, "category", category="other", role="admin")
        assert response.status_code == 403, who
        assert "only" in body(response) and gated.replace("_", " ") in body(response)
        assert ticket_of(session_factory, ticket_id).category == gated
        assert events(session_factory, ticket_id, "ticket.category_corrected") == []
        assert notes_of(session_factory, ticket_id) == []
    for who in allowed:
        ticket_id = new_ticket(ALICE, gated)
        assert desk(who).post(ticket_id, "category", category="other").status_code == 303
        assert ticket_of(session_factory, ticket_id).category == "other"


def test_an_admin_may_lift_every_gate(desk, new_ticket, session_factory):
    with session_scope(session_factory) as session:
        agents.save_agent(
            session, email="ada@example.com", name="Ada Admin", role=Role.ADMIN, password=PASSWORD
        )
    ada = desk("ada@example.com")
    for gated, _, _ in GATES:
        ticket_id = new_ticket(ALICE, gated)
        assert ada.post(ticket_id, "category", category="refund_request").status_code == 303
        assert ticket_of(session_factory, ticket_id).category == "refund_request"


def test_a_gate_holds_between_gated_categories(desk, new_ticket, session_factory):
    """Security may take a ticket out of card not recognised, but not out of chargeback."""
    ticket_id = new_ticket(ALICE, "chargeback")
    response = desk(SAM).post(ticket_id, "category", category="card_not_recognized")
    assert response.status_code == 403 and "Finance" in body(response)
    assert ticket_of(session_factory, ticket_id).category == "chargeback"


@pytest.mark.parametrize("status", ["solved", "closed"])
def test_solving_a_gated_ticket_is_the_gates_role_too(desk, new_ticket, session_factory, status):
    """Refund judgement reads active tickets (open, pending): solving or closing one lifts its
    claim as surely as a new category would."""
    ticket_id = new_ticket(ALICE, "card_not_recognized")
    response = desk(ANN).post(ticket_id, "status", status=status)
    assert response.status_code == 403 and "Security" in body(response)
    assert ticket_of(session_factory, ticket_id).status == "open"
    assert desk(SAM).post(ticket_id, "status", status=status).status_code == 303
    assert ticket_of(session_factory, ticket_id).status == status


def test_the_gate_follows_what_refund_judgement_reads(session_factory, new_ticket):
    """CLAIMING_STATUSES are exactly the statuses core.db.queries.open_tickets_of counts."""
    for status in TicketStatus:
        ticket_id = new_ticket(ALICE, "chargeback", status=str(status))
        with session_scope(session_factory) as session:
            counted = {t.id for t in queries.open_tickets_of(session, "cus_none", ALICE)}
        assert (ticket_id in counted) == (status in CLAIMING_STATUSES), status


def test_pending_keeps_a_gated_tickets_claim_so_any_agent_may_set_it(
    desk, new_ticket, session_factory
):
    ticket_id = new_ticket(ALICE, "chargeback")
    assert desk(ANN).post(ticket_id, "status", status="pending").status_code == 303
    assert ticket_of(session_factory, ticket_id).status == "pending"
    with session_scope(session_factory) as session:
        assert ticket_id in {t.id for t in queries.open_tickets_of(session, "cus_none", ALICE)}


# --- the attacks ---------------------------------------------------------------------------------


FORMS = [
    ("reply", {"text": "Hello", "form_key": "k" * 20}),
    ("notes", {"text": "A note"}),
    ("status", {"status": "closed"}),
    ("assignee", {"assignee": "me"}),
    ("team", {"team": "finance"}),
    ("category", {"category": "other"}),
]


@pytest.mark.parametrize("what, form", FORMS)
@pytest.mark.parametrize("token", [None, "", "forged-token"])
def test_a_post_without_the_sessions_csrf_token_is_refused(
    desk, alice_ticket, session_factory, what, form, token
):
    ann = desk(ANN)
    data = dict(form) if token is None else {**form, "csrf_token": token}
    response = ann.client.post(f"/tickets/{alice_ticket}/{what}", data=data)
    assert response.status_code == 400 and "The form expired" in body(response)
    ticket = ticket_of(session_factory, alice_ticket)
    assert (ticket.status, ticket.assignee, ticket.team, ticket.category) == (
        "open",
        None,
        None,
        "duplicate_charge",
    )
    assert len(ticket.messages) == 1
    with session_scope(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Plan)) == 0


@pytest.mark.parametrize("what, form", FORMS)
def test_signed_out_posts_go_to_the_sign_in(app, alice_ticket, session_factory, what, form):
    response = app.test_client().post(f"/tickets/{alice_ticket}/{what}", data=form)
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert len(ticket_of(session_factory, alice_ticket).messages) == 1


def test_a_mirrored_zendesk_ticket_is_not_worked_here(desk, new_ticket):
    ticket_id = new_ticket(ALICE, "other", helpdesk="zendesk", external_id="77")
    ann = desk(ANN)
    assert ann.page(f"/tickets/{ticket_id}").status_code == 404
    assert ann.post(ticket_id, "status", status="closed").status_code == 404


@pytest.mark.parametrize("number", ["0", "2147483648", "99999999999999999999"])
def test_a_ticket_number_no_ticket_has_is_a_404(desk, number):
    ann = desk(ANN)
    assert ann.page(f"/tickets/{number}").status_code == 404
    assert ann.page(f"/tickets/{number}/thread").status_code == 404
    assert (
        ann.client.post(
            f"/tickets/{number}/status", data={"csrf_token": ann.csrf, "status": "open"}
        ).status_code
        == 404
    )


# --- inbox: filters and search ---------------------------------------------------------------


def listed(response) -> list[int]:
    """The ticket numbers of the inbox's ticket list, in order."""
    assert response.status_code == 200, body(response)
    table = body(response).split('class="tickets all-list"', 1)
    return (
        [int(i) for i in re.findall(r'class="ticket-row[^"]*" data-ticket-id="(\d+)"', table[-1])]
        if len(table) == 2
        else []
    )


@pytest.fixture
def inbox_tickets(new_ticket, session_factory):
    """A handful of tickets to filter."""
    made = {
        "open": new_ticket(
            ALICE, "chargeback", subject="Disputed 100% charge", requester_name="Alice Martin"
        ),
        "pending": new_ticket(
            "bob@example.com",
            "refund_request",
            subject="Refund please",
            status="pending",
            assignee=ANN,
        ),
        "solved": new_ticket(
            "carol@example.com", "other", subject="Question", status="solved", team="finance"
        ),
        "closed": new_ticket(
            "dan@example.com", "duplicate_charge", subject="Twice", status="closed", assignee=BEA
        ),
    }
    made["breached"] = new_ticket("erin@example.com", "card_not_recognized", subject="Who is this?")
    escalate(session_factory, made["breached"], "security", -timedelta(minutes=20))
    made["soon"] = new_ticket("frank@example.com", "chargeback", subject="Bank letter")
    escalate(session_factory, made["soon"], "finance", timedelta(minutes=30))
    made["later"] = new_ticket("grace@example.com", "unused_module", subject="Never used it")
    escalate(session_factory, made["later"], "account_manager", timedelta(hours=20))
    return made


@pytest.mark.parametrize(
    "query, expected",
    [
        ({"status": "pending"}, ["pending"]),
        ({"status": "active"}, ["open", "pending", "breached", "soon", "later"]),
        ({"category": "chargeback"}, ["open", "soon"]),
        ({"team": "finance"}, ["solved"]),
        ({"assignee": "me"}, ["pending"]),
        ({"assignee": BEA}, ["closed"]),
        ({"assignee": "unassigned", "status": "open"}, ["open", "breached", "soon", "later"]),
        ({"requester": "BOB@example.com"}, ["pending"]),
        ({"sla": "breached"}, ["breached"]),
        ({"sla": "due_soon"}, ["soon"]),
        ({"sla": "escalated"}, ["breached", "soon", "later"]),
        ({"q": "refund"}, ["pending"]),
        ({"q": "ALICE MART"}, ["open"]),
        ({"q": "carol@"}, ["solved"]),
        ({"q": "100%"}, ["open"]),  # the percent sign is a character, not a wildcard
        ({"q": "_"}, []),
        ({"status": "open", "category": "chargeback", "sla": "due_soon"}, ["soon"]),
    ],
)
def test_filters_and_search(desk, inbox_tickets, query, expected):
    found = listed(desk(ANN).page("/", **query))
    assert sorted(found) == sorted(inbox_tickets[name] for name in expected)


def test_search_by_ticket_number(desk, inbox_tickets):
    ann, number = desk(ANN), inbox_tickets["closed"]
    for query in (str(number), f"#{number}", f"[BD-{number}]"):
        assert inbox_tickets["closed"] in listed(ann.page("/", q=query))


def test_an_sla_filter_lists_soonest_due_first_with_time_left(desk, inbox_tickets):
    response = desk(ANN).page("/", sla="escalated")
    assert listed(response) == [inbox_tickets[n] for n in ("breached", "soon", "later")]
    page = body(response)
    assert "breached 2" in page and "sla-breached" in page and "left" in page


@pytest.mark.parametrize(
    "query, message",
    [
        ({"q": "x" * 10_000}, "longer than 200 characters"),
        ({"status": "deleted"}, "Unknown status"),
        ({"status": "<script>alert(1)</script>"}, "Unknown status"),
        ({"category": "refund"}, "Unknown category"),
        ({"team": "marketing"}, "Unknown team queue"),
        ({"sla": "late"}, "Unknown SLA filter"),
        ({"q": "nul\x00byte"}, "cannot be searched for"),
        ({"requester": "a\nb@example.com"}, "cannot be searched for"),
        ({"page": "abc"}, "The page must be a number"),
        ({"page": "0"}, "The page must be a number"),
        ({"page": "99999999999999999999"}, "The page must be a number"),
        ({"assignee": "y" * 1000}, "longer than 320 characters"),
    ],
)
def test_hostile_filters_get_a_clear_400(desk, inbox_tickets, query, message):
    response = desk(ANN).page("/", **query)
    assert response.status_code == 400 and message in body(response)
    assert "<script>alert(1)" not in body(response)


def test_the_inbox_is_paginated(desk, new_ticket):
    made = [new_ticket(ALICE, "other", subject=f"Ticket {n}") for n in range(55)]
    ann = desk(ANN)
    first, second = listed(ann.page("/")), listed(ann.page("/", page="2"))
    assert len(first) == 50 and len(second) == 5
    assert sorted(first + second) == sorted(made)
    assert "Next →" in body(ann.page("/")) and listed(ann.page("/", page="3")) == []


# --- waiting for me ----------------------------------------------------------------------------


def waiting(response) -> list[int]:
    """The ticket numbers of the "waiting for you" list, in order."""
    assert response.status_code == 200, body(response)
    page = body(response)
    if 'class="tickets waiting-list"' not in page:
        return []
    section = page.split('class="tickets waiting-list"', 1)[1].split("</table>", 1)[0]
    return [int(i) for i in re.findall(r'data-ticket-id="(\d+)"', section)]


def waiting_approval(session_factory, ticket_id: int, role: str, requested_by: str) -> int:
    """A refund step waiting for ``role``'s approval, as policy left it."""
    with session_scope(session_factory) as session:
        plan = Plan(
            key=f"plan-{ticket_id}-{role}",
            ticket_id=ticket_id,
            source=requested_by,
            title="Refund",
            status="waiting",
        )
        plan.steps = [
            Action(
                ticket_id=ticket_id,
                position=0,
                kind="refund",
                status="pending_approval",
                idempotency_key=f"refund-{ticket_id}-{role}",
                requested_by=requested_by,
                requester_role="agent",
                stripe_charge_id="ch_big",
                amount=80000,
                currency="usd",
                reason="requested_by_customer",
                approval_role=role,
            )
        ]
        session.add(plan)
        session.flush()
        return plan.steps[0].id


@pytest.fixture
def work(new_ticket, session_factory):
    """Work for several people: assigned tickets, escalations to teams, approvals."""
    made = {
        "ann's": new_ticket(ALICE, "other", assignee=ANN, subject="Ann's ticket"),
        "ann's pending": new_ticket(ALICE, "other", assignee=ANN, status="pending"),
        "bea's": new_ticket(ALICE, "other", assignee=BEA),
        "finance later": new_ticket("bob@example.com", "chargeback"),
        "finance breached": new_ticket("carol@example.com", "chargeback"),
        "finance soon": new_ticket("dan@example.com", "chargeback"),
        "finance queue": new_ticket("erin@example.com", "chargeback", team="finance"),
        "security": new_ticket("frank@example.com", "card_not_recognized"),
        "approval": new_ticket("grace@example.com", "refund_request"),
    }
    escalate(session_factory, made["finance later"], "finance", timedelta(hours=30))
    escalate(session_factory, made["finance breached"], "finance", -timedelta(hours=2))
    escalate(session_factory, made["finance soon"], "finance", timedelta(minutes=40))
    escalate(session_factory, made["security"], "security", timedelta(hours=3))
    picked = escalate(session_factory, made["bea's"], "finance", -timedelta(hours=5))
    with session_scope(session_factory) as session:
        session.get(Escalation, picked).status = EscalationStatus.PICKED_UP
    waiting_approval(session_factory, made["approval"], "support_lead", ANN)
    return made


@pytest.mark.parametrize(
    "who, expected",
    [
        (ANN, ["ann's"]),  # her own approval request is not hers to give
        (BEA, ["bea's"]),
        (FIN, ["finance breached", "finance soon", "finance later", "finance queue", "approval"]),
        (SAM, ["security"]),
        (LEE, ["approval"]),
        (AVERY, []),
    ],
)
def test_waiting_for_me_per_role_breached_first(desk, work, who, expected):
    found = waiting(desk(who).page("/"))
    assert found == [work[name] for name in expected]


def test_waiting_for_me_says_why_and_how_long(desk, work):
    page = body(desk(FIN).page("/"))
    assert "Escalated to Finance" in page and "In the Finance queue, unassigned" in page
    assert "Your approval: Refund of $800.00 on ch_big" in page
    assert "breached 2h" in page and "row-breached" in page and "left" in page
    assert "Nothing is waiting for you" in body(desk(AVERY).page("/"))


def test_an_escalated_ticket_in_the_teams_queue_says_so_once(desk, new_ticket, session_factory):
    ticket_id = new_ticket("bob@example.com", "chargeback", team="finance")
    escalate(session_factory, ticket_id, "finance", timedelta(hours=2))
    page = body(desk(FIN).page("/"))
    assert waiting(desk(FIN).page("/")) == [ticket_id]
    assert "Escalated to Finance" in page and "In the Finance queue" not in page


def test_waiting_for_me_gives_way_to_a_search(desk, work):
    page = body(desk(FIN).page("/", q="carol"))
    assert "Waiting for you" not in page and listed(desk(FIN).page("/", q="carol")) == [
        work["finance breached"]
    ]


# --- picking up escalations -------------------------------------------------------------------


def test_a_team_member_taking_the_ticket_picks_its_escalation_up(desk, new_ticket, session_factory):
    ticket_id = new_ticket("bob@example.com", "chargeback")
    to_finance = escalate(session_factory, ticket_id, "finance", timedelta(hours=1))
    to_security = escalate(session_factory, ticket_id, "security", timedelta(hours=1))
    desk(FIN).post(ticket_id, "assignee", assignee=BEA)  # giving it to someone is not taking it
    assert escalation_status(session_factory, to_finance).status == "open"
    assert desk(FIN).post(ticket_id, "assignee", assignee="me").status_code == 303
    picked = escalation_status(session_factory, to_finance)
    assert (picked.status, picked.picked_up_by) == ("picked_up", FIN)
    assert escalation_status(session_factory, to_security).status == "open"  # not Finance's
    assert [
        e.detail["target"] for e in events(session_factory, ticket_id, "escalation.picked_up")
    ] == ["finance"]
    assert waiting(desk(FIN).page("/")) == [ticket_id]  # now because it is assigned to Fin


def test_a_team_members_reply_picks_up_and_an_agents_does_not(
    desk, new_ticket, session_factory, run_worker
):
    ticket_id = new_ticket(ALICE, "card_not_recognized")
    escalation = escalate(session_factory, ticket_id, "security", timedelta(hours=1))
    desk(ANN).reply(ticket_id, "We are checking with our security team.")
    assert escalation_status(session_factory, escalation).status == "open"
    desk(SAM).reply(ticket_id, "Security here: was this card yours?")
    assert escalation_status(session_factory, escalation).picked_up_by == SAM
    run_worker()


def test_a_status_change_picks_up_and_solving_resolves(desk, new_ticket, session_factory):
    ticket_id = new_ticket(ALICE, "refund_request")
    escalation = escalate(session_factory, ticket_id, "support_lead", -timedelta(minutes=5))
    lee = desk(LEE)
    assert lee.post(ticket_id, "status", status="pending").status_code == 303
    picked = escalation_status(session_factory, escalation)
    assert (picked.status, picked.picked_up_by) == ("picked_up", LEE)
    (event,) = events(session_factory, ticket_id, "escalation.picked_up")
    assert event.detail["late"] is True
    assert lee.post(ticket_id, "status", status="solved").status_code == 303
    assert escalation_status(session_factory, escalation).status == "resolved"


def test_closing_resolves_escalations_whoever_closes(desk, new_ticket, session_factory):
    ticket_id = new_ticket(ALICE, "refund_request")
    escalation = escalate(session_factory, ticket_id, "finance", timedelta(hours=4))
    assert desk(ANN).post(ticket_id, "status", status="closed").status_code == 303
    resolved = escalation_status(session_factory, escalation)
    assert resolved.status == "resolved" and resolved.picked_up_by is None
    assert ticket_of(session_factory, ticket_id).resolution == "Closed"


# --- the ticket page ---------------------------------------------------------------------------


def test_the_ticket_page_offers_the_work_and_names_the_gate(desk, new_ticket, session_factory):
    ticket_id = new_ticket(ALICE, "card_not_recognized", requester_name=XSS, subject=XSS)
    escalate(session_factory, ticket_id, "security", -timedelta(minutes=3))
    page = body(desk(ANN).page(f"/tickets/{ticket_id}"))
    for form in ("reply", "notes", "status", "assignee", "team", "category"):
        assert f'action="/tickets/{ticket_id}/{form}"' in page
    assert 'name="to"' not in page and 'name="cc"' not in page
    assert "only Security or an admin may move it" in page
    assert "Security · ⚠ SLA breached 3m ago" in page
    assert "<script>alert(2)" not in page and "<img src=x" not in page
    assert '<script src="/static/helpdesk.js" defer></script>' in page
    assert "your role may take it out" in body(desk(SAM).page(f"/tickets/{ticket_id}"))


def test_the_front_line_is_what_waits_for_an_agent(desk, new_ticket, session_factory):
    """Open tickets in nobody's hands and no team's queue wait for agents; a suggested plan
    says so. Escalated ones are their team's, not the front line's."""
    plain = new_ticket("bob@example.com", "other")
    suggested = new_ticket("carol@example.com", "duplicate_charge")
    escalated = new_ticket("dan@example.com", "chargeback")
    escalate(session_factory, escalated, "finance", timedelta(hours=3))
    new_ticket("erin@example.com", "other", status="closed")
    with session_scope(session_factory) as session:
        session.add(
            Plan(
                ticket_id=suggested,
                key="triage:email-front-line",
                source="mail-agent",
                title="Refund the duplicate",
                status="suggested",
            )
        )
    ann = desk(ANN).page("/")
    assert sorted(waiting(ann)) == sorted([plain, suggested])
    page = body(ann)
    assert "A suggested plan waits for an agent" in page and "in no team&#39;s queue" in page
    assert waiting(desk(LEE).page("/")) == []  # a lead works the Support Lead queue
