"""Helpdesk adapters behind one contract (``base.Helpdesk``): the built-in helpdesk, Zendesk
and Help Scout. ``Helpdesks`` is built once per process by its composition root (the worker
runtime, the web app) and holds each hosted helpdesk's client: its HTTP pool, its access token
and its request budget, shared by every call. A ticket's own ``helpdesk`` column says which
adapter serves it; ``HELPDESK`` says where the team works (where mail intake's tickets live).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import cached_property

import requests
from sqlalchemy.orm import Session

from core.db.models import Ticket
from core.domain import EscalationTarget, HelpdeskName
from core.errors import ConfigError, HelpdeskError, NotFound
from core.helpdesks.base import Helpdesk
from core.helpdesks.helpscout import HelpScoutClient, HelpScoutHelpdesk
from core.helpdesks.http import MinuteBudget, RequestBudget, RetryRules, Transport
from core.helpdesks.local import LocalHelpdesk
from core.helpdesks.zendesk import ZendeskClient, ZendeskHelpdesk
from core.settings import Settings

SUPPORTED = tuple(HelpdeskName)


def _required(settings: Settings, *names: str) -> list[str]:
    """The named settings' values, or a ConfigError naming the first one missing."""
    values: list[str] = []
    for name in names:
        value = getattr(settings, name, None)
        if not value:
            raise ConfigError(name.upper(), "is not set")
        values.append(value)
    return values


def _pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    """``team=value`` settings as a mapping."""
    return {
        name.strip(): value.strip()
        for name, _, value in (p.partition("=") for p in pairs)
        if name.strip() and value.strip()
    }


class Helpdesks:
    """The process's helpdesk adapters: hosted clients built on first use, then reused."""

    def __init__(
        self,
        settings: Settings,
        *,
        http: requests.Session | None = None,
        helpscout_budget: RequestBudget | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rules: RetryRules | None = None,
    ) -> None:
        self.settings = settings
        self._http = http
        self._helpscout_budget = helpscout_budget
        self._sleep = sleep
        self._clock = clock
        self._rules = rules
        self._lock = threading.Lock()

    @property
    def home(self) -> str:
        """Where the team works: mail intake opens and finds its tickets there."""
        return self.settings.helpdesk

    @cached_property
    def zendesk(self) -> ZendeskClient:
        """The Zendesk account's client (ZENDESK_SUBDOMAIN, ZENDESK_EMAIL, ZENDESK_API_TOKEN)."""
        subdomain, email, api_token = _required(
            self.settings, "zendesk_subdomain", "zendesk_email", "zendesk_api_token"
        )
        return ZendeskClient(
            subdomain=subdomain,
            email=email,
            api_token=api_token,
            base_url=self.settings.zendesk_api_url,
            groups=_pairs(self.settings.zendesk_groups),
            transport=Transport("Zendesk", http=self._http, rules=self._rules, sleep=self._sleep),
        )

    @cached_property
    def helpscout(self) -> HelpScoutClient:
        """The Help Scout account's client (HELPSCOUT_CLIENT_ID, HELPSCOUT_CLIENT_SECRET)."""
        client_id, client_secret = _required(
            self.settings, "helpscout_client_id", "helpscout_client_secret"
        )
        budget = self._helpscout_budget or MinuteBudget(
            self.settings.helpscout_requests_per_minute, clock=self._clock
        )
        return HelpScoutClient(
            client_id=client_id,
            client_secret=client_secret,
            base_url=self.settings.helpscout_api_url,
            mailbox_id=self.settings.helpscout_mailbox_id,
            teams=_pairs(self.settings.helpscout_teams),
            clock=self._clock,
            transport=Transport(
                "Help Scout", http=self._http, budget=budget, rules=self._rules, sleep=self._sleep
            ),
        )

    def check(self) -> list[str]:
        """One line per thing the team's helpdesk needs, each checked against its API now;
        a HelpdeskError or ConfigError names what is wrong."""
        if self.home == HelpdeskName.ZENDESK:
            return self._check_zendesk()
        if self.home == HelpdeskName.HELPSCOUT:
            return self._check_helpscout()
        return ["the built-in helpdesk: nothing to connect"]

    def _check_zendesk(self) -> list[str]:
        client = self.zendesk
        me = (
            client.call(
                "GET", "/api/v2/users/me.json", doing="checking the API token", repeatable=True
            ).get("user")
            or {}
        )
        if me.get("role") not in ("agent", "admin"):
            raise HelpdeskError(
                "ZENDESK_EMAIL/ZENDESK_API_TOKEN: Zendesk does not know this token's user as an "
                "agent"
            )
        lines = [f"Zendesk {client.subdomain}: signed in as {me.get('name')} ({me['role']})"]
        for team in EscalationTarget:
            group = client.group_id(team)
            found = f"group {group}" if group else "no group (create one, or ZENDESK_GROUPS)"
            lines.append(f"  {team.label}: {found}")
        webhook = "set" if self.settings.zendesk_webhook_secrets else "NOT SET"
        lines.append(f"  ZENDESK_WEBHOOK_SECRET: {webhook}")
        return lines

    def _check_helpscout(self) -> list[str]:
        client = self.helpscout
        me, _url = client.get("/v2/users/me", doing="checking the app's credentials")
        name = f"{me.get('firstName') or ''} {me.get('lastName') or ''}".strip()
        lines = [f"Help Scout: signed in as {name or me.get('email')}"]
        mailbox = self.settings.helpscout_mailbox_id
        if mailbox:
            box, _url = client.get(
                f"/v2/mailboxes/{mailbox}", doing="checking HELPSCOUT_MAILBOX_ID"
            )
            lines.append(f"  mailbox {box.get('id')}: {box.get('name')} <{box.get('email')}>")
        else:
            lines.append("  HELPSCOUT_MAILBOX_ID: NOT SET (a BCC copy cannot be matched)")
        for team in EscalationTarget:
            user = client.teams.get(str(team))
            lines.append(
                f"  {team.label}: {f'team {user}' if user else 'no team (HELPSCOUT_TEAMS)'}"
            )
        webhook = "set" if self.settings.helpscout_webhook_secrets else "NOT SET"
        lines.append(f"  HELPSCOUT_WEBHOOK_SECRET: {webhook}")
        return lines

    def named(self, name: str, session: Session) -> Helpdesk:
        """The adapter of the helpdesk called ``name``, over this session."""
        if name == HelpdeskName.LOCAL:
            return LocalHelpdesk(session)
        with self._lock:  # two threads' first use builds one client
            if name == HelpdeskName.ZENDESK:
                return ZendeskHelpdesk(session, self.zendesk)
            if name == HelpdeskName.HELPSCOUT:
                return HelpScoutHelpdesk(session, self.helpscout)
        raise HelpdeskError(f"unknown helpdesk {name!r} (supported: {', '.join(SUPPORTED)})")

    def for_ticket(self, session: Session, ticket_id: int) -> Helpdesk:
        """The adapter for the helpdesk that owns this ticket."""
        ticket = session.get(Ticket, ticket_id)
        if ticket is None:
            raise NotFound(f"ticket {ticket_id} does not exist")
        return self.named(ticket.helpdesk, session)

    def for_home(self, session: Session) -> Helpdesk:
        """The adapter of the helpdesk the team works in."""
        return self.named(self.home, session)


__all__ = [
    "SUPPORTED",
    "HelpScoutClient",
    "HelpScoutHelpdesk",
    "Helpdesk",
    "Helpdesks",
    "LocalHelpdesk",
    "ZendeskClient",
    "ZendeskHelpdesk",
]
