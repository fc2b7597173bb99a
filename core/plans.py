"""A plan as data: the ordered steps a playbook or an agent's confirmation decided on. Pure.

A draft becomes a stored ``Plan`` with one ``Action`` row per step (core.actions.workflow);
one runner (jobs.plans) advances it a step at a time, each step its own idempotent job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from core.domain import ActionKind, EscalationTarget, Money
from core.policy import Decision


@dataclass(frozen=True)
class StepDraft:
    """One step to be: what, on what, with its own idempotency key. Only the first step of a
    plan carries a decision; later ones are judged by the worker when they are due."""

    kind: ActionKind
    key: str
    decision: Decision | None = None
    customer_id: str | None = None
    charge_id: str | None = None
    amount: Money | None = None
    reason: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanDraft:
    """A plan to be stored: its key makes one plan per decision (an email's triage, an
    agent's confirmed proposal), however often it is asked for."""

    key: str
    title: str
    reason: str
    steps: tuple[StepDraft, ...]
    # Prepared by the mail agent for an agent to start (suggest mode, or beyond its limits).
    suggested: bool = False

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a plan needs at least one step")
        if not self.suggested and self.steps[0].decision is None:
            raise ValueError("the first step of a plan that runs must carry its decision")


def escalation_params(target: EscalationTarget, why: str) -> dict[str, Any]:
    """An escalate step's params: the team (and its name as agents say it) and the reason."""
    return {"target": str(target), "target_label": target.label, "text": why}


def reply_params(template: str, subject: str, **context: Any) -> dict[str, Any]:
    """A reply step's params: which email template, its subject, what fills it, and (for an
    agent's own words) the text."""
    return {"template": template, "subject": subject, "context": context, "text": ""}


# What a plan's later steps are called in its title.
_STEP_WORDS = {
    ActionKind.CONFIRM_REFUND: "email the confirmation",
    ActionKind.CLOSE: "close the ticket",
    ActionKind.FLAG_FRAUD: "flag the customer in Stripe and escalate to Security",
    ActionKind.SEND_UPDATE_CARD_LINK: "email the secure billing link",
}
_REPLY_WORDS = {
    "acknowledgement": "acknowledge",
    "hold_explanation": "explain the authorization hold",
    "verification_request": "ask for the charge's details",
    "self_service": "point to self-service",
    "cancellation_confirmation": "confirm the cancellation",
}


def step_words(step: StepDraft) -> str:
    """A later step as a plan's title says it, e.g. ``escalate to Finance``."""
    if step.kind is ActionKind.REPLY:
        return _REPLY_WORDS.get(str(step.params.get("template", "")), "email the customer")
    if step.kind is ActionKind.ESCALATE:
        return f"escalate to {step.params.get('target_label')}"
    return _STEP_WORDS.get(step.kind, str(step.kind).replace("_", " "))


def plan_title(first: str, later: Sequence[StepDraft]) -> str:
    """A plan's title: its first step in words, then each later step's, joined by arrows."""
    return " → ".join([first, *map(step_words, later)])
