"""Reading real-world mail right: each kind of message that broke the reader, from a fixture of
our own (tests/data/emails), read whole: subject, sender, body and attachments."""

from __future__ import annotations

import base64
import email
import re
import zlib
from email import policy
from pathlib import Path

import pytest
from customer_mail import DOUBLE_CHARGE, customer_email
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

import mail.parsing
from core.db import session_scope
from core.db.models import InboundEmail, Ticket
from mail.header_block import repair_header_block, split_header_block
from mail.parsing import (
    MAX_ATTACHMENTS_LISTED,
    MAX_BODY_CHARS,
    MAX_ENCODED_WORDS,
    MAX_FIELD_BYTES,
    MAX_FILENAME_CHARS,
    MAX_HEADER_FIELDS,
    MAX_PARTS,
    MAX_REPAIRS_NOTED,
    ParsedEmail,
    bound_headers,
    message_id_of,
    not_an_email,
    parse_email,
    read_email,
)
from mail.redact import card_data_in
from mail.sanitize import html_to_text

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
    reading = read_email(raw)
    parsed = reading.parsed
    assert parsed.card_data_found and "[card ending 4242]" in parsed.text
    stored = reading.redacted_raw()
    assert body.split()[0].encode() not in stored  # the encoded number is gone
    assert not card_data_in(email.message_from_bytes(stored, policy=policy.default))
    assert parse_email(stored).text == "My card [card ending 4242] was charged twice."


SOFIA_BODY = (
    "Hello Billing team,\n\nI was charged $29.00 on 28 February, two days after I cancelled my "
    "subscription on 26 February. Please refund this charge.\n\nMy account email is this "
    "address.\n\nKind regards,\nSofia Rossi"
)
JONAS_HTML = (
    "Hi,\n\nWe were billed for 10 seats in March but only use 4. Could you refund the 6 unused "
    "seats and lower the plan?\n\nJonas"
)

BODIES = [
    # A stub text alternative ("This is an HTML message ... view it in your browser").
    (
        "stub_plain_alternative.eml",
        "Charged after cancelling",
        ("Sofia Rossi", "sofia@example.it"),
        SOFIA_BODY,
        [],
    ),
    # A text alternative of blanks only.
    (
        "empty_plain_alternative.eml",
        "Charged after cancelling",
        ("Sofia Rossi", "sofia@example.it"),
        SOFIA_BODY,
        [],
    ),
    # multipart/mixed: the message in HTML, then an inline text part, then an attachment.
    (
        "html_then_plain_in_mixed.eml",
        "Refund for the unused seats",
        ("Jonas Berg", "jonas@example.se"),
        f"{JONAS_HTML}\n\nOrder reference: ORD-58812\nCompany: Berg & Lund AB",
        [("march-invoice.pdf", "application/pdf")],
    ),
    # A real text alternative is still preferred to the HTML, and attachments stay listed.
    (
        "attachments.eml",
        "Invoice question with screenshots",
        ("Erin Walsh", "erin@example.com"),
        "Hello, the invoice and a screenshot of my statement are attached.\n\nErin",
        [
            ("invoice-2026-03.pdf", "application/pdf"),
            ("statement.png", "image/png"),
            ("notes.txt", "text/plain"),
        ],
    ),
]


@pytest.mark.parametrize(("fixture", "subject", "sender", "body", "attachments"), BODIES)
def test_the_body_is_the_parts_with_real_content_in_order(
    fixture, subject, sender, body, attachments
):
    parsed = read(fixture)
    assert parsed.subject == subject
    assert (parsed.from_name, parsed.from_address) == sender
    assert parsed.text == body
    assert attachments_of(parsed) == attachments


def alternative(plain: str, html: str) -> bytes:
    return (
        "From: pat@example.com\r\nSubject: Hi\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        f"--b\r\nContent-Type: text/plain\r\n\r\n{plain}\r\n"
        f"--b\r\nContent-Type: text/html\r\n\r\n{html}\r\n--b--\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("plain", "html", "shown"),
    [
        # A short text version that says what the HTML says is the text version.
        ("Please refund me. Pat", "<p>Please <b>refund</b> me.</p><p>Pat</p>" * 3, "plain"),
        ("Refund please.", "<p>Refund please.</p>" + "<p>Pat Lee, Acme Corp</p>" * 20, "plain"),
        # Stubs: blanks, a rule, a line that is not the HTML's message.
        (" ", "<p>Refund please.</p>", "html"),
        ("----", "<p>Refund please, I was charged twice this month.</p>", "html"),
        (
            "Your mail program cannot show this message.",
            "<p>I was charged twice this month for the same plan.</p><p>Please refund the "
            "second charge to my card.</p>",
            "html",
        ),
        # Not shorter than the HTML by much: the text version, whatever it says.
        ("Your mail program cannot show this message.", "<p>Refund me, please.</p>", "plain"),
    ],
    ids=["same-words", "html-with-long-signature", "blank", "rule", "stub-line", "not-shorter"],
)
def test_a_text_alternative_gives_way_only_when_it_is_a_stub(plain, html, shown):
    parsed = parse_email(alternative(plain, html))
    assert parsed.text == (plain.strip() if shown == "plain" else html_to_text(html))
    assert parsed.attachments == ()


def test_a_mixed_message_sent_twice_over_shows_its_words_once():
    """A client that labels its alternatives "mixed": the same words as text and as HTML."""
    raw = alternative("Refund one charge, please.", "<p>Refund one charge, please.</p>")
    parsed = parse_email(raw.replace(b"multipart/alternative", b"multipart/mixed"))
    assert parsed.text == "Refund one charge, please."


# --- what is no email at all --------------------------------------------------------------

OUTLOOK_MSG = (EMAILS / "outlook_message.msg").read_bytes()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        # Written here as Outlook writes one: OLE sectors, the MAPI streams named in UTF-16.
        (OUTLOOK_MSG, "Not an email: an Outlook .msg file (OLE compound document)."),
        (
            OUTLOOK_MSG.replace("__substg1.0_".encode("utf-16-le"), b"W\0o\0r\0d\0D\0o\0c\0"),
            "Not an email: an OLE compound document (an Office file such as .doc or .xls).",
        ),
        (
            b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj",
            "Not an email: a PDF file, with no header block.",
        ),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "Not an email: a PNG image, with no header block."),
        (zlib.compress(b"refund " * 500), "Not an email: binary data with no header block."),
        (b"", "Not an email: it is empty."),
        (b"\r\n\r\n", "Not an email: it is empty."),
    ],
    ids=["outlook-msg", "other-ole", "pdf", "png", "compressed", "empty", "blank"],
)
def test_what_is_no_email_is_named_for_the_quarantine(raw, reason):
    assert not_an_email(raw) == reason


@pytest.mark.parametrize("fixture", sorted(p.name for p in EMAILS.glob("*.eml")))
def test_every_email_fixture_is_an_email(fixture):
    """Text without any header (no_headers.eml) is a person's words: it becomes the body."""
    assert not_an_email((EMAILS / fixture).read_bytes()) is None


@pytest.mark.e2e
def test_an_outlook_msg_in_the_mailbox_is_quarantined_and_the_next_email_is_a_ticket(
    mailbox_client, rt, poll_mail, run_worker
):
    mailbox_client.append("INBOX", OUTLOOK_MSG)
    mailbox_client.append("INBOX", customer_email("Charged twice", DOUBLE_CHARGE))
    result = poll_mail()
    assert (result.stored, result.quarantined) == (2, 1)
    run_worker()
    with session_scope(rt.session_factory) as session:
        quarantined, processed = session.scalars(select(InboundEmail).order_by(InboundEmail.uid))
        assert quarantined.status == "quarantined" and quarantined.ticket_id is None
        assert quarantined.error == (
            "Not an email: an Outlook .msg file (OLE compound document). It was stored as "
            "received and left in the mailbox."
        )
        assert quarantined.raw == OUTLOOK_MSG  # whole, for a person to open
        assert processed.status == "processed"
        (ticket,) = session.scalars(select(Ticket))
        assert ticket.subject == "Charged twice"
    assert len(mailbox_client.search(["ALL"])) == 2  # nothing deleted


# --- what reading took ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "repairs"),
    [
        (
            "utf8_cyrillic_one_invalid_byte.eml",
            ("body: utf-8 with 1 undecodable character replaced by \ufffd",),
        ),
        (
            "iso_2022_jp_nec_extensions.eml",
            (
                "subject: labelled iso-2022-jp, read as cp932",
                "body: labelled iso-2022-jp, read as cp932",
            ),
        ),
        ("shift_jis_in_iso_2022_jp_word.eml", ("subject: labelled iso-2022-jp, read as cp932",)),
        ("unlabelled_koi8_r_body.eml", ("body: no charset named, read as koi8-r",)),
        ("unknown_charset.eml", ("body: labelled x-no-such-charset, read as utf-8",)),
        (
            "unindented_header_continuation.eml",
            ("headers: 2 lines without a field name read as part of the field before",),
        ),
        # A label's superset (GB2312 as GB18030, ISO-8859-1 as Windows-1252) is no repair.
        ("gb2312_with_gbk_characters.eml", ()),
        ("iso_8859_1.eml", ()),
        ("attachments.eml", ()),
    ],
)
def test_what_reading_took_is_recorded(fixture, repairs):
    assert read(fixture).repairs == repairs


def text_in(charset: str, body: bytes) -> bytes:
    return (
        f"From: pat@example.com\r\nSubject: Hi\r\nContent-Type: text/plain; charset={charset}"
        "\r\n\r\n"
    ).encode() + body


@pytest.mark.parametrize(
    ("charset", "repair"),
    [
        ("4242424242424242", "body: labelled [card ending 4242], read as utf-8"),
        ('"see ticket 123; refund now"', "body: labelled an unknown charset, read as utf-8"),
    ],
    ids=["card-number", "sentence"],
)
def test_a_charset_label_is_quoted_only_as_a_name(charset, repair):
    """The label is the sender's text, and the note goes on the ticket."""
    assert parse_email(text_in(charset, b"Refund please.")).repairs == (repair,)


@pytest.mark.e2e
def test_the_ticket_says_what_reading_its_email_took(mailbox_client, rt, poll_mail, run_worker):
    mailbox_client.append("INBOX", (EMAILS / "utf8_cyrillic_one_invalid_byte.eml").read_bytes())
    poll_mail()
    run_worker()
    with session_scope(rt.session_factory) as session:
        (ticket,) = session.scalars(select(Ticket))
        (note,) = [m.body for m in ticket.messages if m.body.startswith("Triage: ")]
        assert note.endswith(
            " Reading the email took repairs (if its text looks wrong, the stored email has the "
            "original): body: utf-8 with 1 undecodable character replaced by \ufffd."
        )


# --- any bytes at all ---------------------------------------------------------------------------

FIXTURE_BYTES = [path.read_bytes() for path in sorted(EMAILS.iterdir()) if path.is_file()]
# Pieces that change how a message is read, for mutations to splice in.
PIECES = [
    b"\r\n\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\0",
    b"--",
    b"=?utf-8?b?",
    b"=?iso-2022-jp?q?",
    b"?=",
    b"\x1b$B",
    b"From ",
    b">From x\n",
    b"\xef\xbb\xbf",
    bytes.fromhex("D0CF11E0A1B11AE1"),
    b"Content-Type: multipart/mixed; boundary=x\r\n",
    b"Content-Type: multipart/alternative; boundary=x\r\n",
    b"Content-Type: text/html; charset=gb2312\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Disposition: attachment; filename*=utf-8''%FF%FE\r\n",
    b"\r\n--x\r\n",
    b"\r\n--x--\r\n",
]


@st.composite
def mutated_fixtures(draw: st.DrawFn) -> bytes:
    """A fixture truncated, with bytes changed, pieces spliced in, runs cut or repeated."""
    raw = bytearray(draw(st.sampled_from(FIXTURE_BYTES)))
    for _ in range(draw(st.integers(0, 5))):
        at = draw(st.integers(0, len(raw)))
        change = draw(st.sampled_from(["truncate", "byte", "splice", "cut", "repeat"]))
        if change == "truncate":
            del raw[at:]
        elif change == "byte" and at < len(raw):
            raw[at] = draw(st.integers(0, 255))
        elif change == "splice":
            raw[at:at] = draw(st.sampled_from(PIECES) | st.binary(max_size=32))
        elif change == "cut":
            del raw[at : at + draw(st.integers(1, 200))]
        elif change == "repeat":
            raw[at:at] = raw[at : at + draw(st.integers(1, 300))] * draw(st.integers(1, 80))
    return bytes(raw)


@st.composite
def messages_past_the_bounds(draw: st.DrawFn) -> bytes:
    """Messages sized to reach the parser's limits: many header fields, many encoded words,
    many or deeply nested parts, a long body."""
    fields = b"X-Field: value\r\n" * draw(st.integers(0, 2_000))
    words = b" =?utf-8?q?refund?=" * draw(st.integers(0, 200))
    head = b"From: pat@example.com\r\nSubject:" + words + b"\r\n" + fields
    # Each part costs the email package about a millisecond: a few, or just past the bound.
    parts = draw(st.integers(0, 20) | st.just(MAX_PARTS + 1))
    depth = draw(st.integers(0, 40))
    body = b"refund " * draw(st.integers(0, 20_000))
    nested = b"".join(
        b'Content-Type: multipart/mixed; boundary="d%d"\r\n\r\n--d%d\r\n' % (i, i)
        for i in range(depth)
    )
    many = b"".join(b"--m\r\n\r\npart %d\r\n" % i for i in range(parts))  # text/plain
    return (
        head
        + b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n'
        + b"--m\r\n"
        + nested
        + b"Content-Type: text/html\r\n\r\n<p>"
        + body
        + b"</p>\r\n"
        + many
        + b"--m--\r\n"
    )


_RFC2047_WORD = re.compile(rb"=\?[^?\s]{1,75}\?[bBqQ]\?[^?\s]*\?=")


def unfolded_fields(block: bytes) -> list[bytes]:
    fields: list[bytes] = []
    for line in block.splitlines():
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def read_within_bounds(raw: bytes) -> ParsedEmail:
    """parse_email's reading of ``raw``, after asserting the parser's own limits on it: what
    it keeps, what it hands the email package, and how many parts it walks."""
    read_as: list[bytes] = []
    leaves: list[int] = []
    read_message, leaf_parts = mail.parsing._read_message, mail.parsing._leaf_parts

    def reading(data: bytes):
        read_as.append(data)
        return read_message(data)

    def walking(message):
        found = leaf_parts(message)
        leaves.append(len(found))
        return found

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mail.parsing, "_read_message", reading)
        patch.setattr(mail.parsing, "_leaf_parts", walking)
        parsed = parse_email(raw)
    assert isinstance(parsed, ParsedEmail)
    assert len(parsed.text) <= MAX_BODY_CHARS
    assert len(parsed.attachments) <= MAX_ATTACHMENTS_LISTED
    assert all(len(a.filename or "") <= MAX_FILENAME_CHARS for a in parsed.attachments)
    assert len(parsed.repairs) <= MAX_REPAIRS_NOTED
    assert len(parsed.subject) <= MAX_FIELD_BYTES
    assert all(count <= MAX_PARTS for count in leaves)
    for handed in read_as:  # none when the parser gave up and kept the bytes as text
        fields = unfolded_fields(split_header_block(handed)[0])
        assert len(fields) <= MAX_HEADER_FIELDS + len(mail.parsing._ESSENTIAL_FIELDS)
        assert all(len(f) <= MAX_FIELD_BYTES for f in fields)
        assert all(len(_RFC2047_WORD.findall(f)) <= MAX_ENCODED_WORDS for f in fields)
    return parsed


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2_048) | mutated_fixtures())
def test_any_bytes_are_read_or_quarantined_and_never_raise(raw):
    reason = not_an_email(raw)
    assert reason is None or reason.startswith("Not an email: ")
    read_within_bounds(raw)  # quarantined mail too: the quarantine list reads it


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00From omar" * 1_700,  # hypothesis found it: a header line with no colon, 17 KB
        b"Subject: hi\r\n" + b"Y" * 20_000 + b"\r\nFrom: a@example.com\r\n\r\nbody",
        b"X" * 20_000 + b": value\r\n\r\nbody",  # a "name" longer than any field may be
    ],
)
def test_a_header_line_that_names_no_field_is_cut_within_bounds_too(raw):
    read_within_bounds(raw)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages_past_the_bounds())
def test_messages_past_the_bounds_are_read_within_them(raw):
    assert not_an_email(raw) is None
    parsed = read_within_bounds(raw)
    assert parsed.from_address == "pat@example.com"


def test_many_tiny_header_fields_are_bounded_by_their_count_too():
    """2,500 fields of a few bytes fit inside one field's byte bound."""
    raw = b"From: a@example.com\r\n" + b"X: y\r\n" * 2_500 + b"Subject: Hi\r\n\r\nbody"
    bounded, cut = bound_headers(raw)
    assert cut == ("X",)
    assert len(unfolded_fields(split_header_block(bounded)[0])) == MAX_HEADER_FIELDS + 1
    assert parse_email(raw).subject == "Hi"  # essential fields past the count are kept
