"""Every action kind, found by its ActionKind: the one place that knows them all."""

from __future__ import annotations

from core.actions.base import ActionType
from core.actions.cancel import CancelSubscription
from core.actions.card_link import SendUpdateCardLink
from core.actions.close import CloseTicket
from core.actions.comp import CompCoupon
from core.actions.confirm_refund import ConfirmRefund
from core.actions.dispute import AcceptDispute, SubmitDisputeEvidence
from core.actions.escalate import Escalate
from core.actions.fraud_flag import FlagFraud
from core.actions.note import Note
from core.actions.refund import RefundAction
from core.actions.reply import Reply
from core.actions.trial import ExtendTrial
from core.db.models import Action
from core.domain import ActionKind
from core.errors import InvalidInput

_TYPES: dict[ActionKind, ActionType] = {
    t.kind: t
    for t in (
        RefundAction(),
        ConfirmRefund(),
        CloseTicket(),
        CancelSubscription(),
        CompCoupon(),
        ExtendTrial(),
        SendUpdateCardLink(),
        FlagFraud(),
        Escalate(),
        Note(),
        Reply(),
        SubmitDisputeEvidence(),
        AcceptDispute(),
    )
}


def action_type(kind: ActionKind | str) -> ActionType:
    """The module that knows this kind of action."""
    try:
        return _TYPES[ActionKind(kind)]
    except ValueError:
        raise InvalidInput(f"Unknown action {kind!r}.") from None


def describe(action: Action) -> str:
    """One line saying what the action does, for notes, the audit trail and the sidebar."""
    return action_type(action.kind).describe(action)


def registered() -> frozenset[ActionKind]:
    """Every kind with a module (a test insists it is every ActionKind)."""
    return frozenset(_TYPES)
