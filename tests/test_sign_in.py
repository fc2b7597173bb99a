"""Signing in to the built-in helpdesk: the same work for every answer, and lockouts."""

from __future__ import annotations

import hashlib

import pytest

from core import agents
from core.db import session_scope
from core.domain import Role

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
