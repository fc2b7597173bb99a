"""Demo data: customers, a subscription and charges in the fake Stripe, and customer emails.

Demo tooling only: it writes straight to the fake Stripe, which the product never does.
"""

from __future__ import annotations

import email.utils
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import stripe

from helpdesk_app.demo.servers import received_by_our_server, sender_verified

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
CAROL = DemoCustomer("Carol Diaz", "carol@example.com", "T-1103", "Diaz Studio", "2223003122003222")
DAN = DemoCustomer("Dan Okafor", "dan@example.com", "T-1120", "Okafor & Sons", "4000056655665556")
ERIN = DemoCustomer(
    "Erin Walsh", "erin@example.com", "T-1150", "Walsh Analytics", "5200828282828210"
)
FRANK = DemoCustomer("Frank Weber", "frank@example.com", "T-1188", "Weber GmbH", "6011111111111117")
GRACE = DemoCustomer("Grace Lin", "grace@example.com", "T-1201", "Lin Design", "4012888888881881")
# One person, two accounts, one card: the playbook's "two separate accounts?" case.
HENRY_PERSONAL = DemoCustomer(
    "Henry Park", "henry@example.com", "T-1230", "(personal)", "3566002020360505"
)
HENRY_COMPANY = DemoCustomer(
    "Henry Park", "henry@example.com", "T-1231", "Park Robotics", "3566002020360505"
)
# Really charged twice; the email in her name was not sent by her (SPF and DMARC failed).
IVY = DemoCustomer("Ivy Novak", "ivy@example.com", "T-1250", "Novak Books", "5105105105105100")
# Sees a charge she does not recognise: Security, with the account flagged.
JADE = DemoCustomer(
    "Jade Moreau", "jade@example.com", "T-1270", "Moreau Conseil", "4000002500003155"
)
# Unhappy with the service: the account manager decides on a goodwill credit.
KAI = DemoCustomer("Kai Tanaka", "kai@example.com", "T-1288", "Tanaka Print", "4000003920000003")
# Wants to cancel and cannot sign in: cancelled at period end.
LEO = DemoCustomer("Leo Rossi", "leo@example.com", "T-1302", "Rossi Foods", "4000003800000008")
# Renewed by accident yesterday: within the refund window, refunded.
MIA = DemoCustomer("Mia Sato", "mia@example.com", "T-1320", "Sato Labs", "4000000360000006")
# Disputes in the demo's Stripe (Frank's chargeback, Nina's): each arrives by webhook.
DEMO_DISPUTES = 2
# Pays with Stripe's test card whose charges are disputed at once: no email, only a webhook.
NINA = DemoCustomer("Nina Berg", "nina@example.com", "T-1344", "Berg Events", "4000000000000259")

DEMO_PASSWORD = "billing-desk-demo"
# The demo's team: one of each role the playbooks name and an admin, all with DEMO_PASSWORD.
DEMO_AGENTS = [
    ("ann@demo.test", "Ann Agent", "agent"),
    ("lee@demo.test", "Lee Lead", "support_lead"),
    ("sam@demo.test", "Sam Security", "security"),
    ("avery@demo.test", "Avery Account-Manager", "account_manager"),
    ("fin@demo.test", "Fin Finance", "finance"),
    ("ada@demo.test", "Ada Admin", "admin"),  # RQ's dashboard at /admin/rq is hers alone
]


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


def seed_agents(session: Any) -> None:
    """The demo's team, one agent per role, all with DEMO_PASSWORD."""
    from core import agents
    from core.domain import Role

    for email_address, name, role in DEMO_AGENTS:
        agents.save_agent(
            session,
            email=email_address,
            name=name,
            role=Role(role),
            password=DEMO_PASSWORD,
            actor="demo",
        )


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


def create_declined_charge(
    client: stripe.StripeClient,
    customer: str,
    amount: int,
    description: str,
    card: str = "4000000000009995",
) -> str:
    """A payment the bank declined (insufficient funds by default); returns the failed charge."""
    method = client.v1.payment_methods.create(
        params={"type": "card", "card": {"number": card, **CARD_EXPIRY}}  # type: ignore[typeddict-item]
    )
    client.v1.payment_methods.attach(method.id, params={"customer": customer})
    try:
        client.v1.charges.create(
            params={
                "customer": customer,
                "source": method.id,
                "amount": amount,
                "currency": "usd",
                "description": description,
            }
        )
    except stripe.CardError as exc:
        assert exc.json_body is not None
        return str(exc.json_body["error"]["charge"])
    raise AssertionError(f"card {card} was not declined")


def create_subscription(
    client: stripe.StripeClient,
    api_base: str,
    customer: str,
    product: str,
    amount: int,
    interval: str = "month",
    days_ago: float = 0,
) -> str:
    """A paid subscription to a plan (the fake Stripe has plans, not prices), its first
    invoice's charge optionally backdated."""
    plan = client.v1.plans.create(
        params={
            "amount": amount,
            "currency": "usd",
            "interval": interval,  # type: ignore[typeddict-item]
            "nickname": f"{product} {interval}ly",
            "product": {"name": product},
        }
    )
    subscription = client.v1.subscriptions.create(
        params={"customer": customer, "items": [{"price": plan.id}]}
    )
    if days_ago and subscription.latest_invoice:
        # The invoice's charge: through its payment's PaymentIntent (charges no longer name
        # their invoice).
        invoice = str(subscription.latest_invoice)
        for payment in client.v1.invoice_payments.list(params={"invoice": invoice}).data:
            intent = (payment.to_dict().get("payment") or {}).get("payment_intent")
            charge = (
                client.v1.payment_intents.retrieve(str(intent)).latest_charge if intent else None
            )
            if charge:
                created = int(time.time() - days_ago * DAY)
                _config_post(api_base, f"/_config/charges/{charge}/created", {"created": created})
    return subscription.id


def set_subscription_state(api_base: str, subscription: str, **fields: Any) -> None:
    """Put a fake-Stripe subscription into a state (past_due, canceled...) for a scenario."""
    _config_post(api_base, f"/_config/subscriptions/{subscription}", fields)


def open_dispute(api_base: str, charge: str, reason: str = "fraudulent") -> None:
    """A chargeback on a charge, as a bank would file it."""
    _config_post(api_base, "/_config/disputes", {"charge": charge, "reason": reason})


def seed_stripe(client: stripe.StripeClient, api_base: str) -> dict[str, str]:
    """Create the demo customers and their billing history; returns customer IDs by email."""
    ids = {who.email: create_customer(client, who) for who in (ALICE, BOB, CAROL, DAN)}

    # Alice: two months of Pro, then this month's renewal taken twice an hour apart.
    alice = ids[ALICE.email]
    create_charge(client, api_base, alice, 4900, "Pro plan — monthly", days_ago=61)
    create_subscription(client, api_base, alice, "Pro", 4900, days_ago=30.5)
    create_charge(client, api_base, alice, 4900, "Pro plan — monthly", days_ago=0.05)
    create_charge(client, api_base, alice, 4900, "Pro plan — monthly")

    # Bob: a normal annual customer with nothing wrong.
    create_subscription(client, api_base, ids[BOB.email], "Business", 99000, "year", days_ago=40)

    # Carol: last month paid, this month's renewal declined for insufficient funds.
    carol = ids[CAROL.email]
    carol_sub = create_subscription(client, api_base, carol, "Starter", 2900, days_ago=31)
    set_subscription_state(api_base, carol_sub, status="past_due")
    # The point of Carol: a failed payment with a decline code.
    create_declined_charge(client, carol, 2900, "Starter plan — monthly")

    # Dan: an authorization hold that was never captured.
    create_charge(client, api_base, ids[DAN.email], 12000, "Seat top-up (pending)", capture=False)

    # Erin: an $800 annual plan she wants back: over the limit, so a Support Lead approves.
    erin = ids[ERIN.email] = create_customer(client, ERIN)
    create_charge(client, api_base, erin, 80000, "Analytics module — annual", days_ago=6)

    # Frank: filed a chargeback with his bank; the charge must not be refunded around it.
    frank = ids[FRANK.email] = create_customer(client, FRANK)
    disputed = create_charge(client, api_base, frank, 19900, "Team plan — monthly", days_ago=12)
    open_dispute(api_base, disputed)

    # Grace: cancelled ten days ago, still charged by the renewal three days ago.
    grace = ids[GRACE.email] = create_customer(client, GRACE)
    grace_sub = create_subscription(client, api_base, grace, "Pro", 4900, days_ago=33)
    create_charge(client, api_base, grace, 4900, "Pro plan — monthly", days_ago=3)
    set_subscription_state(
        api_base, grace_sub, status="canceled", canceled_at=int(time.time() - 10 * DAY)
    )

    # Ivy: charged twice today, like Alice; but the email in her name is forged (see below).
    ivy = ids[IVY.email] = create_customer(client, IVY)
    create_charge(client, api_base, ivy, 2900, "Starter plan — monthly", days_ago=0.1)
    create_charge(client, api_base, ivy, 2900, "Starter plan — monthly")

    # Jade: a charge she says she does not recognise.
    jade = ids[JADE.email] = create_customer(client, JADE)
    create_charge(client, api_base, jade, 4900, "Pro plan — monthly", days_ago=2)

    # Kai: a long-standing customer, unhappy with the service.
    kai = ids[KAI.email] = create_customer(client, KAI)
    create_subscription(client, api_base, kai, "Business", 19900, days_ago=12)

    # Leo: a live subscription he cannot reach the portal to cancel.
    leo = ids[LEO.email] = create_customer(client, LEO)
    create_subscription(client, api_base, leo, "Starter", 2900, days_ago=20)

    # Mia: an annual renewal taken yesterday that she did not mean to keep.
    mia = ids[MIA.email] = create_customer(client, MIA)
    create_charge(client, api_base, mia, 9900, "Pro plan — annual renewal", days_ago=1)

    # Nina: her bank disputes this month's payment; Stripe tells us by webhook (no email).
    nina = ids[NINA.email] = create_customer(client, NINA)
    client.v1.payment_intents.create(
        params={
            "amount": 4900,
            "currency": "usd",
            "customer": nina,
            "payment_method": "pm_card_createDispute",
            "confirm": True,
        }
    )

    # Henry: two Stripe accounts on one email address; the agent must choose.
    for who in (HENRY_PERSONAL, HENRY_COMPANY):
        henry = create_customer(client, who)
        create_charge(client, api_base, henry, 1900, "Solo plan — monthly", days_ago=2)
    return ids


def _email(
    who: DemoCustomer, subject: str, body: str, minutes_ago: int, *, forged: bool = False
) -> bytes:
    message = EmailMessage()
    message["From"] = email.utils.formataddr((who.name, who.email))
    message["To"] = "Billing Support <billing@example.com>"
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(time.time() - minutes_ago * 60)
    message["Message-ID"] = email.utils.make_msgid(domain=who.email.split("@")[1])
    message.set_content(body)
    if forged:  # sent from elsewhere with the customer's address in From
        return received_by_our_server(
            message.as_bytes(),
            "spf=fail smtp.mailfrom=mailer.example.net; dkim=none; "
            f"dmarc=fail header.from={who.email.split('@')[1]}",
        )
    return sender_verified(message.as_bytes())  # DMARC passed at our mail server


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
            ERIN,
            "Refund for the analytics module",
            "Hello,\n\nWe bought the analytics module last week ($800) but never activated it "
            "and have not used it at all. Could we get a refund for the unused module?\n\n"
            "Erin Walsh\nWalsh Analytics\n",
            minutes_ago=9,
        ),
        _email(
            FRANK,
            "Disputed charge",
            "I did not recognise a $199 charge so I disputed it with my bank. Please stop "
            "charging me.\n\nFrank\n",
            minutes_ago=8,
        ),
        _email(
            GRACE,
            "Charged after I cancelled",
            "Hi, I cancelled my Pro subscription ten days ago but you still charged me $49 on "
            "the renewal. Please refund it.\n\nGrace Lin\n",
            minutes_ago=7,
        ),
        _email(
            HENRY_PERSONAL,
            "Question about my bill",
            "Hi, which of my accounts was charged $19 this week?\n\nHenry\n",
            minutes_ago=6,
        ),
        _email(
            DAN,
            "Pending charge of $120 on my card",
            "Hi, there is a pending charge of $120.00 from you on my card but I only topped up "
            "seats once last week. Can you check?\n\nDan Okafor\n",
            minutes_ago=5,
        ),
        _email(
            JADE,
            "Charge I don't recognise",
            "Hello, there is a $49.00 charge from you on my card statement from two days ago. "
            "I don't recognise it and I never signed up for anything. Who charged me?\n\nJade\n",
            minutes_ago=4,
        ),
        _email(
            KAI,
            "Really disappointed",
            "Honestly, we are very unhappy with the service this month: the app was slow for "
            "days and nobody answered our messages. We expected much better for $199 a "
            "month.\n\nKai Tanaka\nTanaka Print\n",
            minutes_ago=3,
        ),
        _email(
            LEO,
            "Please cancel my subscription",
            "Hi, please cancel my Starter subscription. I can't log in to my account to do it "
            "myself: the password reset email never arrives.\n\nThanks,\nLeo\n",
            minutes_ago=3,
        ),
        _email(
            MIA,
            "Refund for the renewal",
            "Hi, my annual plan renewed by accident yesterday ($99) and I did not mean to keep "
            "it. Could I get a refund for the renewal please?\n\nMia Sato\n",
            minutes_ago=2,
        ),
        _email(
            IVY,
            "Charged twice",
            "Hello, you charged my card twice today, $29.00 two times. Please refund one of "
            "them.\n\nIvy Novak\nNovak Books\n",
            minutes_ago=4,
            forged=True,
        ),
    ]
