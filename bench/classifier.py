"""Benchmark the email classifier: quality on text we wrote and on text we did not, and speed.

    python bench/classifier.py [--eval-dir ../shared/eval] [--repeat 3]

Quality: the shipped "train_split" weights (trained on the corpus's train split only) scored on
its held-out split, and the production weights (whole corpus) scored on every ``*.csv`` of
labelled public text in ``--eval-dir`` (never trained on). Speed: emails per second on one core
(BLAS and the process limited to one thread), email-length input from the held-out split,
classified in batches as the CLI does and one at a time as the mail worker does. It prints
figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import os

# One core: set before numpy/scipy load their BLAS.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mail import classifier  # noqa: E402
from mail.evaluation import evaluate, precision_coverage, read_rows, render_curve  # noqa: E402


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def heldout_quality() -> list[tuple[str, str]]:
    """The train-split model on the held-out split; returns its (subject, body) pairs."""
    heldout = classifier.load_corpus("heldout")
    model = classifier.load_weights("train_split")
    items = [classifier.as_read(e) for e in heldout]
    results = classifier.classify_many(items, model)
    gold = [str(e.label) for e in heldout]
    report = evaluate(gold, [str(r.category) for r in results])
    _section(f"our held-out corpus: {len(heldout)} emails (model trained on the train split)")
    print(report.render())
    _curve(gold, results)
    return items


def _curve(gold: list[str], results: list[classifier.Classification]) -> None:
    print()
    print(
        render_curve(precision_coverage(gold, [(str(r.category), r.confidence) for r in results]))
    )
    by_embeddings = sum("sentence embeddings" in r.reasons[-1] for r in results)
    print(f"read by the sentence encoder: {by_embeddings} of {len(results)}")


def public_quality(eval_dir: Path) -> None:
    """The production model on each labelled public set."""
    for path in sorted(eval_dir.glob("*.csv")):
        rows = read_rows(path, ["text", "label"])
        results = classifier.classify_many([("", row["text"]) for row in rows])
        gold = [row["label"] for row in rows]
        report = evaluate(gold, [str(r.category) for r in results])
        _section(f"{path.name}: {len(rows)} texts we did not write")
        print(report.render())
        _curve(gold, results)
        wrong = [
            (row["label"], str(r.category), row["text"])
            for row, r in zip(rows, results, strict=True)
            if row["label"] != str(r.category)
        ]
        print(f"\nsome of the {len(wrong)} it gets wrong (true → predicted):")
        for gold, predicted, text in wrong[:12]:
            print(f"  {gold} → {predicted}: {text[:90]}")


def speed(items: list[tuple[str, str]], repeat: int) -> None:
    """Emails per second, batched and one by one, on one core: the train-split model on the
    held-out emails, so the gram reader is as sure of them as it is of any new email (the
    production model was trained on them and would hand fewer to the sentence encoder)."""
    model = classifier.load_weights("train_split")
    classifier.load()
    chars = statistics.median(len(s) + len(b) for s, b in items)
    batched, single = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        classifier.classify_many(items, model)
        batched.append(len(items) / (time.perf_counter() - started))
        started = time.perf_counter()
        for item in items:
            classifier.classify_many([item], model)
        single.append(len(items) / (time.perf_counter() - started))
    _section(f"speed: {len(items)} emails, median {chars:.0f} characters, one core")
    print(f"  batched     {statistics.median(batched):8.0f} emails/s")
    print(f"  one by one  {statistics.median(single):8.0f} emails/s")


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--eval-dir", type=Path, default=root.parent / "shared" / "eval")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    classifier.load()
    print(f"encoder and weights loaded in {time.perf_counter() - started:.2f} s")
    items = heldout_quality()
    if args.eval_dir.is_dir():
        public_quality(args.eval_dir)
    else:
        print(f"\n(no public evaluation set at {args.eval_dir})")
    speed(items, args.repeat)


if __name__ == "__main__":
    main()
