"""Train the classifier's weights from the corpus: ``python -m mail.training``.

Writes ``mail/model/classifier.json`` with two models, both over the same features:
"production" (trained on the whole corpus: what the product uses) and "train_split" (trained on
the train split only, so tests and the benchmark can score the held-out split honestly), plus
the corpus fingerprint and the held-out figures at training time.
"""

from __future__ import annotations

import json
import sys
import time

from mail.classifier import (
    WEIGHTS_FILE,
    classify_many,
    corpus_fingerprint,
    load_corpus,
    prepare,
    train,
)
from mail.encoder import MAX_TOKENS, MODEL_NAME, get_encoder
from mail.evaluation import evaluate


def main() -> int:
    """Train both models, report the held-out figures, write the weights file."""
    started = time.perf_counter()
    corpus = load_corpus()
    embeddings = get_encoder().encode([prepare(e.subject, e.body) for e in corpus])
    by_split = [i for i, e in enumerate(corpus) if e.split == "train"]
    production = train(corpus, embeddings)
    train_split = train([corpus[i] for i in by_split], embeddings[by_split])
    heldout = [e for e in corpus if e.split == "heldout"]
    results = classify_many([(e.subject, e.body) for e in heldout], train_split)
    report = evaluate([str(e.label) for e in heldout], [str(r.category) for r in results])
    WEIGHTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    WEIGHTS_FILE.write_text(
        json.dumps(
            {
                "encoder": MODEL_NAME,
                "max_tokens": MAX_TOKENS,
                "corpus_fingerprint": corpus_fingerprint(),
                "corpus_size": len(corpus),
                "heldout_macro_f1": round(report.macro_f1, 4),
                "models": {
                    "production": production.to_dict(),
                    "train_split": train_split.to_dict(),
                },
            },
            separators=(",", ":"),
        )
        + "\n",
        encoding="utf-8",
    )
    print(report.render())
    print(f"\nwrote {WEIGHTS_FILE} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
