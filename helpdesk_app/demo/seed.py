"""Demo data: customers, a subscription and charges in the fake Stripe, and customer emails.

Demo tooling only: it writes straight to the fake Stripe, which the product never does.
"""

from __future__ import annotations

import contextlib
import email.utils
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import stripe

DAY = 86_400
CARD_EXPIRY = {"exp_month": 12, "exp_year": 2031, "cvc": "123"}


@dataclass(frozen=True)
class DemoCustomer:
    """A customer of the demo company."""

    name: str
    email: str
    tenant_id: str
    organization: str
    card: str


ALICE = DemoCustomer(
    "Alice Martin", "alice@example.com", "T-1042", "Northwind Bakery", "4242424242424242"
)
BOB = DemoCustomer("Bob Chen", "bob@example.com", "T-1077", "Chen Logistics", "5555555555554444")
CAROL = DemoCustomer("Carol Diaz", "carol@example.com", "T-1103", "Diaz Studio", "4242424242424242")
DAN = DemoCustomer("Dan Okafor", "dan@example.com", "T-1120", "Okafor & Sons", "4000056655665556")


def _config_post(api_base: str, path: str, fields: dict[str, Any]) -> None:
    """POST to one of the fake Stripe's test-support endpoints."""
    data = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(urllib.request.Request(api_base + path, data=data), timeout=10):
        pass


def create_customer(client: stripe.StripeClient, who: DemoCustomer) -> str:
    """A customer with a default card, as after a normal sign-up."""
    customer = client.v1.customers.create(
        params={
            "email": who.email,
            "name": who.name,
            "metadata": {"tenant_id": who.tenant_id, "organization": who.organization},
        }
    )
    method = client.v1.payment_methods.create(
        params={"type": "card", "card": {"number": who.card, **CARD_EXPIRY}}  # type: ignore[typeddict-item]
    )
    client.v1.payment_methods.attach(method.id, params={"customer": customer.id})
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": method.id}}
    )
    return customer.id


def create_charge(
    client: stripe.StripeClient,
    api_base: str,
    customer: str,
    amount: int,
    description: str,
    days_ago: float = 0,
    capture: bool = True,
) -> str:
    """A charge on the customer's default card, optionally backdated or left uncaptured."""
    charge = client.v1.charges.create(
        params={
            "customer": customer,
            "amount": amount,
            "currency": "usd",
            "description": description,
            "capture": capture,
        }
    )
    if days_ago:
        created = int(time.time() - days_ago * DAY)
        _config_post(api_base, f"/_config/charges/{charge.id}/created", {"created": created})
    return charge.id


def seed_stripe(client: stripe.StripeClient, api_base: str) -> dict[str, str]:
    """Create the demo customers and their billing history; returns customer IDs by email."""
    ids = {who.email: create_customer(client, who) for who in (ALICE, BOB, CAROL, DAN)}

    # Alice: two months of Pro, then this month's renewal taken twice an hour apart.
    alice = ids[ALICE.email]
    for days in (61, 30.5):
        create_charge(client, api_base, alice, 4900, "Pro plan — monthly", days_ago=days)
    create_charge(client, api_base, alice, 4900, "Pro plan — monthly", days_ago=0.05)
    create_charge(client, api_base, alice, 4900, "Pro plan — monthly")

    # Bob: a normal annual customer with nothing wrong.
    create_charge(client, api_base, ids[BOB.email], 99000, "Business plan — annual", days_ago=40)

    # Carol: last month paid, this month's renewal declined for insufficient funds.
    carol = ids[CAROL.email]
    create_charge(client, api_base, carol, 2900, "Starter plan — monthly", days_ago=31)
    declining = client.v1.payment_methods.create(
        params={"type": "card", "card": {"number": "4000000000009995", **CARD_EXPIRY}}  # type: ignore[typeddict-item]
    )
    client.v1.payment_methods.attach(declining.id, params={"customer": carol})
    # The point of Carol: a failed payment with a decline code.
    with contextlib.suppress(stripe.CardError):
        client.v1.charges.create(
            params={
                "customer": carol,
                "source": declining.id,
                "amount": 2900,
                "currency": "usd",
                "description": "Starter plan — monthly",
            }
        )

    # Dan: an authorization hold that was never captured.
    create_charge(client, api_base, ids[DAN.email], 12000, "Seat top-up (pending)", capture=False)
    return ids


def _email(who: DemoCustomer, subject: str, body: str, minutes_ago: int) -> bytes:
    message = EmailMessage()
    message["From"] = email.utils.formataddr((who.name, who.email))
    message["To"] = "Billing Support <billing@example.com>"
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(time.time() - minutes_ago * 60)
    message["Message-ID"] = email.utils.make_msgid(domain=who.email.split("@")[1])
    message.set_content(body)
    return message.as_bytes()


def demo_emails() -> list[bytes]:
    """What the demo's customers wrote to billing@."""
    return [
        _email(
            ALICE,
            "Charged twice this month",
            "Hi,\n\nI just checked my card statement and I was charged twice for the Pro plan "
            "today: $49.00 two times, about an hour apart. Could you refund the extra one?\n\n"
            "Thanks,\nAlice Martin\nNorthwind Bakery (tenant T-1042)\n",
            minutes_ago=20,
        ),
        _email(
            BOB,
            "Updating the card on file",
            "Hello, how do I update the card on file? The current one expires next month.\n\n"
            "Best, Bob\n",
            minutes_ago=15,
        ),
        _email(
            CAROL,
            "My payment failed?",
            "Hi there, I got a notice that my payment failed this month. The card should be "
            "fine. What happened and what do I need to do?\n\nCarol\n",
            minutes_ago=10,
        ),
        _email(
            DAN,
            "Pending charge of $120 on my card",
            "Hi, there is a pending charge of $120.00 from you on my card but I only topped up "
            "seats once last week. Can you check?\n\nDan Okafor\n",
            minutes_ago=5,
        ),
    ]
