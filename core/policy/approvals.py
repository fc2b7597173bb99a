"""Who may approve what policy sends for approval, and what an approval already given covers.

Roles are ours to give (core.agents keeps who has which); this module says what each role may
approve. Nobody approves their own request, and each approval comes from a different person:
an approval is a second pair of eyes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from core.domain import Role
from core.policy.decisions import Decision, Verdict

# Who may approve what policy asks of a role. Admins stand in for every role.
_APPROVERS: dict[Role, frozenset[Role]] = {
    Role.SUPPORT_LEAD: frozenset([Role.SUPPORT_LEAD, Role.FINANCE, Role.ADMIN]),
    Role.ACCOUNT_MANAGER: frozenset([Role.ACCOUNT_MANAGER, Role.ADMIN]),
    Role.SECURITY: frozenset([Role.SECURITY, Role.ADMIN]),
    Role.FINANCE: frozenset([Role.FINANCE, Role.ADMIN]),
}


def satisfies(role: Role, required: Role) -> bool:
    """True when someone with ``role`` may act where ``required`` is asked for."""
    return role in _APPROVERS.get(required, frozenset([required, Role.ADMIN]))


@dataclass(frozen=True)
class Approval:
    """One approval given: by whom, with which role of theirs, for which role asked."""

    by: str
    role: Role
    required: Role

    def to_param(self) -> dict[str, str]:
        """As stored with the action."""
        return {"by": self.by, "role": str(self.role), "for": str(self.required)}

    @classmethod
    def from_param(cls, data: Any) -> Approval:
        """Read one back from the action's parameters."""
        return cls(str(data["by"]), Role(data["role"]), Role(data["for"]))

    def label(self) -> str:
        """As notes show it: ``lee@example.com (Support Lead)``."""
        return f"{self.by} ({self.required.label})"


def outstanding(
    needed: Sequence[Role], requester_role: Role | None, given: Iterable[Approval]
) -> tuple[Role, ...]:
    """The approvals still missing: what neither the requester's own role nor an approval
    already given covers, in the order they are asked for."""
    given = tuple(given)
    return tuple(
        role
        for role in dict.fromkeys(needed)
        if not (requester_role is not None and satisfies(requester_role, role))
        and not any(satisfies(approval.role, role) for approval in given)
    )


def may_decide(
    *,
    approver: str,
    approver_role: Role,
    required: Role,
    requested_by: str,
    given: Sequence[Approval],
) -> Decision:
    """May this person approve (or reject) for the role policy asked for."""
    if not satisfies(approver_role, required):
        return Decision(
            Verdict.DENY, f"{approver} ({approver_role.label}) cannot approve for {required.label}."
        )
    if approver.casefold() == requested_by.casefold():
        return Decision(Verdict.DENY, "Nobody approves their own request.")
    if any(approval.by.casefold() == approver.casefold() for approval in given):
        return Decision(Verdict.DENY, "Each approval must come from a different person.")
    return Decision(Verdict.ALLOW, f"{approver_role.label} may decide for {required.label}.")
