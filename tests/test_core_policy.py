"""Pure policy: refund verdicts, duplicate detection, playbook plans, the policy file."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.customers import Claims, match_sender
from core.domain import ActionKind, Category, Charge, Customer, Money, RefundReason, Role
from core.errors import ConfigError
from core.playbooks import Next, TicketFacts, plan_ticket
from core.policy import (
    Asker,
    Mode,
    PolicyConfig,
    RefundQuestion,
    Verdict,
    find_duplicate,
    judge_refund,
    load_policy,
)
from core.policy.config import POLICY_KEYS

NOON = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


def charge(id="ch_1", amount=4900, at=NOON, **changes) -> Charge:
    base = Charge(
        id=id,
        customer_id="cus_1",
        amount=Money(amount, "usd"),
        amount_refunded=0,
        created=at,
        status="succeeded",
        captured=True,
        disputed=False,
    )
    return replace(base, **changes)


@pytest.mark.parametrize(
    ("ch", "amount", "verdict", "words"),
    [
        (charge(), 4900, Verdict.ALLOW, "limit"),
        (charge(amount=80000), 80000, Verdict.NEEDS_APPROVAL, "Support Lead"),
        (charge(amount=50000), 50000, Verdict.ALLOW, "limit"),  # "over $500" needs approval
        (charge(amount=50001), 50001, Verdict.NEEDS_APPROVAL, "$500.00"),
        (charge(disputed=True), 4900, Verdict.DENY, "dispute"),
        (charge(captured=False), 4900, Verdict.DENY, "authorization hold"),
        (charge(status="failed"), 4900, Verdict.DENY, "failed"),
        (charge(amount_refunded=4000), 1000, Verdict.DENY, "Only $9.00"),
        (charge(amount_refunded=4000), 900, Verdict.ALLOW, "limit"),
        (charge(), 0, Verdict.DENY, "positive"),
    ],
)
def test_the_charge_rules(ch, amount, verdict, words):
    decision = judge_refund(agent_asks(ch, Money(amount, ch.amount.currency)), PolicyConfig())
    assert decision.verdict is verdict
    assert words in decision.reason


def agent_asks(ch: Charge, amount: Money) -> RefundQuestion:
    """A verified agent asks, an hour after the charge."""
    return RefundQuestion(
        asker=Asker.PREVIEW,
        requester_role=Role.AGENT,
        charge=ch,
        amount=amount,
        reason=RefundReason.REQUESTED_BY_CUSTOMER,
        now=ch.created + timedelta(hours=1),
        identity_confirmed=True,
    )


def test_a_currency_without_a_threshold_needs_approval():
    ch = replace(charge(), amount=Money(4900, "eur"))
    decision = judge_refund(agent_asks(ch, Money(4900, "eur")), PolicyConfig())
    assert decision.verdict is Verdict.NEEDS_APPROVAL


@pytest.mark.parametrize(
    ("charges", "expected"),
    [
        ([charge("a"), charge("b", at=NOON + timedelta(hours=1))], ("a", "b")),
        # across midnight, 20 minutes apart
        (
            [
                charge("a", at=NOON.replace(hour=23, minute=50)),
                charge("b", at=NOON.replace(hour=23, minute=50) + timedelta(minutes=20)),
            ],
            ("a", "b"),
        ),
        ([charge("a"), charge("b", amount=1900)], None),
        ([charge("a"), charge("b", at=NOON + timedelta(days=30))], None),
        ([charge("a"), charge("b", amount_refunded=4900)], None),
        ([charge("a"), charge("b", disputed=True)], None),
        ([charge("a"), charge("b", captured=False)], None),
        ([charge("a"), charge("b", status="failed")], None),
        ([charge("a"), charge("b", customer_id="cus_2")], None),
        ([charge("only")], None),
        # the newest pair wins, and the newer charge of it is the duplicate
        (
            [
                charge("old1", at=NOON - 40 * DAY),
                charge("old2", at=NOON - 40 * DAY),
                charge("a"),
                charge("b", at=NOON + timedelta(minutes=5)),
            ],
            ("a", "b"),
        ),
    ],
)
def test_find_duplicate(charges, expected):
    pair = find_duplicate(charges, DAY)
    found = (pair.original.id, pair.duplicate.id) if pair else None
    assert found == expected


ALICE = Customer("cus_1", "alice@example.com", "Alice")
TWIN = [charge("a"), charge("b", at=NOON + timedelta(hours=1))]


REFUND_STEPS = (ActionKind.REFUND, ActionKind.CONFIRM_REFUND, ActionKind.CLOSE)
ASK = (ActionKind.REPLY,)


@pytest.mark.parametrize(
    ("category", "customers", "charges", "config", "step", "kinds"),
    [
        (Category.DUPLICATE_CHARGE, [ALICE], TWIN, PolicyConfig(), Next.AUTO, REFUND_STEPS),
        # Nobody to refund: ask for the account, the charge's date and amount, the last 4.
        (Category.DUPLICATE_CHARGE, [], TWIN, PolicyConfig(), Next.AUTO, ASK),
        (
            Category.DUPLICATE_CHARGE,
            [ALICE, Customer("cus_2", "alice@example.com", None)],
            TWIN,
            PolicyConfig(),
            Next.AGENT,
            None,
        ),
        (Category.DUPLICATE_CHARGE, [ALICE], TWIN[:1], PolicyConfig(), Next.AUTO, ASK),
        (
            Category.DUPLICATE_CHARGE,
            [ALICE],
            [charge("a", 90000), charge("b", 90000)],
            PolicyConfig(),
            Next.SUGGEST,
            REFUND_STEPS,
        ),
        (
            Category.DUPLICATE_CHARGE,
            [ALICE],
            TWIN,
            PolicyConfig(category_modes={Category.DUPLICATE_CHARGE: Mode.SUGGEST}),
            Next.SUGGEST,
            REFUND_STEPS,
        ),
        (
            Category.DUPLICATE_CHARGE,
            [ALICE],
            TWIN,
            PolicyConfig(category_modes={Category.DUPLICATE_CHARGE: Mode.OFF}),
            Next.AGENT,
            None,
        ),
        # Within 7 days of the charge: the refund policy allows it.
        (Category.REFUND_REQUEST, [ALICE], TWIN, PolicyConfig(), Next.AUTO, REFUND_STEPS),
        # Never a refund: Finance, and the customer hears the bank's process decides.
        (
            Category.CHARGEBACK,
            [ALICE],
            TWIN,
            PolicyConfig(),
            Next.AGENT,
            (ActionKind.ESCALATE, ActionKind.REPLY),
        ),
    ],
)
def test_plan_ticket(category, customers, charges, config, step, kinds):
    match = match_sender(ALICE.email or "", customers)
    facts = TicketFacts(
        category,
        match,
        NOON + 2 * timedelta(hours=1),
        "email-1",
        charges,
        sender_authenticated=True,
    )
    triage = plan_ticket(facts, config)
    assert triage.next is step
    assert triage.reason
    if kinds is None:
        assert triage.plan is None
        return
    assert triage.plan is not None and triage.plan.suggested is (step is Next.SUGGEST)
    assert tuple(s.kind for s in triage.plan.steps) == kinds
    if kinds != REFUND_STEPS:
        return
    refund, confirm, close = triage.plan.steps
    if category is Category.DUPLICATE_CHARGE:
        duplicate = find_duplicate(charges, DAY).duplicate
        assert (refund.charge_id, refund.reason) == (duplicate.id, "duplicate")
        assert refund.amount == duplicate.amount
    else:
        assert (refund.charge_id, refund.reason) == (charges[-1].id, "requested_by_customer")
    assert (confirm.kind, confirm.params) == (ActionKind.CONFIRM_REFUND, {"to": ALICE.email})
    assert (close.kind, close.params) == (ActionKind.CLOSE, {"resolution": RESOLUTION})


RESOLUTION = "Resolved — Refund issued"


@pytest.mark.parametrize(
    ("claims", "in_flight", "step"),
    [
        # Another open ticket of the customer says the card is not theirs: Security first.
        (Claims(frozenset([Category.CARD_NOT_RECOGNIZED]), False, (3,)), {}, Next.SUGGEST),
        (Claims(frozenset([Category.UNUSED_MODULE]), False, (3,)), {}, Next.SUGGEST),
        (Claims(frozenset(), True, (3,)), {}, Next.SUGGEST),
        # A refund of that charge already in flight leaves nothing to refund.
        (Claims.none(), {"b": 4900}, Next.AGENT),
    ],
)
def test_the_playbook_weighs_the_customers_other_tickets(claims, in_flight, step):
    """The mail agent asks the same judgement as everyone: other tickets and refunds count."""
    facts = TicketFacts(
        Category.DUPLICATE_CHARGE,
        match_sender(ALICE.email or "", [ALICE]),
        NOON + timedelta(hours=2),
        "email-1",
        TWIN,
        claims=claims,
        in_flight_by_charge=in_flight,
        sender_authenticated=True,
    )
    assert plan_ticket(facts, PolicyConfig()).next is step


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(4900, "usd"), "$49.00"),
        (Money(123456789, "usd"), "$1,234,567.89"),
        (Money(-550, "usd"), "-$5.50"),
        (Money(500, "jpy"), "¥500"),
        (Money(1000, "chf"), "10.00 CHF"),
    ],
)
def test_money_formats_for_people(money, text):
    assert money.format() == text


def test_money_refuses_floats_and_mixed_currencies():
    with pytest.raises(TypeError):
        Money(49.0, "usd")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Money(1, "usd") + Money(1, "eur")


def test_policy_file_overrides_defaults(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(
        "[refund_approval_threshold]\nusd = 25000\neur = 20000\n\n"
        '[category_modes]\nduplicate_charge = "suggest"\n'
    )
    config = load_policy(str(path))
    assert config.approval_threshold("usd") == Money(25000, "usd")
    assert config.approval_threshold("EUR") == Money(20000, "eur")
    assert config.mode_for(Category.DUPLICATE_CHARGE) is Mode.SUGGEST
    assert config.refund_window_days == 7  # untouched defaults stay the playbooks'


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("refund_aproval_threshold = 1\n", "refund_aproval_threshold"),
        ("[refund_approval_threshold]\nusd = -1\n", "refund_approval_threshold.usd"),
        ("[refund_approval_threshold]\nusd = 12.5\n", "refund_approval_threshold.usd"),
        ('[category_modes]\nduplicate = "auto"\n', "category_modes.duplicate"),
        ('[category_modes]\nduplicate_charge = "yes"\n', "category_modes.duplicate_charge"),
        ("refund_window_days = 0\n", "refund_window_days"),
        ("not toml [", "POLICY_FILE"),
    ],
)
def test_policy_file_errors_name_the_key(tmp_path, toml, key):
    path = tmp_path / "policy.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as raised:
        load_policy(str(path))
    assert key in str(raised.value)


def test_the_shipped_policy_file_is_the_defaults():
    """policy.toml documents every setting, each with the value the code defaults to."""
    shipped = Path(__file__).resolve().parent.parent / "policy.toml"
    assert load_policy(str(shipped)) == PolicyConfig()
    assert set(tomllib.loads(shipped.read_text(encoding="utf-8"))) == POLICY_KEYS
