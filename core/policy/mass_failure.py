"""Mass payment failure: too many failed payments, at too high a rate, in a sliding window.

Pure: the job counts the payments attempted and failed in the window that ends at the newest
failure, and asks here whether that is an incident. One incident lasts while failures keep
coming above the threshold; a new one starts only after a whole window without one.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.policy.config import PolicyConfig


@dataclass(frozen=True)
class PaymentWindow:
    """What happened to payments in one window of Stripe time (unix seconds)."""

    start: int
    end: int
    attempted: int
    failed: int

    @property
    def rate(self) -> float:
        """The share of attempted payments that failed (0 with none attempted)."""
        return self.failed / self.attempted if self.attempted else 0.0

    def describe(self) -> str:
        """``25 of 30 payments failed (83%) in 15 minutes``."""
        minutes = max(1, round((self.end - self.start) / 60))
        return (
            f"{self.failed} of {self.attempted} payments failed ({self.rate:.0%}) "
            f"in {minutes} minutes"
        )


def window_start(now: int, config: PolicyConfig) -> int:
    """Where the sliding window that ends at ``now`` begins."""
    return now - config.mass_failure_window_minutes * 60


def is_mass_failure(window: PaymentWindow, config: PolicyConfig) -> bool:
    """True when the window has at least the configured failures at the configured rate."""
    return (
        window.failed >= config.mass_failure_min_failures
        and window.rate >= config.mass_failure_min_rate
    )


def is_new_incident(last_seen: int | None, now: int, config: PolicyConfig) -> bool:
    """True unless an incident was still going within one window before ``now``."""
    return last_seen is None or last_seen < window_start(now, config)
