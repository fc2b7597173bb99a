"""A keyword-rule email classifier: the reference the trained classifier is measured against.

What a helpdesk's "if the text contains ..." routing rules would do: the first category whose
keywords appear (lower-cased, anywhere in subject and body) wins, else ``other``. Written from
the category names and ordinary billing vocabulary, not from any evaluation text; the order
puts the more specific categories first (a "refund" after a "cancelled" is the
charge-after-cancellation category, not a plain refund request).
"""

from __future__ import annotations

import re

RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("chargeback", ("chargeback", "charge back", "disputed", "dispute with my bank")),
    ("duplicate_charge", ("charged twice", "double charge", "duplicate", "two charges")),
    (
        "charge_after_cancellation",
        ("after i cancel", "after cancel", "cancelled but", "canceled but", "still charged"),
    ),
    ("authorization_hold", ("pending charge", "authorization", "hold on my card", "pending")),
    ("card_not_recognized", ("don't recognize", "do not recognize", "unknown charge", "fraud")),
    (
        "payment_failed",
        ("payment failed", "declined", "card was rejected", "failed payment", "can't pay"),
    ),
    ("unused_module", ("never used", "not using", "never activated", "unused")),
    ("refund_request", ("refund", "money back", "reimburse")),
    ("cancellation_request", ("cancel", "close my account", "unsubscribe", "end my subscription")),
    ("general_dissatisfaction", ("unhappy", "disappointed", "terrible", "not satisfied")),
)
_COMPILED = tuple(
    (category, re.compile("|".join(re.escape(k) for k in keywords))) for category, keywords in RULES
)


def classify(text: str) -> str:
    """The first category whose keywords the text contains, else ``other``."""
    lowered = text.lower()
    for category, pattern in _COMPILED:
        if pattern.search(lowered):
            return category
    return "other"
