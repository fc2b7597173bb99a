"""Prorated refunds for a charge taken after a cancellation. Pure.

Servinix playbook: "Issue a prorated refund if the charge was after the confirmed cancellation
effective date." Stripe does not compute cash prorations, so we do: the unused share of the
billing period, to the second, rounded down to a whole minor unit so we never refund a fraction
of a cent more than was unused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.domain import Money

_SECOND = timedelta(seconds=1)
_DAY_SECONDS = 86_400


@dataclass(frozen=True)
class ProratedRefund:
    """How much of a charge to give back for the part of its period after a cancellation.

    ``unused_days`` and ``period_days`` are for people and count a part day as a whole day;
    ``amount`` is worked out to the second.
    """

    amount: Money
    unused_days: int
    period_days: int
    explanation: str
    period_start: datetime
    period_end: datetime
    cancelled_at: datetime


def period_end_after(start: datetime, interval: str | None) -> datetime:
    """The end of one billing period that starts at ``start`` (a month unless told)."""
    if interval == "week":
        return start + timedelta(weeks=1)
    if interval == "day":
        return start + timedelta(days=1)
    if interval == "year":
        month, year = start.month, start.year + 1
    else:
        month, year = start.month % 12 + 1, start.year + (start.month == 12)
    for day in (start.day, 30, 29, 28):  # 31 Jan + 1 month, or 29 Feb + 1 year, clamp
        try:
            return start.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _whole_days(seconds: int) -> int:
    return -(-seconds // _DAY_SECONDS)


def _days_text(seconds: int) -> str:
    if seconds % _DAY_SECONDS == 0:
        return str(seconds // _DAY_SECONDS)
    hundredths = (seconds * 100 + _DAY_SECONDS // 2) // _DAY_SECONDS
    return f"{hundredths // 100}.{hundredths % 100:02d}"


def _date_text(moment: datetime, with_time: bool) -> str:
    date = f"{moment.day} {moment:%b %Y}"
    return f"{date} at {moment:%H:%M %Z}".rstrip() if with_time else date


def prorated_refund(
    charge_amount: Money,
    refundable: Money,
    period_start: datetime,
    period_end: datetime,
    cancelled_at: datetime,
) -> ProratedRefund | None:
    """The refund for the part of ``period_start``–``period_end`` after ``cancelled_at``.

    A cancellation before the period began refunds the whole charge. The amount never exceeds
    ``refundable`` (what is left after earlier refunds). None when no time is unused, the period
    is empty, or nothing is left to refund. Raises ValueError for naive datetimes or mixed
    currencies.
    """
    moments = {"period_start": period_start, "period_end": period_end, "cancelled_at": cancelled_at}
    for name, moment in moments.items():
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware")
    if refundable.currency != charge_amount.currency:
        raise ValueError(f"cannot cap a {charge_amount.currency} refund in {refundable.currency}")
    # In UTC, so a daylight-saving change inside the period is measured in real time.
    start, end, cancelled = (m.astimezone(UTC) for m in (period_start, period_end, cancelled_at))
    period_seconds = (end - start) // _SECOND
    unused_seconds = (end - max(cancelled, start)) // _SECOND
    if period_seconds <= 0 or unused_seconds <= 0 or refundable.amount <= 0:
        return None
    prorated = charge_amount.amount * unused_seconds // period_seconds
    amount = Money(min(prorated, refundable.amount), charge_amount.currency)
    if amount.amount <= 0:
        return None

    whole_days = unused_seconds % _DAY_SECONDS == 0 and period_seconds % _DAY_SECONDS == 0
    unused_days, period_days = _whole_days(unused_seconds), _whole_days(period_seconds)
    if cancelled <= start:
        opening = (
            f"Cancelled on {_date_text(cancelled_at, False)}, before the period began; "
            f"all {period_days} days of the period were unused"
        )
    else:
        opening = (
            f"Cancelled on {_date_text(cancelled_at, not whole_days)}; {unused_days} of "
            f"{period_days} days of the period were unused"
        )
    if not whole_days:
        opening += " (a part day counts as a day)"
    sum_text = (
        f"{_days_text(unused_seconds)}/{_days_text(period_seconds)} × {charge_amount} = "
        f"{Money(prorated, charge_amount.currency)}"
    )
    if not whole_days:
        sum_text += ", worked out to the second and rounded down"
    explanation = f"{opening}: {sum_text}."
    if amount.amount < prorated:
        explanation += f" Capped at the {refundable} left to refund on the charge."
    return ProratedRefund(
        amount=amount,
        unused_days=unused_days,
        period_days=period_days,
        explanation=explanation,
        period_start=period_start,
        period_end=period_end,
        cancelled_at=cancelled_at,
    )
