"""Guardrails on sidebar actions, and the agent records behind the roles they check."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from itertools import product

import pytest

from core import agents
from core.db import session_scope
from core.domain import (
    ActionKind,
    Category,
    Charge,
    Dispute,
    Money,
    RefundReason,
    Role,
)
from core.errors import InvalidInput, NotFound
from core.policy.config import PolicyConfig
from core.policy.guardrails import RefundAsk, check_account_action, check_refund
from core.policy.refunds import Verdict

NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
CONFIG = PolicyConfig()
ALLOW, APPROVAL, DENY = Verdict.ALLOW, Verdict.NEEDS_APPROVAL, Verdict.DENY
AGENT, LEAD, FINANCE, ADMIN = Role.AGENT, Role.SUPPORT_LEAD, Role.FINANCE, Role.ADMIN
MANAGER, SECURITY = Role.ACCOUNT_MANAGER, Role.SECURITY


def charge(amount: int = 4900, currency: str = "usd", **changes) -> Charge:
    """A captured, succeeded, unrefunded charge of ``amount`` minor units."""
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


def ask(amount: int = 4900, role: Role = AGENT, **changes) -> RefundAsk:
    """A verified agent asking to refund ``amount`` of the default charge."""
    changes.setdefault("charge", charge())
    currency = changes["charge"].amount.currency
    base = RefundAsk(
        charge=changes.pop("charge"),
        amount=Money(amount, currency),
        reason=RefundReason.REQUESTED_BY_CUSTOMER,
        role=role,
        identity_verified=True,
    )
    return replace(base, **changes)


FRAUDULENT = RefundReason.FRAUDULENT
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
def test_check_refund(refund, verdict, approver, words):
    """Each ask gets the playbooks' verdict, names who approves, and says why."""
    decision = check_refund(refund, CONFIG)
    assert (decision.verdict, decision.approval_role) == (verdict, approver)
    for word in words:
        assert word in decision.reason


def test_an_inquiry_on_a_charge_stripe_marks_disputed_can_still_be_settled_by_finance():
    """A full refund of a refundable inquiry goes to Finance, as Stripe really reports it."""
    refund = ask(charge=charge(disputed=True), disputes=[INQUIRY])
    decision = check_refund(refund, CONFIG)
    assert (decision.verdict, decision.approval_role) == (APPROVAL, FINANCE)


@pytest.mark.parametrize(
    ("kind", "needs_identity", "words"),
    [
        (ActionKind.REFUND, True, "confirm their identity"),
        (ActionKind.COMP_COUPON, True, "confirm their identity"),
        (ActionKind.EXTEND_TRIAL, True, "confirm their identity"),
        (ActionKind.CANCEL_SUBSCRIPTION, True, "changing their subscription"),
        (ActionKind.SEND_UPDATE_CARD_LINK, True, "billing link"),
        (ActionKind.ESCALATE, False, None),
        (ActionKind.NOTE, False, None),
        (ActionKind.FLAG_FRAUD, False, None),
    ],
)
@pytest.mark.parametrize("role", [AGENT, ADMIN])
def test_check_account_action(kind, needs_identity, words, role):
    """Actions on the customer's account wait for identity; escalating, notes and flags do not."""
    assert check_account_action(kind, role, identity_verified=True).verdict is ALLOW
    unverified = check_account_action(kind, role, identity_verified=False)
    assert unverified.verdict is (DENY if needs_identity else ALLOW)
    if words:
        assert words in unverified.reason


# --- roles ---------------------------------------------------------------------------------

# Who may act where each approval role is asked for: the role itself, admins, and for a Support
# Lead's approval also Finance ("Support Leads and above").
APPROVERS = {
    LEAD: {LEAD, FINANCE, ADMIN},
    FINANCE: {FINANCE, ADMIN},
    SECURITY: {SECURITY, ADMIN},
    MANAGER: {MANAGER, ADMIN},
    ADMIN: {ADMIN},
    AGENT: {AGENT, ADMIN},
}


@pytest.mark.parametrize(("required", "role"), list(product(APPROVERS, Role)))
def test_satisfies(required, role):
    """Each role may stand in exactly where the approval table says."""
    assert agents.satisfies(role, required) is (role in APPROVERS[required])


@pytest.mark.parametrize(
    ("role", "label"),
    [
        (AGENT, "Agent"),
        (LEAD, "Support Lead"),
        (FINANCE, "Finance"),
        (ADMIN, "Admin"),
        (MANAGER, "Account manager"),
        (SECURITY, "Security"),
    ],
)
def test_role_labels(role, label):
    """Roles read as people say them."""
    assert role.label == label


# --- passwords -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stored() -> str:
    """One stored hash of "correct horse", shared because scrypt is deliberately slow."""
    return agents.hash_password("correct horse")


def test_password_round_trip(stored):
    """The right password matches; a wrong one, or a change of case, does not."""
    assert stored.startswith("scrypt$")
    assert agents.check_password(stored, "correct horse")
    assert not agents.check_password(stored, "Correct horse")
    assert not agents.check_password(stored, "")


def test_hashes_are_salted(stored):
    """Hashing the same password twice gives two different strings, both of which match."""
    again = agents.hash_password("correct horse")
    assert again != stored
    assert agents.check_password(again, "correct horse")


def _flip_last(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


def _salt_changed(stored: str) -> str:
    scheme, salt, digest = stored.split("$")
    return f"{scheme}${_flip_last(salt)}${digest}"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda s: None, id="none"),
        pytest.param(lambda s: "", id="empty"),
        pytest.param(lambda s: s.replace("scrypt$", "bcrypt$", 1), id="other-scheme"),
        pytest.param(_flip_last, id="digest-changed"),
        pytest.param(_salt_changed, id="salt-changed"),
    ],
)
def test_a_tampered_or_missing_hash_never_matches(stored, tamper):
    """Anything but the exact stored hash refuses the right password."""
    assert agents.check_password(tamper(stored), "correct horse") is False


@pytest.mark.parametrize("broken", ["scrypt$not-hex$abcd", "scrypt$abcd"])
def test_a_malformed_hash_never_matches(broken):
    """A corrupt stored hash is a failed sign-in, not an error."""
    assert agents.check_password(broken, "correct horse") is False


# --- agent records (database) -------------------------------------------------------------


@pytest.fixture
def ann(session_factory):
    """An active agent, ann@example.com, with the password "correct horse"."""
    with session_scope(session_factory) as session:
        agents.save_agent(
            session, email="Ann@Example.com", name="Ann", role=AGENT, password="correct horse"
        )
    return session_factory


@pytest.mark.parametrize(
    ("email", "password", "signed_in"),
    [
        ("Ann@Example.com", "correct horse", True),
        ("ann@example.com", "correct horse", True),
        ("  ANN@EXAMPLE.COM ", "correct horse", True),
        ("ann@example.com", "wrong horse", False),
        ("ann@example.com", "", False),
        ("bob@example.com", "correct horse", False),
    ],
)
def test_authenticate(ann, email, password, signed_in):
    """Right email (any case) and password sign in; anything else gets None."""
    with session_scope(ann) as session:
        agent = agents.authenticate(session, email, password)
        assert (agent.email if agent else None) == ("Ann@Example.com" if signed_in else None)


def test_a_deactivated_agent_cannot_sign_in(ann):
    """Deactivating an agent locks them out even with the right password."""
    with session_scope(ann) as session:
        agents.find_by_email(session, "ann@example.com").active = False
    with session_scope(ann) as session:
        assert agents.authenticate(session, "ann@example.com", "correct horse") is None


@pytest.mark.parametrize(
    ("email", "password", "words"),
    [
        ("ann.example.com", "correct horse", "not an email"),
        ("", "correct horse", "not an email"),
        ("ann@example.com", "short", "at least 8"),
        ("ann@example.com", "", "at least 8"),
    ],
)
def test_save_agent_refuses_bad_input(session_factory, email, password, words):
    """A non-email or a short password is InvalidInput, and nobody is saved."""
    with pytest.raises(InvalidInput, match=words), session_scope(session_factory) as session:
        agents.save_agent(session, email=email, name="Ann", role=AGENT, password=password)
    with session_scope(session_factory) as session:
        assert agents.find_by_email(session, "ann@example.com") is None


def test_save_agent_updates_an_existing_agent(ann):
    """Saving the same email (any case) again changes role and password, not the record."""
    with session_scope(ann) as session:
        first = agents.find_by_email(session, "ann@example.com")
        again = agents.save_agent(
            session, email="ANN@example.com", name="", role=LEAD, password="new password"
        )
        assert (again.id, again.name, again.role) == (first.id, "Ann", LEAD)
    with session_scope(ann) as session:
        assert agents.authenticate(session, "ann@example.com", "correct horse") is None
        assert agents.authenticate(session, "ann@example.com", "new password") is not None


ZENDESK = {"helpdesk": "zendesk", "account": "acme"}


def test_agent_for_identity(ann):
    """A linked helpdesk user is our agent while active; unknown or deactivated is NotFound."""
    with session_scope(ann) as session:
        agent = agents.find_by_email(session, "ann@example.com")
        agents.link_identity(session, agent, **ZENDESK, external_user_id="42")
    with session_scope(ann) as session:
        found = agents.agent_for_identity(session, **ZENDESK, external_user_id="42")
        assert found.email == "Ann@Example.com"
        with pytest.raises(NotFound, match="zendesk user 7 in acme"):
            agents.agent_for_identity(session, **ZENDESK, external_user_id="7")
        with pytest.raises(NotFound):
            agents.agent_for_identity(
                session, helpdesk="zendesk", account="other", external_user_id="42"
            )
        found.active = False
    with session_scope(ann) as session, pytest.raises(NotFound):
        agents.agent_for_identity(session, **ZENDESK, external_user_id="42")


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
    decision = check_refund(ask(50_001, role=role, charge=BIG, category=category), CONFIG)
    assert decision.verdict is APPROVAL
    assert (decision.approval_role, decision.then) == (first, then)
