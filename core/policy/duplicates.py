"""Spotting a true duplicate charge among a customer's charges. Pure."""

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


def _eligible(charge: Charge) -> bool:
    # Only money actually taken and untouched counts: holds, failures, refunds and
    # disputes are each handled by their own playbook.
    return (
        charge.status == "succeeded"
        and charge.captured
        and charge.amount_refunded == 0
        and not charge.disputed
    )


def find_duplicate(charges: Iterable[Charge], window: timedelta) -> DuplicatePair | None:
    """The most recent pair of succeeded, unrefunded charges of the same amount within ``window``.

    The playbook says "same day"; a window rather than a calendar day also catches the pair
    that straddles midnight, and any two charges on one day are within 24 hours of each other.
    """
    eligible = sorted((c for c in charges if _eligible(c)), key=lambda c: c.created, reverse=True)
    for index, newer in enumerate(eligible):
        for older in eligible[index + 1 :]:
            if newer.created - older.created > window:
                break
            if newer.amount == older.amount and newer.customer_id == older.customer_id:
                return DuplicatePair(original=older, duplicate=newer)
    return None
