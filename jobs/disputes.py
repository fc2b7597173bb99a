"""Disputes (chargebacks) as tickets: the first event opens or joins the customer's ticket and
escalates to Finance; later events note the new status once each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobs import runtime


def dispute_event(rt: runtime.Runtime, event_type: str, dispute: Mapping[str, Any]) -> None:
    """Handle one ``charge.dispute.*`` event; safe to call twice and out of order."""
    del rt, event_type, dispute
