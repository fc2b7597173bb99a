"""Ticket subjects: our token in them, and a subject as a repeat or a reply of it reads.

One owner for both mail threading (mail.conversations) and finding a hosted helpdesk's ticket
for a copy of its email (core.helpdesks.mirrored).
"""

from __future__ import annotations

import re

SUBJECT_TOKEN = re.compile(r"\[BD-(\d{1,12})\]")
_REPLY_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?|aw|sv|wg|tr)\s*(?:\[\d+\])?\s*:\s*)+", re.I)
_NOT_WORD = re.compile(r"[\W_]+")


def subject_token(ticket_id: int) -> str:
    """The token we put in subjects so a reply finds its ticket when headers are lost."""
    return f"[BD-{ticket_id}]"


def normalized_subject(subject: str) -> str:
    """A subject as a repeat of it reads: reply prefixes, our token, case and punctuation
    gone ("Re: Charged twice!!" is "charged twice"); empty for no subject."""
    text = _REPLY_PREFIX.sub("", SUBJECT_TOKEN.sub(" ", (subject or "")[:1000]))
    if text.strip().lower() == "(no subject)":
        return ""
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())
