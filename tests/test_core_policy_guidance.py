"""Pure policy guidance: decline codes, prorated refunds, the escalation matrix and its SLAs."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from core.domain import Category, Dispute, EscalationTarget, Money
from core.errors import ConfigError
from core.policy import (
    DeclineBucket,
    PolicyConfig,
    dispute_advice,
    escalation_route,
    guidance_for,
    load_policy,
    prorated_refund,
    retry_schedule,
    sla_due,
    sla_text,
)
from core.policy.config import policy_from_mapping

SENSITIVE = [
    "lost_card",
    "stolen_card",
    "fraudulent",
    "merchant_blacklist",
    "pickup_card",
    "restricted_card",
]
# Every code in platforms-and-stripe.md §4.9, plus the failure codes Stripe puts on charges.
TABLE_CODES = [
    *SENSITIVE,
    "insufficient_funds",
    "do_not_honor",
    "generic_decline",
    "expired_card",
    "incorrect_cvc",
    "invalid_cvc",
    "incorrect_number",
    "invalid_number",
    "incorrect_zip",
    "incorrect_address",
    "card_velocity_exceeded",
    "withdrawal_count_limit_exceeded",
    "authentication_required",
    "authentication_not_handled",
    "processing_error",
    "issuer_not_available",
    "approve_with_id",
    "reenter_transaction",
    "card_not_supported",
    "currency_not_supported",
    "duplicate_transaction",
    "invalid_account",
    "new_account_information_available",
    "transaction_not_allowed",
    "not_permitted",
    "security_violation",
    "service_not_allowed",
    "stop_payment_order",
    "revocation_of_authorization",
    "revocation_of_all_authorizations",
    "no_action_taken",
    "call_issuer",
    "try_again_later",
    "do_not_try_again",
    "card_declined",
]
REVEALING = re.compile(r"stolen|lost|fraud|blacklist|block ?list|pick ?up", re.IGNORECASE)


@pytest.mark.parametrize("code", TABLE_CODES)
def test_every_table_code_has_its_own_guidance(code):
    guidance = guidance_for(code)
    assert guidance.code == code
    assert "no guidance" not in guidance.meaning
    assert guidance.meaning and guidance.customer_advice


@pytest.mark.parametrize("advice_code", [None, "try_again_later", "confirm_card_data"])
@pytest.mark.parametrize("code", SENSITIVE)
def test_sensitive_codes_never_reach_the_customer(code, advice_code):
    guidance = guidance_for(code, "card_declined", advice_code)
    assert guidance.sensitive
    assert not REVEALING.search(guidance.customer_advice)
    assert "bank declined" in guidance.customer_advice
    assert guidance.stripe_retries is False
    assert guidance.bucket is DeclineBucket.DO_NOT_RETRY
    assert "Do not tell the customer" in guidance.meaning
    assert "Security" in guidance.meaning


@pytest.mark.parametrize("code", sorted(set(TABLE_CODES) - set(SENSITIVE)))
def test_other_codes_are_not_sensitive(code):
    assert not guidance_for(code).sensitive


@pytest.mark.parametrize(
    ("decline_code", "failure_code", "bucket", "stripe_retries", "words"),
    [
        (
            "insufficient_funds",
            "card_declined",
            DeclineBucket.RETRY_LATER,
            True,
            "User needs to top up",
        ),
        (
            "do_not_honor",
            "card_declined",
            DeclineBucket.CONTACT_BANK,
            True,
            "Bank blocked it (user must call bank)",
        ),
        (None, "expired_card", DeclineBucket.UPDATE_CARD, True, "User needs to update card"),
        ("generic_decline", None, DeclineBucket.CONTACT_BANK, True, "Radar"),
        (None, "incorrect_cvc", DeclineBucket.UPDATE_CARD, True, "CVC"),
        ("invalid_number", None, DeclineBucket.UPDATE_CARD, False, "number"),
        ("authentication_required", None, DeclineBucket.UPDATE_CARD, False, "3D Secure"),
        ("processing_error", None, DeclineBucket.RETRY_LATER, True, "retry"),
        ("card_velocity_exceeded", None, DeclineBucket.RETRY_LATER, True, "limit"),
        ("stop_payment_order", None, DeclineBucket.UPDATE_CARD, False, "chargeback"),
        ("do_not_try_again", None, DeclineBucket.DO_NOT_RETRY, False, "never"),
        ("duplicate_transaction", None, DeclineBucket.RETRY_LATER, True, "duplicate charge"),
        # The decline code is more specific than the failure code, whatever its case.
        (" Insufficient_Funds ", "card_declined", DeclineBucket.RETRY_LATER, True, "top up"),
        # An unknown decline code falls back to a known failure code.
        ("brand_new_code", "expired_card", DeclineBucket.UPDATE_CARD, True, "has expired"),
    ],
)
def test_buckets_for_representative_codes(
    decline_code, failure_code, bucket, stripe_retries, words
):
    guidance = guidance_for(decline_code, failure_code)
    assert (guidance.bucket, guidance.stripe_retries) == (bucket, stripe_retries)
    assert words in guidance.meaning


@pytest.mark.parametrize(
    ("decline_code", "failure_code", "shown"),
    [
        (None, None, "unknown"),
        ("", "", "unknown"),
        ("brand_new_code", None, "brand_new_code"),
        (None, "some_failure", "some_failure"),
    ],
)
def test_unknown_codes_get_a_generic_decline(decline_code, failure_code, shown):
    guidance = guidance_for(decline_code, failure_code)
    assert guidance.code == shown
    assert guidance.bucket is DeclineBucket.CONTACT_BANK
    assert not guidance.sensitive
    assert "bank declined" in guidance.customer_advice


@pytest.mark.parametrize(
    ("decline_code", "advice_code", "bucket", "stripe_retries"),
    [
        ("generic_decline", "do_not_try_again", DeclineBucket.DO_NOT_RETRY, False),
        ("insufficient_funds", "do_not_try_again", DeclineBucket.DO_NOT_RETRY, False),
        ("expired_card", "do_not_try_again", DeclineBucket.UPDATE_CARD, False),
        ("do_not_honor", "try_again_later", DeclineBucket.RETRY_LATER, True),
        ("incorrect_cvc", "try_again_later", DeclineBucket.UPDATE_CARD, True),
        ("invalid_number", "try_again_later", DeclineBucket.UPDATE_CARD, False),
        ("generic_decline", "confirm_card_data", DeclineBucket.UPDATE_CARD, True),
        ("insufficient_funds", "CONFIRM_CARD_DATA", DeclineBucket.UPDATE_CARD, True),
        ("stolen_card", "confirm_card_data", DeclineBucket.DO_NOT_RETRY, False),
        ("generic_decline", "not_an_advice_code", DeclineBucket.CONTACT_BANK, True),
    ],
)
def test_advice_codes_refine_the_bucket(decline_code, advice_code, bucket, stripe_retries):
    guidance = guidance_for(decline_code, "card_declined", advice_code)
    assert (guidance.bucket, guidance.stripe_retries) == (bucket, stripe_retries)
    if advice_code in ("do_not_try_again", "try_again_later", "confirm_card_data"):
        assert f"Advice code {advice_code}" in guidance.meaning


def test_a_bank_saying_stop_changes_what_the_customer_hears():
    assert "try again" in guidance_for("insufficient_funds").customer_advice
    refined = guidance_for("insufficient_funds", advice_code="do_not_try_again")
    assert "try again" not in refined.customer_advice


@pytest.mark.parametrize(
    ("attempts", "days", "sentence"),
    [
        (
            3,
            14,
            "Stripe retries automatically: 3 more attempts over 2 weeks (not for hard declines).",
        ),
        (1, 7, "Stripe retries automatically: 1 more attempt over 1 week (not for hard declines)."),
        (
            8,
            10,
            "Stripe retries automatically: 8 more attempts over 10 days (not for hard declines).",
        ),
        (0, 14, "Stripe does not retry failed payments automatically: the customer must act."),
    ],
)
def test_retry_schedule(attempts, days, sentence):
    config = PolicyConfig(smart_retry_attempts=attempts, smart_retry_days=days)
    assert retry_schedule(config) == sentence


MAR_1 = datetime(2026, 3, 1, tzinfo=UTC)
MAR_31 = datetime(2026, 3, 31, tzinfo=UTC)
USD_49 = Money(4900, "usd")


@pytest.mark.parametrize(
    ("charge", "refundable", "cancelled_at", "amount", "days", "words"),
    [
        # Mid-period: 12 of 30 days, 12/30 × $49.00 = $19.60 exactly.
        (
            USD_49,
            USD_49,
            datetime(2026, 3, 19, tzinfo=UTC),
            1960,
            (12, 30),
            "12/30 × $49.00 = $19.60",
        ),
        # Cancelled before the period began: the whole charge.
        (
            USD_49,
            USD_49,
            datetime(2026, 2, 20, tzinfo=UTC),
            4900,
            (30, 30),
            "before the period began",
        ),
        # Cancelled exactly at the start counts as before it.
        (USD_49, USD_49, MAR_1, 4900, (30, 30), "30/30 × $49.00 = $49.00"),
        # Capped at what an earlier partial refund left.
        (
            USD_49,
            Money(900, "usd"),
            datetime(2026, 3, 19, tzinfo=UTC),
            900,
            (12, 30),
            "Capped at the $9.00",
        ),
        # Zero-decimal currency: whole yen.
        (
            Money(5000, "jpy"),
            Money(5000, "jpy"),
            datetime(2026, 3, 19, tzinfo=UTC),
            2000,
            (12, 30),
            "¥2,000",
        ),
        # Floor: 1/3 of 100 cents is 33, never 34; a part day shows as a whole day.
        (
            Money(100, "usd"),
            Money(100, "usd"),
            datetime(2026, 3, 21, 0, 0, 1, tzinfo=UTC),
            33,
            (10, 30),
            "rounded down",
        ),
        # 10.5 unused days of 30 on $49.00 = $17.15; displayed as 11 days.
        (
            USD_49,
            USD_49,
            datetime(2026, 3, 20, 12, tzinfo=UTC),
            1715,
            (11, 30),
            "10.50/30 × $49.00",
        ),
        # A different time zone for the cancellation is the same instant.
        (
            USD_49,
            USD_49,
            datetime(2026, 3, 19, 1, tzinfo=timezone(timedelta(hours=1))),
            1960,
            (12, 30),
            "$19.60",
        ),
    ],
)
def test_prorated_refund(charge, refundable, cancelled_at, amount, days, words):
    refund = prorated_refund(charge, refundable, MAR_1, MAR_31, cancelled_at)
    assert refund is not None
    assert refund.amount == Money(amount, charge.currency)
    assert (refund.unused_days, refund.period_days) == days
    assert words in refund.explanation
    assert (refund.period_start, refund.period_end, refund.cancelled_at) == (
        MAR_1,
        MAR_31,
        cancelled_at,
    )


def test_prorated_refund_explains_itself():
    refund = prorated_refund(USD_49, USD_49, MAR_1, MAR_31, datetime(2026, 3, 19, tzinfo=UTC))
    assert refund is not None
    assert refund.explanation == (
        "Cancelled on 19 Mar 2026; 12 of 30 days of the period were unused: "
        "12/30 × $49.00 = $19.60."
    )


@pytest.mark.parametrize(
    ("refundable", "start", "end", "cancelled_at"),
    [
        (USD_49, MAR_1, MAR_31, MAR_31),  # cancelled as the period ended
        (USD_49, MAR_1, MAR_31, datetime(2026, 4, 2, tzinfo=UTC)),  # after it ended
        (USD_49, MAR_1, MAR_1, MAR_1 - timedelta(days=1)),  # an empty period
        (USD_49, MAR_31, MAR_1, MAR_1),  # a backwards period
        (Money(0, "usd"), MAR_1, MAR_31, datetime(2026, 3, 19, tzinfo=UTC)),  # refunded already
        (Money(1, "usd"), MAR_1, MAR_31, MAR_31 - timedelta(seconds=1)),  # rounds down to 0
    ],
)
def test_nothing_to_prorate(refundable, start, end, cancelled_at):
    assert prorated_refund(USD_49, refundable, start, end, cancelled_at) is None


@pytest.mark.parametrize("naive", ["period_start", "period_end", "cancelled_at"])
def test_prorated_refund_refuses_naive_datetimes(naive):
    moments = {"period_start": MAR_1, "period_end": MAR_31, "cancelled_at": MAR_1}
    moments[naive] = moments[naive].replace(tzinfo=None)
    with pytest.raises(ValueError, match=naive):
        prorated_refund(USD_49, USD_49, **moments)


def test_prorated_refund_refuses_mixed_currencies():
    with pytest.raises(ValueError):
        prorated_refund(USD_49, Money(4900, "eur"), MAR_1, MAR_31, MAR_1)


def test_prorated_refund_measures_real_time_across_a_clock_change():
    paris = ZoneInfo("Europe/Paris")  # clocks go forward on 29 Mar 2026: 743 hours in March
    start, end = datetime(2026, 3, 1, tzinfo=paris), datetime(2026, 4, 1, tzinfo=paris)
    refund = prorated_refund(Money(74300, "eur"), Money(74300, "eur"), start, end, start)
    assert refund is not None and refund.amount == Money(74300, "eur")
    half = prorated_refund(
        Money(74300, "eur"), Money(74300, "eur"), start, end, datetime(2026, 3, 31, tzinfo=paris)
    )
    assert half is not None and half.amount == Money(2400, "eur")  # 24 of 743 hours


OPENED = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("target", "due", "text"),
    [
        (EscalationTarget.SUPPORT_LEAD, OPENED + timedelta(hours=24), "Support Lead · SLA 24h"),
        (EscalationTarget.FINANCE, OPENED + timedelta(hours=48), "Finance · SLA 48h"),
        (
            EscalationTarget.ENGINEERING_PLATFORM,
            OPENED + timedelta(hours=4),
            "Engineering (Platform) · SLA 4h",
        ),
        (
            EscalationTarget.ENGINEERING_CRITICAL,
            OPENED + timedelta(minutes=15),
            "Engineering (Critical) · SLA 15m",
        ),
        (EscalationTarget.SECURITY, OPENED + timedelta(hours=1), "Security · SLA 1h"),
        (
            EscalationTarget.ACCOUNT_MANAGER,
            OPENED + timedelta(hours=48),
            "Account manager · SLA 48h",
        ),
    ],
)
def test_sla_defaults_follow_the_matrix(target, due, text):
    config = PolicyConfig()
    assert sla_due(target, OPENED, config) == due
    assert sla_text(target, config) == text


@pytest.mark.parametrize(
    ("minutes", "text"),
    [(90, "Finance · SLA 1h 30m"), (45, "Finance · SLA 45m"), (2, "Finance · SLA 2m")],
)
def test_sla_text_for_overridden_minutes(minutes, text):
    config = PolicyConfig(escalation_sla_minutes={EscalationTarget.FINANCE: minutes})
    assert sla_text(EscalationTarget.FINANCE, config) == text
    assert sla_due(EscalationTarget.FINANCE, OPENED, config) == OPENED + timedelta(minutes=minutes)
    # A partial table still has the playbooks' SLA for everyone else.
    assert sla_text(EscalationTarget.SUPPORT_LEAD, config) == "Support Lead · SLA 24h"


ROUTES = [
    (Category.REFUND_REQUEST, EscalationTarget.SUPPORT_LEAD),
    (Category.CHARGE_AFTER_CANCELLATION, EscalationTarget.SUPPORT_LEAD),
    (Category.DUPLICATE_CHARGE, EscalationTarget.SUPPORT_LEAD),
    (Category.CHARGEBACK, EscalationTarget.FINANCE),
    (Category.CARD_NOT_RECOGNIZED, EscalationTarget.SECURITY),
    (Category.UNUSED_MODULE, EscalationTarget.ACCOUNT_MANAGER),
    (Category.GENERAL_DISSATISFACTION, EscalationTarget.ACCOUNT_MANAGER),
    (Category.PAYMENT_FAILED, None),
    (Category.CANCELLATION_REQUEST, None),
    (Category.AUTHORIZATION_HOLD, None),
    (Category.OTHER, None),
]


@pytest.mark.parametrize(("category", "target"), ROUTES)
def test_escalation_routes(category, target):
    assert escalation_route(category) is target


def test_the_route_table_covers_every_category():
    assert sorted(category for category, _ in ROUTES) == sorted(Category)


def test_policy_file_overrides_the_new_settings(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(
        "smart_retry_attempts = 8\nsmart_retry_days = 21\n\n"
        "[escalation_sla_minutes]\nfinance = 1440\nsecurity = 30\n"
    )
    config = load_policy(str(path))
    assert (config.smart_retry_attempts, config.smart_retry_days) == (8, 21)
    assert config.sla_minutes(EscalationTarget.FINANCE) == 1440
    assert config.sla_minutes(EscalationTarget.SECURITY) == 30
    assert config.sla_minutes(EscalationTarget.ENGINEERING_CRITICAL) == 15  # untouched default
    assert retry_schedule(config) == (
        "Stripe retries automatically: 8 more attempts over 3 weeks (not for hard declines)."
    )


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[escalation_sla_minutes]\nfinance = 0\n", "policy.toml: escalation_sla_minutes.finance"),
        (
            '[escalation_sla_minutes]\nfinance = "2d"\n',
            "policy.toml: escalation_sla_minutes.finance",
        ),
        ("[escalation_sla_minutes]\nlegal = 60\n", "policy.toml: escalation_sla_minutes.legal"),
        ("escalation_sla_minutes = 60\n", "policy.toml: escalation_sla_minutes"),
        ("smart_retry_attempts = -1\n", "policy.toml: smart_retry_attempts"),
        ("smart_retry_attempts = true\n", "policy.toml: smart_retry_attempts"),
        ("smart_retry_days = 0\n", "policy.toml: smart_retry_days"),
        ("smart_retry_day = 14\n", "policy.toml: smart_retry_day"),
    ],
)
def test_bad_new_settings_name_the_key(tmp_path, toml, key):
    path = tmp_path / "policy.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as raised:
        load_policy(str(path))
    assert raised.value.setting == key


def test_smart_retries_may_be_switched_off():
    assert policy_from_mapping({"smart_retry_attempts": 0}).smart_retry_attempts == 0


@pytest.mark.parametrize(
    ("value", "ok"), [(0.7, True), (0, True), (1, True), (1.5, False), ("x", False), (True, False)]
)
def test_the_classifier_confidence_threshold_is_a_fraction(value, ok):
    """min_classifier_confidence is configurable and refused outside 0..1, naming the key."""
    if ok:
        assert (
            policy_from_mapping({"min_classifier_confidence": value}).min_classifier_confidence
            == value
        )
    else:
        with pytest.raises(ConfigError, match="min_classifier_confidence"):
            policy_from_mapping({"min_classifier_confidence": value})


@pytest.mark.parametrize(
    ("amount", "reason", "fraud", "accept", "words"),
    [
        (1999, "product_unacceptable", False, True, "under $20.00"),
        (2000, "product_unacceptable", False, False, "Challenge"),
        (90000, "fraudulent", False, True, "fraud is suspected"),
        (90000, "unrecognized", False, True, "fraud is suspected"),
        (90000, "general", True, True, "fraud is suspected"),
        (90000, "subscription_canceled", False, False, "proof of use"),
    ],
)
def test_dispute_advice(amount, reason, fraud, accept, words):
    """PenguinMails: accept if fraud is suspected or the amount is small (<$20); else challenge."""
    opened = datetime(2026, 3, 1, tzinfo=UTC)
    dispute = Dispute("dp_1", "ch_1", Money(amount, "usd"), reason, "needs_response", opened)
    advice = dispute_advice(dispute, PolicyConfig(), fraud_suspected=fraud)
    assert advice.accept is accept and words in advice.reason
