"""The one refund judgement (core.policy.judge_refund), table by table: every asker (an agent's
preview, their confirmation, the worker just before Stripe, the mail agent) against the
playbooks' cases. Pure: no servers needed."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from core.domain import Category, Charge, Dispute, Money, RefundReason, Role
from core.policy import Approval, Asker, PolicyConfig, RefundQuestion, Verdict, judge_refund

NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
LATER = NOON + timedelta(hours=2)
CONFIG = PolicyConfig()
ALLOW, APPROVAL, DENY = Verdict.ALLOW, Verdict.NEEDS_APPROVAL, Verdict.DENY
AGENT, LEAD, FINANCE, ADMIN = Role.AGENT, Role.SUPPORT_LEAD, Role.FINANCE, Role.ADMIN
MANAGER, SECURITY = Role.ACCOUNT_MANAGER, Role.SECURITY
PEOPLE_ASKING = (Asker.PREVIEW, Asker.CONFIRMATION, Asker.WORKER)


def charge(amount: int = 4900, currency: str = "usd", **changes) -> Charge:
    """A captured, succeeded, unrefunded charge of ``amount`` minor units, made at noon."""
    base = Charge(
        id="ch_1",
        customer_id="cus_1",
        amount=Money(amount, currency),
        amount_refunded=0,
        created=NOON,
        status="succeeded",
        captured=True,
        disputed=False,
    )
    return replace(base, **changes)


def dispute(status: str = "needs_response", **changes) -> Dispute:
    """A dispute on ch_1."""
    base = Dispute(
        id="dp_1",
        charge_id="ch_1",
        amount=Money(4900, "usd"),
        reason="fraudulent",
        status=status,
        created=NOON,
    )
    return replace(base, **changes)


# An inquiry (pre-dispute) that a full refund may still settle.
INQUIRY = dispute("warning_needs_response", is_charge_refundable=True)


def ask(
    amount: int = 4900,
    role: Role | None = AGENT,
    *,
    asker: Asker = Asker.PREVIEW,
    identity_verified: bool = True,
    category: Category | None = None,
    in_flight: int = 0,
    **changes,
) -> RefundQuestion:
    """A verified agent (or, with role None, the mail agent) asking to refund ``amount``."""
    changes.setdefault("charge", charge())
    currency = changes["charge"].amount.currency
    base = RefundQuestion(
        asker=Asker.MAIL_AGENT if role is None else asker,
        requester_role=role,
        charge=changes.pop("charge"),
        amount=Money(amount, currency),
        reason=RefundReason.REQUESTED_BY_CUSTOMER,
        now=LATER,
        identity_confirmed=identity_verified,
        sender_matched=role is None,
        claims=frozenset([category]) if category else frozenset(),
        in_flight_on_charge=in_flight,
    )
    return replace(base, **changes)


FRAUDULENT = RefundReason.FRAUDULENT
DUPLICATE = RefundReason.DUPLICATE
BIG = charge(80_000)


@pytest.mark.parametrize(
    ("refund", "verdict", "approver", "words"),
    [
        # Identity comes first, whoever asks and whatever else is wrong.
        (ask(identity_verified=False), DENY, None, ["confirm their identity"]),
        (ask(role=ADMIN, identity_verified=False), DENY, None, ["confirm their identity"]),
        (
            ask(identity_verified=False, disputes=[dispute()]),
            DENY,
            None,
            ["confirm their identity"],
        ),
        # Only Security (or an admin) refunds as fraudulent.
        (ask(reason=FRAUDULENT), DENY, None, ["Only Security"]),
        (ask(role=LEAD, reason=FRAUDULENT), DENY, None, ["Only Security"]),
        (ask(role=FINANCE, reason=FRAUDULENT), DENY, None, ["Only Security"]),
        (ask(role=SECURITY, reason=FRAUDULENT), ALLOW, None, ["limit"]),
        (ask(role=ADMIN, reason=FRAUDULENT), ALLOW, None, ["limit"]),
        # An open dispute is handled through the dispute, by every role.
        (
            ask(charge=charge(disputed=True), disputes=[dispute()]),
            DENY,
            None,
            ["dp_1", "dispute process", "needs_response"],
        ),
        (
            ask(role=ADMIN, charge=charge(disputed=True), disputes=[dispute("under_review")]),
            DENY,
            None,
            ["dp_1", "dispute process"],
        ),
        (
            ask(disputes=[dispute(evidence_due_by=datetime(2026, 3, 20, tzinfo=UTC))]),
            DENY,
            None,
            ["evidence due 20 Mar 2026"],
        ),
        # An inquiry Stripe no longer lets us refund is a dispute like any other.
        (
            ask(disputes=[replace(INQUIRY, is_charge_refundable=False)]),
            DENY,
            None,
            ["dp_1", "dispute process"],
        ),
        # An inquiry: a full refund settles it, and Finance decides.
        (ask(disputes=[INQUIRY]), APPROVAL, FINANCE, ["Inquiry dp_1", "Finance decides"]),
        (ask(role=LEAD, disputes=[INQUIRY]), APPROVAL, FINANCE, ["Finance decides"]),
        (ask(role=FINANCE, disputes=[INQUIRY]), ALLOW, None, ["limit"]),
        (ask(role=ADMIN, disputes=[INQUIRY]), ALLOW, None, ["limit"]),
        (ask(4000, disputes=[INQUIRY]), DENY, None, ["only a full refund"]),
        (ask(4000, role=FINANCE, disputes=[INQUIRY]), DENY, None, ["only a full refund"]),
        # Nothing was taken.
        (ask(charge=charge(captured=False)), DENY, None, ["authorization hold"]),
        (ask(charge=charge(status="failed")), DENY, None, ["failed"]),
        # Never more than is left.
        (ask(1000, charge=charge(amount_refunded=4000)), DENY, None, ["Only $9.00"]),
        (ask(900, charge=charge(amount_refunded=4000)), ALLOW, None, ["limit"]),
        (ask(2000, in_flight=3000), DENY, None, ["leave only $19.00", "$20.00 was asked"]),
        (ask(1900, in_flight=3000), ALLOW, None, ["limit"]),
        (ask(100, in_flight=6000), DENY, None, ["leave only $0.00"]),
        (ask(0), DENY, None, ["positive"]),
        # "Only Support Leads and above can issue refunds over $500."
        (ask(50_000, charge=BIG), ALLOW, None, ["$500.00 refund limit"]),
        (ask(50_001, charge=BIG), APPROVAL, LEAD, ["over $500.00"]),
        (ask(50_001, role=SECURITY, charge=BIG), APPROVAL, LEAD, ["over $500.00"]),
        (ask(50_001, role=MANAGER, charge=BIG), APPROVAL, LEAD, ["over $500.00"]),
        (ask(50_001, role=LEAD, charge=BIG), ALLOW, None, ["Your role (Support Lead) allows it"]),
        (ask(50_001, role=FINANCE, charge=BIG), ALLOW, None, ["Your role (Finance) allows it"]),
        (ask(50_001, role=ADMIN, charge=BIG), ALLOW, None, ["Your role (Admin) allows it"]),
        # Hard refusals come before approvals.
        (ask(80_001, charge=BIG), DENY, None, ["Only $800.00"]),
        (
            ask(charge=charge(captured=False), category=Category.CARD_NOT_RECOGNIZED),
            DENY,
            None,
            ["authorization hold"],
        ),
        # Card not recognised: possible fraud, Security clears it.
        (ask(category=Category.CARD_NOT_RECOGNIZED), APPROVAL, SECURITY, ["Security"]),
        (ask(role=LEAD, category=Category.CARD_NOT_RECOGNIZED), APPROVAL, SECURITY, []),
        (ask(role=SECURITY, category=Category.CARD_NOT_RECOGNIZED), ALLOW, None, ["limit"]),
        (ask(role=ADMIN, category=Category.CARD_NOT_RECOGNIZED), ALLOW, None, ["limit"]),
        # Unused modules: the account manager approves.
        (ask(category=Category.UNUSED_MODULE), APPROVAL, MANAGER, ["account manager"]),
        (ask(role=LEAD, category=Category.UNUSED_MODULE), APPROVAL, MANAGER, []),
        (ask(role=MANAGER, category=Category.UNUSED_MODULE), ALLOW, None, ["limit"]),
        (ask(role=ADMIN, category=Category.UNUSED_MODULE), ALLOW, None, ["limit"]),
        # A currency with no threshold configured: a Support Lead decides.
        (ask(charge=charge(currency="eur")), APPROVAL, LEAD, ["No approval threshold", "EUR"]),
        (
            ask(role=LEAD, charge=charge(currency="eur")),
            ALLOW,
            None,
            ["Your role (Support Lead) allows it"],
        ),
    ],
)
@pytest.mark.parametrize("asker", PEOPLE_ASKING)
def test_judge_refund(refund, verdict, approver, words, asker):
    """Each ask gets the playbooks' verdict, names who approves, and says why: the same answer
    at the preview, the confirmation and the worker."""
    decision = judge_refund(replace(refund, asker=asker), CONFIG)
    assert (decision.verdict, decision.approval_role) == (verdict, approver)
    for word in words:
        assert word in decision.reason


def test_an_inquiry_on_a_charge_stripe_marks_disputed_can_still_be_settled_by_finance():
    """A full refund of a refundable inquiry goes to Finance, as Stripe really reports it."""
    refund = ask(charge=charge(disputed=True), disputes=[INQUIRY])
    decision = judge_refund(refund, CONFIG)
    assert (decision.verdict, decision.approval_role) == (APPROVAL, FINANCE)


@pytest.mark.parametrize(
    ("category", "role", "first", "then"),
    [
        (Category.UNUSED_MODULE, Role.AGENT, Role.ACCOUNT_MANAGER, (Role.SUPPORT_LEAD,)),
        (Category.UNUSED_MODULE, Role.SUPPORT_LEAD, Role.ACCOUNT_MANAGER, ()),
        (Category.UNUSED_MODULE, Role.ACCOUNT_MANAGER, Role.SUPPORT_LEAD, ()),
        (Category.CARD_NOT_RECOGNIZED, Role.AGENT, Role.SECURITY, (Role.SUPPORT_LEAD,)),
    ],
)
def test_a_refund_over_the_limit_collects_every_approval_it_needs(category, role, first, then):
    """One approver never stands in for another role: the $500 limit still needs a lead."""
    decision = judge_refund(ask(50_001, role=role, charge=BIG, category=category), CONFIG)
    assert decision.verdict is APPROVAL
    assert (decision.approval_role, decision.then) == (first, then)


# --- approvals follow the money: splits, other charges, other tickets -------------------


@pytest.mark.parametrize(
    ("refund", "verdict", "approver", "words"),
    [
        # $800 as two $400s: the second sees the first, queued or already refunded.
        (ask(40_000, charge=BIG, in_flight=40_000), APPROVAL, LEAD, ["$800.00 back"]),
        (ask(40_000, charge=charge(80_000, amount_refunded=40_000)), APPROVAL, LEAD, ["$800.00"]),
        (ask(10_000, charge=BIG, in_flight=40_000), ALLOW, None, []),
        (ask(40_000, role=LEAD, charge=BIG, in_flight=40_000), ALLOW, None, ["Support Lead"]),
        # Across the customer's charges, within the policy's window.
        (ask(20_000, charge=BIG, customer_recent=40_000), APPROVAL, LEAD, ["$600.00 refunded"]),
        (ask(10_000, charge=BIG, customer_recent=40_000), ALLOW, None, []),
        # A claim on any open ticket of the customer gates every refund of theirs.
        (ask(category=Category.GENERAL_DISSATISFACTION), APPROVAL, MANAGER, ["goodwill"]),
        (ask(chargeback_claimed=True), APPROVAL, FINANCE, ["chargeback", "pay twice"]),
        (ask(role=FINANCE, chargeback_claimed=True), ALLOW, None, []),
        # Who the customer is: a conflict refuses everyone, an admin included.
        (ask(identity_conflict="Account email: ticket says eve@x.test"), DENY, None, ["eve@"]),
        (ask(role=ADMIN, identity_conflict="Tenant ID: ticket says T-1"), DENY, None, ["T-1"]),
        # The refund window: a change of mind more than 7 days on goes to a lead...
        (ask(charge=charge(created=NOON - timedelta(days=9))), APPROVAL, LEAD, ["7 days old"]),
        # ...a duplicate or a charge after a cancellation is an error, never late.
        (ask(charge=charge(created=NOON - timedelta(days=9)), reason=DUPLICATE), ALLOW, None, []),
        (
            ask(charge=charge(created=NOON - timedelta(days=9)), after_cancellation=True),
            ALLOW,
            None,
            [],
        ),
    ],
)
@pytest.mark.parametrize("asker", PEOPLE_ASKING)
def test_approvals_follow_the_money(refund, verdict, approver, words, asker):
    """Split refunds, the customer's other charges and other tickets count, whatever ticket
    the agent stands on."""
    decision = judge_refund(replace(refund, asker=asker), CONFIG)
    assert (decision.verdict, decision.approval_role) == (verdict, approver)
    for word in words:
        assert word in decision.reason


def test_the_customer_window_and_its_limit_are_policy():
    """A team may allow more per customer, or count a shorter window's refunds."""
    generous = replace(CONFIG, customer_refund_limit={"usd": 100_000})
    decision = judge_refund(ask(20_000, charge=BIG, customer_recent=40_000), generous)
    assert decision.verdict is ALLOW


# --- the worker: approvals given, new needs found ----------------------------------------


def approval(by: str, role: Role, required: Role) -> Approval:
    return Approval(by, role, required)


@pytest.mark.parametrize(
    ("approvals", "category", "verdict", "approver"),
    [
        ((approval("lee@x.test", LEAD, LEAD),), None, ALLOW, None),
        # An account manager's approval covers the module, not the $500 limit.
        ((approval("avery@x.test", MANAGER, MANAGER),), Category.UNUSED_MODULE, APPROVAL, LEAD),
        (
            (approval("avery@x.test", MANAGER, MANAGER), approval("lee@x.test", LEAD, LEAD)),
            Category.UNUSED_MODULE,
            ALLOW,
            None,
        ),
        # A claim that appeared since the approvals were given: Security is asked now.
        ((approval("lee@x.test", LEAD, LEAD),), Category.CARD_NOT_RECOGNIZED, APPROVAL, SECURITY),
        # An admin stands in for every role.
        ((approval("ada@x.test", ADMIN, LEAD),), Category.UNUSED_MODULE, ALLOW, None),
    ],
)
def test_the_worker_weighs_the_approvals_given(approvals, category, verdict, approver):
    """Just before Stripe: what the approvals given cover, and what still needs someone."""
    refund = ask(80_000, charge=BIG, asker=Asker.WORKER, category=category, approvals=approvals)
    decision = judge_refund(refund, CONFIG)
    assert (decision.verdict, decision.approval_role) == (verdict, approver)
    if verdict is ALLOW:
        assert "Approved by" in decision.reason


# --- the mail agent --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("refund", "verdict", "approver", "words"),
    [
        (ask(role=None, reason=DUPLICATE), ALLOW, None, ["limit"]),
        (ask(role=None, reason=DUPLICATE, sender_matched=False), DENY, None, ["sender"]),
        (ask(role=None, reason=FRAUDULENT), DENY, None, ["Only Security"]),
        (ask(role=None, identity_conflict="Tenant ID: T-9"), DENY, None, ["T-9"]),
        (ask(role=None, disputes=[dispute()]), DENY, None, ["dispute process"]),
        (ask(role=None, charge=charge(captured=False)), DENY, None, ["authorization hold"]),
        # Anything someone must approve goes to an agent.
        (ask(60_000, role=None, charge=BIG, reason=DUPLICATE), APPROVAL, LEAD, ["over $500"]),
        (ask(role=None, category=Category.CARD_NOT_RECOGNIZED), APPROVAL, SECURITY, []),
        (ask(role=None, chargeback_claimed=True), APPROVAL, FINANCE, []),
        (ask(role=None, customer_recent=48_000), APPROVAL, LEAD, ["per customer"]),
    ],
)
def test_the_mail_agent_refunds_only_within_its_limits(refund, verdict, approver, words):
    """Automation refunds an authenticated-by-address sender within every limit, or asks."""
    decision = judge_refund(refund, CONFIG)
    assert (decision.verdict, decision.approval_role) == (verdict, approver)
    for word in words:
        assert word in decision.reason


def test_the_mail_agent_has_its_own_limit():
    """A team may let agents refund $500 alone and automation only $100."""
    cautious = replace(CONFIG, auto_refund_limit={"usd": 10_000})
    decision = judge_refund(ask(20_000, role=None, charge=BIG, reason=DUPLICATE), cautious)
    assert (decision.verdict, decision.approval_role) == (APPROVAL, LEAD)
    assert "mail agent may refund on its own" in decision.reason
