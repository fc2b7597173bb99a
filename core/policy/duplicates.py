"""Spotting a true duplicate charge among a customer's charges: the one rule, used by the mail
agent's playbook and by the sidebar's "Duplicate?" mark. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from core.domain import Charge


@dataclass(frozen=True)
class DuplicatePair:
    """Two charges that look like one payment taken twice; ``duplicate`` is the newer one."""

    original: Charge
    duplicate: Charge


def counts_for_duplicates(charge: Charge) -> bool:
    """Only money actually taken and untouched counts: holds, failures, refunds and disputes
    are each handled by their own playbook."""
    return (
        charge.status == "succeeded"
        and charge.captured
        and charge.amount_refunded == 0
        and not charge.disputed
    )


def duplicate_pairs(charges: Iterable[Charge], window: timedelta) -> list[DuplicatePair]:
    """Every charge that repeats an earlier one (same customer, same amount, within
    ``window``), newest first; each duplicate is paired with the closest charge before it.

    The playbook says "same day"; a window rather than a calendar day also catches the pair
    that straddles midnight, and any two charges on one day are within 24 hours of each other.
    The card may differ, as when a customer retries with another one. Charges of the same
    second keep their listed order (Stripe lists newest first).
    """
    listed = [c for c in charges if counts_for_duplicates(c)]
    # Oldest first, stable: reversing Stripe's newest-first list keeps same-second order.
    ordered = sorted(reversed(listed), key=lambda c: c.created)
    pairs: list[DuplicatePair] = []
    for index, later in enumerate(ordered):
        for earlier in reversed(ordered[:index]):
            if later.created - earlier.created > window:
                break
            if earlier.amount == later.amount and earlier.customer_id == later.customer_id:
                pairs.append(DuplicatePair(original=earlier, duplicate=later))
                break
    return pairs[::-1]


def find_duplicate(charges: Iterable[Charge], window: timedelta) -> DuplicatePair | None:
    """The most recent duplicate pair, if any: the one a "charged twice" email is about."""
    pairs = duplicate_pairs(charges, window)
    return pairs[0] if pairs else None
