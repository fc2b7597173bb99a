"""Mail we must never answer automatically: auto-replies, bulk mail, bounces, our own mail."""

from __future__ import annotations

from mail.parsing import ParsedEmail

OUR_MARK_HEADER = "x-billing-desk"


def automated_reason(parsed: ParsedEmail, our_address: str) -> str | None:
    """Why this email must get no automatic reply, or None if it came from a person."""
    headers = parsed.headers
    auto_submitted = headers.get("auto-submitted", "").lower()
    if auto_submitted and auto_submitted != "no":
        return f"Auto-Submitted: {auto_submitted}"
    if headers.get("precedence", "").lower() in {"bulk", "junk", "list"}:
        return f"Precedence: {headers['precedence']}"
    if any(name.startswith("list-") for name in headers):
        return "mailing-list headers"
    if "x-auto-response-suppress" in headers:
        return "X-Auto-Response-Suppress"
    if OUR_MARK_HEADER in headers or parsed.from_address == our_address.lower():
        return "our own outgoing mail"
    if parsed.from_address.split("@")[0] in {"mailer-daemon", "postmaster"}:
        return "a delivery status notification"
    return None
