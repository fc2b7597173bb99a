"""The Stripe mirror: Stripe objects upserted into our tables, never going backwards.

Webhook events arrive twice and out of order, and reconcile reads the same objects from the list
endpoints, so every row keeps ``event_created``: the Stripe time of the state it holds (an
event's ``created``, or when reconcile asked Stripe). A state is written only when it is newer,
by a compare-and-set ``UPDATE ... WHERE event_created < version``, so two workers applying two
events of one object at once cannot leave the older one behind. An older state is ignored.

Stripe's ``created`` has one-second resolution, so two different states of an object can carry
the same time (a subscription created and updated in the same second). Which one is newer
cannot be told from the events, so the caller passes ``fetch``: the object as Stripe has it now,
which is newer than both. Without ``fetch`` a tie is ignored (reconcile's drift check repairs it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.models import (
    StripeCharge,
    StripeCustomer,
    StripeDispute,
    StripeInvoice,
    StripeRefund,
    StripeSubscription,
)

MirrorRow = (
    StripeCustomer
    | StripeSubscription
    | StripeCharge
    | StripeRefund
    | StripeInvoice
    | StripeDispute
)

# Stripe's ``object`` names of what we mirror, and their tables.
MODELS: dict[str, type[MirrorRow]] = {
    "customer": StripeCustomer,
    "subscription": StripeSubscription,
    "charge": StripeCharge,
    "refund": StripeRefund,
    "invoice": StripeInvoice,
    "dispute": StripeDispute,
}
KINDS = tuple(MODELS)


class Applied(StrEnum):
    """What applying one state of an object did to its row."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"  # the row already held it
    STALE = "stale"  # an older state (or an undecidable tie): ignored


def id_of(value: Any) -> str | None:
    """The ID of an expandable field: a string, or an expanded object with an ``id``."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def int_or_none(value: Any) -> int | None:
    """An integer field of a Stripe object, or None (absent, null, or not a number)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _subscription_of_invoice(obj: Mapping[str, Any]) -> str | None:
    # Newer API versions moved it under parent.subscription_details.
    direct = id_of(obj.get("subscription"))
    if direct:
        return direct
    details = (obj.get("parent") or {}).get("subscription_details") or {}
    return id_of(details.get("subscription"))


def _period_end(obj: Mapping[str, Any]) -> int | None:
    # Newer API versions keep the period on each item rather than the subscription.
    top = int_or_none(obj.get("current_period_end"))
    if top is not None:
        return top
    items = (obj.get("items") or {}).get("data") or []
    ends = [int_or_none(item.get("current_period_end")) for item in items]
    return max((e for e in ends if e is not None), default=None)


def _due_by(obj: Mapping[str, Any]) -> datetime | None:
    # 0 (or none) means no response is allowed.
    due = int_or_none((obj.get("evidence_details") or {}).get("due_by"))
    return datetime.fromtimestamp(due, UTC) if due else None


def mirrored_fields(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The columns a row of ``kind`` keeps of a Stripe object (besides ``data`` itself)."""
    deleted = obj.get("deleted") is True
    if kind == "customer":
        return {"customer_id": obj["id"], "email": obj.get("email"), "name": obj.get("name")}
    common = {"customer_id": id_of(obj.get("customer")), "deleted": deleted}
    if kind == "subscription":
        return common | {
            "status": obj.get("status"),
            "cancel_at_period_end": bool(obj.get("cancel_at_period_end")),
            "current_period_end": _period_end(obj),
            "created": int_or_none(obj.get("created")),
        }
    if kind == "charge":
        return common | {
            "amount": int_or_none(obj.get("amount")),
            "currency": obj.get("currency"),
            "status": obj.get("status"),
            "amount_refunded": int_or_none(obj.get("amount_refunded")),
            "disputed": bool(obj.get("disputed")),
            "failure_code": obj.get("failure_code"),
            "created": int_or_none(obj.get("created")),
        }
    if kind == "refund":
        return common | {
            "charge_id": id_of(obj.get("charge")),
            "amount": int_or_none(obj.get("amount")),
            "currency": obj.get("currency"),
            "status": obj.get("status"),
            "reason": obj.get("reason"),
            "created": int_or_none(obj.get("created")),
        }
    if kind == "invoice":
        return common | {
            "subscription_id": _subscription_of_invoice(obj),
            "status": obj.get("status"),
            "amount_due": int_or_none(obj.get("amount_due")),
            "amount_paid": int_or_none(obj.get("amount_paid")),
            "currency": obj.get("currency"),
            "created": int_or_none(obj.get("created")),
        }
    if kind == "dispute":
        return common | {
            "charge_id": id_of(obj.get("charge")),
            "amount": int_or_none(obj.get("amount")),
            "currency": obj.get("currency"),
            "reason": obj.get("reason"),
            "status": obj.get("status"),
            "evidence_due_by": _due_by(obj),
            "is_charge_refundable": bool(obj.get("is_charge_refundable")),
            "created": int_or_none(obj.get("created")),
        }
    raise ValueError(f"not a mirrored kind: {kind}")


def _fields(session: Session, kind: str, obj: Mapping[str, Any], deleted: bool) -> dict[str, Any]:
    fields = mirrored_fields(kind, obj)
    fields["deleted"] = deleted or obj.get("deleted") is True
    fields["data"] = dict(obj)
    if fields.get("customer_id") is None and fields.get("charge_id"):
        # Refunds and disputes name only their charge: the customer is the charge's.
        fields["customer_id"] = session.scalar(
            select(StripeCharge.customer_id).where(StripeCharge.id == fields["charge_id"])
        )
    if fields["deleted"] and kind == "customer":
        # A deleted customer's stub says nothing else: keep what we knew of them.
        for name in ("email", "name"):
            fields.pop(name)
        fields.pop("data")
    return fields


def _row(session: Session, model: type[MirrorRow], object_id: str) -> MirrorRow | None:
    # Read afresh: a compare-and-set by another transaction may have moved it.
    return cast("MirrorRow | None", session.get(model, object_id, populate_existing=True))


def _same(row: MirrorRow, fields: Mapping[str, Any]) -> bool:
    return all(getattr(row, name) == value for name, value in fields.items())


def apply(
    session: Session,
    kind: str,
    obj: Mapping[str, Any],
    version: int,
    *,
    deleted: bool = False,
    fetch: Callable[[], Mapping[str, Any]] | None = None,
) -> Applied:
    """Write this state of a Stripe object (as of Stripe time ``version``) unless the row
    holds a newer one; ``deleted`` marks it gone (``customer.deleted``). ``fetch`` returns the
    object as Stripe has it now, for a tie: two states with the same time."""
    model = MODELS[kind]
    object_id = str(obj["id"])
    fields = _fields(session, kind, obj, deleted)
    row = _row(session, model, object_id)
    if row is None:
        try:
            with session.begin_nested():
                session.add(model(id=object_id, event_created=version, **fields))
            return Applied.CREATED
        except IntegrityError:
            # Another worker inserted it first: compare with theirs.
            row = _row(session, model, object_id)
            assert row is not None
    if version < row.event_created:
        return Applied.STALE
    if _same(row, fields):
        if version > row.event_created:
            _write(session, model, object_id, {}, version, newer_than=version)
        return Applied.UNCHANGED
    if version == row.event_created:
        if fetch is None:
            return Applied.STALE
        current = fetch()
        fields = _fields(session, kind, current, deleted or current.get("deleted") is True)
        if _same(row, fields):
            return Applied.UNCHANGED
        # Stripe's current state is at least as new as anything stored at this time.
        written = _write(session, model, object_id, fields, version, newer_than=version + 1)
        return Applied.UPDATED if written else Applied.STALE
    written = _write(session, model, object_id, fields, version, newer_than=version)
    return Applied.UPDATED if written else Applied.STALE


def _write(
    session: Session,
    model: type[MirrorRow],
    object_id: str,
    fields: Mapping[str, Any],
    version: int,
    *,
    newer_than: int,
) -> bool:
    """Compare and set: write only while the row's version is below ``newer_than``."""
    result = session.execute(
        update(model)
        .where(model.id == object_id, model.event_created < newer_than)
        .values(event_created=version, synced_at=datetime.now(UTC), **fields)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def mark_removed(session: Session, kind: str, object_id: str, version: int) -> bool:
    """Mark a row gone from Stripe (reconcile no longer lists it) unless it is newer; True if
    this call marked it."""
    model = MODELS[kind]
    result = session.execute(
        update(model)
        .where(model.id == object_id, model.event_created <= version, model.deleted.is_(False))
        .values(deleted=True, event_created=version, synced_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def kind_of(obj: Mapping[str, Any]) -> str | None:
    """The mirrored kind of a Stripe object (its ``object`` field), or None."""
    name = obj.get("object")
    return name if isinstance(name, str) and name in MODELS else None
