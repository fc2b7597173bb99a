"""Raw bytes to ParsedEmail, with the standard library's modern email policy.

A malformed message must never stop the pipeline: every header and body read has a fallback,
and parse_email itself never raises. Card numbers never leave this module: the subject and
text it returns are already redacted (mail.redact).

A message is parsed once: read_email keeps the tree and each part's decoded text beside the
ParsedEmail, so that card detection, and the redacted copy that replaces the stored raw bytes,
work from that one reading.
"""

from __future__ import annotations

import email
import email.header
import email.utils
import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.message import EmailMessage, Message
from typing import Any

from core.customers import legal_form_pattern
from mail import charsets
from mail.header_block import has_header_block, repair_header_block, split_header_block
from mail.redact import card_data_in, redact_cards, redact_message
from mail.sanitize import clean_text, html_to_text, read_part

log = logging.getLogger(__name__)

MAX_BODY_CHARS = 100_000
# Bounds on what one message may make us walk: parts listed, and multipart nesting followed.
MAX_PARTS = 500
MAX_DEPTH = 20
MAX_ATTACHMENTS_LISTED = 100
MAX_FILENAME_CHARS = 255
MAX_REPAIRS_NOTED = 10
# A text alternative at most this long, beside an HTML one STUB_RATIO times as long or more
# that holds under STUB_SHARED_WORDS of its words, is a stub ("This is an HTML message; view
# it in your browser"), not the message: a real text version says what the HTML says.
MAX_STUB_CHARS = 300
STUB_RATIO = 2
STUB_SHARED_WORDS = 0.5
# Bounds on the header block, applied to the bytes before the email package sees them: its
# header parser costs far more than linear in encoded words (a 210 KB subject of 15,000 words
# took 1.6 GB). Longer fields are cut at a word; fields past the count are dropped.
MAX_HEADER_FIELDS = 300
MAX_FIELD_BYTES = 16 * 1024  # a long thread's References fit
MAX_SENDER_FIELDS = 5  # copies of one sender field read, at most
MAX_ENCODED_WORDS = 64  # per field; a long subject in Japanese uses a dozen or two
# Past MAX_HEADER_FIELDS, only these are still kept (the first of each, in order).
_ESSENTIAL_FIELDS = frozenset({
    "from", "sender", "reply-to", "to", "cc", "subject", "date", "message-id", "in-reply-to",
    "references", "mime-version", "content-type", "content-transfer-encoding",
    "auto-submitted", "precedence", "authentication-results", "dkim-signature",
})  # fmt: skip
_ENCODED_WORD = re.compile(rb"=\?[^?\s]{1,75}\?[bBqQ]\?[^?\s]*\?=")
# Headers the loop guard reads (by prefix, lowercased).
_KEPT_HEADERS = (
    "auto-",
    "precedence",
    "list-",
    "x-auto",
    "x-loop",
    "x-billing",
    "x-failed-recipients",
    "return-path",
    "content-type",
)


@dataclass(frozen=True)
class Attachment:
    """An attachment as listed on a ticket: never its content, which is not stored."""

    filename: str | None
    content_type: str
    size: int  # bytes, decoded (estimated from the encoded length for base64)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored on the ticket message."""
        return {"filename": self.filename, "content_type": self.content_type, "size": self.size}


@dataclass(frozen=True)
class ParsedEmail:
    """The parts of an email that Billing Desk uses.

    ``text`` is the whole readable body (HTML reduced to text), card numbers removed; it is
    what the ticket shows. ``for_classification`` is the sender's own new words: the same text
    without quoted replies, forwarded blocks and signature. ``card_data_found`` says a card
    number or security code was seen anywhere in the message (subject, body or a text
    attachment), so the stored raw copy must be redacted too.
    """

    message_id: str | None
    subject: str
    from_address: str
    from_name: str | None
    date: datetime | None
    in_reply_to: str | None
    references: tuple[str, ...]
    text: str
    headers: dict[str, str] = field(default_factory=dict)
    for_classification: str = ""
    attachments: tuple[Attachment, ...] = ()
    card_data_found: bool = False
    headers_cut: tuple[str, ...] = ()  # header fields over their bounds, cut before parsing
    # The header the address came from: "From", unless From had none (Reply-To, Sender, or
    # the envelope's Return-Path). Only a From address can be authenticated.
    from_field: str = "From"
    # What had to be mended to read the message (a broken header block, a charset its label
    # did not fit), in words for the ticket: such a reading is likelier to be wrong somewhere.
    repairs: tuple[str, ...] = ()


# --- headers ------------------------------------------------------------------------------


_UNDECODED_WORD = re.compile(r"=\?[^?\s]{1,75}\?[bBqQ]\?[^?\s]*\?=")


def _raw_header(message: Message, name: str) -> str | None:
    wanted = name.lower()
    return next((str(v) for k, v in message.raw_items() if k.lower() == wanted), None)


def _decode_raw_header(raw: str, repairs: _Repairs | None = None) -> str:
    """A header as stored, decoded by hand: raw 8-bit bytes and RFC 2047 words in unknown
    charsets are read as mail.charsets reads them (what that took noted in ``repairs``)."""
    data = raw.encode("utf-8", "surrogateescape")
    text = _decoded(data, None, repairs)
    try:
        chunks = email.header.decode_header(text)
    except Exception:  # a broken encoded word: keep the text as it is
        return text
    return "".join(
        _decoded(chunk, charset, repairs) if isinstance(chunk, bytes) else chunk
        for chunk, charset in chunks
    )


@dataclass
class _Repairs:
    """What reading one field or part of a message took, noted under its name."""

    what: str
    notes: list[str] = field(default_factory=list)


def _decoded(data: bytes, label: str | None, repairs: _Repairs | None) -> str:
    decoded = charsets.decode(data, label)
    note = _charset_repair(repairs.what, label, decoded) if repairs is not None else None
    if repairs is not None and note is not None:
        repairs.notes.append(note)
    return decoded.text


# A charset label as the note may quote it; any other is a sender's text, not a name.
_LABEL = re.compile(r"[A-Za-z0-9._:+-]{1,40}")


def _charset_repair(what: str, label: str | None, decoded: charsets.Decoded) -> str | None:
    """What reading text took when its label alone did not do, in words for the ticket
    ("body: utf-8 with 1 undecodable character replaced by \ufffd"); None when it did."""
    if not decoded.repaired:
        return None
    replaced = decoded.text.count("\ufffd")
    damage = f"{replaced} undecodable character{'s' * (replaced != 1)} replaced by \ufffd"
    named = label if label and _LABEL.fullmatch(label) else "an unknown charset"
    if label and replaced and charsets.codec_for(label) == decoded.codec:
        return f"{what}: {named} with {damage}"
    how = f"labelled {named}" if label else "no charset named"
    return f"{what}: {how}, read as {decoded.codec}" + (f" with {damage}" if replaced else "")


def _header(message: Message, name: str, repairs: _Repairs | None = None) -> str:
    try:
        value = message.get(name)
        text = str(value) if value is not None else None
    except Exception:  # a header the modern parser cannot make sense of
        text = "\ufffd"
    if text is not None and ("\ufffd" in text or _UNDECODED_WORD.search(text)):
        # Undecodable bytes, or an encoded word Python left as it was (a charset it cannot
        # read, such as ISO-2022-JP with NEC's characters): decode the stored value ourselves.
        raw = _raw_header(message, name)
        text = _decode_raw_header(raw, repairs) if raw is not None else text
    return " ".join(clean_text(text).split()) if text is not None else ""


# Where the sender is named, in the order they are believed: the author, then where replies
# go, then who sent it on the author's behalf, then the envelope's return path.
_SENDER_FIELDS = ("From", "Reply-To", "Sender", "Return-Path")


def _sender(message: Message) -> tuple[str, str, str]:
    """The sender's display name and address: From's first address as written (even one a
    strict parser refuses, such as ``jane@example.com.``), else the next address, Reply-To,
    Sender or the envelope's Return-Path; the name from the same field, else From's; and the
    field the address came from."""
    from_name = ""
    for header in _SENDER_FIELDS:
        wanted = header.lower()
        values = [str(v) for k, v in message.raw_items() if k.lower() == wanted][:MAX_SENDER_FIELDS]
        # Addresses are split on the raw text: a name's encoded words may hide a comma.
        for name, address in email.utils.getaddresses(values):
            name = " ".join(clean_text(_decode_raw_header(name)).split()) if name else ""
            if header == "From" and name and not from_name:
                from_name = name
            address = clean_text(_decode_raw_header(address)).strip()
            if "@" in address and " " not in address:
                return name or from_name, address, header
    return from_name, "", "From"


def _message_ids(value: str) -> tuple[str, ...]:
    return tuple(part for part in value.replace(",", " ").split() if part.startswith("<"))


# --- parts --------------------------------------------------------------------------------


def _leaf_parts(message: Message) -> list[Message]:
    """The message's non-multipart parts in order, a forwarded message/rfc822 counting as one;
    bounded in count and depth so a hostile nesting cannot keep us busy."""
    leaves: list[Message] = []
    pending: list[tuple[Message, int]] = [(message, 0)]
    while pending and len(leaves) < MAX_PARTS:
        part, depth = pending.pop(0)
        if part.get_content_maintype() == "multipart":
            children = part.get_payload()
            if isinstance(children, list) and depth < MAX_DEPTH:
                pending[0:0] = [
                    (child, depth + 1) for child in children if isinstance(child, Message)
                ]
            continue
        leaves.append(part)
    return leaves


def _size_of(part: Message) -> int:
    try:
        payload = part.get_payload()
        if isinstance(payload, list):  # message/rfc822: one message inside
            return sum(len(item.as_bytes()) for item in payload if isinstance(item, Message))
        if str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64":
            # Counting beats decoding a 30 MB attachment just to measure it.
            encoded = re.sub(r"[^A-Za-z0-9+/]", "", str(payload))
            return len(encoded) * 3 // 4
        decoded = part.get_payload(decode=True)
        return len(decoded) if isinstance(decoded, bytes) else len(str(payload))
    except Exception:  # a size is a courtesy; a broken part must not stop us
        return 0


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # hostile RFC 2231 parameters
        return None
    if not name:
        return None
    # Only the last path component, on one line: a filename is shown, never used as a path.
    name = " ".join(clean_text(str(name)).split())
    name = re.split(r"[\\/]", name)[-1].strip()
    return name[:MAX_FILENAME_CHARS] or None


def _is_attachment(part: Message) -> bool:
    if part.get_content_maintype() != "text":
        return True
    return part.get_content_disposition() == "attachment" or _filename(part) is not None


def _attachments(leaves: list[Message], read: set[int]) -> tuple[Attachment, ...]:
    """The attachments among the leaves, but for the parts read as the body (ids in ``read``)."""
    listed = [
        Attachment(_filename(part), part.get_content_type(), _size_of(part))
        for part in leaves
        if id(part) not in read and _is_attachment(part)
    ]
    return tuple(listed[:MAX_ATTACHMENTS_LISTED])


def _is_body(part: Message) -> bool:
    """A part written to be read as the message: plain or HTML text, inline, with no name."""
    return part.get_content_type() in ("text/plain", "text/html") and not _is_attachment(part)


class _BodyWalk:
    """The parts a mail program shows as the message, in order, as one walk of the structure:
    every inline text part of a multipart/mixed (an HTML part and a text part after it are
    both the message), the root of a multipart/related, and one of each multipart/alternative
    (the text one, unless it is empty or a stub beside real HTML). Bounded like _leaf_parts."""

    def __init__(self) -> None:
        self.passed_over: set[int] = set()  # alternatives not shown: read, not attachments
        self.texts: dict[int, tuple[str, str | None]] = {}  # and what reading each took
        self.reader = _PartReader()
        self._visits = 0

    def shown(self, part: Message, depth: int = 0) -> list[Message]:
        """The parts of ``part`` to show, in order."""
        self._visits += 1
        if self._visits > MAX_PARTS or depth > MAX_DEPTH:
            return []
        if part.get_content_maintype() != "multipart":
            return [part] if _is_body(part) else []
        payload = part.get_payload()
        children = (
            [c for c in payload if isinstance(c, Message)] if isinstance(payload, list) else []
        )
        if not children:
            return []
        subtype = part.get_content_subtype()
        if subtype == "alternative":
            return self._alternative(children, depth + 1)
        if subtype == "related":
            start = part.get_param("start")
            root = next((c for c in children if start and c.get("Content-ID") == start), None)
            return self.shown(root or children[0], depth + 1)
        return [shown for child in children for shown in self.shown(child, depth + 1)]

    def _alternative(self, children: list[Message], depth: int) -> list[Message]:
        versions = [version for child in children if (version := self.shown(child, depth))]
        if not versions:
            return []
        plain = next((v for v in versions if all(_is_plain(p) for p in v)), None)
        # Later alternatives are the richer ones (RFC 2046 5.1.4).
        rich = next((v for v in reversed(versions) if not all(_is_plain(p) for p in v)), None)
        chosen = versions[0]
        if plain is not None:
            chosen = plain if rich is None or not self._is_stub(plain, rich) else rich
        elif rich is not None:
            chosen = rich
        self.passed_over.update(id(p) for v in versions if v is not chosen for p in v)
        return chosen

    def _is_stub(self, plain: list[Message], rich: list[Message]) -> bool:
        """Whether a text alternative is empty, or a line such as "This is an HTML message,
        view it in your browser" beside an HTML version of real length."""
        plain_text = "".join(self.text(p) for p in plain).strip()
        rich_text = "".join(self.text(p) for p in rich).strip()
        if not plain_text:
            return bool(rich_text)
        if len(plain_text) > MAX_STUB_CHARS or len(rich_text) < STUB_RATIO * len(plain_text):
            return False
        words = re.findall(r"\w+", plain_text.lower())
        if not words:
            return True  # punctuation or a rule beside real HTML
        in_rich = set(re.findall(r"\w+", rich_text.lower()))
        return sum(word in in_rich for word in words) < STUB_SHARED_WORDS * len(words)

    def text(self, part: Message) -> str:
        """The readable text of a part (HTML reduced to text), decoded once."""
        return self._read(part)[0]

    def repair(self, part: Message) -> str | None:
        """What reading the part's charset took, if its label alone did not do."""
        return self._read(part)[1]

    def _read(self, part: Message) -> tuple[str, str | None]:
        if id(part) not in self.texts:
            self.texts[id(part)] = _body_text(part, self.reader)
        return self.texts[id(part)]


def _is_plain(part: Message) -> bool:
    return part.get_content_type() != "text/html"


def _body_part(message: EmailMessage, leaves: list[Message]) -> Message | None:
    """The body as Python's email package finds it, else the first text part that is no
    attachment: for a structure in which no part is written to be read as the message."""
    body: Message | None
    try:
        body = message.get_body(preferencelist=("plain", "html"))
    except Exception:  # a broken structure: fall back to the first text part
        body = None
    if body is None:
        body = next(
            (
                part
                for part in leaves
                if part.get_content_maintype() == "text" and not _is_attachment(part)
            ),
            None,
        )
    return body


class _PartReader:
    """Each part of one message decoded once, for body selection, card detection and
    redaction alike (parts are told apart by identity: the tree keeps them alive)."""

    def __init__(self) -> None:
        self._read: dict[int, tuple[str | None, charsets.Decoded]] = {}

    def read(self, part: Message) -> tuple[str | None, charsets.Decoded]:
        """The part's charset label and decoded text (mail.sanitize.read_part)."""
        if id(part) not in self._read:
            self._read[id(part)] = read_part(part)
        return self._read[id(part)]

    def text(self, part: Message) -> str:
        """The part's decoded text, as mail.sanitize.decode_part reads it."""
        return self.read(part)[1].text


def _body_text(body: Message, reader: _PartReader) -> tuple[str, str | None]:
    """The part's readable text, and what reading its charset took."""
    label, decoded = reader.read(body)
    text = decoded.text
    if body.get_content_type() == "text/html":
        text = html_to_text(text)
    return clean_text(text), _charset_repair("body", label, decoded)


def _joined_text(shown: list[Message], walk: _BodyWalk) -> tuple[str, list[str]]:
    """The shown parts' texts in order, a blank line between them, each text once (a client
    that labels its alternatives "mixed" sends the same words twice), and what reading their
    charsets took; no more parts are decoded once the text is past MAX_BODY_CHARS."""
    texts: list[str] = []
    repairs: list[str] = []
    seen: set[str] = set()
    size = 0
    for part in shown:
        if size > MAX_BODY_CHARS:
            break
        text = walk.text(part).strip()
        words = " ".join(text.split())
        if words and words not in seen:
            seen.add(words)
            texts.append(text)
            size += len(text) + 2
            repairs.extend(note for note in [walk.repair(part)] if note)
    return "\n\n".join(texts), repairs


# --- quoted replies and signatures ----------------------------------------------------------

_REPLY_HEADER = re.compile(
    r"^\s*(on|le|am|el|il|op|em)\s.{0,300}?\b"
    r"(wrote|writes|a écrit|schrieb|escribió|ha scritto|schreef|escreveu)\s*:\s*$",
    re.IGNORECASE,
)
_BLOCK_MARKER = re.compile(
    r"^\s*(-{2,}|_{2,}|={2,})?\s*("
    r"original message|forwarded message|begin forwarded message|ursprüngliche nachricht|"
    r"message d'origine|mensaje original|weitergeleitete nachricht|message transféré"
    r")\s*:?\s*(-{2,}|_{2,}|={2,})?\s*$",
    re.IGNORECASE,
)
_OUTLOOK_RULE = re.compile(r"^\s*_{10,}\s*$")
_HEADER_FROM = re.compile(r"^\s*\*?(from|de|von|van|da)\s*:\*?\s+\S", re.IGNORECASE)
_HEADER_OTHER = re.compile(
    r"^\s*\*?(sent|date|to|subject|cc|envoyé|gesendet|enviado|objet|betreff|an|à|asunto)"
    r"\s*:\*?\s",
    re.IGNORECASE,
)
_SIGNATURE_DASHES = re.compile(r"^--\s*$")
_MOBILE_FOOTER = re.compile(
    r"^\s*(sent from my \w[\w ]{0,30}|sent from (outlook|mail|yahoo mail|gmail|proton ?mail)"
    r"\b.{0,40}|get outlook for \w+.{0,20})\s*$",
    re.IGNORECASE,
)
_CLOSING = re.compile(
    r"^\s*((best|kind|warm|warmest|many|with)\s+(regards|wishes|thanks)|regards|best|cheers|"
    r"thanks|thank you|thanks again|thanks in advance|thank you in advance|many thanks|"
    r"sincerely|yours sincerely|yours truly|yours faithfully|respectfully|all the best|"
    r"take care|br|mvh|cordialement|saludos|grüße|viele grüße|mit freundlichen grüßen)"
    r"\s*[,.!]?\s*$",
    re.IGNORECASE,
)
MAX_NAME_BLOCK_LINES = 6
# A line ending in an abbreviation ("Acme Inc.", "John Smith Jr.") has not ended a sentence.
_ABBREVIATION_END = re.compile(rf"\b(?:{legal_form_pattern()}|jr|sr)\.$", re.I)


def _is_name_line(line: str) -> bool:
    """A line that can belong to a signature: short, and not a sentence or a question."""
    stripped = line.strip()
    if len(stripped) > 72 or len(stripped.split()) > 8 or stripped.endswith(("?", "!", ":")):
        return False
    # Names, companies, titles and phone numbers start with a capital, a digit or "+";
    # "for nothing, charged twice" does not.
    if not (stripped[:1].isupper() or stripped[:1].isdigit() or stripped[:1] in "+(["):
        return "@" in stripped or "www." in stripped or "://" in stripped
    return not stripped.endswith(".") or bool(_ABBREVIATION_END.search(stripped))


def _is_name_block(lines: list[str]) -> bool:
    filled = [line for line in lines if line.strip()]
    return len(filled) <= MAX_NAME_BLOCK_LINES and all(
        _is_name_line(line) or _MOBILE_FOOTER.match(line) for line in filled
    )


def _quote_start(lines: list[str]) -> int | None:
    """Index of the first line of a quoted reply or forwarded block, if any."""
    for index, line in enumerate(lines):
        if _BLOCK_MARKER.match(line) or _OUTLOOK_RULE.match(line):
            return index
        if line.lstrip().lower().startswith(("on ", "le ", "am ", "el ", "il ", "op ", "em ")):
            # Clients wrap "On Mon, 3 Mar 2026 at 10:00, Alice <a@x> wrote:" over lines.
            for width in (1, 2, 3):
                candidate = " ".join(part.strip() for part in lines[index : index + width])
                if _REPLY_HEADER.match(candidate):
                    return index
        if _HEADER_FROM.match(line):
            # Outlook's reply header: From:, then Sent:/Date:/To:/Subject: lines right after.
            following = [x for x in lines[index + 1 : index + 5] if x.strip()]
            if sum(1 for x in following if _HEADER_OTHER.match(x)) >= 2:
                return index
    return None


def _signature_start(lines: list[str]) -> int | None:
    """Index of the first line of the signature, if one can be told apart from the text."""
    # Non-blank lines after each line: a closing far from the end cannot start a name block.
    filled_after = [0] * len(lines)
    for index in range(len(lines) - 2, -1, -1):
        filled_after[index] = filled_after[index + 1] + bool(lines[index + 1].strip())
    for index, line in enumerate(lines):
        if _SIGNATURE_DASHES.match(line) or _MOBILE_FOOTER.match(line):
            return index
        if (
            filled_after[index] <= MAX_NAME_BLOCK_LINES
            and _CLOSING.match(line)
            and _is_name_block(lines[index + 1 :])
        ):
            return index
    return None


def split_reply(text: str) -> tuple[str, str]:
    """The sender's own words and their signature block, quoted and forwarded text dropped.

    Rules, in order: everything from the first reply header ("On … wrote:", Outlook's
    "-----Original Message-----", a "From:" line followed by "Sent:"/"To:"/"Subject:" lines, a
    line of underscores, a forwarded-message marker) is dropped; lines starting with ">" are
    dropped; the signature starts at a "-- " line, a mobile footer ("Sent from my iPhone"), or
    a closing line ("Best regards,", "Thanks,") followed only by a short name block (at most
    six short lines that are not sentences).
    """
    lines = text.splitlines()
    cut = _quote_start(lines)
    if cut is not None:
        lines = lines[:cut]
    lines = [line for line in lines if not line.lstrip().startswith(">")]
    signature_at = _signature_start(lines)
    if signature_at is None:
        return "\n".join(lines).strip(), ""
    return "\n".join(lines[:signature_at]).strip(), "\n".join(lines[signature_at:]).strip()


def text_for_classification(text: str) -> str:
    """The sender's own words; the whole text (without ">" marks) if nothing would be left."""
    own, _signature = split_reply(text)
    if own:
        return own
    return "\n".join(line.lstrip().lstrip(">").strip() for line in text.splitlines()).strip()


# --- the message ----------------------------------------------------------------------------

_OLE_COMPOUND_FILE = bytes.fromhex("D0CF11E0A1B11AE1")
# The MAPI property streams every Outlook .msg holds, named in UTF-16 in its directory.
_MSG_STREAM = "__substg1.0_".encode("utf-16-le")
_FILE_SIGNATURES = (
    (b"%PDF-", "a PDF file"),
    (b"PK\x03\x04", "a ZIP archive (or an Office file such as .docx)"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
)
# Control bytes no text holds (tab, line ends, form feed and ISO-2022's escape excepted).
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")
BINARY_SAMPLE_BYTES = 4096
MAX_CONTROL_SHARE = 0.05  # of the sample; and a single NUL byte is binary anyway


def not_an_email(raw: bytes) -> str | None:
    """Why ``raw`` is no email at all, in a sentence for the quarantine list: an Outlook .msg
    or another file appended to the mailbox as it is, binary data with no header block, or
    nothing. None for anything that reads as mail, text without headers included (a person's
    words, which become the body)."""
    if raw.startswith(_OLE_COMPOUND_FILE):
        if _MSG_STREAM in raw:
            return "Not an email: an Outlook .msg file (OLE compound document)."
        return "Not an email: an OLE compound document (an Office file such as .doc or .xls)."
    if has_header_block(raw):
        return None
    if not raw.strip():
        return "Not an email: it is empty."
    kind = next((name for magic, name in _FILE_SIGNATURES if raw.startswith(magic)), None)
    if kind is not None:
        return f"Not an email: {kind}, with no header block."
    sample = raw[:BINARY_SAMPLE_BYTES]
    if b"\0" in sample or len(_CONTROL_BYTES.findall(sample)) > MAX_CONTROL_SHARE * len(sample):
        return "Not an email: binary data with no header block."
    return None


@dataclass
class ReadEmail:
    """One reading of a raw message: what Billing Desk uses (``parsed``), and the tree it was
    read from with each part's decoded text, from which the stored copy is redacted without
    parsing the bytes again. ``message`` is None when the bytes could not be read as mail."""

    parsed: ParsedEmail
    message: EmailMessage | None = None
    reader: _PartReader = field(default_factory=_PartReader, repr=False)
    _redacted: bytes | None = field(default=None, init=False, repr=False)

    def redacted_raw(self) -> bytes:
        """The message re-serialised with its card data removed (mail.redact.redact_message),
        for the stored copy when ``parsed.card_data_found``. It redacts the tree in place, so
        it is made once and the same bytes are returned after."""
        if self._redacted is None:
            if self.message is None:
                text = redact_cards(self.parsed.text)[0]
                self._redacted = f"\r\n{text}".encode("utf-8", "replace")
            else:
                text_of = self.reader.text
                self._redacted = redact_message(self.message, self.parsed.text, text_of)
        return self._redacted


def parse_email(raw: bytes) -> ParsedEmail:
    """Parse a raw RFC 5322 message; never raises for malformed input."""
    return read_email(raw).parsed


def read_email(raw: bytes) -> ReadEmail:
    """Parse a raw RFC 5322 message once, keeping the tree for redaction; never raises for
    malformed input."""
    try:
        return _parse(raw)
    except Exception:  # one bad message must never stop the pipeline
        log.exception("could not parse a message; keeping its bytes as text")
        text, cards = redact_cards(raw[:MAX_BODY_CHARS].decode("utf-8", "replace"))
        parsed = ParsedEmail(
            message_id=None,
            subject="",
            from_address="",
            from_name=None,
            date=None,
            in_reply_to=None,
            references=(),
            text=text,
            for_classification=text,
            card_data_found=cards > 0,
        )
        return ReadEmail(parsed)


_BOUNDARY_LINE = re.compile(r"^--([^\s]{1,70}?)(?:--)?[ \t\r]*$", re.MULTILINE)


def bound_headers(raw: bytes) -> tuple[bytes, tuple[str, ...]]:
    """``raw`` with its header block within MAX_HEADER_FIELDS fields, each of at most
    MAX_FIELD_BYTES and MAX_ENCODED_WORDS; the names of the fields cut or dropped."""
    block, rest = split_header_block(raw)
    if (
        len(block) <= MAX_FIELD_BYTES
        and block.count(b"=?") <= MAX_ENCODED_WORDS
        and len(block.splitlines()) <= MAX_HEADER_FIELDS  # 2,500 tiny fields fit in 16 KB
    ):
        return raw, ()  # every field is within bounds: nothing to do
    lines: list[bytes] = []
    for line in block.splitlines(keepends=True):
        if lines and line[:1] in (b" ", b"\t"):
            lines[-1] += line  # a folded continuation of the field before
        else:
            lines.append(line)
    kept: list[bytes] = []
    changed: list[str] = []
    late: set[str] = set()  # essential fields kept past the count
    for index, one in enumerate(lines):
        name = one.split(b":", 1)[0].strip().decode("ascii", "replace")[:80]
        if index >= MAX_HEADER_FIELDS:
            if name.lower() not in _ESSENTIAL_FIELDS or name.lower() in late:
                changed.append(name)
                continue
            late.add(name.lower())
        if len(one) > MAX_FIELD_BYTES or len(_ENCODED_WORD.findall(one)) > MAX_ENCODED_WORDS:
            one = _cut_field(one, keep_end=name.lower() == "references")
            changed.append(name)
            if not one.strip():
                continue  # nothing of it fits; a blank line here would end the header block
        kept.append(one)
    if not changed:
        return raw, ()
    log.warning("header fields over their bounds were cut: %s", ", ".join(changed[:10]))
    newline = b"\r\n" if b"\r\n" in block else b"\n"
    headers = b"".join(f.rstrip(b"\r\n") + newline for f in kept).rstrip(b"\r\n")
    return headers + rest, tuple(dict.fromkeys(changed))


def _cut_field(field: bytes, *, keep_end: bool) -> bytes:
    """One header field within bounds, cut between words (a References field keeps its end:
    the nearest messages of the thread are named last). A line with no field name before a
    colon (or a name longer than any field may be) is cut as words alone."""
    name, colon, value = field.partition(b":")
    if not colon or len(name) + 2 > MAX_FIELD_BYTES:
        name, value = b"", field
    words = value.split()
    if keep_end:
        words.reverse()
    kept: list[bytes] = []
    size = encoded = 0
    for word in words:
        in_word = len(_ENCODED_WORD.findall(word))  # encoded words may stand side by side
        if size + len(word) + 1 > MAX_FIELD_BYTES - len(name) - 2 or (
            encoded + in_word > MAX_ENCODED_WORDS
        ):
            break
        kept.append(word)
        size += len(word) + 1
        encoded += in_word
    if keep_end:
        kept.reverse()
    return (name + b": " if name else b"") + b" ".join(kept)


def _read_message(raw: bytes) -> EmailMessage:
    """The message; a multipart whose boundary parameter is missing or wrong is read again
    with the boundary its body actually uses."""
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    payload = message.get_payload()
    if message.get_content_maintype() == "multipart" and isinstance(payload, str):
        found = _BOUNDARY_LINE.search(payload)
        if found:
            try:
                message.set_param("boundary", found.group(1))
                reread = email.message_from_bytes(message.as_bytes(), policy=policy.default)
            except Exception:  # the repair is a bonus; the original still reads
                return message
            if isinstance(reread, EmailMessage) and isinstance(reread.get_payload(), list):
                return reread
    return message


def _parse(raw: bytes) -> ReadEmail:
    raw, mended = repair_header_block(raw)
    raw, cut_headers = bound_headers(raw)
    message = _read_message(raw)
    from_name, from_address, from_field = _sender(message)
    try:
        date = email.utils.parsedate_to_datetime(_header(message, "Date"))
    except (TypeError, ValueError, IndexError):
        date = None
    headers = {
        name.lower(): _header(message, name)
        for name in set(message.keys())
        if name.lower().startswith(_KEPT_HEADERS)
    }
    in_reply_to = _message_ids(_header(message, "In-Reply-To"))
    leaves = _leaf_parts(message)
    walk = _BodyWalk()
    shown = walk.shown(message)
    if not shown:
        fallback = _body_part(message, leaves)
        shown = [fallback] if fallback is not None else []
    body_text, body_repairs = _joined_text(shown, walk)
    # Redact before cutting to length, so a number at the cut cannot survive in part.
    text, cards_in_text = redact_cards(body_text)
    text = text[:MAX_BODY_CHARS].strip()
    subject_repairs = _Repairs("subject")
    subject, cards_in_subject = redact_cards(_header(message, "Subject", subject_repairs))
    # A label is the sender's text: one that reads as a card number is no exception.
    repairs = [redact_cards(n)[0] for n in (*mended, *subject_repairs.notes, *body_repairs)]
    from_name, cards_in_name = redact_cards(from_name)
    card_data_found = bool(cards_in_text or cards_in_subject or cards_in_name)
    parsed = ParsedEmail(
        message_id=(_message_ids(_header(message, "Message-ID")) or (None,))[0],
        subject=subject,
        from_address=from_address.strip().lower(),
        from_field=from_field,
        from_name=from_name.strip() or None,
        date=date,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=_message_ids(_header(message, "References")),
        text=text,
        headers=headers,
        for_classification=text_for_classification(text),
        attachments=_attachments(leaves, {id(p) for p in shown} | walk.passed_over),
        card_data_found=card_data_found or card_data_in(message, leaves, walk.reader.text),
        headers_cut=cut_headers,
        repairs=tuple(dict.fromkeys(repairs))[:MAX_REPAIRS_NOTED],
    )
    return ReadEmail(parsed, message, walk.reader)


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID header of a raw message, without parsing its body."""
    headers = email.message_from_bytes(
        split_header_block(repair_header_block(raw)[0])[0] + b"\r\n\r\n", policy=policy.compat32
    )
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
