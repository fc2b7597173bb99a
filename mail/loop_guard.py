"""Mail we must never answer automatically: auto-replies, bulk mail, bounces, our own mail;
and a per-address cap on what we send automatically, the loop breaker of last resort.

Answering a robot is how mail loops start (RFC 3834): a missed marker here means two
machines writing to each other for ever, so every check errs on the side of silence.
"""

from __future__ import annotations

import email.utils
import re
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from core.db.models import OutboundEmail, utcnow
from core.domain import OutboundStatus
from mail.parsing import ParsedEmail

OUR_MARK_HEADER = "x-billing-desk"

_BOUNCE_SENDERS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "bounce", "bounces"})
_BOUNCE_SUBJECT = re.compile(
    r"^\s*(undeliverable|undelivered mail|undeliver(ed|able) message|"
    r"delivery status notification|delivery (has )?failed|delivery failure|"
    r"mail delivery (failed|failure|subsystem)|returned mail|failure notice|"
    r"mail system error|non[- ]?delivery)",
    re.IGNORECASE,
)
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(automatic reply|auto[- ]?reply|autoreply|auto[- ]?response|out of (the )?office|"
    r"abwesenheitsnotiz|automatische antwort|r[ée]ponse automatique|respuesta autom[áa]tica)\b",
    re.IGNORECASE,
)
_REPORT = re.compile(r"^\s*multipart/report\b", re.IGNORECASE)
_REPORT_TYPE = re.compile(r"report-type\s*=\s*\"?([\w-]+)", re.IGNORECASE)


def _bounce_reason(parsed: ParsedEmail) -> str | None:
    headers = parsed.headers
    content_type = headers.get("content-type", "")
    if _REPORT.match(content_type):
        found = _REPORT_TYPE.search(content_type)
        report = found.group(1).lower() if found else "unknown"
        if report == "delivery-status":
            return "a delivery status notification (bounce)"
        return f"an automatic report ({report})"
    if parsed.from_address.split("@")[0] in _BOUNCE_SENDERS:
        return "a delivery status notification (bounce)"
    if "x-failed-recipients" in headers:
        return "a delivery status notification (X-Failed-Recipients)"
    if headers.get("return-path", "").strip() == "<>" and _BOUNCE_SUBJECT.match(parsed.subject):
        return "a delivery status notification (bounce)"
    if _BOUNCE_SUBJECT.match(parsed.subject):
        return f"a bounce, by its subject ({parsed.subject[:60]!r})"
    return None


def automated_reason(parsed: ParsedEmail, our_address: str) -> str | None:
    """Why this email must get no automatic reply, or None if it came from a person."""
    headers = parsed.headers
    auto_submitted = headers.get("auto-submitted", "").lower()
    if auto_submitted and auto_submitted.split(";")[0].strip() != "no":
        return f"Auto-Submitted: {auto_submitted}"
    if headers.get("precedence", "").lower() in {"bulk", "junk", "list"}:
        return f"Precedence: {headers['precedence']}"
    if any(name.startswith("list-") for name in headers):
        return "mailing-list headers"
    if "x-auto-response-suppress" in headers:
        return "X-Auto-Response-Suppress"
    if any(name in headers for name in ("x-autoreply", "x-autorespond", "x-autoresponder")):
        return "an auto-responder header"
    if OUR_MARK_HEADER in headers or parsed.from_address == our_address.lower():
        return "our own outgoing mail"
    if "x-loop" in headers:
        return f"X-Loop: {headers['x-loop']}"
    bounce = _bounce_reason(parsed)
    if bounce:
        return bounce
    if _AUTO_REPLY_SUBJECT.match(parsed.subject):
        return f"an auto-reply, by its subject ({parsed.subject[:60]!r})"
    return None


def auto_reply_limit_reason(
    session: Session,
    to_address: str,
    limit_per_hour: int,
    *,
    now: datetime | None = None,
) -> str | None:
    """Why one more automatic email to this address must not go out, or None if it may.

    Counts our OutboundEmail rows to the address (case ignored, with or without a display
    name) created in the last hour, except those this cap already held back.
    """
    address = email.utils.parseaddr(to_address)[1].strip().lower() or to_address.strip().lower()
    since = (now or utcnow()) - timedelta(hours=1)
    stored = func.lower(OutboundEmail.to_address)
    escaped = address.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    sent = session.scalar(
        select(func.count())
        .select_from(OutboundEmail)
        .where(
            or_(stored == address, stored.like(f"%<{escaped}>", escape="\\")),
            OutboundEmail.created_at >= since,
            OutboundEmail.status != OutboundStatus.RATE_LIMITED,
        )
    )
    if (sent or 0) < limit_per_hour:
        return None
    return (
        f"{address} has had {sent} automatic email(s) from us in the last hour, and the limit "
        f"is {limit_per_hour} (AUTO_REPLY_LIMIT_PER_HOUR): a loop breaker."
    )
