"""Billing Desk's fake Stripe: localstripe plus the Stripe behaviour our helpdesk depends on.

Run it as ``python -m helpdesk_app.demo.fake_stripe --port N [--host 127.0.0.1]``. It serves
localstripe's aiohttp app in-process on loopback only, never writes localstripe's shared pickle
file, logs at WARNING on stderr and prints exactly one line to stdout once it accepts
connections: ``fake-stripe listening on http://HOST:PORT`` (``--port 0`` picks a free port and
the line reports the real one).

``--webhook-url URL --webhook-secret whsec_...`` forward every event like ``stripe listen``.

On top of localstripe 1.15.10 it adds:

* Stripe-shaped events (``api_version``, ``request``, ``pending_webhooks``,
  ``previous_attributes`` on updates) for customers, charges, refunds, subscriptions,
  invoices (created/finalized/paid/payment_failed/payment_succeeded) and disputes, listed
  newest first by ``GET /v1/events``, delivered signed, in order and retried by
  ``fake_stripe_events``; test support ``POST /_config/webhook_endpoint`` (url, secret; empty
  url stops), ``GET /_config/webhook_deliveries[?event=]``, ``POST /_config/events/{id}/resend``;
* Stripe's test PaymentMethod ids (``pm_card_visa``, ``pm_card_chargeDeclined*``,
  ``pm_card_createDispute[Inquiry]``...) wherever a PaymentMethod id is accepted, and
  ``payment_method`` on PaymentIntent confirmation;
* ``GET /v1/customers/search`` (``email:``, ``name:``, ``metadata['k']:`` clauses, each
  negatable with ``-``, joined by AND, or all by OR) and ``GET /v1/charges/search``
  (``customer:``, ``status:``, ``payment_method_details.card.fingerprint:``, ``metadata``),
  paginated with ``page``/``next_page``;
* ``Idempotency-Key`` replay for POSTs for 24 hours (5xx results included, 429s and validation
  errors not), ``idempotency_error`` on key reuse and 409 while the key's first request runs;
  test support ``POST /_config/idempotency`` (``age_seconds``) and ``POST``/``GET``/``DELETE
  /_config/faults`` (``path_prefix``, ``method``, ``status`` 429/500/503, ``count``,
  ``after_execution``, or ``hold`` until ``POST /_config/faults/release``);
* ``limit`` 1..100 on every list and search;
* deleted customers answer ``{"id", "object", "deleted": true}`` on GET and leave lists;
* refund ``reason`` and Stripe's over-refund / disputed-charge errors;
* disputes (statuses exactly stripe-python's): ``GET /v1/disputes``, ``GET``/``POST
  /v1/disputes/{id}`` (evidence, submit), ``POST /v1/disputes/{id}/close`` and the
  test-support ``POST /_config/disputes`` and ``POST /_config/disputes/{id}`` (``status``);
* charge-time decline codes, ``outcome``, ``payment_method_details`` (with a Stripe-like card
  ``fingerprint``), ``disputed`` and ``amount_captured`` on charges; no ``invoice`` on charges:
  ``GET /v1/invoice_payments`` (``invoice`` or ``payment[payment_intent]``) links them;
  ``latest_charge`` is an id unless expanded;
* newest-first charge, PaymentIntent and subscription lists;
* subscriptions: ``items[][price]`` as an alias of ``plan``, ``discounts`` on create and update
  (``{coupon}``, ``{discount}`` to keep one; the array replaces the set; ids unless expanded),
  ``trialing`` while ``trial_end`` is ahead, ``proration_behavior``, periods and a ``price``
  only on items, ``canceled_at`` on cancellation;
* coupons created without an ``id`` (one is generated), with a ``name``, and Stripe's
  ``resource_already_exists`` error for a taken id;
* ``POST /v1/billing_portal/sessions`` (needs an active ``configuration`` or a default) and the
  page it links to, ``GET /_portal/{id}``; ``/v1/billing_portal/configurations`` and the
  test-support ``POST /_config/billing_portal/default`` (saving the Dashboard settings);
* test-support ``POST /_config/charges/{id}/created`` to backdate a charge,
  ``POST /_config/subscriptions/{id}`` (``status``, ``canceled_at``, ``current_period_start``,
  ``current_period_end``) and ``POST /_config/invoices/{id}`` (``status``,
  ``next_payment_attempt``, ``attempt_count``).

Importing this module patches nothing; ``install_extensions()`` (called by ``main``) applies
every patch and route.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import html
import inspect
import logging
import re
import secrets
import signal
import string
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from dateutil.relativedelta import relativedelta
from localstripe import resources as ls
from localstripe import server as ls_server
from localstripe.errors import UserError

from core.domain import Money
from helpdesk_app.demo.fake_stripe_events import (
    EventHub,
    add_event_routes,
    diff,
    emit,
    install_events,
)
from helpdesk_app.demo.fake_stripe_faults import (
    FAULT_STATUSES,
    NOT_EXECUTED,
    Fault,
    FaultInjector,
    make_fault_middleware,
)

MAX_LIST_LIMIT = 100
DEFAULT_LIST_LIMIT = 10
EVIDENCE_WINDOW_SECONDS = 7 * 24 * 3600
IDEMPOTENCY_CACHE_SIZE = 10_000
IDEMPOTENCY_KEY_TTL_SECONDS = 24 * 3600

REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})

DISPUTE_REASONS = frozenset(
    {
        "bank_cannot_process",
        "check_returned",
        "credit_not_processed",
        "customer_initiated",
        "debit_not_authorized",
        "duplicate",
        "fraudulent",
        "general",
        "incorrect_account_details",
        "insufficient_funds",
        "noncompliant",
        "product_not_received",
        "product_unacceptable",
        "subscription_canceled",
        "unrecognized",
    }
)
# Exactly stripe-python's Dispute.status literals.
DISPUTE_STATUSES = frozenset(
    {
        "appeal_needs_response",
        "appeal_under_review",
        "warning_needs_response",
        "warning_under_review",
        "warning_closed",
        "needs_response",
        "under_review",
        "won",
        "lost",
        "prevented",
    }
)
# Where a dispute goes when evidence is submitted or it is accepted (closed), as in Stripe.
_SUBMITTED_STATUS = {
    "needs_response": "under_review",
    "warning_needs_response": "warning_under_review",
    "appeal_needs_response": "appeal_under_review",
}
_CLOSED_STATUS = {
    "needs_response": "lost",
    "warning_needs_response": "warning_closed",
    "appeal_needs_response": "lost",
}
_FINAL_DISPUTE_STATUSES = frozenset({"won", "lost", "warning_closed", "prevented"})

SUBSCRIPTION_STATUSES = frozenset(
    {
        "incomplete",
        "incomplete_expired",
        "trialing",
        "active",
        "past_due",
        "canceled",
        "unpaid",
        "paused",
    }
)
_ENDED_SUBSCRIPTION_STATUSES = frozenset({"canceled", "incomplete_expired"})
INVOICE_STATUSES = frozenset({"draft", "open", "paid", "uncollectible", "void"})
PRORATION_BEHAVIORS = frozenset({"always_invoice", "create_prorations", "none"})
COUPON_ID_LENGTH = 8
# Smart Retries' usual gap between attempts, for a subscription configured as past_due.
RETRY_GAP_SECONDS = 3 * 24 * 3600

PORTAL_FLOW_TYPES = frozenset(
    {
        "customer_update",
        "payment_method_update",
        "subscription_cancel",
        "subscription_pause",
        "subscription_update",
        "subscription_update_confirm",
    }
)
PORTAL_AFTER_COMPLETION_TYPES = frozenset({"hosted_confirmation", "portal_homepage", "redirect"})

# Keyed so that hashing the handful of test card numbers does not tell which card a
# fingerprint stands for (localstripe's plain SHA-1 prefix would).
_FINGERPRINT_KEY = b"billing-desk fake stripe card fingerprint"
_BASE62 = string.ascii_letters + string.digits


@dataclass(frozen=True)
class CardDecline:
    """How Stripe declines a test card at charge time."""

    code: str
    decline_code: str
    message: str

    @property
    def seller_message(self) -> str:
        """Stripe's Dashboard explanation of the decline."""
        if self.decline_code == "generic_decline":
            return "The bank did not return any further details with this decline."
        return f"The bank returned the decline code `{self.decline_code}`."


GENERIC_DECLINE = CardDecline("card_declined", "generic_decline", "Your card was declined.")

# Stripe's test cards that attach to a customer fine but are declined when charged.
DECLINING_CARDS: dict[str, CardDecline] = {
    "4000000000000002": GENERIC_DECLINE,
    "4000000000009995": CardDecline(
        "card_declined", "insufficient_funds", "Your card has insufficient funds."
    ),
    "4000000000000069": CardDecline("expired_card", "expired_card", "Your card has expired."),
    "4000000000000127": CardDecline(
        "incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."
    ),
    "4000000000000341": GENERIC_DECLINE,
    "4100000000000019": CardDecline("card_declined", "fraudulent", "Your card was declined."),
    "4000000000009987": CardDecline("card_declined", "lost_card", "Your card was declined."),
    "4000000000009979": CardDecline("card_declined", "stolen_card", "Your card was declined."),
}

# Stripe's test cards whose successful charge is then disputed, and the dispute's status.
DISPUTING_CARDS: dict[str, str] = {
    "4000000000000259": "needs_response",
    "4000000000001976": "warning_needs_response",
}

# Stripe's test PaymentMethod ids (usable wherever a PaymentMethod id is) and their cards.
TEST_PAYMENT_METHODS: dict[str, str] = {
    "pm_card_visa": "4242424242424242",
    "pm_card_mastercard": "5555555555554444",
    "pm_card_createDispute": "4000000000000259",
    "pm_card_createDisputeInquiry": "4000000000001976",
    "pm_card_chargeDeclined": "4000000000000002",
    "pm_card_chargeDeclinedInsufficientFunds": "4000000000009995",
    "pm_card_chargeDeclinedExpiredCard": "4000000000000069",
    "pm_card_chargeDeclinedIncorrectCvc": "4000000000000127",
    "pm_card_chargeDeclinedFraudulent": "4100000000000019",
    "pm_card_chargeDeclinedLostCard": "4000000000009987",
    "pm_card_chargeDeclinedStolenCard": "4000000000009979",
    "pm_card_visa_chargeDeclined": "4000000000000002",
    "pm_card_chargeCustomerFail": "4000000000000341",
}

_INSTALLED = web.AppKey("billing_desk_fake_stripe_installed", bool)


# --- small helpers -------------------------------------------------------------------------


def stripe_error(
    status: int, message: str, *, error_type: str = "invalid_request_error", **fields: Any
) -> UserError:
    """Build a localstripe UserError whose JSON body has Stripe's error shape and type."""
    error = UserError(status, message, {k: v for k, v in fields.items() if v is not None})
    # UserError always says invalid_request_error; Stripe uses card_error, idempotency_error...
    error.body["error"]["type"] = error_type
    return error


def format_money(amount: int, currency: str) -> str:
    """Format minor units the way Stripe's error messages do, e.g. ``$12.34``."""
    return Money(amount, currency).format()


def _checked_limit(limit: Any) -> int:
    """Validate a list/search ``limit`` like Stripe (1..100, default 10)."""
    if limit is None:
        return DEFAULT_LIST_LIMIT
    value = ls.try_convert_to_int(limit)
    if type(value) is not int or not 1 <= value <= MAX_LIST_LIMIT:
        raise stripe_error(
            400, f"Invalid limit: must be an integer between 1 and {MAX_LIST_LIMIT}", param="limit"
        )
    return value


def _created_matcher(created: Any) -> Callable[[int], bool]:
    """Turn a ``created`` filter (exact value or gt/gte/lt/lte bounds) into a predicate."""
    if created is None:
        return lambda _ts: True
    bounds = created if isinstance(created, dict) else {"eq": created}
    comparisons: dict[str, Callable[[int, int], bool]] = {
        "eq": lambda ts, v: ts == v,
        "gt": lambda ts, v: ts > v,
        "gte": lambda ts, v: ts >= v,
        "lt": lambda ts, v: ts < v,
        "lte": lambda ts, v: ts <= v,
    }
    checks: list[tuple[Callable[[int, int], bool], int]] = []
    for op, raw in bounds.items():
        value = ls.try_convert_to_int(raw)
        if op not in comparisons or type(value) is not int:
            raise stripe_error(400, "Invalid created filter", param="created")
        checks.append((comparisons[op], value))
    return lambda ts: all(compare(ts, value) for compare, value in checks)


def _newest_first(objects: Iterable[Any]) -> list[Any]:
    """Sort by ``created`` descending; ties put the most recently stored object first."""
    # sorted() is stable even with reverse=True, so reversing the store order first makes
    # same-second objects come out newest-first, which keeps pagination deterministic.
    return sorted(reversed(list(objects)), key=lambda obj: obj.created, reverse=True)


def _stored(cls: Any) -> list[Any]:
    """All objects of one localstripe class, in store (creation) order."""
    prefix = cls.object + ":"
    return [obj for key, obj in list(ls.store.items()) if key.startswith(prefix)]


def _reject_unexpected(unexpected: dict[str, Any]) -> None:
    """Refuse unknown parameters the way localstripe (and Stripe) do."""
    if unexpected:
        raise stripe_error(400, "Unexpected " + ", ".join(unexpected))


def _newest_first_list(
    cls: Any, url: str, limit: Any, starting_after: Any, created: Any, **equal: Any
) -> Any:
    """A List of ``cls`` objects, newest first and paginated, within the ``created`` range and
    whose attributes equal the non-None values in ``equal`` (``customer="cus_1"``...)."""
    in_range = _created_matcher(created)
    wanted = {name: value for name, value in equal.items() if value is not None}
    page = ls.List(url, limit=_checked_limit(limit), starting_after=starting_after)
    page._list = _newest_first(
        obj
        for obj in _stored(cls)
        if in_range(obj.created) and all(getattr(obj, k) == v for k, v in wanted.items())
    )
    return page


def _card_number(source: Any) -> str | None:
    """The full card number behind a PaymentMethod or legacy Card (never exported)."""
    if getattr(source, "type", None) != "card":
        return None
    return getattr(source, "_card_number", None)


def _card_brand(number: str) -> str:
    """Stripe's lowercase brand for a card number (enough for test cards)."""
    if number.startswith(("34", "37")):
        return "amex"
    if number.startswith(("6011", "65")):
        return "discover"
    if number[:2] in {"51", "52", "53", "54", "55"} or "2221" <= number[:4] <= "2720":
        return "mastercard"
    return "visa" if number.startswith("4") else "unknown"


def _charge_source(charge: Any) -> Any | None:
    """The PaymentMethod, Card or Source a charge was made with, if it still exists."""
    try:
        return ls.PaymentMethod._api_retrieve(charge.payment_method)
    except UserError:
        return None


def card_fingerprint(secret: str) -> str:
    """A Stripe-like fingerprint (16 letters and digits): equal for equal card numbers or IBANs,
    and never the number itself."""
    digest = hmac.new(_FINGERPRINT_KEY, secret.encode("utf-8"), hashlib.sha256).digest()
    value = int.from_bytes(digest, "big")
    chars = []
    for _ in range(16):
        value, index = divmod(value, len(_BASE62))
        chars.append(_BASE62[index])
    return "".join(chars)


def _timestamp(value: Any, param: str, *, nullable: bool = False) -> int | None:
    """A unix timestamp parameter (``""`` means null where ``nullable``), or a 400."""
    if nullable and value in ("", None):
        return None
    converted = ls.try_convert_to_int(value)
    if type(converted) is not int or converted <= 0:
        raise stripe_error(400, f"{param} must be a unix timestamp", param=param)
    return converted


def _web_url(value: Any, param: str) -> str:
    """An absolute http(s) URL parameter, or Stripe's ``Not a valid URL`` 400."""
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise stripe_error(400, "Not a valid URL", param=param)
    return str(value)


# --- disputes ------------------------------------------------------------------------------


class Dispute(ls.StripeObject):
    """A Stripe dispute, stored in localstripe's store so ``DELETE /_config/data`` clears it."""

    # Defining the subclass only teaches localstripe's expand code the ``dp_`` prefix; the
    # /v1/disputes routes exist only after install_extensions().

    object = "dispute"
    _id_prefix = "dp_"

    def __init__(self, charge: Any, amount: int, reason: str, status: str) -> None:
        super().__init__()
        self.amount = amount
        self.currency = charge.currency
        self.charge = charge.id
        self.payment_intent = charge.payment_intent
        self.reason = reason
        self.status = status
        self.metadata: dict[str, str] = {}
        self.evidence: dict[str, Any] = {}
        self.evidence_details = {
            "due_by": self.created + EVIDENCE_WINDOW_SECONDS,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        }
        # Only inquiries can still be settled with a refund instead of the dispute process.
        self.is_charge_refundable = status.startswith("warning_")
        self.balance_transactions: list[Any] = []

    def _is_open(self) -> bool:
        # A method, not a property: localstripe's _export would publish a property.
        return self.status in _SUBMITTED_STATUS

    @classmethod
    def _config_create(
        cls,
        charge: Any = None,
        amount: Any = None,
        reason: Any = None,
        status: Any = None,
        **unexpected: Any,
    ) -> Dispute:
        """Create a dispute on a charge (test support; Stripe creates these itself)."""
        _reject_unexpected(unexpected)
        reason = reason or "general"
        status = status or "needs_response"
        if reason not in DISPUTE_REASONS:
            raise stripe_error(400, f"Invalid dispute reason: {reason}", param="reason")
        if status not in DISPUTE_STATUSES:
            raise stripe_error(400, f"Invalid dispute status: {status}", param="status")
        if not isinstance(charge, str) or not charge.startswith("ch_"):
            raise stripe_error(400, "Missing required param: charge.", param="charge")
        charge_obj = ls.Charge._api_retrieve(charge)
        if charge_obj.status != "succeeded":
            raise stripe_error(400, f"Charge {charge} did not succeed", param="charge")
        amount = charge_obj.amount if amount is None else ls.try_convert_to_int(amount)
        if type(amount) is not int or not 0 < amount <= charge_obj.amount:
            raise stripe_error(400, "Invalid dispute amount", param="amount")
        return cls._open(charge_obj, amount, reason, status)

    @classmethod
    def _open(cls, charge: Any, amount: int, reason: str, status: str) -> Dispute:
        """Open a dispute and announce it (and, for a chargeback, the withdrawn funds)."""
        dispute = cls(charge, amount, reason, status)
        emit("charge.dispute.created", dispute)
        if not status.startswith("warning_"):
            emit("charge.dispute.funds_withdrawn", dispute)
        return dispute

    def _set_status(self, status: str) -> None:
        """Move to ``status`` and send the events Stripe sends for that move."""
        before = self._export()
        self.status = status
        previous = diff(before, self._export())
        if not previous:
            return
        if status in _FINAL_DISPUTE_STATUSES:
            emit("charge.dispute.closed", self, previous)
            if status == "won":
                emit("charge.dispute.funds_reinstated", self)
        else:
            emit("charge.dispute.updated", self, previous)

    @classmethod
    def _api_create(cls, **data: Any) -> Any:
        raise stripe_error(405, "Disputes are created by cardholders, not by the API")

    @classmethod
    def _api_delete(cls, id: str) -> Any:
        raise stripe_error(405, "Disputes cannot be deleted")

    @classmethod
    def _api_update(
        cls,
        id: str,
        evidence: Any = None,
        metadata: Any = None,
        submit: Any = None,
        **unexpected: Any,
    ) -> Dispute:
        """Stage or submit evidence and/or merge metadata, like ``POST /v1/disputes/{id}``."""
        _reject_unexpected(unexpected)
        dispute = cls._api_retrieve(id)
        if evidence is not None and not isinstance(evidence, dict):
            raise stripe_error(400, "Invalid evidence", param="evidence")
        if metadata is not None and not isinstance(metadata, dict):
            raise stripe_error(400, "Invalid metadata", param="metadata")
        submit = ls.try_convert_to_bool(submit)
        if submit not in (None, True, False):
            raise stripe_error(400, "Invalid submit flag", param="submit")
        # Stripe submits evidence by default when it is sent; metadata alone submits nothing.
        submitting = submit is True or (submit is None and evidence is not None)
        if (evidence is not None or submitting) and not dispute._is_open():
            raise stripe_error(
                400, f"This dispute is {dispute.status} and its evidence can no longer be changed."
            )
        before = dispute._export()
        dispute.metadata.update(metadata or {})
        if evidence:
            dispute.evidence.update(evidence)
            dispute.evidence_details["has_evidence"] = True
        if submitting:
            dispute.evidence_details["submission_count"] += 1
            dispute.status = _SUBMITTED_STATUS[dispute.status]
        previous = diff(before, dispute._export())
        if previous:
            emit("charge.dispute.updated", dispute, previous)
        return dispute

    @classmethod
    def _api_close(cls, id: str, **unexpected: Any) -> Dispute:
        """Accept the dispute (it becomes lost), like ``POST /v1/disputes/{id}/close``."""
        _reject_unexpected(unexpected)
        dispute = cls._api_retrieve(id)
        if not dispute._is_open():
            raise stripe_error(400, f"This dispute is already {dispute.status}.")
        dispute._set_status(_CLOSED_STATUS[dispute.status])
        return dispute

    @classmethod
    def _api_list_all(
        cls,
        url: str,
        charge: Any = None,
        payment_intent: Any = None,
        limit: Any = None,
        starting_after: Any = None,
        created: Any = None,
        **unexpected: Any,
    ) -> Any:
        """Disputes newest first, optionally for one charge or PaymentIntent."""
        _reject_unexpected(unexpected)
        return _newest_first_list(
            cls, url, limit, starting_after, created, charge=charge, payment_intent=payment_intent
        )


def disputes_for_charge(charge_id: str) -> list[Dispute]:
    """Every dispute opened on a charge."""
    return [d for d in _stored(Dispute) if d.charge == charge_id]


# --- resource patches ----------------------------------------------------------------------


def _patch_store() -> None:
    # localstripe pickles its whole store to localstripe.pickle in the temp directory on every
    # write, a file shared by every localstripe on the machine; we keep state in memory only.
    ls.Store.dump_to_disk = lambda self: None


def _refund_target(charge: Any, payment_intent: Any) -> Any | None:
    """The charge a refund request points at, or None to let localstripe report the error."""
    if isinstance(charge, str) and charge.startswith("ch_") and payment_intent is None:
        return ls.Charge._api_retrieve(charge)
    if charge is None and isinstance(payment_intent, str) and payment_intent.startswith("pi_"):
        return ls.PaymentIntent._api_retrieve(payment_intent).latest_charge
    return None


def _refundable_amount(charge: Any, requested: Any) -> Any:
    """The amount to refund, raising the errors Stripe gives for disputed/over-refunded charges."""
    if any(not d.is_charge_refundable for d in disputes_for_charge(charge.id)):
        raise stripe_error(
            400,
            f"Charge {charge.id} has been charged back; cannot issue a refund.",
            code="charge_disputed",
        )
    remaining = charge.amount - charge.amount_refunded
    if remaining <= 0:
        raise stripe_error(
            400, f"Charge {charge.id} has already been refunded.", code="charge_already_refunded"
        )
    if requested is None:
        # localstripe would refund the full charge amount even after partial refunds.
        return remaining
    amount = ls.try_convert_to_int(requested)
    if type(amount) is int and amount > remaining:
        raise stripe_error(
            400,
            f"Refund amount ({format_money(amount, charge.currency)}) is greater than "
            f"unrefunded amount on charge ({format_money(remaining, charge.currency)})",
            param="amount",
        )
    return requested  # malformed amounts are left for localstripe to reject


def _patch_refunds() -> None:
    original_create = ls.Refund._api_create

    def create_refund(cls: type, /, reason: Any = None, **data: Any) -> Any:
        if reason is not None and reason not in REFUND_REASONS:
            raise stripe_error(
                400,
                "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer",
                param="reason",
            )
        charge = _refund_target(data.get("charge"), data.get("payment_intent"))
        if charge is not None and charge.status == "succeeded":
            data["amount"] = _refundable_amount(charge, data.get("amount"))
        refund = original_create(**data)
        refund.reason = reason
        return refund

    ls.Refund._api_create = classmethod(create_refund)
    # Class default so refunds localstripe creates itself (partial captures) export null.
    ls.Refund.reason = None


def _patch_declines() -> None:
    original_attaching = ls.PaymentMethod._attaching_is_declined
    original_charging = ls.PaymentMethod._charging_is_declined
    original_last_error = ls.PaymentIntent.last_payment_error.fget

    # Stripe declines these cards when charged, not when attached; localstripe does the
    # opposite. Card (legacy) objects delegate to these functions, so both are covered.
    def attaching_is_declined(self: Any) -> bool:
        return _card_number(self) not in DECLINING_CARDS and original_attaching(self)

    def charging_is_declined(self: Any) -> bool:
        return _card_number(self) in DECLINING_CARDS or original_charging(self)

    def set_auth_failure(self: Any) -> None:
        decline = DECLINING_CARDS.get(_card_number(_charge_source(self)) or "", GENERIC_DECLINE)
        self.status = "failed"
        self.captured = False  # localstripe leaves the requested capture flag on failures
        self.failure_code = decline.code
        self.failure_message = decline.message
        self._decline = decline
        emit("charge.failed", self)

    def raise_failure(self: Any) -> None:
        decline = getattr(self, "_decline", GENERIC_DECLINE)
        raise stripe_error(
            402,
            self.failure_message,
            error_type="card_error",
            code=self.failure_code,
            decline_code=decline.decline_code,
            charge=self.id,
        )

    def last_payment_error(self: Any) -> dict[str, Any] | None:
        error = original_last_error(self)
        charge = self.latest_charge
        if error and charge is not None and charge.status == "failed":
            decline = getattr(charge, "_decline", GENERIC_DECLINE)
            error = {**error, "type": "card_error", "decline_code": decline.decline_code}
        return error

    ls.PaymentMethod._attaching_is_declined = attaching_is_declined
    ls.PaymentMethod._charging_is_declined = charging_is_declined
    ls.Charge._set_auth_failure = set_auth_failure
    ls.Charge._raise_failure = raise_failure
    ls.PaymentIntent.last_payment_error = property(last_payment_error)


def _resolved_payment_method(id: Any) -> Any:
    """A PaymentMethod id with Stripe's test ids (``pm_card_visa``...) made into real ones."""
    if isinstance(id, str) and id in TEST_PAYMENT_METHODS:
        return ls.PaymentMethod._api_retrieve(id).id
    return id


def _patch_test_payment_methods() -> None:
    original_pi_init = ls.PaymentIntent.__init__
    original_confirm = ls.PaymentIntent._api_confirm
    original_customer_init = ls.Customer.__init__

    def canonical(cls: type, /, id: str) -> Any:
        number = TEST_PAYMENT_METHODS.get(id)
        if number is None:
            return None
        # Like Stripe, each use of a test id makes a new PaymentMethod.
        pm = ls.PaymentMethod(
            type="card",
            card={"number": number, "exp_month": "12", "exp_year": "2034", "cvc": "123"},
        )
        pm.card.update(brand=_card_brand(number), country="US")
        return pm

    def pi_init(self: Any, payment_method: Any = None, **data: Any) -> None:
        original_pi_init(self, payment_method=_resolved_payment_method(payment_method), **data)

    def confirm(cls: type, /, id: str, payment_method: Any = None, **data: Any) -> Any:
        if payment_method is not None:
            intent = ls.PaymentIntent._api_retrieve(id)
            if intent.status not in ("requires_payment_method", "requires_confirmation"):
                raise stripe_error(
                    400,
                    f"You cannot confirm this PaymentIntent because it has a status of "
                    f"{intent.status}.",
                    code="payment_intent_unexpected_state",
                )
            intent.payment_method = _resolved_payment_method(payment_method)
            ls.PaymentMethod._api_retrieve(intent.payment_method)  # 404 for unknown ones
            intent.latest_charge = None  # a new attempt with the new payment method
        return original_confirm(id, **data)

    def customer_init(self: Any, invoice_settings: Any = None, **data: Any) -> None:
        default = (invoice_settings or {}).get("default_payment_method")
        alias = default in TEST_PAYMENT_METHODS
        if alias:
            invoice_settings = {**invoice_settings, "default_payment_method": None}
        original_customer_init(self, invoice_settings=invoice_settings, **data)
        if alias:
            pm = ls.PaymentMethod._api_attach(_resolved_payment_method(default), customer=self.id)
            self.invoice_settings["default_payment_method"] = pm.id

    original_pi_export = ls.PaymentIntent._export

    def pi_export(self: Any, expand: Any = None) -> dict[str, Any]:
        expanded = isinstance(expand, list) and "latest_charge" in expand
        body = original_pi_export(self, expand=expand)
        if not expanded and isinstance(body.get("latest_charge"), dict):
            body["latest_charge"] = body["latest_charge"]["id"]  # an id unless expanded
        return body

    ls.PaymentMethod._try_get_canonical_test_article = classmethod(canonical)
    ls.PaymentIntent.__init__ = pi_init
    ls.PaymentIntent._api_confirm = classmethod(confirm)
    ls.PaymentIntent._export = pi_export
    ls.Customer.__init__ = customer_init


_CONFIRM_PATH = re.compile(r"/v1/payment_intents/(pi_\w+)/confirm")


@web.middleware
async def confirm_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Route PaymentIntent confirmation to our patched method: localstripe's route holds on
    to its own, which refuses a ``payment_method``."""
    match = _CONFIRM_PATH.fullmatch(request.path)
    if request.method != "POST" or match is None:
        return await handler(request)
    data = await ls_server.get_post_data(request) or {}
    expand = data.pop("expand", None)
    intent = ls.PaymentIntent._api_confirm(match[1], **data)
    return ls_server.json_response(intent._export(expand=expand))


def _charge_outcome(charge: Any) -> dict[str, Any] | None:
    """Stripe's ``outcome`` for a charge: authorized, or declined by the issuer."""
    if charge.status == "failed":
        decline = getattr(charge, "_decline", GENERIC_DECLINE)
        return {
            "type": "issuer_declined",
            "reason": decline.decline_code,
            "advice_code": None,
            "network_status": "declined_by_network",
            "risk_level": "normal",
            "seller_message": decline.seller_message,
        }
    if charge.status == "succeeded":
        return {
            "type": "authorized",
            "reason": None,
            "advice_code": None,
            "network_status": "approved_by_network",
            "risk_level": "normal",
            "seller_message": "Payment complete.",
        }
    return None


def _payment_method_details(charge: Any) -> dict[str, Any] | None:
    """Stripe's ``payment_method_details`` for a charge, without the full card number."""
    source = _charge_source(charge)
    number = _card_number(source)
    if number is not None:
        expiry = source.card if isinstance(source, ls.PaymentMethod) else vars(source)
        return {
            "type": "card",
            "card": {
                "brand": _card_brand(number),
                "last4": number[-4:],
                "exp_month": expiry["exp_month"],
                "exp_year": expiry["exp_year"],
                "fingerprint": card_fingerprint(number),
                "funding": "credit",
                "country": "US",
            },
        }
    if source is not None and source.type == "sepa_debit":
        details = {
            k: source.sepa_debit[k] for k in ("country", "bank_code", "last4", "fingerprint")
        }
        return {"type": "sepa_debit", "sepa_debit": details}
    return None


def _amount_captured(charge: Any) -> int:
    """Captured amount: 0 for holds and failures, the capture amount after a partial capture."""
    if charge.status != "succeeded" or not charge.captured:
        return 0
    return getattr(charge, "_amount_captured", charge.amount)


def _charge_invoice(charge: Any) -> str | None:
    """The invoice a charge paid: localstripe only records it on the PaymentIntent."""
    own = vars(charge).get("_invoice")
    if own is not None:
        return str(own)
    intent = ls.store.get(f"payment_intent:{charge.payment_intent}")
    return getattr(intent, "invoice", None)


def _patch_charge_fields() -> None:
    original_capture = ls.Charge._capture

    def capture(self: Any, amount: Any, on_success: Any = None) -> None:
        original_capture(self, amount, on_success)
        # Remembered for amount_captured; localstripe only records the rest as a refund.
        self._amount_captured = self.amount if amount is None else ls.try_convert_to_int(amount)

    ls.Charge._capture = capture
    # Properties are exported by localstripe's _export, and computing them keeps them right
    # after refunds, captures and disputes without touching every code path.
    ls.Charge.outcome = property(_charge_outcome)
    ls.Charge.payment_method_details = property(_payment_method_details)
    ls.Charge.amount_captured = property(_amount_captured)
    ls.Charge.disputed = property(lambda self: bool(disputes_for_charge(self.id)))
    ls.Charge.invoice = property(
        _charge_invoice, lambda self, value: setattr(self, "_invoice", value)
    )
    original_export = ls.Charge._export

    def export(self: Any, expand: Any = None) -> dict[str, Any]:
        body = original_export(self, expand=expand)
        # The current API links charges to invoices only through InvoicePayments.
        body.pop("invoice", None)
        return body

    ls.Charge._export = export


def _patch_fingerprints() -> None:
    # localstripe's fingerprint is a SHA-1 prefix of the number; ours is keyed and Stripe-like.
    # PaymentMethods, legacy cards and charges all call this module-level function.
    ls.fingerprint = card_fingerprint


def _list_charges(
    cls: type,
    /,
    url: str,
    customer: Any = None,
    payment_intent: Any = None,
    created: Any = None,
    limit: Any = None,
    starting_after: Any = None,
    **unexpected: Any,
) -> Any:
    """Charges newest first (Stripe's order), filtered by customer/payment_intent/created."""
    _reject_unexpected(unexpected)
    if customer is not None:
        ls.Customer._api_retrieve(customer)  # 404 for unknown customers, like Stripe
    return _newest_first_list(
        cls, url, limit, starting_after, created, customer=customer, payment_intent=payment_intent
    )


def _list_payment_intents(
    cls: type,
    /,
    url: str,
    customer: Any = None,
    created: Any = None,
    limit: Any = None,
    starting_after: Any = None,
    **unexpected: Any,
) -> Any:
    """PaymentIntents newest first, optionally for one customer."""
    _reject_unexpected(unexpected)
    return _newest_first_list(cls, url, limit, starting_after, created, customer=customer)


def _patch_lists() -> None:
    # localstripe lists charges oldest first and cannot filter PaymentIntents by customer.
    ls.Charge._api_list_all = classmethod(_list_charges)
    ls.PaymentIntent._api_list_all = classmethod(_list_payment_intents)


# --- coupons --------------------------------------------------------------------------------


def _new_coupon_id() -> str:
    """A random coupon id shaped like Stripe's (``Z4OV52SU``)."""
    alphabet = string.ascii_uppercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(COUPON_ID_LENGTH))


def _patch_coupons() -> None:
    original_init = ls.Coupon.__init__

    def init(self: Any, name: Any = None, **data: Any) -> None:
        if name is not None and not isinstance(name, str):
            raise stripe_error(400, "Invalid name", param="name")
        original_init(self, **data)
        self.name = name

    def create(cls: type, /, id: Any = None, **data: Any) -> Any:
        # Stripe generates an id when none is given; localstripe insists on one.
        if id is None:
            id = _new_coupon_id()
        elif isinstance(id, str) and f"coupon:{id}" in ls.store:
            raise stripe_error(
                400, "Coupon already exists.", code="resource_already_exists", param="id"
            )
        return cls(id=id, **data)

    ls.Coupon.__init__ = init
    ls.Coupon._api_create = classmethod(create)


# --- subscriptions and invoices -------------------------------------------------------------


def _items_with_plans(items: Any) -> Any:
    """Accept Stripe's ``items[][price]``: in this fake a Plan stands in for a Price."""
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and "price" in item and "plan" not in item:
                item["plan"] = item.pop("price")
    return items


def _discount_coupons(discounts: Any, current: Iterable[dict[str, Any]] = ()) -> list[Any]:
    """What ``discounts=[...]`` asks for, in order: a coupon for each ``{"coupon": id}`` and
    the discount itself for each ``{"discount": "di_..."}`` (``""`` clears discounts)."""
    if discounts == "":
        return []
    if not isinstance(discounts, list):
        raise stripe_error(400, "Invalid array", param="discounts")
    applied = {d["id"]: d for d in current}
    coupons: list[Any] = []
    for index, entry in enumerate(discounts):
        kind = next(iter(entry), None) if isinstance(entry, dict) and len(entry) == 1 else None
        value = entry.get(kind) if kind else None
        if kind not in ("coupon", "discount", "promotion_code") or not isinstance(value, str):
            raise stripe_error(
                400,
                "Each discounts[] entry needs exactly one of coupon, discount or promotion_code.",
                param=f"discounts[{index}]",
            )
        if kind == "discount":
            if value not in applied:
                raise stripe_error(
                    400,
                    f"No such discount: '{value}'",
                    code="resource_missing",
                    param=f"discounts[{index}][discount]",
                )
            coupons.append(applied[value])
            continue
        if kind == "promotion_code":
            # This fake has no promotion codes, so none can exist.
            raise stripe_error(
                400,
                f"No such promotion code: '{value}'",
                code="resource_missing",
                param=f"discounts[{index}][promotion_code]",
            )
        coupon_id = value
        coupon = ls.store.get(f"coupon:{coupon_id}")
        if coupon is None:
            raise stripe_error(
                400,
                f"No such coupon: '{coupon_id}'",
                code="resource_missing",
                param=f"discounts[{index}][coupon]",
            )
        coupons.append(coupon)
    return coupons


def _discount(subscription: Any, coupon: Any, now: int) -> dict[str, Any]:
    """A Stripe discount object applying ``coupon`` to ``subscription`` from ``now``."""
    end = None
    if coupon.duration == "repeating":
        months = relativedelta(months=coupon.duration_in_months)
        end = int((datetime.fromtimestamp(now) + months).timestamp())
    return {
        "id": "di_" + ls.random_id(24),
        "object": "discount",
        "coupon": coupon._export(),  # older API versions
        "source": {"type": "coupon", "coupon": coupon.id},  # newer ones
        "customer": subscription.customer,
        "subscription": subscription.id,
        "subscription_item": None,
        "invoice": None,
        "invoice_item": None,
        "promotion_code": None,
        "checkout_session": None,
        "start": now,
        "end": end,
    }


def _set_discounts(subscription: Any, wanted: list[Any], now: int) -> None:
    """Replace the discounts (Stripe's array semantics: what is not named again is dropped),
    keeping a discount already applied for a coupon named again."""
    applied = {d["source"]["coupon"]: d for d in subscription.discounts}
    discounts = []
    for entry in wanted:
        if isinstance(entry, dict):  # {"discount": "di_..."}: keep that one
            discounts.append(entry)
            continue
        if entry.id not in applied:
            entry.times_redeemed += 1
        discounts.append(applied.get(entry.id) or _discount(subscription, entry, now))
    subscription.discounts = discounts


def _subscription_export(original: Callable[..., dict[str, Any]]) -> Callable[..., Any]:
    """The current API's subscription: periods only on items, ``discounts`` as ids unless
    expanded, no legacy ``discount``."""

    def export(self: Any, expand: Any = None) -> dict[str, Any]:
        expand = list(expand or []) if isinstance(expand, list) else expand
        expanded = isinstance(expand, list) and "discounts" in expand
        if expanded:
            expand.remove("discounts")
        body = original(self, expand=expand)
        for legacy in ("current_period_start", "current_period_end", "discount"):
            body.pop(legacy, None)
        discounts = list(vars(self).get("discounts") or [])
        body["discounts"] = (
            [dict(d) for d in discounts] if expanded else [d["id"] for d in discounts]
        )
        return body

    return export


def _merge_metadata(obj: Any, metadata: Any) -> None:
    """Stripe's metadata update: merge keys, ``""`` deletes a key (or, alone, all of them)."""
    if metadata == "":
        obj.metadata = {}
    elif isinstance(metadata, dict):
        for key, value in metadata.items():
            if value == "":
                obj.metadata.pop(key, None)
            else:
                obj.metadata[key] = value


def _sync_trial(subscription: Any, now: int) -> None:
    """``trialing`` while ``trial_end`` is ahead, as in Stripe (localstripe stays put)."""
    if subscription.status in _ENDED_SUBSCRIPTION_STATUSES:
        return
    if subscription.trial_end is not None and subscription.trial_end > now:
        if subscription.status != "trialing":
            subscription.trial_start = now
            subscription.status = "trialing"
    elif subscription.status == "trialing":
        subscription.status = "active"


def _item_price(item: Any) -> dict[str, Any]:
    """The Price Stripe shows on a subscription item, made from the item's Plan."""
    plan = item.plan
    return {
        "id": plan.id,
        "object": "price",
        "active": plan.active,
        "billing_scheme": plan.billing_scheme,
        "created": plan.created,
        "currency": plan.currency,
        "livemode": False,
        "lookup_key": None,
        "metadata": dict(plan.metadata or {}),
        "nickname": plan.nickname,
        "product": plan.product,
        "recurring": {
            "interval": plan.interval,
            "interval_count": plan.interval_count,
            "usage_type": plan.usage_type,
        },
        "tiers_mode": plan.tiers_mode,
        "type": "recurring",
        "unit_amount": plan.amount if plan.billing_scheme == "per_unit" else None,
    }


def _list_subscriptions(
    cls: type,
    /,
    url: str,
    customer: Any = None,
    status: Any = None,
    created: Any = None,
    limit: Any = None,
    starting_after: Any = None,
    **unexpected: Any,
) -> Any:
    """Subscriptions newest first; all but canceled ones unless ``status`` says otherwise."""
    _reject_unexpected(unexpected)
    if status is not None and status != "all" and status not in SUBSCRIPTION_STATUSES:
        raise stripe_error(400, f"Invalid status: {status}", param="status")
    if customer is not None:
        ls.Customer._api_retrieve(customer)  # 404 for unknown customers, like Stripe

    def wanted(sub: Any) -> bool:
        if status is None:
            return bool(sub.status != "canceled")
        return status == "all" or sub.status == status

    in_range = _created_matcher(created)
    page = ls.List(url, limit=_checked_limit(limit), starting_after=starting_after)
    page._list = _newest_first(
        sub
        for sub in _stored(cls)
        if in_range(sub.created) and wanted(sub) and customer in (None, sub.customer)
    )
    return page


def _patch_subscriptions() -> None:
    original_init = ls.Subscription.__init__
    original_update = ls.Subscription._update
    original_cancel = ls.Subscription._api_delete
    original_period = ls.SubscriptionItem._current_period
    updatable = set(inspect.signature(original_update).parameters) - {"self"}

    def init(
        self: Any,
        discounts: Any = None,
        items: Any = None,
        trial_end: Any = None,
        trial_period_days: Any = None,
        **data: Any,
    ) -> None:
        coupons = [] if discounts is None else _discount_coupons(discounts)
        days = ls.try_convert_to_int(trial_period_days)
        if trial_end is None and type(days) is int and days > 0:
            # Stripe starts the trial now; localstripe would leave the subscription incomplete.
            trial_end = int(time.time()) + days * 24 * 3600
        original_init(
            self,
            items=_items_with_plans(items),
            trial_end=trial_end,
            trial_period_days=trial_period_days,
            **data,
        )
        now = int(time.time())
        self.discounts = []
        _set_discounts(self, coupons, now)
        if self.trial_end is not None and self.trial_end > now:
            self._period = {"start": self.start_date, "end": self.trial_end}
        _sync_trial(self, now)

    def update(
        self: Any,
        discounts: Any = None,
        proration_behavior: Any = None,
        items: Any = None,
        **data: Any,
    ) -> None:
        _reject_unexpected({k: v for k, v in data.items() if k not in updatable})
        if self.status in _ENDED_SUBSCRIPTION_STATUSES and (
            set(data) - {"metadata"} or discounts is not None or items is not None
        ):
            raise stripe_error(
                400,
                "A canceled subscription can only update its cancellation_details and metadata.",
            )
        if proration_behavior is not None and proration_behavior not in PRORATION_BEHAVIORS:
            raise stripe_error(400, "Invalid proration_behavior", param="proration_behavior")
        coupons = None if discounts is None else _discount_coupons(discounts, self.discounts)
        period_start = self.current_period_start
        original_update(self, items=_items_with_plans(items), **data)
        now = int(time.time())
        _merge_metadata(self, data.get("metadata"))  # localstripe drops it
        if coupons is not None:
            _set_discounts(self, coupons, now)
        cancel_at_period_end = ls.try_convert_to_bool(data.get("cancel_at_period_end"))
        if cancel_at_period_end is True:
            # Stripe records when cancellation was asked for and when it will happen.
            self.canceled_at = now
            self.cancel_at = self.current_period_end
        elif cancel_at_period_end is False and data.get("cancel_at") is None:
            self.canceled_at = self.cancel_at = None
        if data.get("trial_end") is not None and self.trial_end > now:
            # A new trial end also ends the current period there (Stripe moves the anchor).
            self._period = {"start": period_start, "end": self.trial_end}
        _sync_trial(self, now)

    def cancel(cls: type, /, id: str) -> Any:
        subscription = ls.Subscription._api_retrieve(id)
        if subscription.status == "canceled":
            return subscription  # cancelling twice changes nothing
        subscription = original_cancel(id)
        subscription.canceled_at = subscription.ended_at
        return subscription

    def current_period(self: Any) -> dict[str, int]:
        subscription = ls.store.get(f"subscription:{self._subscription}")
        period = getattr(subscription, "_period", None)
        return dict(period) if period else original_period(self)

    ls.Subscription.__init__ = init
    ls.Subscription._update = update
    ls.Subscription._export = _subscription_export(ls.Subscription._export)
    original_list_export = ls.List._export

    def list_export(self: Any, expand: Any = None) -> dict[str, Any]:
        # localstripe cannot expand a list of ids, so data.discounts is done here.
        wanted = isinstance(expand, list) and "data.discounts" in expand
        rest = [e for e in expand if e != "data.discounts"] if wanted else expand
        body = original_list_export(self, expand=rest)
        if wanted:
            start = self._starting_pos or 0
            for row, obj in zip(body["data"], self._list[start : start + self._limit], strict=True):
                if isinstance(obj, ls.Subscription):
                    row["discounts"] = obj._export(expand=["discounts"])["discounts"]
        return body

    ls.List._export = list_export
    ls.Subscription._api_delete = classmethod(cancel)
    ls.Subscription._api_list_all = classmethod(_list_subscriptions)
    ls.SubscriptionItem._current_period = current_period
    # Newer API versions keep the period and the price on the item, not the subscription.
    ls.SubscriptionItem.current_period_start = property(
        lambda self: self._current_period()["start"]
    )
    ls.SubscriptionItem.current_period_end = property(lambda self: self._current_period()["end"])
    ls.SubscriptionItem.price = property(_item_price)


def _patch_invoices() -> None:
    original_status = ls.Invoice.status.fget
    original_next_attempt = ls.Invoice.next_payment_attempt.fget

    def status(self: Any) -> str:
        return vars(self).get("_status") or original_status(self)

    def next_payment_attempt(self: Any) -> int | None:
        if "_next_payment_attempt" in vars(self):
            return self._next_payment_attempt
        return original_next_attempt(self)

    # Overridable from /_config/invoices/{id}, so tests can stage a failing invoice.
    ls.Invoice.status = property(status)
    ls.Invoice.next_payment_attempt = property(next_payment_attempt)


# --- events -----------------------------------------------------------------------------------


def _announcing_update(method: Callable[..., Any], event_type: str) -> Callable[..., Any]:
    """Wrap an instance method so that a change it makes sends ``event_type`` with
    ``previous_attributes`` (nothing is sent for an object still being created)."""

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not vars(self).get("_announced", True):
            return method(self, *args, **kwargs)
        before = self._export()
        result = method(self, *args, **kwargs)
        previous = diff(before, self._export())
        if previous:
            emit(event_type, self, previous)
        return result

    return wrapper


def _patch_customer_events() -> None:
    def update(cls: type, /, id: str, **data: Any) -> Any:
        customer = ls.Customer._api_retrieve(id)
        before = customer._export()
        settings = data.get("invoice_settings")
        if isinstance(settings, dict):
            default = settings.get("default_payment_method")
            if default == "":
                settings["default_payment_method"] = None
            elif default in TEST_PAYMENT_METHODS:
                pm = ls.PaymentMethod._api_attach(_resolved_payment_method(default), customer=id)
                settings["default_payment_method"] = pm.id
        ls.StripeObject._api_update.__func__(ls.Customer, id, **data)  # type: ignore[attr-defined]
        emit("customer.updated", customer, diff(before, customer._export()))
        return customer

    ls.Customer._api_update = classmethod(update)


def _open_test_dispute(charge: Any) -> None:
    """Dispute a charge made with one of Stripe's disputing test cards, as Stripe does."""
    status = DISPUTING_CARDS.get(_card_number(_charge_source(charge)) or "")
    if status is not None and charge.status == "succeeded":
        Dispute._open(charge, charge.amount, "fraudulent", status)


def _patch_charge_events() -> None:
    original_initialize = ls.Charge._initialize_charge
    original_capture = ls.Charge._capture

    def initialize(
        self: Any, on_success: Any = None, on_failure_now: Any = None, on_failure_later: Any = None
    ) -> None:
        announced = False

        def succeeded() -> None:
            nonlocal announced
            announced = True
            emit("charge.succeeded", self)  # before payment_intent.succeeded, as in Stripe
            _open_test_dispute(self)
            if on_success is not None:
                on_success()

        original_initialize(self, succeeded, on_failure_now, on_failure_later)
        if not announced and self.status == "succeeded" and not self.captured:
            emit("charge.succeeded", self)  # an authorization hold
            _open_test_dispute(self)

    def capture(self: Any, amount: Any, on_success: Any = None) -> None:
        before = self._export()

        def captured() -> None:
            emit("charge.captured", self, diff(before, self._export()))
            if on_success is not None:
                on_success()

        original_capture(self, amount, captured)

    ls.Charge._initialize_charge = initialize
    ls.Charge._capture = capture
    ls.Charge._update = _announcing_update(ls.Charge._update, "charge.updated")


def _patch_refund_events() -> None:
    original_create = ls.Refund._api_create
    original_update = ls.Refund._update

    def create(cls: type, /, **data: Any) -> Any:
        charge = _refund_target(data.get("charge"), data.get("payment_intent"))
        before = charge._export() if charge is not None else None
        refund = original_create(**data)
        emit("refund.created", refund)
        charge = ls.Charge._api_retrieve(refund.charge)
        emit("charge.refunded", charge, diff(before or {}, charge._export()))
        return refund

    def update(self: Any, **data: Any) -> None:
        before = self._export()
        original_update(self, **data)
        previous = diff(before, self._export())
        emit("refund.updated", self, previous)
        emit("charge.refund.updated", self, previous)

    ls.Refund._api_create = classmethod(create)
    ls.Refund._update = update


def _patch_subscription_events() -> None:
    original_init = ls.Subscription.__init__
    for name in (
        "_update",
        "_on_initial_payment_success",
        "_on_initial_payment_failure_now",
        "_on_initial_payment_failure_later",
        "_on_initial_payment_voided",
        "_on_recurring_payment_failure",
    ):
        method = getattr(ls.Subscription, name)
        setattr(ls.Subscription, name, _announcing_update(method, "customer.subscription.updated"))

    def init(self: Any, **data: Any) -> None:
        self._announced = False  # its first invoice is paid before it is announced
        original_init(self, **data)
        self._announced = True

    ls.Subscription.__init__ = init


def _patch_invoice_events() -> None:
    original_finalize = ls.Invoice._finalize
    original_success = ls.Invoice._on_payment_success

    def finalize(self: Any) -> None:
        original_finalize(self)
        emit("invoice.finalized", self)

    def payment_success(self: Any) -> None:
        emit("invoice.paid", self)  # localstripe sends invoice.payment_succeeded
        original_success(self)

    ls.Invoice._finalize = finalize
    ls.Invoice._on_payment_success = payment_success


def _list_events(
    cls: type,
    /,
    url: str,
    type: Any = None,
    created: Any = None,
    limit: Any = None,
    starting_after: Any = None,
    **unexpected: Any,
) -> Any:
    """Events newest first, optionally of one type."""
    _reject_unexpected(unexpected)
    return _newest_first_list(cls, url, limit, starting_after, created, type=type)


def _patch_events(hub: EventHub) -> None:
    install_events(hub)
    _patch_customer_events()
    _patch_charge_events()
    _patch_refund_events()
    _patch_subscription_events()
    _patch_invoice_events()
    ls.Event._api_list_all = classmethod(_list_events)


# --- deleted customers and list limits ----------------------------------------------------------

_DELETED_PREFIX = "deleted_customer:"
_CUSTOMER_PATH = re.compile(r"/v1/customers/(cus_\w+)")


def _patch_customer_deletion() -> None:
    original_delete = ls.Customer._api_delete

    def delete(cls: type, /, id: str) -> Any:
        original_delete(id)
        stub = {"id": id, "object": "customer", "deleted": True}
        # In localstripe's store, so that DELETE /_config/data forgets it too.
        ls.store[_DELETED_PREFIX + id] = stub
        return _DeletedStub(stub)

    ls.Customer._api_delete = classmethod(delete)


class _DeletedStub:
    """What ``DELETE /v1/customers/{id}`` answers (exported like a localstripe object)."""

    def __init__(self, stub: dict[str, Any]) -> None:
        self._stub = stub

    def _export(self, expand: Any = None) -> dict[str, Any]:
        return dict(self._stub)


@web.middleware
async def deleted_customers_middleware(
    request: web.Request, handler: Handler
) -> web.StreamResponse:
    """``GET /v1/customers/{id}`` of a deleted customer answers its stub, as Stripe does."""
    match = _CUSTOMER_PATH.fullmatch(request.path)
    if request.method == "GET" and match is not None:
        stub = ls.store.get(_DELETED_PREFIX + match[1])
        if stub is not None:
            return ls_server.json_response(stub)
    return await handler(request)


def _patch_list_limits() -> None:
    original_init = ls.List.__init__

    def init(self: Any, url: Any = None, limit: Any = None, starting_after: Any = None) -> None:
        original_init(self, url, _checked_limit(limit), starting_after)

    # Every list goes through List, so this bounds ``limit`` on all of them like Stripe.
    ls.List.__init__ = init


def _patch_resources(hub: EventHub) -> None:
    """Apply every patch to localstripe's resource classes (once, from install_extensions)."""
    _patch_store()
    _patch_list_limits()
    _patch_customer_deletion()
    _patch_test_payment_methods()
    _patch_refunds()
    _patch_declines()
    _patch_charge_fields()
    _patch_fingerprints()
    _patch_lists()
    _patch_coupons()
    _patch_subscriptions()
    _patch_invoices()
    _patch_events(hub)  # last: it wraps methods the patches above replaced


# --- search --------------------------------------------------------------------------------


FieldGetter = Callable[[Any], Any]


def _charge_fingerprint(charge: Any) -> str | None:
    card = (_payment_method_details(charge) or {}).get("card") or {}
    return card.get("fingerprint")


CUSTOMER_SEARCH_FIELDS: Mapping[str, FieldGetter] = {
    "email": lambda customer: customer.email,
    "name": lambda customer: customer.name,
}
CHARGE_SEARCH_FIELDS: Mapping[str, FieldGetter] = {
    "customer": lambda charge: charge.customer,
    "status": lambda charge: charge.status,
    "payment_method_details.card.fingerprint": _charge_fingerprint,
}


@dataclass(frozen=True)
class SearchClause:
    """One ``field:'value'`` clause of a Stripe search query."""

    field: str  # a key of the resource's search fields, or "metadata"
    value: str
    metadata_key: str | None = None
    negated: bool = False  # Stripe's ``-field:'value'``

    def matches(self, obj: Any, fields: Mapping[str, FieldGetter]) -> bool:
        """Whether an object satisfies the clause (Stripe's ``:`` is case-insensitive)."""
        if self.field == "metadata":
            actual = (getattr(obj, "metadata", None) or {}).get(self.metadata_key)
        else:
            actual = fields[self.field](obj)
        equal = isinstance(actual, str) and actual.casefold() == self.value.casefold()
        return equal != self.negated


@dataclass(frozen=True)
class SearchQuery:
    """Clauses joined all by AND or all by OR (Stripe does not allow mixing them)."""

    clauses: tuple[SearchClause, ...]
    any_clause: bool = False  # OR

    def matches(self, obj: Any, fields: Mapping[str, FieldGetter]) -> bool:
        """Whether an object satisfies the query."""
        results = (clause.matches(obj, fields) for clause in self.clauses)
        return any(results) if self.any_clause else all(results)


_QUOTED = r"'(?:[^'\\]|\\.)*'" + r'|"(?:[^"\\]|\\.)*"'
_CLAUSE_RE = re.compile(
    rf"""\s*(?P<negated>-)?(?:metadata\[(?P<key>{_QUOTED})\]|(?P<field>[a-z_]+(?:\.[a-z_]+)*))"""
    rf"""\s*:\s*(?P<value>{_QUOTED})\s*"""
)
_CONJUNCTION_RE = re.compile(r"(AND|OR)\b")


def _unquote(token: str) -> str:
    """Strip the quotes of a query string literal and undo backslash escapes."""
    return re.sub(r"\\(.)", r"\1", token[1:-1])


def parse_search_query(query: Any, fields: Collection[str]) -> SearchQuery:
    """Parse the subset of Stripe's search language this fake supports, or raise a 400."""
    if not isinstance(query, str) or not query.strip():
        raise stripe_error(400, "Missing required param: query.", param="query")
    supported = ", ".join([*(f"{f}:'...'" for f in fields), "metadata['key']:'...'"])
    supported += " (each may be negated with -)"
    clauses: list[SearchClause] = []
    conjunctions: set[str] = set()
    pos = 0
    while True:
        match = _CLAUSE_RE.match(query, pos)
        field = match["field"] if match else None
        if match is None or (field is not None and field not in fields):
            raise stripe_error(
                400,
                f"Unsupported search query {query!r}: this fake Stripe supports {supported} "
                "clauses, all joined by AND or all by OR.",
                param="query",
            )
        key = match["key"]
        clauses.append(
            SearchClause(
                field=field or "metadata",
                value=_unquote(match["value"]),
                metadata_key=_unquote(key) if key else None,
                negated=match["negated"] is not None,
            )
        )
        pos = match.end()
        if pos == len(query):
            return SearchQuery(tuple(clauses), any_clause=conjunctions == {"OR"})
        # Stripe reads clauses separated only by a space as joined by AND.
        conjunction = _CONJUNCTION_RE.match(query, pos)
        conjunctions.add(conjunction[1] if conjunction else "AND")
        if len(conjunctions) > 1:
            raise stripe_error(400, f"Search query {query!r} cannot mix AND and OR.", param="query")
        pos = conjunction.end() if conjunction else pos


def _page_offset(page: Any) -> int:
    """Decode the ``page`` cursor we hand out as ``next_page``."""
    if page is None:
        return 0
    match = re.fullmatch(r"offset:(\d+)", str(page))
    if match is None:
        raise stripe_error(400, f"Invalid page cursor: {page!r}", param="page")
    return int(match[1])


def make_search_handler(
    cls: Any, url: str, fields: Mapping[str, FieldGetter]
) -> Callable[[web.Request], Any]:
    """A ``GET /v1/<objects>/search`` handler: objects matching the query, newest first."""

    async def search(request: web.Request) -> web.Response:
        params = ls_server.unflatten_data(request.query)
        query = parse_search_query(params.get("query"), fields)
        limit = _checked_limit(params.get("limit"))
        offset = _page_offset(params.get("page"))
        matches = [obj for obj in _newest_first(_stored(cls)) if query.matches(obj, fields)]
        has_more = len(matches) > offset + limit
        return ls_server.json_response(
            {
                "object": "search_result",
                "url": url,
                "data": [obj._export() for obj in matches[offset : offset + limit]],
                "has_more": has_more,
                "next_page": f"offset:{offset + limit}" if has_more else None,
            }
        )

    return search


# --- billing portal --------------------------------------------------------------------------


class BillingPortalSession(ls.StripeObject):
    """A customer portal session; its ``url`` is a page on this fake server."""

    object = "billing_portal.session"
    _id_prefix = "bps_"

    def __init__(
        self,
        base_url: str,
        customer: Any = None,
        return_url: Any = None,
        flow_data: Any = None,
        configuration: Any = None,
        locale: Any = None,
        on_behalf_of: Any = None,
        **unexpected: Any,
    ) -> None:
        _reject_unexpected(unexpected)
        if not isinstance(customer, str) or not customer:
            raise stripe_error(400, "Missing required param: customer.", param="customer")
        if f"customer:{customer}" not in ls.store:
            raise stripe_error(
                404, f"No such customer: '{customer}'", code="resource_missing", param="customer"
            )
        if return_url is not None:
            return_url = _web_url(return_url, "return_url")
        flow = None if flow_data is None else self._checked_flow(flow_data)
        super().__init__()
        self.customer = customer
        self.return_url = return_url
        self.flow = flow
        self.configuration = configuration
        self.locale = locale
        self.on_behalf_of = on_behalf_of
        self.url = f"{base_url}/_portal/{self.id}"

    @staticmethod
    def _checked_flow(flow_data: Any) -> dict[str, Any]:
        """Validate ``flow_data`` and return the ``flow`` Stripe echoes on the session."""
        kind = flow_data.get("type") if isinstance(flow_data, dict) else None
        if kind not in PORTAL_FLOW_TYPES:
            raise stripe_error(400, f"Invalid flow_data[type]: {kind}", param="flow_data[type]")
        after = flow_data.get("after_completion") or {"type": "portal_homepage"}
        after_type = after.get("type") if isinstance(after, dict) else None
        if after_type not in PORTAL_AFTER_COMPLETION_TYPES:
            raise stripe_error(
                400,
                f"Invalid flow_data[after_completion][type]: {after_type}",
                param="flow_data[after_completion][type]",
            )
        redirect = None
        if after_type == "redirect":
            target = (after.get("redirect") or {}).get("return_url")
            param = "flow_data[after_completion][redirect][return_url]"
            redirect = {"return_url": _web_url(target, param)}
        return {
            **flow_data,
            "after_completion": {
                "type": after_type,
                "redirect": redirect,
                "hosted_confirmation": after.get("hosted_confirmation"),
            },
        }

    def _after_completion_url(self) -> str | None:
        redirect = ((self.flow or {}).get("after_completion") or {}).get("redirect") or {}
        return redirect.get("return_url") or self.return_url


class BillingPortalConfiguration(ls.StripeObject):
    """A customer portal configuration; only the Dashboard (``/_config/billing_portal/default``)
    makes the default one."""

    object = "billing_portal.configuration"
    _id_prefix = "bpc_"

    def __init__(
        self,
        features: Any = None,
        business_profile: Any = None,
        default_return_url: Any = None,
        metadata: Any = None,
        name: Any = None,
        login_page: Any = None,
        _is_default: bool = False,
        **unexpected: Any,
    ) -> None:
        _reject_unexpected(unexpected)
        if not isinstance(features, dict) or not features:
            raise stripe_error(400, "Missing required param: features.", param="features")
        if default_return_url not in (None, ""):
            default_return_url = _web_url(default_return_url, "default_return_url")
        super().__init__()
        self.active = True
        self.is_default = _is_default
        self.features = features
        self.business_profile = business_profile or {}
        self.default_return_url = default_return_url or None
        self.metadata = dict(metadata or {})
        self.name = name
        self.login_page = {"enabled": False, "url": None}
        self.application = None
        self.updated = self.created

    @classmethod
    def _api_update(cls, id: str, **data: Any) -> Any:
        """Change ``active``, ``features``, ``metadata``... (a default cannot be deactivated)."""
        configuration = cls._api_retrieve(id)
        _reject_unknown_fields(
            data, {"active", "features", "business_profile", "default_return_url", "metadata"}
        )
        active = ls.try_convert_to_bool(data.pop("active", configuration.active))
        if type(active) is not bool:
            raise stripe_error(400, "Invalid active flag", param="active")
        if configuration.is_default and not active:
            raise stripe_error(400, "You cannot deactivate the default configuration.")
        configuration.active = active
        _merge_metadata(configuration, data.pop("metadata", None))
        for key, value in data.items():
            setattr(configuration, key, value)
        configuration.updated = int(time.time())
        return configuration

    @classmethod
    def _api_delete(cls, id: str) -> Any:
        raise stripe_error(405, "Portal configurations cannot be deleted")

    @classmethod
    def _api_list_all(
        cls,
        url: str,
        active: Any = None,
        is_default: Any = None,
        limit: Any = None,
        starting_after: Any = None,
        **unexpected: Any,
    ) -> Any:
        """Configurations newest first, filtered by ``active`` and ``is_default``."""
        _reject_unexpected(unexpected)
        flags = {
            "active": ls.try_convert_to_bool(active),
            "is_default": ls.try_convert_to_bool(is_default),
        }
        if any(v not in (None, True, False) for v in flags.values()):
            raise stripe_error(400, "Invalid boolean filter")
        return _newest_first_list(cls, url, limit, starting_after, None, **flags)


def default_portal_configuration() -> BillingPortalConfiguration | None:
    """The account's default portal configuration, once the Dashboard settings are saved."""
    return next((c for c in _stored(BillingPortalConfiguration) if c.is_default), None)


def _portal_configuration_for_session(configuration: Any) -> str:
    """The configuration a new session uses, or Stripe's error when there is none."""
    if configuration is None:
        default = default_portal_configuration()
        if default is None:
            raise stripe_error(
                400,
                "No configuration provided and your test mode default configuration has not "
                "been created. Provide a configuration or create your default by saving your "
                "customer portal settings in test mode at "
                "https://dashboard.stripe.com/test/settings/billing/portal.",
            )
        return str(default.id)
    found = ls.store.get(f"billing_portal.configuration:{configuration}")
    if found is None:
        raise stripe_error(
            400,
            f"No such configuration: '{configuration}'",
            code="resource_missing",
            param="configuration",
        )
    if not found.active:
        raise stripe_error(
            400, f"The configuration {configuration} is not active.", param="configuration"
        )
    return str(found.id)


async def config_default_portal_configuration(request: web.Request) -> web.Response:
    """``POST /_config/billing_portal/default``: save the Dashboard's portal settings, which
    creates (or returns) the default configuration."""
    data = await ls_server.get_post_data(request) or {}
    _reject_unknown_fields(data, {"default_return_url"})
    default = default_portal_configuration()
    if default is None:
        default = BillingPortalConfiguration(
            features={
                "customer_update": {"enabled": True, "allowed_updates": ["email", "address"]},
                "invoice_history": {"enabled": True},
                "payment_method_update": {"enabled": True},
                "subscription_cancel": {"enabled": True, "mode": "at_period_end"},
            },
            default_return_url=data.get("default_return_url"),
            _is_default=True,
        )
    return ls_server.json_response(default._export())


async def create_portal_session(request: web.Request) -> web.Response:
    """``POST /v1/billing_portal/sessions``: a session whose URL is served by this fake."""
    data = await ls_server.get_post_data(request) or {}
    expand = data.pop("expand", None)
    base_url = f"{request.scheme}://{request.host}"
    customer = data.get("customer")
    if isinstance(customer, str) and f"customer:{customer}" in ls.store:
        data["configuration"] = _portal_configuration_for_session(data.get("configuration"))
    session = BillingPortalSession(base_url, **data)
    return ls_server.json_response(session._export(expand=expand))


_PORTAL_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Referrer-Policy": "no-referrer",
}
_FLOW_TITLES = {
    "payment_method_update": "Update your payment method",
    "customer_update": "Update your billing details",
    "subscription_cancel": "Cancel your subscription",
    "subscription_pause": "Pause your subscription",
    "subscription_update": "Change your plan",
    "subscription_update_confirm": "Confirm your plan change",
}


def _link(url: str | None, text: str) -> str:
    if not url:
        return ""
    return f'<p><a href="{html.escape(url, quote=True)}">{html.escape(text)}</a></p>'


async def portal_page(request: web.Request) -> web.Response:
    """``GET /_portal/{id}``: the page a portal session URL opens (nothing on it is real)."""
    session = ls.store.get(f"billing_portal.session:{request.match_info['id']}")
    if session is None:
        return web.Response(
            status=404,
            text="<!doctype html><title>Not found</title><p>No such portal session.</p>",
            content_type="text/html",
            headers=_PORTAL_HEADERS,
        )
    customer = ls.store.get(f"customer:{session.customer}")
    who = getattr(customer, "name", None) or getattr(customer, "email", None) or session.customer
    kind = (session.flow or {}).get("type")
    title = _FLOW_TITLES.get(kind, "Manage your billing")
    body = (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} · fake Stripe billing portal</title></head><body>\n"
        "<h1>Fake Stripe billing portal</h1>\n"
        f"<h2>{html.escape(title)}</h2>\n"
        f"<p>This is the (fake) Stripe billing portal for {html.escape(who)} "
        f"(<code>{html.escape(session.customer)}</code>), session "
        f"<code>{html.escape(session.id)}</code>.</p>\n"
        "<p>Nothing here is real: no card details are collected and nothing changes.</p>\n"
        f"{_link(session._after_completion_url(), 'Done (pretend the card was updated)')}\n"
        f"{_link(session.return_url, 'Return without changes')}\n"
        "</body></html>\n"
    )
    return web.Response(text=body, content_type="text/html", headers=_PORTAL_HEADERS)


def _exempt_portal_pages_from_auth(app: web.Application) -> None:
    """Let browsers open ``/_portal/{id}`` without an API key, like Stripe's portal URLs."""
    checked_auth = ls_server.auth_middleware

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "GET" and request.path.startswith("/_portal/"):
            return await handler(request)
        return await checked_auth(request, handler)

    app.middlewares[list(app.middlewares).index(checked_auth)] = auth


# --- invoice payments ------------------------------------------------------------------------


def _invoice_payment(invoice: Any) -> dict[str, Any]:
    """The InvoicePayment linking an invoice to the PaymentIntent that paid (or tried to)."""
    intent = ls.PaymentIntent._api_retrieve(invoice.payment_intent)
    status = {"succeeded": "paid", "canceled": "canceled"}.get(intent.status, "open")
    digest = hashlib.sha256(f"{invoice.id}:{intent.id}".encode()).hexdigest()
    return {
        "id": "inpay_" + digest[:24],
        "object": "invoice_payment",
        "amount_paid": intent.amount if status == "paid" else None,
        "amount_requested": intent.amount,
        "created": intent.created,
        "currency": intent.currency,
        "invoice": invoice.id,
        "is_default": True,
        "livemode": False,
        "payment": {"type": "payment_intent", "payment_intent": intent.id},
        "status": status,
        "status_transitions": {
            "canceled_at": None,
            "paid_at": invoice.status_transitions.get("paid_at") if status == "paid" else None,
        },
    }


async def list_invoice_payments(request: web.Request) -> web.Response:
    """``GET /v1/invoice_payments``: by ``invoice`` or by ``payment[payment_intent]``."""
    params = ls_server.unflatten_data(request.query)
    invoice_id = params.pop("invoice", None)
    payment = params.pop("payment", None)
    limit = _checked_limit(params.pop("limit", None))
    params.pop("starting_after", None)
    _reject_unexpected(params)
    intent_id = None
    if payment is not None:
        if not isinstance(payment, dict) or payment.get("type") != "payment_intent":
            raise stripe_error(400, "payment[type] must be payment_intent", param="payment[type]")
        intent_id = payment.get("payment_intent")
    invoices = [
        inv
        for inv in _newest_first(_stored(ls.Invoice))
        if inv.payment_intent is not None
        and invoice_id in (None, inv.id)
        and intent_id in (None, inv.payment_intent)
    ]
    rows = [_invoice_payment(inv) for inv in invoices]
    return ls_server.json_response(
        {
            "object": "list",
            "url": "/v1/invoice_payments",
            "data": rows[:limit],
            "has_more": len(rows) > limit,
        }
    )


# --- test-support endpoints ----------------------------------------------------------------


async def config_dispute_status(request: web.Request) -> web.Response:
    """``POST /_config/disputes/{id}``: settle a dispute (``status`` won or lost), as the bank
    would, with Stripe's events."""
    data = await ls_server.get_post_data(request) or {}
    _reject_unknown_fields(data, {"status"})
    status = data.get("status")
    if status not in DISPUTE_STATUSES:
        raise stripe_error(400, f"Invalid dispute status: {status}", param="status")
    dispute = Dispute._api_retrieve(request.match_info["id"])
    dispute._set_status(status)
    return ls_server.json_response(dispute._export())


async def config_create_dispute(request: web.Request) -> web.Response:
    """``POST /_config/disputes``: open a dispute on a charge (form: charge, reason, ...)."""
    data = await ls_server.get_post_data(request) or {}
    return ls_server.json_response(Dispute._config_create(**data)._export())


async def config_backdate_charge(request: web.Request) -> web.Response:
    """``POST /_config/charges/{id}/created``: move a charge (and its records) back in time."""
    data = await ls_server.get_post_data(request) or {}
    created = ls.try_convert_to_int(data.get("created"))
    if type(created) is not int or created <= 0:
        raise stripe_error(400, "created must be a unix timestamp", param="created")
    charge = ls.Charge._api_retrieve(request.match_info["id"])
    charge.created = created
    txn = ls.store.get(f"balance_transaction:{charge.balance_transaction}")
    if txn is not None:
        txn.created = txn.available_on = created
    intent = ls.store.get(f"payment_intent:{charge.payment_intent}")
    if intent is not None and intent.latest_charge is charge:
        intent.created = created
    return ls_server.json_response(charge._export())


def _reject_unknown_fields(data: Mapping[str, Any], known: Collection[str]) -> None:
    _reject_unexpected({k: v for k, v in data.items() if k not in known})


async def config_subscription(request: web.Request) -> web.Response:
    """``POST /_config/subscriptions/{id}``: force ``status``, ``canceled_at`` ("" clears it)
    and the current period, e.g. to stage a past_due subscription.

    As in Stripe, a subscription made past_due or unpaid has an open latest invoice; past_due
    ones get a next payment attempt in three days unless ``/_config/invoices/{id}`` says else.
    """
    data = await ls_server.get_post_data(request) or {}
    _reject_unknown_fields(
        data, {"status", "canceled_at", "current_period_start", "current_period_end"}
    )
    subscription = ls.Subscription._api_retrieve(request.match_info["id"])
    status = data.get("status")
    if status is not None and status not in SUBSCRIPTION_STATUSES:
        raise stripe_error(400, f"Invalid status: {status}", param="status")
    canceled_at = None
    if "canceled_at" in data:
        canceled_at = _timestamp(data["canceled_at"], "canceled_at", nullable=True)
    period = {
        "start": subscription.current_period_start,
        "end": subscription.current_period_end,
    }
    for edge in ("start", "end"):
        if f"current_period_{edge}" in data:
            period[edge] = _timestamp(data[f"current_period_{edge}"], f"current_period_{edge}")
    if period["start"] >= period["end"]:
        raise stripe_error(400, "current_period_start must come before current_period_end")

    now = int(time.time())
    subscription._period = period
    if "canceled_at" in data:
        subscription.canceled_at = canceled_at
    if status is not None:
        subscription.status = status
        if status == "canceled":
            subscription.ended_at = subscription.ended_at or now
            subscription.canceled_at = subscription.canceled_at or subscription.ended_at
        invoice = ls.store.get(f"invoice:{subscription.latest_invoice}")
        if status in ("past_due", "unpaid") and invoice is not None:
            if invoice.status == "paid":
                invoice._status = "open"
            if "_next_payment_attempt" not in vars(invoice):
                invoice._next_payment_attempt = (
                    now + RETRY_GAP_SECONDS if status == "past_due" else None
                )
    return ls_server.json_response(subscription._export())


async def config_invoice(request: web.Request) -> web.Response:
    """``POST /_config/invoices/{id}``: force ``status``, ``next_payment_attempt`` ("" clears
    it) and ``attempt_count``, as Smart Retries would leave a failing invoice."""
    data = await ls_server.get_post_data(request) or {}
    _reject_unknown_fields(data, {"status", "next_payment_attempt", "attempt_count"})
    invoice = ls.Invoice._api_retrieve(request.match_info["id"])
    status = data.get("status")
    if status is not None and status not in INVOICE_STATUSES:
        raise stripe_error(400, f"Invalid status: {status}", param="status")
    next_attempt = None
    if "next_payment_attempt" in data:
        next_attempt = _timestamp(
            data["next_payment_attempt"], "next_payment_attempt", nullable=True
        )
    attempt_count = ls.try_convert_to_int(data.get("attempt_count", invoice.attempt_count))
    if type(attempt_count) is not int or attempt_count < 0:
        raise stripe_error(400, "Invalid attempt_count", param="attempt_count")

    if status is not None:
        invoice._status = status
    if "next_payment_attempt" in data:
        invoice._next_payment_attempt = next_attempt
    invoice.attempt_count = attempt_count
    return ls_server.json_response(invoice._export())


# --- idempotency ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredResponse:
    """The first response given for an idempotency key, and what it answered."""

    endpoint: tuple[str, str]
    params: Any
    status: int
    body: bytes
    stored_at: float


class IdempotencyCache:
    """Stripe's idempotency layer: one execution per (API key, Idempotency-Key), kept 24 hours."""

    def __init__(self, max_entries: int = IDEMPOTENCY_CACHE_SIZE) -> None:
        self._responses: OrderedDict[tuple[str, str], StoredResponse] = OrderedDict()
        self._running: set[tuple[str, str]] = set()
        self._max_entries = max_entries

    def clear(self) -> None:
        """Forget every stored response (requests still running finish normally)."""
        self._responses.clear()

    def get(self, key: tuple[str, str]) -> StoredResponse | None:
        """The stored response for a key, unless it has expired."""
        stored = self._responses.get(key)
        if stored is not None and time.time() - stored.stored_at >= IDEMPOTENCY_KEY_TTL_SECONDS:
            del self._responses[key]
            return None
        return stored

    def put(self, key: tuple[str, str], stored: StoredResponse) -> None:
        """Store a response, pruning the oldest keys like Stripe eventually does."""
        self._responses[key] = stored
        while len(self._responses) > self._max_entries:
            self._responses.popitem(last=False)

    def age(self, seconds: float) -> None:
        """Pretend every stored key was stored ``seconds`` earlier (test support)."""
        for key, stored in self._responses.items():
            self._responses[key] = replace(stored, stored_at=stored.stored_at - seconds)

    @contextlib.contextmanager
    def running(self, key: tuple[str, str]) -> Iterator[None]:
        """Mark a key as executing; a second request with it meanwhile gets Stripe's 409."""
        if key in self._running:
            raise stripe_error(
                409,
                "There is currently another in-progress request using this Idempotent Key "
                "(that probably means you submitted twice, and the other request is still "
                "going through): "
                f"{key[1]}. Please try again later.",
                error_type="idempotency_error",
            )
        self._running.add(key)
        try:
            yield
        finally:
            self._running.discard(key)


async def _request_params(request: web.Request) -> tuple[Any, ...]:
    """Order-insensitive form of a request's parameters, to detect key reuse."""
    body = await request.read()
    query = tuple(sorted(parse_qsl(request.query_string, keep_blank_values=True)))
    if request.content_type == "application/x-www-form-urlencoded":
        form = tuple(sorted(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)))
        return query, form
    return query, body


def _saved_by_stripe(response: web.StreamResponse) -> bool:
    # Stripe saves a result once the endpoint starts executing: successes, card declines and
    # 500s. localstripe's other 4xx are parameter validation, which Stripe does not save; a
    # 429 or a fault injected before execution never reached the endpoint.
    if response.get(NOT_EXECUTED):
        return False
    status = response.status
    return status < 400 or status == 402 or status >= 500


def _replay(
    stored: StoredResponse, endpoint: tuple[str, str], params: Any, idempotency_key: str
) -> web.Response:
    """Answer a retried request from the stored response, or refuse a reused key."""
    if stored.endpoint != endpoint:
        problem = "for the same endpoint they were first used for"
    elif stored.params != params:
        problem = "with the same parameters they were first used with"
    else:
        return web.Response(
            status=stored.status,
            body=stored.body,
            content_type="application/json",
            headers={"Idempotent-Replayed": "true", "Idempotency-Key": idempotency_key},
        )
    raise stripe_error(
        400,
        f"Keys for idempotent requests can only be used {problem}. Try "
        f"using a key other than '{idempotency_key}' if you meant to "
        "execute a different request.",
        error_type="idempotency_error",
    )


def make_idempotency_middleware(cache: IdempotencyCache) -> Middleware:
    """aiohttp middleware replaying POST /v1/... responses for a repeated Idempotency-Key."""

    @web.middleware
    async def idempotency(request: web.Request, handler: Handler) -> web.StreamResponse:
        idempotency_key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or not idempotency_key or not request.path.startswith("/v1/"):
            return await handler(request)
        key = (ls_server.get_api_key(request) or "", idempotency_key)
        endpoint = (request.method, request.path)
        params = await _request_params(request)
        stored = cache.get(key)
        if stored is not None:
            return _replay(stored, endpoint, params, idempotency_key)
        with cache.running(key):
            try:
                response = await handler(request)
            except UserError as error:  # this middleware sits inside localstripe's error one
                response = error.to_response()
            if (
                isinstance(response, web.Response)
                and isinstance(response.body, bytes)
                and _saved_by_stripe(response)
            ):
                cache.put(
                    key,
                    StoredResponse(endpoint, params, response.status, response.body, time.time()),
                )
            return response

    return idempotency


def make_flush_middleware(
    cache: IdempotencyCache, hub: EventHub, faults: FaultInjector
) -> Middleware:
    """aiohttp middleware making ``DELETE /_config/data`` also forget idempotency keys, the
    webhook delivery log and armed faults."""

    @web.middleware
    async def flush_extensions(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if request.method == "DELETE" and request.path == "/_config/data":
            # Disputes, events and deleted-customer stubs live in localstripe's store.
            cache.clear()
            hub.forget()
            faults.clear()
        return response

    return flush_extensions


def add_fault_routes(app: web.Application, cache: IdempotencyCache, faults: FaultInjector) -> None:
    """Test-support routes arming faults and ageing idempotency keys."""

    async def arm(request: web.Request) -> web.Response:
        data = await ls_server.get_post_data(request) or {}
        _reject_unknown_fields(
            data, {"path_prefix", "method", "status", "count", "after_execution", "hold"}
        )
        path, method = data.get("path_prefix"), str(data.get("method", "POST")).upper()
        hold = ls.try_convert_to_bool(data.get("hold", False))
        status = ls.try_convert_to_int(data.get("status", 503 if hold is True else 500))
        count = ls.try_convert_to_int(data.get("count", 1))
        after = ls.try_convert_to_bool(data.get("after_execution", False))
        if type(hold) is not bool:
            raise stripe_error(400, "Invalid hold flag", param="hold")
        if not isinstance(path, str) or not path.startswith("/v1/"):
            raise stripe_error(400, "path_prefix must start with /v1/", param="path_prefix")
        if status not in FAULT_STATUSES:
            raise stripe_error(400, "status must be 429, 500 or 503", param="status")
        if type(count) is not int or count < 1 or type(after) is not bool:
            raise stripe_error(400, "Invalid count or after_execution")
        if after and status == 429:
            raise stripe_error(400, "A 429 is refused before execution", param="after_execution")
        faults.add(Fault(method, path, status, count, after, hold))
        return ls_server.json_response({"armed": len(faults.faults)})

    async def disarm(request: web.Request) -> web.Response:
        faults.clear()
        return ls_server.json_response({"armed": 0})

    async def state(request: web.Request) -> web.Response:
        armed = sum(f.count for f in faults.faults)
        return ls_server.json_response({"armed": armed, "held": faults.held})

    async def release(request: web.Request) -> web.Response:
        faults.release()
        return ls_server.json_response({"held": faults.held})

    async def age_keys(request: web.Request) -> web.Response:
        data = await ls_server.get_post_data(request) or {}
        _reject_unknown_fields(data, {"age_seconds"})
        seconds = ls.try_convert_to_int(data.get("age_seconds"))
        if type(seconds) is not int or seconds < 0:
            raise stripe_error(400, "age_seconds must be a positive integer", param="age_seconds")
        cache.age(seconds)
        return ls_server.json_response({"aged_by": seconds})

    app.router.add_post("/_config/faults", arm)
    app.router.add_delete("/_config/faults", disarm)
    app.router.add_get("/_config/faults", state)
    app.router.add_post("/_config/faults/release", release)
    app.router.add_post("/_config/idempotency", age_keys)


# --- wiring --------------------------------------------------------------------------------


def _add_routes(app: web.Application) -> None:
    # A plain path is matched before localstripe's /v1/customers/{id} in aiohttp >= 3.9.
    app.router.add_get(
        "/v1/customers/search",
        make_search_handler(ls.Customer, "/v1/customers/search", CUSTOMER_SEARCH_FIELDS),
    )
    app.router.add_get(
        "/v1/charges/search",
        make_search_handler(ls.Charge, "/v1/charges/search", CHARGE_SEARCH_FIELDS),
    )
    app.router.add_post("/v1/billing_portal/sessions", create_portal_session)
    app.router.add_get("/_portal/{id}", portal_page)
    app.router.add_get("/v1/disputes", ls_server.api_list_all(Dispute, "/v1/disputes"))
    app.router.add_get("/v1/disputes/{id}", ls_server.api_retrieve(Dispute, "/v1/disputes"))
    app.router.add_post("/v1/disputes/{id}", ls_server.api_update(Dispute, "/v1/disputes"))
    app.router.add_post(
        "/v1/disputes/{id}/close",
        ls_server.api_extra(Dispute._api_close, "/v1/disputes/{id}/close"),
    )
    app.router.add_get("/v1/invoice_payments", list_invoice_payments)
    portal_url = "/v1/billing_portal/configurations"
    app.router.add_post(portal_url, ls_server.api_create(BillingPortalConfiguration, portal_url))
    app.router.add_get(portal_url, ls_server.api_list_all(BillingPortalConfiguration, portal_url))
    app.router.add_get(
        portal_url + "/{id}", ls_server.api_retrieve(BillingPortalConfiguration, portal_url)
    )
    app.router.add_post(
        portal_url + "/{id}", ls_server.api_update(BillingPortalConfiguration, portal_url)
    )
    app.router.add_post("/_config/billing_portal/default", config_default_portal_configuration)
    app.router.add_post("/_config/disputes", config_create_dispute)
    app.router.add_post("/_config/disputes/{id}", config_dispute_status)
    app.router.add_post("/_config/charges/{id}/created", config_backdate_charge)
    app.router.add_post("/_config/subscriptions/{id}", config_subscription)
    app.router.add_post("/_config/invoices/{id}", config_invoice)


def install_extensions(
    webhook_url: str | None = None, webhook_secret: str | None = None
) -> web.Application:
    """Patch localstripe and return its aiohttp app with our routes and middlewares added;
    events go to ``webhook_url`` signed with ``webhook_secret`` when given."""
    app = ls_server.app
    if app.get(_INSTALLED):
        return app
    hub = EventHub()
    hub.configure(webhook_url, webhook_secret)
    _patch_resources(hub)
    cache = IdempotencyCache()
    faults = FaultInjector()
    _add_routes(app)
    add_event_routes(app, hub)
    add_fault_routes(app, cache, faults)
    _exempt_portal_pages_from_auth(app)
    app.middlewares.append(hub.middleware())
    app.middlewares.append(make_flush_middleware(cache, hub, faults))
    app.middlewares.append(deleted_customers_middleware)
    app.middlewares.append(make_idempotency_middleware(cache))
    app.middlewares.append(make_fault_middleware(faults))
    app.middlewares.append(confirm_middleware)
    app[_INSTALLED] = True
    return app


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve(app: web.Application, host: str, port: int) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, printing the readiness line once listening."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_port = runner.addresses[0][1]
        print(f"fake-stripe listening on http://{_url_host(host)}:{bound_port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m helpdesk_app.demo.fake_stripe",
        description="Billing Desk's fake Stripe API (localstripe with extensions).",
    )
    parser.add_argument(
        "--port", type=int, required=True, help="TCP port to listen on (0 picks a free one)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)"
    )
    parser.add_argument("--webhook-url", help="forward every event to this URL")
    parser.add_argument("--webhook-secret", help="the whsec_... secret signing forwarded events")
    args = parser.parse_args(argv)
    if args.webhook_url and not (args.webhook_secret or "").startswith("whsec_"):
        parser.error("--webhook-url needs --webhook-secret whsec_...")
    return args


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: run the extended fake Stripe until interrupted."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = install_extensions(args.webhook_url, args.webhook_secret)
    asyncio.run(serve(app, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
