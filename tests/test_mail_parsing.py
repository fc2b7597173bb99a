"""Parsing never raises on bad mail; loop guard, classifier rules and threading behave."""

from __future__ import annotations

import email
import email.feedparser
import re
import time
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage

import pytest
from sqlalchemy import select

from core.db import session_scope
from core.db.models import OutboundEmail, Ticket
from core.domain import Category, MessageKind, OutboundStatus
from core.helpdesks import LocalHelpdesk
from core.settings import PROJECT_ROOT
from mail import redact
from mail.classifier import classify
from mail.conversations import Threading, find_ticket_for, subject_token
from mail.loop_guard import auto_reply_limit_reason, automated_reason
from mail.outgoing import render_email
from mail.parsing import (
    MAX_ATTACHMENTS_LISTED,
    ParsedEmail,
    dedupe_key,
    message_id_of,
    parse_email,
    read_email,
    split_reply,
    text_for_classification,
)
from mail.redact import has_card_data, luhn_valid, redact_cards
from mail.sanitize import html_to_text

OUR_ADDRESS = "billing@example.com"


# name, sender, part of the subject, part of the text, why it is automated (None: a person)
FIXTURES = [
    ("iso_8859_1.eml", "jose@example.com", "Cobro duplicado", "Hola, I was charged twice", None),
    ("unknown_charset.eml", "someone@example.com", "weird charset", "double charged", None),
    ("unknown_8bit_charset.eml", "muller@example.de", "Doppelte Abbuchung", "für März", None),
    ("html_only.eml", "html@example.com", "Payment failed", "My payment failed yesterday.", None),
    ("broken_mime.eml", "broken@example.com", "broken mime", "I was charged twice", None),
    ("truncated_base64.eml", "trunc@example.com", "Charged twice", "Please refund one.", None),
    ("missing_boundary.eml", "noboundary@example.com", "Refund please", "double charged", None),
    ("no_headers.eml", "", "", "just some bytes", None),
    ("outlook_reply.eml", "alice@example.com", "[BD-7]", "charged a third time", None),
    ("forwarded_stripe_receipt.eml", "bob@example.com", "Fwd: Your receipt", "Amount paid", None),
    ("attachments.eml", "erin@example.com", "Invoice question", "statement are attached", None),
    ("card_number.eml", "carol@example.com", "[card ending 5556]", "[card ending 4242]", None),
    ("out_of_office.eml", "ooo@example.com", "Automatic reply", "out of the office", "Auto-Sub"),
    (
        "auto_reply_subject_only.eml",
        "dana@example.com",
        "Automatic reply",
        "on leave",
        "auto-reply",
    ),
    ("bounce_dsn.eml", "mailer-daemon@mx.example.net", "Undelivered", "User unknown", "Auto-Sub"),
    ("our_refund_confirmation.eml", "billing@example.com", "Your refund", "refunded", "Auto-Sub"),
    # Mislabelled charsets (tests/test_charsets.py reads each whole).
    ("gb2312_with_gbk_characters.eml", "wang@example.cn", "朱镕基", "王喆女士", None),
    ("iso_2022_jp_nec_extensions.eml", "taro@example.jp", "①", "②返金", None),
    ("shift_jis_in_iso_2022_jp_word.eml", "hanako@example.jp", "返金", "お願い", None),
    ("utf8_cyrillic_one_invalid_byte.eml", "ivan@example.ru", "Двойное", "Спасибо", None),
    ("unlabelled_koi8_r_body.eml", "olga@example.ru", "Возврат", "платёж", None),
    # Senders a strict parser loses (test_the_sender_is_found_where_the_email_names_one).
    ("empty_from_with_reply_to.eml", "pat@example.com", "Charged twice", "refund one", None),
    ("invalid_from_address.eml", "jane@example.com.", "Charged twice", "refund one", None),
    ("two_from_headers.eml", "ann@example.com", "Charged twice", "refund one", None),
    # Header blocks that break Python's parser (tests/test_mail_reading.py reads each whole).
    ("unindented_header_continuation.eml", "lena@example.org", "March invoice", "twice", None),
    ("envelope_line_before_headers.eml", "omar@example.net", "cancel", "cancel my", None),
    ("blank_line_before_headers.eml", "mei@example.com", "Card declined", "declined", None),
    # Body selection (tests/test_mail_reading.py reads each whole).
    ("stub_plain_alternative.eml", "sofia@example.it", "cancelling", "charged $29.00", None),
    ("empty_plain_alternative.eml", "sofia@example.it", "cancelling", "charged $29.00", None),
    ("html_then_plain_in_mixed.eml", "jonas@example.se", "unused seats", "ORD-58812", None),
]


@pytest.mark.parametrize(("name", "sender", "subject_part", "text_part", "automated"), FIXTURES)
def test_every_fixture_parses_and_gets_the_loop_guard_verdict_expected(
    data_dir, name, sender, subject_part, text_part, automated
):
    parsed = parse_email((data_dir / "emails" / name).read_bytes())
    assert parsed.from_address == sender
    assert subject_part in parsed.subject
    assert text_part in parsed.text
    assert not re.search(r"<\s*/?\s*(script|style|p|img|a|div|html|body|br)\b", parsed.text)
    assert not has_card_data(parsed.text) and not has_card_data(parsed.subject)
    reason = automated_reason(parsed, OUR_ADDRESS)
    assert (reason is None) if automated is None else (automated in reason)


def test_the_fixture_table_covers_every_fixture(data_dir):
    assert {row[0] for row in FIXTURES} == {p.name for p in (data_dir / "emails").glob("*.eml")}


def test_headers_in_raw_8_bit_or_unknown_charsets_are_read_not_mangled(data_dir):
    latin = parse_email((data_dir / "emails" / "iso_8859_1.eml").read_bytes())
    unknown = parse_email((data_dir / "emails" / "unknown_8bit_charset.eml").read_bytes())
    assert latin.from_name == "José Pérez"
    assert (unknown.from_name, unknown.subject) == ("Müller", "Doppelte Abbuchung ü")
    assert "\ufffd" not in unknown.text


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe\x00" * 200,
        b"From: Foo <a@b\r\nSubject: =?utf-8?b?!!!not-base64?=\r\n\r\nbody\r\n",
        b"From: a@example.com\r\nContent-Type: text/plain; charset=rot13\r\n\r\nuryyb\r\n",
        b"From: a@example.com\r\nContent-Type: text/plain; charset=base64\r\n\r\nxx\r\n",
        b'From: a@example.com\r\nContent-Type: text/plain; charset=""\r\n\r\nhi\r\n',
        b"From: a@example.com\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n",
        b"From: a@example.com\r\nSubject: " + b"x" * 100_000 + b"\r\n\r\nhi\r\n",
        b"From: a@example.com\r\nContent-Type: multipart/mixed; boundary=\r\n\r\n--\r\n",
        b"From: a@example.com\r\nContent-Type: text/plain; name*0*=utf-8''%FF%FE\r\n"
        b"Content-Disposition: attachment; filename*=bogus''%ZZ\r\n\r\nhi\r\n",
        (
            b"From: deep@example.com\r\nSubject: deep\r\n"
            + b"".join(
                b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
                for i in range(200)
            )
            + b"Content-Type: text/plain\r\n\r\nhello\r\n"
        ),
        (
            b'From: many@example.com\r\nContent-Type: multipart/mixed; boundary="x"\r\n\r\n'
            + b"--x\r\nContent-Type: application/octet-stream\r\n\r\nAAAA\r\n" * 5000
            + b"--x--\r\n"
        ),
    ],
    ids=[
        "empty",
        "binary",
        "broken-address-and-encoded-word",
        "charset-rot13",
        "charset-base64",
        "charset-empty",
        "unknown-transfer-encoding",
        "huge-header",
        "empty-boundary",
        "broken-rfc2231",
        "200-levels-deep",
        "5000-parts",
    ],
)
def test_hostile_mail_parses_without_raising(raw):
    parsed = parse_email(raw)
    assert isinstance(parsed.text, str)
    assert len(parsed.attachments) <= MAX_ATTACHMENTS_LISTED


def test_attachments_are_listed_with_name_type_and_size_never_kept(data_dir):
    raw = (data_dir / "emails" / "attachments.eml").read_bytes()
    parsed = parse_email(raw)
    message = email.message_from_bytes(raw, policy=policy.default)
    sizes = {
        part.get_filename(): len(part.get_payload(decode=True))
        for part in message.iter_attachments()
    }
    assert [a.to_dict() for a in parsed.attachments] == [
        {
            "filename": "invoice-2026-03.pdf",
            "content_type": "application/pdf",
            "size": sizes["invoice-2026-03.pdf"],
        },
        {  # a path in a filename is never kept: it is shown, not used
            "filename": "statement.png",
            "content_type": "image/png",
            "size": sizes["../../statement.png"],
        },
        {"filename": "notes.txt", "content_type": "text/plain", "size": sizes["notes.txt"]},
    ]
    assert "Card on file" not in parsed.text  # a text attachment is not the body
    assert parsed.card_data_found  # ... but its card number is seen, so the raw copy is redacted


def test_a_30_mb_attachment_is_listed_and_parsing_does_not_blow_up(tmp_path):
    """The poller's size limit (not downloading such a message at all) is tested with the
    poller; here the parser must cope when one gets through."""
    message = EmailMessage()
    message["From"] = "Big Files <big@example.com>"
    message["Subject"] = "Logs attached"
    message.set_content("I was charged twice, the export is attached.")
    message.add_attachment(
        bytes(30 * 1024 * 1024), maintype="application", subtype="zip", filename="export.zip"
    )
    path = tmp_path / "big.eml"
    path.write_bytes(message.as_bytes())

    started = time.monotonic()
    parsed = parse_email(path.read_bytes())

    assert time.monotonic() - started < 30
    assert parsed.text == "I was charged twice, the export is attached."
    assert [a.to_dict() for a in parsed.attachments] == [
        {"filename": "export.zip", "content_type": "application/zip", "size": 30 * 1024 * 1024}
    ]


# --- card numbers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4242 4242 4242 4242 thanks", "card [card ending 4242] thanks"),
        ("card 4242-4242-4242-4242.", "card [card ending 4242]."),
        ("4242424242424242", "[card ending 4242]"),
        ("amex 3782 822463 10005", "amex [card ending 0005]"),
        ("amex 378282246310005", "amex [card ending 0005]"),
        ("maestro 6759 6498 2648", "maestro [card ending 2648]"),
        ("19 digits 4222222222222222224", "19 digits [card ending 2224]"),
        ("4242 4242 4242 4242 2027", "[card ending 4242] 2027"),
        ("4242 4242 4242 4242 123", "[card ending 4242] 123"),
        ("pasted 4242\u00a04242\u00a04242\u00a04242", "pasted [card ending 4242]"),
        ("hidden 4242\u200b4242\u200b4242\u200b4242", "hidden [card ending 4242]"),
        ("CVV: 123 and cvc 4567", "CVV: [security code removed] and cvc [security code removed]"),
        # Not card numbers: fails Luhn, a phone number, too short or long, part of an ID, dates.
        ("4242 4242 4242 4241", "4242 4242 4242 4241"),
        ("call +1 415 555 0132 or +44 20 7946 0958", "call +1 415 555 0132 or +44 20 7946 0958"),
        ("42424242424", "42424242424"),
        ("ref 42424242424242424242", "ref 42424242424242424242"),
        ("ch_4242424242424242", "ch_4242424242424242"),
        ("2026-03-04 2026-03-05 10:30", "2026-03-04 2026-03-05 10:30"),
    ],
)
def test_card_numbers_are_redacted_keeping_the_last_four(text, expected):
    assert redact_cards(text)[0] == expected


def test_luhn():
    assert luhn_valid("4242424242424242") and not luhn_valid("4242424242424241")


def _raw_with_card(**kwargs) -> bytes:
    message = EmailMessage()
    message["From"] = "Carol <carol@example.com>"
    message["Subject"] = "New card"
    message["Message-ID"] = "<new-card@example.com>"
    message.set_content("Please use 4000 0566 5566 5556 from now on.", **kwargs)
    return message.as_bytes()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_raw_with_card(), id="plain"),
        pytest.param(_raw_with_card(cte="base64"), id="base64"),
        pytest.param(_raw_with_card(cte="quoted-printable"), id="quoted-printable"),
        pytest.param(
            b"From: carol@example.com\r\nSubject: card\r\nContent-Type: text/html\r\n\r\n"
            b"<p>4000 0566 <b>5566</b> 5556</p>\r\n",
            id="html-split-by-tags",
        ),
    ],
)
def test_the_stored_raw_copy_loses_its_card_number_too(raw):
    assert parse_email(raw).card_data_found
    redacted = read_email(raw).redacted_raw()
    reread = parse_email(redacted)
    assert not reread.card_data_found
    assert b"5566" not in redacted.replace(b"[card ending 5556]", b"")
    assert "[card ending 5556]" in reread.text
    assert reread.message_id == parse_email(raw).message_id


def test_the_fixture_with_a_card_keeps_everything_else(data_dir):
    raw = (data_dir / "emails" / "card_number.eml").read_bytes()
    redacted = parse_email(read_email(raw).redacted_raw())
    assert redacted.subject == "Please charge this card instead: [card ending 5556]"
    assert "+1 415 555 0132" in redacted.text and "CVV [security code removed]" in redacted.text
    assert not redacted.card_data_found


def test_a_text_attachment_is_redacted_and_other_attachments_survive(data_dir):
    raw = (data_dir / "emails" / "attachments.eml").read_bytes()
    redacted = read_email(raw).redacted_raw()
    reread = parse_email(redacted)
    assert not reread.card_data_found
    assert [a.filename for a in reread.attachments] == [
        "invoice-2026-03.pdf",
        "statement.png",
        "notes.txt",
    ]
    assert reread.attachments[0].size == parse_email(raw).attachments[0].size


def test_a_message_with_a_card_is_parsed_once_and_its_copy_reads_as_the_original(
    data_dir, monkeypatch
):
    """Every parse of the email package goes through a FeedParser: reading the message and
    making its redacted copy take one, and the copy reads as the message did, card replaced."""
    raw = (data_dir / "emails" / "card_number.eml").read_bytes()
    parses: list[object] = []
    feed_parser_init = email.feedparser.FeedParser.__init__

    def counting(self, *args, **kwargs):
        parses.append(self)
        feed_parser_init(self, *args, **kwargs)

    monkeypatch.setattr(email.feedparser.FeedParser, "__init__", counting)
    reading = read_email(raw)
    stored = reading.redacted_raw()
    assert reading.parsed.card_data_found and len(parses) == 1
    monkeypatch.undo()

    reread = parse_email(stored)
    original = reading.parsed
    assert (reread.subject, reread.from_address, reread.from_name, reread.message_id) == (
        original.subject,
        original.from_address,
        original.from_name,
        original.message_id,
    )
    assert reread.text == original.text and "[card ending 4242]" in reread.text
    assert not reread.card_data_found
    assert not re.search(rb"4242[ -]?4242", stored) and b"5556 5556" not in stored


@pytest.mark.parametrize(
    ("headers", "seen"),
    [
        pytest.param(  # the copy is written from the tree read with the boundary found
            "From: dana@example.com\r\nSubject: Card\r\nContent-Type: multipart/mixed\r\n",
            "dana@example.com",
            id="missing-boundary",
        ),
        pytest.param(
            'From: "Dana 4242 4242 4242 4242" <dana@example.com>\r\nSubject: Card\r\n'
            'Content-Type: multipart/mixed; boundary="b1"\r\n',
            "Dana [card ending 4242]",
            id="card-in-display-name",
        ),
    ],
)
def test_the_stored_copy_loses_card_data_the_reading_found(headers, seen):
    body = "--b1\r\nContent-Type: text/plain\r\n\r\nUse 4000 0566 5566 5556 please.\r\n--b1--\r\n"
    raw = (headers + "Message-ID: <dana@example.com>\r\n\r\n" + body).encode()
    reading = read_email(raw)
    assert reading.parsed.card_data_found
    stored = reading.redacted_raw()
    assert b"5566" not in stored and b"4242 4242" not in stored
    reread = parse_email(stored)
    assert reread.text == "Use [card ending 5556] please." and not reread.card_data_found
    assert reread.message_id == "<dana@example.com>"
    assert seen in stored.decode()


def test_when_the_structure_cannot_be_rewritten_the_raw_copy_is_headers_and_text(
    data_dir, monkeypatch
):
    raw = (data_dir / "emails" / "card_number.eml").read_bytes()

    def broken(*_args):
        raise ValueError("cannot")

    monkeypatch.setattr(redact, "_redact_structure", broken)
    redacted = read_email(raw).redacted_raw()
    reread = parse_email(redacted)
    assert not reread.card_data_found and b"4242-4242" not in redacted
    assert reread.message_id == "<card-number@example.com>"
    assert "[card ending 4242]" in reread.text


# --- quoted replies and signatures --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "own"),
    [
        (
            "Please refund the second charge.\n\n"
            "On Tue, 3 Mar 2026 at 10:14, Billing Support <billing@example.com> wrote:\n"
            "> Hello Alice, we refunded $49.00.\n> Thanks",
            "Please refund the second charge.",
        ),
        (  # Gmail wraps a long header over two lines
            "Still charged twice.\n\nOn Tue, 3 Mar 2026 at 10:14, Billing Support\n"
            "<billing@example.com> wrote:\n\n> old text",
            "Still charged twice.",
        ),
        (
            "I was charged again.\n\n-----Original Message-----\nFrom: Billing Support\n"
            "Sent: Tuesday, March 3, 2026 10:14 AM\nTo: Alice\nSubject: Your refund\n\nHello",
            "I was charged again.",
        ),
        (  # Outlook without the marker: a rule, then From:/Sent:/To:/Subject:
            "Charged twice again.\n\n________________________________\nFrom: Billing Support "
            "<billing@example.com>\nSent: Tuesday\nTo: Alice\nSubject: Your refund\n\nHello",
            "Charged twice again.",
        ),
        (
            "Charged twice again.\n\nFrom: Billing Support <billing@example.com>\n"
            "Sent: Tuesday, March 3, 2026\nTo: Alice\nSubject: RE: refund\n\nHello",
            "Charged twice again.",
        ),
        (
            "> Did you cancel?\nYes, in January.\n> Which card?\nThe Visa.",
            "Yes, in January.\nThe Visa.",
        ),
        ("Please refund.\n-- \nAlice Martin\nCEO, Northwind", "Please refund."),
        ("Please refund.\n\nSent from my iPhone", "Please refund."),
        ("Please refund.\n\nGet Outlook for iOS", "Please refund."),
        (
            "Please refund.\n\nBest regards,\nAlice Martin\nNorthwind Bakery (tenant T-1042)\n"
            "+1 415 555 0132",
            "Please refund.",
        ),
        ("Please refund.\n\nThanks!\nAlice", "Please refund."),
        # Real content that only looks like a reply header, a closing or a signature.
        ("Thanks, but I was charged a third time!", "Thanks, but I was charged a third time!"),
        (
            "Thanks,\nI also noticed a second charge of $49 on the same day, can you check it?",
            "Thanks,\nI also noticed a second charge of $49 on the same day, can you check it?",
        ),
        (
            "Regards,\nAlice\n\nP.S. I was charged again this morning, please look into it.",
            "Regards,\nAlice\n\nP.S. I was charged again this morning, please look into it.",
        ),
        ("On March 3 you charged me twice.", "On March 3 you charged me twice."),
        ("From: my account page it says paid", "From: my account page it says paid"),
        ("Hi,\nThanks\nfor nothing, charged twice", "Hi,\nThanks\nfor nothing, charged twice"),
    ],
)
def test_quoted_replies_and_signatures_are_left_out_of_classification(text, own):
    assert text_for_classification(text) == own


def test_forwarded_mail_keeps_the_forwarders_words_and_a_bare_forward_keeps_it_all(data_dir):
    parsed = parse_email((data_dir / "emails" / "forwarded_stripe_receipt.eml").read_bytes())
    assert parsed.for_classification == (
        "Hi, this went through twice, see the receipt below. Can you check?\n\nBob"
    )
    assert "Amount paid" in parsed.text  # the ticket keeps it all
    bare = "---------- Forwarded message ---------\nFrom: Acme\n\nReceipt: $49.00 paid"
    assert "Receipt: $49.00 paid" in text_for_classification(bare)


def test_the_outlook_fixture_splits_into_words_and_signature(data_dir):
    parsed = parse_email((data_dir / "emails" / "outlook_reply.eml").read_bytes())
    own, signature = split_reply(parsed.text)
    assert own.endswith("on the card ending 4242.") and "Original Message" not in own
    assert signature == "Best regards,\nAlice Martin\nNorthwind Bakery (tenant T-1042)"
    assert "-----Original Message-----" in parsed.text


# --- hostile HTML -------------------------------------------------------------------------


def test_hostile_html_becomes_plain_text():
    html = (
        "<html><head><title>t</title><style>p{x:y}</style></head><body>"
        "<p>Refund&nbsp;please</p><img src=x onerror=alert(1)>"
        '<a href="javascript:alert(2)">click</a><!-- <script>alert(3)</script> -->'
        "<script>alert(4)</script><p>bi\u202edi\u200b text</p><template>hidden</template>"
        "</body></html>"
    )
    text = html_to_text(html)
    assert text == "Refund please\nclick\nbidi text"


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
        ("Auto-Submitted: No", None),
        ("Auto-Submitted: auto-generated; owner-email=x@example.com", "Auto-Submitted"),
        ("Precedence: junk", "Precedence"),
        ("Precedence: list", "Precedence"),
        ("List-Unsubscribe: <mailto:u@example.com>", "mailing-list"),
        ("X-Autoreply: yes", "auto-responder"),
        ("X-Loop: billing@example.com", "X-Loop"),
        ("X-Failed-Recipients: gone@example.org", "X-Failed-Recipients"),
        (
            "Content-Type: multipart/report; report-type=delivery-status; boundary=x",
            "delivery status",
        ),
        (
            'Content-Type: multipart/report; report-type="disposition-notification"; boundary=x',
            "automatic report (disposition-notification)",
        ),
        ("Return-Path: <>", None),  # a null sender alone is not enough: many robots use it
    ],
)
def test_loop_guard(headers, reason):
    raw = f"From: a@example.com\r\nSubject: hi\r\n{headers}\r\n\r\nbody\r\n".replace(
        "\r\n\r\n\r\n", "\r\n\r\n"
    )
    found = automated_reason(parse_email(raw.encode()), OUR_ADDRESS)
    assert (found is None) if reason is None else (reason in found)


@pytest.mark.parametrize(
    ("sender", "subject", "reason"),
    [
        ("postmaster@mx.example.net", "Delivery report", "delivery status"),
        ("mailer-daemon@mx.example.net", "anything", "delivery status"),
        ("mx@example.net", "Undeliverable: Your refund has been issued", "bounce"),
        ("mx@example.net", "Delivery Status Notification (Failure)", "bounce"),
        ("mx@example.net", "Mail delivery failed: returning message to sender", "bounce"),
        ("mx@example.net", "Returned mail: see transcript for details", "bounce"),
        ("dana@example.com", "Out of Office: back on Monday", "auto-reply"),
        ("dana@example.com", "Automatische Antwort: Abwesenheitsnotiz", "auto-reply"),
        ("dana@example.com", "Abwesenheitsnotiz: Urlaub", "auto-reply"),
        ("dana@example.com", "Auto-renewal charged me twice", None),
        ("dana@example.com", "Re: delivery of my invoice failed?", None),
        ("dana@example.com", "Out of pocket for a charge I never made", None),
    ],
)
def test_bounce_and_auto_reply_subjects_and_senders(sender, subject, reason):
    parsed = parse_email(f"From: {sender}\r\nSubject: {subject}\r\n\r\nx\r\n".encode())
    found = automated_reason(parsed, OUR_ADDRESS)
    assert (found is None) if reason is None else (reason in found)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("bounce_dsn.eml", "delivery status"), ("our_refund_confirmation.eml", "our own")],
)
def test_bounces_and_our_mail_are_caught_without_auto_submitted(data_dir, name, reason):
    raw = (data_dir / "emails" / name).read_bytes().replace(b"Auto-Submitted:", b"X-Was:")
    assert reason in automated_reason(parse_email(raw), OUR_ADDRESS)


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
    """Three requests in one email: automation leaves it to a person at the policy's threshold."""
    from core.policy.config import PolicyConfig

    result = classify("", "I want to cancel. Also a refund would be nice. Disappointed.")
    assert not result.is_confident(PolicyConfig().min_classifier_confidence), result


def ticket_we_answered(session) -> tuple[LocalHelpdesk, int]:
    """a@example.com's ticket "Help", with our reply to it (Message-ID ``<ours@x>``)."""
    desk = LocalHelpdesk(session)
    ticket_id = desk.open_ticket(
        subject="Help", requester_email="a@example.com", requester_name=None
    )
    desk.add_message(
        ticket_id, kind=MessageKind.OUTBOUND, author="us", body="x", message_id="<ours@x>"
    )
    return desk, ticket_id


def test_reply_threads_by_headers_then_by_subject_token(session_factory):
    with session_scope(session_factory) as session:
        desk, ticket_id = ticket_we_answered(session)
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
        assert find_ticket_for(session, by_header) == Threading(ticket_id)
        assert find_ticket_for(session, by_token) == Threading(ticket_id)
        assert find_ticket_for(session, stranger).ticket_id is None

        desk.add_message(ticket_id, kind=MessageKind.INBOUND, author="a@example.com", body="thanks")
        ticket = session.scalars(select(Ticket)).one()
        assert (ticket.status, ticket.resolution) == ("open", None)  # a reply reopens


def test_an_outlook_reply_that_lost_in_reply_to_threads_by_its_subject_token(
    session_factory, data_dir
):
    with session_scope(session_factory) as session:
        desk = LocalHelpdesk(session)
        ticket_id = desk.open_ticket(
            subject="Charged twice", requester_email="alice@example.com", requester_name=None
        )
        desk.close(ticket_id, resolution="Resolved", actor="test")
        raw = (data_dir / "emails" / "outlook_reply.eml").read_bytes()
        parsed = parse_email(raw.replace(b"[BD-7]", subject_token(ticket_id).encode()))
        assert parsed.in_reply_to is None and parsed.references == ()
        assert find_ticket_for(session, parsed) == Threading(ticket_id)


def test_a_reply_with_references_only_threads_on_any_of_them(session_factory):
    with session_scope(session_factory) as session:
        _desk, ticket_id = ticket_we_answered(session)
        reply = parse_email(
            b"From: a@example.com\r\nSubject: Re: Help\r\n"
            b"References: <theirs@y> <ours@x>\r\n <unknown@z>\r\n\r\nthanks\r\n"
        )
        assert reply.in_reply_to is None
        assert find_ticket_for(session, reply) == Threading(ticket_id)


def test_only_the_conversations_people_thread_onto_it(session_factory):
    """A Message-ID is no proof of who writes: the requester, someone who already wrote on the
    ticket and our own address thread onto it; anyone else gets a ticket of their own."""
    with session_scope(session_factory) as session:
        desk, ticket_id = ticket_we_answered(session)
        desk.add_message(ticket_id, kind=MessageKind.INBOUND, author="cc@example.com", body="y")

        def reply_from(sender: str) -> ParsedEmail:
            return parse_email(
                f"From: {sender}\r\nIn-Reply-To: <ours@x>\r\nSubject: Re\r\n\r\nhi\r\n".encode()
            )

        ours = "billing@example.com"
        for sender in ("a@example.com", "A@Example.com", "cc@example.com", ours):
            assert find_ticket_for(session, reply_from(sender), ours) == Threading(ticket_id)
        stranger = find_ticket_for(session, reply_from("evil@example.com"), ours)
        assert stranger == Threading(None, named=ticket_id)


def test_the_hourly_cap_counts_our_recent_mail_to_the_address(session_factory):
    now = datetime.now(UTC)
    with session_scope(session_factory) as session:
        for index, (to, minutes_ago, status) in enumerate(
            [
                ("alice@example.com", 5, "sent"),
                ("Alice Martin <ALICE@example.com>", 10, "sent"),
                ("alice@example.com", 59, "pending"),
                ("alice@example.com", 61, "sent"),  # more than an hour ago
                ("alice@example.com", 1, OutboundStatus.RATE_LIMITED),  # held back, never sent
                ("aliceXexample@example.com", 1, "sent"),
                ("alice_x@example.com", 1, "sent"),
            ]
        ):
            session.add(
                OutboundEmail(
                    dedupe_key=f"k{index}",
                    to_address=to,
                    subject="s",
                    message_id=f"<m{index}@x>",
                    status=status,
                    created_at=now - timedelta(minutes=minutes_ago),
                )
            )
        session.flush()
        assert auto_reply_limit_reason(session, "Alice@Example.com", 4, now=now) is None
        reason = auto_reply_limit_reason(session, "alice@example.com", 3, now=now)
        assert reason and "3 automatic email(s)" in reason and "limit is 3" in reason
        assert auto_reply_limit_reason(session, "alice_x@example.com", 2, now=now) is None
        assert auto_reply_limit_reason(session, "bob@example.com", 0, now=now)


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


@pytest.mark.parametrize(
    ("name", "sender", "field"),
    [
        # From is empty (<>): Reply-To names who wrote; it can never be authenticated.
        ("empty_from_with_reply_to.eml", ("Pat Lee", "pat@example.com"), "Reply-To"),
        # An address a strict parser refuses is kept as written, not replaced by the name.
        ("invalid_from_address.eml", ("Jane Doe", "jane@example.com."), "From"),
        # Two From fields: the first.
        ("two_from_headers.eml", ("Ann Original", "ann@example.com"), "From"),
    ],
)
def test_the_sender_is_found_where_the_email_names_one(data_dir, name, sender, field):
    parsed = parse_email((data_dir / "emails" / name).read_bytes())
    assert (parsed.from_name, parsed.from_address, parsed.from_field) == (*sender, field)


def test_a_name_whose_encoded_words_hide_a_comma_stays_one_name():
    raw = b"From: =?utf-8?q?Doe=2C_Jos=C3=A9?= <jose@example.com>\r\nSubject: x\r\n\r\nhi\r\n"
    parsed = parse_email(raw)
    assert (parsed.from_name, parsed.from_address) == ("Doe, José", "jose@example.com")
