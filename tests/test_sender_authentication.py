"""Money moves without an agent only for a sender our mail server (or a DKIM signature)
vouches for: a forged From of a real customer gets the same plan, as a suggestion, with the
reason on the ticket.

The unit table runs mail.authentication on headers as receiving servers write them; the end to
end tests append mail to the real mailbox and run the real worker against the fake Stripe.
"""

from __future__ import annotations

import base64
import email.utils

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from customer_mail import DOUBLE_CHARGE, customer_email
from sqlalchemy import select

from core.db import session_scope
from core.db.models import Plan, Ticket
from helpdesk_app.demo.seed import DemoCustomer, create_charge, create_customer
from helpdesk_app.demo.servers import EMBEDDED_AUTHSERV_ID, received_by_our_server
from mail.authentication import aligned, authenticate_sender

ALICE = DemoCustomer("Alice Martin", "alice@example.com", "T-1042", "Northwind", "4242424242424242")
OURS = EMBEDDED_AUTHSERV_ID
PLAIN = (
    b"From: Alice Martin <alice@example.com>\r\nTo: billing@example.com\r\n"
    b"Subject: Charged twice\r\nMessage-ID: <m1@example.com>\r\n\r\nPlease refund one.\r\n"
)


def results(authserv_id: str, text: str) -> bytes:
    return f"Authentication-Results: {authserv_id}; {text}\r\n".encode()


@pytest.mark.parametrize(
    ("headers", "authenticated"),
    [
        # Our server says DMARC passed for the From domain.
        (results(OURS, "dmarc=pass header.from=example.com"), True),
        (results(OURS.upper(), "dmarc=pass (p=reject) header.from=example.com"), True),
        # An aligned DKIM pass, the From domain or a parent of it.
        (results(OURS, "dkim=pass header.d=example.com header.s=s1; dmarc=none"), True),
        (results(OURS, "dkim=pass header.i=@example.com; spf=fail"), True),
        # The report of the forged email: SPF and DMARC failed.
        (
            results(OURS, "spf=fail smtp.mailfrom=evil.test; dmarc=fail header.from=example.com"),
            False,
        ),
        # A DKIM pass, but for the attacker's own domain; DMARC passed for another domain.
        (results(OURS, "dkim=pass header.d=evil.test; dmarc=pass header.from=evil.test"), False),
        # SPF alone vouches for the envelope, not for From.
        (results(OURS, "spf=pass smtp.mailfrom=example.com"), False),
        # A pass written by somebody else's server (or by the sender) counts for nothing.
        (results("mx.evil.test", "dmarc=pass header.from=example.com"), False),
        # Ours on top says fail; a pass with our id below it was added before it reached us.
        (
            results(OURS, "dmarc=fail header.from=example.com")
            + results(OURS, "dmarc=pass header.from=example.com"),
            False,
        ),
        # Unreadable or missing: not authenticated, never an error.
        (results(OURS, ";;; ==="), False),
        (b"", False),
    ],
)
def test_only_our_servers_report_of_dmarc_or_aligned_dkim_authenticates(headers, authenticated):
    verdict = authenticate_sender(headers + PLAIN, "alice@example.com", [OURS])
    assert verdict.authenticated is authenticated
    assert verdict.reason  # a sentence for the ticket either way


def test_a_dkim_signature_is_verified_here_when_no_server_reported():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name: bytes, timeout: float = 5) -> bytes | None:
        return record if name == b"s1._domainkey.example.com." else None

    signed = dkim.sign(PLAIN, b"s1", b"example.com", private) + PLAIN
    assert authenticate_sender(signed, "alice@example.com", [OURS], dnsfunc=dns).authenticated
    tampered = signed.replace(b"refund one", b"refund all")
    assert not authenticate_sender(tampered, "alice@example.com", [], dnsfunc=dns).authenticated
    # A valid signature of example.com says nothing about another From domain.
    assert not authenticate_sender(signed, "bob@other.test", [], dnsfunc=dns).authenticated


def test_alignment_is_the_domain_or_a_parent_of_it():
    assert aligned("example.com", "example.com")
    assert aligned("example.com", "mail.example.com")
    assert not aligned("mail.example.com", "example.com")
    assert not aligned("ample.com", "example.com")
    assert not aligned("", "example.com")


# --- end to end -------------------------------------------------------------------------


@pytest.fixture
def twin_charges(stripe_client, rt) -> tuple[str, str]:
    customer = create_customer(stripe_client, ALICE)
    base = rt.settings.stripe_api_base
    create_charge(stripe_client, base, customer, 4900, "Pro", days_ago=0.1)
    return customer, create_charge(stripe_client, base, customer, 4900, "Pro")


def forged_double_charge() -> bytes:
    """Alice's address in From, sent from elsewhere: our server saw SPF and DMARC fail."""
    raw = customer_email("Charged twice", DOUBLE_CHARGE, authenticated=False)
    return received_by_our_server(
        raw, "spf=fail smtp.mailfrom=evil.test; dkim=none; dmarc=fail header.from=example.com"
    )


def test_a_forged_from_of_a_real_customer_is_not_refunded_but_suggested_with_the_reason(
    stripe_client, mailbox_client, outbox, rt, poll_mail, run_worker, twin_charges
):
    _customer, newer = twin_charges
    mailbox_client.append("INBOX", forged_double_charge())
    poll_mail()
    run_worker()

    assert stripe_client.v1.refunds.list(params={"charge": newer}).data == []
    # The address's owner hears that a person is on it; no refund confirmation goes out.
    assert [m["X-Billing-Desk"] for m in outbox] == ["acknowledgement"]
    with session_scope(rt.session_factory) as session:
        ticket = session.scalars(select(Ticket)).one()
        assert ticket.status == "open"
        plan = session.scalars(select(Plan).where(Plan.key.startswith("triage:"))).one()
        assert plan.status == "suggested"  # the same plan, waiting for an agent
        note = next(m.body for m in ticket.messages if m.kind == "note")
        assert "not authenticated" in note and "dmarc=fail" in note


def test_a_pass_the_sender_wrote_themselves_is_not_believed(
    stripe_client, mailbox_client, outbox, rt, poll_mail, run_worker, twin_charges
):
    """The attacker adds a DMARC pass under another server's name; our server adds none (as
    when the team has not named its server, or the mail came around it)."""
    _customer, newer = twin_charges
    raw = customer_email("Charged twice", DOUBLE_CHARGE, authenticated=False)
    forged = results("mx.google.com", "dmarc=pass header.from=example.com") + raw
    mailbox_client.append("INBOX", forged)
    poll_mail()
    run_worker()

    assert stripe_client.v1.refunds.list(params={"charge": newer}).data == []
    # The address's owner hears that a person is on it; no refund confirmation goes out.
    assert [m["X-Billing-Desk"] for m in outbox] == ["acknowledgement"]


def test_the_same_email_from_an_authenticated_sender_is_refunded(
    stripe_client, mailbox_client, outbox, rt, poll_mail, run_worker, twin_charges
):
    """The control: only the authentication differs from the forged email above."""
    _customer, newer = twin_charges
    mailbox_client.append("INBOX", customer_email("Charged twice", DOUBLE_CHARGE))
    poll_mail()
    run_worker()

    assert len(stripe_client.v1.refunds.list(params={"charge": newer}).data) == 1
    assert [email.utils.parseaddr(m["To"])[1] for m in outbox] == ["alice@example.com"]


def test_an_email_with_no_from_address_is_never_authenticated_by_its_reply_to(
    stripe_client, mailbox_client, outbox, rt, poll_mail, run_worker, twin_charges
):
    """From is empty and Reply-To names a customer: the address is used to find the ticket's
    customer, but DMARC and DKIM vouch for From alone, so nothing moves money."""
    _customer, newer = twin_charges
    raw = customer_email("Charged twice", DOUBLE_CHARGE)  # our server saw DMARC pass...
    raw = raw.replace(
        b"From: Alice Martin <alice@example.com>", b"From: <>\r\nReply-To: alice@example.com"
    )
    assert b"Reply-To: alice@example.com" in raw
    mailbox_client.append("INBOX", raw)
    poll_mail()
    run_worker()

    assert stripe_client.v1.refunds.list(params={"charge": newer}).data == []
    with session_scope(rt.session_factory) as session:
        ticket = session.scalars(select(Ticket)).one()
        assert ticket.requester_email == "alice@example.com"
        note = next(m.body for m in ticket.messages if m.kind == "note")
        assert "comes from its Reply-To, which nothing authenticates" in note
