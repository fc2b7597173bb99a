"""One exception tree for Billing Desk.

Foreign errors (Stripe, SMTP, IMAP, SQL) are wrapped at the boundary that meets them, with
``raise ... from exc``, so callers only ever catch these. ``http_status`` tells the web layer
how to answer; ``retryable`` tells a job whether trying again can help.
"""

from __future__ import annotations

from typing import ClassVar


class BillingDeskError(Exception):
    """Root of every error Billing Desk raises on purpose."""

    http_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False
    public_message: ClassVar[str] = "Something went wrong. The team has been notified."


class ConfigError(BillingDeskError):
    """A setting is missing or invalid; raised at start-up, naming the setting."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


class InvalidInput(BillingDeskError):
    """A request or message could not be understood."""

    http_status = 400
    public_message = "The request could not be understood."


class NotFound(BillingDeskError):
    """The thing asked for does not exist."""

    http_status = 404
    public_message = "Not found."


class Unauthorized(BillingDeskError):
    """The request carries no valid proof of who sent it (signature, token or session)."""

    http_status = 401
    public_message = "Your session could not be verified or has expired. Reopen the ticket."


class Forbidden(BillingDeskError):
    """The person is known but their role does not allow this."""

    http_status = 403
    public_message = "Your role does not allow this action."


class AlreadyUsed(BillingDeskError):
    """A one-time link or token was used before; it will not work again."""

    http_status = 410
    public_message = "This link was already used. Ask us for a new one."


class TooManyAttempts(BillingDeskError):
    """Too many failed tries from this account or address: refused for a while, whatever is sent."""

    http_status = 429
    public_message = "Too many failed sign-ins. Wait a few minutes and try again."


class PolicyDenied(BillingDeskError):
    """Policy forbids the action; the message is the human-readable reason."""

    http_status = 403
    public_message = "Policy does not allow this action."


class GatewayError(BillingDeskError):
    """Stripe refused a request; trying again with the same input will not help."""

    http_status = 502
    public_message = "Stripe refused the request."


class GatewayUnavailable(GatewayError):
    """Stripe could not be reached or asked us to slow down; try again later."""

    http_status = 503
    retryable = True
    public_message = "Stripe is unavailable right now. Please try again shortly."


class StripeOutcomeUnknown(GatewayUnavailable):
    """Stripe answered a write with a server error: whether it happened is unknown, and Stripe
    answers every retry with the same idempotency key with that same error for 24 hours. The
    next attempt looks for what the write would have made, then sends a fresh key."""


class HelpdeskError(BillingDeskError):
    """The helpdesk refused or failed a request; ``status`` is its HTTP answer, if it gave one."""

    http_status = 502
    public_message = "The helpdesk refused the request."

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class HelpdeskConflict(HelpdeskError):
    """Someone changed the ticket in the helpdesk since we read it (Zendesk's safe_update):
    nothing was written; read it again and decide again."""

    retryable = True


class HelpdeskUnavailable(HelpdeskError):
    """The helpdesk could not be reached or asked us to slow down; try again later
    (``retry_after`` seconds, when it said)."""

    http_status = 503
    retryable = True
    public_message = "The helpdesk is unavailable right now. Please try again shortly."

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class MailDeliveryError(BillingDeskError):
    """An outgoing email could not be handed to the SMTP server."""

    retryable = True


class MailboxError(BillingDeskError):
    """The IMAP server could not be reached or refused a command."""

    retryable = True
