"""Reconcile: walk Stripe's list endpoints and bring the mirror to what Stripe has.

It backfills an empty mirror, repairs a broken one, and recovers what webhooks cannot (events
older than Stripe's 30-day retention, events Stripe never generated). Each object is applied
with the Stripe time at which its list was started: what the list returns is at least that new,
so an older event arriving later cannot undo it, and an event newer than the walk is kept.

The periodic drift check (jobs.schedule) is the same walk: a difference it repairs is drift,
except an object created in the last minutes (its event may still be on its way). An update
whose event is in flight at that moment is reported as drift too: rare, and harmless, since
the walk has repaired it anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from core import mirror
from core.db import session_scope
from core.mirror import Applied
from jobs import runtime

log = logging.getLogger(__name__)

# An object whose event may still be on its way is not drift (Stripe retries for minutes).
DRIFT_GRACE_SECONDS = 600

Progress = Callable[[Iterator[dict[str, Any]], str], Iterable[dict[str, Any]]]


@dataclass
class KindSummary:
    """What reconcile did to one kind of object."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0

    @property
    def seen(self) -> int:
        """Objects Stripe listed."""
        return self.created + self.updated + self.unchanged


@dataclass
class Summary:
    """What reconcile did, per kind, and the differences that count as drift."""

    kinds: dict[str, KindSummary] = field(default_factory=dict)
    drift: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def objects(self) -> int:
        """Objects Stripe listed, of every kind."""
        return sum(k.seen for k in self.kinds.values())

    def lines(self) -> list[str]:
        """One line per kind: ``charge: 3 created, 1 updated, 10 unchanged, 0 removed``."""
        return [
            f"{kind}: {s.created} created, {s.updated} updated, {s.unchanged} unchanged, "
            f"{s.removed} removed"
            for kind, s in self.kinds.items()
        ]


def _plain(objects: Iterator[dict[str, Any]], _kind: str) -> Iterable[dict[str, Any]]:
    return objects


def reconcile(
    rt: runtime.Runtime,
    kinds: Iterable[str] = mirror.KINDS,
    progress: Progress = _plain,
) -> Summary:
    """Walk every object of ``kinds`` in Stripe into the mirror; rows Stripe no longer lists
    are marked removed. ``progress`` wraps each kind's objects (the CLI's progress bar)."""
    summary = Summary()
    began = time.monotonic()
    # Customers first: refunds and disputes take their customer from their charge's row.
    for kind in sorted(kinds, key=mirror.KINDS.index):
        summary.kinds[kind] = _reconcile_kind(rt, kind, progress, summary.drift)
    summary.seconds = time.monotonic() - began
    return summary


def _reconcile_kind(
    rt: runtime.Runtime, kind: str, progress: Progress, drift: list[str]
) -> KindSummary:
    counts = KindSummary()
    started = int(time.time())
    recent = started - DRIFT_GRACE_SECONDS
    seen: set[str] = set()
    for obj in progress(rt.gateway.iter_objects(kind), kind):
        object_id = str(obj["id"])
        seen.add(object_id)
        with session_scope(rt.session_factory) as session:
            # The list's object is the tie-breaker too: it is Stripe's state now.
            applied = mirror.apply(session, kind, obj, started, fetch=lambda obj=obj: obj)
        if applied is Applied.CREATED:
            counts.created += 1
        elif applied is Applied.UPDATED:
            counts.updated += 1
        else:
            counts.unchanged += 1
        if applied in (Applied.CREATED, Applied.UPDATED) and int(obj.get("created") or 0) < recent:
            drift.append(f"{kind} {object_id} {applied}")
    model = mirror.MODELS[kind]
    with session_scope(rt.session_factory) as session:
        listed_before = session.scalars(
            select(model.id).where(model.deleted.is_(False), model.event_created < started)
        ).all()
        for object_id in listed_before:
            if object_id in seen:
                continue
            if mirror.mark_removed(session, kind, object_id, started):
                counts.removed += 1
                drift.append(f"{kind} {object_id} removed")
    return counts
