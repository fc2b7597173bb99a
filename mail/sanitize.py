"""Email content to safe plain text. Every email is hostile: its HTML is never rendered as
HTML, its charsets may be lies, and its text may hide characters that change how it reads."""

from __future__ import annotations

import re
from email.message import Message
from html.parser import HTMLParser

from mail import charsets

# HTML beyond this is not parsed: a body this long is not a person writing to support.
MAX_HTML_CHARS = 2_000_000
# Zero-width and bidirectional-control characters: invisible, yet they reorder what an agent
# reads or split a card number so that no pattern sees it. Other control characters too.
_INVISIBLE = re.compile(
    "[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
)
# Spaces people paste from other applications: non-breaking, figure, narrow, ideographic...
_ODD_SPACES = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")

_BLOCK_TAGS = frozenset(
    [
        "p",
        "div",
        "br",
        "li",
        "tr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "table",
        "blockquote",
        "pre",
        "hr",
    ]
)
_SKIPPED_TAGS = frozenset(["script", "style", "head", "title", "template"])


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def decode_part(part: Message) -> str:
    """The text of a MIME part. Never raises: a broken transfer encoding gives what could be
    decoded, and a charset label that is too small, unknown or a lie is read as mail.charsets
    reads it (the label's superset, a few bad bytes marked where they stand, else UTF-8, the
    detected charset or Windows-1252)."""
    return read_part(part)[1].text


def read_part(part: Message) -> tuple[str | None, charsets.Decoded]:
    """The charset a MIME part is labelled with, and its text as decode_part reads it, with
    the codec that read it and whether the label alone did not do. Never raises."""
    try:
        payload = part.get_payload(decode=True)
        charset = part.get_content_charset()
    except Exception:  # hostile input: a part we cannot read has no text
        return None, charsets.Decoded("", "")
    if not isinstance(payload, bytes):
        return charset, charsets.Decoded("", "")
    return charset, charsets.decode(payload, charset)


def clean_text(text: str) -> str:
    """Text with invisible and control characters removed, odd spaces made plain spaces, and
    every line ending a plain newline."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _ODD_SPACES.sub(" ", _INVISIBLE.sub("", text))


def html_to_text(html: str) -> str:
    """The readable text of an HTML body: tags, scripts and styles dropped, blank runs squeezed."""
    extractor = _TextExtractor()
    extractor.feed(html[:MAX_HTML_CHARS])
    extractor.close()
    text = clean_text("".join(extractor.parts))
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
