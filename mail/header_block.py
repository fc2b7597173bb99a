"""The header block of a raw message, found and mended before the email package reads it.

Python's parser ends the header block at the first line that is neither ``Name: value`` nor
indented. Two kinds of mail in the wild break it there: a field folded without indenting its
continuation (a long Received line split by a gateway), and a line before the headers (an
escaped mbox envelope, a stray blank line left by an export). Everything after that line is
then read as the body: the sender, the subject and the MIME headers are lost, and a base64
body is shown as its code. Mending the bytes first means every reader of the message (the
parser, redaction of the stored copy, the Message-ID look-up) sees the same headers. This
module imports nothing of ours, so all of them can use it.
"""

from __future__ import annotations

import re

# A field name is printable ASCII but the colon (RFC 5322 ftext); obsolete syntax allows
# blanks before the colon, which Python refuses as well.
_FIELD = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
_SPACED_COLON = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]+:")
# Fields every mail program writes: only a line of one of these proves a header block goes
# on, so a body that merely lacks its blank line ("Hello,\nNote: ...") is not taken apart.
_KNOWN_FIELD = re.compile(
    rb"(?:from|to|cc|bcc|subject|date|message-id|in-reply-to|references|reply-to|sender|"
    rb"return-path|received|received-spf|delivered-to|envelope-to|mime-version|"
    rb"authentication-results|dkim-signature|auto-submitted|precedence|importance|"
    rb"priority|organization|user-agent|thread-[\w-]+|content-[\w-]+|x-[\w-]+|list-[\w-]+|"
    rb"arc-[\w-]+|resent-[\w-]+)[ \t]*:",
    re.IGNORECASE,
)
_BOM = b"\xef\xbb\xbf"
# Lines before the headers that may be skipped: an envelope line, a blank line or two.
MAX_LINES_BEFORE_HEADERS = 5
MAX_LINE_BEFORE_HEADERS_BYTES = 1000
# A header block longer than this is not mended (real ones are a few kilobytes; a message
# without any blank line is all "header block" and is left as the parser reads it).
MAX_MENDED_BLOCK_BYTES = 512 * 1024


def split_header_block(raw: bytes) -> tuple[bytes, bytes]:
    """The header block (up to the first empty line, CRLF or LF) and the rest, which starts
    with that empty line; a message without one is all headers."""
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i != -1]
    return (raw[: min(ends)], raw[min(ends) :]) if ends else (raw, b"")


def repair_header_block(raw: bytes) -> tuple[bytes, tuple[str, ...]]:
    """``raw`` with lines before its headers skipped, unindented lines inside its header
    block read as continuations of the field before them, and blanks before a field name's
    colon dropped; and what was mended, in words. A sound message comes back as it was."""
    raw, repairs = _from_first_header(raw)
    block, rest = split_header_block(raw)
    if len(block) > MAX_MENDED_BLOCK_BYTES:
        return raw, tuple(repairs)
    lines = block.splitlines(keepends=True)
    # Broken lines after the last real field are the body of a message that lacks its blank
    # line: the parser reads them as that already.
    last_field = max((i for i, line in enumerate(lines) if _KNOWN_FIELD.match(line)), default=-1)
    folded = spaced = 0
    for index in range(last_field + 1):
        line = lines[index]
        if line[:1] in b" \t" or line.startswith(b"From "):
            continue  # a proper continuation; an envelope line, which the parser skips
        if _SPACED_COLON.match(line):
            lines[index] = _SPACED_COLON.sub(rb"\1:", line, count=1)
            spaced += 1
        elif index and not _FIELD.match(line):
            lines[index] = b" " + line
            folded += 1
    if folded:
        repairs.append(
            f"headers: {_count(folded, 'line')} without a field name read as part of the field "
            "before"
        )
    if spaced:
        repairs.append(f"headers: {_count(spaced, 'field name')} with a blank before its colon")
    if not folded and not spaced:
        return raw, tuple(repairs)
    return b"".join(lines) + rest, tuple(repairs)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def has_header_block(raw: bytes) -> bool:
    """Whether ``raw`` starts with a header field, once what may stand before the headers is
    skipped (an mbox envelope line included)."""
    raw = _from_first_header(raw)[0]
    if raw.startswith(b"From "):
        end = raw.find(b"\n", 0, MAX_LINE_BEFORE_HEADERS_BYTES)
        raw = raw[end + 1 :] if end != -1 else b""
    return bool(_FIELD.match(raw[:MAX_LINE_BEFORE_HEADERS_BYTES]))


def _from_first_header(raw: bytes) -> tuple[bytes, list[str]]:
    """``raw`` from its first header line, and what was skipped to get there, in words."""
    repairs: list[str] = []
    if raw.startswith(_BOM):
        # Saved by an editor as UTF-8 "with signature": the first field name no longer reads.
        raw = raw[len(_BOM) :]
        repairs.append("headers: a byte-order mark before the headers dropped")
    raw, skipped = _skip_lines_before_headers(raw)
    if skipped:
        repairs.append(f"headers: {_count(skipped, 'line')} before the headers skipped")
    return raw, repairs


def _skip_lines_before_headers(raw: bytes) -> tuple[bytes, int]:
    """``raw`` from its first header line, when a few lines that are not headers (an
    escaped envelope such as ">From ...", a blank line) stand before a real header block."""
    position = 0
    for skipped in range(MAX_LINES_BEFORE_HEADERS + 1):
        if _KNOWN_FIELD.match(raw, position):
            return raw[position:], skipped
        if skipped == MAX_LINES_BEFORE_HEADERS or _FIELD.match(raw, position):
            break  # a field of some other name, or too many lines: leave it be
        if position == 0 and raw.startswith(b"From "):
            break  # an mbox envelope line first: the parser reads it as such
        end = raw.find(b"\n", position, position + MAX_LINE_BEFORE_HEADERS_BYTES)
        if end == -1:
            break
        position = end + 1
    return raw, 0
