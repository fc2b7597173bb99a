"""Every request the gateway can make, checked against stripe-python's own parameter types.

The gateway's public methods all run against the fake Stripe while ``responses`` records the
real HTTP requests (passed through). Each request's parameters, decoded from its query string
or form body, must fit the generated ``*Params`` TypedDict of its endpoint: no parameter
Stripe does not define, at any depth, and every required one present. Each request carries
the API version stripe-python pins. A request to an endpoint missing from the table fails the
test too, so a new call cannot skip the check.
"""

from __future__ import annotations

import re
import sys
import types
import typing
import urllib.parse
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Union, get_args, get_origin

import pytest
import requests
import stripe
import stripe.params as p
import stripe.params.billing_portal as portal
from test_core_stripe_gateway import fake_config, paying_customer, subscribe

from core.domain import Money, RefundReason
from core.stripe_gateway import StripeGateway, make_stripe_client

pytestmark = pytest.mark.e2e

ID = r"[A-Za-z0-9_]+"
CONTRACT_KEY = "sk_test_contract"
# (method, path) -> the parameter type stripe-python generates for that endpoint.
ENDPOINTS: list[tuple[str, str, type]] = [
    ("GET", "/v1/customers/search", p.CustomerSearchParams),
    ("GET", "/v1/customers", p.CustomerListParams),
    ("GET", f"/v1/customers/{ID}", p.CustomerRetrieveParams),
    ("POST", f"/v1/customers/{ID}", p.CustomerUpdateParams),
    ("GET", "/v1/charges/search", p.ChargeSearchParams),
    ("GET", "/v1/charges", p.ChargeListParams),
    ("GET", f"/v1/charges/{ID}", p.ChargeRetrieveParams),
    ("GET", "/v1/disputes", p.DisputeListParams),
    ("GET", f"/v1/disputes/{ID}", p.DisputeRetrieveParams),
    ("POST", f"/v1/disputes/{ID}/close", p.DisputeCloseParams),
    ("POST", f"/v1/disputes/{ID}", p.DisputeUpdateParams),
    ("GET", "/v1/subscriptions", p.SubscriptionListParams),
    ("GET", f"/v1/subscriptions/{ID}", p.SubscriptionRetrieveParams),
    ("POST", f"/v1/subscriptions/{ID}", p.SubscriptionUpdateParams),
    ("DELETE", f"/v1/subscriptions/{ID}", p.SubscriptionCancelParams),
    ("GET", "/v1/invoices", p.InvoiceListParams),
    ("GET", f"/v1/invoices/{ID}", p.InvoiceRetrieveParams),
    ("GET", "/v1/invoice_payments", p.InvoicePaymentListParams),
    ("POST", "/v1/coupons", p.CouponCreateParams),
    ("GET", f"/v1/coupons/{ID}", p.CouponRetrieveParams),
    ("GET", "/v1/refunds", p.RefundListParams),
    ("POST", "/v1/refunds", p.RefundCreateParams),
    ("GET", "/v1/billing_portal/configurations", portal.ConfigurationListParams),
    ("POST", "/v1/billing_portal/configurations", portal.ConfigurationCreateParams),
    ("POST", "/v1/billing_portal/sessions", portal.SessionCreateParams),
]
# stripe-python's request options share the TypedDict, but are never sent as parameters.
REQUEST_OPTIONS = frozenset(stripe.RequestOptions.__annotations__)


def _resolve(annotation: Any, namespace: dict[str, Any]) -> Any:
    """An annotation with its NotRequired/Required wrapper and string forward references gone
    (stripe-python's name classes of the same module)."""
    if get_origin(annotation) in (typing.NotRequired, typing.Required):
        return _resolve(get_args(annotation)[0], namespace)
    if isinstance(annotation, typing.ForwardRef):
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        try:
            return _resolve(eval(annotation, namespace), namespace)
        except NameError:
            return Any
    return annotation


def hints(typed: type) -> dict[str, Any]:
    """A TypedDict's keys and their types."""
    namespace = {**vars(typing), **vars(sys.modules[typed.__module__])}
    resolved: dict[str, Any] = {}
    for base in reversed(typed.__mro__):
        for key, annotation in getattr(base, "__annotations__", {}).items():
            resolved[key] = _resolve(annotation, namespace)
    return resolved


def params_type(method: str, path: str) -> type | None:
    for wanted, pattern, params in ENDPOINTS:
        if wanted == method and re.fullmatch(pattern, path):
            return params
    return None


def decoded(pairs: list[tuple[str, str]]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """``discounts[0][coupon]=x`` as (("discounts", 0, "coupon"), "x")."""
    for key, value in pairs:
        head, *rest = re.split(r"\[", key)
        parts: list[str | int] = [head]
        for part in rest:
            name = part.rstrip("]")
            parts.append(int(name) if name.isdigit() else name)
        yield tuple(parts), value


def _alternatives(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (Union, types.UnionType):
        return tuple(a for arg in get_args(annotation) for a in _alternatives(arg))
    return (annotation,)


def _is_typeddict(annotation: Any) -> bool:
    return isinstance(annotation, type) and hasattr(annotation, "__required_keys__")


def problems(annotation: Any, path: tuple[str | int, ...], value: str) -> list[str]:
    """Why ``path=value`` does not fit ``annotation`` (empty when it does)."""
    if not path:
        literals = [a for a in _alternatives(annotation) if get_origin(a) is Literal]
        others = [a for a in _alternatives(annotation) if get_origin(a) is not Literal]
        allowed = {str(v).lower() for lit in literals for v in get_args(lit)}
        if literals and not others and value.lower() not in allowed:
            return [f"{value!r} is not one of {sorted(allowed)}"]
        return []
    head, rest = path[0], path[1:]
    for option in _alternatives(annotation):
        origin = get_origin(option)
        if isinstance(head, int) and origin in (list, typing.List):  # noqa: UP006
            return problems(get_args(option)[0], rest, value)
        if isinstance(head, str) and _is_typeddict(option):
            fields = hints(option)
            if head in fields:
                return problems(fields[head], rest, value)
        if isinstance(head, str) and (
            origin in (dict, Mapping, typing.Dict)  # noqa: UP006
            or "UntypedStripeObject" in str(option)
        ):
            return []  # metadata: any key
    return [f"{head!r} is not a parameter here"]


def check_request(request: Any) -> list[str]:
    """What is wrong with one recorded request, as sentences."""
    url = urllib.parse.urlsplit(request.url)
    method, path = request.method, url.path
    params = params_type(method, path)
    if params is None:
        return [f"{method} {path}: no parameter type listed for this endpoint"]
    body = request.body or ""
    if isinstance(body, bytes):
        body = body.decode()
    pairs = urllib.parse.parse_qsl(url.query) + urllib.parse.parse_qsl(body)
    found = []
    known = hints(params)
    sent = {path_[0] for path_, _ in decoded(pairs)}
    for missing in sorted(set(params.__required_keys__) - REQUEST_OPTIONS - sent):
        found.append(f"{method} {path}: required {missing!r} missing")
    for key_path, value in decoded(pairs):
        head = key_path[0]
        if head in REQUEST_OPTIONS or head not in known:
            found.append(f"{method} {path}: {head!r} is not a parameter of {params.__name__}")
            continue
        found += [
            f"{method} {path} {key_path}: {why}"
            for why in problems(known[head], key_path[1:], value)
        ]
    if request.headers.get("Stripe-Version") != stripe.api_version:
        found.append(f"{method} {path}: Stripe-Version {request.headers.get('Stripe-Version')}")
    return found


def every_gateway_call(gateway: StripeGateway, client: stripe.StripeClient, fake) -> None:
    """Each public method of the gateway, on real objects in the fake Stripe."""
    alice, _ = paying_customer(
        client, email="alice@example.com", name="Alice", metadata={"tenant_id": "t-1"}
    )
    bob, _ = paying_customer(client, email="bob@example.com", name="Bob")
    sub = subscribe(client, alice.id)
    paid = gateway.list_charges(alice.id)
    charge = paid[0] if paid else None
    if charge is None:
        made = client.v1.payment_intents.create(
            params={
                "amount": 2000,
                "currency": "usd",
                "customer": alice.id,
                "payment_method": "pm_card_visa",
                "confirm": True,
            }
        )
        charge = gateway.get_charge(str(made.latest_charge))
    gateway.find_customers_by_email("alice@example.com")
    gateway.get_customer(alice.id)
    gateway.search_customers("Alice")
    gateway.search_customers(alice.id)
    gateway.find_customers_by_tenant("t-1")
    gateway.get_charge(charge.id)
    gateway.invoice_paid_by(charge)
    gateway.other_customers_on_card(charge.card_fingerprint or "fp", alice.id)
    gateway.list_disputes(charge.id)
    gateway.list_subscriptions(alice.id)
    gateway.set_trial_end(
        sub.id, trial_end=datetime.now(UTC) + timedelta(days=20), idempotency_key="contract:trial"
    )
    gateway.comp_subscription(sub.id, duration_in_months=2, idempotency_key="contract:comp")
    gateway.create_portal_session(alice.id, return_url="https://desk.example.com/back")
    gateway.flag_fraud(
        alice.id, reason="test", flagged_by="ann@example.com", idempotency_key="contract:flag"
    )
    gateway.find_refund(charge.id, "contract:refund")
    gateway.refund(
        charge.id,
        Money(500, charge.amount.currency),
        RefundReason.REQUESTED_BY_CUSTOMER,
        idempotency_key="contract:refund",
        metadata={"ticket_id": "1"},
    )
    gateway.cancel_subscription(sub.id, at_period_end=True, idempotency_key="contract:cancel")
    gateway.cancel_subscription(sub.id, at_period_end=False, idempotency_key="contract:cancel-now")
    disputed = fake_config(
        fake, "/_config/disputes", charge=charge.id, reason="product_not_received"
    )
    dispute_id = str(disputed["id"])
    gateway.get_dispute(dispute_id)
    gateway.submit_dispute_evidence(
        dispute_id, {"uncategorized_text": "Used daily."}, idempotency_key="contract:evidence"
    )
    other = client.v1.charges.list(params={"customer": bob.id, "limit": 1}).data
    if other:
        second = fake_config(fake, "/_config/disputes", charge=other[0].id, reason="general")
        gateway.close_dispute(str(second["id"]), idempotency_key="contract:close")
    for kind in ("customer", "subscription", "charge", "refund", "invoice", "dispute"):
        list(gateway.iter_objects(kind))
    gateway.retrieve_object("customer", bob.id)


def test_every_request_fits_stripe_pythons_parameter_types(fake_stripe, stripe_client, monkeypatch):
    sent: list[requests.PreparedRequest] = []
    original = requests.Session.send

    def record(session: requests.Session, request: requests.PreparedRequest, **kwargs: Any):
        sent.append(request)
        return original(session, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", record)
    gateway = StripeGateway(make_stripe_client(CONTRACT_KEY, fake_stripe.url))
    every_gateway_call(gateway, stripe_client, fake_stripe)
    # Only what the gateway sent, told by its key: the setup's client goes through requests too.
    calls = [r for r in sent if r.headers.get("Authorization") == f"Bearer {CONTRACT_KEY}"]

    assert calls, "nothing was recorded"
    seen = {(r.method, urllib.parse.urlsplit(r.url).path) for r in calls}
    wrong = [why for request in calls for why in check_request(request)]
    assert wrong == [], "\n".join(wrong)
    hit = {params for method, path in seen if (params := params_type(method, path))}
    assert len(hit) >= 20, sorted(t.__name__ for t in hit)


@pytest.mark.parametrize(
    ("method", "url", "body", "complaint"),
    [
        (
            "POST",
            "/v1/refunds",
            "charge=ch_1&amount=5&reasn=duplicate",
            "'reasn' is not a parameter",
        ),
        (
            "POST",
            "/v1/subscriptions/sub_1",
            "discounts[0][coupn]=c",
            "'coupn' is not a parameter here",
        ),
        ("POST", "/v1/billing_portal/configurations", "name=x", "required 'features' missing"),
        (
            "GET",
            "/v1/charges/search?query=x&limit=5&page=p&sort=asc",
            "",
            "'sort' is not a parameter",
        ),
        ("GET", "/v1/nothing", "", "no parameter type listed"),
    ],
)
def test_the_checker_catches_what_stripe_would_refuse(method, url, body, complaint):
    """The check itself can fail: unknown, misspelt, missing or unlisted parameters."""
    request = types.SimpleNamespace(
        method=method,
        url=f"https://api.stripe.com{url}",
        body=body,
        headers={"Stripe-Version": stripe.api_version},
    )
    assert any(complaint in why for why in check_request(request)), check_request(request)
