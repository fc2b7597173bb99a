"""PolicyConfig: every number in the playbooks, with the playbooks' value as default.

A team may override any of them in a ``policy.toml``; unknown keys and bad values are refused at
start-up with the key named, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from core.domain import Category, EscalationTarget, Money
from core.errors import ConfigError


class Mode(StrEnum):
    """How much a category's playbook may do without a person."""

    AUTO = "auto"  # act (within limits), confirm and close
    SUGGEST = "suggest"  # prepare the action; an agent clicks it
    OFF = "off"  # leave the ticket to people


def _default_modes() -> dict[Category, Mode]:
    # Every playbook runs on its own by default, within its limits: money only for an
    # authenticated sender, approvals as the playbooks require them.
    return dict.fromkeys(Category, Mode.AUTO)


def _default_sla_minutes() -> dict[EscalationTarget, int]:
    return {
        # PenguinMails escalation matrix.
        EscalationTarget.SUPPORT_LEAD: 24 * 60,
        EscalationTarget.FINANCE: 48 * 60,
        EscalationTarget.ENGINEERING_PLATFORM: 4 * 60,
        EscalationTarget.ENGINEERING_CRITICAL: 15,
        # Servinix says "immediately" for a card not recognised; an hour is the nearest
        # target a person can be held to, and it stays well ahead of any dispute deadline.
        EscalationTarget.SECURITY: 60,
        # Neither playbook gives the account manager an SLA; two days matches Finance.
        EscalationTarget.ACCOUNT_MANAGER: 48 * 60,
    }


@dataclass(frozen=True)
class PolicyConfig:
    """The rules Billing Desk applies to money; pure data."""

    # Servinix playbook: "Only Support Leads and above can issue refunds over $500." Counted
    # per charge however a refund is split: what a charge has had back, plus the new refund.
    refund_approval_threshold: dict[str, int] = field(default_factory=lambda: {"usd": 50_000})
    # The same rule per customer, across their charges: refunds in a rolling window beyond
    # this need a Support Lead ($500 in 30 days by default, so splitting across charges
    # cannot get around the per-charge limit).
    customer_refund_limit: dict[str, int] = field(default_factory=lambda: {"usd": 50_000})
    customer_refund_window_days: int = 30
    # What the mail agent may refund on its own, per refund; above it, it asks an agent.
    auto_refund_limit: dict[str, int] = field(default_factory=lambda: {"usd": 50_000})
    # PenguinMails guide: "Refunds are approved for technical errors or within 7 days of
    # accidental renewal": a refund asked for by the customer on an older charge goes to a
    # Support Lead (duplicates and charges after a cancellation are errors, never late).
    refund_window_days: int = 7
    # Comps and free time ("support recovery or VIPs"): an agent alone may give a 100%-off
    # coupon of up to this many months, or move a trial end by up to this many days (the
    # guide's example is "+30 days"), and this many such grants per customer in the window.
    comp_max_months: int = 1
    trial_extension_max_days: int = 30
    free_time_grants_per_customer: int = 1
    free_time_window_days: int = 90
    # PenguinMails guide: accept a dispute "if amount is small (<$20)".
    dispute_accept_below: dict[str, int] = field(default_factory=lambda: {"usd": 2_000})
    # Charges this close together, same amount, count as a possible duplicate.
    duplicate_window_hours: int = 24
    category_modes: dict[Category, Mode] = field(default_factory=_default_modes)
    # Below this classifier confidence the ticket goes to a person, whatever the category.
    # Confidence is calibrated (the chance the category is right): at 0.9, 97% of the held-out
    # emails that reach it are classified right (bench/README.md, the classifier's curve).
    min_classifier_confidence: float = 0.9
    # Minutes each escalation target has to pick a ticket up.
    escalation_sla_minutes: dict[EscalationTarget, int] = field(
        default_factory=_default_sla_minutes
    )
    # PenguinMails guide: "Stripe automatically retries 3 times over 2 weeks". Match the
    # Smart Retries policy set in the Stripe Dashboard (Stripe recommends 8 tries in 2 weeks).
    smart_retry_attempts: int = 3
    smart_retry_days: int = 14
    # Mass payment failure (Engineering Critical, 15m): at least this many failed payments in
    # the sliding window, making at least this share of the payments attempted in it.
    mass_failure_window_minutes: int = 15
    mass_failure_min_failures: int = 20
    mass_failure_min_rate: float = 0.5

    def approval_threshold(self, currency: str) -> Money | None:
        """The most a charge may have refunded without a Support Lead; None if unconfigured."""
        return _money(self.refund_approval_threshold, currency)

    def customer_refund_cap(self, currency: str) -> Money | None:
        """The most one customer may have refunded in the window without a Support Lead."""
        return _money(self.customer_refund_limit, currency)

    def auto_refund_cap(self, currency: str) -> Money | None:
        """The largest refund the mail agent issues on its own; None: never on its own."""
        return _money(self.auto_refund_limit, currency)

    def dispute_accept_cap(self, currency: str) -> Money | None:
        """Disputes below this are accepted rather than challenged; None: always challenge."""
        return _money(self.dispute_accept_below, currency)

    def mode_for(self, category: Category) -> Mode:
        """How far the playbook for ``category`` may go on its own."""
        return self.category_modes.get(category, Mode.OFF)

    def sla_minutes(self, target: EscalationTarget) -> int:
        """Minutes ``target`` has to pick up an escalation; the playbooks' value if unset."""
        return self.escalation_sla_minutes.get(target, _default_sla_minutes()[target])


def _money(table: dict[str, int], currency: str) -> Money | None:
    amount = table.get(currency.lower())
    return None if amount is None else Money(amount, currency)


def _money_table(key: str, value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a table of currency = amount in minor units")
    table: dict[str, int] = {}
    for currency, amount in value.items():
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise ConfigError(f"{key}.{currency}", "must be a non-negative whole number of cents")
        table[currency.lower()] = amount
    return table


def _positive_int(key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(key, "must be a positive whole number")
    return value


def _fraction(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(key, "must be a number between 0 and 1")
    return float(value)


def _modes(key: str, value: Any) -> dict[Category, Mode]:
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a table of category = mode")
    modes = _default_modes()
    for name, mode in value.items():
        try:
            category = Category(name)
        except ValueError:
            raise ConfigError(f"{key}.{name}", "is not a known category") from None
        try:
            modes[category] = Mode(mode)
        except ValueError:
            raise ConfigError(f"{key}.{name}", "must be auto, suggest or off") from None
    return modes


def _non_negative_int(key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(key, "must be a whole number, 0 or more")
    return value


def _sla_minutes(key: str, value: Any) -> dict[EscalationTarget, int]:
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a table of escalation target = minutes")
    minutes = _default_sla_minutes()
    for name, amount in value.items():
        try:
            target = EscalationTarget(name)
        except ValueError:
            raise ConfigError(f"{key}.{name}", "is not a known escalation target") from None
        minutes[target] = _positive_int(f"{key}.{name}", amount)
    return minutes


_PARSERS = {
    "refund_approval_threshold": _money_table,
    "customer_refund_limit": _money_table,
    "customer_refund_window_days": _positive_int,
    "auto_refund_limit": _money_table,
    "refund_window_days": _positive_int,
    "comp_max_months": _non_negative_int,
    "trial_extension_max_days": _non_negative_int,
    "free_time_grants_per_customer": _non_negative_int,
    "free_time_window_days": _positive_int,
    "dispute_accept_below": _money_table,
    "duplicate_window_hours": _positive_int,
    "category_modes": _modes,
    "min_classifier_confidence": _fraction,
    "escalation_sla_minutes": _sla_minutes,
    # 0 means Smart Retries are off in the Stripe Dashboard.
    "smart_retry_attempts": _non_negative_int,
    "smart_retry_days": _positive_int,
    "mass_failure_window_minutes": _positive_int,
    "mass_failure_min_failures": _positive_int,
    "mass_failure_min_rate": _fraction,
}


# Every key a policy file may set.
POLICY_KEYS = frozenset(_PARSERS)


def policy_from_mapping(data: dict[str, Any], source: str = "policy") -> PolicyConfig:
    """Build a PolicyConfig from parsed TOML, refusing unknown keys and bad values."""
    values: dict[str, Any] = {}
    for key, value in data.items():
        parser = _PARSERS.get(key)
        if parser is None:
            raise ConfigError(f"{source}: {key}", "is not a policy setting")
        values[key] = parser(f"{source}: {key}", value)
    return PolicyConfig(**values)


def load_policy(path: str | None) -> PolicyConfig:
    """Read ``policy.toml`` (POLICY_FILE); with no file, the playbooks' defaults."""
    if path is None:
        return PolicyConfig()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("POLICY_FILE", f"cannot read {path} ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("POLICY_FILE", f"{path} is not valid TOML ({exc})") from None
    return policy_from_mapping(data, source=Path(path).name)
