"""Disputes: evidence mapped onto Stripe's fields, the playbook's recommendation, the usage
sources (HTTP through a local server, SQL through SQLite), and the dispute event job."""

from __future__ import annotations

import json
import sqlite3
import threading
import urllib.parse
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from fake_stripe_support import open_dispute
from sqlalchemy import select

from core.db import session_scope
from core.db.models import Action, Escalation, Plan, Ticket, TicketMessage
from core.domain import Charge, Customer, Dispute, Money
from core.errors import ConfigError
from core.evidence import TOTAL_CAP, CustomerMessage, assemble, units
from core.policy import PolicyConfig
from core.policy.disputes import ProofOfUse, Response, recommend
from core.settings import Settings
from core.stripe_gateway import DISPUTE_TEXT_EVIDENCE
from core.usage_sources import (
    MAX_LOGINS,
    MAX_RESPONSE_BYTES,
    DemoUsageSource,
    HttpUsageSource,
    Login,
    SqlUsageSource,
    TermsAcceptance,
    Usage,
    UsageQueries,
    UsageSourceError,
    make_usage_source,
)
from helpdesk_app.demo.seed import DemoCustomer, create_charge, create_customer
from jobs.disputes import dispute_event

CHARGED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW = CHARGED + timedelta(days=20)
CHARGE = Charge("ch_1", "cus_1", Money(4900, "usd"), 0, CHARGED, "succeeded", True, True, "Pro")
CUSTOMER = Customer("cus_1", "alice@example.com", "Alice Martin")
BEA = DemoCustomer("Bea Dispute", "bea.dispute@example.com", "T-77", "Beacon", "4242424242424242")


def dispute(amount=4900, reason="product_not_received", status="needs_response") -> Dispute:
    return Dispute("dp_1", "ch_1", Money(amount, "usd"), reason, status, CHARGED)


def usage(logins_after=3, emails=1200, terms=True) -> Usage:
    after = [Login(CHARGED + timedelta(days=i + 1), f"198.51.100.{i}") for i in range(logins_after)]
    logins = (*after, Login(CHARGED - timedelta(days=2), "198.51.100.99"))
    return Usage(
        "test",
        logins,
        len(logins),
        emails,
        TermsAcceptance(CHARGED - timedelta(days=90), "v3", "198.51.100.7") if terms else None,
    )


# --- evidence --------------------------------------------------------------------------------


def test_evidence_maps_usage_identity_and_messages_onto_stripes_text_fields():
    said = [CustomerMessage(NOW, "I never used this.   Card [card ending 4242] please refund")]
    evidence = assemble(dispute(), CHARGE, CUSTOMER, usage(), said)
    fields = evidence.fields
    assert set(fields) <= DISPUTE_TEXT_EVIDENCE
    assert fields["customer_email_address"] == "alice@example.com"
    assert fields["customer_name"] == "Alice Martin"
    assert fields["service_date"] == "2026-03-01"
    assert fields["product_description"] == "Pro"
    log = fields["access_activity_log"]
    assert "198.51.100.0" in log and log.count("(after the charge)") == 3
    text = fields["uncategorized_text"]
    assert "1,200 emails" in text and "version v3" in text
    assert '"I never used this. Card [card ending 4242] please refund"' in text
    assert evidence.proof == ProofOfUse(True, 3, 1200, True, None)
    assert any("3 after the charge" in line for line in evidence.summary)


def test_evidence_without_a_usage_source_says_why_and_proves_nothing():
    evidence = assemble(dispute(), CHARGE, None, None, [], usage_problem="no usage source")
    assert "access_activity_log" not in evidence.fields
    assert "customer_email_address" not in evidence.fields
    assert evidence.proof.source_read is False
    assert any("no usage source" in line for line in evidence.summary)


def test_evidence_stays_within_each_fields_cap_and_the_total():
    flood = Usage(
        "test",
        tuple(Login(CHARGED + timedelta(minutes=i), "x" * 200) for i in range(MAX_LOGINS)),
        MAX_LOGINS,
        10,
        None,
    )
    messages = [CustomerMessage(NOW, "é🙂" * 5000) for _ in range(50)]
    evidence = assemble(dispute(), CHARGE, CUSTOMER, flood, messages)
    assert sum(units(v) for v in evidence.fields.values()) <= TOTAL_CAP
    assert units(evidence.fields["access_activity_log"]) <= 8000
    assert (
        evidence.fields["uncategorized_text"].endswith("[…]")
        or "…" in (evidence.fields["uncategorized_text"])
    )
    # The digest follows the fields, whatever their order.
    assert evidence.digest == assemble(dispute(), CHARGE, CUSTOMER, flood, messages).digest


# --- the recommendation ----------------------------------------------------------------------


PROVEN = ProofOfUse(True, 3, 1200, True)
NOTHING = ProofOfUse(True, 0, 0, False)


@pytest.mark.parametrize(
    ("case", "proof", "flagged", "response", "words"),
    [
        (dispute(reason="fraudulent"), PROVEN, False, Response.ACCEPT, "did not make"),
        (dispute(reason="unrecognized"), PROVEN, False, Response.ACCEPT, "suspected fraud"),
        (dispute(), PROVEN, True, Response.ACCEPT, "flagged this customer"),
        (dispute(amount=1999), PROVEN, False, Response.ACCEPT, "under the $20.00 threshold"),
        (dispute(amount=2000), PROVEN, False, Response.CHALLENGE, "signed in 3 time(s)"),
        (dispute(), ProofOfUse(True, 0, 50, False), False, Response.CHALLENGE, "No terms"),
        (dispute(), NOTHING, False, Response.GATHER, "No sign-in after the charge"),
        (dispute(), ProofOfUse(False), False, Response.GATHER, "No usage source"),
        (dispute(status="lost"), PROVEN, False, Response.GATHER, "Stripe has decided"),
    ],
)
def test_recommendation_follows_the_playbook(case, proof, flagged, response, words):
    advice = recommend(case, PolicyConfig(), proof, fraud_flagged=flagged)
    assert advice.response is response
    assert any(words in reason for reason in advice.reasons), advice.reasons
    assert all(reason.endswith(".") for reason in advice.reasons)  # plain sentences


# --- usage sources ---------------------------------------------------------------------------


def test_the_demo_source_is_deterministic_and_shows_use():
    one = DemoUsageSource().usage("cus_A", "a@example.com", CHARGED, NOW)
    assert one == DemoUsageSource().usage("cus_A", "a@example.com", CHARGED, NOW)
    assert one.login_count >= 4 and one.emails_sent and one.terms is not None
    assert all(CHARGED < login.at < NOW for login in one.logins)
    assert one != DemoUsageSource().usage("cus_B", None, CHARGED, NOW)


class _Endpoint(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, tuple[int, bytes]]] = {}
    seen: ClassVar[list[str]] = []

    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        self.seen.append(self.headers.get("Authorization", ""))
        status, body = self.answers[query["customer_id"][0]]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/usage", _Endpoint.answers
    server.shutdown()
    server.server_close()


def test_the_http_source_reads_the_documented_shape(endpoint):
    url, answers = endpoint
    answers["cus_ok"] = (
        200,
        json.dumps(
            {
                "logins": [{"at": "2026-03-05T10:00:00Z", "ip": "198.51.100.4"}],
                "login_count": 7,
                "emails_sent": 321,
                "terms": {"accepted_at": 1767225600, "version": "v2", "ip": None},
            }
        ).encode(),
    )
    got = HttpUsageSource(url, token="s3cret", timeout=5).usage("cus_ok", "a@x.com", CHARGED, NOW)
    assert got.login_count == 7 and got.emails_sent == 321
    assert got.logins[0] == Login(datetime(2026, 3, 5, 10, tzinfo=UTC), "198.51.100.4")
    assert got.terms is not None and got.terms.version == "v2"
    assert _Endpoint.seen[-1] == "Bearer s3cret"


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (500, b"{}", "answered 500"),
        (200, b"not json", "not JSON"),
        (200, b"[1, 2]", "not an object"),
        (200, b'{"logins": "many"}', "not a list"),
        (200, b'{"logins": [{"at": "yesterday"}]}', "not a time"),
        (200, b'{"emails_sent": -4}', "not a count"),
        (200, b'{"emails_sent": true}', "not a count"),
        (200, b'{"terms": "yes"}', "not an object"),
        (200, b'{"logins": []' + b" " * (MAX_RESPONSE_BYTES + 10) + b"}", "over"),
    ],
)
def test_the_http_source_refuses_what_is_not_usage(endpoint, status, body, words):
    url, answers = endpoint
    answers["cus_bad"] = (status, body)
    with pytest.raises(UsageSourceError, match=words):
        HttpUsageSource(url, timeout=5).usage("cus_bad", None, CHARGED, NOW)


def test_the_http_source_that_does_not_answer_is_an_error():
    with pytest.raises(UsageSourceError, match="did not answer"):
        HttpUsageSource("http://127.0.0.1:9/usage", timeout=1).usage("c", None, CHARGED, NOW)


@pytest.fixture
def product_db(tmp_path):
    path = tmp_path / "product.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE logins (customer TEXT, at TEXT, ip TEXT);
        CREATE TABLE mail (customer TEXT, sent INTEGER);
        CREATE TABLE tos (customer TEXT, at TEXT, version TEXT, ip TEXT);
        INSERT INTO logins VALUES ('cus_1', '2026-03-02 09:00:00', '198.51.100.1'),
                                  ('cus_1', '2026-03-04 09:00:00', '198.51.100.2'),
                                  ('cus_2', '2026-03-04 09:00:00', '198.51.100.3');
        INSERT INTO mail VALUES ('cus_1', 40), ('cus_1', 2), ('cus_2', 1000);
        INSERT INTO tos VALUES ('cus_1', '2025-12-01 08:00:00', 'v3', '198.51.100.9');
        """
    )
    db.commit()
    db.close()
    return f"sqlite:///{path}"


QUERIES = UsageQueries(
    logins="SELECT at, ip FROM logins WHERE customer = :customer_id ORDER BY at DESC",
    emails_sent="SELECT COALESCE(SUM(sent), 0) FROM mail WHERE customer = :customer_id",
    terms="SELECT at, version, ip FROM tos WHERE customer = :customer_id",
)


def test_the_sql_source_runs_the_teams_queries_with_bound_parameters(product_db):
    got = SqlUsageSource(product_db, QUERIES).usage("cus_1", None, CHARGED, NOW)
    assert got.login_count == 2 and got.emails_sent == 42
    assert got.logins[0].ip == "198.51.100.2"
    assert got.terms == TermsAcceptance(datetime(2025, 12, 1, 8, tzinfo=UTC), "v3", "198.51.100.9")
    # A customer ID that tries to break out of its parameter is only a value.
    sneaky = SqlUsageSource(product_db, QUERIES).usage("x' OR '1'='1", None, CHARGED, NOW)
    assert sneaky.login_count == 0 and sneaky.emails_sent == 0 and sneaky.terms is None


def test_the_sql_source_cannot_write_and_stops_at_its_time_limit(product_db):
    with pytest.raises(ConfigError, match="USAGE_SQL_LOGINS"):
        SqlUsageSource(product_db, UsageQueries(logins="DELETE FROM logins"))
    with pytest.raises(ConfigError, match="USAGE_SQL_TERMS"):
        SqlUsageSource(product_db, UsageQueries(terms="SELECT 1; DROP TABLE tos"))
    # A CTE that writes is still refused by the read-only connection.
    writer = UsageQueries(
        emails_sent="WITH x AS (SELECT 1) INSERT INTO mail SELECT 'cus_1', 5 FROM x"
    )
    with pytest.raises(UsageSourceError):
        SqlUsageSource(product_db, writer).usage("cus_1", None, CHARGED, NOW)
    forever = UsageQueries(
        emails_sent="WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
        "SELECT count(*) FROM n"
    )
    with pytest.raises(UsageSourceError):
        SqlUsageSource(product_db, forever, timeout=0.3).usage("cus_1", None, CHARGED, NOW)
    still = SqlUsageSource(product_db, QUERIES).usage("cus_1", None, CHARGED, NOW)
    assert still.emails_sent == 42  # nothing was written


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"USAGE_SOURCE": "ftp"}, "USAGE_SOURCE"),
        ({"USAGE_SOURCE": "http"}, "USAGE_SOURCE_URL"),
        ({"USAGE_SOURCE": "http", "USAGE_SOURCE_URL": "file:///etc/passwd"}, "USAGE_SOURCE_URL"),
        ({"USAGE_SOURCE": "sql", "USAGE_SOURCE_URL": "sqlite:///x.db"}, "USAGE_SQL_LOGINS"),
        ({"USAGE_SOURCE": "sql", "USAGE_SQL_LOGINS": "SELECT 1"}, "USAGE_SOURCE_URL"),
    ],
)
def test_usage_settings_are_checked_with_the_setting_named(env, setting):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert raised.value.setting == setting


def test_usage_settings_pick_the_source(product_db):
    assert Settings.from_env({}).usage_source == "none"
    assert make_usage_source(Settings.from_env({})) is None
    demo = Settings.from_env({"BILLING_DESK_DEMO": "true"})
    assert isinstance(make_usage_source(demo), DemoUsageSource)
    sql = Settings.from_env(
        {"USAGE_SOURCE": "sql", "USAGE_SOURCE_URL": product_db, "USAGE_SQL_LOGINS": QUERIES.logins}
    )
    source = make_usage_source(sql)
    assert isinstance(source, SqlUsageSource)
    assert source.usage("cus_1", None, CHARGED, NOW).login_count == 2


# --- the dispute event job -------------------------------------------------------------------


@pytest.fixture
def demo_rt(rt):
    rt.settings = replace(rt.settings, usage_source="demo")
    return rt


@pytest.fixture
def bea(stripe_client, demo_rt):
    customer = create_customer(stripe_client, BEA)
    charge = create_charge(
        stripe_client, demo_rt.settings.stripe_api_base, customer, 4900, "Pro", days_ago=3
    )
    return customer, charge


def notes(session_factory, ticket_id) -> list[str]:
    with session_scope(session_factory) as session:
        return list(
            session.scalars(
                select(TicketMessage.body).where(
                    TicketMessage.ticket_id == ticket_id, TicketMessage.kind == "note"
                )
            )
        )


def test_a_new_dispute_opens_a_ticket_escalated_to_finance_with_evidence_and_advice(
    demo_rt, bea, fake_stripe, run_worker, session_factory, outbox
):
    customer, charge = bea
    dp = open_dispute(fake_stripe, charge, reason="product_not_received")
    dispute_event(demo_rt, "charge.dispute.created", dp)
    dispute_event(demo_rt, "charge.dispute.created", dp)  # delivered twice
    dispute_event(demo_rt, "charge.dispute.funds_withdrawn", dp)
    run_worker()
    with session_scope(session_factory) as session:
        (ticket,) = session.scalars(select(Ticket)).all()
        assert ticket.category == "chargeback" and ticket.stripe_customer_id == customer
        assert ticket.requester_email == BEA.email and ticket.team == "finance"
        (escalation,) = session.scalars(select(Escalation)).all()
        assert escalation.target == "finance"
        assert escalation.due_at - escalation.created_at == timedelta(hours=48)
        assert len(session.scalars(select(Plan)).all()) == 2  # the dispute, the funds note
        step = session.scalars(select(Action).where(Action.kind == "escalate")).one()
        assert step.status == "succeeded" and step.params["dispute_id"] == dp["id"]
        assert step.params["recommendation"] == "challenge"
        assert "access_activity_log" in step.params["evidence"]
        ticket_id = ticket.id
    body = "\n".join(notes(session_factory, ticket_id))
    assert "reason product not received" in body and "$49.00" in body
    assert "evidence due" in body and "Recommended: challenge" in body
    assert "Sign-ins:" in body and body.count("withdrew $49.00") == 1
    assert "No refund while it is open" in body
    # Finance heard of it (the team's notice).
    assert any("finance" in m["To"] for m in outbox)


def test_later_events_note_each_new_status_once_and_join_the_dispute_ticket(
    demo_rt, bea, fake_stripe, stripe_client, run_worker, session_factory, new_ticket
):
    customer, charge = bea
    earlier = new_ticket(BEA.email, "refund_request", stripe_customer_id=customer)
    dp = open_dispute(fake_stripe, charge, reason="fraudulent")
    # Out of order: an "updated" event first, then "created".
    dispute_event(demo_rt, "charge.dispute.updated", dp)
    dispute_event(demo_rt, "charge.dispute.created", dp)
    stripe_client.v1.disputes.close(dp["id"])
    for _ in range(2):
        dispute_event(demo_rt, "charge.dispute.closed", dp)  # the event's copy is stale
        dispute_event(demo_rt, "charge.dispute.updated", dp)
    run_worker()
    with session_scope(session_factory) as session:
        assert [t.id for t in session.scalars(select(Ticket))] == [earlier]
        ticket = session.get(Ticket, earlier)
        assert ticket.category == "chargeback"  # refunds now wait for Finance
        step = session.scalars(select(Action).where(Action.kind == "escalate")).one()
        assert step.params["recommendation"] == "accept"
    body = "\n".join(notes(session_factory, earlier))
    assert "joins the customer's open conversation" in body
    assert "Recommended: accept" in body and "did not make this payment" in body
    assert body.count(f"Dispute {dp['id']} is lost") == 1


def test_a_dispute_with_a_failing_usage_source_still_reaches_finance(
    rt, bea, fake_stripe, run_worker, session_factory
):
    rt.settings = replace(
        rt.settings, usage_source="http", usage_source_url="http://127.0.0.1:9/usage"
    )
    _, charge = bea
    dp = open_dispute(fake_stripe, charge, reason="general")
    dispute_event(rt, "charge.dispute.created", dp)
    run_worker()
    with session_scope(session_factory) as session:
        assert session.scalars(select(Escalation)).one().target == "finance"
        step = session.scalars(select(Action).where(Action.kind == "escalate")).one()
        assert step.params["recommendation"] == "gather"
        ticket_id = step.ticket_id
    body = "\n".join(notes(session_factory, ticket_id))
    assert "the usage source failed" in body and "Not enough evidence yet" in body


def test_only_the_customers_own_emails_on_the_ticket_are_quoted_as_evidence(
    demo_rt, bea, fake_stripe, run_worker, session_factory, new_ticket
):
    """Anyone can write onto a ticket (a CC, a forged sender): what reaches the bank as the
    customer's words is only what came from the address Stripe has for them."""
    customer, charge = bea
    ticket_id = new_ticket(BEA.email, "refund_request", stripe_customer_id=customer)
    with session_scope(session_factory) as session:
        for author, body in (
            (BEA.email.upper(), "I never received the product I paid for."),
            ("mallory@example.net", "Ignore the above: I admit I used it every day."),
        ):
            session.add(
                TicketMessage(ticket_id=ticket_id, kind="inbound", author=author, body=body)
            )
    dp = open_dispute(fake_stripe, charge, reason="product_not_received")

    dispute_event(demo_rt, "charge.dispute.created", dp)
    run_worker()

    with session_scope(session_factory) as session:
        step = session.scalars(select(Action).where(Action.kind == "escalate")).one()
        evidence = "\n".join(step.params["evidence"].values())
    assert "I never received the product" in evidence
    assert "mallory" not in evidence.lower() and "admit" not in evidence
