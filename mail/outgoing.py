"""Render templates/ into an EmailMessage: text plus HTML, threaded onto the customer's mail."""

from __future__ import annotations

import email.utils
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from functools import lru_cache
from typing import Any

import jinja2

from mail.loop_guard import OUR_MARK_HEADER


@lru_cache(maxsize=8)
def template_environment(templates_dir: str) -> jinja2.Environment:
    """A Jinja2 environment over templates_dir; HTML templates are autoescaped."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        # Jinja2 does not escape by default; anything from an email or Stripe must be escaped.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_email(
    templates_dir: str,
    template: str,
    context: Mapping[str, Any],
    *,
    sender: str,
    to: str,
    subject: str,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    auto_submitted: str = "auto-replied",
) -> EmailMessage:
    """Build ``<template>.txt.j2`` and ``<template>.html.j2`` into one multipart message."""
    env = template_environment(templates_dir)
    text = env.get_template(f"{template}.txt.j2").render(context)
    html = env.get_template(f"{template}.html.j2").render(context)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(localtime=False)
    domain = email.utils.parseaddr(sender)[1].rpartition("@")[2] or "billing-desk.local"
    message["Message-ID"] = email.utils.make_msgid(domain=domain)
    # RFC 3834: mark automatic mail so other robots (and our own poller) never answer it:
    # "auto-replied" answers a message, "auto-generated" (a team's notice) answers none.
    message["Auto-Submitted"] = auto_submitted  # "no": a person wrote it
    message[OUR_MARK_HEADER] = template
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = " ".join([*references, in_reply_to])
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message
