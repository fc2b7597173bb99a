"""From an agent's form to a checked proposal (core.actions), money typed by people, what the
sidebar knows, and who the customer is (core.customers)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from core.actions.base import Ask, Asking
from core.actions.refund import RefundAction
from core.actions.registry import action_type
from core.billing_context import BillingContext, ChargeView, mark_duplicates
from core.customers import Claims, Identity, identity_checks, identity_for
from core.db.models import Ticket
from core.domain import ActionKind, Category, Charge, Customer, MatchKind, Money, Role, Subscription
from core.errors import InvalidInput
from core.policy import Asker, Verdict, period_end_after
from core.policy.config import PolicyConfig

CONFIG = PolicyConfig()
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
# Refunds are asked for within the refund window of the charges made on 1 March.
REFUND_DAY = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
MARCH_1 = datetime(2026, 3, 1, tzinfo=UTC)
MARCH_31 = datetime(2026, 3, 31, tzinfo=UTC)
CUSTOMER = Customer(
    "cus_1", "ann@example.com", "Ann Example", {"tenant_id": "t-1", "organization": "Acme"}
)


def charge(id: str = "ch_1", amount: int = 3100, at: datetime = MARCH_1, **changes) -> Charge:
    """A captured, succeeded, unrefunded charge of cus_1 on a Visa ending 4242."""
    base = Charge(
        id=id,
        customer_id="cus_1",
        amount=Money(amount, "usd"),
        amount_refunded=0,
        created=at,
        status="succeeded",
        captured=True,
        disputed=False,
        card_brand="visa",
        card_last4="4242",
        card_fingerprint="fp_visa",
    )
    return replace(base, **changes)


def subscription(**changes) -> Subscription:
    """An active monthly Pro subscription of cus_1, paid until 31 March 2026."""
    base = Subscription(
        id="sub_1",
        customer_id="cus_1",
        status="active",
        plan_name="Pro",
        price=Money(3100, "usd"),
        interval="month",
        current_period_start=MARCH_1,
        current_period_end=MARCH_31,
    )
    return replace(base, **changes)


def ticket(**changes) -> Ticket:
    """Ticket 7 from ann@example.com, not saved anywhere."""
    fields = {"id": 7, "subject": "Billing", "requester_email": "ann@example.com", **changes}
    return Ticket(**fields)


def context(
    *views: ChargeView,
    subscriptions: tuple[Subscription, ...] = (),
    customer: Customer | None = CUSTOMER,
    verified: bool = True,
    claims: frozenset[Category] = frozenset(),
    **ticket_changes,
) -> BillingContext:
    """A billing context built by hand, as load_context would leave it."""
    row = ticket(**ticket_changes)
    identity = None
    if customer is not None:
        identity = Identity(
            customer,
            MatchKind.EXPLICIT if verified else MatchKind.EMAIL,
            identity_checks(
                customer,
                requester_email=row.requester_email,
                organization=row.organization,
                tenant_id=row.tenant_id,
            ),
            row.requester_email,
        )
    return BillingContext(
        ticket=row,
        candidates=[customer] if customer else [],
        identity=identity,
        subscriptions=list(subscriptions),
        charges=list(views) or [ChargeView(charge())],
        claims=Claims(claims, Category.CHARGEBACK in claims, (7,)),
    )


def asked(built: BillingContext, role: Role, config: PolicyConfig, now: datetime) -> Ask:
    """An agent of ``role`` previewing in the sidebar."""
    return Ask(built, Asking(Asker.PREVIEW, role), config, now)


def propose_refund(built: BillingContext, form: dict[str, str], role: Role, config: PolicyConfig):
    """The refund proposal an agent of ``role`` gets."""
    return RefundAction().propose(asked(built, role, config, REFUND_DAY), form)


def propose_account_action(kind, built, form, role, config, now):
    """The proposal of any other kind an agent of ``role`` gets."""
    return action_type(kind).propose(asked(built, role, config, now), form)


def propose(kind_name, built, form, role, config, now):
    """Any proposal, found by the kind's name as the sidebar sends it."""
    return action_type(kind_name).propose(asked(built, role, config, now), form)


def refund_form(**fields: str) -> dict[str, str]:
    """The refund form for ch_1, requested by the customer, with ``fields`` set."""
    return {"charge_id": "ch_1", "reason": "requested_by_customer", **fields}


# --- Money typed by people -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("49", "usd", 4900),
        ("1,234.50", "usd", 123_450),
        ("$12", "usd", 1200),
        (" $12.00 ", "usd", 1200),
        ("€5.5", "eur", 550),
        ("0.5", "usd", 50),
        ("0.05", "usd", 5),
        ("500", "jpy", 500),
        ("¥1,000", "JPY", 1000),
        ("49", "USD", 4900),
    ],
)
def test_money_parse(text, currency, minor):
    """Major units as typed become exact minor units, in the currency's own precision."""
    assert Money.parse(text, currency) == Money(minor, currency.lower())


@pytest.mark.parametrize(
    ("text", "currency", "words"),
    [
        ("1.234", "usd", "more decimals than USD"),
        ("0.001", "usd", "more decimals"),
        ("12.5", "jpy", "more decimals than JPY"),
        ("abc", "usd", "not an amount"),
        ("", "usd", "not an amount"),
        ("12 dollars", "usd", "not an amount"),
        ("nan", "usd", "not an amount"),
        ("inf", "usd", "not an amount"),
        ("-Infinity", "usd", "not an amount"),
    ],
)
def test_money_parse_refuses(text, currency, words):
    """Anything that is not an exact amount of the currency is a ValueError saying why."""
    with pytest.raises(ValueError, match=words):
        Money.parse(text, currency)


@pytest.mark.parametrize("text", ["1e400", "1e2"])
def test_money_parse_refuses_exponent_notation(text):
    """People do not type exponents; one that slips in is not an amount."""
    with pytest.raises(ValueError):
        Money.parse(text, "usd")


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(123_450, "usd"), "1234.50"),
        (Money(4900, "eur"), "49.00"),
        (Money(5, "usd"), "0.05"),
        (Money(0, "usd"), "0.00"),
        (Money(500, "jpy"), "500"),
    ],
)
def test_money_plain(money, text):
    """Plain text has no symbol or separators, and parses back to the same Money."""
    assert money.plain() == text
    assert Money.parse(text, money.currency) == money


# --- billing periods ---------------------------------------------------------------------


def at(year: int, month: int, day: int) -> datetime:
    """Half past nine UTC on the day, so the time of day is seen to carry over."""
    return datetime(year, month, day, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "interval", "end"),
    [
        (at(2026, 1, 15), "month", at(2026, 2, 15)),
        (at(2026, 1, 31), "month", at(2026, 2, 28)),
        (at(2028, 1, 31), "month", at(2028, 2, 29)),
        (at(2026, 1, 30), "month", at(2026, 2, 28)),
        (at(2026, 3, 31), "month", at(2026, 4, 30)),
        (at(2026, 8, 31), "month", at(2026, 9, 30)),
        (at(2026, 12, 15), "month", at(2027, 1, 15)),
        (at(2026, 12, 31), "month", at(2027, 1, 31)),
        (at(2026, 1, 31), None, at(2026, 2, 28)),
        (at(2026, 3, 1), "year", at(2027, 3, 1)),
        (at(2026, 3, 1), "week", at(2026, 3, 8)),
        (at(2026, 12, 29), "week", at(2027, 1, 5)),
        (at(2026, 3, 1), "day", at(2026, 3, 2)),
        (at(2026, 2, 28), "day", at(2026, 3, 1)),
    ],
)
def testperiod_end_after(start, interval, end):
    """One period later, keeping the time of day; a month from the 31st ends at month end."""
    assert period_end_after(start, interval) == end


def test_a_yearly_period_from_29_february_ends_on_28_february():
    """A leap-day yearly charge's period ends at the end of February, like a month's would."""
    assert period_end_after(at(2028, 2, 29), "year") == at(2029, 2, 28)


# --- refund proposals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("view", "form", "amount", "part"),
    [
        (ChargeView(charge()), refund_form(), 3100, "full"),
        (ChargeView(charge()), refund_form(amount="  "), 3100, "full"),
        (ChargeView(charge()), refund_form(amount="31.00"), 3100, "full"),
        (ChargeView(charge()), refund_form(amount="12.50"), 1250, "partial"),
        (ChargeView(charge()), refund_form(amount="$1,0"), 1000, "partial"),
        (ChargeView(charge(amount_refunded=1000)), refund_form(), 2100, "partial"),
    ],
)
def test_propose_refund_amount(view, form, amount, part):
    """No amount means what is left on the charge; a typed amount is taken exactly."""
    proposal = propose_refund(context(view), form, Role.AGENT, CONFIG)
    assert proposal.amount == Money(amount, "usd")
    assert f"({part})" in proposal.title
    assert proposal.decision.verdict is Verdict.ALLOW
    requested = proposal.requested
    assert (requested.kind, requested.charge_id, requested.reason) == (
        ActionKind.REFUND,
        "ch_1",
        "requested_by_customer",
    )


def test_a_blank_amount_proposes_what_is_left_after_requests_in_flight():
    """With $10.00 already requested, a blank amount proposes the $21.00 still refundable."""
    view = ChargeView(charge(), in_flight=1000)
    proposal = propose_refund(context(view), refund_form(), Role.AGENT, CONFIG)
    assert proposal.amount == Money(2100, "usd")
    assert proposal.decision.verdict is Verdict.ALLOW


def test_a_refund_proposal_says_what_will_happen():
    """Title, target and intent name the amount, the charge and the card."""
    proposal = propose_refund(
        context(), refund_form(amount="12.50", confirm_and_close="on"), Role.AGENT, CONFIG
    )
    assert proposal.title == "Refund $12.50 (partial) — reason: requested_by_customer"
    assert proposal.target == "ch_1 · $31.00 on 01 Mar 2026 Visa ·4242"
    assert proposal.requested.to_intent() == {
        "kind": "refund",
        "key": proposal.requested.key,
        "charge": "ch_1",
        "amount": 1250,
        "currency": "usd",
        "reason": "requested_by_customer",
        "params": {"confirm_and_close": True},
    }


@pytest.mark.parametrize(
    ("cancelled_on", "sub", "amount", "words"),
    [
        # 31-day period from 1 March: cancelled before it began, all of it is unused.
        ("2026-02-20", subscription(), 3100, "before the period began"),
        ("2026-03-01", subscription(), 3100, "all 31 days"),
        # 10 days used, 21 of 31 unused.
        ("2026-03-11", subscription(), 2100, "21 of 31 days"),
        ("2026-03-31", subscription(), 100, "1 of 31 days"),
        # No subscription: a month, as Stripe's default.
        ("2026-03-11", None, 2100, "21 of 31 days"),
        # Yearly: 181 of 365 days unused after 1 September.
        ("2026-09-01", subscription(interval="year", price=Money(36_500, "usd")), 18_100, "181"),
        # The subscription's own cancellation when the form gives none.
        ("", subscription(canceled_at=datetime(2026, 3, 11, tzinfo=UTC)), 2100, "21 of 31"),
    ],
)
def test_propose_prorated_refund(cancelled_on, sub, amount, words):
    """The unused share of the charge's period after the cancellation, explained in details."""
    price = sub.price.amount if sub else 3100
    view = ChargeView(charge(amount=price))
    subs = (sub,) if sub else ()
    form = refund_form(prorated="on", cancelled_on=cancelled_on)
    proposal = propose_refund(context(view, subscriptions=subs), form, Role.AGENT, CONFIG)
    assert proposal.amount == Money(amount, "usd")
    assert len(proposal.details) == 1
    assert words in proposal.details[0]
    cancelled = cancelled_on or "2026-03-11"
    prorated = proposal.requested.params["prorated"]
    # The explanation travels with the refund: the customer's confirmation quotes it.
    assert prorated == {"cancelled_on": cancelled, "explanation": proposal.details[0]}


@pytest.mark.parametrize(
    ("cancelled_on", "sub", "words"),
    [
        ("2026-04-01", subscription(), "Nothing of this charge's period"),
        ("2026-04-05", subscription(), "Nothing of this charge's period"),
        ("31/03/2026", subscription(), "must look like 2026-03-31"),
        ("", subscription(), "Enter the confirmed cancellation date"),
        ("", None, "Enter the confirmed cancellation date"),
    ],
)
def test_prorated_refund_refusals(cancelled_on, sub, words):
    """A cancellation after the period, an unreadable date or none at all is InvalidInput."""
    subs = (sub,) if sub else ()
    form = refund_form(prorated="on", cancelled_on=cancelled_on)
    with pytest.raises(InvalidInput, match=words):
        propose_refund(context(subscriptions=subs), form, Role.AGENT, CONFIG)


@pytest.mark.parametrize(
    ("form", "words"),
    [
        (refund_form(charge_id="ch_other"), "Choose one of this customer's charges"),
        ({"reason": "requested_by_customer"}, "Choose one of this customer's charges"),
        (refund_form(reason="because"), "Choose a refund reason"),
        (refund_form(reason=""), "Choose a refund reason"),
        (refund_form(amount="abc"), "not an amount"),
        (refund_form(amount="1.234"), "more decimals"),
    ],
)
def test_propose_refund_refuses_bad_forms(form, words):
    """An unknown charge, a reason Stripe does not know or an unreadable amount is refused."""
    with pytest.raises(InvalidInput, match=words):
        propose_refund(context(), form, Role.AGENT, CONFIG)


@pytest.mark.parametrize(
    ("built", "verdict", "approver"),
    [
        (context(), Verdict.ALLOW, None),
        (context(verified=False), Verdict.DENY, None),
        # Any open ticket of the customer gates it, not only the one the agent stands on.
        (
            context(claims=frozenset({Category.CARD_NOT_RECOGNIZED})),
            Verdict.NEEDS_APPROVAL,
            Role.SECURITY,
        ),
        (
            context(claims=frozenset({Category.UNUSED_MODULE})),
            Verdict.NEEDS_APPROVAL,
            Role.ACCOUNT_MANAGER,
        ),
        (context(ChargeView(charge(), in_flight=3000)), Verdict.DENY, None),
    ],
)
def test_refund_proposals_carry_the_policy_decision(built, verdict, approver):
    """Identity, the customer's open claims and requests in flight reach the judgement."""
    decision = propose_refund(built, refund_form(amount="5"), Role.AGENT, CONFIG).decision
    assert (decision.verdict, decision.approval_role) == (verdict, approver)


def _refund_key(view: ChargeView, ticket_id: int = 7, **form: str) -> str:
    built = context(view, id=ticket_id)
    return propose_refund(built, refund_form(**form), Role.AGENT, CONFIG).requested.key


BASE_VIEW = ChargeView(charge(), in_flight=0)


@pytest.mark.parametrize(
    ("view", "ticket_id", "form", "same"),
    [
        # Two tabs or a double click: same request, same state.
        (BASE_VIEW, 7, {"amount": "10"}, True),
        (BASE_VIEW, 7, {"amount": "10.00", "confirm_and_close": "on"}, True),
        # A second partial refund once the first has landed, or while it is still queued.
        (ChargeView(charge(amount_refunded=1000)), 7, {"amount": "10"}, False),
        (ChargeView(charge(), in_flight=1000), 7, {"amount": "10"}, False),
        # A different request.
        (BASE_VIEW, 7, {"amount": "11"}, False),
        (BASE_VIEW, 7, {"amount": "10", "reason": "duplicate"}, False),
        (BASE_VIEW, 8, {"amount": "10"}, False),
    ],
)
def test_refund_idempotency_key(view, ticket_id, form, same):
    """The key follows the request and the charge's refund state, nothing else."""
    first = _refund_key(BASE_VIEW, amount="10")
    assert first.startswith("sidebar:refund:")
    assert (_refund_key(view, ticket_id, **form) == first) is same


def test_the_key_picks_the_chosen_charge():
    """Two charges of the same amount have different keys."""
    views = [ChargeView(charge("ch_1")), ChargeView(charge("ch_2"))]
    keys = {
        propose_refund(context(*views), refund_form(charge_id=c), Role.AGENT, CONFIG).requested.key
        for c in ("ch_1", "ch_2")
    }
    assert len(keys) == 2


# --- account actions ----------------------------------------------------------------------


def account_action(kind: ActionKind, built: BillingContext | None = None, **form: str):
    """The proposal an agent gets for ``kind`` with ``form`` on a context with sub_1."""
    built = built or context(subscriptions=(subscription(),))
    return propose_account_action(kind, built, form, Role.AGENT, CONFIG, NOW)


@pytest.mark.parametrize(
    ("form", "at_period_end", "when"),
    [
        ({}, True, "at period end (31 Mar 2026)"),
        ({"mode": "at_period_end"}, True, "at period end (31 Mar 2026)"),
        ({"mode": "now"}, False, "immediately (no further access)"),
    ],
)
def test_cancel_subscription(form, at_period_end, when):
    """Cancel at period end unless the agent chose now."""
    proposal = account_action(ActionKind.CANCEL_SUBSCRIPTION, subscription_id="sub_1", **form)
    assert proposal.requested.params == {"subscription_id": "sub_1", "at_period_end": at_period_end}
    assert proposal.title == f"Cancel Pro {when}"
    assert proposal.target == "sub_1 of Ann Example (cus_1)"


def test_cancel_now_and_at_period_end_have_different_keys():
    """Choosing another mode is another request."""
    later = account_action(ActionKind.CANCEL_SUBSCRIPTION, subscription_id="sub_1")
    now = account_action(ActionKind.CANCEL_SUBSCRIPTION, subscription_id="sub_1", mode="now")
    assert later.requested.key != now.requested.key


@pytest.mark.parametrize(
    ("months", "duration", "span"),
    [
        ("", None, "on the next invoice"),
        ("1", 1, "for 1 month(s)"),
        (" 12 ", 12, "for 12 month(s)"),
    ],
)
def test_comp_coupon(months, duration, span):
    """A 100% comp for the next invoice, or for 1 to 12 months."""
    proposal = account_action(ActionKind.COMP_COUPON, subscription_id="sub_1", months=months)
    assert proposal.requested.params == {"subscription_id": "sub_1", "duration_in_months": duration}
    assert proposal.title == f"Comp: 100% off {span}"


@pytest.mark.parametrize(
    ("kind", "form", "words"),
    [
        (ActionKind.COMP_COUPON, {"subscription_id": "sub_1", "months": "0"}, "between 1 and 12"),
        (ActionKind.COMP_COUPON, {"subscription_id": "sub_1", "months": "13"}, "between 1 and 12"),
        (ActionKind.COMP_COUPON, {"subscription_id": "sub_1", "months": "1.5"}, "whole number"),
        (ActionKind.COMP_COUPON, {"months": "1"}, "Choose one of this customer's subscriptions"),
        (ActionKind.EXTEND_TRIAL, {"subscription_id": "sub_1", "days": "0"}, "between 1 and 365"),
        (ActionKind.EXTEND_TRIAL, {"subscription_id": "sub_1", "days": "366"}, "between 1"),
        (ActionKind.EXTEND_TRIAL, {"subscription_id": "sub_1", "days": ""}, "whole number"),
        (ActionKind.EXTEND_TRIAL, {"subscription_id": "sub_9", "days": "7"}, "subscriptions"),
        (ActionKind.CANCEL_SUBSCRIPTION, {"subscription_id": "sub_9"}, "subscriptions"),
        (ActionKind.FLAG_FRAUD, {"text": "   "}, "The reason is required"),
        (ActionKind.ESCALATE, {"target": "finance"}, "The reason is required"),
        (ActionKind.ESCALATE, {"target": "finance", "text": "x" * 2001}, "longer than 2000"),
        (ActionKind.ESCALATE, {"target": "ceo", "text": "help"}, "Choose who to escalate to"),
        (ActionKind.ESCALATE, {"text": "help"}, "Choose who to escalate to"),
        (ActionKind.NOTE, {}, "The note is required"),
    ],
)
def test_account_actions_refuse_bad_forms(kind, form, words):
    """Out-of-range numbers, unknown subscriptions or targets and missing text are refused."""
    with pytest.raises(InvalidInput, match=words):
        account_action(kind, **form)


@pytest.mark.parametrize(
    ("trial_end", "period_end", "until"),
    [
        # Free days start where paid time ends...
        (None, MARCH_31, datetime(2026, 4, 14, tzinfo=UTC)),
        # ...or the trial, whichever is later...
        (datetime(2026, 4, 5, tzinfo=UTC), MARCH_31, datetime(2026, 4, 19, tzinfo=UTC)),
        (datetime(2026, 3, 20, tzinfo=UTC), MARCH_31, datetime(2026, 4, 14, tzinfo=UTC)),
        # ...and never in the past.
        (None, MARCH_1, NOW + timedelta(days=14)),
        (None, None, NOW + timedelta(days=14)),
    ],
)
def test_extend_trial(trial_end, period_end, until):
    """The trial end moves to the latest of trial end, period end and now, plus the days."""
    sub = subscription(trial_end=trial_end, current_period_end=period_end)
    built = context(subscriptions=(sub,))
    proposal = account_action(ActionKind.EXTEND_TRIAL, built, subscription_id="sub_1", days="14")
    assert proposal.requested.params == {
        "subscription_id": "sub_1",
        "days": 14,
        "trial_end": int(until.timestamp()),
        "trial_end_date": f"{until:%d %b %Y}",
    }
    assert f"trial end moved to {until:%d %b %Y} (+14 days)" in proposal.title


@pytest.mark.parametrize(
    ("customer", "email", "verdict"),
    [
        (CUSTOMER, "ann@example.com", Verdict.ALLOW),
        (replace(CUSTOMER, email="ann@acme.test"), "ann@acme.test", Verdict.ALLOW),
        # Never to an address only the ticket gives: no customer email, no link.
        (replace(CUSTOMER, email=None), None, Verdict.DENY),
    ],
)
def test_update_card_link_goes_to_the_customers_own_address(customer, email, verdict):
    """The link goes to Stripe's email for the customer, never to whoever wrote the ticket."""
    built = context(customer=customer, requester_email=customer.email or "requester@acme.test")
    proposal = account_action(ActionKind.SEND_UPDATE_CARD_LINK, built)
    assert proposal.requested.params == {"email": email}
    assert proposal.target == f"{email or 'no email on file'} (cus_1)"
    assert proposal.decision.verdict is verdict


@pytest.mark.parametrize("kind", [ActionKind.SEND_UPDATE_CARD_LINK, ActionKind.FLAG_FRAUD])
def test_customer_actions_need_a_customer(kind):
    """Without a chosen customer there is nobody to email or flag."""
    with pytest.raises(InvalidInput, match="Choose the customer first"):
        account_action(kind, context(customer=None), text="stolen card")


@pytest.mark.parametrize(
    ("kind", "form", "title", "sla"),
    [
        (ActionKind.FLAG_FRAUD, {"text": " stolen card "}, "possible fraud", "Security · SLA 1h"),
        (
            ActionKind.ESCALATE,
            {"target": "finance", "text": " stolen card "},
            "Escalate to Finance",
            "Finance · SLA 48h",
        ),
        (
            ActionKind.ESCALATE,
            {"target": "engineering_critical", "text": "stolen card"},
            "Escalate to Engineering (Critical)",
            "Engineering (Critical) · SLA 15m",
        ),
        (
            ActionKind.ESCALATE,
            {"target": "support_lead", "text": "stolen card"},
            "Escalate to Support Lead",
            "Support Lead · SLA 24h",
        ),
    ],
)
def test_escalations_state_the_sla(kind, form, title, sla):
    """Flags and escalations name the team and its SLA, and keep the trimmed reason."""
    proposal = account_action(kind, **form)
    assert title in proposal.title
    assert proposal.details == (sla,)
    assert proposal.requested.params["text"] == "stolen card"


def test_a_note_keeps_its_text():
    """A note is added to the ticket as written, trimmed."""
    proposal = account_action(ActionKind.NOTE, text="  called back  ")
    assert (proposal.title, proposal.target, proposal.requested.params) == (
        "Add an internal note",
        "ticket #7",
        {"text": "called back"},
    )


@pytest.mark.parametrize(
    ("kind", "form", "verdict"),
    [
        (ActionKind.CANCEL_SUBSCRIPTION, {"subscription_id": "sub_1"}, Verdict.DENY),
        (ActionKind.COMP_COUPON, {"subscription_id": "sub_1"}, Verdict.DENY),
        (ActionKind.EXTEND_TRIAL, {"subscription_id": "sub_1", "days": "7"}, Verdict.DENY),
        (ActionKind.SEND_UPDATE_CARD_LINK, {}, Verdict.DENY),
        (ActionKind.FLAG_FRAUD, {"text": "stolen"}, Verdict.ALLOW),
        (ActionKind.ESCALATE, {"target": "finance", "text": "help"}, Verdict.ALLOW),
        (ActionKind.NOTE, {"text": "called"}, Verdict.ALLOW),
    ],
)
def test_account_actions_on_an_unverified_customer(kind, form, verdict):
    """Until identity is confirmed only flags, escalations and notes are allowed."""
    built = context(subscriptions=(subscription(),), verified=False)
    assert account_action(kind, built, **form).decision.verdict is verdict


@pytest.mark.parametrize(
    ("kind_name", "form", "kind"),
    [
        ("refund", refund_form(), ActionKind.REFUND),
        ("note", {"text": "called"}, ActionKind.NOTE),
    ],
)
def test_propose_dispatches_on_the_kind(kind_name, form, kind):
    """``propose`` routes refunds and account actions to their own builders."""
    assert propose(kind_name, context(), form, Role.AGENT, CONFIG, NOW).requested.kind is kind


def test_propose_refuses_an_unknown_kind():
    """A kind the sidebar does not offer is InvalidInput."""
    with pytest.raises(InvalidInput, match="Unknown action 'wire_money'"):
        propose("wire_money", context(), {}, Role.AGENT, CONFIG, NOW)


# --- duplicates ---------------------------------------------------------------------------

HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("charges", "expected"),
    [
        ([charge("a"), charge("b", at=MARCH_1 + HOUR)], {"b": "a"}),
        # Given newest first, as Stripe lists them.
        ([charge("b", at=MARCH_1 + HOUR), charge("a")], {"b": "a"}),
        ([charge("a"), charge("b", at=MARCH_1 + 24 * HOUR)], {"b": "a"}),
        ([charge("a"), charge("b", at=MARCH_1 + 25 * HOUR)], {}),
        ([charge("a"), charge("b", amount=3000, at=MARCH_1 + HOUR)], {}),
        ([charge("a"), replace(charge("b", at=MARCH_1 + HOUR), amount=Money(3100, "eur"))], {}),
        # A settled duplicate is not flagged, and a refunded original has nothing to repeat.
        ([charge("a"), charge("b", at=MARCH_1 + HOUR, amount_refunded=3100)], {}),
        ([charge("a", amount_refunded=3100), charge("b", at=MARCH_1 + HOUR)], {}),
        # One rule with the mail agent's: a charge partly refunded is already being handled.
        ([charge("a", amount_refunded=100), charge("b", at=MARCH_1 + HOUR)], {}),
        # Holds and failures took no money.
        ([charge("a", captured=False), charge("b", at=MARCH_1 + HOUR)], {}),
        ([charge("a"), charge("b", at=MARCH_1 + HOUR, captured=False)], {}),
        ([charge("a", status="failed"), charge("b", at=MARCH_1 + HOUR)], {}),
        ([charge("a"), charge("b", at=MARCH_1 + HOUR, status="failed")], {}),
        # Three in a row: each repeats the one before.
        (
            [charge("a"), charge("b", at=MARCH_1 + HOUR), charge("c", at=MARCH_1 + 2 * HOUR)],
            {"b": "a", "c": "b"},
        ),
        # The nearest earlier charge of the same amount, past a different one in between.
        (
            [
                charge("a"),
                charge("x", amount=900, at=MARCH_1 + HOUR),
                charge("b", at=MARCH_1 + 2 * HOUR),
            ],
            {"b": "a"},
        ),
    ],
)
def test_mark_duplicates(charges, expected):
    """The later of two same-amount paid charges within 24 hours is marked, and only it."""
    views = [ChargeView(c) for c in charges]
    mark_duplicates(views, timedelta(hours=24))
    marked = {v.charge.id: v.duplicate_of for v in views if v.duplicate_of}
    assert marked == expected


def test_the_same_amount_on_another_card_is_still_flagged():
    """The playbook's duplicate is "same amount, same day": a retry on a second card counts
    (it is only flagged for the agent; the automatic refund has its own stricter rules)."""
    views = [
        ChargeView(charge("a")),
        ChargeView(charge("b", at=MARCH_1 + HOUR, card_fingerprint="fp_amex")),
    ]
    mark_duplicates(views, timedelta(hours=24))
    assert views[1].duplicate_of == "a"


# --- identity -----------------------------------------------------------------------------


def customer(email: str | None = "ann@example.com", **metadata: str) -> Customer:
    """Stripe's cus_1 with ``metadata`` (tenant_id, organization)."""
    return Customer("cus_1", email, "Ann", metadata)


@pytest.mark.parametrize(
    ("ticket_fields", "stripe_customer", "oks", "email_detail"),
    [
        (
            {"requester_email": "Ann@Example.COM", "organization": " acme ", "tenant_id": "T-1"},
            customer(organization="Acme", tenant_id="t-1"),
            [True, True, True],
            "ann@example.com",
        ),
        (
            {"requester_email": "eve@example.com", "tenant_id": "t-1"},
            customer(tenant_id="t-1"),
            [False, None, True],
            "ticket says eve@example.com, Stripe ann@example.com",
        ),
        (
            {"requester_email": "ann@example.com", "tenant_id": "t-2"},
            customer(organization="Acme", tenant_id="t-1"),
            [True, None, False],
            "ann@example.com",
        ),
        (
            {"requester_email": "ann@example.com"},
            customer(email=None),
            [None, None, None],
            "ann@example.com — ask the customer",
        ),
    ],
)
def test_identity_checks(ticket_fields, stripe_customer, oks, email_detail):
    """Email, organisation and tenant ID compared without case: match, conflict or unknown."""
    checks = identity_for(ticket(**ticket_fields), stripe_customer, MatchKind.EMAIL).checks
    assert [c.label for c in checks] == ["Account email", "Organisation", "Tenant ID"]
    assert [c.ok for c in checks] == oks
    assert checks[0].detail == email_detail


def test_an_identity_nobody_knows_says_so():
    """With neither side knowing the organisation, the check says unknown."""
    org = identity_for(ticket(), customer(), MatchKind.EMAIL).checks[1]
    assert (org.ok, org.detail) == (None, "unknown")


AGREEING = {"requester_email": "ANN@example.com", "tenant_id": "t-1"}
CONFLICTING = {"requester_email": "eve@example.com", "tenant_id": "t-1"}
CONFIRMED = {"customer_verified_by": "lead@example.com", "stripe_customer_id": "cus_1"}


@pytest.mark.parametrize(
    ("ticket_fields", "match", "verified"),
    [
        # A tenant ID read from the email is the sender's word: it waits for an agent too.
        (AGREEING, "tenant", False),
        (AGREEING, "explicit", True),
        ({"requester_email": "ann@example.com"}, "explicit", True),  # unknowns do not conflict
        (CONFLICTING, "tenant", False),
        (CONFLICTING, "explicit", False),
        # Email alone, or an agent's pick, is not proof...
        (AGREEING, "email", False),
        (AGREEING, "agent", False),
        (AGREEING, "none", False),
        # ...until someone confirms this very customer, which nobody can while the ticket
        # and Stripe disagree.
        ({**CONFLICTING, **CONFIRMED}, "email", False),
        ({**AGREEING, **CONFIRMED}, "agent", True),
        ({**AGREEING, **CONFIRMED, "stripe_customer_id": "cus_2"}, "agent", False),
        ({**AGREEING, "stripe_customer_id": "cus_1"}, "email", False),
    ],
)
def test_is_verified(ticket_fields, match, verified):
    """Verified by an agent's confirmation of this customer, or an explicit ID with no conflict."""
    identity = identity_for(ticket(**ticket_fields), customer(tenant_id="t-1"), MatchKind(match))
    assert identity.confirmed is verified
