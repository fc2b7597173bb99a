"""Value types and vocabularies shared by every part of Billing Desk.

Enum values are contracts: they are stored in the database, shown to agents and, where Stripe
has a word for the same thing, they reuse Stripe's word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

# ISO 4217 currencies Stripe treats as having no minor unit.
ZERO_DECIMAL_CURRENCIES = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
_AMOUNT = re.compile(r"\d+(\.\d+)?")
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cad": "CA$", "aud": "A$"}


@dataclass(frozen=True, order=True)
class Money:
    """An amount in integer minor units (cents) of one currency; never a float."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount, int) or isinstance(self.amount, bool):
            raise TypeError("Money.amount must be an int of minor units")
        object.__setattr__(self, "currency", self.currency.lower())

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} and {other.currency}")

    @classmethod
    def parse(cls, text: str, currency: str) -> Money:
        """Read an amount people typed in major units ("49", "1,234.50") as exact minor units."""
        from decimal import Decimal, InvalidOperation

        cleaned = text.strip().replace(",", "").lstrip("$€£¥")
        # Plain digits only: Decimal would also take "1e400", "NaN" or "-5".
        if not _AMOUNT.fullmatch(cleaned):
            raise ValueError(f"{text!r} is not an amount")
        try:
            value = Decimal(cleaned)
        except InvalidOperation:
            raise ValueError(f"{text!r} is not an amount") from None
        exponent = 0 if currency.lower() in ZERO_DECIMAL_CURRENCIES else 2
        if not value.is_finite():
            raise ValueError(f"{text!r} is not an amount")
        minor = value.scaleb(exponent)
        if minor != minor.to_integral_value():
            raise ValueError(f"{text!r} has more decimals than {currency.upper()} allows")
        return cls(int(minor), currency)

    def plain(self) -> str:
        """The amount as people type it, without symbol or separators: ``1234.50``, ``500``."""
        if self.currency in ZERO_DECIMAL_CURRENCIES:
            return str(self.amount)
        sign = "-" if self.amount < 0 else ""
        whole, cents = divmod(abs(self.amount), 100)
        return f"{sign}{whole}.{cents:02d}"

    def format(self) -> str:
        """Render for people, e.g. ``$1,234.50`` or ``¥500``."""
        symbol = _SYMBOLS.get(self.currency)
        if self.currency in ZERO_DECIMAL_CURRENCIES:
            number = f"{self.amount:,}"
        else:
            whole, cents = divmod(abs(self.amount), 100)
            number = f"{whole:,}.{cents:02d}"
        sign = "-" if self.amount < 0 else ""
        if self.currency in ZERO_DECIMAL_CURRENCIES:
            number = number.lstrip("-")
        return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {self.currency.upper()}"

    def __str__(self) -> str:
        return self.format()


class Category(StrEnum):
    """What a billing ticket is about (DESIGN.md §3)."""

    DUPLICATE_CHARGE = "duplicate_charge"
    CHARGE_AFTER_CANCELLATION = "charge_after_cancellation"
    UNUSED_MODULE = "unused_module"
    CARD_NOT_RECOGNIZED = "card_not_recognized"
    GENERAL_DISSATISFACTION = "general_dissatisfaction"
    CHARGEBACK = "chargeback"
    PAYMENT_FAILED = "payment_failed"
    CANCELLATION_REQUEST = "cancellation_request"
    REFUND_REQUEST = "refund_request"
    AUTHORIZATION_HOLD = "authorization_hold"
    OTHER = "other"


class Role(StrEnum):
    """What a person may do; always read from our own records, never from a helpdesk."""

    AGENT = "agent"
    SUPPORT_LEAD = "support_lead"
    FINANCE = "finance"
    ADMIN = "admin"
    ACCOUNT_MANAGER = "account_manager"
    SECURITY = "security"

    @property
    def label(self) -> str:
        """The role's name as people say it."""
        return self.value.replace("_", " ").title().replace("Account Manager", "Account manager")


class RefundReason(StrEnum):
    """Stripe's own refund reasons."""

    DUPLICATE = "duplicate"
    FRAUDULENT = "fraudulent"
    REQUESTED_BY_CUSTOMER = "requested_by_customer"


class ActionKind(StrEnum):
    """Things Billing Desk does to Stripe, a ticket or a customer on someone's behalf: each is
    one step of a plan, with its own module in ``core.actions``."""

    REFUND = "refund"
    CONFIRM_REFUND = "confirm_refund"  # the customer's email with the refund ID
    CLOSE = "close"  # close the ticket with a resolution
    CANCEL_SUBSCRIPTION = "cancel_subscription"
    COMP_COUPON = "comp_coupon"
    EXTEND_TRIAL = "extend_trial"
    SEND_UPDATE_CARD_LINK = "send_update_card_link"
    FLAG_FRAUD = "flag_fraud"
    ESCALATE = "escalate"
    NOTE = "note"
    REPLY = "reply"  # an email to the customer: a playbook's template or an agent's words
    SUBMIT_DISPUTE_EVIDENCE = "submit_dispute_evidence"  # Finance answers a dispute in Stripe
    ACCEPT_DISPUTE = "accept_dispute"  # Finance closes a dispute as lost: irreversible


class ActionStatus(StrEnum):
    """Where an action (a plan step) is in its life."""

    SUGGESTED = "suggested"  # prepared by the mail agent: nothing happens unless an agent starts it
    PLANNED = "planned"  # a later step of a plan: waits for the steps before it
    PENDING_APPROVAL = "pending_approval"
    QUEUED = "queued"  # judged and ready: a worker runs it
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    SKIPPED = "skipped"  # its plan stopped before reaching it
    SIMULATED = "simulated"  # dry run: recorded what it would have done, touched nothing

    @property
    def finished(self) -> bool:
        """True once nothing more will happen to the action."""
        return self in _FINISHED_ACTIONS

    @property
    def in_flight(self) -> bool:
        """Requested and not yet done or refused: it still counts against limits."""
        return self in (ActionStatus.PLANNED, ActionStatus.PENDING_APPROVAL, ActionStatus.QUEUED)


_FINISHED_ACTIONS = frozenset(
    [
        ActionStatus.SUCCEEDED,
        ActionStatus.FAILED,
        ActionStatus.REJECTED,
        ActionStatus.SKIPPED,
        ActionStatus.SIMULATED,
    ]
)


class PlanStatus(StrEnum):
    """Where a stored plan stands."""

    SUGGESTED = "suggested"  # prepared by the mail agent: an agent starts it, or not
    RUNNING = "running"  # a step is queued or running
    WAITING = "waiting"  # a step waits for someone's approval
    DONE = "done"  # every step succeeded
    STOPPED = "stopped"  # a step failed or was rejected; the steps after it were skipped

    @property
    def finished(self) -> bool:
        """True once the plan will advance no further."""
        return self in (PlanStatus.DONE, PlanStatus.STOPPED)


class HelpdeskName(StrEnum):
    """Where a ticket lives: our built-in helpdesk, or a hosted one we mirror."""

    LOCAL = "local"
    ZENDESK = "zendesk"
    HELPSCOUT = "helpscout"


class MatchKind(StrEnum):
    """How a ticket's Stripe customer was found; only some of these prove who it is."""

    EXPLICIT = "explicit"  # the helpdesk named the Stripe customer
    TENANT = "tenant"  # a tenant ID on the ticket
    EMAIL = "email"  # the requester's email address: not proof of identity
    # The requester's address, authenticated by DMARC or an aligned DKIM signature
    # (mail.authentication), is the Stripe customer's own: the sender is that customer.
    AUTHENTICATED = "authenticated"
    AGENT = "agent"  # picked by an agent in the sidebar: not proof either
    NONE = "none"


class InboundStatus(StrEnum):
    """Where a stored raw email is in intake (the poller writes the first three)."""

    RECEIVED = "received"  # stored whole, waiting for its job
    OVERSIZED = "oversized"  # too large to download: headers only
    QUARANTINED = "quarantined"  # the server would not hand it over whole: for a person
    PROCESSED = "processed"

    @property
    def waiting(self) -> bool:
        """Stored and not yet turned into a ticket."""
        return self in (InboundStatus.RECEIVED, InboundStatus.OVERSIZED)


class OutboundStatus(StrEnum):
    """Where an email we send is: recorded before sending, so a retry sends it once."""

    PENDING = "pending"
    SENT = "sent"
    RATE_LIMITED = "rate_limited"  # held back by the hourly cap (a loop breaker)


class EscalationTarget(StrEnum):
    """Who a ticket can be escalated to (the playbooks' escalation matrix)."""

    SUPPORT_LEAD = "support_lead"
    FINANCE = "finance"
    ENGINEERING_PLATFORM = "engineering_platform"
    ENGINEERING_CRITICAL = "engineering_critical"
    SECURITY = "security"
    ACCOUNT_MANAGER = "account_manager"

    @property
    def label(self) -> str:
        """The team's name as agents say it."""
        return _ESCALATION_LABELS[self]


_ESCALATION_LABELS = {
    EscalationTarget.SUPPORT_LEAD: "Support Lead",
    EscalationTarget.FINANCE: "Finance",
    EscalationTarget.ENGINEERING_PLATFORM: "Engineering (Platform)",
    EscalationTarget.ENGINEERING_CRITICAL: "Engineering (Critical)",
    EscalationTarget.SECURITY: "Security",
    EscalationTarget.ACCOUNT_MANAGER: "Account manager",
}


class TicketStatus(StrEnum):
    """Where a ticket stands, as helpdesks say it: open (ours to answer), pending (waiting for
    the customer), solved (answered; a reply reopens it), closed (done; a reply reopens it)."""

    OPEN = "open"
    PENDING = "pending"
    SOLVED = "solved"
    CLOSED = "closed"

    @property
    def active(self) -> bool:
        """Still in someone's hands: open, or pending the customer's answer."""
        return self in (TicketStatus.OPEN, TicketStatus.PENDING)


class EscalationStatus(StrEnum):
    """Where an escalation stands against its SLA."""

    OPEN = "open"  # waiting for the team to pick it up
    PICKED_UP = "picked_up"  # someone of the team took it: the SLA is met
    RESOLVED = "resolved"  # the ticket was solved or closed


class MessageKind(StrEnum):
    """The kinds of entry in a ticket's thread."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"
    NOTE = "note"


RESOLUTION_REFUND_ISSUED = "Resolved — Refund issued"


@dataclass(frozen=True)
class Customer:
    """The parts of a Stripe customer an agent or a playbook needs."""

    id: str
    email: str | None
    name: str | None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def tenant_id(self) -> str | None:
        """Our tenant ID for the customer, kept in Stripe metadata."""
        return self.metadata.get("tenant_id")

    @property
    def organization(self) -> str | None:
        """The customer's organisation name, kept in Stripe metadata."""
        return self.metadata.get("organization")


@dataclass(frozen=True)
class Charge:
    """A Stripe charge, reduced to what support work looks at. No card number, only last 4."""

    id: str
    customer_id: str | None
    amount: Money
    amount_refunded: int
    created: datetime
    status: str
    captured: bool
    disputed: bool
    description: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None
    card_fingerprint: str | None = None
    failure_code: str | None = None
    decline_code: str | None = None
    failure_message: str | None = None
    advice_code: str | None = None
    # The invoice the charge paid. Current API versions no longer say it on the charge: it is
    # looked up through the charge's PaymentIntent where a playbook needs it.
    invoice_id: str | None = None
    payment_intent_id: str | None = None

    @property
    def refunded(self) -> Money:
        """What has been refunded on this charge so far."""
        return Money(self.amount_refunded, self.amount.currency)

    @property
    def refundable(self) -> Money:
        """What is left to refund on this charge."""
        return Money(self.amount.amount - self.amount_refunded, self.amount.currency)

    @property
    def is_hold(self) -> bool:
        """An uncaptured authorisation: money held, not taken."""
        return self.status == "succeeded" and not self.captured


@dataclass(frozen=True)
class Refund:
    """A Stripe refund."""

    id: str
    charge_id: str
    amount: Money
    reason: str | None
    status: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Subscription:
    """A Stripe subscription, as the sidebar's subscription card shows it."""

    id: str
    customer_id: str
    status: str  # Stripe's: active, trialing, past_due, canceled, unpaid, incomplete...
    plan_name: str | None
    price: Money | None
    interval: str | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool = False
    cancel_at: datetime | None = None
    canceled_at: datetime | None = None
    trial_end: datetime | None = None
    coupon_ids: tuple[str, ...] = ()
    latest_invoice_id: str | None = None
    next_payment_attempt: datetime | None = None
    attempt_count: int | None = None

    @property
    def is_live(self) -> bool:
        """Still billing (or about to): something an agent can cancel or comp."""
        return self.status not in ("canceled", "incomplete_expired")


# Stripe's decided dispute statuses. Every other one is still open: needs_response,
# under_review, their warning_ (inquiry) and appeal_ forms, and any status Stripe adds later,
# since a refund around an undecided dispute is what the guardrail must never allow.
CLOSED_DISPUTE_STATUSES = frozenset(["won", "lost", "warning_closed", "prevented"])


@dataclass(frozen=True)
class Dispute:
    """A Stripe dispute (chargeback) or inquiry on a charge."""

    id: str
    charge_id: str
    amount: Money
    reason: str
    status: str
    created: datetime
    evidence_due_by: datetime | None = None
    is_charge_refundable: bool = False

    @property
    def is_open(self) -> bool:
        """Still being decided: no refund may go around it."""
        return self.status not in CLOSED_DISPUTE_STATUSES

    @property
    def needs_response(self) -> bool:
        """Waiting for our evidence (a dispute, an inquiry, or an appeal)."""
        return self.status.endswith("needs_response")

    @property
    def is_inquiry(self) -> bool:
        """A pre-dispute inquiry (``warning_*``), which a full refund may still settle."""
        return self.status.startswith("warning_")
