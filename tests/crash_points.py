"""Crash a real worker process at a chosen line, once: for tests/test_plan_crashes.py.

``python -m crash_points POINT MARKER -- worker ...`` arms one crash point, then runs the
``billing-desk`` command given after ``--``. When the armed line is reached the process kills
itself with SIGKILL, as the OOM killer would, after creating MARKER; a process that finds
MARKER already there runs on, so the worker that replaces the dead one finishes the work.

The product has no hooks for this: the points wrap functions the worker calls, from outside,
before the worker pool forks (its worker processes inherit the wrappers).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _die_once(marker: Path) -> None:
    if marker.exists():
        return
    marker.touch()
    os.kill(os.getpid(), signal.SIGKILL)


def _after(owner: Any, name: str, marker: Path, when: Callable[..., bool] | None = None) -> None:
    """Let ``owner.name`` run, then die (once), where ``when(*args)`` says so."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if when is None or when(*args, **kwargs):
            _die_once(marker)
        return result

    setattr(owner, name, wrapped)


def _before(owner: Any, name: str, marker: Path) -> None:
    """Die (once) just before ``owner.name`` runs."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        _die_once(marker)
        return original(*args, **kwargs)

    setattr(owner, name, wrapped)


def _step_kind(action_id: int) -> str:
    from core.db import session_scope
    from core.db.models import Action
    from jobs import runtime

    with session_scope(runtime.current().session_factory) as session:
        action = session.get(Action, action_id)
        return action.kind if action is not None else ""


def arm(point: str, marker: Path) -> None:
    """Arm one crash point (see POINTS)."""
    import core.helpdesks.local
    import jobs.effects
    import jobs.plans
    from core.stripe_gateway import StripeGateway

    def queued_after(kind: str) -> Callable[..., bool]:
        # enqueue_step(queue, action_id) after a step is recorded queues the next one.
        return lambda queue, action_id: _step_kind(action_id) == kind

    points: dict[str, Callable[[], None]] = {
        # Step 1, the refund: before Stripe, after Stripe answered but before our record,
        # and after our record but before the next step was queued.
        "before_refund": lambda: _before(StripeGateway, "refund", marker),
        "after_stripe_refund": lambda: _after(StripeGateway, "refund", marker),
        "after_refund_recorded": lambda: _before_call(
            jobs.plans, "enqueue_step", marker, queued_after("confirm_refund")
        ),
        # Step 2, the confirmation: after the SMTP server took it, before our record; and
        # after the record, before the close was queued.
        "after_smtp_send": lambda: _after(jobs.effects, "send_message", marker),
        "after_email_recorded": lambda: _before_call(
            jobs.plans, "enqueue_step", marker, queued_after("close")
        ),
        # Step 3, the close: after the ticket was closed, before the commit.
        "after_close": lambda: _after(core.helpdesks.local.LocalHelpdesk, "close", marker),
    }
    points[point]()


def _before_call(owner: Any, name: str, marker: Path, when: Callable[..., bool]) -> None:
    """Die (once) just before ``owner.name`` runs with arguments ``when`` picks."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs):
            _die_once(marker)
        return original(*args, **kwargs)

    setattr(owner, name, wrapped)


POINTS = (
    "before_refund",
    "after_stripe_refund",
    "after_refund_recorded",
    "after_smtp_send",
    "after_email_recorded",
    "after_close",
)


def main(argv: list[str]) -> None:
    """``crash_points POINT MARKER -- billing-desk arguments``."""
    point, marker, separator, *command = argv
    assert separator == "--", "usage: crash_points POINT MARKER -- worker ..."
    arm(point, Path(marker))
    from helpdesk_app.cli import main as billing_desk

    billing_desk(command)


if __name__ == "__main__":
    main(sys.argv[1:])
