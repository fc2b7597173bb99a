"""How well a classifier does on labelled text: accuracy, macro-F1, per-category figures, confusion.

Plain arithmetic on two lists, so the CLI, the benchmark and the tests report the same numbers.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from core.errors import InvalidInput


@dataclass(frozen=True)
class CategoryScore:
    """Precision, recall and F1 of one category, with how many examples it had."""

    category: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Report:
    """The figures for one labelled set."""

    total: int
    accuracy: float
    macro_f1: float
    per_category: tuple[CategoryScore, ...]
    labels: tuple[str, ...]
    confusion: dict[tuple[str, str], int]  # (gold, predicted) -> count

    def render(self) -> str:
        """A plain-text report: summary, per-category table and confusion matrix."""
        lines = [
            f"examples  {self.total}",
            f"accuracy  {self.accuracy:.3f}",
            f"macro-F1  {self.macro_f1:.3f}  (over the {len(self.per_category)} labels in the set)",
            "",
            f"{'category':<28}{'precision':>10}{'recall':>8}{'F1':>7}{'n':>6}",
        ]
        for score in self.per_category:
            lines.append(
                f"{score.category:<28}{score.precision:>10.3f}{score.recall:>8.3f}"
                f"{score.f1:>7.3f}{score.support:>6}"
            )
        short = {label: label[:6] for label in self.labels}
        lines += ["", "confusion (rows: true label, columns: predicted)"]
        lines.append(f"{'':<28}" + "".join(f"{short[p]:>7}" for p in self.labels))
        for gold in self.labels:
            cells = "".join(f"{self.confusion.get((gold, p), 0):>7}" for p in self.labels)
            lines.append(f"{gold:<28}{cells}")
        return "\n".join(lines)


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def evaluate(gold: Sequence[str], predicted: Sequence[str]) -> Report:
    """Score predictions against gold labels.

    Macro-F1 averages over the labels present in the gold set: a set that only has four of our
    eleven categories is scored on those four, and predicting a fifth costs recall and
    precision where it lands.
    """
    if len(gold) != len(predicted):
        raise ValueError("gold and predicted differ in length")
    pairs = Counter(zip(gold, predicted, strict=True))
    gold_labels = sorted(set(gold))
    scores = []
    for label in gold_labels:
        true_positive = pairs[(label, label)]
        predicted_as = sum(n for (_, p), n in pairs.items() if p == label)
        actual = sum(n for (g, _), n in pairs.items() if g == label)
        precision = _ratio(true_positive, predicted_as)
        recall = _ratio(true_positive, actual)
        f1 = _ratio(2 * precision * recall, precision + recall) if precision + recall else 0.0
        scores.append(CategoryScore(label, precision, recall, f1, actual))
    correct = sum(n for (g, p), n in pairs.items() if g == p)
    return Report(
        total=len(gold),
        accuracy=_ratio(correct, len(gold)),
        macro_f1=sum(s.f1 for s in scores) / len(scores) if scores else 0.0,
        per_category=tuple(scores),
        labels=tuple(sorted(set(gold) | set(predicted))),
        confusion=dict(pairs),
    )


THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)


@dataclass(frozen=True)
class CurvePoint:
    """At one confidence threshold: the share of texts at or above it, and how many of those
    are classified right."""

    threshold: float
    coverage: float
    precision: float
    covered: int


def precision_coverage(
    gold: Sequence[str],
    predictions: Sequence[tuple[str, float]],
    thresholds: Sequence[float] = THRESHOLDS,
) -> list[CurvePoint]:
    """Precision and coverage per threshold over (predicted category, confidence) pairs."""
    if len(gold) != len(predictions):
        raise ValueError("gold and predicted differ in length")
    points = []
    for threshold in thresholds:
        covered = [g == p for g, (p, c) in zip(gold, predictions, strict=True) if c >= threshold]
        points.append(
            CurvePoint(
                threshold,
                _ratio(len(covered), len(gold)),
                _ratio(sum(covered), len(covered)) if covered else 1.0,
                len(covered),
            )
        )
    return points


def render_curve(points: Sequence[CurvePoint], marked: float | None = None) -> str:
    """The precision/coverage table, one line per threshold; ``marked`` (the threshold
    automation uses) gets an arrow."""
    lines = [
        "precision and coverage by confidence threshold (coverage: share of texts at or above it)",
        f"{'threshold':>10}{'coverage':>10}{'precision':>11}{'texts':>7}",
    ]
    for p in points:
        arrow = "  <- automation" if marked is not None and abs(p.threshold - marked) < 1e-9 else ""
        lines.append(
            f"{p.threshold:>10.2f}{p.coverage:>10.3f}{p.precision:>11.3f}{p.covered:>7}{arrow}"
        )
    return "\n".join(lines)


def read_rows(path: Path, required: Iterable[str]) -> list[dict[str, str]]:
    """A CSV file's rows as dicts; InvalidInput naming a missing column or an unreadable file."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise InvalidInput(f"{path}: no {', '.join(missing)} column")
            return list(reader)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path} ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(f"{path} is not a UTF-8 CSV file ({exc})") from None


def write_predictions(out: TextIO, rows: Iterable[tuple[str, str, float]]) -> None:
    """CSV with columns text,category,confidence, one row per input row, in order."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["text", "category", "confidence"])
    for text, category, confidence in rows:
        writer.writerow([text, category, f"{confidence:.3f}"])
