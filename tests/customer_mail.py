"""A customer's email as a mail program sends it, for the tests that put mail in the mailbox."""

from __future__ import annotations

import email.utils
from email.message import EmailMessage

from helpdesk_app.demo.servers import sender_verified

DOUBLE_CHARGE = "I was charged twice today, $49.00 two times. Please refund one."


def customer_email(
    subject: str,
    body: str,
    sender: str = "alice@example.com",
    name: str = "Alice Martin",
    *,
    authenticated: bool = True,
) -> bytes:
    """One plain-text email to the billing address, with a fresh Message-ID; as our mail
    server hands it on, DMARC passed for the sender's domain (unless not ``authenticated``)."""
    message = EmailMessage()
    message["From"] = email.utils.formataddr((name, sender))
    message["To"] = "billing@example.com"
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate()
    message["Message-ID"] = email.utils.make_msgid(domain="example.com")
    message.set_content(body)
    return sender_verified(message.as_bytes()) if authenticated else message.as_bytes()
