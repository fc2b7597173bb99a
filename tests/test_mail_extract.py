"""Entities read from customers' words: what each pattern finds, and what it must not."""

from __future__ import annotations

import json
from datetime import date

import pytest

from core.domain import Money
from mail.extract import Entities, extract

TODAY = date(2026, 3, 10)


def usd(cents: int) -> Money:
    return Money(cents, "usd")


@pytest.mark.parametrize(
    ("text", "amounts"),
    [
        ("I was charged $49.00 twice today.", [usd(4900)]),
        ("you took $49 and then $49.00 again", [usd(4900)]),
        ("The invoice says 49 USD but my bank shows 52.30 usd", [usd(4900), usd(5230)]),
        ("USD 1,234.50 was taken", [usd(123450)]),
        ("US$1,234.50 for the annual plan", [usd(123450)]),
        ("Ich habe €120 bezahlt", [Money(12000, "eur")]),
        ("Ich habe 120€ bezahlt, bzw. 120 € laut Auszug", [Money(12000, "eur")]),
        ("Betrag: 1.299,00 EUR", [Money(129900, "eur")]),
        ("€1.299 for the year", [Money(129900, "eur")]),
        ("a £15 add-on", [Money(1500, "gbp")]),
        ("charged ₹2,499 twice", [Money(249900, "inr")]),
        ("₹2,49,999 for the enterprise plan", [Money(24999900, "inr")]),
        ("Rs. 2,499 debited", [Money(249900, "inr")]),
        ("¥500 and ¥1,000", [Money(500, "jpy"), Money(1000, "jpy")]),
        ("CHF 1'299.50 on my card", [Money(129950, "chf")]),
        ("I paid 49 dollars", [usd(4900)]),
        ("$49.00 USD", [usd(4900)]),
        # Not amounts: no currency, or numbers that are something else.
        ("Call me on +1 (415) 555-0132 about order #12345.", []),
        ("I have been a customer since 2019 and have 12 seats.", []),
        ("Invoice INV-2026-0042, version 2.3.1, 49.00 per seat", []),
        ("Tenant T-1042, ch_3OpQr5LkdIwHu7ix0aB1cD2e", []),
        ("$1,23,4 is no amount", []),
    ],
)
def test_amounts(text, amounts):
    assert list(extract(text, today=TODAY).amounts) == amounts


@pytest.mark.parametrize(
    ("text", "dates"),
    [
        ("charged on 2026-03-03 and 2026-03-04T10:00:00Z", ["2026-03-03", "2026-03-04"]),
        ("on 3 March 2026", ["2026-03-03"]),
        ("on the 3rd of March 2026", ["2026-03-03"]),
        ("on March 3rd", ["2026-03-03"]),
        ("on Mar 3, 2026 and Sept. 30, 2025", ["2026-03-03", "2025-09-30"]),
        # No year: the latest such day at most 30 days after the email.
        ("renewed on December 28", ["2025-12-28"]),
        ("renews on April 2", ["2026-04-02"]),
        # Numeric: day first unless only month first makes sense; dots always day first.
        ("charged 03/04/2026", ["2026-04-03"]),
        ("charged 03/14/2026", ["2026-03-14"]),
        ("charged 14/03/2026", ["2026-03-14"]),
        ("charged 04.03.2026", ["2026-03-04"]),
        ("charged 4/3/26", ["2026-03-04"]),
        # Not dates.
        ("expires 12/27, version 1.2.3, ratio 3/4", []),
        ("you may 3 times a week", []),
        ("the 31/02/2026 does not exist", []),
        ("call 555-12-34 or +44 20 7946 0958", []),
        ("since 2019, about 2026 plans", []),
    ],
)
def test_dates(text, dates):
    assert [d.isoformat() for d in extract(text, today=TODAY).dates] == dates


@pytest.mark.parametrize(
    ("text", "last4"),
    [
        ("on my card ending 4242", ["4242"]),
        ("Visa ending in 1881 was charged", ["1881"]),
        ("my Mastercard ends with 4444.", ["4444"]),
        ("the last four digits are 0005", ["0005"]),
        ("last 4 digits of my card: 5556", ["5556"]),
        ("last4 1117", ["1117"]),
        ("xxxx-4242", ["4242"]),
        ("XXXX XXXX XXXX 3222", ["3222"]),
        ("**** **** **** 8210 and •••• 4242", ["8210", "4242"]),
        ("Payment method  Visa - 4242", ["4242"]),
        ("Please use [card ending 4242] instead", ["4242"]),  # our own redaction
        # Not a last 4: years, order numbers, phone numbers, amounts.
        ("my subscription ending in 2026", []),
        ("order number 4242, ref 88214242", []),
        ("call me on 555-4242", []),
        ("my Visa 2026 statement", []),
        ("the last 4 years", []),
        ("Exxon 4242", []),
    ],
)
def test_card_last4(text, last4):
    assert list(extract(text, today=TODAY).card_last4) == last4


@pytest.mark.parametrize(
    ("text", "tenants"),
    [
        ("Our tenant is T-1042.", ["T-1042"]),
        ("tenant 1042", ["T-1042"]),
        ("Tenant ID: T-1042", ["T-1042"]),
        ("tenant #1042 and t-1077", ["T-1042", "T-1077"]),
        ("workspace id ws_88213", ["ws_88213"]),
        ("Northwind Bakery (tenant T-1042)", ["T-1042"]),
        ("T-1042 again: tenant T-1042", ["T-1042"]),
        # Not tenant IDs.
        ("I bought a T-shirt and 3 tenants moved in", []),
        ("invoice ABT-1042, order INV-T-1042x", []),
        ("T-12 is too short", []),
    ],
)
def test_tenant_ids(text, tenants):
    assert list(extract(text, today=TODAY).tenant_ids) == tenants


@pytest.mark.parametrize(
    ("text", "organization"),
    [
        ("Thanks,\nAlice Martin\nNorthwind Bakery (tenant T-1042)\n", "Northwind Bakery"),
        ("I'm the admin for Northwind Bakery (tenant T-1042).", "Northwind Bakery"),
        (
            "Best regards,\nErin Walsh\nHead of Finance\nWalsh Analytics Ltd\n",
            "Walsh Analytics Ltd",
        ),
        ("I work for Contoso GmbH and we were charged twice.", "Contoso GmbH"),
        ("Company: Diaz Studio\nPlease refund.", "Diaz Studio"),
        ("Dan\nOkafor & Sons", "Okafor & Sons"),
        # Conservative: a name alone, a greeting, or the sender's own name is no organisation.
        ("Thanks,\nErin Walsh\nWalsh Analytics\n", None),
        ("Hello (tenant T-1042), I was charged twice", None),
        ("Alice Martin (tenant T-1042)", None),
        ("I was charged twice at 10am for the Pro plan.", None),
        ("I'm the owner of Diaz Studio LLC.", "Diaz Studio LLC"),
        # The merchant is not the sender's organisation, nor is anyone in quoted text.
        ("There is a charge from Servinix Inc. on my card twice.", None),
        (
            "Charged twice, see below.\n\n---------- Forwarded message ---------\n"
            "From: Acme Cloud Inc. <receipts@stripe.com>\n\nAcme Cloud Inc.\n"
            "Receipt from Acme Cloud Inc. (tenant T-1042)",
            None,
        ),
        ("Thanks!\n\nOn Tue, Bob <b@x.com> wrote:\n> Bob Chen\n> Chen Logistics Ltd", None),
    ],
)
def test_organization(text, organization):
    assert extract(text, today=TODAY, sender_name="Alice Martin").organization == organization


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        (
            "charge ch_3OpQr5LkdIwHu7ix0aB1cD2e, payment pi_3MtwBwLkdIwHu7ix28a3tqPa",
            ["ch_3OpQr5LkdIwHu7ix0aB1cD2e", "pi_3MtwBwLkdIwHu7ix28a3tqPa"],
        ),
        (
            "in_1MtHbELkdIwHu7ixl4OzzPMv cus_NffrFeUfNV2Hib sub_1MowQVLkdIwHu7ixeRlqHVzs",
            ["in_1MtHbELkdIwHu7ixl4OzzPMv", "cus_NffrFeUfNV2Hib", "sub_1MowQVLkdIwHu7ixeRlqHVzs"],
        ),
        ("refund re_3MqLq2LkdIwHu7ix1Ab2Cd3E", ["re_3MqLq2LkdIwHu7ix1Ab2Cd3E"]),
        ("dispute dp_1MtJUT2eZvKYlo2CNaw2HvEv", ["dp_1MtJUT2eZvKYlo2CNaw2HvEv"]),
        # Words that only look like IDs.
        ("status in_progress, re_activation, sub_accounts", []),
        ("my_ch_3OpQr5LkdIwHu7ix0aB1cD2e", []),
    ],
)
def test_stripe_ids(text, ids):
    assert list(extract(text, today=TODAY).stripe_ids) == ids


@pytest.mark.parametrize(
    ("text", "filed"),
    [
        ("I filed a chargeback yesterday.", True),
        ("We've initiated a charge-back with our bank.", True),
        ("I disputed it with my bank.", True),
        ("I did not recognise a $199 charge so I disputed it with my bank.", True),
        ("I have disputed the payment with my bank", True),
        ("My bank is reversing the charge.", True),
        ("I opened a dispute with Amex this morning", True),
        ("The chargeback I filed should cover it", True),
        ("My card issuer gave me a provisional credit.", True),
        ("I contacted my bank to dispute the charge", True),
        # Threats, questions and denials are not a filed chargeback.
        ("If you don't refund me I will file a chargeback.", False),
        ("I have not filed a chargeback yet.", False),
        ("I don't want to dispute it with my bank.", False),
        ("Should I open a dispute with my bank?", False),
        ("Please refund, otherwise I'm going to file a chargeback", False),
        ("My bank has not reversed anything.", False),
        ("I disputed the amount with your sales rep.", False),
    ],
)
def test_chargeback_filed(text, filed):
    assert extract(text, today=TODAY).chargeback_filed is filed


def test_a_realistic_email_and_its_json_form():
    text = (
        "Hi,\n\nI was charged $49.00 twice on March 3rd on my Visa ending in 4242 "
        "(ch_3OpQr5LkdIwHu7ix0aB1cD2e and ch_3OpQr6LkdIwHu7ix1Zz9Yy8X). Could you refund one?\n\n"
        "Thanks,\nAlice Martin\nNorthwind Bakery (tenant T-1042)\n"
    )
    entities = extract(text, today=TODAY, sender_name="Alice Martin")
    assert entities.tenant_id == "T-1042"
    data = entities.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data == {
        "amounts": [{"amount": 4900, "currency": "usd"}],
        "dates": ["2026-03-03"],
        "card_last4": ["4242"],
        "tenant_ids": ["T-1042"],
        "organization": "Northwind Bakery",
        "stripe_ids": ["ch_3OpQr5LkdIwHu7ix0aB1cD2e", "ch_3OpQr6LkdIwHu7ix1Zz9Yy8X"],
        "chargeback_filed": False,
        "locked_out": False,
        "wants_immediate": False,
    }


def test_nothing_to_read_gives_empty_entities():
    assert extract("", today=TODAY) == Entities()
    assert Entities().tenant_id is None
