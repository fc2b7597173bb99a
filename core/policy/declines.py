"""What a failed card payment means, and what an agent may tell the customer. Pure.

Built from Stripe's decline-code table (platforms-and-stripe.md §4.9). Some codes say the card
was reported lost or stolen, or that fraud is suspected; Stripe asks merchants to present those
as a generic decline, so their ``customer_advice`` says only that the bank declined the payment.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from core.policy.config import PolicyConfig


class DeclineBucket(StrEnum):
    """What has to happen for the payment to succeed."""

    RETRY_LATER = "retry_later"  # likely temporary: a later attempt may go through
    UPDATE_CARD = "update_card"  # the customer fixes or replaces the card details
    CONTACT_BANK = "contact_bank"  # only the issuer knows why: the customer calls them
    DO_NOT_RETRY = "do_not_retry"  # hard decline: this card will not be approved again


@dataclass(frozen=True)
class DeclineGuidance:
    """A decline explained for the agent, with words that are safe to repeat to the customer."""

    code: str  # the code as agents see it in Stripe
    meaning: str  # for the agent only
    customer_advice: str  # safe to say to the customer as is
    bucket: DeclineBucket
    stripe_retries: bool  # Stripe's automatic retries will try this card again
    sensitive: bool = False  # lost, stolen, fraud: never reveal the reason to the customer


_SENSITIVE_HINT = (
    " Do not tell the customer: say only that their bank declined the payment. "
    "Consider flagging the account to Security."
)

_BANK_DECLINED = "Your bank declined the payment. Please contact your bank or use another card."
_UPDATE_CARD = (
    "The card details on file could not be used. Please update your card with the secure "
    "link we sent you, and we will take the payment again."
)
_OTHER_CARD = (
    "Your card can't be used for this payment. Please add another card with the secure link "
    "we sent you."
)
_TEMPORARY = (
    "Your bank could not process the payment just now. We will try again automatically; "
    "if it keeps failing, please contact your bank or use another card."
)
_TEMPORARY_BANK = (
    "Your bank declined the payment for now. We will try again automatically over the next "
    "few days; if it keeps failing, please contact your bank or use another card."
)

_GUIDANCE: dict[str, DeclineGuidance] = {}


def _add(
    codes: tuple[str, ...],
    meaning: str,
    customer_advice: str,
    bucket: DeclineBucket,
    *,
    stripe_retries: bool = True,
    sensitive: bool = False,
) -> None:
    if sensitive:
        meaning += _SENSITIVE_HINT
        customer_advice = _BANK_DECLINED
        stripe_retries = False
    for code in codes:
        _GUIDANCE[code] = DeclineGuidance(
            code, meaning, customer_advice, bucket, stripe_retries, sensitive
        )


# Stripe's Smart Retries skip hard declines; those entries say stripe_retries=False.
_add(
    ("insufficient_funds",),
    "User needs to top up (insufficient funds), or use another card. Stripe retries it; "
    "send the update-card link as well.",
    "The card did not have enough available funds for this payment. Please top up the account "
    "or add another card with the secure link we sent you; we will also try again "
    "automatically.",
    DeclineBucket.RETRY_LATER,
)
_add(
    ("do_not_honor",),
    "Bank blocked it (user must call bank), or use another card. The bank gave no reason.",
    _BANK_DECLINED,
    DeclineBucket.CONTACT_BANK,
)
_add(
    ("generic_decline", "card_declined"),
    "Declined for an unknown reason, or blocked by Stripe Radar: the customer should call "
    "their bank or use another card.",
    _BANK_DECLINED,
    DeclineBucket.CONTACT_BANK,
)
_add(
    ("expired_card",),
    "User needs to update card: it has expired, and the same card fails until they do.",
    "The card on file has expired. Please add your new card with the secure link we sent you.",
    DeclineBucket.UPDATE_CARD,
)
_add(
    ("incorrect_cvc", "invalid_cvc"),
    "The CVC (security code) is wrong: send the update-card link.",
    _UPDATE_CARD,
    DeclineBucket.UPDATE_CARD,
)
_add(
    ("incorrect_number", "invalid_number"),
    "The card number is wrong: send the update-card link. Stripe does not retry it.",
    _UPDATE_CARD,
    DeclineBucket.UPDATE_CARD,
    stripe_retries=False,
)
_add(
    ("invalid_expiry_month", "invalid_expiry_year"),
    "The expiry date is wrong: send the update-card link.",
    _UPDATE_CARD,
    DeclineBucket.UPDATE_CARD,
)
_add(
    ("incorrect_zip", "incorrect_address"),
    "The billing postcode or address does not match the bank's (AVS check): send the "
    "update-card link.",
    "The billing address did not match the one your bank has. Please check it with the "
    "secure link we sent you, and we will take the payment again.",
    DeclineBucket.UPDATE_CARD,
)
_add(
    ("card_velocity_exceeded",),
    "Over the card's balance, credit or amount limit: retry later, or the customer uses "
    "another card or asks their bank to raise the limit.",
    "The payment went over a limit on your card. We will try again later; you can also add "
    "another card with the secure link we sent you, or ask your bank to raise the limit.",
    DeclineBucket.RETRY_LATER,
)
_add(
    ("withdrawal_count_limit_exceeded",),
    "Over the card's limit on number of payments: the customer should use another card.",
    "The payment went over a limit on your card. Please add another card with the secure link "
    "we sent you.",
    DeclineBucket.UPDATE_CARD,
)
_add(
    ("authentication_required", "authentication_not_handled"),
    "The bank wants the customer to authenticate (3D Secure / SCA), which cannot happen "
    "off-session: send the portal or hosted invoice link so they pay on-session.",
    "Your bank needs you to confirm this payment. Please open the secure link we sent you and "
    "approve it there.",
    DeclineBucket.UPDATE_CARD,
    stripe_retries=False,
)
_add(
    ("processing_error",),
    "An error processing the card at Stripe or the bank: retry; it usually clears.",
    _TEMPORARY,
    DeclineBucket.RETRY_LATER,
)
_add(
    # try_again_later is deprecated as a decline code; Stripe now sends it as an advice code.
    ("issuer_not_available", "approve_with_id", "reenter_transaction", "try_again_later"),
    "The bank could not authorise the payment just now: retry; if it keeps failing, the "
    "customer contacts their bank.",
    _TEMPORARY,
    DeclineBucket.RETRY_LATER,
)
_add(
    ("lost_card",),
    "The card was reported lost. Never retry it.",
    _BANK_DECLINED,
    DeclineBucket.DO_NOT_RETRY,
    sensitive=True,
)
_add(
    ("stolen_card",),
    "The card was reported stolen. Never retry it.",
    _BANK_DECLINED,
    DeclineBucket.DO_NOT_RETRY,
    sensitive=True,
)
_add(
    ("fraudulent",),
    "Declined as suspected fraud (by the bank or Stripe Radar). Never retry it.",
    _BANK_DECLINED,
    DeclineBucket.DO_NOT_RETRY,
    sensitive=True,
)
_add(
    ("merchant_blacklist",),
    "The card is on our Stripe block list. Never retry it.",
    _BANK_DECLINED,
    DeclineBucket.DO_NOT_RETRY,
    sensitive=True,
)
_add(
    ("pickup_card", "restricted_card"),
    "The bank says this card cannot be used (it may have been reported lost or stolen). "
    "Never retry it.",
    _BANK_DECLINED,
    DeclineBucket.DO_NOT_RETRY,
    sensitive=True,
)
_add(
    ("card_not_supported",),
    "The card does not support this kind of purchase: the customer uses another card.",
    _OTHER_CARD,
    DeclineBucket.UPDATE_CARD,
    stripe_retries=False,
)
_add(
    ("currency_not_supported",),
    "The card does not support the charge's currency: the customer uses another card.",
    _OTHER_CARD,
    DeclineBucket.UPDATE_CARD,
)
_add(
    ("duplicate_transaction",),
    "An identical payment was made just before: look for it (and for a duplicate charge) "
    "before asking the customer to pay again.",
    "Your bank treated this as a repeat of a payment made just before. We are checking whether "
    "that payment went through, so please don't pay again for now.",
    DeclineBucket.RETRY_LATER,
)
_add(
    ("invalid_account",),
    "The card or its account is invalid (for example, closed): send the update-card link.",
    _OTHER_CARD,
    DeclineBucket.UPDATE_CARD,
    stripe_retries=False,
)
_add(
    ("new_account_information_available",),
    "The bank has newer details for this card: send the update-card link.",
    _UPDATE_CARD,
    DeclineBucket.UPDATE_CARD,
)
_add(
    (
        "transaction_not_allowed",
        "not_permitted",
        "security_violation",
        "service_not_allowed",
        "no_action_taken",
        "call_issuer",
    ),
    "The bank declined without a clear reason or does not allow this payment: send the "
    "update-card link; the customer may need to call their bank.",
    _BANK_DECLINED,
    DeclineBucket.UPDATE_CARD,
)
_add(
    ("stop_payment_order", "revocation_of_authorization", "revocation_of_all_authorizations"),
    "The cardholder asked their bank to stop payments to us. Charging this card again invites "
    "a chargeback: ask for a new payment method.",
    "Your bank stopped this payment. If you want to keep your subscription, please add a "
    "payment method with the secure link we sent you.",
    DeclineBucket.UPDATE_CARD,
    stripe_retries=False,
)
# Deprecated as a decline code, like try_again_later.
_add(
    ("do_not_try_again",),
    "The bank says never to try this card again: the customer uses another card or calls "
    "their bank.",
    _BANK_DECLINED,
    DeclineBucket.DO_NOT_RETRY,
    stripe_retries=False,
)

_ADVICE_MEANINGS = {
    "confirm_card_data": " Advice code confirm_card_data: the bank wants updated card details.",
    "do_not_try_again": " Advice code do_not_try_again: the bank will not approve this card.",
    "try_again_later": " Advice code try_again_later: the bank expects a later attempt to work.",
}


def _normalise(code: str | None) -> str | None:
    return code.strip().lower() or None if code else None


def _unknown(code: str | None) -> DeclineGuidance:
    shown = code or "unknown"
    meaning = (
        f"Stripe gave the code {shown}, which has no guidance here"
        if code
        else "Stripe gave no decline code"
    )
    return DeclineGuidance(
        code=shown,
        meaning=f"{meaning}: treat it as a generic decline (call the bank or use another card).",
        customer_advice=_BANK_DECLINED,
        bucket=DeclineBucket.CONTACT_BANK,
        stripe_retries=True,
    )


def _refine(guidance: DeclineGuidance, advice_code: str) -> DeclineGuidance:
    # An advice code can tighten the guidance, and loosen it only when nothing was alarming.
    meaning = guidance.meaning + _ADVICE_MEANINGS[advice_code]
    bucket, advice, retries = guidance.bucket, guidance.customer_advice, guidance.stripe_retries
    if advice_code == "do_not_try_again":
        retries = False
        if bucket in (DeclineBucket.RETRY_LATER, DeclineBucket.CONTACT_BANK):
            bucket, advice = DeclineBucket.DO_NOT_RETRY, _BANK_DECLINED
    elif advice_code == "confirm_card_data":
        if bucket is not DeclineBucket.DO_NOT_RETRY:
            bucket, advice = DeclineBucket.UPDATE_CARD, _UPDATE_CARD
    elif bucket is DeclineBucket.CONTACT_BANK:  # try_again_later
        bucket, advice, retries = DeclineBucket.RETRY_LATER, _TEMPORARY_BANK, True
    return replace(
        guidance, meaning=meaning, bucket=bucket, customer_advice=advice, stripe_retries=retries
    )


def guidance_for(
    decline_code: str | None,
    failure_code: str | None = None,
    advice_code: str | None = None,
) -> DeclineGuidance:
    """Explain a failed payment from a charge's ``decline_code``, ``failure_code`` and advice.

    The more specific ``decline_code`` wins over ``failure_code``; codes Billing Desk does not
    know get a generic decline's guidance rather than an error.
    """
    decline, failure, advice = map(_normalise, (decline_code, failure_code, advice_code))
    known = next((code for code in (decline, failure) if code in _GUIDANCE), None)
    guidance = _GUIDANCE[known] if known else _unknown(decline or failure)
    if advice in _ADVICE_MEANINGS:
        guidance = _refine(guidance, advice)
    return guidance


def retry_schedule(config: PolicyConfig) -> str:
    """One sentence for agents on what Stripe's automatic retries will still do."""
    attempts, days = config.smart_retry_attempts, config.smart_retry_days
    if attempts == 0:
        return "Stripe does not retry failed payments automatically: the customer must act."
    tries = "1 more attempt" if attempts == 1 else f"{attempts} more attempts"
    if days % 7 == 0:
        weeks = days // 7
        span = "1 week" if weeks == 1 else f"{weeks} weeks"
    else:
        span = "1 day" if days == 1 else f"{days} days"
    return f"Stripe retries automatically: {tries} over {span} (not for hard declines)."
