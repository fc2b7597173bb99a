"""Text to Classification: which billing problem an email is about, how sure, and why.

An ordered table of weighted patterns: explainable, testable, and precise on the phrasings it
knows. Each match adds its weight to its category; the confidence is the winner's share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.domain import Category

C = Category
_RULES: tuple[tuple[Category, str, int], ...] = (
    (C.CHARGEBACK, r"charge ?back", 4),
    (
        C.CHARGEBACK,
        r"(disputed?|reversed?)\b.{0,40}\b(with|through|via) (my|the) (bank|card issuer)",
        4,
    ),
    (C.CHARGEBACK, r"(filed|opened|raised) (a |an )?(dispute|claim)", 3),
    (C.CARD_NOT_RECOGNIZED, r"(don'?t|do not|didn'?t) recogni[sz]e", 4),
    (C.CARD_NOT_RECOGNIZED, r"unrecogni[sz]ed|unknown charge|never (signed|subscribed)", 3),
    (C.CARD_NOT_RECOGNIZED, r"(not|never|didn'?t) authori[sz]e|unauthori[sz]ed|fraud", 3),
    (C.DUPLICATE_CHARGE, r"(charged|billed|debited|taken) (me )?(twice|two times|double)", 5),
    (C.DUPLICATE_CHARGE, r"double[- ]?(charged|billed|charge)|duplicate (charge|payment)", 5),
    (C.DUPLICATE_CHARGE, r"(two|2) (identical |separate )?(charges|payments)", 3),
    (C.CHARGE_AFTER_CANCELLATION, r"cancel+ed\b.{0,80}\b(charged|billed|renewed)", 4),
    (C.CHARGE_AFTER_CANCELLATION, r"(charged|billed|renewed)\b.{0,40}\bafter (i |we )?cancel", 5),
    (C.AUTHORIZATION_HOLD, r"pending (charge|transaction)|authori[sz]ation hold|\bhold on my", 4),
    (C.AUTHORIZATION_HOLD, r"temporary (charge|hold)|pre-?authori[sz]ation", 3),
    (C.PAYMENT_FAILED, r"payment (failed|was declined|declined|did ?n[o']t go through)", 4),
    (C.PAYMENT_FAILED, r"card (was |got |keeps getting )?declined|past due|can'?t pay", 3),
    (C.UNUSED_MODULE, r"(module|add-?on)\b.{0,60}\b(never|not|didn'?t) (used|use|activated)", 5),
    (C.UNUSED_MODULE, r"(never|not|didn'?t) (used|use|activated?)\b.{0,40}\b(module|add-?on)", 5),
    (C.CANCELLATION_REQUEST, r"(want|like|need) to cancel|please cancel|cancel my", 3),
    (C.REFUND_REQUEST, r"\brefund|money back|reimburse", 2),
    (C.GENERAL_DISSATISFACTION, r"unhappy|disappointed|dissatisfied|not worth|terrible|awful", 2),
)
_COMPILED = tuple(
    (category, re.compile(pattern, re.I), weight) for category, pattern, weight in _RULES
)
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Classification:
    """A category, a confidence in [0, 1], and the signals that fired."""

    category: Category
    confidence: float
    reasons: tuple[str, ...]

    def is_confident(self, threshold: float = DEFAULT_THRESHOLD) -> bool:
        """Whether automation may rely on this category; below the threshold a person decides."""
        return self.category is not Category.OTHER and self.confidence >= threshold


def classify(subject: str, body: str) -> Classification:
    """Classify an email from its subject and body text."""
    text = f"{subject}\n{body}"
    scores: dict[Category, int] = {}
    reasons: dict[Category, list[str]] = {}
    for category, pattern, weight in _COMPILED:
        match = pattern.search(text)
        if match:
            scores[category] = scores.get(category, 0) + weight
            reasons.setdefault(category, []).append(f"{category}: “{match.group(0)}”")
    if not scores:
        return Classification(Category.OTHER, 0.5, ("no billing signal found",))
    # Ties go to the rule listed first: the table is ordered from most to least specific.
    order = {category: index for index, (category, _, _) in enumerate(_RULES)}
    winner = max(scores, key=lambda c: (scores[c], -order[c]))
    confidence = round(scores[winner] / (sum(scores.values()) + 1), 2)
    return Classification(winner, confidence, tuple(reasons[winner]))
