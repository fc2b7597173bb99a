"""Email the customer a link that opens Stripe's payment-method update when they click it."""

from __future__ import annotations

from collections.abc import Mapping

from core.actions.account import AccountAction
from core.actions.base import Ask, Effects, Outcome, Proposal, Requested, idempotency_key, params_of
from core.db.models import Action
from core.domain import ActionKind
from core.errors import InvalidInput
from core.links import update_card_token

TEMPLATE = "update_payment_method"


class SendUpdateCardLink(AccountAction):
    """A secure link to the billing portal's payment-method update, to the customer's address."""

    kind = ActionKind.SEND_UPDATE_CARD_LINK

    def propose(self, ask: Ask, form: Mapping[str, str]) -> Proposal:
        """The link goes to the Stripe customer's own email, never one only the ticket gives."""
        context = ask.context
        if context.identity is None:
            raise InvalidInput("Choose the customer first.")
        customer, email = context.identity.customer, context.identity.email
        requested = Requested(
            self.kind,
            idempotency_key(self.kind, context.ticket.id, customer.id, email, ask.now.date()),
            params={"email": email},
        )
        return Proposal(
            requested,
            "Email a secure link to update the payment method",
            f"{email or 'no email on file'} ({customer.id})",
            self.judge(ask, requested),
            details=(
                "The link opens a Stripe billing portal session when the customer clicks it.",
            ),
        )

    def describe(self, action: Action) -> str:
        """``Email an update-payment-method link to …``."""
        return f"Email an update-payment-method link to {params_of(action).get('email')}"

    def execute(self, action: Action, fx: Effects) -> Outcome:
        """Send the link once; the token names the customer and this action, and expires."""
        question = self.allowed_now(action, fx)
        fx.settings.require_secret_key()
        assert fx.settings.secret_key is not None and action.stripe_customer_id is not None
        token = update_card_token(fx.settings.secret_key, action.stripe_customer_id, action.id)
        # The address Stripe has now: the one the request saw may have changed since.
        to = question.customer_email or ""
        params = params_of(action)
        # A playbook may send the link inside its own email (payment guidance, self-service).
        sent = fx.send_customer_email(
            action,
            template=str(params.get("template") or TEMPLATE),
            subject=str(params.get("subject") or "Update your payment method"),
            context={
                **dict(params.get("context") or {}),
                "link": f"{fx.settings.public_url}/billing/update-card/{token}",
                "valid_hours": fx.settings.update_card_link_ttl_hours,
            },
            to=to,
        )
        return Outcome(None, f"Secure billing link {sent} to {to}.")
