"""Card numbers out of customer mail before it is stored (PCI DSS Req. 3: never keep a PAN).

A card number is a Luhn-valid run of 12 to 19 digits, written whole or in groups joined by
single spaces or dashes. What replaces it keeps the last four digits, which are not a PAN and
which agents need: ``[card ending 4242]``. A security code written next to its label
("CVV 123") is removed too; Stripe never lets us see one, so none may sit in a ticket.
"""

from __future__ import annotations

import email
import email.errors
import email.utils
import html
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from email import policy
from email.message import EmailMessage, Message

from mail.sanitize import clean_text, decode_part, html_to_text

log = logging.getLogger(__name__)

# A part's decoded text: decode_part, or a reader that has decoded the part already.
TextOf = Callable[[Message], str]

# Runs of digit groups joined by one space or dash (text is cleaned first, so odd spaces are
# plain). Not after "+" (an international phone number) or a word character (an ID such as
# ch_1234...); not before a word character either.
_DIGIT_RUN = re.compile(r"(?<![\w+])\d+(?:[ \-\u2010\u2011\u2013]\d+)*(?!\w)")
_SECURITY_CODE = re.compile(
    r"\b(?P<label>cvv2?|cvc2?|csc|security code|card code)(?P<gap>\W{1,4}(?:is\W{1,3})?)"
    r"(?P<code>\d{3,4})\b",
    re.IGNORECASE,
)
MIN_DIGITS, MAX_DIGITS = 12, 19
SECURITY_CODE_REMOVED = "[security code removed]"
# Header fields that hold identifiers, structure or traces rather than anyone's words (by
# prefix, lowercased): their digit runs (a boundary, a Message-ID's timestamp) are kept, as
# changing them would break the message or its thread.
_STRUCTURAL_FIELDS = (
    "content-", "message-id", "in-reply-to", "references", "resent-message-id",
    "mime-version", "date", "received", "dkim-", "arc-", "authentication-results",
)  # fmt: skip


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check that every card number passes."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def card_token(digits: str) -> str:
    """What a card number becomes in stored text: its last four digits, nothing more."""
    return f"[card ending {digits[-4:]}]"


def _is_card(digits: str) -> bool:
    return MIN_DIGITS <= len(digits) <= MAX_DIGITS and luhn_valid(digits)


def _card_spans(run: str) -> list[tuple[int, int]]:
    """Spans of card numbers inside one run of digit groups (offsets into ``run``).

    A card may sit among other numbers ("4242 4242 4242 4242 2027"): each span is the longest
    series of whole groups, from left to right, that makes a card. Groups of one or two digits
    (dates, times) only ever end a card number, never start or fill one.
    """
    groups = [m.span() for m in re.finditer(r"\d+", run)]
    spans: list[tuple[int, int]] = []
    start = 0
    while start < len(groups):
        best = None
        digits = ""
        for end in range(start, len(groups)):
            if end > start and groups[end - 1][1] - groups[end - 1][0] < 3:
                break
            digits += run[groups[end][0] : groups[end][1]]
            if len(digits) > MAX_DIGITS:
                break
            # Inside a longer run, 12 digits are too weak a signal: only a whole number counts.
            whole_run = start == 0 and end == len(groups) - 1
            if _is_card(digits) and (len(digits) > MIN_DIGITS or whole_run):
                best = end
        if best is None:
            start += 1
            continue
        spans.append((groups[start][0], groups[best][1]))
        start = best + 1
    return spans


def redact_cards(text: str) -> tuple[str, int]:
    """The text, cleaned, with card numbers and security codes replaced, and how many were
    replaced."""
    text = clean_text(text)
    count = 0
    pieces: list[str] = []
    position = 0
    for match in _DIGIT_RUN.finditer(text):
        for a, b in _card_spans(match.group(0)):
            digits = re.sub(r"\D", "", match.group(0)[a:b])
            pieces.append(text[position : match.start() + a])
            pieces.append(card_token(digits))
            position = match.start() + b
            count += 1
    pieces.append(text[position:])
    redacted = "".join(pieces)
    redacted, codes = _SECURITY_CODE.subn(
        lambda m: f"{m.group('label')}{m.group('gap')}{SECURITY_CODE_REMOVED}", redacted
    )
    return redacted, count + codes


def has_card_data(text: str) -> bool:
    """Whether redact_cards would change anything in this text."""
    return redact_cards(text)[1] > 0


def _readable(part: Message, text: str) -> str:
    """What a person reads in a text part: HTML is read as its text, where tags can no
    longer split a number in two."""
    return html_to_text(text) if part.get_content_subtype() == "html" else text


def _text_parts(parts: Iterable[Message]) -> Iterator[Message]:
    """The text parts among these, including those of forwarded messages (message/rfc822)."""
    for part in parts:
        if part.get_content_type() == "message/rfc822":
            yield from _text_parts(p for p in part.walk() if p is not part)
        elif part.get_content_maintype() == "text" and not part.is_multipart():
            yield part


def card_data_in(
    message: Message, parts: Iterable[Message] | None = None, text_of: TextOf = decode_part
) -> bool:
    """Whether the subject or any text part (body or attachment) shows card data; ``parts``
    are the message's parts when the caller has them already (else all are walked), and
    ``text_of`` gives a part's decoded text (a reader that has decoded it already)."""
    if has_card_data(" ".join(str(message.get("Subject", "")).split())):
        return True
    for part in _text_parts(message.walk() if parts is None else parts):
        text = text_of(part)
        if has_card_data(text) or has_card_data(_readable(part, text)):
            return True
    return False


def redact_message(
    message: EmailMessage, fallback_text: str = "", text_of: TextOf = decode_part
) -> bytes:
    """The raw bytes of an already parsed message with card data removed from its headers and
    text parts, serialised from the tree (which is redacted in place: nothing reads the bytes
    again). If the redacted tree still shows card data, or cannot be made or written, the
    result is its headers over ``fallback_text`` (the already redacted body)."""
    try:
        rewritten = _redact_structure(message, text_of)
        if rewritten is not None:
            return rewritten
    except Exception:  # any failure falls back to the safe copy below
        log.warning("could not rewrite a message part by part to remove card data")
    text = redact_cards(fallback_text)[0]
    try:
        return _headers_with_text(message, text)
    except Exception:  # even the headers are unusable: keep the text alone
        log.warning("could not copy a message's headers while removing card data")
        return f"\r\n{text}".encode("utf-8", "replace")


def _redact_structure(message: EmailMessage, text_of: TextOf = decode_part) -> bytes | None:
    """Redact every header and text part of the tree in place and serialise it; None if the
    tree, read afresh, still shows card data."""
    boundaries = {b for p in message.walk() if p.is_multipart() and (b := p.get_boundary())}
    for part in message.walk():
        assert isinstance(part, EmailMessage)
        _redact_headers(part)
        if part.get_content_maintype() == "text" and not part.is_multipart():
            _redact_part(part, text_of(part), boundaries)
    if card_data_in(message):  # decoded again from the rewritten parts, not from text_of
        return None
    return message.as_bytes(policy=policy.default.clone(linesep="\r\n"))


def _redact_headers(part: EmailMessage) -> None:
    """Card numbers out of the part's header fields (the subject, a sender's display name,
    any other field), each changed field kept where it stands when it occurs once."""
    for name in dict.fromkeys(part.keys()):
        if name.lower().startswith(_STRUCTURAL_FIELDS):
            continue
        try:
            values = part.get_all(name) or []
            redacted = [_redacted_field(value) for value in values]
        except Exception:  # a field the modern policy cannot read is left as it stands
            continue
        if all(field is None for field in redacted):
            continue
        fields = [str(v) if r is None else r for v, r in zip(values, redacted, strict=True)]
        if len(fields) == 1:
            part.replace_header(name, fields[0])
            continue
        del part[name]
        for value in fields:
            part[name] = value


def _redacted_field(value: object) -> str | None:
    """A header field's value with card data replaced; None when it shows none. Only the
    display names of an address field are changed: its addresses are kept as written."""
    addresses = getattr(value, "addresses", None)
    if addresses is not None:
        names = [redact_cards(" ".join(a.display_name.split())) for a in addresses]
        if not any(count for _name, count in names):
            return None
        return ", ".join(
            email.utils.formataddr((name, a.addr_spec))
            for (name, _count), a in zip(names, addresses, strict=True)
        )
    text, count = redact_cards(" ".join(str(value).split()))
    return text if count else None


def _redact_part(part: EmailMessage, text: str, boundaries: set[str]) -> None:
    redacted, count = redact_cards(text)
    if not count and not has_card_data(_readable(part, text)):
        return
    if part.get_content_subtype() == "html" and has_card_data(html_to_text(redacted)):
        # Markup split a number ("4242 <b>4242</b> ..."): keep the part as escaped text.
        redacted = "<pre>" + html.escape(redact_cards(_readable(part, text))[0]) + "</pre>"
    disposition = part.get_content_disposition()
    filename = part.get_filename()
    # A line the decoded text shares with a boundary of the message would end the part when
    # the copy is read; base64 keeps it inside.
    delimiters = tuple(f"--{b}" for b in boundaries)
    collides = any(line.startswith(delimiters) for line in redacted.splitlines())
    # set_content drops the part's Content-* headers: put back what says how it is shown.
    part.set_content(
        redacted,
        subtype=part.get_content_subtype(),
        charset="utf-8",
        cte="base64" if collides else None,
        disposition=disposition,
        filename=filename,
    )


def _headers_with_text(original: EmailMessage, text: str) -> bytes:
    """The message's own headers, redacted, over one plain-text body: the last resort when the
    MIME structure cannot be rewritten part by part."""
    message = EmailMessage()
    for name, raw in original.raw_items():
        if name.lower().startswith("content-") or name.lower() == "mime-version":
            continue
        try:
            value = str(original.policy.header_fetch_parse(name, raw))
        except Exception:  # a field the modern policy cannot read: its text as stored
            value = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        try:
            message[name] = redact_cards(" ".join(value.split()))[0]
        except (ValueError, TypeError, IndexError, email.errors.MessageError):
            continue  # a header the modern policy refuses to write is dropped, not fatal
    message.set_content(
        "[Billing Desk rewrote this message to remove card data; its attachments are not "
        f"kept.]\n\n{text}"
    )
    return message.as_bytes(policy=policy.default.clone(linesep="\r\n"))
