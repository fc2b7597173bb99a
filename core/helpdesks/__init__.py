"""Helpdesk adapters behind one protocol, chosen by the HELPDESK setting."""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.errors import ConfigError
from core.helpdesks.base import Helpdesk
from core.helpdesks.local import LocalHelpdesk

SUPPORTED = ("local",)


def make_helpdesk(name: str, session: Session) -> Helpdesk:
    """The helpdesk adapter named by the HELPDESK setting."""
    if name == "local":
        return LocalHelpdesk(session)
    raise ConfigError("HELPDESK", f"unknown helpdesk {name!r} (supported: {', '.join(SUPPORTED)})")


__all__ = ["Helpdesk", "LocalHelpdesk", "make_helpdesk"]
