"""The only code that calls Stripe: domain types in, domain types out, Stripe errors wrapped.

Every write carries our own deterministic idempotency key, because stripe-python's automatic
key only covers its own network retries, not a retried job or a second click.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit

import stripe
from stripe import RequestOptions
from stripe.params import (
    ChargeSearchParams,
    CouponCreateParams,
    RefundCreateParams,
    SubscriptionUpdateParamsDiscount,
)

from core import metrics
from core.domain import Charge, Customer, Dispute, Money, Refund, RefundReason, Subscription
from core.errors import (
    ConfigError,
    GatewayError,
    GatewayUnavailable,
    NotFound,
    StripeOutcomeUnknown,
)
from core.settings import Settings

STRIPE_TIMEOUT_SECONDS = 20
STRIPE_MAX_PAGE = 100
MAX_CARD_SEARCH_PAGES = 5  # other customers on one card: 500 of their charges is plenty
METADATA_VALUE_MAX = 500  # Stripe's limit on one metadata value

# The sidebar's free-text search looks for the text in these customer fields, best match first.
_TEXT_SEARCH_FIELDS = ("metadata['tenant_id']", "metadata['organization']", "name")
_CUSTOMER_ID = re.compile(r"cus_[A-Za-z0-9]+")
# Subscriptions whose latest invoice is failing: the sidebar shows its retry schedule.
_FAILING_STATUSES = frozenset({"past_due", "unpaid"})
_COMP_COUPON_PREFIX = "billing_desk_comp_"
_COMP_COUPON_NAME = "Complimentary (100% off)"
_PORTAL_METADATA_KEY = "billing_desk"
_PORTAL_METADATA_VALUE = "portal_configuration"
_PORTAL_CONFIGURATION_KEY = "billing-desk-portal-configuration-v1"


class _RetryingHttpClient(stripe.RequestsClient):
    """stripe-python's HTTP client, also retrying 429 (rate limited), which it never does.

    Search is limited to 20 requests a second per account and one sidebar render makes up to
    four searches, so a busy team meets 429s; Stripe stores no idempotent result for one, so a
    retried write with the same key is safe. The pauses are stripe-python's own backoff.
    Each attempt's latency and status class go to ``core.metrics``.
    """

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        **kwargs: Any,
    ) -> Any:
        """One HTTP attempt, timed."""
        started, status = time.perf_counter(), None
        try:
            response = super().request(method, url, headers, post_data, **kwargs)
            status = int(response[1])
            return response
        finally:
            path = urlsplit(url).path
            metrics.observe_stripe_request(method, path, status, time.perf_counter() - started)

    def _should_retry(
        self,
        response: tuple[Any, int, Mapping[str, str] | None] | None,
        api_connection_error: stripe.APIConnectionError | None,
        num_retries: int,
        max_network_retries: int | None,
    ) -> bool:
        if response is not None and response[1] == 429 and num_retries < (max_network_retries or 0):
            headers = response[2] or {}
            return headers.get("stripe-should-retry") != "false"
        return bool(
            super()._should_retry(response, api_connection_error, num_retries, max_network_retries)
        )


def make_stripe_client(
    api_key: str,
    api_base: str | None = None,
    network_retries: int = 2,
    timeout: float = STRIPE_TIMEOUT_SECONDS,
) -> stripe.StripeClient:
    """A StripeClient with a timeout and network retries (429s too); ``api_base`` points at a
    fake Stripe."""
    # stripe-python's telemetry keeps an ID in ~/.config/stripe/telemetry_id, one fixed file
    # per user shared by every instance on a host (and sends request timings to Stripe).
    stripe.enable_telemetry = False
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base.rstrip("/")} if api_base else {},
        max_network_retries=network_retries,
        http_client=_RetryingHttpClient(timeout=timeout),
    )


@contextmanager
def _stripe_errors(doing: str) -> Iterator[None]:
    """Turn stripe-python's errors into ours, keeping Stripe's request ID for support."""
    try:
        yield
    except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
        raise GatewayUnavailable(f"{doing}: {exc.user_message or exc}") from exc
    except stripe.AuthenticationError as exc:
        raise ConfigError("STRIPE_API_KEY", "was rejected by Stripe") from exc
    except stripe.APIError as exc:
        if exc.http_status == 409:
            # Another request with this idempotency key is still running (stripe-python's own
            # retries did not outlast it): try again later under the same key, which Stripe
            # answers with that request's result. A fresh key now could do it twice.
            raise GatewayUnavailable(f"{doing}: a request with this key is in progress") from exc
        # A 5xx leaves the outcome unknown, and Stripe replays it for the same key for a day.
        raise StripeOutcomeUnknown(f"{doing}: Stripe error (request {exc.request_id})") from exc
    except stripe.StripeError as exc:
        if exc.http_status == 404:
            raise NotFound(f"{doing}: {exc.user_message or exc}") from exc
        raise GatewayError(f"{doing}: {exc.user_message or exc}") from exc


def _quote(value: str) -> str:
    """Quote a value for Stripe's search query language."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _page_size(limit: int) -> int:
    """A list or search ``limit`` Stripe accepts (1..100)."""
    return max(1, min(limit, STRIPE_MAX_PAGE))


def _time(value: Any) -> datetime | None:
    """A Stripe unix timestamp as an aware datetime; null (or Stripe's 0) stays None."""
    return datetime.fromtimestamp(int(value), UTC) if value else None


def _id_of(value: Any) -> str | None:
    """The ID behind an expandable field, whether Stripe sent the ID or the object."""
    if isinstance(value, Mapping):
        return str(value["id"]) if value.get("id") else None
    return str(value) if value else None


def request_key(idempotency_key: str, spent: int = 0) -> str:
    """The idempotency key of a write's request: the action's own key, until Stripe has
    answered ``spent`` requests under it with a server error (replayed for 24 hours), then a
    key of its own per retry. Objects keep the action's key in their metadata, so a retry finds
    what an earlier request made before it sends another."""
    return idempotency_key if spent <= 0 else f"{idempotency_key}:retry-{spent}"


def _comp_coupon_id(idempotency_key: str) -> str:
    """The comp coupon's ID, derived from the action's key so that a retry reuses it."""
    return _COMP_COUPON_PREFIX + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]


def _customer(data: Mapping[str, Any]) -> Customer:
    return Customer(
        id=data["id"],
        email=data.get("email"),
        name=data.get("name"),
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
    )


def _charge(data: Mapping[str, Any]) -> Charge:
    card = (data.get("payment_method_details") or {}).get("card") or {}
    outcome = data.get("outcome") or {}
    decline_code = outcome.get("reason") if outcome.get("type") == "issuer_declined" else None
    return Charge(
        id=data["id"],
        customer_id=data.get("customer"),
        amount=Money(int(data["amount"]), data["currency"]),
        amount_refunded=int(data.get("amount_refunded") or 0),
        created=datetime.fromtimestamp(int(data["created"]), UTC),
        status=data["status"],
        captured=bool(data.get("captured", True)),
        disputed=bool(data.get("disputed", False)),
        description=data.get("description"),
        card_brand=card.get("brand"),
        card_last4=card.get("last4"),
        card_fingerprint=card.get("fingerprint"),
        failure_code=data.get("failure_code"),
        decline_code=decline_code,
        failure_message=data.get("failure_message"),
        advice_code=outcome.get("advice_code"),
        invoice_id=_id_of(data.get("invoice")),  # API versions before 2025-03-31 only
        payment_intent_id=_id_of(data.get("payment_intent")),
    )


def _refund(data: Mapping[str, Any]) -> Refund:
    return Refund(
        id=data["id"],
        charge_id=data["charge"],
        amount=Money(int(data["amount"]), data["currency"]),
        reason=data.get("reason"),
        status=data.get("status") or "succeeded",
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
    )


def _dispute(data: Mapping[str, Any]) -> Dispute:
    details = data.get("evidence_details") or {}
    return Dispute(
        id=data["id"],
        charge_id=_id_of(data["charge"]) or "",
        amount=Money(int(data["amount"]), data["currency"]),
        reason=data.get("reason") or "general",
        status=data["status"],
        created=datetime.fromtimestamp(int(data["created"]), UTC),
        evidence_due_by=_time(details.get("due_by")),  # 0 when no response is allowed
        is_charge_refundable=bool(data.get("is_charge_refundable")),
    )


def _subscription_items(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = list((data.get("items") or {}).get("data") or [])
    if not items and data.get("plan"):  # very old API versions: one plan, no items
        items = [{"plan": data["plan"], "quantity": data.get("quantity")}]
    return items


def _plan_name(item: Mapping[str, Any]) -> str | None:
    """Price nickname, else the product's name when expanded, else plan nickname, else ID."""
    price = item.get("price") or {}
    plan = item.get("plan") or {}
    product = price.get("product") or plan.get("product")
    product_name = product.get("name") if isinstance(product, Mapping) else None
    return (
        price.get("nickname")
        or product_name
        or plan.get("nickname")
        or price.get("id")
        or plan.get("id")
    )


def _billed_per_interval(items: Iterable[Mapping[str, Any]]) -> Money | None:
    """Unit price times quantity, summed over the items; None when any is not a flat price."""
    total: Money | None = None
    for item in items:
        price = item.get("price") or {}
        plan = item.get("plan") or {}
        unit = price.get("unit_amount") if price else plan.get("amount")
        currency = price.get("currency") or plan.get("currency")
        if unit is None or not currency:
            return None  # a tiered or custom-amount price has no single unit price
        amount = Money(int(unit) * int(item.get("quantity") or 1), currency)
        if total is not None and total.currency != amount.currency:
            return None
        total = amount if total is None else total + amount
    return total


def _coupon_ids(data: Mapping[str, Any]) -> tuple[str, ...]:
    """Coupons applied through ``discounts`` (objects, when expanded) or legacy ``discount``."""
    discounts = [*(data.get("discounts") or []), data.get("discount")]
    ids: list[str] = []
    for discount in discounts:
        if not isinstance(discount, Mapping):
            continue  # an unexpanded discount ID does not say which coupon it applies
        coupon = discount.get("coupon") or (discount.get("source") or {}).get("coupon")
        coupon_id = _id_of(coupon)
        if coupon_id:
            ids.append(coupon_id)
    return tuple(dict.fromkeys(ids))


def _discount_ids(data: Mapping[str, Any]) -> list[str]:
    """The IDs of the discounts a subscription has (``di_...``), expanded or not."""
    return [i for i in (_id_of(d) for d in data.get("discounts") or []) if i]


def _subscription(
    data: Mapping[str, Any], invoice: Mapping[str, Any] | None = None
) -> Subscription:
    """Map a subscription; ``invoice`` is its latest invoice when fetched separately."""
    items = _subscription_items(data)
    first = items[0] if items else {}
    price = first.get("price") or {}
    plan = first.get("plan") or {}
    latest = data.get("latest_invoice")
    if invoice is None and isinstance(latest, Mapping):
        invoice = latest
    # Newer API versions keep the current period on each item instead of the subscription.
    period_start = data.get("current_period_start") or first.get("current_period_start")
    period_end = data.get("current_period_end") or first.get("current_period_end")
    attempt_count = invoice.get("attempt_count") if invoice else None
    return Subscription(
        id=data["id"],
        customer_id=_id_of(data.get("customer")) or "",
        status=data["status"],
        plan_name=_plan_name(first) if first else None,
        price=_billed_per_interval(items),
        interval=(price.get("recurring") or {}).get("interval") or plan.get("interval"),
        current_period_start=_time(period_start),
        current_period_end=_time(period_end),
        cancel_at_period_end=bool(data.get("cancel_at_period_end")),
        cancel_at=_time(data.get("cancel_at")),
        canceled_at=_time(data.get("canceled_at")),
        trial_end=_time(data.get("trial_end")),
        coupon_ids=_coupon_ids(data),
        latest_invoice_id=_id_of(latest),
        next_payment_attempt=_time(invoice.get("next_payment_attempt")) if invoice else None,
        attempt_count=None if attempt_count is None else int(attempt_count),
    )


def _text_match_rank(customer: Customer, text: str) -> int:
    """How well a search hit matches: tenant ID, then organisation, then name, then other."""
    wanted = text.casefold()
    fields = (customer.tenant_id, customer.organization, customer.name)
    for rank, value in enumerate(fields):
        if value is not None and value.casefold() == wanted:
            return rank
    return len(fields)


# The evidence fields that take text (the others take uploaded File IDs).
DISPUTE_TEXT_EVIDENCE = frozenset(
    [
        "access_activity_log",
        "customer_email_address",
        "customer_name",
        "product_description",
        "service_date",
        "uncategorized_text",
    ]
)


def make_gateway(settings: Settings, *, timeout: float | None = None) -> StripeGateway:
    """The gateway for the configured Stripe account (or fake Stripe); with ``timeout``, one
    that waits that long at most and never retries (a readiness probe's)."""
    settings.require_stripe()
    assert settings.stripe_api_key is not None
    if timeout is None:
        client = make_stripe_client(settings.stripe_api_key, settings.stripe_api_base)
    else:
        client = make_stripe_client(
            settings.stripe_api_key, settings.stripe_api_base, network_retries=0, timeout=timeout
        )
    return StripeGateway(client)


class StripeGateway:
    """Billing Desk's view of one Stripe account."""

    def __init__(self, client: stripe.StripeClient) -> None:
        self.client = client
        # The billing-portal configuration once looked up: "" for the account's default.
        self._portal_configuration: str | None = None

    def check_access(self) -> None:
        """A cheap authenticated read (the account's balance): Stripe answers and takes our
        key, or GatewayUnavailable / ConfigError."""
        with _stripe_errors("checking access to Stripe"):
            self.client.v1.balance.retrieve()

    def find_customers_by_email(self, email: str) -> list[Customer]:
        """Every customer with this email, ignoring case.

        Search is case-insensitive but can lag new customers by a minute; list is exact and
        immediate. Asking both catches "Alice@Example.com" and a customer created just now.
        """
        found: dict[str, Customer] = {}
        with _stripe_errors("looking up customers by email"):
            try:
                result = self.client.v1.customers.search(
                    params={"query": f"email:{_quote(email)}", "limit": 100}
                )
                for item in result.data:
                    found[item.id] = _customer(item.to_dict())
            except stripe.InvalidRequestError:
                pass  # search is unavailable on some accounts; the list below still works
            for variant in dict.fromkeys((email, email.lower())):
                listed = self.client.v1.customers.list(params={"email": variant, "limit": 100})
                for item in listed.data:
                    found[item.id] = _customer(item.to_dict())
        return [c for c in found.values() if (c.email or "").lower() == email.lower()]

    def get_customer(self, customer_id: str) -> Customer:
        """One customer by Stripe ID; NotFound for one deleted in Stripe, which answers 200
        with a ``deleted`` stub (no email, no metadata: nothing to match or verify)."""
        with _stripe_errors(f"reading customer {customer_id}"):
            data = self.client.v1.customers.retrieve(customer_id).to_dict()
        if data.get("deleted"):
            raise NotFound(f"customer {customer_id} was deleted in Stripe")
        return _customer(data)

    def search_customers(self, text: str, limit: int = 20) -> list[Customer]:
        """Customers for the sidebar's search box: an ID, an email, a tenant, an org or a name."""
        text = text.strip()
        if not text:
            return []
        if _CUSTOMER_ID.fullmatch(text):
            try:
                return [self.get_customer(text)]
            except NotFound:
                return []
        if "@" in text:
            return self.find_customers_by_email(text)[:limit]
        # One OR query rather than one request per field: the sidebar counts its requests.
        query = " OR ".join(f"{field}:{_quote(text)}" for field in _TEXT_SEARCH_FIELDS)
        with _stripe_errors("searching customers"):
            result = self.client.v1.customers.search(
                params={"query": query, "limit": _page_size(limit)}
            )
            found = {item.id: _customer(item.to_dict()) for item in result.data}
        # sorted() is stable, so equally good matches keep Stripe's order.
        return sorted(found.values(), key=lambda c: _text_match_rank(c, text))[:limit]

    def find_customers_by_tenant(self, tenant_id: str) -> list[Customer]:
        """Customers whose ``metadata['tenant_id']`` is exactly this tenant ID."""
        query = f"metadata['tenant_id']:{_quote(tenant_id)}"
        with _stripe_errors(f"looking up customers of tenant {tenant_id}"):
            result = self.client.v1.customers.search(
                params={"query": query, "limit": STRIPE_MAX_PAGE}
            )
            found = [_customer(item.to_dict()) for item in result.data]
        # Search ignores case, but a tenant ID identifies an account: only the exact ID counts.
        return [c for c in found if c.tenant_id == tenant_id]

    def list_charges(self, customer_id: str, limit: int = 100) -> list[Charge]:
        """The customer's most recent charges, newest first."""
        with _stripe_errors(f"listing charges of {customer_id}"):
            page = self.client.v1.charges.list(params={"customer": customer_id, "limit": limit})
            charges = [_charge(item.to_dict()) for item in page.data]
        return sorted(charges, key=lambda c: c.created, reverse=True)

    def get_charge(self, charge_id: str) -> Charge:
        """One charge by Stripe ID."""
        with _stripe_errors(f"reading charge {charge_id}"):
            return _charge(self.client.v1.charges.retrieve(charge_id).to_dict())

    def invoice_paid_by(self, charge: Charge) -> str | None:
        """The invoice a charge paid, if any. Current API versions no longer put ``invoice``
        on a charge: Stripe links the invoice to the charge's PaymentIntent instead."""
        if charge.invoice_id or not charge.payment_intent_id:
            return charge.invoice_id
        with _stripe_errors(f"looking up the invoice paid by {charge.id}"):
            page = self.client.v1.invoice_payments.list(
                params={
                    "payment": {
                        "type": "payment_intent",
                        "payment_intent": charge.payment_intent_id,
                    },
                    "limit": 1,
                }
            )
            return next((_id_of(item.to_dict().get("invoice")) for item in page.data), None)

    def other_customers_on_card(self, fingerprint: str, customer_id: str) -> tuple[str, ...]:
        """The other Stripe customers charged on the card with this fingerprint, most recent
        first: a search that leaves the customer's own charges out (however many they have),
        followed over its pages up to ``MAX_CARD_SEARCH_PAGES``."""
        query = (
            f"payment_method_details.card.fingerprint:{_quote(fingerprint)}"
            f" AND -customer:{_quote(customer_id)}"
        )
        found: dict[str, None] = {}
        page: str | None = None
        with _stripe_errors("searching charges by card"):
            for _ in range(MAX_CARD_SEARCH_PAGES):
                params: ChargeSearchParams = {"query": query, "limit": STRIPE_MAX_PAGE}
                if page:
                    params["page"] = page
                result = self.client.v1.charges.search(params=params)
                charges = sorted(
                    (_charge(item.to_dict()) for item in result.data),
                    key=lambda c: c.created,
                    reverse=True,
                )
                found.update((c.customer_id, None) for c in charges if c.customer_id)
                page = result.next_page if result.has_more else None
                if not page:
                    break
        found.pop(customer_id, None)
        return tuple(found)

    def list_disputes(self, charge_id: str) -> list[Dispute]:
        """The disputes and inquiries opened on a charge, newest first."""
        with _stripe_errors(f"listing disputes of {charge_id}"):
            page = self.client.v1.disputes.list(
                params={"charge": charge_id, "limit": STRIPE_MAX_PAGE}
            )
            disputes = [_dispute(item.to_dict()) for item in page.data]
        return sorted(disputes, key=lambda d: d.created, reverse=True)

    def list_subscriptions(self, customer_id: str) -> list[Subscription]:
        """The customer's subscriptions of every status, newest first."""
        subscriptions = []
        with _stripe_errors(f"listing subscriptions of {customer_id}"):
            page = self.client.v1.subscriptions.list(
                params={
                    "customer": customer_id,
                    "status": "all",
                    "limit": STRIPE_MAX_PAGE,
                    "expand": ["data.discounts"],  # newer API versions send discount IDs only
                }
            )
            listed = [item.to_dict() for item in page.data]
            listed.sort(key=lambda data: int(data.get("created") or 0), reverse=True)
            for data in listed:
                invoice = None
                latest = data.get("latest_invoice")
                if data["status"] in _FAILING_STATUSES and isinstance(latest, str):
                    # Only a failing subscription needs its invoice's retry schedule, so only
                    # those cost an extra request.
                    invoice = self.client.v1.invoices.retrieve(latest).to_dict()
                subscriptions.append(_subscription(data, invoice))
        return subscriptions

    def cancel_subscription(
        self, subscription_id: str, *, at_period_end: bool, idempotency_key: str
    ) -> Subscription:
        """Cancel a subscription at the end of its period or now, once per key."""
        options: RequestOptions = {"idempotency_key": idempotency_key}
        with _stripe_errors(f"cancelling subscription {subscription_id}"):
            if at_period_end:
                subscription = self.client.v1.subscriptions.update(
                    subscription_id,
                    params={"cancel_at_period_end": True, "expand": ["discounts"]},
                    options=options,
                )
                return _subscription(subscription.to_dict())
            try:
                subscription = self.client.v1.subscriptions.cancel(
                    subscription_id, params={"expand": ["discounts"]}, options=options
                )
            except stripe.InvalidRequestError:
                # Stripe does not replay DELETEs; a retry after success finds it canceled.
                subscription = self.client.v1.subscriptions.retrieve(
                    subscription_id, params={"expand": ["discounts"]}
                )
                if subscription.status != "canceled":
                    raise
        return _subscription(subscription.to_dict())

    def comp_subscription(
        self,
        subscription_id: str,
        *,
        duration_in_months: int | None,
        idempotency_key: str,
        request_key: str | None = None,
    ) -> tuple[str, Subscription]:
        """Make a subscription free once (or for some months) with a 100%-off coupon, beside
        the discounts it already has. The coupon's ID derives from ``idempotency_key``;
        ``request_key`` is the update's own when a server error spent that one."""
        coupon_id = _comp_coupon_id(idempotency_key)
        terms: dict[str, object] = {"percent_off": 100, "duration": "once"}
        params: CouponCreateParams = {
            "id": coupon_id,
            "name": _COMP_COUPON_NAME,
            "metadata": {"idempotency_key": idempotency_key},
            "percent_off": 100,
            "duration": "once",
        }
        if duration_in_months is not None:
            params["duration"] = "repeating"
            params["duration_in_months"] = duration_in_months
            terms = {**terms, "duration": "repeating", "duration_in_months": duration_in_months}
        with _stripe_errors(f"creating comp coupon {coupon_id}"):
            try:
                self.client.v1.coupons.create(
                    params=params, options={"idempotency_key": f"{idempotency_key}:coupon"}
                )
            except stripe.InvalidRequestError as exc:
                if exc.code != "resource_already_exists":
                    raise
                # A retry after Stripe forgot the key: the coupon made last time is ours.
                existing = self.client.v1.coupons.retrieve(coupon_id).to_dict()
                if any(existing.get(k) != v for k, v in terms.items()):
                    raise GatewayError(f"coupon {coupon_id} exists with other terms") from exc
        with _stripe_errors(f"comping subscription {subscription_id}"):
            current = self.client.v1.subscriptions.retrieve(
                subscription_id, params={"expand": ["discounts"]}
            ).to_dict()
            if coupon_id in _coupon_ids(current):
                return coupon_id, _subscription(current)  # applied by an earlier attempt
            # ``discounts`` replaces the subscription's set: name the ones it has to keep them.
            discounts: list[SubscriptionUpdateParamsDiscount] = [
                {"discount": d} for d in _discount_ids(current)
            ]
            discounts.append({"coupon": coupon_id})
            subscription = self.client.v1.subscriptions.update(
                subscription_id,
                params={"discounts": discounts, "expand": ["discounts"]},
                options={"idempotency_key": request_key or idempotency_key},
            )
        return coupon_id, _subscription(subscription.to_dict())

    def set_trial_end(
        self, subscription_id: str, *, trial_end: datetime, idempotency_key: str
    ) -> Subscription:
        """Move a subscription's trial end (starting a trial if none), without prorating."""
        if trial_end.tzinfo is None:
            trial_end = trial_end.replace(tzinfo=UTC)
        with _stripe_errors(f"setting the trial end of {subscription_id}"):
            subscription = self.client.v1.subscriptions.update(
                subscription_id,
                params={
                    "trial_end": int(trial_end.timestamp()),
                    "proration_behavior": "none",
                    "expand": ["discounts"],
                },
                options={"idempotency_key": idempotency_key},
            )
        return _subscription(subscription.to_dict())

    def portal_configuration(self) -> str | None:
        """The billing-portal configuration sessions use: None when the account has a default
        (saved in the Dashboard), else ours, found by its metadata or made once.

        Stripe refuses a portal session on an account with neither a default nor a named
        configuration, which a new account is until someone saves its portal settings.
        """
        if self._portal_configuration is not None:
            return self._portal_configuration or None
        with _stripe_errors("reading the billing-portal configurations"):
            listed = self.client.v1.billing_portal.configurations.list(
                params={"active": True, "limit": STRIPE_MAX_PAGE}
            )
            configurations = [c.to_dict() for c in listed.auto_paging_iter()]
            if any(c.get("is_default") for c in configurations):
                self._portal_configuration = ""
                return None
            ours = [
                c
                for c in configurations
                if (c.get("metadata") or {}).get(_PORTAL_METADATA_KEY) == _PORTAL_METADATA_VALUE
            ]
            if ours:
                self._portal_configuration = str(ours[0]["id"])
            else:
                made = self.client.v1.billing_portal.configurations.create(
                    params={
                        "name": "Billing Desk",
                        "features": {
                            "payment_method_update": {"enabled": True},
                            "invoice_history": {"enabled": True},
                            # Self-service cancellation, as the playbooks point customers to.
                            "subscription_cancel": {"enabled": True, "mode": "at_period_end"},
                        },
                        "metadata": {_PORTAL_METADATA_KEY: _PORTAL_METADATA_VALUE},
                    },
                    options={"idempotency_key": _PORTAL_CONFIGURATION_KEY},
                )
                self._portal_configuration = str(made.id)
        return self._portal_configuration

    def create_portal_session(self, customer_id: str, *, return_url: str) -> str:
        """A short-lived billing-portal URL where the customer updates their payment method."""
        configuration = self.portal_configuration()
        with _stripe_errors(f"opening the billing portal for {customer_id}"):
            session = self.client.v1.billing_portal.sessions.create(
                params={
                    **({"configuration": configuration} if configuration else {}),
                    "customer": customer_id,
                    "return_url": return_url,
                    "flow_data": {
                        "type": "payment_method_update",
                        "after_completion": {
                            "type": "redirect",
                            "redirect": {"return_url": return_url},
                        },
                    },
                }
            )
        return str(session.url)

    def flag_fraud(
        self, customer_id: str, *, reason: str, flagged_by: str, idempotency_key: str
    ) -> Customer:
        """Mark a customer as suspected fraud in its Stripe metadata, once per key."""
        metadata = {
            "billing_desk_fraud_flag": "true",
            # An empty value would delete the key in Stripe, so say that none was given.
            "billing_desk_fraud_reason": reason.strip()[:METADATA_VALUE_MAX] or "(none given)",
            "billing_desk_fraud_flagged_by": flagged_by[:METADATA_VALUE_MAX],
        }
        with _stripe_errors(f"flagging customer {customer_id}"):
            customer = self.client.v1.customers.update(
                customer_id,
                params={"metadata": metadata},
                options={"idempotency_key": idempotency_key},
            )
        return _customer(customer.to_dict())

    def find_refund(self, charge_id: str, idempotency_key: str) -> Refund | None:
        """A refund on this charge that we made under this key, if any.

        Stripe forgets idempotency keys after 24 hours, so a job retried later looks here
        before creating a refund again.
        """
        with _stripe_errors(f"listing refunds of {charge_id}"):
            page = self.client.v1.refunds.list(params={"charge": charge_id, "limit": 100})
            for item in page.data:
                data = item.to_dict()
                if (data.get("metadata") or {}).get("idempotency_key") == idempotency_key:
                    return _refund(data)
        return None

    def refund(
        self,
        charge_id: str,
        amount: Money,
        reason: RefundReason,
        *,
        idempotency_key: str,
        metadata: Mapping[str, str],
        request_key: str | None = None,
    ) -> Refund:
        """Refund ``amount`` of a charge, once per ``idempotency_key`` (kept in the refund's
        metadata for ``find_refund``); ``request_key`` is the request's own when a server error
        spent that one."""
        params: RefundCreateParams = {
            "charge": charge_id,
            "amount": amount.amount,
            "reason": str(reason),
            "metadata": {**metadata, "idempotency_key": idempotency_key},
        }
        with _stripe_errors(f"refunding {charge_id}"):
            refund = self.client.v1.refunds.create(
                params=params,
                options={"idempotency_key": request_key or idempotency_key},
            )
        return _refund(refund.to_dict())

    # --- disputes: Finance's answers (core.actions.dispute) --------------------------------

    @staticmethod
    def dispute_from_stripe(data: Mapping[str, Any]) -> Dispute:
        """A Dispute object as Stripe sends it (an event's ``data.object``), as ours."""
        return _dispute(data)

    def get_dispute(self, dispute_id: str) -> Dispute:
        """One dispute by Stripe ID, as it stands now."""
        with _stripe_errors(f"reading dispute {dispute_id}"):
            return _dispute(self.client.v1.disputes.retrieve(dispute_id).to_dict())

    def submit_dispute_evidence(
        self, dispute_id: str, evidence: Mapping[str, str], *, idempotency_key: str
    ) -> Dispute:
        """Send text evidence and submit it to the bank (``submit=true``), once per key."""
        fields = cast(
            "stripe.params.DisputeUpdateParamsEvidence",
            {name: value for name, value in evidence.items() if name in DISPUTE_TEXT_EVIDENCE},
        )
        with _stripe_errors(f"submitting evidence for dispute {dispute_id}"):
            dispute = self.client.v1.disputes.update(
                dispute_id,
                params={"evidence": fields, "submit": True},
                options={"idempotency_key": idempotency_key},
            )
        return _dispute(dispute.to_dict())

    def close_dispute(self, dispute_id: str, *, idempotency_key: str) -> Dispute:
        """Accept a dispute as lost (``POST /v1/disputes/{id}/close``): irreversible."""
        with _stripe_errors(f"closing dispute {dispute_id}"):
            dispute = self.client.v1.disputes.close(
                dispute_id, options={"idempotency_key": idempotency_key}
            )
        return _dispute(dispute.to_dict())

    # --- the mirror: whole objects, as Stripe sends them in events ------------------------

    def _mirror_service(self, kind: str) -> Any:
        services = {
            "customer": self.client.v1.customers,
            "subscription": self.client.v1.subscriptions,
            "charge": self.client.v1.charges,
            "refund": self.client.v1.refunds,
            "invoice": self.client.v1.invoices,
            "dispute": self.client.v1.disputes,
        }
        if kind not in services:
            raise ValueError(f"not a mirrored kind: {kind}")
        return services[kind]

    def iter_objects(self, kind: str) -> Iterator[dict[str, Any]]:
        """Every object of ``kind`` (customer, subscription, charge, refund, invoice,
        dispute), page by page, as plain dicts: what reconcile walks."""
        params: dict[str, Any] = {"limit": STRIPE_MAX_PAGE}
        if kind == "subscription":
            params["status"] = "all"  # canceled ones too: the list hides them by default
        with _stripe_errors(f"listing {kind}s"):
            for obj in self._mirror_service(kind).list(params=params).auto_paging_iter():
                yield obj.to_dict()

    def iter_events(self, since: int, until: int) -> Iterator[dict[str, Any]]:
        """Stripe's events created between ``since`` and ``until`` (unix seconds, inclusive),
        newest first, as plain dicts: what the missed-delivery check compares with ours."""
        with _stripe_errors("listing Stripe events"):
            listed = self.client.v1.events.list(
                params={"created": {"gte": since, "lte": until}, "limit": STRIPE_MAX_PAGE}
            )
            for item in listed.auto_paging_iter():
                yield item.to_dict()

    def retrieve_object(self, kind: str, object_id: str) -> dict[str, Any]:
        """One object as Stripe has it now, as a plain dict (a deleted customer is its
        ``deleted: true`` stub)."""
        with _stripe_errors(f"reading {kind} {object_id}"):
            return dict(self._mirror_service(kind).retrieve(object_id).to_dict())
