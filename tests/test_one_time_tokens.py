"""One-time tokens: the database's unique key keeps "once" true across web processes."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core import one_time_tokens
from core.db import session_scope
from core.db.models import SpentToken

KIND = one_time_tokens.ZENDESK_BOOTSTRAP


def test_a_token_is_spent_once(session_factory):
    with session_scope(session_factory) as session:
        assert one_time_tokens.spend(session, kind=KIND, token_id="t1", bound_to="ticket 1")
    with session_scope(session_factory) as session:
        assert not one_time_tokens.spend(session, kind=KIND, token_id="t1", bound_to="ticket 2")
        assert one_time_tokens.spend(session, kind=KIND, token_id="t2")
        assert one_time_tokens.spend(session, kind=one_time_tokens.UPDATE_CARD_LINK, token_id="t1")


def test_two_processes_racing_on_one_token_spend_it_once(session_factory, monkeypatch):
    """Both checked before either wrote: the unique key refuses the second insert."""
    with session_scope(session_factory) as first:
        assert one_time_tokens.spend(first, kind=KIND, token_id="raced", bound_to="first")
    # The second process looked before the first committed, so it saw nothing spent.
    monkeypatch.setattr(one_time_tokens, "is_spent", lambda *_: False)
    with session_scope(session_factory) as second:
        assert not one_time_tokens.spend(second, kind=KIND, token_id="raced", bound_to="second")
    with session_scope(session_factory) as session:
        rows = session.scalars(select(SpentToken).where(SpentToken.token_id == "raced")).all()
        assert [row.bound_to for row in rows] == ["first"]


@pytest.mark.parametrize("token_id", ["", None])
def test_a_token_without_an_id_is_never_accepted(session_factory, token_id):
    with session_scope(session_factory) as session:
        assert not one_time_tokens.spend(session, kind=KIND, token_id=token_id)
        assert session.scalar(select(func.count()).select_from(SpentToken)) == 0
