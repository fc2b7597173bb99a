"""Signed links we email to customers: they carry no secret, expire, and work once.

The update-payment-method link points at our own endpoint, which opens a Stripe billing
portal session only when clicked: portal sessions are short-lived, so a session URL pasted into
an email would be dead by the time many customers read it. After its first successful use the
link is spent: a forwarded email or a leaked URL cannot reopen the customer's portal.
"""

from __future__ import annotations

from typing import Protocol

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from core import audit, one_time_tokens
from core.errors import AlreadyUsed, InvalidInput, Unauthorized


class PortalOpener(Protocol):
    """What opening a link needs from the Stripe gateway."""

    def create_portal_session(self, customer_id: str, *, return_url: str) -> str:
        """A short-lived billing-portal URL for the customer."""
        ...


_SALT = "billing-desk.update-card"


def update_card_token(secret_key: str, customer_id: str, action_id: int) -> str:
    """A token naming the customer whose payment method the link lets them update."""
    return URLSafeTimedSerializer(secret_key, salt=_SALT).dumps({"c": customer_id, "a": action_id})


def read_update_card_token(secret_key: str, token: str, max_age_seconds: int) -> tuple[str, int]:
    """The customer and action of a link; InvalidInput when expired, Unauthorized when forged."""
    serializer = URLSafeTimedSerializer(secret_key, salt=_SALT)
    try:
        data = serializer.loads(token, max_age=max_age_seconds)
    except SignatureExpired as exc:
        raise InvalidInput("this link has expired") from exc
    except BadSignature as exc:
        raise Unauthorized("this link is not one of ours") from exc
    return str(data["c"]), int(data["a"])


def open_update_card_link(
    session: Session,
    gateway: PortalOpener,
    *,
    secret_key: str,
    token: str,
    max_age_seconds: int,
    return_url: str,
) -> str:
    """A fresh portal URL for the link's customer, on its first successful use; audited.

    InvalidInput when expired, Unauthorized when forged, AlreadyUsed (with the attempt in
    the audit trail) once the link has opened a portal before. The caller commits.
    """
    customer_id, action_id = read_update_card_token(secret_key, token, max_age_seconds)
    kind, key = one_time_tokens.UPDATE_CARD_LINK, str(action_id)
    if not one_time_tokens.is_spent(session, kind, key):
        # Spent only after Stripe answers: a portal that failed to open leaves the link usable.
        url = gateway.create_portal_session(customer_id, return_url=return_url)
        if one_time_tokens.spend(session, kind=kind, token_id=key, bound_to=customer_id):
            audit.record(
                session,
                actor="customer",
                event="update_card_link.opened",
                action_id=action_id,
                stripe_customer_id=customer_id,
            )
            return url
    audit.record(
        session,
        actor="customer",
        event="update_card_link.reused",
        action_id=action_id,
        stripe_customer_id=customer_id,
    )
    raise AlreadyUsed(f"update-card link of action {action_id} was already used")
