"""What every action kind is: how it is proposed, described, judged and executed.

One module per kind (``core.actions.refund``, ``.cancel``...) subclasses ``ActionType``; the
registry (``core.actions.registry``) finds it by ``ActionKind``. The sidebar proposes, the
playbooks plan, the worker judges again and executes: all through these four methods.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

from sqlalchemy.orm import Session

from core.billing_context import BillingContext
from core.db.models import Action, Escalation
from core.domain import ActionKind, Money, Role
from core.errors import BillingDeskError, InvalidInput
from core.helpdesks import Helpdesk
from core.plans import StepDraft
from core.policy import Approval, Asker, Decision, PolicyConfig
from core.settings import Settings
from core.stripe_gateway import StripeGateway, request_key

MAX_TEXT = 2000


@dataclass(frozen=True)
class Requested:
    """What an agent asked for, as the signed confirmation carries it back: the same fields
    are judged at preview and, on fresh data, at confirmation."""

    kind: ActionKind
    key: str
    charge_id: str | None = None
    amount: Money | None = None
    reason: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_intent(self) -> dict[str, Any]:
        """As the confirmation form carries it (signed by the web layer)."""
        return {
            "kind": str(self.kind),
            "key": self.key,
            "charge": self.charge_id,
            "amount": self.amount.amount if self.amount else None,
            "currency": self.amount.currency if self.amount else None,
            "reason": self.reason,
            "params": self.params,
        }

    @classmethod
    def from_intent(cls, intent: Mapping[str, Any]) -> Requested:
        """Read a signed confirmation back."""
        amount = intent.get("amount")
        return cls(
            kind=ActionKind(intent["kind"]),
            key=str(intent["key"]),
            charge_id=intent.get("charge"),
            amount=Money(int(amount), str(intent["currency"])) if amount is not None else None,
            reason=intent.get("reason"),
            params=dict(intent.get("params") or {}),
        )


@dataclass(frozen=True)
class Proposal:
    """An action ready for the agent's confirmation: exactly what will happen, to what, and
    what policy thinks of it."""

    requested: Requested
    title: str
    target: str
    decision: Decision
    details: tuple[str, ...] = ()
    follow_ups: tuple[str, ...] = ()  # the plan's later steps, in words

    @property
    def amount(self) -> Money | None:
        """The money the action moves, if any."""
        return self.requested.amount


@dataclass(frozen=True)
class Asking:
    """Who asks for an action on which ticket's customer: the facts every judgement starts
    from, whichever path asks."""

    asker: Asker
    requester_role: Role | None  # None: automation
    approvals: tuple[Approval, ...] = ()


@dataclass(frozen=True)
class Ask:
    """An agent's request in the sidebar: the ticket's context, who asks, under which policy,
    and when."""

    context: BillingContext
    asking: Asking
    config: PolicyConfig
    now: datetime


@dataclass(frozen=True)
class Outcome:
    """What executing a step did: the Stripe (or other) object it touched, and the sentence
    for the ticket's internal note (None: the step speaks for itself, like an email)."""

    object_id: str | None
    note: str | None
    detail: dict[str, Any] = field(default_factory=dict)


class Effects(Protocol):
    """What executing a step may touch: given by the worker (jobs.effects), faked by nothing."""

    gateway: StripeGateway
    policy: PolicyConfig
    settings: Settings

    def transaction(self) -> AbstractContextManager[Session]:
        """A short database transaction, committed on success."""
        ...

    def helpdesk(self, session: Session, ticket_id: int) -> Helpdesk:
        """The adapter of the helpdesk that owns the ticket."""
        ...

    def send_customer_email(
        self,
        action: Action,
        *,
        template: str,
        subject: str,
        context: Mapping[str, Any],
        to: str,
    ) -> str:
        """Send one templated email for the step, once; what happened, in a few words."""
        ...

    def notify_team(self, escalation: Escalation, *, template: str, subject: str) -> str:
        """Email the escalation's team at its configured address, once; what happened."""
        ...

    def now(self) -> datetime:
        """The current time (UTC)."""
        ...


class StepRefused(BillingDeskError):
    """Policy, asked again just before a step runs, did not allow it: it goes back for the
    approval now needed, or fails with the reason."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason)
        self.decision = decision


class ActionType:
    """One kind of action. Subclasses set ``kind`` and override what they support."""

    kind: ClassVar[ActionKind]

    def propose(self, ask: Ask, form: Mapping[str, str]) -> Proposal:
        """The sidebar's preview of this action for the agent's form."""
        raise InvalidInput(f"{self.kind} is not offered in the sidebar.")

    def judge(self, ask: Ask, requested: Requested) -> Decision:
        """Policy's answer for this request on this ticket's fresh context."""
        raise NotImplementedError

    def follow_ups(self, requested: Requested, context: BillingContext) -> tuple[StepDraft, ...]:
        """The plan steps an agent's confirmed request brings after it (e.g. confirm, close)."""
        return ()

    def describe(self, action: Action) -> str:
        """One line saying what the action does, for notes, the audit trail and the sidebar."""
        raise NotImplementedError

    def execute(self, action: Action, fx: Effects) -> Outcome:
        """Do it, idempotently: running it again after a crash at any line changes nothing
        twice. ``action`` is a detached snapshot; writes go through ``fx``. Money steps ask
        policy again first and raise StepRefused when it does not allow them now."""
        raise NotImplementedError


def idempotency_key(*parts: Any) -> str:
    """A sidebar request's key: the request and the state it was made against, hashed."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
    return f"sidebar:{parts[0]}:{digest[:40]}"


def text_field(form: Mapping[str, str], name: str, label: str, required: bool = True) -> str:
    """A trimmed text field, bounded in length."""
    value = (form.get(name) or "").strip()
    if required and not value:
        raise InvalidInput(f"{label} is required.")
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"{label} is longer than {MAX_TEXT} characters.")
    return value


def int_field(form: Mapping[str, str], name: str, label: str, low: int, high: int) -> int:
    """A whole number within bounds."""
    try:
        value = int((form.get(name) or "").strip())
    except ValueError:
        raise InvalidInput(f"{label} must be a whole number.") from None
    if not low <= value <= high:
        raise InvalidInput(f"{label} must be between {low} and {high}.")
    return value


def params_of(action: Action) -> dict[str, Any]:
    """The action's kind-specific inputs (a copy)."""
    return dict(action.params or {})


# Action params: how many of the action's Stripe request keys a server error has spent.
KEYS_SPENT_PARAM = "stripe_keys_spent"


def stripe_key(action: Action) -> str:
    """The idempotency key of the action's next Stripe write (core.stripe_gateway.request_key)."""
    return request_key(action.idempotency_key, int(params_of(action).get(KEYS_SPENT_PARAM, 0)))


def approvals_of(action: Action) -> tuple[Approval, ...]:
    """The approvals given so far."""
    return tuple(Approval.from_param(a) for a in params_of(action).get("approvals", []))
