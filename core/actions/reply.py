"""An email to the ticket's requester: a playbook's templated answer (acknowledgement, hold
explanation, verification request...) or an agent's own words, sent once, threaded onto the
customer's mail and shown in the thread."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.actions.account import AccountAction
from core.actions.base import (
    Ask,
    Effects,
    Outcome,
    Proposal,
    Requested,
    idempotency_key,
    params_of,
)
from core.db.models import Action, Ticket
from core.domain import ActionKind
from core.errors import InvalidInput
from core.plans import reply_params

AGENT_REPLY_TEMPLATE = "agent_reply"
MAX_REPLY = 20_000

# What each template's email is called in notes and plan titles.
TEMPLATE_WORDS = {
    "acknowledgement": "the acknowledgement",
    "agent_reply": "the reply",
    "hold_explanation": "the hold explanation",
    "verification_request": "the verification request",
    "self_service": "the self-service cancellation link",
    "cancellation_confirmation": "the cancellation confirmation",
    "prorated_refund_confirmation": "the prorated refund confirmation",
    "refund_confirmation": "the refund confirmation",
}


def agent_reply(text: str) -> dict[str, Any]:
    """An agent's own words to the customer, bounded, as a reply step's params."""
    body = text.strip()
    if not body:
        raise InvalidInput("Write the reply first.")
    if len(body) > MAX_REPLY:
        raise InvalidInput(f"The reply is longer than {MAX_REPLY} characters.")
    return {**reply_params(AGENT_REPLY_TEMPLATE, "Re: your billing question"), "text": body}


class Reply(AccountAction):
    """Email the ticket's requester; the address comes from our ticket, never from a form."""

    kind = ActionKind.REPLY

    def propose(self, ask: Ask, form: Mapping[str, str]) -> Proposal:
        """An agent's reply, previewed for their confirmation."""
        params = agent_reply(form.get("text") or "")
        ticket = ask.context.ticket
        requested = Requested(
            self.kind, idempotency_key(self.kind, ticket.id, params["text"]), params=params
        )
        return Proposal(
            requested,
            "Reply to the customer",
            ticket.requester_email,
            self.judge(ask, requested),
        )

    def describe(self, action: Action) -> str:
        """``Email the acknowledgement``."""
        template = str(params_of(action).get("template", AGENT_REPLY_TEMPLATE))
        return f"Email {TEMPLATE_WORDS.get(template, template.replace('_', ' '))}"

    def execute(self, action: Action, fx: Effects) -> Outcome:
        """Send it to the ticket's requester, once."""
        params = params_of(action)
        assert action.ticket_id is not None
        with fx.transaction() as session:
            ticket = session.get(Ticket, action.ticket_id)
            assert ticket is not None
            to = ticket.requester_email
        template = str(params.get("template", AGENT_REPLY_TEMPLATE))
        context = {**dict(params.get("context") or {}), "text": params.get("text", "")}
        sent = fx.send_customer_email(
            action, template=template, subject=str(params["subject"]), context=context, to=to
        )
        # A person's reply shows in the thread as sent; a playbook's says what it sent.
        note = (
            None
            if template == AGENT_REPLY_TEMPLATE
            else f"{self.describe(action)}: {sent} to {to}."
        )
        return Outcome(None, note, {"email": sent})
