"""Signing in to the built-in helpdesk: the same work for every answer, and lockouts."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from core import agents
from core.db import session_scope
from core.db.models import AuditEvent, SignInAttempt
from core.domain import Role
from core.errors import TooManyAttempts
from core.settings import Settings
from core.sign_in import SignInLimits, sign_in

PASSWORD = "correct horse battery"


@pytest.fixture
def people(session_factory):
    """Ann (active, with a password), Dan (deactivated), Zed (no password: Zendesk only), and
    Rex (a damaged password record)."""
    with session_scope(session_factory) as session:
        for email in ("ann@example.com", "dan@example.com"):
            agents.save_agent(session, email=email, name="A", role=Role.AGENT, password=PASSWORD)
        agents.find_by_email(session, "dan@example.com").active = False
        agents.save_agent(session, email="zed@example.com", name="Zed", role=Role.AGENT)
        rex = agents.save_agent(session, email="rex@example.com", name="Rex", role=Role.AGENT)
        rex.password_hash = "scrypt$not-hex$00"
    return session_factory


@pytest.fixture
def scrypt_calls(monkeypatch):
    """How many times hashlib.scrypt runs (the real one, counted)."""
    calls = []
    real = hashlib.scrypt

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    return calls


@pytest.mark.parametrize(
    ("email", "password", "signed_in"),
    [
        ("ann@example.com", PASSWORD, True),
        ("ann@example.com", "wrong password", False),
        ("nobody@example.com", PASSWORD, False),
        ("dan@example.com", PASSWORD, False),
        ("zed@example.com", PASSWORD, False),
        ("zed@example.com", "", False),
        ("rex@example.com", PASSWORD, False),
    ],
    ids=[
        "right",
        "wrong-password",
        "unknown-email",
        "deactivated",
        "no-password",
        "empty",
        "damaged-hash",
    ],
)
def test_every_sign_in_costs_exactly_one_scrypt(people, scrypt_calls, email, password, signed_in):
    """Unknown, deactivated, passwordless or damaged: one scrypt, like a wrong password."""
    with session_scope(people) as session:
        agent = agents.authenticate(session, email, password)
    assert (agent is not None) is signed_in
    assert len(scrypt_calls) == 1


# --- lockouts ------------------------------------------------------------------------------

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LIMITS = SignInLimits()
HOME, CAFE = "198.51.100.7", "203.0.113.9"


def attempt(factory, email, password, address=HOME, at=T0, limits=LIMITS):
    """One try at the sign-in, committed as the web app commits it; the agent's email or None."""
    with session_scope(factory) as session:
        agent = sign_in(
            session, email=email, password=password, address=address, limits=limits, now=at
        )
        return agent.email if agent else None


def events(factory, name):
    with session_scope(factory) as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.event == name)).all()
        return [row.detail for row in rows]


def test_the_defaults_are_five_per_account_and_twenty_per_address_in_fifteen_minutes():
    assert SignInLimits.from_settings(Settings()) == SignInLimits(
        5, 20, timedelta(minutes=15), timedelta(minutes=15)
    )
    assert SignInLimits.from_settings(Settings.from_env({})) == LIMITS


@pytest.mark.parametrize("then_password", [PASSWORD, "wrong password"], ids=["right", "wrong"])
def test_five_failures_lock_the_account_whatever_the_password(people, then_password):
    """The fifth failure locks; then right and wrong passwords get the same refusal."""
    for minute in range(5):
        assert (
            attempt(people, "ann@example.com", "guess", at=T0 + timedelta(minutes=minute)) is None
        )
    with pytest.raises(TooManyAttempts) as refused:
        attempt(people, "Ann@Example.com ", then_password, at=T0 + timedelta(minutes=5))
    assert refused.value.http_status == 429
    assert refused.value.public_message == TooManyAttempts.public_message
    locked = events(people, "agent.sign_in_locked")
    assert [(e["scope"], e["email"]) for e in locked] == [("account", "ann@example.com")]
    assert locked[0]["until"] == (T0 + timedelta(minutes=4 + 15)).isoformat()


def test_the_lockout_ends_after_its_time(people):
    for second in range(5):
        attempt(people, "ann@example.com", "guess", at=T0 + timedelta(seconds=second))
    last = T0 + timedelta(seconds=4)
    with pytest.raises(TooManyAttempts):
        attempt(people, "ann@example.com", PASSWORD, at=last + timedelta(minutes=14, seconds=59))
    assert attempt(people, "ann@example.com", PASSWORD, at=last + timedelta(minutes=15))


@pytest.mark.parametrize(
    ("failures", "locked"),
    [
        ([0, 1, 2, 3], False),  # four are not enough
        ([0, 1, 2, 3, 4], True),
        ([0, 4, 8, 12, 16], False),  # five, but spread over more than the window
        ([0, 4, 8, 12, 15], True),  # five within exactly fifteen minutes
        ([0, 1, 2, 3, "ok", 5], False),  # the owner signed in: the count starts again
        ([0, 1, 2, "ok", 4, 5, 6, 7, 8], True),
    ],
)
def test_what_counts_towards_an_account_lockout(people, failures, locked):
    for step, minute in enumerate(failures):
        ok = minute == "ok"
        at = T0 + timedelta(minutes=step if ok else minute)
        attempt(people, "ann@example.com", PASSWORD if ok else "guess", at=at)
    now = T0 + timedelta(minutes=16, seconds=30)
    if locked:
        with pytest.raises(TooManyAttempts):
            attempt(people, "ann@example.com", PASSWORD, at=now)
    else:
        assert attempt(people, "ann@example.com", PASSWORD, at=now) == "ann@example.com"


def test_an_account_lockout_holds_from_every_address(people):
    for n, address in enumerate(["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", CAFE]):
        attempt(people, "ann@example.com", "guess", address=address, at=T0 + timedelta(seconds=n))
    with pytest.raises(TooManyAttempts):
        attempt(people, "ann@example.com", PASSWORD, address=HOME, at=T0 + timedelta(minutes=1))


def test_twenty_failures_from_one_address_refuse_that_address(people):
    """Guessing across many emails locks the address, not those accounts elsewhere."""
    for n in range(20):
        attempt(
            people, f"guess{n}@example.com", "guess", address=CAFE, at=T0 + timedelta(seconds=n)
        )
    now = T0 + timedelta(minutes=1)
    with pytest.raises(TooManyAttempts):
        attempt(people, "ann@example.com", PASSWORD, address=CAFE, at=now)
    assert attempt(people, "ann@example.com", PASSWORD, address=HOME, at=now)
    # Signing in elsewhere does not lift the address's lockout.
    with pytest.raises(TooManyAttempts):
        attempt(people, "ann@example.com", PASSWORD, address=CAFE, at=now)
    locked = events(people, "agent.sign_in_locked")
    assert [(e["scope"], e["address"]) for e in locked] == [("address", CAFE)]


@pytest.mark.parametrize(
    ("typed", "audited"),
    [
        ("Ann@Example.com", "Ann@Example.com"),
        ("  nobody@example.com ", "nobody@example.com"),
        ("x" * 5000 + "@example.com", "x" * 320),
        ("", ""),
    ],
)
def test_every_failure_is_audited_without_the_password(people, typed, audited):
    attempt(people, typed, "s3cret-guess-Hunter2", address=CAFE)
    (failed,) = events(people, "agent.sign_in_failed")
    assert failed == {"email": audited, "address": CAFE}
    with session_scope(people) as session:
        details = str([e.detail for e in session.scalars(select(AuditEvent))])
        (row,) = session.scalars(select(SignInAttempt)).all()
    assert "s3cret-guess-Hunter2" not in details
    assert (row.email, row.client_address, row.succeeded) == (audited.lower(), CAFE, False)
