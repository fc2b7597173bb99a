"""Helpdesk adapters behind one protocol, chosen by a ticket's own ``helpdesk`` column: the
built-in helpdesk, or Zendesk and Help Scout for the tickets mirrored from them."""

from __future__ import annotations

import requests
from sqlalchemy.orm import Session

from core.db.models import Ticket
from core.domain import HelpdeskName
from core.errors import ConfigError, HelpdeskError, NotFound
from core.helpdesks.base import Helpdesk
from core.helpdesks.helpscout import HelpScoutHelpdesk
from core.helpdesks.local import LocalHelpdesk
from core.helpdesks.zendesk import ZendeskHelpdesk
from core.settings import Settings

SUPPORTED = tuple(HelpdeskName)


def _required(settings: Settings | None, *names: str) -> list[str]:
    """The named settings' values, or a ConfigError naming the first one missing."""
    values: list[str] = []
    for name in names:
        value = getattr(settings, name, None) if settings is not None else None
        if not value:
            raise ConfigError(name.upper(), "is not set")
        values.append(value)
    return values


def make_helpdesk(
    name: str,
    session: Session,
    settings: Settings | None = None,
    http: requests.Session | None = None,
) -> Helpdesk:
    """The helpdesk adapter called ``name``; hosted helpdesks take credentials from settings."""
    if name == HelpdeskName.LOCAL:
        return LocalHelpdesk(session)
    if name == HelpdeskName.ZENDESK:
        subdomain, email, api_token = _required(
            settings, "zendesk_subdomain", "zendesk_email", "zendesk_api_token"
        )
        return ZendeskHelpdesk(
            session, subdomain=subdomain, email=email, api_token=api_token, http=http
        )
    if name == HelpdeskName.HELPSCOUT:
        client_id, client_secret = _required(
            settings, "helpscout_client_id", "helpscout_client_secret"
        )
        return HelpScoutHelpdesk(
            session, client_id=client_id, client_secret=client_secret, http=http
        )
    raise HelpdeskError(f"unknown helpdesk {name!r} (supported: {', '.join(SUPPORTED)})")


def helpdesk_for_ticket(
    session: Session,
    ticket_id: int,
    settings: Settings,
    http: requests.Session | None = None,
) -> Helpdesk:
    """The adapter for the helpdesk that owns this ticket: local, Zendesk or Help Scout."""
    ticket = session.get(Ticket, ticket_id)
    if ticket is None:
        raise NotFound(f"ticket {ticket_id} does not exist")
    return make_helpdesk(ticket.helpdesk, session, settings, http)


__all__ = [
    "SUPPORTED",
    "HelpScoutHelpdesk",
    "Helpdesk",
    "LocalHelpdesk",
    "ZendeskHelpdesk",
    "helpdesk_for_ticket",
    "make_helpdesk",
]
