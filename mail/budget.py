"""A time budget per email: reading one hostile message must not hold a worker.

Every stage of reading an email is bounded (header caps, linear patterns); the budget is the
backstop for what the bounds did not foresee. It is checked between stages and between the
extractor's patterns; past it, the email is kept as a ticket with its raw message and a note,
and no automation runs on it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from core.errors import BillingDeskError


class OverBudget(BillingDeskError):
    """Reading an email took longer than its budget."""

    retryable = False

    def __init__(self, stage: str, seconds: float, budget: float) -> None:
        super().__init__(f"{stage} took {seconds:.1f} s, over the {budget:g} s budget")
        self.stage = stage


@dataclass
class Budget:
    """CPU seconds reading one email may take, counted in this thread from when it was made.

    What a hostile message costs is computing. Waiting is not counted: for the triage lock
    another worker holds, a database or Stripe slow to answer (each bounded by its own
    timeout, and the job by its own). Counted by the clock, a worker that died holding the
    triage lock, or a network fault, sent perfectly readable mail to a person.
    """

    seconds: float
    started: float = field(default_factory=time.thread_time)

    def check(self, stage: str) -> None:
        """Raise OverBudget once the budget is spent; ``stage`` says what was running."""
        spent = time.thread_time() - self.started
        if spent > self.seconds:
            raise OverBudget(stage, spent, self.seconds)


UNLIMITED = Budget(float("inf"))
