"""Parsing never raises on bad mail; loop guard, classifier rules and threading behave."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.db import session_scope
from core.db.models import Ticket
from core.domain import Category, MessageKind
from core.helpdesks import LocalHelpdesk
from core.settings import PROJECT_ROOT
from mail.classifier import classify
from mail.conversations import find_ticket_for, subject_token
from mail.loop_guard import automated_reason
from mail.outgoing import render_email
from mail.parsing import dedupe_key, message_id_of, parse_email

OUR_ADDRESS = "billing@example.com"


@pytest.mark.parametrize(
    ("name", "sender", "subject_part", "body_part"),
    [
        ("iso_8859_1.eml", "jose@example.com", "Cobro duplicado", "Hola, I was charged twice"),
        ("unknown_charset.eml", "someone@example.com", "weird charset", "double charged"),
        ("html_only.eml", "html@example.com", "Payment failed", "My payment failed yesterday."),
        ("broken_mime.eml", "broken@example.com", "broken mime", ""),
        ("no_headers.eml", "", "", ""),
    ],
)
def test_awkward_mail_parses_without_raising(data_dir, name, sender, subject_part, body_part):
    parsed = parse_email((data_dir / "emails" / name).read_bytes())
    assert parsed.from_address == sender
    assert subject_part in parsed.subject
    assert body_part in parsed.text


def test_html_is_reduced_to_text_without_script_or_style(data_dir):
    parsed = parse_email((data_dir / "emails" / "html_only.eml").read_bytes())
    assert "alert" not in parsed.text and "color:red" not in parsed.text and "<" not in parsed.text


def test_the_same_bytes_dedupe_and_different_bytes_do_not(data_dir):
    raw = (data_dir / "emails" / "iso_8859_1.eml").read_bytes()
    other = raw.replace(b"Hola", b"Hello")
    assert dedupe_key(raw, message_id_of(raw)) == dedupe_key(bytes(raw), message_id_of(raw))
    assert dedupe_key(raw, message_id_of(raw)) != dedupe_key(other, message_id_of(other))


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ("Auto-Submitted: auto-replied", "Auto-Submitted"),
        ("Auto-Submitted: no", None),
        ("Precedence: bulk", "Precedence"),
        ("List-Id: <news.example.com>", "mailing-list"),
        ("X-Auto-Response-Suppress: All", "X-Auto-Response-Suppress"),
        ("X-Billing-Desk: refund_confirmation", "our own"),
        ("", None),
    ],
)
def test_loop_guard(headers, reason):
    raw = f"From: a@example.com\r\nSubject: hi\r\n{headers}\r\n\r\nbody\r\n".replace(
        "\r\n\r\n\r\n", "\r\n\r\n"
    )
    found = automated_reason(parse_email(raw.encode()), OUR_ADDRESS)
    assert (found is None) if reason is None else (reason in found)


def test_bounces_and_our_own_address_are_automated():
    bounce = parse_email(b"From: MAILER-DAEMON@mx.example.com\r\nSubject: Undelivered\r\n\r\nx\r\n")
    ours = parse_email(f"From: {OUR_ADDRESS}\r\nSubject: x\r\n\r\ny\r\n".encode())
    assert automated_reason(bounce, OUR_ADDRESS) and automated_reason(ours, OUR_ADDRESS)


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Hi, you billed me two times for March, please fix", Category.DUPLICATE_CHARGE),
        ("I see a double charge on my Visa for the same invoice", Category.DUPLICATE_CHARGE),
        (
            "I cancelled in January but you still charged me in February",
            Category.CHARGE_AFTER_CANCELLATION,
        ),
        ("There is a charge on my statement I don't recognise", Category.CARD_NOT_RECOGNIZED),
        ("I have disputed the payment with my bank", Category.CHARGEBACK),
        ("My payment was declined again, what now?", Category.PAYMENT_FAILED),
        (
            "We never activated the reporting module, why are we paying for it?",
            Category.UNUSED_MODULE,
        ),
        ("Please cancel my subscription at the end of the month", Category.CANCELLATION_REQUEST),
        ("Could I get my money back for last month?", Category.REFUND_REQUEST),
        ("There's a pending charge of $120 that hasn't gone away", Category.AUTHORIZATION_HOLD),
        ("Honestly very disappointed with the product lately", Category.GENERAL_DISSATISFACTION),
        ("How do I update my card?", Category.OTHER),
        ("Can you send me last year's invoices for our accountant?", Category.OTHER),
    ],
)
def test_classifier_rules(text, category):
    result = classify("", text)
    assert result.category is category
    assert result.reasons


def test_classifier_is_unsure_when_signals_compete():
    result = classify("", "I want to cancel. Also a refund would be nice. Disappointed.")
    assert result.confidence < 0.5 and not result.is_confident()


def test_reply_threads_by_headers_then_by_subject_token(session_factory):
    with session_scope(session_factory) as session:
        desk = LocalHelpdesk(session)
        ticket_id = desk.open_ticket(
            subject="Help", requester_email="a@example.com", requester_name=None
        )
        desk.add_message(
            ticket_id, kind=MessageKind.OUTBOUND, author="us", body="x", message_id="<ours@x>"
        )
        desk.close(ticket_id, resolution="Resolved", actor="test")
        by_header = parse_email(
            b"From: a@example.com\r\nIn-Reply-To: <ours@x>\r\nSubject: Re\r\n\r\nthanks\r\n"
        )
        by_token = parse_email(
            f"From: a@example.com\r\nSubject: Re: {subject_token(ticket_id)}\r\n\r\nx\r\n".encode()
        )
        stranger = parse_email(
            f"From: evil@example.com\r\nSubject: {subject_token(ticket_id)}\r\n\r\nx\r\n".encode()
        )
        assert find_ticket_for(session, by_header) == ticket_id
        assert find_ticket_for(session, by_token) == ticket_id
        assert find_ticket_for(session, stranger) is None

        desk.add_message(ticket_id, kind=MessageKind.INBOUND, author="a@example.com", body="thanks")
        ticket = session.scalars(select(Ticket)).one()
        assert (ticket.status, ticket.resolution) == ("open", None)  # a reply reopens


def test_outgoing_html_escapes_what_came_from_customers():
    message = render_email(
        str(PROJECT_ROOT / "templates"),
        "refund_confirmation",
        {
            "customer_name": "<script>alert(1)</script>",
            "amount": "$49.00",
            "refund_id": "re_123",
            "ticket_token": "[BD-1]",
            "support_name": "Support",
        },
        sender="Support <billing@example.com>",
        to="a@example.com",
        subject="Your refund [BD-1]",
        in_reply_to="<theirs@example.com>",
    )
    html = message.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["In-Reply-To"] == "<theirs@example.com>"


def test_outgoing_refuses_header_injection():
    with pytest.raises(ValueError):
        render_email(
            str(PROJECT_ROOT / "templates"),
            "refund_confirmation",
            {
                "customer_name": "",
                "amount": "",
                "refund_id": "",
                "ticket_token": "",
                "support_name": "",
            },
            sender="billing@example.com",
            to="a@example.com\r\nBcc: everyone@example.com",
            subject="x",
        )


def test_an_out_of_office_reply_is_automated(data_dir):
    parsed = parse_email((data_dir / "emails" / "out_of_office.eml").read_bytes())
    assert "Auto-Submitted" in automated_reason(parsed, OUR_ADDRESS)
