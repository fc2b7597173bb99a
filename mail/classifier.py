"""Text to Classification: which billing problem an email is about, how sure, and why.

Two readers, the cheap one first:

1. **Character n-grams** (TF-IDF of 2–5 letter pieces of words, plus hits of a small table of
   unmistakable phrases) into a linear model. It reads an email in well under a millisecond,
   shrugs off typos ("acncel", "erfund"), and decides alone when it is sure.
2. **Sentence embeddings** (all-MiniLM-L6-v2 through ONNX Runtime, ``mail/encoder.py``, plus the
   same phrase hits) into a second linear model, for the emails the first is unsure of. Embeddings
   carry meaning across wording the corpus never used ("restitution", "the renewal bounced"),
   at about 16 ms an email on one core.

Both are trained on the labelled corpus we wrote ourselves (``mail/corpus/<category>.csv``).
The gate between them and each reader's **calibration** (a monotone map from the model's raw
probability to the share of emails it got right at that probability, measured on emails each
model had not been trained on) are chosen by ``python -m mail.training``, so ``confidence`` is
an honest probability that the category is right, and the policy's threshold means what it says.
The method was chosen by measurement: see ``bench/classifier.py`` and ``bench/README.md``.

The text classified is the sender's own words (``mail.parsing.text_for_classification``: quoted
history and signatures are the parser's to remove, once); here it is only trimmed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.domain import Category

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
MODEL_DIR = Path(__file__).resolve().parent / "model"
WEIGHTS_FILE = MODEL_DIR / "classifier.json"
ARRAYS_FILE = MODEL_DIR / "classifier.npz"
MAX_CHARS = 3000  # the opening of an email carries its point; long threads only add noise
GRAM_SIZES = range(2, 6)
# A few hundred emails per band of raw probability cannot show a reader is never wrong there.
MAX_CONFIDENCE = 0.99

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
PHRASE_WEIGHT = 0.5  # a phrase hit counts about as much as a strong embedding direction


@dataclass(frozen=True)
class Classification:
    """A category, a confidence in [0, 1], and the signals that fired."""

    category: Category
    confidence: float
    reasons: tuple[str, ...]

    def is_confident(self, threshold: float) -> bool:
        """Whether automation may rely on this category; below the threshold (the policy's
        min_classifier_confidence) a person decides."""
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


def prepare(subject: str, own_words: str) -> str:
    """The text the models read: the subject and the sender's words on one line, trimmed."""
    return f"{subject}\n{' '.join(own_words.split())}"[:MAX_CHARS]


def as_read(example: Example) -> tuple[str, str]:
    """A corpus email as intake hands it to the classifier: its subject and its own words
    (mail.parsing.text_for_classification, as for any email)."""
    from mail.parsing import text_for_classification

    return example.subject, text_for_classification(example.body)


def phrase_hits(text: str) -> list[tuple[Category, str]]:
    """The high-precision phrases found in a text, with what matched."""
    hits = []
    for category, pattern in _COMPILED:
        match = pattern.search(text)
        if match:
            hits.append((category, match.group(0)))
    return hits


def phrase_features(texts: Sequence[str]) -> Any:
    """One row per text, one column per phrase: PHRASE_WEIGHT where it is found."""
    import numpy as np

    hits = np.zeros((len(texts), len(_COMPILED)), dtype=np.float32)
    for row, text in enumerate(texts):
        for column, (_, pattern) in enumerate(_COMPILED):
            if pattern.search(text):
                hits[row, column] = PHRASE_WEIGHT
    return hits


def char_grams(text: str) -> Counter[str]:
    """Counts of the 2–5 character pieces of each lower-cased word, padded with a space."""
    grams: Counter[str] = Counter()
    for word in text.lower().split():
        padded = f" {word} "
        for size in GRAM_SIZES:
            if size > len(padded):
                break
            grams.update(padded[i : i + size] for i in range(len(padded) - size + 1))
    return grams


def corpus_fingerprint(directory: Path = CORPUS_DIR) -> str:
    """A hash of the corpus files: trained weights record the corpus they were trained on."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*.csv")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class LinearModel:
    """Multinomial logistic regression weights: a probability per category."""

    categories: tuple[Category, ...]
    coef: Any  # (categories, features)
    intercept: Any  # (categories,)

    def probabilities(self, scores: Any) -> Any:
        """Softmax of linear scores (one row per example)."""
        import numpy as np

        scores = scores - scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        return exp / exp.sum(axis=1, keepdims=True)

    def dense(self, x: Any) -> Any:
        """Probabilities for dense feature rows."""
        return self.probabilities(x @ self.coef.T + self.intercept)


@dataclass(frozen=True)
class GramReader:
    """TF-IDF of character n-grams over a fixed vocabulary, then phrase hits, then weights."""

    vocabulary: dict[str, int]
    idf: Any  # (grams,)
    model: LinearModel  # over grams followed by phrases

    def vectors(self, text: str) -> tuple[Any, Any]:
        """The text's (gram columns, L2-normalised sublinear TF-IDF values)."""
        import numpy as np

        found = [
            (self.vocabulary[g], n) for g, n in char_grams(text).items() if g in self.vocabulary
        ]
        columns = np.fromiter((c for c, _ in found), dtype=np.int64, count=len(found))
        counts = np.fromiter((n for _, n in found), dtype=np.float32, count=len(found))
        values = (1.0 + np.log(counts)) * self.idf[columns]
        norm = float(np.sqrt((values**2).sum()))
        return columns, values / norm if norm else values

    def probabilities(self, texts: Sequence[str], phrases: Any) -> Any:
        """One row of category probabilities per prepared text, given its phrase_features."""
        import numpy as np

        grams = len(self.vocabulary)
        coef = self.model.coef
        scores = np.empty((len(texts), len(self.model.categories)), dtype=np.float32)
        for row, text in enumerate(texts):
            columns, values = self.vectors(text)
            scores[row] = coef[:, columns] @ values + coef[:, grams:] @ phrases[row]
        return self.model.probabilities(scores + self.model.intercept)


@dataclass(frozen=True)
class Calibration:
    """A monotone map from a reader's raw top probability to how often it is then right."""

    raw: tuple[float, ...]
    right: tuple[float, ...]

    def __call__(self, probability: float) -> float:
        import numpy as np

        return min(float(np.interp(probability, self.raw, self.right)), MAX_CONFIDENCE)


@dataclass(frozen=True)
class Model:
    """The two readers, the gate between them and their calibrations."""

    grams: GramReader
    embeddings: LinearModel  # over the sentence embedding followed by phrases
    gate: float  # the gram reader decides alone at or above this raw probability
    calibrations: dict[str, Calibration]  # "grams" (alone), "both" (averaged)

    def classify(self, texts: Sequence[str]) -> list[Classification]:
        """Classify prepared texts; the encoder runs only for those the gram reader is unsure of."""
        import numpy as np

        phrases = phrase_features(texts)
        rows = self.grams.probabilities(texts, phrases)
        unsure = [i for i, row in enumerate(rows) if float(row.max()) < self.gate]
        readers = ["grams"] * len(texts)
        if unsure:
            from mail.encoder import get_encoder

            x = np.hstack([get_encoder().encode([texts[i] for i in unsure]), phrases[unsure]])
            for i, row in zip(unsure, self.embeddings.dense(x), strict=True):
                # Each reader errs where the other does not: averaged, they beat either alone.
                rows[i], readers[i] = (rows[i] + row) / 2, "both"
        return [
            self._explain(text, row, reader)
            for text, row, reader in zip(texts, rows, readers, strict=True)
        ]

    def _explain(self, text: str, row: Any, reader: str) -> Classification:
        categories = self.grams.model.categories  # the embedding model's, too (load_weights)
        order = sorted(range(len(row)), key=lambda i: -row[i])
        category, raw = categories[order[0]], float(row[order[0]])
        confidence = self.calibrations[reader](raw)
        reasons = [f"{c}: “{m}”" for c, m in phrase_hits(text) if c is category]
        reasons.append(
            f"model: {category} {confidence:.2f} by {_READER_NAMES[reader]}"
            f" (raw {raw:.2f}; next: {categories[order[1]]} {float(row[order[1]]):.2f})"
        )
        return Classification(category, round(confidence, 3), tuple(reasons))


_READER_NAMES = {
    "grams": "character n-grams alone",
    "both": "character n-grams and sentence embeddings",
}


def load_weights(name: str = "production", directory: Path = MODEL_DIR) -> Model:
    """Shipped weights: "production" (whole corpus) or "train_split" (for held-out checks)."""
    import numpy as np

    meta = json.loads((directory / WEIGHTS_FILE.name).read_text(encoding="utf-8"))[name]
    with np.load(directory / ARRAYS_FILE.name) as arrays:
        vocabulary = [str(g) for g in arrays[f"{name}.vocabulary"]]
        idf = arrays[f"{name}.idf"].astype(np.float32)
        models = {
            reader: LinearModel(
                tuple(Category(c) for c in meta["categories"]),
                arrays[f"{name}.{reader}.coef"].astype(np.float32),
                arrays[f"{name}.{reader}.intercept"].astype(np.float32),
            )
            for reader in ("grams", "embeddings")
        }
    return Model(
        grams=GramReader({g: i for i, g in enumerate(vocabulary)}, idf, models["grams"]),
        embeddings=models["embeddings"],
        gate=float(meta["gate"]),
        calibrations={
            reader: Calibration(tuple(points["raw"]), tuple(points["right"]))
            for reader, points in meta["calibrations"].items()
        },
    )


_model: Model | None = None
_lock = threading.Lock()


def load() -> Model:
    """The production model and the encoder, loaded once per process (warm it before forking)."""
    global _model
    from mail.encoder import get_encoder

    with _lock:
        if _model is None:
            _model = load_weights()
    get_encoder()
    return _model


def classify_many(
    items: Sequence[tuple[str, str]], model: Model | None = None
) -> list[Classification]:
    """Classify (subject, the sender's own words) pairs."""
    if not items:
        return []
    return (model or load()).classify([prepare(subject, words) for subject, words in items])


def classify(subject: str, own_words: str) -> Classification:
    """Classify an email from its subject and the sender's own words."""
    return classify_many([(subject, own_words)])[0]
