"""Tests for helpdesk_app.demo.fake_stripe, driven over HTTP with stripe-python like the app."""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import stripe

ROOT = Path(__file__).resolve().parents[1]
MODULE = "helpdesk_app.demo.fake_stripe"
READY_LINE = re.compile(r"fake-stripe listening on http://127\.0\.0\.1:(\d+)")
DAY = 24 * 3600
VISA = "4242424242424242"
MASTERCARD = "5555555555554444"


# --- server process ------------------------------------------------------------------------


def start_server(stderr_path: Path) -> tuple[subprocess.Popen[str], int]:
    """Start the fake on a kernel-chosen loopback port and wait for its readiness line."""
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", MODULE, "--port", "0"],
            cwd=ROOT,
            text=True,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline() if readable else ""
    match = READY_LINE.fullmatch(line.strip())
    if match is None:
        proc.kill()
        proc.wait()
        pytest.fail(f"no readiness line (got {line!r}); stderr:\n{stderr_path.read_text()}")
    return proc, int(match[1])


def stop_server(proc: subprocess.Popen[str]) -> str:
    """SIGTERM the server and return whatever else it printed on stdout."""
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    return out


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    proc, server_port = start_server(tmp_path_factory.mktemp("fake_stripe") / "stderr.log")
    try:
        yield server_port
    finally:
        stop_server(proc)


def config(port: int, method: str, path: str, **form: Any) -> tuple[int, Any]:
    """Call a localstripe /_config endpoint; returns (status, decoded JSON or None)."""
    data = urllib.parse.urlencode(form).encode() if form else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    return status, json.loads(body) if body.strip() else None


@pytest.fixture(autouse=True)
def _empty_store(port: int) -> None:
    assert config(port, "DELETE", "/_config/data")[0] == 200


def make_client(port: int, api_key: str = "sk_test_x") -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key, base_addresses={"api": f"http://127.0.0.1:{port}"}, max_network_retries=0
    )


@pytest.fixture
def client(port: int) -> stripe.StripeClient:
    return make_client(port)


# --- builders ------------------------------------------------------------------------------


def customer(client: stripe.StripeClient, **params: Any) -> Any:
    return client.v1.customers.create(params=params)


def card(client: stripe.StripeClient, customer_id: str, number: str = VISA) -> Any:
    """A card PaymentMethod attached to the customer."""
    pm = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    return client.v1.payment_methods.attach(pm.id, params={"customer": customer_id})


def charge(
    client: stripe.StripeClient,
    customer_id: str,
    pm_id: str,
    amount: int = 2000,
    options: Any = None,
    **params: Any,
) -> Any:
    return client.v1.charges.create(
        params={
            "amount": amount,
            "currency": "usd",
            "customer": customer_id,
            "source": pm_id,
            **params,
        },
        options=options or {},
    )


@pytest.fixture
def paid_charge(client: stripe.StripeClient) -> Any:
    """A succeeded 20.00 USD charge on a fresh customer's Visa."""
    cus = customer(client, email="payer@example.com")
    return charge(client, cus.id, card(client, cus.id).id)


def open_dispute(port: int, charge_id: str, **form: Any) -> dict[str, Any]:
    status, dispute = config(port, "POST", "/_config/disputes", charge=charge_id, **form)
    assert status == 200, dispute
    return dispute


def backdate(port: int, charge_id: str, created: int) -> dict[str, Any]:
    status, body = config(port, "POST", f"/_config/charges/{charge_id}/created", created=created)
    assert status == 200, body
    return body


# --- launcher ------------------------------------------------------------------------------


def test_launcher_prints_only_the_readiness_line_and_exits_cleanly(tmp_path: Path) -> None:
    proc, server_port = start_server(tmp_path / "stderr.log")
    assert config(server_port, "DELETE", "/_config/data")[0] == 200
    assert stop_server(proc) == ""
    assert proc.returncode == 0
    assert (tmp_path / "stderr.log").read_text() == ""


def test_import_has_no_side_effects_and_the_store_never_touches_disk() -> None:
    script = textwrap.dedent("""
        import localstripe.resources as r
        import localstripe.server as s

        def snapshot():
            return (r.Store.dump_to_disk, r.Charge._api_list_all, r.Refund._api_create,
                    len(s.app.router.routes()), len(s.app.middlewares))

        before = snapshot()
        import helpdesk_app.demo.fake_stripe as fake_stripe
        assert snapshot() == before, "importing must not patch anything"
        fake_stripe.install_extensions()
        installed = snapshot()
        assert installed != before
        fake_stripe.install_extensions()
        assert snapshot() == installed, "installing twice must be a no-op"

        def refuse(*args, **kwargs):
            raise AssertionError("localstripe tried to pickle its store")

        r.pickle.dump = refuse
        r.store["customer:cus_probe"] = object()
        print("ok")
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


# --- customer search -----------------------------------------------------------------------


@pytest.fixture
def search_customers(client: stripe.StripeClient) -> None:
    customer(
        client, email="Alice@Example.com", name="Alice Smith", metadata={"hd": "42", "plan": "pro"}
    )
    customer(client, email="bob@example.com", name="Bob Jones", metadata={"hd": "7", "plan": "pro"})
    customer(client, email="carol@example.org", name="Carol", metadata={"hd": "9"})


@pytest.mark.usefixtures("search_customers")
@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("email:'alice@example.com'", {"Alice Smith"}),
        ("email:'ALICE@EXAMPLE.COM'", {"Alice Smith"}),
        ('email:"bob@example.com"', {"Bob Jones"}),
        ("name:'alice smith'", {"Alice Smith"}),
        ("metadata['hd']:'42'", {"Alice Smith"}),
        ("metadata['plan']:'pro'", {"Alice Smith", "Bob Jones"}),
        ("metadata['plan']:'pro' AND name:'Bob Jones'", {"Bob Jones"}),
        ("email:'alice@example.com' AND metadata['hd']:'7'", set()),
        ("email:'nobody@example.com'", set()),
        ("name:'Carol' OR metadata['hd']:'7'", {"Bob Jones", "Carol"}),
        ("metadata['hd']:'42' OR metadata['hd']:'42'", {"Alice Smith"}),
        ("metadata['plan']:'pro' name:'Bob Jones'", {"Bob Jones"}),
    ],
)
def test_customer_search(client: stripe.StripeClient, query: str, names: set[str]) -> None:
    result = client.v1.customers.search(params={"query": query})
    assert result.object == "search_result"
    assert {c.name for c in result.data} == names
    assert result.has_more is False
    assert result.next_page is None


@pytest.mark.parametrize(
    "query",
    [
        "email~'alice'",
        "email:'a@example.com' OR name:'Bob' AND name:'Carol'",
        "created>1609459200",
        "phone:'+15555550100'",
        "email:'unterminated",
        "",
    ],
)
def test_customer_search_rejects_unsupported_queries(
    client: stripe.StripeClient, query: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.customers.search(params={"query": query})
    assert raised.value.http_status == 400
    assert raised.value.param == "query"


def test_customer_search_paginates(client: stripe.StripeClient) -> None:
    ids = [
        customer(client, email=f"user{i}@example.com", metadata={"team": "a"}).id for i in range(5)
    ]
    first = client.v1.customers.search(params={"query": "metadata['team']:'a'", "limit": 2})
    assert len(first.data) == 2
    assert first.has_more is True
    assert first.next_page
    assert [c.id for c in first.auto_paging_iter()] == ids[::-1]


# --- idempotency ---------------------------------------------------------------------------


def test_idempotent_refund_is_replayed(client: stripe.StripeClient, paid_charge: Any) -> None:
    params = {"charge": paid_charge.id, "amount": 500}
    first = client.v1.refunds.create(params=params, options={"idempotency_key": "refund-1"})
    again = client.v1.refunds.create(params=params, options={"idempotency_key": "refund-1"})
    assert again.id == first.id
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.last_response.headers
    assert client.v1.charges.retrieve(paid_charge.id).amount_refunded == 500
    assert len(client.v1.refunds.list(params={"charge": paid_charge.id}).data) == 1


@pytest.mark.parametrize("second_call", ["different_amount", "different_endpoint"])
def test_reusing_an_idempotency_key_differently_is_refused(
    client: stripe.StripeClient, paid_charge: Any, second_call: str
) -> None:
    options: Any = {"idempotency_key": "key-1"}
    client.v1.refunds.create(params={"charge": paid_charge.id, "amount": 500}, options=options)
    with pytest.raises(stripe.IdempotencyError) as raised:
        if second_call == "different_amount":
            client.v1.refunds.create(
                params={"charge": paid_charge.id, "amount": 600}, options=options
            )
        else:
            client.v1.customers.create(params={"email": "x@example.com"}, options=options)
    assert raised.value.http_status == 400
    assert raised.value.error.type == "idempotency_error"
    assert "key-1" in raised.value.user_message
    assert client.v1.charges.retrieve(paid_charge.id).amount_refunded == 500


def test_concurrent_requests_with_one_key_execute_once(
    client: stripe.StripeClient, paid_charge: Any
) -> None:
    def refund(_: int) -> str:
        return client.v1.refunds.create(
            params={"charge": paid_charge.id, "amount": 100}, options={"idempotency_key": "burst"}
        ).id

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = set(pool.map(refund, range(16)))
    assert len(ids) == 1
    assert client.v1.charges.retrieve(paid_charge.id).amount_refunded == 100


def test_idempotency_keys_are_scoped_to_the_api_key(port: int, client: stripe.StripeClient) -> None:
    options: Any = {"idempotency_key": "same"}
    mine = client.v1.customers.create(params={"name": "A"}, options=options)
    theirs = make_client(port, "sk_test_other").v1.customers.create(
        params={"name": "A"}, options=options
    )
    assert mine.id != theirs.id


def test_validation_errors_are_not_saved_but_declines_are(
    client: stripe.StripeClient, paid_charge: Any
) -> None:
    options: Any = {"idempotency_key": "fix-and-retry"}
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.refunds.create(
            params={"charge": paid_charge.id, "reason": "nope"}, options=options
        )
    refund = client.v1.refunds.create(params={"charge": paid_charge.id}, options=options)
    assert refund.amount == 2000

    cus = customer(client)
    pm = card(client, cus.id, "4000000000000002")
    declined_ids = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as raised:
            charge(client, cus.id, pm.id, options={"idempotency_key": "decline"})
        declined_ids.append(raised.value.json_body["error"]["charge"])
    assert declined_ids[0] == declined_ids[1]
    assert len(client.v1.charges.list(params={"customer": cus.id}).data) == 1


def test_flushing_the_store_forgets_idempotency_keys(
    port: int, client: stripe.StripeClient
) -> None:
    options: Any = {"idempotency_key": "before-flush"}
    before = client.v1.customers.create(params={"name": "A"}, options=options)
    assert config(port, "DELETE", "/_config/data")[0] == 200
    after = client.v1.customers.create(params={"name": "A"}, options=options)
    assert after.id != before.id


# --- refunds -------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["duplicate", "fraudulent", "requested_by_customer", None])
def test_refund_reason_is_echoed(
    client: stripe.StripeClient, paid_charge: Any, reason: str | None
) -> None:
    params: Any = {"charge": paid_charge.id, "amount": 300, "metadata": {"ticket_id": "T-1"}}
    if reason is not None:
        params["reason"] = reason
    refund = client.v1.refunds.create(params=params)
    assert refund.reason == reason
    assert refund.status == "succeeded"
    assert refund.metadata["ticket_id"] == "T-1"
    assert client.v1.refunds.retrieve(refund.id).reason == reason


@pytest.mark.parametrize("reason", ["customer_asked", "expired_uncaptured_charge", ""])
def test_refund_rejects_unknown_reasons(
    client: stripe.StripeClient, paid_charge: Any, reason: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.refunds.create(params={"charge": paid_charge.id, "reason": reason})
    assert raised.value.http_status == 400
    assert raised.value.param == "reason"
    assert client.v1.charges.retrieve(paid_charge.id).amount_refunded == 0


@pytest.mark.parametrize(
    ("earlier", "amount", "code", "message"),
    [
        (
            [],
            2001,
            None,
            "Refund amount ($20.01) is greater than unrefunded amount on charge ($20.00)",
        ),
        (
            [1500],
            600,
            None,
            "Refund amount ($6.00) is greater than unrefunded amount on charge ($5.00)",
        ),
        ([None], 1, "charge_already_refunded", "has already been refunded"),
        ([500, 1500], None, "charge_already_refunded", "has already been refunded"),
    ],
)
def test_over_refunds_are_rejected(
    client: stripe.StripeClient,
    paid_charge: Any,
    earlier: list[int | None],
    amount: int | None,
    code: str | None,
    message: str,
) -> None:
    for earlier_amount in earlier:
        params: Any = {"charge": paid_charge.id}
        if earlier_amount is not None:
            params["amount"] = earlier_amount
        client.v1.refunds.create(params=params)
    refunded = client.v1.charges.retrieve(paid_charge.id).amount_refunded
    with pytest.raises(stripe.InvalidRequestError) as raised:
        params = {"charge": paid_charge.id}
        if amount is not None:
            params["amount"] = amount
        client.v1.refunds.create(params=params)
    assert raised.value.http_status == 400
    assert raised.value.code == code
    assert message in raised.value.user_message
    if code is None:
        assert raised.value.param == "amount"
    assert client.v1.charges.retrieve(paid_charge.id).amount_refunded == refunded


def test_refund_without_amount_refunds_what_is_left(
    client: stripe.StripeClient, paid_charge: Any
) -> None:
    client.v1.refunds.create(params={"charge": paid_charge.id, "amount": 500})
    rest = client.v1.refunds.create(params={"charge": paid_charge.id})
    assert rest.amount == 1500
    refreshed = client.v1.charges.retrieve(paid_charge.id)
    assert (refreshed.amount_refunded, refreshed.refunded) == (2000, True)


# --- disputes ------------------------------------------------------------------------------


def test_disputes_can_be_opened_listed_and_retrieved(
    port: int, client: stripe.StripeClient, paid_charge: Any
) -> None:
    other = charge(client, paid_charge.customer, paid_charge.payment_method, amount=700)
    before = int(time.time())
    dispute = open_dispute(port, paid_charge.id, reason="fraudulent")
    assert dispute["id"].startswith("dp_")
    assert dispute["object"] == "dispute"
    assert (dispute["amount"], dispute["currency"]) == (2000, "usd")
    assert (dispute["charge"], dispute["reason"]) == (paid_charge.id, "fraudulent")
    assert dispute["status"] == "needs_response"
    assert dispute["is_charge_refundable"] is False
    details = dispute["evidence_details"]
    assert before + 7 * DAY <= details["due_by"] <= int(time.time()) + 7 * DAY
    assert (details["has_evidence"], details["past_due"], details["submission_count"]) == (
        False,
        False,
        0,
    )

    assert client.v1.charges.retrieve(paid_charge.id).disputed is True
    assert client.v1.charges.retrieve(other.id).disputed is False
    assert [d.id for d in client.v1.disputes.list(params={"charge": paid_charge.id})] == [
        dispute["id"]
    ]
    assert client.v1.disputes.list(params={"charge": other.id}).data == []
    assert client.v1.disputes.retrieve(dispute["id"]).reason == "fraudulent"

    second = open_dispute(port, other.id, amount=300, status="warning_needs_response")
    assert second["amount"] == 300
    assert second["is_charge_refundable"] is True
    assert [d.id for d in client.v1.disputes.list()] == [second["id"], dispute["id"]]


def test_open_dispute_blocks_refunds_but_an_inquiry_does_not(
    port: int, client: stripe.StripeClient, paid_charge: Any
) -> None:
    open_dispute(port, paid_charge.id)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.refunds.create(params={"charge": paid_charge.id})
    assert raised.value.code == "charge_disputed"

    inquiry_charge = charge(client, paid_charge.customer, paid_charge.payment_method)
    open_dispute(port, inquiry_charge.id, status="warning_needs_response")
    assert client.v1.refunds.create(params={"charge": inquiry_charge.id}).amount == 2000


def test_dispute_evidence_and_close(
    port: int, client: stripe.StripeClient, paid_charge: Any
) -> None:
    challenged = open_dispute(port, paid_charge.id)
    updated = client.v1.disputes.update(
        challenged["id"],
        params={
            "evidence": {"uncategorized_text": "Customer used the product daily."},
            "metadata": {"ticket_id": "T-9"},
        },
    )
    assert updated.status == "under_review"
    assert updated.evidence["uncategorized_text"] == "Customer used the product daily."
    assert updated.evidence_details.has_evidence is True
    assert updated.evidence_details.submission_count == 1
    assert updated.metadata["ticket_id"] == "T-9"

    accepted = open_dispute(
        port, charge(client, paid_charge.customer, paid_charge.payment_method).id
    )
    assert client.v1.disputes.close(accepted["id"]).status == "lost"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.disputes.close(accepted["id"])


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"charge": "ch_missing"}, 404),
        ({"reason": "because"}, 400),
        ({"status": "open"}, 400),
        ({"amount": "2001"}, 400),
        ({"amount": "0"}, 400),
    ],
)
def test_dispute_config_validates_input(
    port: int, paid_charge: Any, form: dict[str, str], status: int
) -> None:
    got, body = config(port, "POST", "/_config/disputes", **{"charge": paid_charge.id, **form})
    assert got == status, body
    assert body["error"]["type"] == "invalid_request_error"


def test_flushing_the_store_clears_disputes(
    port: int, client: stripe.StripeClient, paid_charge: Any
) -> None:
    open_dispute(port, paid_charge.id)
    assert config(port, "DELETE", "/_config/data")[0] == 200
    assert client.v1.disputes.list().data == []


# --- declines and charge fields ------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "code", "decline_code"),
    [
        ("4000000000000002", "card_declined", "generic_decline"),
        ("4000000000009995", "card_declined", "insufficient_funds"),
        ("4000000000000069", "expired_card", "expired_card"),
        ("4000000000000127", "incorrect_cvc", "incorrect_cvc"),
        ("4000000000000341", "card_declined", "generic_decline"),
    ],
)
def test_decline_cards_attach_but_fail_when_charged(
    client: stripe.StripeClient, number: str, code: str, decline_code: str
) -> None:
    cus = customer(client)
    pm = card(client, cus.id, number)
    assert pm.customer == cus.id

    with pytest.raises(stripe.CardError) as raised:
        charge(client, cus.id, pm.id)
    error = raised.value.json_body["error"]
    assert (raised.value.http_status, raised.value.code) == (402, code)
    assert (error["type"], error["decline_code"]) == ("card_error", decline_code)

    failed = client.v1.charges.retrieve(error["charge"])
    assert failed.status == "failed"
    assert (failed.failure_code, failed.failure_message) == (code, raised.value.user_message)
    assert failed.outcome.type == "issuer_declined"
    assert failed.outcome.reason == decline_code
    assert failed.outcome.network_status == "declined_by_network"
    assert failed.outcome.seller_message
    assert (failed.captured, failed.amount_captured) == (False, 0)


def test_payment_intent_declines_and_lists_by_customer(client: stripe.StripeClient) -> None:
    cus, other = customer(client), customer(client)
    good, bad = card(client, cus.id).id, card(client, cus.id, "4000000000009995").id
    paid = client.v1.payment_intents.create(
        params={
            "amount": 1000,
            "currency": "usd",
            "customer": cus.id,
            "payment_method": good,
            "confirm": True,
        }
    )
    with pytest.raises(stripe.CardError) as raised:
        client.v1.payment_intents.create(
            params={
                "amount": 1000,
                "currency": "usd",
                "customer": cus.id,
                "payment_method": bad,
                "confirm": True,
            }
        )
    assert raised.value.json_body["error"]["decline_code"] == "insufficient_funds"
    client.v1.payment_intents.create(
        params={"amount": 1000, "currency": "usd", "customer": other.id}
    )

    intents = client.v1.payment_intents.list(params={"customer": cus.id}).data
    assert [pi.status for pi in intents] == ["requires_payment_method", "succeeded"]
    assert intents[0].last_payment_error.decline_code == "insufficient_funds"
    assert intents[1].id == paid.id


def test_successful_charge_fields(client: stripe.StripeClient, paid_charge: Any) -> None:
    assert paid_charge.outcome.type == "authorized"
    assert paid_charge.outcome.network_status == "approved_by_network"
    assert (paid_charge.captured, paid_charge.amount_captured) == (True, 2000)
    assert (paid_charge.refunded, paid_charge.amount_refunded) == (False, 0)
    assert paid_charge.disputed is False
    assert paid_charge.payment_method_details.to_dict() == {
        "type": "card",
        "card": {
            "brand": "visa",
            "last4": "4242",
            "exp_month": 12,
            "exp_year": 2030,
            "fingerprint": paid_charge.payment_method_details.card.fingerprint,
            "funding": "credit",
            "country": "US",
        },
    }
    raw_body = client.v1.charges.retrieve(paid_charge.id).last_response.body
    assert "4242" in raw_body
    assert VISA not in raw_body


def test_card_fingerprint_links_customers_using_the_same_card(client: stripe.StripeClient) -> None:
    details = []
    for number in (VISA, VISA, MASTERCARD):
        cus = customer(client)
        details.append(
            charge(client, cus.id, card(client, cus.id, number).id).payment_method_details.card
        )
    assert details[0].fingerprint == details[1].fingerprint != details[2].fingerprint
    assert (details[2].brand, details[2].last4) == ("mastercard", "4444")


def test_authorization_hold_and_partial_capture(client: stripe.StripeClient) -> None:
    cus = customer(client)
    hold = charge(client, cus.id, card(client, cus.id).id, amount=3000, capture=False)
    assert (hold.captured, hold.amount_captured, hold.outcome.type) == (False, 0, "authorized")
    captured = client.v1.charges.capture(hold.id, params={"amount": 2500})
    assert (captured.captured, captured.amount_captured) == (True, 2500)
    assert captured.amount_refunded == 500
    assert client.v1.refunds.create(params={"charge": hold.id}).amount == 2500


# --- listing and backdating ----------------------------------------------------------------


def test_charges_list_newest_first_with_pagination(port: int, client: stripe.StripeClient) -> None:
    cus, other = customer(client), customer(client)
    pm = card(client, cus.id).id
    now = int(time.time())
    days_ago = [3, 0, 4, 1, 2]  # store order differs from time order on purpose
    made = [charge(client, cus.id, pm, amount=100 + i).id for i in range(len(days_ago))]
    for charge_id, days in zip(made, days_ago, strict=True):
        backdate(port, charge_id, now - days * DAY)
    charge(client, other.id, card(client, other.id).id)
    newest_first = [cid for _, cid in sorted(zip(days_ago, made, strict=True))]

    pages, starting_after = [], None
    while True:
        params: Any = {"customer": cus.id, "limit": 2}
        if starting_after:
            params["starting_after"] = starting_after
        page = client.v1.charges.list(params=params)
        pages.append(([c.id for c in page.data], page.has_more))
        if not page.has_more:
            break
        starting_after = page.data[-1].id
    assert pages == [(newest_first[:2], True), (newest_first[2:4], True), (newest_first[4:], False)]

    first = client.v1.charges.list(params={"customer": cus.id, "limit": 2})
    assert [c.id for c in first.auto_paging_iter()] == newest_first
    recent = client.v1.charges.list(params={"customer": cus.id, "created": {"gte": now - DAY - 60}})
    assert [c.id for c in recent.data] == newest_first[:2]


@pytest.mark.parametrize(("limit", "ok"), [(1, True), (100, True), (0, False), (101, False)])
def test_charges_list_limit_bounds(client: stripe.StripeClient, limit: int, ok: bool) -> None:
    cus = customer(client)
    if ok:
        assert client.v1.charges.list(params={"customer": cus.id, "limit": limit}).data == []
    else:
        with pytest.raises(stripe.InvalidRequestError) as raised:
            client.v1.charges.list(params={"customer": cus.id, "limit": limit})
        assert raised.value.param == "limit"


def test_backdating_moves_the_charge_and_its_balance_transaction(
    port: int, client: stripe.StripeClient, paid_charge: Any
) -> None:
    then = int(time.time()) - 10 * DAY
    assert backdate(port, paid_charge.id, then)["created"] == then
    assert client.v1.charges.retrieve(paid_charge.id).created == then
    txn = client.v1.balance_transactions.retrieve(paid_charge.balance_transaction)
    assert (txn.created, txn.available_on) == (then, then)


@pytest.mark.parametrize(
    ("charge_id", "created", "status"),
    [("ch_missing", "1700000000", 404), (None, "yesterday", 400), (None, "-5", 400)],
)
def test_backdating_validates_input(
    port: int, paid_charge: Any, charge_id: str | None, created: str, status: int
) -> None:
    got, _ = config(
        port, "POST", f"/_config/charges/{charge_id or paid_charge.id}/created", created=created
    )
    assert got == status


# --- card fingerprints and charge search ---------------------------------------------------


def test_fingerprint_is_stripe_like_and_the_same_on_the_payment_method(
    client: stripe.StripeClient, paid_charge: Any
) -> None:
    fingerprint = paid_charge.payment_method_details.card.fingerprint
    assert re.fullmatch(r"[A-Za-z0-9]{16}", fingerprint)
    assert VISA not in fingerprint
    assert client.v1.payment_methods.retrieve(paid_charge.payment_method).card.fingerprint == (
        fingerprint
    )


@pytest.fixture
def charges_on_two_cards(client: stripe.StripeClient) -> dict[str, Any]:
    """Alice and Bob share a Visa; Bob also pays with a Mastercard; one of Bob's charges fails."""
    alice, bob = customer(client, name="Alice"), customer(client, name="Bob")
    alice_visa, bob_visa = card(client, alice.id), card(client, bob.id)
    bob_mastercard = card(client, bob.id, MASTERCARD)
    made = {
        "alice_visa": charge(client, alice.id, alice_visa.id),
        "bob_visa": charge(client, bob.id, bob_visa.id),
        "bob_mastercard": charge(client, bob.id, bob_mastercard.id),
    }
    with pytest.raises(stripe.CardError) as raised:
        charge(client, bob.id, card(client, bob.id, "4000000000009995").id)
    made["bob_failed"] = client.v1.charges.retrieve(raised.value.json_body["error"]["charge"])
    return {"alice": alice.id, "bob": bob.id, **made}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("payment_method_details.card.fingerprint:'{fp_visa}'", ["bob_visa", "alice_visa"]),
        ('payment_method_details.card.fingerprint:"{fp_mastercard}"', ["bob_mastercard"]),
        ("customer:'{bob}'", ["bob_failed", "bob_mastercard", "bob_visa"]),
        ("customer:'{bob}' AND status:'failed'", ["bob_failed"]),
        (
            "payment_method_details.card.fingerprint:'{fp_visa}' AND customer:'{alice}'",
            ["alice_visa"],
        ),
        ("status:'succeeded' AND customer:'{alice}'", ["alice_visa"]),
        ("payment_method_details.card.fingerprint:'nope'", []),
    ],
)
def test_charge_search(
    client: stripe.StripeClient,
    charges_on_two_cards: dict[str, Any],
    query: str,
    expected: list[str],
) -> None:
    made = charges_on_two_cards
    fingerprints = {
        f"fp_{kind}": made[f"bob_{kind}"].payment_method_details.card.fingerprint
        for kind in ("visa", "mastercard")
    }
    query = query.format(alice=made["alice"], bob=made["bob"], **fingerprints)
    result = client.v1.charges.search(params={"query": query})
    assert result.object == "search_result"
    assert result.url == "/v1/charges/search"
    assert [c.id for c in result.data] == [made[name].id for name in expected]
    assert VISA not in result.last_response.body


@pytest.mark.parametrize(
    "query",
    [
        "amount>1000",
        "email:'a@example.com'",
        "payment_method_details.card.last4:'4242'",
        "customer:'cus_1' AND status:'failed' OR status:'succeeded'",
        "",
    ],
)
def test_charge_search_rejects_unsupported_queries(client: stripe.StripeClient, query: str) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.charges.search(params={"query": query})
    assert (raised.value.http_status, raised.value.param) == (400, "query")


# --- coupons -------------------------------------------------------------------------------


def test_coupon_without_id_gets_one_and_keeps_its_terms(client: stripe.StripeClient) -> None:
    coupon = client.v1.coupons.create(
        params={
            "percent_off": 100,
            "duration": "repeating",
            "duration_in_months": 3,
            "name": "Complimentary",
        }
    )
    assert re.fullmatch(r"[A-Z0-9]{8}", coupon.id)
    again = client.v1.coupons.retrieve(coupon.id)
    assert (again.percent_off, again.duration, again.duration_in_months, again.name) == (
        100,
        "repeating",
        3,
        "Complimentary",
    )
    other = client.v1.coupons.create(params={"percent_off": 50, "duration": "once"})
    assert other.id != coupon.id
    assert (other.duration_in_months, other.name) == (None, None)


def test_coupon_id_already_taken(client: stripe.StripeClient) -> None:
    client.v1.coupons.create(params={"id": "FREE", "percent_off": 100, "duration": "once"})
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.coupons.create(params={"id": "FREE", "percent_off": 100, "duration": "once"})
    assert (raised.value.http_status, raised.value.code) == (400, "resource_already_exists")


# --- subscriptions -------------------------------------------------------------------------


def subscribed(client: stripe.StripeClient, **params: Any) -> Any:
    """A subscription to a 49.00 USD monthly plan for a new customer paying by Visa."""
    cus = customer(client, email="sub@example.com")
    pm = card(client, cus.id)
    client.v1.customers.update(
        cus.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    if not params.get("items"):
        plan = client.v1.plans.create(
            params={
                "amount": 4900,
                "currency": "usd",
                "interval": "month",
                "nickname": "Pro monthly",
                "product": {"name": "Pro"},
            }
        )
        params["items"] = [{"price": plan.id}]
    return client.v1.subscriptions.create(params={"customer": cus.id, **params})


def config_subscription(port: int, subscription_id: str, **form: Any) -> dict[str, Any]:
    status, body = config(port, "POST", f"/_config/subscriptions/{subscription_id}", **form)
    assert status == 200, body
    return body


def test_subscription_items_carry_price_and_period(client: stripe.StripeClient) -> None:
    sub = subscribed(client)
    assert sub.status == "active"
    (item,) = sub["items"].data
    assert (item.price.object, item.price.nickname, item.price.unit_amount) == (
        "price",
        "Pro monthly",
        4900,
    )
    assert (item.price.currency, item.price.recurring.interval) == ("usd", "month")
    assert item.price.product.startswith("prod_")
    assert "current_period_start" not in sub  # the current API keeps periods on items
    assert item.current_period_end > item.current_period_start
    assert sub.discounts == []
    paid = client.v1.charges.list(params={"customer": sub.customer}).data[0]
    assert "invoice" not in paid  # charges reach their invoice through InvoicePayments
    (payment,) = client.v1.invoice_payments.list(
        params={"payment": {"type": "payment_intent", "payment_intent": paid.payment_intent}}
    ).data
    assert (payment.object, payment.invoice, payment.status) == (
        "invoice_payment",
        sub.latest_invoice,
        "paid",
    )


def test_discounts_are_applied_replaced_and_cleared(client: stripe.StripeClient) -> None:
    sub = subscribed(client)
    for coupon_id, months in (("COMP3", 3), ("HALF", None)):
        terms: Any = {"duration": "repeating", "duration_in_months": months} if months else {}
        client.v1.coupons.create(
            params={"id": coupon_id, "percent_off": 100, "duration": "once", **terms}
        )

    comped = client.v1.subscriptions.update(
        sub.id,
        params={
            "discounts": [{"coupon": "COMP3"}],
            "proration_behavior": "none",
            "expand": ["discounts"],
        },
    )
    (discount,) = comped.discounts
    assert discount.object == "discount"
    assert (discount.coupon.id, discount.source.coupon) == ("COMP3", "COMP3")
    assert discount.subscription == sub.id
    assert 89 * DAY <= discount.end - discount.start <= 92 * DAY
    assert client.v1.coupons.retrieve("COMP3").times_redeemed == 1

    listed = client.v1.subscriptions.list(
        params={"customer": sub.customer, "expand": ["data.discounts"]}
    )
    assert [d.id for d in listed.data[0].discounts] == [discount.id]

    assert client.v1.subscriptions.retrieve(sub.id).discounts == [discount.id]  # ids by default
    both = client.v1.subscriptions.update(
        sub.id,
        params={"discounts": [{"coupon": "COMP3"}, {"coupon": "HALF"}], "expand": ["discounts"]},
    )
    assert [d.source.coupon for d in both.discounts] == ["COMP3", "HALF"]
    assert both.discounts[0].id == discount.id  # a discount already applied is kept
    assert client.v1.coupons.retrieve("COMP3").times_redeemed == 1

    cleared = client.v1.subscriptions.update(sub.id, params={"discounts": ""})
    assert cleared.discounts == []
    assert "discount" not in cleared  # the legacy single field is gone


@pytest.mark.parametrize(
    ("discounts", "param"),
    [
        ([{"coupon": "MISSING"}], "discounts[0][coupon]"),
        ([{"promotion_code": "promo_1"}], "discounts[0][promotion_code]"),
        ([{"discount": "di_missing"}], "discounts[0][discount]"),
        ([{"price": "nope"}], "discounts[0]"),
    ],
)
def test_discounts_must_name_existing_coupons(
    client: stripe.StripeClient, discounts: Any, param: str
) -> None:
    sub = subscribed(client)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscriptions.update(sub.id, params={"discounts": discounts})
    assert (raised.value.http_status, raised.value.param) == (400, param)
    assert client.v1.subscriptions.retrieve(sub.id).discounts == []


def test_trials_make_a_subscription_trialing(client: stripe.StripeClient) -> None:
    trial = subscribed(client, trial_period_days=14)
    assert trial.status == "trialing"
    assert 14 * DAY - 60 <= trial.trial_end - int(time.time()) <= 14 * DAY
    assert trial["items"].data[0].current_period_end == trial.trial_end

    sub = subscribed(client)
    until = int(time.time()) + 30 * DAY
    extended = client.v1.subscriptions.update(
        sub.id, params={"trial_end": until, "proration_behavior": "none"}
    )
    assert (extended.status, extended.trial_end) == ("trialing", until)
    first_item = sub["items"].data[0]
    assert extended["items"].data[0].current_period_start == first_item.current_period_start
    assert extended["items"].data[0].current_period_end == until

    ended = client.v1.subscriptions.update(sub.id, params={"trial_end": "now"})
    assert ended.status == "active"


def test_proration_behavior_is_validated(client: stripe.StripeClient) -> None:
    sub = subscribed(client)
    with pytest.raises(stripe.InvalidRequestError) as raised:
        client.v1.subscriptions.update(sub.id, params={"proration_behavior": "sometimes"})
    assert raised.value.param == "proration_behavior"


def test_cancellation_records_when(client: stripe.StripeClient) -> None:
    sub = subscribed(client)
    at_end = client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    assert (at_end.status, at_end.cancel_at_period_end) == ("active", True)
    assert at_end.cancel_at == sub["items"].data[0].current_period_end
    assert abs(at_end.canceled_at - time.time()) < 60
    kept = client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": False})
    assert (kept.cancel_at, kept.canceled_at) == (None, None)

    canceled = client.v1.subscriptions.cancel(sub.id)
    assert canceled.status == "canceled"
    assert canceled.canceled_at == canceled.ended_at
    assert client.v1.subscriptions.cancel(sub.id).ended_at == canceled.ended_at
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.update(sub.id, params={"trial_end": int(time.time()) + DAY})
    tagged = client.v1.subscriptions.update(sub.id, params={"metadata": {"ticket": "T-1"}})
    assert tagged.metadata["ticket"] == "T-1"


def test_subscription_list_statuses_newest_first(client: stripe.StripeClient) -> None:
    first = subscribed(client)
    plan_item = [{"price": first["items"].data[0].price.id}]
    second = client.v1.subscriptions.create(params={"customer": first.customer, "items": plan_item})
    client.v1.subscriptions.cancel(first.id)
    subscribed(client)  # someone else's

    def listed(**params: Any) -> list[str]:
        page = client.v1.subscriptions.list(params={"customer": first.customer, **params})
        return [s.id for s in page.data]

    assert listed(status="all") == [second.id, first.id]
    assert listed() == [second.id]
    assert listed(status="canceled") == [first.id]
    assert listed(status="all", limit=1) == [second.id]
    with pytest.raises(stripe.InvalidRequestError):
        listed(status="gone")


def test_config_subscription_stages_a_past_due_subscription(
    port: int, client: stripe.StripeClient
) -> None:
    sub = subscribed(client)
    start, end = int(time.time()) - 40 * DAY, int(time.time()) - 10 * DAY
    body = config_subscription(
        port, sub.id, status="past_due", current_period_start=start, current_period_end=end
    )
    period = body["items"]["data"][0]
    assert (body["status"], period["current_period_start"], period["current_period_end"]) == (
        "past_due",
        start,
        end,
    )
    item = client.v1.subscriptions.retrieve(sub.id)["items"].data[0]
    assert (item.current_period_start, item.current_period_end) == (start, end)

    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert (invoice.status, invoice.attempt_count) == ("open", 1)
    assert 3 * DAY - 60 <= invoice.next_payment_attempt - time.time() <= 3 * DAY

    next_try = int(time.time()) + DAY
    status, staged = config(
        port,
        "POST",
        f"/_config/invoices/{invoice.id}",
        next_payment_attempt=next_try,
        attempt_count=4,
    )
    assert status == 200, staged
    invoice = client.v1.invoices.retrieve(invoice.id)
    assert (invoice.next_payment_attempt, invoice.attempt_count) == (next_try, 4)
    assert client.v1.subscriptions.list(params={"status": "past_due"}).data[0].id == sub.id

    config(port, "POST", f"/_config/invoices/{invoice.id}", next_payment_attempt="")
    assert client.v1.invoices.retrieve(invoice.id).next_payment_attempt is None


def test_config_subscription_cancels_with_a_date(port: int, client: stripe.StripeClient) -> None:
    sub = subscribed(client)
    then = int(time.time()) - 5 * DAY
    body = config_subscription(port, sub.id, status="canceled", canceled_at=then)
    assert (body["status"], body["canceled_at"]) == ("canceled", then)
    assert body["ended_at"] >= then
    assert config_subscription(port, sub.id, canceled_at="")["canceled_at"] is None


@pytest.mark.parametrize(
    ("path", "form", "status"),
    [
        ("/_config/subscriptions/sub_missing", {"status": "active"}, 404),
        ("/_config/subscriptions/{sub}", {"status": "overdue"}, 400),
        ("/_config/subscriptions/{sub}", {"canceled_at": "yesterday"}, 400),
        ("/_config/subscriptions/{sub}", {"current_period_end": "1500000000"}, 400),
        ("/_config/subscriptions/{sub}", {"plan": "x"}, 400),
        ("/_config/invoices/in_missing", {"attempt_count": "2"}, 404),
        ("/_config/invoices/{invoice}", {"status": "late"}, 400),
        ("/_config/invoices/{invoice}", {"attempt_count": "-1"}, 400),
        ("/_config/invoices/{invoice}", {"next_payment_attempt": "soon"}, 400),
    ],
)
def test_config_subscription_and_invoice_validate_input(
    port: int, client: stripe.StripeClient, path: str, form: dict[str, str], status: int
) -> None:
    sub = subscribed(client)
    url = path.format(sub=sub.id, invoice=sub.latest_invoice)
    got, body = config(port, "POST", url, **form)
    assert got == status, body
    unchanged = client.v1.subscriptions.retrieve(sub.id)
    assert (unchanged.status, unchanged.canceled_at) == ("active", None)


# --- billing portal ------------------------------------------------------------------------


def portal_session(client: stripe.StripeClient, customer_id: str, **params: Any) -> Any:
    return client.v1.billing_portal.sessions.create(
        params={
            "customer": customer_id,
            "return_url": "https://desk.example.com/sidebar?t=1&x=<y>",
            "flow_data": {
                "type": "payment_method_update",
                "after_completion": {
                    "type": "redirect",
                    "redirect": {"return_url": "https://desk.example.com/done"},
                },
            },
            **params,
        }
    )


def save_portal_settings(port: int) -> dict[str, Any]:
    """Save the Dashboard's portal settings, which makes the default configuration."""
    status, body = config(port, "POST", "/_config/billing_portal/default")
    assert status == 200
    return body


def test_portal_session_links_to_a_fake_portal_page(port: int, client: stripe.StripeClient) -> None:
    default = save_portal_settings(port)
    cus = customer(client, name="<script>alert(1)</script> & Co", email="x@example.com")
    session = portal_session(client, cus.id)
    assert session.id.startswith("bps_")
    assert session.object == "billing_portal.session"
    assert session.customer == cus.id
    assert session.return_url == "https://desk.example.com/sidebar?t=1&x=<y>"
    assert session.flow.type == "payment_method_update"
    assert session.flow.after_completion.redirect.return_url == "https://desk.example.com/done"
    assert session.url == f"http://127.0.0.1:{port}/_portal/{session.id}"
    assert session.configuration == default["id"]

    with urllib.request.urlopen(session.url, timeout=5) as response:  # no API key: a browser
        assert response.headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        page = response.read().decode()
    assert "fake" in page.lower()
    assert "Update your payment method" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in page
    assert "<script>" not in page
    assert 'href="https://desk.example.com/done"' in page
    assert 'href="https://desk.example.com/sidebar?t=1&amp;x=&lt;y&gt;"' in page


def test_portal_page_for_an_unknown_session_is_404(port: int) -> None:
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/_portal/bps_missing", timeout=5)
    assert raised.value.code == 404


def test_portal_exemption_does_not_open_the_api(port: int) -> None:
    assert config(port, "GET", "/v1/customers")[0] == 401


@pytest.mark.parametrize(
    ("params", "status", "param"),
    [
        ({"customer": "cus_missing"}, 404, "customer"),
        ({"return_url": "javascript:alert(1)"}, 400, "return_url"),
        ({"flow_data": {"type": "teleport"}}, 400, "flow_data[type]"),
        (
            {
                "flow_data": {
                    "type": "payment_method_update",
                    "after_completion": {"type": "redirect"},
                }
            },
            400,
            "flow_data[after_completion][redirect][return_url]",
        ),
    ],
)
def test_portal_session_validates_input(
    port: int, client: stripe.StripeClient, params: dict[str, Any], status: int, param: str
) -> None:
    save_portal_settings(port)
    cus = customer(client)
    with pytest.raises(stripe.StripeError) as raised:
        portal_session(client, cus.id, **params)
    assert (raised.value.http_status, raised.value.error.param) == (status, param)
    if status == 404:
        assert raised.value.code == "resource_missing"
