"""Judgements of the actions other than refunds (core.policy.actions), who may approve
(core.policy.approvals), and the agent records behind the roles they check.

The refund judgement has its own tables: tests/test_core_refund_judgement.py."""

from __future__ import annotations

from dataclasses import replace
from itertools import product

import pytest

from core import agents
from core.db import session_scope
from core.domain import ActionKind, Role
from core.errors import InvalidInput, NotFound
from core.policy import (
    ActionQuestion,
    Approval,
    Asker,
    PolicyConfig,
    Verdict,
    judge_action,
    may_decide,
    satisfies,
)

CONFIG = PolicyConfig()
ALLOW, APPROVAL, DENY = Verdict.ALLOW, Verdict.NEEDS_APPROVAL, Verdict.DENY
AGENT, LEAD, FINANCE, ADMIN = Role.AGENT, Role.SUPPORT_LEAD, Role.FINANCE, Role.ADMIN
MANAGER, SECURITY = Role.ACCOUNT_MANAGER, Role.SECURITY


def action(kind: ActionKind, role: Role | None = AGENT, **changes) -> ActionQuestion:
    """A verified agent asking for ``kind`` on a customer with an email address."""
    base = ActionQuestion(
        kind=kind,
        asker=Asker.PREVIEW,
        requester_role=role,
        identity_confirmed=True,
        customer_email="ann@example.com",
    )
    return replace(base, **changes)


@pytest.mark.parametrize(
    ("kind", "needs_identity"),
    [
        (ActionKind.COMP_COUPON, True),
        (ActionKind.EXTEND_TRIAL, True),
        (ActionKind.CANCEL_SUBSCRIPTION, True),
        (ActionKind.SEND_UPDATE_CARD_LINK, True),
        (ActionKind.ESCALATE, False),
        (ActionKind.NOTE, False),
        (ActionKind.FLAG_FRAUD, False),
    ],
)
@pytest.mark.parametrize("role", [AGENT, ADMIN])
def test_account_actions_wait_for_identity(kind, needs_identity, role):
    """Actions on the customer's account wait for identity, and a conflict refuses them;
    escalating, notes and flags do not."""
    assert judge_action(action(kind, role), CONFIG).verdict is ALLOW
    unverified = judge_action(action(kind, role, identity_confirmed=False), CONFIG)
    assert unverified.verdict is (DENY if needs_identity else ALLOW)
    if needs_identity:
        assert "confirm their identity" in unverified.reason
    conflict = judge_action(action(kind, role, identity_conflict="Tenant ID: T-1 vs T-2"), CONFIG)
    assert conflict.verdict is (DENY if needs_identity else ALLOW)


def test_a_billing_link_goes_only_to_the_customers_own_address():
    """With no email in Stripe, nothing is sent: never to an address only the ticket gives."""
    decision = judge_action(action(ActionKind.SEND_UPDATE_CARD_LINK, customer_email=None), CONFIG)
    assert decision.verdict is DENY and "own address" in decision.reason


COMP, TRIAL = ActionKind.COMP_COUPON, ActionKind.EXTEND_TRIAL


@pytest.mark.parametrize(
    ("question", "verdict", "words"),
    [
        (action(COMP), ALLOW, "Within"),
        (action(COMP, months=1), ALLOW, "Within"),
        (action(COMP, months=12), APPROVAL, "12 months"),
        (action(TRIAL, days=30), ALLOW, "Within"),
        (action(TRIAL, days=365), APPROVAL, "365 free days"),
        # However small, the second grant in the window needs a lead: three +30s are not
        # one +90.
        (action(TRIAL, days=30, grants_in_window=1), APPROVAL, "already had 1"),
        (action(COMP, grants_in_window=2), APPROVAL, "already had 2"),
        # A Support Lead (or Finance, or an admin) gives more alone...
        (action(COMP, LEAD, months=12), ALLOW, "Your role (Support Lead)"),
        (action(TRIAL, ADMIN, days=365, grants_in_window=3), ALLOW, "Your role (Admin)"),
        # ...an account manager or Security does not.
        (action(TRIAL, MANAGER, days=365), APPROVAL, "Support Lead approves"),
        # The worker counts the lead's approval given since.
        (
            action(
                TRIAL,
                days=365,
                asker=Asker.WORKER,
                approvals=(Approval("lee@x.test", LEAD, LEAD),),
            ),
            ALLOW,
            "Approved by lee@x.test",
        ),
    ],
)
def test_comps_and_free_time_have_limits(question, verdict, words):
    """Size and count per customer per window, above which a Support Lead approves."""
    decision = judge_action(question, CONFIG)
    assert decision.verdict is verdict
    assert words in decision.reason
    if verdict is APPROVAL:
        assert decision.approval_role is LEAD


def test_free_time_limits_are_policy():
    """A team that comps generously raises the limits in policy.toml."""
    generous = replace(CONFIG, comp_max_months=12, free_time_grants_per_customer=5)
    assert judge_action(action(COMP, months=12, grants_in_window=4), generous).verdict is ALLOW


@pytest.mark.parametrize(
    ("approver", "role", "required", "given", "allowed", "words"),
    [
        ("lee@x.test", LEAD, LEAD, (), True, ""),
        ("ann@x.test", AGENT, LEAD, (), False, "cannot approve"),
        # Nobody approves their own request, nor twice.
        ("req@x.test", LEAD, LEAD, (), False, "own request"),
        ("Lee@X.test", LEAD, LEAD, (Approval("lee@x.test", LEAD, MANAGER),), False, "different"),
        ("avery@x.test", MANAGER, LEAD, (), False, "cannot approve"),
    ],
)
def test_may_decide(approver, role, required, given, allowed, words):
    """The right role, a second pair of eyes, a different person each time."""
    decision = may_decide(
        approver=approver,
        approver_role=role,
        required=required,
        requested_by="req@x.test",
        given=given,
    )
    assert decision.allowed is allowed
    assert words in decision.reason


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
    assert satisfies(role, required) is (role in APPROVERS[required])


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
