"""A plan as data: the ordered steps a playbook or an agent's confirmation decided on. Pure.

A draft becomes a stored ``Plan`` with one ``Action`` row per step (core.actions.workflow);
one runner (jobs.plans) advances it a step at a time, each step its own idempotent job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from core.domain import ActionKind, Money
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


# What a plan's later steps are called in its title.
_STEP_WORDS = {
    ActionKind.CONFIRM_REFUND: "email the confirmation",
    ActionKind.CLOSE: "close the ticket",
}


def plan_title(first: str, later: Sequence[StepDraft]) -> str:
    """A plan's title: its first step in words, then each later step's, joined by arrows."""
    words = (_STEP_WORDS.get(s.kind, str(s.kind).replace("_", " ")) for s in later)
    return " → ".join([first, *words])
