"""Policy's answer: a verdict and the reason, written for the person who will read it.

Only modules of ``core.policy`` build these; everything else asks policy and passes the answer on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.domain import Role


class Verdict(StrEnum):
    """The three answers policy gives."""

    ALLOW = "allow"
    NEEDS_APPROVAL = "needs_approval"
    DENY = "deny"


@dataclass(frozen=True)
class Decision:
    """A verdict and the reason, written for the agent who will read it."""

    verdict: Verdict
    reason: str
    # Who must approve, when the verdict is NEEDS_APPROVAL, and who after them.
    approval_role: Role | None = None
    then: tuple[Role, ...] = ()

    @property
    def allowed(self) -> bool:
        """True when the action may go ahead without anyone else."""
        return self.verdict is Verdict.ALLOW

    @property
    def approvals_needed(self) -> tuple[Role, ...]:
        """Every approval still needed, in the order people give them."""
        return (self.approval_role, *self.then) if self.approval_role else ()
