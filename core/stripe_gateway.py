"""The only code that calls Stripe: domain types in, domain types out, Stripe errors wrapped.

Every write carries our own deterministic idempotency key, because stripe-python's automatic
key only covers its own network retries, not a retried job or a second click.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import stripe

from core.domain import Charge, Customer, Money, Refund, RefundReason
from core.errors import ConfigError, GatewayError, GatewayUnavailable, NotFound
from core.settings import Settings

STRIPE_TIMEOUT_SECONDS = 20


def make_stripe_client(
    api_key: str, api_base: str | None = None, network_retries: int = 2
) -> stripe.StripeClient:
    """A StripeClient with a timeout and network retries; ``api_base`` points at a fake Stripe."""
    base = {"api": api_base.rstrip("/")} if api_base else None
    return stripe.StripeClient(
        api_key,
        base_addresses=base,  # type: ignore[arg-type]
        max_network_retries=network_retries,
        http_client=stripe.new_default_http_client(timeout=STRIPE_TIMEOUT_SECONDS),
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
        # A 5xx leaves the outcome unknown; a retry with the same idempotency key is safe.
        raise GatewayUnavailable(f"{doing}: Stripe error (request {exc.request_id})") from exc
    except stripe.StripeError as exc:
        if exc.http_status == 404:
            raise NotFound(f"{doing}: {exc.user_message or exc}") from exc
        raise GatewayError(f"{doing}: {exc.user_message or exc}") from exc


def _quote(value: str) -> str:
    """Quote a value for Stripe's search query language."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


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


def make_gateway(settings: Settings) -> StripeGateway:
    """The gateway for the configured Stripe account (or fake Stripe)."""
    settings.require_stripe()
    assert settings.stripe_api_key is not None
    return StripeGateway(make_stripe_client(settings.stripe_api_key, settings.stripe_api_base))


class StripeGateway:
    """Billing Desk's view of one Stripe account."""

    def __init__(self, client: stripe.StripeClient) -> None:
        self.client = client

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
        """One customer by Stripe ID."""
        with _stripe_errors(f"reading customer {customer_id}"):
            return _customer(self.client.v1.customers.retrieve(customer_id).to_dict())

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
    ) -> Refund:
        """Refund ``amount`` of a charge, once per ``idempotency_key``."""
        params: dict[str, Any] = {
            "charge": charge_id,
            "amount": amount.amount,
            "reason": str(reason),
            "metadata": {**metadata, "idempotency_key": idempotency_key},
        }
        with _stripe_errors(f"refunding {charge_id}"):
            refund = self.client.v1.refunds.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        return _refund(refund.to_dict())
