"""Text to Classification: which billing problem an email is about, how sure, and why.

Sentence embeddings (all-MiniLM-L6-v2, ``mail/encoder.py``) plus hits of a small table of
unmistakable phrases, into a linear model (logistic regression) trained on the labelled corpus
we wrote ourselves (``mail/corpus/<category>.csv``). Embeddings carry meaning across wording
the corpus never used ("restitution", "get my money back", "the renewal bounced"); the phrase
table keeps the plain cases ("I filed a chargeback") right and says why. The method was chosen
by measurement against word n-grams and rules alone: see ``bench/classifier.py`` and the
numbers in ``bench/README.md``.

The trained weights live in ``mail/model/classifier.json`` with a fingerprint of the corpus
they came from; ``python -m mail.training`` rebuilds them (a test fails when they are stale).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.domain import Category

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
DEFAULT_THRESHOLD = 0.5
MAX_CHARS = 3000  # the opening of an email carries its point; long threads only add noise

C = Category
# Phrases that settle a category on their own; each hit is a feature and a reason.
_PHRASES: tuple[tuple[Category, str], ...] = (
    (C.CHARGEBACK, r"charge ?backs?\b"),
    (
        C.CHARGEBACK,
        r"(disputed?|dispute|reversed?|contest(ed)?)\b.{0,40}\b(with|through|via|to) "
        r"(my|the|our) (bank|card issuer|credit card company|amex|visa|mastercard)",
    ),
    (C.CHARGEBACK, r"(filed|opened|raised|started|submitted) (a |an )?(dispute|claim)"),
    (C.CARD_NOT_RECOGNIZED, r"(don'?t|do not|didn'?t|did not) recogni[sz]e"),
    (C.CARD_NOT_RECOGNIZED, r"unrecogni[sz]ed|unknown charge|not mine|never (signed|subscribed)"),
    (C.CARD_NOT_RECOGNIZED, r"(not|never|didn'?t) authori[sz]e|unauthori[sz]ed"),
    (C.DUPLICATE_CHARGE, r"(charged|billed|debited|taken|paid) (me |us )?(twice|two times|double)"),
    (C.DUPLICATE_CHARGE, r"double[- ]?(charged|billed|charge|payment)|duplicate (charge|payment)"),
    (C.CHARGE_AFTER_CANCELLATION, r"(charged|billed|renewed)\b.{0,40}\bafter (i |we )?cancel"),
    (C.AUTHORIZATION_HOLD, r"pending (charge|transaction)|authori[sz]ation hold|\bhold (on|of)"),
    (C.AUTHORIZATION_HOLD, r"temporary (charge|hold)|pre-?authori[sz]ation"),
    (C.PAYMENT_FAILED, r"payment (failed|was declined|declined|did ?n[o']t go through)"),
    (C.PAYMENT_FAILED, r"card (was |got |keeps getting |is being )?declined"),
    (C.UNUSED_MODULE, r"(module|add-?on)s?\b.{0,60}\b(never|not|didn'?t) (used|use|activated?)"),
    (C.UNUSED_MODULE, r"(never|not|didn'?t) (used|use|activated?)\b.{0,40}\b(module|add-?on)"),
)
_COMPILED = tuple((category, re.compile(pattern, re.I)) for category, pattern in _PHRASES)
_QUOTE_HEADER = re.compile(
    r"^(on .{0,200}wrote:|-+ ?original message ?-+|from: .+|sent from my \w+)\s*$", re.I
)


@dataclass(frozen=True)
class Classification:
    """A category, a confidence in [0, 1], and the signals that fired."""

    category: Category
    confidence: float
    reasons: tuple[str, ...]

    def is_confident(self, threshold: float = DEFAULT_THRESHOLD) -> bool:
        """Whether automation may rely on this category; below the threshold a person decides."""
        return self.category is not Category.OTHER and self.confidence >= threshold


@dataclass(frozen=True)
class Example:
    """One labelled email of the corpus."""

    subject: str
    body: str
    label: Category
    split: str  # "train" or "heldout"


def load_corpus(split: str | None = None, directory: Path = CORPUS_DIR) -> list[Example]:
    """The labelled corpus, optionally one split of it; the file name is the label."""
    examples: list[Example] = []
    for path in sorted(directory.glob("*.csv")):
        label = Category(path.stem)
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if split is None or row["split"] == split:
                    examples.append(Example(row["subject"], row["body"], label, row["split"]))
    return examples


def prepare(subject: str, body: str) -> str:
    """The text the model reads: subject and body, without quoted history, trimmed."""
    kept: list[str] = []
    for line in body.splitlines():
        if _QUOTE_HEADER.match(line.strip()):
            break  # everything below is an earlier message or a phone's signature
        if not line.lstrip().startswith(">"):
            kept.append(line)
    return f"{subject}\n{' '.join(' '.join(kept).split())}"[:MAX_CHARS]


def phrase_hits(text: str) -> list[tuple[Category, str]]:
    """The high-precision phrases found in a text, with what matched."""
    hits = []
    for category, pattern in _COMPILED:
        match = pattern.search(text)
        if match:
            hits.append((category, match.group(0)))
    return hits


PHRASE_WEIGHT = 0.5  # a phrase hit counts about as much as a strong embedding direction
WEIGHTS_FILE = Path(__file__).resolve().parent / "model" / "classifier.json"


def corpus_fingerprint(directory: Path = CORPUS_DIR) -> str:
    """A hash of the corpus files: trained weights record the corpus they were trained on."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.csv")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def features(texts: Sequence[str], embeddings: Any) -> Any:
    """Embeddings with the phrase hits appended, one row per prepared text."""
    import numpy as np

    hits = np.zeros((len(texts), len(_COMPILED)), dtype=np.float32)
    for row, text in enumerate(texts):
        for column, (_, pattern) in enumerate(_COMPILED):
            if pattern.search(text):
                hits[row, column] = PHRASE_WEIGHT
    return np.hstack([np.asarray(embeddings, dtype=np.float32), hits])


@dataclass(frozen=True)
class LinearModel:
    """Multinomial logistic regression weights: a probability per category."""

    categories: tuple[Category, ...]
    coef: Any  # (categories, features)
    intercept: Any  # (categories,)

    def probabilities(self, x: Any) -> Any:
        """Softmax of the linear scores, one row per example."""
        import numpy as np

        scores = x @ self.coef.T + self.intercept
        scores -= scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        return exp / exp.sum(axis=1, keepdims=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready weights (rounded: six decimals change no prediction)."""
        return {
            "categories": [str(c) for c in self.categories],
            "coef": [[round(float(v), 6) for v in row] for row in self.coef],
            "intercept": [round(float(v), 6) for v in self.intercept],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinearModel:
        """Weights read back from JSON."""
        import numpy as np

        return cls(
            tuple(Category(c) for c in data["categories"]),
            np.asarray(data["coef"], dtype=np.float32),
            np.asarray(data["intercept"], dtype=np.float32),
        )


def train(examples: Sequence[Example], embeddings: Any) -> LinearModel:
    """Fit the linear model on examples and their (already computed) embeddings."""
    from sklearn.linear_model import LogisticRegression

    texts = [prepare(e.subject, e.body) for e in examples]
    fitted = LogisticRegression(C=3.0, max_iter=5000, class_weight="balanced").fit(
        features(texts, embeddings), [str(e.label) for e in examples]
    )
    return LinearModel(tuple(Category(c) for c in fitted.classes_), fitted.coef_, fitted.intercept_)


def load_weights(name: str = "production", path: Path = WEIGHTS_FILE) -> LinearModel:
    """Shipped weights: "production" (whole corpus) or "train_split" (for held-out checks)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return LinearModel.from_dict(data["models"][name])


_model: LinearModel | None = None
_lock = threading.Lock()


def load() -> LinearModel:
    """The production model and the encoder, loaded once per process (warm it before forking)."""
    global _model
    from mail.encoder import get_encoder

    with _lock:
        if _model is None:
            _model = load_weights()
    get_encoder()
    return _model


def classify_many(
    items: Sequence[tuple[str, str]], model: LinearModel | None = None
) -> list[Classification]:
    """Classify (subject, body) pairs in one batch: much faster than one at a time."""
    from mail.encoder import get_encoder

    model = model or load()
    if not items:
        return []
    texts = [prepare(subject, body) for subject, body in items]
    probabilities = model.probabilities(features(texts, get_encoder().encode(texts)))
    results = []
    for text, row in zip(texts, probabilities, strict=True):
        best = int(row.argmax())
        category, probability = model.categories[best], float(row[best])
        reasons = [f"{c}: “{m}”" for c, m in phrase_hits(text) if c is category]
        runner = sorted(range(len(row)), key=lambda i: -row[i])[1]
        reasons.append(
            f"model: {category} {probability:.2f}"
            f" (next: {model.categories[runner]} {float(row[runner]):.2f})"
        )
        results.append(Classification(category, round(probability, 3), tuple(reasons)))
    return results


def classify(subject: str, body: str) -> Classification:
    """Classify an email from its subject and body text."""
    return classify_many([(subject, body)])[0]
