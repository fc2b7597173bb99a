"""Raw bytes to ParsedEmail, with the standard library's modern email policy.

A malformed message must never stop the pipeline: every header and body read has a fallback.
"""

from __future__ import annotations

import email
import email.utils
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.message import EmailMessage, Message

from mail.sanitize import html_to_text

MAX_BODY_CHARS = 100_000


@dataclass(frozen=True)
class ParsedEmail:
    """The parts of an email that Billing Desk uses."""

    message_id: str | None
    subject: str
    from_address: str
    from_name: str | None
    date: datetime | None
    in_reply_to: str | None
    references: tuple[str, ...]
    text: str
    headers: dict[str, str] = field(default_factory=dict)


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except (ValueError, TypeError, IndexError, LookupError):
        # A header the modern parser cannot make sense of: use it as stored, unparsed.
        wanted = name.lower()
        value = next((v for k, v in message.raw_items() if k.lower() == wanted), None)
    return " ".join(str(value).split()) if value is not None else ""


def _message_ids(value: str) -> tuple[str, ...]:
    return tuple(part for part in value.replace(",", " ").split() if part.startswith("<"))


def _decode_part(part: Message) -> str:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, ValueError, AssertionError, TypeError):
        # Unknown or broken charset: keep what can be read rather than lose the mail.
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else ""


def _body_text(message: EmailMessage) -> str:
    try:
        body = message.get_body(preferencelist=("plain", "html"))
    except (KeyError, ValueError, TypeError):
        body = None
    if body is None:
        return ""
    text = _decode_part(body)
    if body.get_content_type() == "text/html":
        text = html_to_text(text)
    return text[:MAX_BODY_CHARS].strip()


def parse_email(raw: bytes) -> ParsedEmail:
    """Parse a raw RFC 5322 message; never raises for malformed input."""
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    from_name, from_address = email.utils.parseaddr(_header(message, "From"))
    try:
        date = email.utils.parsedate_to_datetime(_header(message, "Date"))
    except (TypeError, ValueError, IndexError):
        date = None
    headers = {
        name.lower(): _header(message, name)
        for name in set(message.keys())
        if name.lower().startswith(
            ("auto-", "precedence", "list-", "x-auto", "x-loop", "x-billing")
        )
    }
    in_reply_to = _message_ids(_header(message, "In-Reply-To"))
    return ParsedEmail(
        message_id=(_message_ids(_header(message, "Message-ID")) or (None,))[0],
        subject=_header(message, "Subject"),
        from_address=from_address.strip().lower(),
        from_name=from_name.strip() or None,
        date=date,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=_message_ids(_header(message, "References")),
        text=_body_text(message),
        headers=headers,
    )


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID header of a raw message, without parsing its body."""
    header_block = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    headers = email.message_from_bytes(header_block + b"\r\n\r\n", policy=policy.compat32)
    value = headers.get("Message-ID")
    ids = _message_ids(str(value)) if value else ()
    return ids[0] if ids else None


def dedupe_key(raw: bytes, message_id: str | None) -> str:
    """Identity of a stored message: its Message-ID together with a hash of its bytes."""
    digest = hashlib.sha256()
    digest.update((message_id or "").encode("utf-8", "replace"))
    digest.update(b"\0")
    digest.update(raw)
    return digest.hexdigest()
