"""Bounded cost per email: a hostile header block or body costs little and still makes a
ticket; nothing of it stalls the worker.

Unit tests pin what the bounds keep; the end-to-end tests put the hostile mail in the real
mailbox and run the real worker (a job over its timeout would fail there, and its email would
stay unprocessed).
"""

from __future__ import annotations

import datetime

import pytest
from sqlalchemy import select

from core.db import session_scope
from core.db.models import InboundEmail, Ticket
from core.domain import Money
from mail.extract import MAX_MATCHES_PER_PATTERN, extract
from mail.parsing import (
    MAX_ENCODED_WORDS,
    MAX_FIELD_BYTES,
    MAX_HEADER_FIELDS,
    bound_headers,
    parse_email,
)

TODAY = datetime.date(2026, 12, 1)


def message(headers: str, body: str = "Hello") -> bytes:
    return (
        f"From: Pat <pat@example.com>\r\nTo: billing@example.com\r\n{headers}"
        f"Message-ID: <m1@example.com>\r\n\r\n{body}\r\n"
    ).encode()


def encoded_word_bomb(words: int = 15_000) -> bytes:
    """A subject of ``words`` RFC 2047 encoded words (15,000 make about 210 KB)."""
    return message(f"Subject: {' '.join(['=?utf-8?q?refund?='] * words)}\r\n")


def test_an_ordinary_message_passes_through_unchanged():
    raw = message("Subject: =?utf-8?q?Doppelt_abgebucht?= =?utf-8?b?4oKs?=\r\n")
    assert bound_headers(raw) == (raw, ())


def test_an_encoded_word_bomb_is_cut_to_the_bound_and_the_rest_still_reads():
    parsed = parse_email(encoded_word_bomb())
    assert parsed.subject == " ".join(["refund"] * MAX_ENCODED_WORDS).replace(" ", "")
    assert parsed.headers_cut == ("Subject",)
    assert (parsed.from_address, parsed.message_id) == ("pat@example.com", "<m1@example.com>")
    assert parsed.text == "Hello"


def test_a_long_field_is_cut_between_words_and_references_keep_their_end():
    ids = [f"<{n}@example.com>" for n in range(2000)]  # ~38 KB
    raw = message(f"References: {' '.join(ids)}\r\nSubject: {'word ' * 5000}\r\n")
    bounded, cut = bound_headers(raw)
    assert cut == ("References", "Subject")
    parsed = parse_email(raw)
    assert parsed.references[-1] == ids[-1]  # the parent, named last, is kept
    assert ids[0] not in parsed.references
    assert len(parsed.subject) < MAX_FIELD_BYTES and set(parsed.subject.split()) == {"word"}
    assert len(bounded) < len(raw)


def test_past_the_field_count_only_the_fields_we_read_are_kept():
    flood = "".join(f"X-Filler-{n}: x\r\n" for n in range(5 * MAX_HEADER_FIELDS))
    parsed = parse_email(message(f"{flood}Subject: Charged twice\r\n"))
    assert parsed.subject == "Charged twice"
    assert parsed.from_address == "pat@example.com"
    # From and To come first: the fields after the first MAX_HEADER_FIELDS are dropped.
    assert len(parsed.headers_cut) == 5 * MAX_HEADER_FIELDS - (MAX_HEADER_FIELDS - 2)


@pytest.mark.parametrize(
    "unit",
    ["1", "a1", "T-1", "Aa", "€1", "USD 1 ", "2026-11-30 ", "x", "*", "** ", "x-", "cannot "],
)
def test_a_long_word_or_a_repeated_entity_reads_in_bounded_work(unit):
    """Each of these made extraction quadratic (a 99 KB word held a worker for minutes; 99 KB
    of "*" or "x" ran the card mask pattern for over a minute); now each pattern reads at most
    MAX_MATCHES_PER_PATTERN matches, and a mask is matched from the start of its run only."""
    text = (unit * (99_000 // len(unit) + 1))[:99_000]
    entities = extract(text, today=TODAY)
    assert len(entities.amounts) <= MAX_MATCHES_PER_PATTERN
    assert len(entities.dates) <= MAX_MATCHES_PER_PATTERN


def test_amounts_overlapping_an_earlier_reading_are_read_once():
    assert extract("We paid $49.00 USD and then €20.", today=TODAY).amounts == (
        Money(4900, "usd"),
        Money(2000, "eur"),
    )


# --- end to end ---------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize(
    "raw",
    [
        encoded_word_bomb(),
        message("Subject: Help\r\n", "1" * 99_000),
        message("Subject: Help\r\n", "€1" * 50_000),
    ],
    ids=["encoded-word-bomb", "99-kb-word", "repeated-amounts"],
)
def test_hostile_mail_becomes_a_ticket_through_the_real_worker(
    raw, mailbox_client, rt, poll_mail, run_worker
):
    mailbox_client.append("INBOX", raw)
    assert poll_mail().stored == 1
    run_worker()
    with session_scope(rt.session_factory) as session:
        assert session.scalars(select(InboundEmail.status)).one() == "processed"
        ticket = session.scalars(select(Ticket)).one()
        assert ticket.requester_email == "pat@example.com"


@pytest.mark.e2e
def test_an_email_past_its_time_budget_is_kept_as_a_ticket_for_a_person(
    mailbox_client, rt, poll_mail, run_worker, monkeypatch
):
    """A reading that runs long (here, the organisation finder made to compute for longer than
    any input of ours can make it) stops at the budget: the ticket holds the email and says
    why nothing ran."""
    import dataclasses
    import time

    import mail.extract

    rt.settings = dataclasses.replace(rt.settings, mail_time_budget_seconds=1)
    slow = mail.extract._organization

    def organization_taking_long(text, sender_name):
        until = time.thread_time() + 1.2  # the budget counts computing, not waiting
        while time.thread_time() < until:
            pass
        return slow(text, sender_name)

    monkeypatch.setattr(mail.extract, "_organization", organization_taking_long)
    mailbox_client.append("INBOX", message("Subject: Charged twice\r\n", "Charged twice, $49."))
    poll_mail()
    run_worker()
    with session_scope(rt.session_factory) as session:
        stored = session.scalars(select(InboundEmail)).one()
        assert stored.status == "processed" and b"Charged twice, $49." in stored.raw
        ticket = session.scalars(select(Ticket)).one()
        assert ticket.category is None  # never classified: a person reads it
        note = next(m.body for m in ticket.messages if m.kind == "note")
        assert "took too long" in note and "over the 1 s budget" in note
        assert any(m.kind == "inbound" and "Charged twice" in m.body for m in ticket.messages)


@pytest.mark.e2e
def test_waiting_is_not_reading_an_email_slowly(
    mailbox_client, rt, poll_mail, run_worker, monkeypatch
):
    """A stage that waits (a lock a dead worker held, a slow database or Stripe) spends no
    reading budget: the email is triaged as usual, not handed to a person."""
    import dataclasses
    import time

    import mail.extract

    rt.settings = dataclasses.replace(rt.settings, mail_time_budget_seconds=1)
    slow = mail.extract._organization

    def organization_waiting(text, sender_name):
        time.sleep(1.5)
        return slow(text, sender_name)

    monkeypatch.setattr(mail.extract, "_organization", organization_waiting)
    mailbox_client.append("INBOX", message("Subject: Charged twice\r\n", "Charged twice, $49."))
    poll_mail()
    run_worker()
    with session_scope(rt.session_factory) as session:
        ticket = session.scalars(select(Ticket)).one()
        assert ticket.category == "duplicate_charge"
        assert not any("took too long" in m.body for m in ticket.messages if m.kind == "note")
