"""A dispute's evidence: the product's usage records and the customer's own words, mapped onto
Stripe's ``evidence[...]`` text fields, each within its length cap. Pure.

Stripe's text fields (``DisputeUpdateParams.Evidence``): ``access_activity_log`` ("server or
activity logs showing proof that the customer accessed or downloaded the purchased digital
product"), ``customer_email_address``, ``customer_name``, ``service_date``,
``product_description`` and ``uncategorized_text``. ``customer_communication`` and
``customer_signature`` take uploaded files, so the customer's emails and the terms acceptance
go into the text fields instead. Stripe caps the combined text; we keep well under it, counted
as Stripe counts (UTF-16 code units).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.domain import Charge, Customer, Dispute
from core.policy.disputes import ProofOfUse
from core.usage_sources import Usage

# Ours, under Stripe's limits; a longer field is cut with a mark saying so.
TOTAL_CAP = 20_000
FIELD_CAPS = {
    "access_activity_log": 8_000,
    "uncategorized_text": 9_000,
    "product_description": 1_000,
    "customer_name": 200,
    "customer_email_address": 320,
    "service_date": 40,
}
LOGINS_LISTED = 100
MESSAGES_QUOTED = 5
MESSAGE_CHARS = 1_500
USAGE_PERIOD_DAYS = 30  # how far before the charge usage is read
CUT = " […]"


@dataclass(frozen=True)
class CustomerMessage:
    """One email the customer wrote on the ticket, its card numbers already removed."""

    at: datetime
    text: str


@dataclass(frozen=True)
class Evidence:
    """What was assembled for a dispute: Stripe's fields, a summary for people, and the proof
    of use the recommendation weighs."""

    fields: dict[str, str]
    summary: tuple[str, ...]
    proof: ProofOfUse

    @property
    def digest(self) -> str:
        """A fingerprint of the fields: what Finance reviewed is what is submitted."""
        return evidence_digest(self.fields)


def evidence_digest(fields: Mapping[str, str]) -> str:
    """The fields' fingerprint (stable across key order)."""
    return hashlib.sha256(json.dumps(dict(fields), sort_keys=True).encode()).hexdigest()[:32]


def usage_period(charge: Charge, now: datetime) -> tuple[datetime, datetime]:
    """The period usage is read for: from a while before the charge up to now."""
    return charge.created - timedelta(days=USAGE_PERIOD_DAYS), now


def units(text: str) -> int:
    """Length as Stripe counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _cap(text: str, limit: int) -> str:
    """The text cut to ``limit`` UTF-16 units (whole characters only), marked when cut."""
    if units(text) <= limit:
        return text
    room = max(limit - units(CUT), 0)
    kept: list[str] = []
    used = 0
    for char in text:
        size = units(char)
        if used + size > room:
            break
        kept.append(char)
        used += size
    return "".join(kept).rstrip() + CUT


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _activity_log(usage: Usage, charge: Charge) -> str:
    lines = [
        f"Sign-ins to the account from {usage.source} records "
        f"({usage.login_count} in the period; the charge was made {_when(charge.created)}):"
    ]
    for login in usage.logins[:LOGINS_LISTED]:
        after = " (after the charge)" if login.at > charge.created else ""
        lines.append(f"- {_when(login.at)}" + (f" from IP {login.ip}" if login.ip else "") + after)
    if len(usage.logins) > LOGINS_LISTED:
        lines.append(f"- … and {len(usage.logins) - LOGINS_LISTED} earlier sign-ins")
    return "\n".join(lines)


def _terms_text(usage: Usage) -> str | None:
    terms = usage.terms
    if terms is None:
        return None
    version = f" (version {terms.version})" if terms.version else ""
    ip = f" from IP {terms.ip}" if terms.ip else ""
    return f"The customer accepted the terms of service{version} on {_when(terms.at)}{ip}."


def _quoted(messages: Sequence[CustomerMessage]) -> str | None:
    if not messages:
        return None
    parts = ["The customer's own messages to us (card numbers removed):"]
    for message in list(messages)[-MESSAGES_QUOTED:]:
        body = " ".join(message.text.split())
        parts.append(f'- {_when(message.at)}: "{_cap(body, MESSAGE_CHARS)}"')
    return "\n".join(parts)


def assemble(
    dispute: Dispute,
    charge: Charge,
    customer: Customer | None,
    usage: Usage | None,
    messages: Sequence[CustomerMessage],
    *,
    usage_problem: str | None = None,
) -> Evidence:
    """Map usage, identity and the customer's messages onto Stripe's evidence fields."""
    fields: dict[str, str] = {"service_date": f"{charge.created:%Y-%m-%d}"}
    summary: list[str] = []
    if customer is not None and customer.name:
        fields["customer_name"] = customer.name
    if customer is not None and customer.email:
        fields["customer_email_address"] = customer.email
    if charge.description:
        fields["product_description"] = charge.description
    other: list[str] = []
    logins_after = 0
    if usage is not None:
        logins_after = len(usage.logins_after(charge.created))
        if usage.logins:
            fields["access_activity_log"] = _activity_log(usage, charge)
        last = f", last {_when(usage.last_login)}" if usage.last_login else ""
        summary.append(
            f"Sign-ins: {usage.login_count} in the period, {logins_after} after the charge{last}."
        )
        if usage.emails_sent is not None:
            other.append(
                f"Service use: the account sent {usage.emails_sent:,} emails between "
                f"{charge.created - timedelta(days=USAGE_PERIOD_DAYS):%Y-%m-%d} and now."
            )
            summary.append(f"Emails sent: {usage.emails_sent:,}.")
        else:
            summary.append("Emails sent: not known.")
        terms = _terms_text(usage)
        if terms:
            other.append(terms)
            summary.append(terms.replace("The customer accepted", "Accepted"))
        else:
            summary.append("Terms of service: no acceptance on record.")
    else:
        summary.append(f"Usage: not read ({usage_problem or 'no usage source is configured'}).")
    quoted = _quoted(messages)
    if quoted:
        other.append(quoted)
        summary.append(f"Customer messages quoted: {min(len(messages), MESSAGES_QUOTED)}.")
    if other:
        fields["uncategorized_text"] = "\n\n".join(other)
    fields = _within_caps(fields)
    proof = ProofOfUse(
        source_read=usage is not None,
        logins_after_charge=logins_after,
        emails_sent=usage.emails_sent if usage else None,
        terms_accepted=bool(usage and usage.terms),
        problem=usage_problem,
    )
    return Evidence(fields, tuple(summary), proof)


def _within_caps(fields: Mapping[str, str]) -> dict[str, str]:
    """Each field within its cap, and all of them within the total (the long ones shrink)."""
    capped = {name: _cap(value, FIELD_CAPS.get(name, 1_000)) for name, value in fields.items()}
    over = sum(map(units, capped.values())) - TOTAL_CAP
    for name in ("uncategorized_text", "access_activity_log"):
        if over <= 0 or name not in capped:
            continue
        keep = max(units(capped[name]) - over, 0)
        shorter = _cap(capped[name], keep)
        over -= units(capped[name]) - units(shorter)
        capped[name] = shorter
    return {name: value for name, value in capped.items() if value}
