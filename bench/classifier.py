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
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keyword_baseline  # noqa: E402

from mail import classifier  # noqa: E402
from mail.evaluation import (  # noqa: E402
    Report,
    evaluate,
    precision_coverage,
    read_rows,
    render_curve,
)


def _section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def heldout_quality() -> tuple[list[tuple[str, str]], list[str], Report]:
    """The train-split model on the held-out split; its (subject, body) pairs, their labels
    and the report."""
    heldout = classifier.load_corpus("heldout")
    model = classifier.load_weights("train_split")
    items = [classifier.as_read(e) for e in heldout]
    results = classifier.classify_many(items, model)
    gold = [str(e.label) for e in heldout]
    report = evaluate(gold, [str(r.category) for r in results])
    _section(f"our held-out corpus: {len(heldout)} emails (model trained on the train split)")
    print(report.render())
    _curve(gold, results)
    return items, gold, report


def _curve(gold: list[str], results: list[classifier.Classification]) -> None:
    print()
    print(
        render_curve(precision_coverage(gold, [(str(r.category), r.confidence) for r in results]))
    )
    by_embeddings = sum("sentence embeddings" in r.reasons[-1] for r in results)
    print(f"read by the sentence encoder: {by_embeddings} of {len(results)}")


def public_quality(eval_dir: Path) -> dict[str, tuple[list[str], list[str], Report]]:
    """The production model on each labelled public set: by file name, its texts, labels and
    report."""
    reports = {}
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
        for label, predicted, text in wrong[:12]:
            print(f"  {label} → {predicted}: {text[:90]}")
        reports[path.name] = ([row["text"] for row in rows], gold, report)
    return reports


def speed(items: list[tuple[str, str]], repeat: int) -> tuple[float, float]:
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
    return statistics.median(batched), statistics.median(single)


@dataclass(frozen=True)
class Scores:
    """Accuracy and macro-F1 of one reader on one set."""

    accuracy: float
    macro_f1: float

    @classmethod
    def of(cls, gold: list[str], predicted: list[str]) -> Scores:
        """Score ``predicted`` against ``gold`` (mail.evaluation's figures)."""
        report = evaluate(gold, predicted)
        return cls(report.accuracy, report.macro_f1)


@dataclass
class ClassifierFigures:
    """Ours, the keyword rules and the majority class on each set (by name), and speed."""

    texts: dict[str, int] = field(default_factory=dict)
    ours: dict[str, Scores] = field(default_factory=dict)
    keywords: dict[str, Scores] = field(default_factory=dict)
    majority: dict[str, Scores] = field(default_factory=dict)
    majority_label: dict[str, str] = field(default_factory=dict)
    batched_per_second: float = 0.0
    single_per_second: float = 0.0
    keywords_per_second: float = 0.0


def measure(eval_dir: Path, repeat: int = 3) -> ClassifierFigures:
    """Quality on our held-out split and every public set, speed on one core, and the same
    figures for the keyword baseline (bench/keyword_baseline.py) and the majority class."""
    figures = ClassifierFigures()
    classifier.load()
    items, gold, report = heldout_quality()
    sets = {"held-out": ([f"{s}\n{b}" for s, b in items], gold, report)}
    if eval_dir.is_dir():
        sets.update(public_quality(eval_dir))
    for name, (texts, labels, scores) in sets.items():
        figures.texts[name] = len(texts)
        figures.ours[name] = Scores(scores.accuracy, scores.macro_f1)
        figures.keywords[name] = Scores.of(labels, [keyword_baseline.classify(t) for t in texts])
        # The majority of the set itself: the best any constant answer can do on it.
        label = Counter(labels).most_common(1)[0][0]
        figures.majority_label[name] = label
        figures.majority[name] = Scores.of(labels, [label] * len(labels))
    figures.batched_per_second, figures.single_per_second = speed(items, repeat)
    joined = [f"{s}\n{b}" for s, b in items]
    rates = []
    for _ in range(repeat):
        started = time.perf_counter()
        for text in joined:
            keyword_baseline.classify(text)
        rates.append(len(joined) / (time.perf_counter() - started))
    figures.keywords_per_second = statistics.median(rates)
    return figures


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
    if not args.eval_dir.is_dir():
        print(f"\n(no public evaluation set at {args.eval_dir})")
    figures = measure(args.eval_dir, args.repeat)
    _section("beside the keyword rules (bench/keyword_baseline.py) and the majority class")
    for name, ours in figures.ours.items():
        keywords, majority = figures.keywords[name], figures.majority[name]
        print(
            f"  {name} ({figures.texts[name]}): macro-F1 ours {ours.macro_f1:.3f}, keywords "
            f"{keywords.macro_f1:.3f}, majority ({figures.majority_label[name]}) "
            f"{majority.macro_f1:.3f}; accuracy {ours.accuracy:.3f}, {keywords.accuracy:.3f}, "
            f"{majority.accuracy:.3f}"
        )
    print(f"  keyword rules: {figures.keywords_per_second:.0f} emails/s one by one")


if __name__ == "__main__":
    main()
