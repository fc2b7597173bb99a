"""The playbooks' escalation matrix: who takes a category, and by when. Pure."""

from __future__ import annotations

from datetime import datetime, timedelta

from core.domain import Category, EscalationTarget
from core.policy.config import PolicyConfig

_ROUTES = {
    # PenguinMails: "Standard Refund → Support Lead".
    Category.REFUND_REQUEST: EscalationTarget.SUPPORT_LEAD,
    Category.CHARGE_AFTER_CANCELLATION: EscalationTarget.SUPPORT_LEAD,
    Category.DUPLICATE_CHARGE: EscalationTarget.SUPPORT_LEAD,
    # PenguinMails: "Dispute / Chargeback → Finance Team"; Servinix: escalate immediately.
    Category.CHARGEBACK: EscalationTarget.FINANCE,
    # Servinix: "Treat as potential fraud. Immediately flag the account and escalate to the
    # Security team."
    Category.CARD_NOT_RECOGNIZED: EscalationTarget.SECURITY,
    # Servinix: unused modules need manager approval; goodwill credit is theirs to decide.
    Category.UNUSED_MODULE: EscalationTarget.ACCOUNT_MANAGER,
    Category.GENERAL_DISSATISFACTION: EscalationTarget.ACCOUNT_MANAGER,
}


def escalation_route(category: Category) -> EscalationTarget | None:
    """Who a ticket of ``category`` goes to when an agent cannot settle it; None if no one."""
    return _ROUTES.get(category)


def sla_due(target: EscalationTarget, opened_at: datetime, config: PolicyConfig) -> datetime:
    """When ``target`` must have picked up an escalation opened at ``opened_at``."""
    return opened_at + timedelta(minutes=config.sla_minutes(target))


def _duration_text(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{rest}m"
    return f"{hours}h" if not rest else f"{hours}h {rest}m"


def sla_text(target: EscalationTarget, config: PolicyConfig) -> str:
    """The target and its SLA as agents read it, e.g. ``Finance · SLA 48h``."""
    return f"{target.label} · SLA {_duration_text(config.sla_minutes(target))}"
