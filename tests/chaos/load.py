"""The mixed load: customers in the fake Stripe, their emails, Stripe webhooks and an agent.

Every email has a customer of its own, seeded for its category the way the playbooks' end to
end tests seed theirs, so what each email should end as is known in advance: a refund of one
named charge (or none) and which confirmation email, if any. The agent's tickets are
duplicate charges refunded from the sidebar over HTTP, with a double click.
"""

from __future__ import annotations

import email.utils
import json
import random
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage

import requests
import stripe

from helpdesk_app.demo.seed import (
    DemoCustomer,
    create_charge,
    create_customer,
    create_declined_charge,
    create_subscription,
    set_subscription_state,
)
from helpdesk_app.demo.servers import sender_verified
from tests.stripe_webhooks import SECRET, sign

DAY = 86_400
AGENT_EMAIL = "ann@chaos.test"
AGENT_PASSWORD = "chaos agent password"
HTTP_ATTEMPTS = 40  # an agent (or Stripe) tries again, a second apart, this many times
REFUND_TEMPLATES = ("refund_confirmation", "prorated_refund_confirmation")


@dataclass(frozen=True)
class Case:
    """One category's email, and what its playbook does with it."""

    category: str
    subject: str
    body: str
    refunded: bool  # the seeded charge named "refund" is refunded, once
    confirmation: str | None = None  # the template the customer gets once, with the refund ID


CASES = [
    Case(
        "duplicate_charge",
        "Charged twice",
        "Hi, I was charged twice today, $49.00 two times. Please refund one.",
        True,
        "refund_confirmation",
    ),
    Case(
        "charge_after_cancellation",
        "Charged after I cancelled",
        "Hello, I cancelled my subscription last week but you still charged me $49.00 for the "
        "renewal three days ago. Please refund it.",
        True,
        "prorated_refund_confirmation",
    ),
    Case(
        "unused_module",
        "Refund for the module we never used",
        "Hi, we were billed for the Analytics module but we never activated it and have "
        "not used it at all. Can we get a refund for the unused module?",
        False,
    ),
    Case(
        "card_not_recognized",
        "Charge I don't recognise",
        "Hi, there is a charge of $49.00 from your company on my card statement that I do not "
        "recognize. I never signed up for anything. Who charged me?",
        False,
    ),
    Case(
        "general_dissatisfaction",
        "Very disappointed",
        "Honestly I'm very unhappy with the service this month. It has been slow and "
        "support was unhelpful. I expected much better for what we pay.",
        False,
    ),
    Case(
        "chargeback",
        "Chargeback",
        "I have filed a chargeback with my bank for the $49.00 charge.",
        False,
    ),
    Case(
        "payment_failed",
        "My payment failed",
        "Hi there, I got a notice that my payment failed this month. What do I need to do?",
        False,
    ),
    Case(
        "cancellation_request",
        "Cancel my subscription",
        "Hi, please cancel my subscription. I can't log in to my account to do it myself, the "
        "password reset never arrives. Thanks.",
        False,
    ),
    Case(
        "refund_request",
        "Refund please",
        "Hi, my plan renewed by accident yesterday and I did not mean to keep it. Could I get a "
        "refund for the renewal please?",
        True,
        "refund_confirmation",
    ),
    Case(
        "authorization_hold",
        "Pending charge on my card",
        "Hi, there is a pending authorization of $120.00 on my card from you that I don't "
        "understand. It says pending, not posted. Is this a hold? When will it go away?",
        False,
    ),
    Case(
        "other",
        "Invoice address",
        "Hello, can you change the company address printed on our invoices to 12 High "
        "Street, Leeds? Thanks.",
        False,
    ),
]


def luhn_card(rng: random.Random) -> str:
    """A card number of our own (one per customer: a shared card is the 'two accounts' case)."""
    digits = [4, 2, 4, 2, 7] + [rng.randrange(10) for _ in range(10)]
    total = 0
    for index, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if index % 2 == 0 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


@dataclass
class Customer:
    """A seeded customer and what should happen to their money and mail."""

    label: str
    email: str
    name: str
    stripe_id: str
    charges: list[str]
    refund_charge: str | None  # the one charge that should be refunded, once
    confirmation: str | None  # the confirmation template they should get once
    case: Case | None = None  # None: the agent's ticket
    message_id: str | None = None  # their email's Message-ID, once appended
    ticket_id: int | None = None  # the agent's ticket


def seed_case(
    client: stripe.StripeClient, api: str, case: Case, index: int, rng: random.Random
) -> Customer:
    """A customer for one category's email, with the charges its playbook looks at."""
    label = f"{case.category}-{index}"
    who = DemoCustomer(
        f"Chaos Customer {label}",
        f"{label.replace('_', '-')}@chaos.example.com",
        f"T-{9000 + index}",
        f"Chaos {label}",
        luhn_card(rng),
    )
    cid = create_customer(client, who)
    charges: list[str] = []
    refund: str | None = None
    if case.category in ("duplicate_charge", "chargeback"):
        charges.append(create_charge(client, api, cid, 4900, "Pro", days_ago=0.1))
        charges.append(create_charge(client, api, cid, 4900, "Pro"))
        refund = charges[1] if case.refunded else None
    elif case.category == "charge_after_cancellation":
        sub = create_subscription(client, api, cid, "Pro", 4900, days_ago=33)
        charges.append(create_charge(client, api, cid, 4900, "Pro plan — monthly", days_ago=3))
        set_subscription_state(api, sub, status="canceled", canceled_at=int(time.time() - 10 * DAY))
        refund = charges[0]
    elif case.category in ("unused_module", "general_dissatisfaction"):
        charges.append(create_charge(client, api, cid, 19900, "Analytics", days_ago=2))
    elif case.category == "card_not_recognized":
        charges.append(create_charge(client, api, cid, 4900, "Pro", days_ago=1))
    elif case.category == "payment_failed":
        charges.append(create_declined_charge(client, cid, 2900, "Starter plan — monthly"))
    elif case.category == "cancellation_request":
        create_subscription(client, api, cid, "Pro", 4900)
    elif case.category == "refund_request":
        charges.append(create_charge(client, api, cid, 4900, "Pro", 1))
        refund = charges[0]
    elif case.category == "authorization_hold":
        charges.append(create_charge(client, api, cid, 12000, "Seats", capture=False))
    return Customer(label, who.email, who.name, cid, charges, refund, case.confirmation, case)


def seed_agent_customer(
    client: stripe.StripeClient, api: str, index: int, rng: random.Random
) -> Customer:
    """A customer charged $49 twice an hour apart, whose ticket the agent refunds."""
    label = f"agent-{index}"
    who = DemoCustomer(
        f"Chaos Caller {index}",
        f"{label}@chaos.example.com",
        f"T-{8000 + index}",
        f"Caller {index}",
        luhn_card(rng),
    )
    cid = create_customer(client, who)
    first = create_charge(client, api, cid, 4900, "Pro", days_ago=0.05)
    second = create_charge(client, api, cid, 4900, "Pro")
    return Customer(label, who.email, who.name, cid, [first, second], second, REFUND_TEMPLATES[0])


def customer_email(customer: Customer) -> bytes:
    """The customer's email, from an authenticated sender, with a fresh Message-ID."""
    assert customer.case is not None
    message = EmailMessage()
    message["From"] = email.utils.formataddr((customer.name, customer.email))
    message["To"] = "billing@example.com"
    message["Subject"] = customer.case.subject
    message["Date"] = email.utils.formatdate()
    message["Message-ID"] = email.utils.make_msgid(idstring=customer.label, domain="chaos.test")
    customer.message_id = str(message["Message-ID"])
    message.set_content(customer.case.body)
    return sender_verified(message.as_bytes())


@dataclass
class Tally:
    """Operations done by the load, by kind, and the load's own failures."""

    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, n: int = 1) -> None:
        """Count ``n`` operations of ``kind``."""
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + n

    def problem(self, text: str) -> None:
        """Note something the load could not do (an anomaly)."""
        with self.lock:
            self.problems.append(text)


def retrying(
    what: str, call: Callable[[], requests.Response], tally: Tally, ok: Callable[[int], bool]
) -> requests.Response | None:
    """``call`` until its status is ``ok``, as a person or Stripe tries again; None if never."""
    last = ""
    for _ in range(HTTP_ATTEMPTS):
        try:
            response = call()
        except requests.RequestException as exc:
            last = type(exc).__name__
        else:
            if ok(response.status_code):
                return response
            last = f"HTTP {response.status_code}"
            tally.add("http_retries")
        time.sleep(1)
    tally.problem(f"{what}: never succeeded ({last})")
    return None


# --- Stripe webhooks --------------------------------------------------------------------


def deliver_webhook(web_url: str, event: dict, tally: Tally) -> None:
    """Deliver one event as Stripe does: signed, again on any non-2xx answer."""
    body = json.dumps(event).encode()

    def post() -> requests.Response:
        headers = {"Stripe-Signature": sign(body, SECRET), "Content-Type": "application/json"}
        return requests.post(f"{web_url}/webhooks/stripe", data=body, headers=headers, timeout=15)

    if retrying(f"webhook {event['id']}", post, tally, lambda s: 200 <= s < 300):
        tally.add("webhook_deliveries")


def stripe_event(event_type: str, obj: dict, serial: int) -> dict:
    """An event carrying ``obj`` as Stripe sends it."""
    return {
        "id": f"evt_chaos_{serial:05d}_{time.time_ns() % 10**6}",
        "object": "event",
        "api_version": "2026-06-24.dahlia",
        "type": event_type,
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }


# --- the agent in the sidebar -------------------------------------------------------------


class AgentBrowser:
    """One agent's browser: signs in with the form's CSRF token, then speaks as sidebar.js."""

    def __init__(self, web_url: str, tally: Tally) -> None:
        self.web = web_url
        self.tally = tally
        self.session = requests.Session()

    def sign_in(self) -> bool:
        """Sign in through the form (its CSRF token first); whether it worked."""
        for _ in range(HTTP_ATTEMPTS):
            try:
                page = self.session.get(f"{self.web}/login", timeout=15)
                csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
                if page.status_code == 200 and csrf:
                    data = {"csrf_token": csrf.group(1), "email": AGENT_EMAIL}
                    data["password"] = AGENT_PASSWORD
                    answer = self.session.post(
                        f"{self.web}/login", data=data, timeout=15, allow_redirects=False
                    )
                    where = answer.headers.get("Location", "")
                    if answer.status_code in (302, 303) and "/login" not in where:
                        self.tally.add("agent_sign_ins")
                        return True
            except requests.RequestException:
                pass
            self.tally.add("http_retries")
            time.sleep(1)
        self.tally.problem("the agent could never sign in")
        return False

    def refund_twice_clicked(self, customer: Customer) -> None:
        """Open the ticket's sidebar, confirm the customer, preview the refund of the newer
        charge with confirm-and-close, and click Confirm twice at once (then once more if a
        click saw an error, as a person would)."""
        assert customer.ticket_id is not None
        opened = retrying(
            f"sidebar of ticket {customer.ticket_id}",
            lambda: self.session.get(
                f"{self.web}/sidebar/tickets/{customer.ticket_id}", timeout=15
            ),
            self.tally,
            lambda s: s == 200,
        )
        if opened is None:
            return
        token = re.search(r'name="sidebar-token" content="([^"]+)"', opened.text)
        if token is None:
            self.tally.problem(f"ticket {customer.ticket_id}: the sidebar page has no token")
            return
        headers = {"Authorization": f"Bearer {token.group(1)}", "X-Sidebar": "1"}

        def post(path: str, data: dict) -> Callable[[], requests.Response]:
            return lambda: requests.post(
                f"{self.web}/sidebar{path}", data=data, headers=headers, timeout=20
            )

        verify = {"customer_id": customer.stripe_id, "email": "on", "organisation": "on"}
        verify["tenant"] = "on"
        if retrying("verify", post("/verify", verify), self.tally, lambda s: s == 200) is None:
            return
        form = {"kind": "refund", "charge_id": customer.refund_charge, "reason": "duplicate"}
        form["confirm_and_close"] = "on"
        preview = retrying(
            "preview", post("/actions/preview", form), self.tally, lambda s: s == 200
        )
        intent = re.search(r'name="intent" value="([^"]+)"', preview.text) if preview else None
        if intent is None:
            self.tally.problem(f"ticket {customer.ticket_id}: the refund preview offered no intent")
            return
        confirm = post("/actions", {"intent": intent.group(1)})
        with ThreadPoolExecutor(2) as pool:  # the double click
            clicks = list(pool.map(lambda _: _try(confirm), range(2)))
        self.tally.add("agent_clicks", 2)
        if not any(status == 200 for status in clicks):
            retrying("confirm", confirm, self.tally, lambda s: s == 200)
            self.tally.add("agent_clicks")


def _try(call: Callable[[], requests.Response]) -> int:
    try:
        return call().status_code
    except requests.RequestException:
        return 0
