"""Tokens that work once: a Zendesk bootstrap, an emailed update-card link.

A signed token proves we minted it, not that nobody used it before. Its first use is recorded
in ``spent_tokens``, whose unique key on (kind, token id) is what keeps "once" true across
several web processes, simultaneous uses included: the second insert cannot succeed.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.models import SpentToken

ZENDESK_BOOTSTRAP = "zendesk_bootstrap"
UPDATE_CARD_LINK = "update_card_link"


def is_spent(session: Session, kind: str, token_id: str) -> bool:
    """True when this token has been used already."""
    found = session.scalar(
        select(SpentToken.id).where(SpentToken.kind == kind, SpentToken.token_id == token_id)
    )
    return found is not None


def spend(session: Session, *, kind: str, token_id: str, bound_to: str | None = None) -> bool:
    """Record the token's first use (True); False when it was used before, even a moment ago.

    Call it before the request's other writes: losing the race rolls the session back.
    """
    if not token_id or is_spent(session, kind, token_id):
        return False
    session.add(SpentToken(kind=kind, token_id=token_id, bound_to=bound_to))
    try:
        session.flush()
    except IntegrityError:
        # Another process recorded the same token between our check and our insert.
        session.rollback()
        return False
    return True
