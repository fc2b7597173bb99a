"""SQLAlchemy models: the tables every process (web, worker, poller) shares.

Money columns are integer minor units beside a currency code. Times are stored as UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import JSON

from core.domain import HelpdeskName, InboundStatus, OutboundStatus


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as naive UTC and gives them back aware, on SQLite and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Base class of all models."""


class Ticket(Base):
    """A support conversation: one of the built-in helpdesk's, or a mirror of a Zendesk or
    Help Scout ticket that an agent opened the sidebar on (``helpdesk`` + ``external_id``)."""

    __tablename__ = "tickets"
    __table_args__ = (
        UniqueConstraint(
            "helpdesk", "helpdesk_account", "external_id", name="uq_tickets_helpdesk_external"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    helpdesk: Mapped[str] = mapped_column(String(20), default=HelpdeskName.LOCAL)
    helpdesk_account: Mapped[str] = mapped_column(String(200), default="")
    external_id: Mapped[str | None] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(998))
    requester_email: Mapped[str] = mapped_column(String(320), index=True)
    requester_name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="open", index=True)
    resolution: Mapped[str | None] = mapped_column(String(200))
    category: Mapped[str | None] = mapped_column(String(40))
    category_confidence: Mapped[float | None] = mapped_column(Float)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64))
    # How stripe_customer_id was found: "explicit", "tenant" or "email" (email alone is not
    # proof of identity); an agent's confirmation is recorded in customer_verified_by.
    customer_match: Mapped[str | None] = mapped_column(String(20))
    customer_verified_by: Mapped[str | None] = mapped_column(String(320))
    customer_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    organization: Mapped[str | None] = mapped_column(String(200))
    # What the mail agent read in the customer's words: amounts, dates, last 4, Stripe IDs...
    entities: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Why automation stood back (e.g. the tenant ID in the email names another customer).
    automation_blocked: Mapped[str | None] = mapped_column(Text)
    # Who works the ticket: a person (their email), and the team queue an escalation put it in.
    assignee: Mapped[str | None] = mapped_column(String(320), index=True)
    team: Mapped[str | None] = mapped_column(String(40), index=True)
    # A hosted ticket's version after our own last write (Zendesk's updated_at): a safe update
    # against it is refused when anyone else changed the ticket since.
    helpdesk_version: Mapped[str | None] = mapped_column(String(40))
    # The built-in helpdesk's tags (a hosted helpdesk keeps its own; we add ours there).
    tags: Mapped[list[str] | None] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    messages: Mapped[list[TicketMessage]] = relationship(
        back_populates="ticket", order_by="TicketMessage.id"
    )


class TicketMessage(Base):
    """One entry in a ticket's thread: a customer email, our reply, or an internal note."""

    __tablename__ = "ticket_messages"
    __table_args__ = (
        UniqueConstraint("ticket_id", "external_id", name="uq_ticket_messages_external"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    author: Mapped[str] = mapped_column(String(320))
    body: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(998), index=True)
    # One inbound email makes at most one message: a re-run of its job finds this row.
    inbound_email_id: Mapped[int | None] = mapped_column(
        ForeignKey("inbound_emails.id"), unique=True
    )
    # The hosted helpdesk's own ID of the entry this one mirrors (a Zendesk comment, a Help
    # Scout thread): each is recorded once, however often its webhook arrives.
    external_id: Mapped[str | None] = mapped_column(String(64))
    # Attachments of a customer email, listed (filename, content type, size), never stored.
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    ticket: Mapped[Ticket] = relationship(back_populates="messages")


class InboundEmail(Base):
    """A raw email exactly as fetched, stored before the mailbox cursor moves past it."""

    __tablename__ = "inbound_emails"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(400))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[str | None] = mapped_column(String(998))
    # Message-ID plus a hash of the raw bytes: the same mail fetched twice is stored once,
    # and two different mails sharing a Message-ID (or having none) are both kept.
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default=InboundStatus.RECEIVED, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MailboxCursor(Base):
    """How far the poller has stored a mailbox: UIDs are only meaningful within a UIDVALIDITY."""

    __tablename__ = "mailbox_cursors"

    mailbox: Mapped[str] = mapped_column(String(400), primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Plan(Base):
    """What a playbook (or an agent's confirmation) decided to do for a ticket, as ordered
    steps (``Action`` rows) that one runner advances a step at a time."""

    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    # One plan per decision: the email whose triage made it, or the agent's confirmed proposal.
    key: Mapped[str] = mapped_column(String(255), unique=True)
    source: Mapped[str] = mapped_column(String(320))  # "mail-agent" or the agent's email
    title: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    steps: Mapped[list[Action]] = relationship(back_populates="plan", order_by="Action.position")


class Action(Base):
    """One step of a plan, done to Stripe, a ticket or a customer on someone's behalf; its
    idempotency key makes it happen once."""

    __tablename__ = "actions"
    __table_args__ = (UniqueConstraint("plan_id", "position", name="uq_actions_plan_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id"), index=True)
    position: Mapped[int | None] = mapped_column(Integer)  # its place in the plan, from 0
    kind: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    requested_by: Mapped[str] = mapped_column(String(320))
    # The requester's role when they asked (None: the mail agent): what policy weighs again
    # when a worker judges the step just before it runs.
    requester_role: Mapped[str | None] = mapped_column(String(40))
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64), index=True)
    stripe_charge_id: Mapped[str | None] = mapped_column(String(64), index=True)
    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    reason: Mapped[str | None] = mapped_column(String(40))
    policy_reason: Mapped[str | None] = mapped_column(Text)
    stripe_object_id: Mapped[str | None] = mapped_column(String(64))
    # Kind-specific inputs (subscription, cancel mode, days, escalation target, note text...).
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Set when policy sends the action for approval: the role that must decide, and who did.
    approval_role: Mapped[str | None] = mapped_column(String(40))
    decided_by: Mapped[str | None] = mapped_column(String(320))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    decision_note: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    # When a worker last started it, and how often: more than once means a retry, or a re-run
    # after a worker died (every step is idempotent, so a re-run changes nothing twice).
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    plan: Mapped[Plan | None] = relationship(back_populates="steps")


class Agent(Base):
    """A person who works tickets; their role is ours to set, never taken from a helpdesk."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(40))
    # Only for the built-in helpdesk's sign-in; None for agents who come through Zendesk etc.
    password_hash: Mapped[str | None] = mapped_column(String(400))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    identities: Mapped[list[AgentIdentity]] = relationship(back_populates="agent")


class AgentIdentity(Base):
    """Which helpdesk user (in which account) is which of our agents."""

    __tablename__ = "agent_identities"
    __table_args__ = (UniqueConstraint("helpdesk", "account", "external_user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"), index=True)
    helpdesk: Mapped[str] = mapped_column(String(20))
    account: Mapped[str] = mapped_column(String(200))
    external_user_id: Mapped[str] = mapped_column(String(64))

    agent: Mapped[Agent] = relationship(back_populates="identities")


class Escalation(Base):
    """A ticket handed to a team per the escalation matrix, with the SLA it must meet."""

    __tablename__ = "escalations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    action_id: Mapped[int | None] = mapped_column(ForeignKey("actions.id"), unique=True)
    target: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(320))
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(20), default="open", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    picked_up_by: Mapped[str | None] = mapped_column(String(320))
    picked_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set once, when the SLA check first finds it past due: one re-escalation per breach.
    breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEvent(Base):
    """One line of the append-only audit trail: who did what, to what, when, and why."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(320))
    event: Mapped[str] = mapped_column(String(80))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    action_id: Mapped[int | None] = mapped_column(ForeignKey("actions.id"))
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class OutboundEmail(Base):
    """An email we send; its key makes a retried job send it once."""

    __tablename__ = "outbound_emails"
    __table_args__ = (UniqueConstraint("dedupe_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(255))
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    action_id: Mapped[int | None] = mapped_column(ForeignKey("actions.id"))
    to_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(998))
    message_id: Mapped[str] = mapped_column(String(998))
    status: Mapped[str] = mapped_column(String(20), default=OutboundStatus.PENDING)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SpentToken(Base):
    """A one-time token that has been used (a Zendesk bootstrap, an update-card link).

    The unique key is what makes "once" hold across several web processes: a second use,
    even a simultaneous one, cannot insert the same (kind, token id) again.
    """

    __tablename__ = "spent_tokens"
    __table_args__ = (UniqueConstraint("kind", "token_id", name="uq_spent_tokens_kind_token"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    token_id: Mapped[str] = mapped_column(String(64))
    # What the first use opened (a ticket, a customer's portal), for whoever investigates.
    bound_to: Mapped[str | None] = mapped_column(String(200))
    spent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SignInAttempt(Base):
    """One try at the built-in helpdesk's sign-in, counted for lockouts by every web process."""

    __tablename__ = "sign_in_attempts"
    __table_args__ = (
        Index("ix_sign_in_attempts_email_at", "email", "at"),
        Index("ix_sign_in_attempts_client_address_at", "client_address", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Lowercased and trimmed, so "Ann@Example.com " and "ann@example.com" are one account.
    email: Mapped[str] = mapped_column(String(320))
    client_address: Mapped[str] = mapped_column(String(64))
    succeeded: Mapped[bool] = mapped_column(default=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AgentSession(Base):
    """A signed-in browser of the built-in helpdesk; revoking it ends that sign-in at once.

    The cookie carries a random id; only its SHA-256 is stored here, so reading this table
    does not let anyone sign in.
    """

    __tablename__ = "agent_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    agent: Mapped[Agent] = relationship()


# --- the Stripe mirror (flow C: webhooks and reconcile keep it; it never goes backwards) -----


class HelpdeskEvent(Base):
    """A verified Zendesk or Help Scout webhook delivery, recorded once by its key before it is
    queued: a retry or a replay of the same delivery finds this row and does nothing more."""

    __tablename__ = "helpdesk_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    helpdesk: Mapped[str] = mapped_column(String(20))
    account: Mapped[str] = mapped_column(String(200))
    external_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(40))
    entry_id: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    outcome: Mapped[str | None] = mapped_column(Text)


class StripeEvent(Base):
    """A webhook event as Stripe sent it, recorded once by its ID before it is handled."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # evt_...
    type: Mapped[str] = mapped_column(String(100), index=True)
    # Stripe's own clock (unix seconds): what orders events, never our arrival time.
    created: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    payload: Mapped[str] = mapped_column(Text)  # the raw, verified body
    status: Mapped[str] = mapped_column(String(20), default="received", index=True)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class _MirroredObject:
    """What every mirrored Stripe object keeps: its ID and customer, the object itself, and
    the Stripe time of the newest state applied (an event's ``created``, or when reconcile
    read it), which an older event can never overwrite."""

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    event_created: Mapped[int] = mapped_column(BigInteger, default=0)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Gone from Stripe (a deleted customer, or reconcile no longer finds it).
    deleted: Mapped[bool] = mapped_column(default=False)


class StripeCustomer(_MirroredObject, Base):
    """A Stripe customer, mirrored."""

    __tablename__ = "stripe_customers"

    email: Mapped[str | None] = mapped_column(String(320), index=True)
    name: Mapped[str | None] = mapped_column(String(300))


class StripeSubscription(_MirroredObject, Base):
    """A Stripe subscription, mirrored."""

    __tablename__ = "stripe_subscriptions"

    status: Mapped[str | None] = mapped_column(String(40))
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    current_period_end: Mapped[int | None] = mapped_column(BigInteger)
    created: Mapped[int | None] = mapped_column(BigInteger)


class StripeCharge(_MirroredObject, Base):
    """A Stripe charge, mirrored."""

    __tablename__ = "stripe_charges"

    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    status: Mapped[str | None] = mapped_column(String(40))
    amount_refunded: Mapped[int | None] = mapped_column(BigInteger)
    disputed: Mapped[bool] = mapped_column(default=False)
    failure_code: Mapped[str | None] = mapped_column(String(100))
    created: Mapped[int | None] = mapped_column(BigInteger)


class StripeRefund(_MirroredObject, Base):
    """A Stripe refund, mirrored."""

    __tablename__ = "stripe_refunds"

    charge_id: Mapped[str | None] = mapped_column(String(255), index=True)
    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    status: Mapped[str | None] = mapped_column(String(40))
    reason: Mapped[str | None] = mapped_column(String(60))
    created: Mapped[int | None] = mapped_column(BigInteger)


class StripeInvoice(_MirroredObject, Base):
    """A Stripe invoice, mirrored."""

    __tablename__ = "stripe_invoices"

    subscription_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(40))
    amount_due: Mapped[int | None] = mapped_column(BigInteger)
    amount_paid: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    created: Mapped[int | None] = mapped_column(BigInteger)


class StripeDispute(_MirroredObject, Base):
    """A Stripe dispute, mirrored; ``ticket_id`` is the ticket jobs.disputes opened for it."""

    __tablename__ = "stripe_disputes"

    charge_id: Mapped[str | None] = mapped_column(String(255), index=True)
    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    reason: Mapped[str | None] = mapped_column(String(60))
    status: Mapped[str | None] = mapped_column(String(40))
    evidence_due_by: Mapped[datetime | None] = mapped_column(UTCDateTime)
    is_charge_refundable: Mapped[bool] = mapped_column(default=False)
    created: Mapped[int | None] = mapped_column(BigInteger)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)


class PaymentAttempt(Base):
    """One payment attempt seen in an event (a charge, or an invoice's attempt), succeeded or
    failed: what the mass-failure watch counts in its sliding window."""

    __tablename__ = "stripe_payment_attempts"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    failed: Mapped[bool] = mapped_column(default=False)
    occurred_at: Mapped[int] = mapped_column(BigInteger, index=True)  # Stripe's unix time
    customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    amount: Mapped[int | None] = mapped_column(BigInteger)
    event_id: Mapped[str] = mapped_column(String(255))
    # The key of the same attempt seen through its other event (an invoice's and its charge's),
    # which was not counted again.
    twin_key: Mapped[str | None] = mapped_column(String(300), index=True)


class StripeIncident(Base):
    """A Stripe sync error or a mass payment failure, escalated once while it lasts."""

    __tablename__ = "stripe_incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # One incident per key: what makes "once" hold when several workers notice it at once.
    key: Mapped[str] = mapped_column(String(300), unique=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Stripe time of the newest signal that kept it going (mass failures).
    last_seen: Mapped[int] = mapped_column(BigInteger, default=0)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
