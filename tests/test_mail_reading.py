"""Reading real-world mail right: each kind of message that broke the reader, from a fixture of
our own (tests/data/emails), read whole: subject, sender, body and attachments."""

from __future__ import annotations

import base64
import email
from email import policy
from pathlib import Path

import pytest

from mail.header_block import repair_header_block
from mail.parsing import message_id_of, parse_email
from mail.redact import card_data_in, redact_raw_message

EMAILS = Path(__file__).parent / "data" / "emails"

LENA_BODY = (
    "Hello,\n\nI was charged twice for the March invoice (INV-2041, 49.00 EUR on 2 March).\n"
    "Please refund one of the two charges.\n\nThanks,\nLena Fischer"
)


# fixture, subject, (name, address), body, attachments as (filename, content type)
HEADER_BLOCKS = [
    # A Received field folded without indenting its two continuation lines, before From.
    (
        "unindented_header_continuation.eml",
        "Charged twice for the March invoice",
        ("Lena Fischer", "lena@example.org"),
        LENA_BODY,
        [],
    ),
    # An escaped mbox envelope line (">From ...") before the headers.
    (
        "envelope_line_before_headers.eml",
        "Please cancel my subscription",
        ("Omar Haddad", "omar@example.net"),
        "Hi, please cancel my subscription at the end of this billing period.\nOmar",
        [],
    ),
    # A blank line before the headers.
    (
        "blank_line_before_headers.eml",
        "Card declined on renewal",
        ("Mei Chen", "mei@example.com"),
        "My card was declined when the plan renewed this morning. Can you retry it?",
        [],
    ),
]


def read(fixture: str):
    return parse_email((EMAILS / fixture).read_bytes())


def attachments_of(parsed) -> list[tuple[str | None, str]]:
    return [(a.filename, a.content_type) for a in parsed.attachments]


@pytest.mark.parametrize(("fixture", "subject", "sender", "body", "attachments"), HEADER_BLOCKS)
def test_the_real_headers_around_a_broken_line_are_read(
    fixture, subject, sender, body, attachments
):
    parsed = read(fixture)
    assert parsed.subject == subject
    assert (parsed.from_name, parsed.from_address, parsed.from_field) == (*sender, "From")
    assert parsed.text == body
    assert attachments_of(parsed) == attachments
    assert parsed.message_id == message_id_of((EMAILS / fixture).read_bytes()) is not None
    assert any(repair.startswith("headers: ") for repair in parsed.repairs)


@pytest.mark.parametrize(
    ("raw", "mended", "repairs"),
    [
        # Sound headers, and an mbox envelope line first (the parser reads that itself).
        (b"From: a@x.com\r\nSubject: Hi\r\n\r\nbody", None, ()),
        (b"From a@x.com Mon Mar  2 10:00:00 2026\nFrom: a@x.com\n\nbody", None, ()),
        # No header block at all, or a body that lacks its blank line: left to the parser.
        (b"just some words\r\n", None, ()),
        (b"\r\nHello\r\n", None, ()),
        (b"From: a@x.com\nSubject: Hi\nHello,\nNote: we paid\n\nThanks", None, ()),
        # Lines before the headers are skipped, a byte-order mark dropped.
        (
            b"\n\nFrom: a@x.com\n\nbody",
            b"From: a@x.com\n\nbody",
            ("headers: 2 lines before the headers skipped",),
        ),
        (
            b"\xef\xbb\xbfFrom: a@x.com\n\nbody",
            b"From: a@x.com\n\nbody",
            ("headers: a byte-order mark before the headers dropped",),
        ),
        # A field name with a blank before its colon, which the parser refuses too.
        (
            b"From: a@x.com\nSubject : Hi\n\nbody",
            b"From: a@x.com\nSubject: Hi\n\nbody",
            ("headers: 1 field name with a blank before its colon",),
        ),
        # An unindented line of a folded subject: read as the subject's.
        (
            b"Subject: Charged twice\nfor March\nFrom: a@x.com\n\nbody",
            b"Subject: Charged twice\n for March\nFrom: a@x.com\n\nbody",
            ("headers: 1 line without a field name read as part of the field before",),
        ),
    ],
    ids=[
        "sound",
        "mbox-envelope",
        "no-headers",
        "blank-then-text",
        "no-blank-line",
        "blank-lines-first",
        "byte-order-mark",
        "blank-before-colon",
        "unindented-subject",
    ],
)
def test_the_header_block_is_mended_only_where_it_breaks_the_parser(raw, mended, repairs):
    assert repair_header_block(raw) == (raw if mended is None else mended, repairs)


def test_a_header_block_too_long_to_be_real_is_not_mended():
    raw = b"Received: x\nbroken\n" + b"X-Pad: " + b"y" * 600_000 + b"\nFrom: a@x.com\n\nbody"
    assert repair_header_block(raw) == (raw, ())


def test_a_card_number_behind_a_broken_header_leaves_the_stored_copy_too():
    """Past the broken line the parser took the base64 body for plain text, where no number
    shows: the stored copy must be read with the same mended headers as the ticket."""
    body = base64.encodebytes(b"My card 4242 4242 4242 4242 was charged twice.").decode()
    raw = (
        "Received: from mail.example.org\r\nby mx.example.com\r\nFrom: pat@example.com\r\n"
        "Subject: Charged twice\r\nContent-Type: text/plain\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{body}"
    ).encode()
    parsed = parse_email(raw)
    assert parsed.card_data_found and "[card ending 4242]" in parsed.text
    stored = redact_raw_message(raw, parsed.text)
    assert body.split()[0].encode() not in stored  # the encoded number is gone
    assert not card_data_in(email.message_from_bytes(stored, policy=policy.default))
    assert parse_email(stored).text == "My card [card ending 4242] was charged twice."
