"""Train the classifier from the corpus: ``python -m mail.training`` (needs the ``train`` extra).

Writes two models over the same features: "production" (trained on the whole corpus: what the
product uses) and "train_split" (trained on the train split only, so tests and the benchmark can
score the held-out split honestly). For each, five-fold cross-validation on its own training
emails gives every email a prediction from models that never saw it; from those the gate (the
lowest raw probability at which the character n-gram reader alone is right at least
``GATE_PRECISION`` of the time) and each reader's calibration (isotonic regression of being
right on the raw probability) are chosen. Metadata and calibrations go to
``mail/model/classifier.json``, the weights to ``mail/model/classifier.npz``.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.domain import Category
from mail.classifier import (
    ARRAYS_FILE,
    WEIGHTS_FILE,
    Calibration,
    GramReader,
    LinearModel,
    Model,
    as_read,
    char_grams,
    corpus_fingerprint,
    load_corpus,
    phrase_features,
    prepare,
)
from mail.encoder import MAX_TOKENS, MODEL_NAME, encoder_fingerprint, get_encoder
from mail.evaluation import evaluate, precision_coverage, render_curve

MIN_DOCUMENTS = 2  # a gram seen in one email only is noise, not vocabulary
GRAMS_C = 30.0  # chosen by held-out macro-F1 (bench/README.md)
EMBEDDINGS_C = 3.0
GATE_PRECISION = 0.99
NEVER = 1.01  # a gate no probability reaches: every email is read by both readers
GATES = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
FOLDS = 5


def _logistic(x: Any, labels: Sequence[str], inverse_regularisation: float) -> LinearModel:
    from sklearn.linear_model import LogisticRegression

    fitted = LogisticRegression(
        C=inverse_regularisation, max_iter=5000, class_weight="balanced"
    ).fit(x, labels)
    return LinearModel(tuple(Category(c) for c in fitted.classes_), fitted.coef_, fitted.intercept_)


def _vocabulary(texts: Sequence[str]) -> tuple[dict[str, int], Any]:
    """Grams in at least MIN_DOCUMENTS texts, and their smoothed inverse document frequency."""
    import numpy as np

    documents: Counter[str] = Counter()
    for text in texts:
        documents.update(char_grams(text).keys())
    kept = sorted(g for g, n in documents.items() if n >= MIN_DOCUMENTS)
    n = len(texts)
    idf = np.asarray([np.log((1 + n) / (1 + documents[g])) + 1 for g in kept], dtype=np.float32)
    return {g: i for i, g in enumerate(kept)}, idf


def _gram_matrix(reader: GramReader, texts: Sequence[str], phrases: Any) -> Any:
    """The gram reader's features for texts (and their phrase_features), as the sparse
    matrix the solver takes."""
    from scipy.sparse import csr_matrix, hstack

    data, columns, pointers = [], [], [0]
    for text in texts:
        found, values = reader.vectors(text)
        columns.extend(found.tolist())
        data.extend(values.tolist())
        pointers.append(len(columns))
    grams = csr_matrix((data, columns, pointers), shape=(len(texts), len(reader.vocabulary)))
    return hstack([grams, csr_matrix(phrases)]).tocsr()


@dataclass
class Readers:
    """The two trained linear models, before the gate and calibrations are chosen."""

    grams: GramReader
    embeddings: LinearModel


def _fit(texts: Sequence[str], embeddings: Any, labels: Sequence[str]) -> Readers:
    import numpy as np

    vocabulary, idf = _vocabulary(texts)
    untrained = GramReader(vocabulary, idf, LinearModel((), None, None))
    phrases = phrase_features(texts)
    grams = _logistic(_gram_matrix(untrained, texts, phrases), labels, GRAMS_C)
    dense = np.hstack([embeddings, phrases])
    return Readers(GramReader(vocabulary, idf, grams), _logistic(dense, labels, EMBEDDINGS_C))


def _raw(readers: Readers, texts: Sequence[str], embeddings: Any) -> tuple[Any, Any]:
    """Each reader's probabilities for texts (both readers on every text)."""
    import numpy as np

    phrases = phrase_features(texts)
    dense = np.hstack([embeddings, phrases])
    return readers.grams.probabilities(texts, phrases), readers.embeddings.dense(dense)


def _isotonic(raw: Any, right: Any) -> Calibration:
    from sklearn.isotonic import IsotonicRegression

    if len(raw) == 0:
        return Calibration((0.0, 1.0), (0.0, 1.0))
    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, right)
    return Calibration(
        tuple(round(float(x), 4) for x in fitted.X_thresholds_),
        tuple(round(float(y), 4) for y in fitted.y_thresholds_),
    )


def _gram_reader_may_decide(gate: float, best: Any, right: Any) -> bool:
    """At this gate the gram reader alone is right at least GATE_PRECISION of the time."""
    rows = best >= gate
    return bool(rows.any()) and float(right[rows].mean()) >= GATE_PRECISION


def train_model(texts: Sequence[str], embeddings: Any, labels: Sequence[str]) -> Model:
    """Both readers on all of texts, with the gate and calibrations cross-validation chose."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels)
    categories = np.asarray(sorted(set(labels)))  # the order of sklearn's classes_
    out_grams = np.zeros((len(texts), len(categories)))
    out_both = np.zeros_like(out_grams)
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=0)
    for fit_rows, held_rows in folds.split(np.zeros(len(y)), y):
        readers = _fit([texts[i] for i in fit_rows], embeddings[fit_rows], y[fit_rows].tolist())
        grams, dense = _raw(readers, [texts[i] for i in held_rows], embeddings[held_rows])
        # What Model.classify returns: the gram reader's row, or both readers' averaged.
        out_grams[held_rows], out_both[held_rows] = grams, (grams + dense) / 2
    best_grams, best_both = out_grams.max(axis=1), out_both.max(axis=1)
    right_grams = categories[out_grams.argmax(axis=1)] == y
    right_both = categories[out_both.argmax(axis=1)] == y
    gate = next((g for g in GATES if _gram_reader_may_decide(g, best_grams, right_grams)), NEVER)
    decided = best_grams >= gate
    readers = _fit(texts, embeddings, labels)
    assert readers.grams.model.categories == readers.embeddings.categories
    return Model(
        grams=readers.grams,
        embeddings=readers.embeddings,
        gate=gate,
        calibrations={
            "grams": _isotonic(best_grams[decided], right_grams[decided]),
            "both": _isotonic(best_both[~decided], right_both[~decided]),
        },
    )


def _arrays(name: str, model: Model) -> dict[str, Any]:
    import numpy as np

    vocabulary = sorted(model.grams.vocabulary, key=model.grams.vocabulary.__getitem__)
    return {
        f"{name}.vocabulary": np.asarray(vocabulary),
        f"{name}.idf": model.grams.idf.astype(np.float32),
        f"{name}.grams.coef": model.grams.model.coef.astype(np.float32),
        f"{name}.grams.intercept": model.grams.model.intercept.astype(np.float32),
        f"{name}.embeddings.coef": model.embeddings.coef.astype(np.float32),
        f"{name}.embeddings.intercept": model.embeddings.intercept.astype(np.float32),
    }


def _meta(model: Model) -> dict[str, Any]:
    return {
        "categories": [str(c) for c in model.grams.model.categories],
        "gate": model.gate,
        "calibrations": {
            reader: {"raw": list(c.raw), "right": list(c.right)}
            for reader, c in model.calibrations.items()
        },
    }


def main() -> int:
    """Train both models, report the held-out figures, write the weights."""
    import numpy as np

    started = time.perf_counter()
    corpus = load_corpus()
    texts = [prepare(*as_read(e)) for e in corpus]
    labels = [str(e.label) for e in corpus]
    embeddings = get_encoder().encode(texts)
    train_rows = [i for i, e in enumerate(corpus) if e.split == "train"]
    production = train_model(texts, embeddings, labels)
    train_split = train_model(
        [texts[i] for i in train_rows], embeddings[train_rows], [labels[i] for i in train_rows]
    )
    heldout = [i for i, e in enumerate(corpus) if e.split == "heldout"]
    results = train_split.classify([texts[i] for i in heldout])
    gold = [labels[i] for i in heldout]
    report = evaluate(gold, [str(r.category) for r in results])
    curve = precision_coverage(gold, [(str(r.category), r.confidence) for r in results])
    WEIGHTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        ARRAYS_FILE, **_arrays("production", production), **_arrays("train_split", train_split)
    )
    WEIGHTS_FILE.write_text(
        json.dumps(
            {
                "encoder": MODEL_NAME,
                "encoder_fingerprint": encoder_fingerprint(),
                "max_tokens": MAX_TOKENS,
                "corpus_fingerprint": corpus_fingerprint(),
                "corpus_size": len(corpus),
                "heldout_macro_f1": round(report.macro_f1, 4),
                "production": _meta(production),
                "train_split": _meta(train_split),
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    print(report.render())
    print()
    print(render_curve(curve))
    print(f"\ngates: production {production.gate}, train_split {train_split.gate}")
    print(f"wrote {WEIGHTS_FILE} and {ARRAYS_FILE.name} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
