"""An internal note on the ticket."""

from __future__ import annotations

from collections.abc import Mapping

from core.actions.account import AccountAction
from core.actions.base import (
    Ask,
    Effects,
    Outcome,
    Proposal,
    Requested,
    idempotency_key,
    params_of,
    text_field,
)
from core.db.models import Action
from core.domain import ActionKind


class Note(AccountAction):
    """An internal note on the ticket."""

    kind = ActionKind.NOTE

    def propose(self, ask: Ask, form: Mapping[str, str]) -> Proposal:
        """A note only agents see."""
        body = text_field(form, "text", "The note")
        ticket_id = ask.context.ticket.id
        requested = Requested(
            self.kind, idempotency_key(self.kind, ticket_id, body), params={"text": body}
        )
        return Proposal(
            requested,
            "Add an internal note",
            f"ticket #{ticket_id}",
            self.judge(ask, requested),
        )

    def describe(self, action: Action) -> str:
        """``Internal note``."""
        return "Internal note"

    def execute(self, action: Action, fx: Effects) -> Outcome:
        """The note is the outcome."""
        return Outcome(None, f"Note: {params_of(action).get('text')}")
