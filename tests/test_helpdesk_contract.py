"""One contract, three helpdesks: the built-in one for real, Zendesk and Help Scout against
HTTP fakes on real sockets (tests/fake_helpdesks.py) that answer as their APIs document.

The same tests run on each; then the faults each hosted API documents: 429 with Retry-After,
5xx, dropped connections, Help Scout's per-minute budget and merged conversations, and an
agent's concurrent Zendesk edit caught by a safe update.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from fake_helpdesks import FakeHelpScout, FakeZendesk
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import Ticket, TicketMessage, utcnow
from core.domain import EscalationTarget, HelpdeskName, MessageKind, TicketStatus
from core.errors import HelpdeskError, HelpdeskUnavailable
from core.helpdesks import Helpdesks, LocalHelpdesk
from core.helpdesks.base import Helpdesk
from core.helpdesks.http import MinuteBudget, RetryRules
from core.helpdesks.mirrored import MirroredHelpdesk
from core.settings import Settings
from jobs.runtime import SharedMinuteBudget

CUSTOMER = "pat@example.com"
RESOLUTION = "Resolved — Refund issued"


@dataclass
class Clock:
    """A monotonic clock that the recorded sleeps move."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class Desk:
    """One helpdesk under test, and how to look at what it holds."""

    name: str
    helpdesks: Helpdesks
    clock: Clock
    zendesk: FakeZendesk | None = None
    helpscout: FakeHelpScout | None = None

    def adapter(self, session: Session) -> Helpdesk:
        return self.helpdesks.named(self.name, session)

    def new_ticket(
        self, session: Session, subject: str = "Charged twice", body: str = "I paid twice."
    ) -> int:
        """A ticket as the helpdesk has it when a customer's email opened it; our ID."""
        if self.name == HelpdeskName.LOCAL:
            desk = LocalHelpdesk(session)
            ticket_id = desk.open_ticket(
                subject=subject, requester_email=CUSTOMER, requester_name="Pat"
            )
            desk.add_message(ticket_id, kind=MessageKind.INBOUND, author=CUSTOMER, body=body)
            return ticket_id
        if self.zendesk is not None:
            external = self.zendesk.create_ticket(subject, body, CUSTOMER, "Pat")
        else:
            assert self.helpscout is not None
            external = self.helpscout.create_conversation(subject, body, CUSTOMER, "Pat")
        adapter = self.adapter(session)
        assert isinstance(adapter, MirroredHelpdesk)
        ticket_id, _snapshot = adapter.receive(str(external))
        return ticket_id

    def external(self, session: Session, ticket_id: int) -> int:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None and ticket.external_id is not None
        return int(ticket.external_id)

    def status(self, session: Session, ticket_id: int) -> str:
        """The status as the helpdesk itself shows it."""
        if self.zendesk is not None:
            return str(self.zendesk.ticket(self.external(session, ticket_id))["status"])
        if self.helpscout is not None:
            return str(self.helpscout.conversation(self.external(session, ticket_id))["status"])
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        return ticket.status

    def tags(self, session: Session, ticket_id: int) -> list[str]:
        if self.zendesk is not None:
            return list(self.zendesk.ticket(self.external(session, ticket_id))["tags"])
        if self.helpscout is not None:
            conversation = self.helpscout.conversation(self.external(session, ticket_id))
            return [t["tag"] for t in conversation.get("tags") or []]
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        return list(ticket.tags or [])

    def entries(self, session: Session, ticket_id: int) -> list[tuple[str, str]]:
        """(kind, text) of each entry the helpdesk holds: customer, reply or note."""
        if self.zendesk is not None:
            found = []
            for comment in self.zendesk.comments(self.external(session, ticket_id)):
                author = self.zendesk.user(comment["author_id"])
                if not comment["public"]:
                    kind = "note"
                elif author["role"] == "end-user":
                    kind = "customer"
                else:
                    kind = "reply"
                found.append((kind, comment["body"]))
            return found
        if self.helpscout is not None:
            threads = self.helpscout.threads(self.external(session, ticket_id))
            return [(t["type"], t["body"]) for t in reversed(threads)]
        names = {"inbound": "customer", "outbound": "reply", "note": "note"}
        rows = session.scalars(
            select(TicketMessage).where(TicketMessage.ticket_id == ticket_id)
        ).all()
        return [(names[m.kind], m.body) for m in rows]

    def set_tags(self, session: Session, ticket_id: int, tags: list[str]) -> None:
        """Tags an agent put on the ticket in the helpdesk."""
        if self.zendesk is not None:
            self.zendesk.agent_edit(self.external(session, ticket_id), tags=tags)
        elif self.helpscout is not None:
            self.helpscout.agent_edit(self.external(session, ticket_id), tags=tags)
        else:
            ticket = session.get(Ticket, ticket_id)
            assert ticket is not None
            ticket.tags = tags


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def session(session_factory) -> Iterator[Session]:
    with session_factory() as session:
        yield session


def _helpdesks(settings: Settings, clock: Clock) -> Helpdesks:
    return Helpdesks(
        settings,
        sleep=clock.sleep,
        clock=clock,
        rules=RetryRules(attempts=3, longest_wait=20.0, first_backoff=0.25),
    )


def zendesk_settings(fake: FakeZendesk, **extra: Any) -> Settings:
    return Settings(
        zendesk_subdomain=fake.subdomain,
        zendesk_email=fake.email,
        zendesk_api_token=fake.api_token,
        zendesk_api_url=fake.url,
        **extra,
    )


def helpscout_settings(fake: FakeHelpScout, **extra: Any) -> Settings:
    return Settings(
        helpscout_client_id=fake.client_id,
        helpscout_client_secret=fake.client_secret,
        helpscout_api_url=fake.url,
        helpscout_mailbox_id=str(fake.mailbox_id),
        **extra,
    )


@pytest.fixture(params=["local", "zendesk", "helpscout"])
def desk(request, clock) -> Iterator[Desk]:
    if request.param == "local":
        yield Desk("local", _helpdesks(Settings(), clock), clock)
    elif request.param == "zendesk":
        with FakeZendesk() as fake:
            fake.add_group("Finance")
            yield Desk("zendesk", _helpdesks(zendesk_settings(fake), clock), clock, zendesk=fake)
    else:
        with FakeHelpScout() as fake:
            team = fake.add_team("Finance")
            settings = helpscout_settings(fake, helpscout_teams=(f"finance={team}",))
            yield Desk("helpscout", _helpdesks(settings, clock), clock, helpscout=fake)


# --- the contract ----------------------------------------------------------------------------


def test_a_ticket_reads_with_its_requester_and_thread(desk, session):
    ticket_id = desk.new_ticket(session, body="I was charged twice for March.")
    snapshot = desk.adapter(session).read_ticket(ticket_id)
    assert snapshot.subject == "Charged twice"
    assert snapshot.requester_email == CUSTOMER
    assert snapshot.status is TicketStatus.OPEN
    [first] = snapshot.customer_entries
    assert "charged twice for March" in first.body
    assert first.author_email == CUSTOMER


def test_a_public_reply_and_an_internal_note_land_as_such(desk, session):
    ticket_id = desk.new_ticket(session)
    adapter = desk.adapter(session)
    adapter.add_message(
        ticket_id, kind=MessageKind.OUTBOUND, author="billing@example.com", body="Refund re_1"
    )
    adapter.add_internal_note(ticket_id, "Triage: duplicate_charge <b>", author="mail-agent")
    entries = desk.entries(session, ticket_id)
    assert [k for k, _ in entries] == ["customer", "reply", "note"]
    assert "Refund re_1" in entries[1][1]
    # Help Scout renders text as HTML: what the customer or Stripe wrote is escaped.
    assert "<b>" not in entries[2][1] or desk.name != "helpscout"
    kinds = [e.kind for e in adapter.read_ticket(ticket_id).thread]
    assert kinds == [MessageKind.INBOUND, MessageKind.OUTBOUND, MessageKind.NOTE]


def test_tags_are_added_without_dropping_the_tickets_own(desk, session):
    ticket_id = desk.new_ticket(session)
    desk.set_tags(session, ticket_id, ["vip"])
    adapter = desk.adapter(session)
    adapter.add_tags(ticket_id, ["billing_desk", "billing_duplicate_charge"])
    adapter.add_tags(ticket_id, ["billing_desk"])  # again: no duplicate
    assert sorted(desk.tags(session, ticket_id)) == [
        "billing_desk",
        "billing_duplicate_charge",
        "vip",
    ]


def test_assigning_a_team_puts_the_ticket_in_its_queue(desk, session):
    ticket_id = desk.new_ticket(session)
    desk.adapter(session).assign(ticket_id, team=EscalationTarget.FINANCE)
    ticket = session.get(Ticket, ticket_id)
    assert ticket is not None and ticket.team == "finance"
    if desk.zendesk is not None:
        group = desk.zendesk.ticket(desk.external(session, ticket_id))["group_id"]
        assert group is not None
        assert desk.helpdesks.zendesk.group_id(EscalationTarget.FINANCE) == str(group)
    if desk.helpscout is not None:
        assignee = desk.helpscout.conversation(desk.external(session, ticket_id))["assignee"]
        assert assignee and assignee["first"] == "Finance"


def test_a_team_the_helpdesk_does_not_have_is_a_clear_error(desk, session):
    ticket_id = desk.new_ticket(session)
    adapter = desk.adapter(session)
    if desk.name == "local":  # every team has a queue in the built-in helpdesk
        adapter.assign(ticket_id, team=EscalationTarget.SECURITY)
        assert desk.adapter(session).read_ticket(ticket_id).group == "security"
        return
    with pytest.raises(HelpdeskError, match="Security") as caught:
        adapter.assign(ticket_id, team=EscalationTarget.SECURITY)
    assert not caught.value.retryable


def test_setting_a_status_and_closing(desk, session):
    ticket_id = desk.new_ticket(session)
    adapter = desk.adapter(session)
    adapter.set_status(ticket_id, TicketStatus.PENDING, actor="ann@example.com")
    assert desk.status(session, ticket_id) == "pending"
    assert adapter.close(ticket_id, resolution=RESOLUTION, actor="billing-desk") is None
    assert desk.status(session, ticket_id) == {"zendesk": "solved"}.get(desk.name, "closed")
    ticket = session.get(Ticket, ticket_id)
    assert ticket is not None
    assert (ticket.status, ticket.resolution) == ("closed", RESOLUTION)
    if desk.name != "local":  # the built-in ticket shows its resolution itself
        assert any(RESOLUTION in text for kind, text in desk.entries(session, ticket_id))


def test_finding_the_requesters_ticket_by_subject(desk, session):
    ticket_id = desk.new_ticket(session, subject="Double charge on invoice 42")
    since = utcnow() - timedelta(days=7)
    adapter = desk.adapter(session)
    found = adapter.find_ticket(
        requester_email=CUSTOMER.upper(), subject="Re: Double charge on invoice 42", since=since
    )
    other = adapter.find_ticket(requester_email=CUSTOMER, subject="Something else", since=since)
    assert other is None
    if desk.name == "local":
        assert found is None  # mail threads onto built-in tickets by its own headers
    else:
        assert found == ticket_id


def test_opening_a_ticket_for_a_requester(desk, session):
    adapter = desk.adapter(session)
    ticket_id = adapter.open_ticket(
        subject="Refund please", requester_email=CUSTOMER, requester_name="Pat", body="Hello"
    )
    snapshot = adapter.read_ticket(ticket_id)
    assert (snapshot.subject, snapshot.requester_email) == ("Refund please", CUSTOMER)
    if desk.name != "local":  # locally the caller adds the email it came from
        assert [e.body for e in snapshot.thread] == ["Hello"]


def test_a_long_thread_is_read_across_pages(desk, session):
    ticket_id = desk.new_ticket(session)
    adapter = desk.adapter(session)
    external = desk.external(session, ticket_id) if desk.name != "local" else 0
    for n in range(110 if desk.zendesk else 30):
        if desk.zendesk is not None:
            desk.zendesk.add_comment(external, f"follow-up {n}", CUSTOMER)
        elif desk.helpscout is not None:
            desk.helpscout.add_customer_reply(external, f"follow-up {n}")
        else:
            adapter.add_message(
                ticket_id, kind=MessageKind.INBOUND, author=CUSTOMER, body=f"follow-up {n}"
            )
    entries = adapter.read_ticket(ticket_id).customer_entries
    count = 110 if desk.zendesk else 30
    assert len(entries) == count + 1
    assert "follow-up 0" in entries[1].body and f"follow-up {count - 1}" in entries[-1].body


# --- Zendesk's faults --------------------------------------------------------------------


@pytest.fixture
def zendesk(fake_zendesk, clock) -> Desk:
    return Desk("zendesk", _helpdesks(zendesk_settings(fake_zendesk), clock), clock, fake_zendesk)


def test_zendesk_429_is_waited_out_as_retry_after_says(zendesk, session):
    ticket_id = zendesk.new_ticket(session)
    zendesk.zendesk.fail_next("PUT", r"/tags\.json$", 429, headers={"Retry-After": "7"})
    zendesk.adapter(session).add_tags(ticket_id, ["billing_desk"])
    assert 7.0 in zendesk.clock.sleeps
    assert "billing_desk" in zendesk.tags(session, ticket_id)
    assert len(zendesk.zendesk.requests_to("PUT", r"/tags\.json$")) == 2


def test_zendesk_429_longer_than_a_worker_should_sleep_goes_to_the_job(zendesk, session):
    ticket_id = zendesk.new_ticket(session)
    zendesk.zendesk.fail_next("PUT", r"/tickets/\d+\.json$", 429, headers={"Retry-After": "600"})
    with pytest.raises(HelpdeskUnavailable) as caught:
        zendesk.adapter(session).add_internal_note(ticket_id, "note", author="billing-desk")
    assert caught.value.retryable and caught.value.retry_after == 600.0
    assert zendesk.clock.sleeps == []
    assert [k for k, _ in zendesk.entries(session, ticket_id)] == ["customer"]
    assert (
        session.scalar(select(TicketMessage.id).where(TicketMessage.kind == MessageKind.NOTE))
        is None
    )  # nothing mirrored: the step is retryable, not half done


def test_zendesk_5xx_and_dropped_connections_on_reads_are_retried(zendesk, session):
    ticket_id = zendesk.new_ticket(session)
    zendesk.zendesk.fail_next("GET", r"/comments\.json$", 503)
    zendesk.zendesk.fail_next("GET", r"/tickets/\d+\.json$", None)  # connection reset
    snapshot = zendesk.adapter(session).read_ticket(ticket_id)
    assert len(snapshot.customer_entries) == 1
    assert zendesk.clock.sleeps  # backed off


def test_zendesk_a_comment_is_never_sent_twice_by_a_retry(zendesk, session):
    ticket_id = zendesk.new_ticket(session)
    zendesk.zendesk.fail_next("PUT", r"/tickets/\d+\.json$", 500)
    with pytest.raises(HelpdeskUnavailable):
        zendesk.adapter(session).add_message(
            ticket_id, kind=MessageKind.OUTBOUND, author="billing-desk", body="Refund re_1"
        )
    assert len(zendesk.zendesk.requests_to("PUT", r"/tickets/\d+\.json$")) == 1


def test_zendesk_an_agents_concurrent_edit_is_not_overwritten(zendesk, session):
    ticket_id = zendesk.new_ticket(session)
    adapter = zendesk.adapter(session)
    adapter.add_tags(ticket_id, ["billing_desk"])  # our last write: the version we know
    external = zendesk.external(session, ticket_id)
    zendesk.zendesk.agent_edit(external, status="pending")  # an agent asks the customer first
    left_open = adapter.close(ticket_id, resolution=RESOLUTION, actor="billing-desk")
    assert left_open is not None and "changed in Zendesk" in left_open
    assert zendesk.zendesk.ticket(external)["status"] == "pending"
    [solve] = [
        r for r in zendesk.zendesk.requests_to("PUT", r"/tickets/\d+\.json$") if r.status == 409
    ]
    assert solve.body["ticket"]["safe_update"] is True
    ticket = session.get(Ticket, ticket_id)
    assert ticket is not None and ticket.status == "open"
    assert zendesk.entries(session, ticket_id)[-1][0] == "note"


def test_zendesk_solving_after_only_our_own_writes_goes_through(zendesk, session):
    ticket_id = zendesk.new_ticket(session)
    adapter = zendesk.adapter(session)
    adapter.add_tags(ticket_id, ["billing_desk"])
    adapter.add_message(ticket_id, kind=MessageKind.OUTBOUND, author="b", body="Refund re_1")
    assert adapter.close(ticket_id, resolution=RESOLUTION, actor="billing-desk") is None
    assert zendesk.zendesk.ticket(zendesk.external(session, ticket_id))["status"] == "solved"


# --- Help Scout's faults -----------------------------------------------------------------


@pytest.fixture
def helpscout(fake_helpscout, clock) -> Desk:
    settings = helpscout_settings(fake_helpscout)
    return Desk("helpscout", _helpdesks(settings, clock), clock, helpscout=fake_helpscout)


def test_helpscout_adapters_share_one_client_and_one_token(helpscout, session_factory):
    for _ in range(3):
        with session_factory() as session:
            ticket_id = helpscout.new_ticket(session)
            helpscout.adapter(session).add_internal_note(ticket_id, "note", author="b")
            session.commit()
    assert helpscout.helpscout.tokens_granted == 1
    assert helpscout.helpdesks.named("helpscout", session).client is helpscout.helpdesks.helpscout  # type: ignore[attr-defined]


def test_helpscout_a_revoked_token_is_renewed_once(helpscout, session):
    ticket_id = helpscout.new_ticket(session)
    helpscout.helpscout.expire_tokens()
    helpscout.adapter(session).add_internal_note(ticket_id, "note", author="b")
    assert helpscout.helpscout.tokens_granted == 2


def test_helpscout_per_minute_budget_is_kept_before_help_scout_refuses(session):
    clock = Clock()
    with FakeHelpScout(per_minute=12, clock=clock) as fake:
        helpdesks = Helpdesks(
            helpscout_settings(fake),
            sleep=clock.sleep,
            clock=clock,
            helpscout_budget=MinuteBudget(12, clock=clock),
            rules=RetryRules(longest_wait=60.0),  # a worker that may wait out a minute
        )
        desk = Desk("helpscout", helpdesks, clock, helpscout=fake)
        ticket_id = desk.new_ticket(session)
        adapter = desk.adapter(session)
        for n in range(8):  # a write counts as two requests
            adapter.add_internal_note(ticket_id, f"note {n}", author="b")
        assert clock.sleeps and max(clock.sleeps) <= 60.0  # waited for the window...
        assert 429 not in [r.status for r in fake.requests]  # ...instead of being refused
        assert len(fake.requests_to("POST", r"/notes$")) == 8


def test_helpscout_a_spent_budget_is_not_waited_out_where_waiting_is_short(session):
    """A caller that may wait only a moment (a web request) gets a retryable error at once."""
    clock = Clock()
    with FakeHelpScout(clock=clock) as fake:
        helpdesks = Helpdesks(
            helpscout_settings(fake),
            sleep=clock.sleep,
            clock=clock,
            helpscout_budget=MinuteBudget(5, clock=clock),
            rules=RetryRules(attempts=2, longest_wait=2.0),
        )
        desk = Desk("helpscout", helpdesks, clock, helpscout=fake)
        ticket_id = desk.new_ticket(session)  # the token (2), the conversation and threads
        with pytest.raises(HelpdeskUnavailable, match="budget") as caught:
            desk.adapter(session).add_internal_note(ticket_id, "note", author="b")
        assert caught.value.retry_after and caught.value.retry_after > 2.0
        assert clock.sleeps == [] and fake.requests_to("POST", r"/notes$") == []


def test_helpscout_429_is_waited_out(helpscout, session):
    ticket_id = helpscout.new_ticket(session)
    helpscout.helpscout.fail_next("POST", r"/notes$", 429, headers={"X-RateLimit-Retry-After": "3"})
    helpscout.adapter(session).add_internal_note(ticket_id, "note", author="b")
    assert 3.0 in helpscout.clock.sleeps
    assert helpscout.entries(session, ticket_id)[-1][0] == "note"


def test_helpscout_a_note_is_never_sent_twice_by_a_retry(helpscout, session):
    ticket_id = helpscout.new_ticket(session)
    helpscout.helpscout.fail_next("POST", r"/notes$", 502)
    with pytest.raises(HelpdeskUnavailable):
        helpscout.adapter(session).add_internal_note(ticket_id, "note", author="b")
    assert len(helpscout.helpscout.requests_to("POST", r"/notes$")) == 1


def test_helpscout_a_merged_conversation_is_followed_and_our_row_follows(helpscout, session):
    old_id = helpscout.new_ticket(session, body="first")
    survivor = helpscout.helpscout.create_conversation("Charged twice", "second", CUSTOMER)
    old_external = helpscout.external(session, old_id)
    helpscout.helpscout.merge(old_external, survivor)
    adapter = helpscout.adapter(session)
    adapter.add_internal_note(old_id, "after the merge", author="b")
    assert helpscout.external(session, old_id) == survivor
    assert any("after the merge" in t["body"] for t in helpscout.helpscout.threads(survivor))
    assert adapter.read_ticket(old_id).external_id == str(survivor)


def test_helpscout_a_redirect_off_its_host_is_refused(helpscout, session):
    ticket_id = helpscout.new_ticket(session)
    helpscout.helpscout.fail_next(
        "GET", r"/v2/conversations/\d+$", 301, headers={"Location": "https://evil.test/v2/x"}
    )
    with pytest.raises(HelpdeskError, match="off its API host"):
        helpscout.adapter(session).read_ticket(ticket_id)


def test_settings_name_what_a_hosted_helpdesk_is_missing(session):
    helpdesks = Helpdesks(replace(Settings(), zendesk_subdomain="acme"))
    with pytest.raises(Exception, match="ZENDESK_EMAIL"):
        helpdesks.named("zendesk", session)
    with pytest.raises(Exception, match="HELPSCOUT_CLIENT_ID"):
        helpdesks.named("helpscout", session)
    with pytest.raises(HelpdeskError, match="unknown helpdesk"):
        helpdesks.named("freshdesk", session)


def test_the_shared_budget_is_one_count_across_processes(rt):
    """Two processes' budgets on one Redis: the second sees the first's requests."""

    def at() -> float:
        return 1_800_000_010.0  # ten seconds into a minute

    first = SharedMinuteBudget(rt.redis, "helpscout-test", per_minute=4, clock=at)
    second = SharedMinuteBudget(rt.redis, "helpscout-test", per_minute=4, clock=at)
    assert [first.acquire(2), second.acquire(2)] == [0.0, 0.0]
    assert first.acquire(1) == 50.0  # the minute is spent: the next slot is in the next one
    other = SharedMinuteBudget(rt.redis, "zendesk-test", per_minute=4, clock=at)
    assert other.acquire(1) == 0.0  # each account has its own


def test_helpdesk_check_says_what_is_connected_and_what_is_missing(
    fake_zendesk, fake_helpscout, monkeypatch
):
    """`billing-desk helpdesk check`, as a team runs it while connecting."""
    from helpdesk_app.cli import cli

    fake_zendesk.add_group("Finance")
    monkeypatch.setenv("HELPDESK", "zendesk")
    for name, value in {
        "ZENDESK_SUBDOMAIN": fake_zendesk.subdomain,
        "ZENDESK_EMAIL": fake_zendesk.email,
        "ZENDESK_API_TOKEN": fake_zendesk.api_token,
        "ZENDESK_API_URL": fake_zendesk.url,
        "HELPSCOUT_CLIENT_ID": fake_helpscout.client_id,
        "HELPSCOUT_CLIENT_SECRET": fake_helpscout.client_secret,
        "HELPSCOUT_API_URL": fake_helpscout.url,
        "HELPSCOUT_MAILBOX_ID": str(fake_helpscout.mailbox_id),
    }.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    zendesk = runner.invoke(cli, ["helpdesk", "check"])
    assert zendesk.exit_code == 0, zendesk.output
    assert "signed in as Acme Agent (admin)" in zendesk.output
    assert "Finance: group" in zendesk.output and "Security: no group" in zendesk.output
    assert "ZENDESK_WEBHOOK_SECRET: NOT SET" in zendesk.output

    monkeypatch.setenv("HELPDESK", "helpscout")
    helpscout = runner.invoke(cli, ["helpdesk", "check"])
    assert helpscout.exit_code == 0, helpscout.output
    assert f"mailbox {fake_helpscout.mailbox_id}: Billing" in helpscout.output

    monkeypatch.setenv("HELPDESK", "zendesk")
    monkeypatch.setenv("ZENDESK_API_TOKEN", "wrong")
    refused = runner.invoke(cli, ["helpdesk", "check"])
    assert isinstance(refused.exception, HelpdeskError)  # main() prints it as one line
    assert "401" in str(refused.exception) and "wrong" not in str(refused.exception)
