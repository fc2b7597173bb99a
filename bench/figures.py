"""One row of bench/RESULTS.md: a figure of ours beside a reference measured in the same run."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

# The web app's per-client rate limits (core.settings), raised out of the way: a bench sends
# one client's requests as fast as it can, and measures the app, not its limiter (the
# limiter's check still runs on every request).
NO_RATE_LIMITS = {
    f"rate_limit_{surface}": "1000000/minute"
    for surface in ("sidebar_reads", "sidebar_writes", "pages", "public", "webhooks")
}


@dataclass(frozen=True)
class Row:
    """Ours beside a reference; ``better`` says which way is better ("higher" or "lower")."""

    section: str
    what: str
    ours: float | None
    reference: float | None
    reference_name: str
    unit: str
    better: str  # "higher" or "lower"
    note: str = ""
    not_run: str = ""  # why the reference could not be measured

    @property
    def ratio(self) -> float | None:
        """Ours over the reference."""
        if self.ours is None or not self.reference:
            return None
        return self.ours / self.reference

    @property
    def verdict(self) -> str:
        """Whether ours is better, worse or level with the reference (within 5 %)."""
        ratio = self.ratio
        if ratio is None:
            return "—"
        if 0.95 <= ratio <= 1.05:
            return "level"
        ahead = ratio > 1 if self.better == "higher" else ratio < 1
        return "ours better" if ahead else "ours worse"


def number(value: float | None) -> str:
    """A figure with about three significant digits."""
    if value is None:
        return "—"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude >= 0.01 or magnitude == 0:
        return f"{value:.3f}"
    return f"{value:.2g}"


def render(rows: list[Row]) -> str:
    """The table, in Markdown."""
    lines = [
        "| section | what | ours | reference | ref. value | ours/ref. | better | verdict "
        "| unit | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        reference = number(row.reference) if not row.not_run else f"not run: {row.not_run}"
        ratio = number(row.ratio) if row.ratio is not None else "—"
        lines.append(
            f"| {row.section} | {row.what} | {number(row.ours)} | {row.reference_name} | "
            f"{reference} | {ratio} | {row.better} | {row.verdict} | {row.unit} | {row.note} |"
        )
    return "\n".join(lines)


def nearest_rank(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))]


def median(values: list[float]) -> float:
    """The median (statistics.median, named here beside nearest_rank)."""
    return statistics.median(values)
