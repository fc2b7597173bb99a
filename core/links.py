"""Signed links we email to customers: they carry no secret and expire.

The update-payment-method link points at our own endpoint, which opens a Stripe billing
portal session only when clicked: portal sessions are short-lived, so a session URL pasted into
an email would be dead by the time many customers read it.
"""

from __future__ import annotations

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from core.errors import InvalidInput, Unauthorized

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
