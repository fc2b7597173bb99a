"""Every email template renders, text and HTML, with what each step gives it; whatever came
from an email or Stripe is escaped in the HTML part."""

from __future__ import annotations

from pathlib import Path

import pytest

from mail.outgoing import render_email

TEMPLATES = Path(__file__).parent.parent / "templates"
HOSTILE = '<script>alert("x")</script>'
COMMON = {"customer_name": HOSTILE, "ticket_token": "[BD-7]", "support_name": "Billing", "text": ""}
TEAM = {
    "team": "Finance",
    "escalated_to": "Finance",
    "ticket_id": 7,
    "ticket_subject": HOSTILE,
    "requester": "pat@example.com",
    "category": "chargeback",
    "reason": HOSTILE,
    "due": "03 Dec 2026 17:35 UTC",
    "breached": False,
    "link": "https://desk.example/tickets/7",
}
FAILED = {
    "amount": "$29.00",
    "date": "01 Dec 2026",
    "advice": HOSTILE,
    "retries": True,
    "retry_attempts": 3,
    "retry_days": 14,
}
LINK = {"link": "https://desk.example/billing/update-card/t", "valid_hours": 72}
CONTEXTS = {
    "acknowledgement": {"topic": HOSTILE},
    "agent_reply": {"text": f"Hi,\n{HOSTILE}"},
    "chargeback_acknowledgement": {},
    "card_not_recognized_acknowledgement": {},
    "hold_explanation": {"amount": "$120.00", "date": "01 Dec 2026"},
    "verification_request": {"known_customer": False},
    "self_service": {},
    "cancellation_confirmation": {"plan": HOSTILE, "ends": "31 Dec 2026", "already": False},
    "refund_confirmation": {"amount": "$49.00", "refund_id": "re_1"},
    "prorated_refund_confirmation": {"amount": "$49.00", "refund_id": "re_1", "explanation": "x"},
    "update_payment_method": LINK,
    "escalation_notice": TEAM,
    "sla_breach_notice": {**TEAM, "breached": True},
    **{f"payment_failed_{family}": FAILED for family in ("retry_later", "update_card")},
    **{f"payment_failed_{family}": FAILED for family in ("contact_bank", "do_not_retry")},
}


def test_every_template_pair_is_covered_here():
    pairs = {p.name.removesuffix(".txt.j2") for p in TEMPLATES.glob("*.txt.j2")}
    assert {p for p in pairs if not p.startswith("_")} == set(CONTEXTS)
    for name in pairs:
        assert (TEMPLATES / f"{name}.html.j2").exists(), name


@pytest.mark.parametrize("template", sorted(CONTEXTS))
@pytest.mark.parametrize("with_link", [False, True])
def test_a_template_renders_and_escapes(template, with_link):
    context = {**COMMON, **CONTEXTS[template], **(LINK if with_link else {})}
    message = render_email(
        str(TEMPLATES), template, context, sender="b@desk.example", to="p@x.example", subject="s"
    )
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert text.strip() and "Billing" in text
    assert HOSTILE not in html and "&lt;script&gt;" in html
    if with_link and template.startswith(("payment_failed", "self_service")):
        assert LINK["link"] in text and LINK["link"] in html
