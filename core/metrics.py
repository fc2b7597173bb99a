"""Every Prometheus metric Billing Desk exposes, in one place.

Two kinds, on purpose:

- Business totals live in our database (tickets by category, automatic resolutions, refunds
  and their amounts, escalations and SLA breaches) and in RQ's failed-job registries. A
  ``BusinessCollector`` reads them when Prometheus scrapes, so whichever web, worker or poller
  instance is scraped gives the same, correct figures, across machines and restarts.
- Per-process figures (Stripe request latency and errors, job outcomes and retries, webhook
  lag, web request latency) are counters and histograms in ``PROCESS``. gunicorn runs several
  worker processes and the worker supervisor forks its workers, so a composition root that
  forks calls ``use_multiprocess_directory`` first: each process then writes its samples to
  a scratch directory of that instance's own, which ``scrape_registry`` adds up.

Every process metric is labelled, so none of them holds a value before its first use: the
composition root can still switch on multiprocess mode after this module is imported.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.db.models import Action, Escalation, InboundEmail, Ticket
from core.domain import ActionStatus

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "billing_desk"

PROCESS = CollectorRegistry(auto_describe=True)

STRIPE_REQUEST_SECONDS = Histogram(
    f"{PREFIX}_stripe_request_duration_seconds",
    "Stripe API requests (each HTTP attempt), by method, endpoint template and status class.",
    ["method", "endpoint", "status_class"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20),
    registry=PROCESS,
)
STRIPE_ERRORS = Counter(
    f"{PREFIX}_stripe_errors",
    "Stripe API attempts that failed: 4xx, 5xx or no answer (status_class 'connection').",
    ["method", "endpoint", "status_class"],
    registry=PROCESS,
)
JOB_OUTCOMES = Counter(
    f"{PREFIX}_job_runs",
    "Jobs this process ran, by queue, job function and outcome (finished, retried, failed).",
    ["queue", "job", "outcome"],
    registry=PROCESS,
)
JOB_RETRIES = Counter(
    f"{PREFIX}_job_retries",
    "Job runs that failed and were scheduled to run again, by queue and job function.",
    ["queue", "job"],
    registry=PROCESS,
)
JOB_FAILURES = Counter(
    f"{PREFIX}_job_failures",
    "Job runs that failed for good (into RQ's failed registry), by queue and job function.",
    ["queue", "job"],
    registry=PROCESS,
)
WEBHOOK_LAG_SECONDS = Histogram(
    f"{PREFIX}_stripe_webhook_lag_seconds",
    "From a Stripe event's `created` to our receipt of its webhook, by event type.",
    ["type"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400),
    registry=PROCESS,
)
HTTP_REQUEST_SECONDS = Histogram(
    f"{PREFIX}_http_request_duration_seconds",
    "Web requests, by method, route (the URL rule, never the URL) and status class.",
    ["method", "route", "status_class"],
    registry=PROCESS,
)
# A path segment that is an object ID (cus_NffrFeUfNV2Hib, 42), not a resource name
# (payment_intents): Stripe's IDs always hold a digit or a capital letter.
_STRIPE_ID = re.compile(r"^(?:[a-z]+_)+(?=[A-Za-z0-9]*[0-9A-Z])[A-Za-z0-9]+$|^\d+$")


def endpoint_template(path: str) -> str:
    """A Stripe URL's path with its object IDs replaced: ``/v1/customers/{id}``."""
    path = re.split("[?#]", path, maxsplit=1)[0]
    return "/".join("{id}" if _STRIPE_ID.match(part) else part for part in path.split("/"))


def status_class(status: int | None) -> str:
    """``2xx``, ``4xx``, ``5xx``..., or ``connection`` when no answer came."""
    return f"{status // 100}xx" if status else "connection"


def observe_stripe_request(method: str, path: str, status: int | None, seconds: float) -> None:
    """Record one HTTP attempt at Stripe's API."""
    labels = (method.upper(), endpoint_template(path), status_class(status))
    STRIPE_REQUEST_SECONDS.labels(*labels).observe(seconds)
    if status is None or status >= 400:
        STRIPE_ERRORS.labels(*labels).inc()


def observe_job(queue: str, job: str, outcome: str) -> None:
    """Record how one job run ended: finished, retried or failed."""
    JOB_OUTCOMES.labels(queue, job, outcome).inc()
    if outcome == "retried":
        JOB_RETRIES.labels(queue, job).inc()
    elif outcome == "failed":
        JOB_FAILURES.labels(queue, job).inc()


def observe_webhook_lag(event_type: str, created: int, received: float) -> None:
    """Record how long a Stripe event took to reach us (never negative: clocks differ)."""
    WEBHOOK_LAG_SECONDS.labels(event_type).observe(max(0.0, received - created))


def use_multiprocess_directory() -> Path:
    """Switch this process, and those it forks, to prometheus_client's multiprocess mode,
    in a fresh scratch directory removed when this process exits. Call it in a composition
    root before any metric is used; returns the directory."""
    directory = Path(tempfile.mkdtemp(prefix="billing-desk-metrics-"))
    os.environ[MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.MultiProcessValue()
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # not when a forked child exits
            shutil.rmtree(directory, ignore_errors=True)

    atexit.register(remove)
    return directory


def multiprocess_directory() -> str | None:
    """The scratch directory of multiprocess mode, when it is on."""
    return os.environ.get(MULTIPROC_ENV) or None


FailedJobCounts = Callable[[], Iterable[tuple[str, str, int]]]


class BusinessCollector(Collector):
    """Business totals read from the database (and RQ's failed registries) at scrape time."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        failed_jobs: FailedJobCounts | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.failed_jobs = failed_jobs

    def collect(self) -> Iterator[Metric]:
        """One scrape's figures: a few GROUP BY counts."""
        with self.session_factory() as session:
            yield from self._database(session)
        if self.failed_jobs is not None:
            failed = GaugeMetricFamily(
                f"{PREFIX}_jobs_failed",
                "Jobs in RQ's failed registries now, by queue and job function.",
                labels=["queue", "job"],
            )
            for queue, job, count in self.failed_jobs():
                failed.add_metric([queue, job], count)
            yield failed

    def _database(self, session: Session) -> Iterator[Metric]:
        # Imported here: core.actions reaches the Stripe gateway, which imports this module.
        from core.actions.workflow import MAIL_AGENT

        emails = CounterMetricFamily(
            f"{PREFIX}_emails_ingested", "Customer emails stored from the mailbox(es)."
        )
        emails.add_metric([], session.scalar(select(func.count(InboundEmail.id))) or 0)
        yield emails

        classified = CounterMetricFamily(
            f"{PREFIX}_tickets_classified",
            "Tickets by the category the mail agent (or an agent) gave them.",
            labels=["category"],
        )
        by_category = session.execute(
            select(Ticket.category, func.count(Ticket.id))
            .where(Ticket.category.is_not(None))
            .group_by(Ticket.category)
        )
        for category, count in by_category:
            classified.add_metric([category or "none"], count)
        yield classified

        automatic = CounterMetricFamily(
            f"{PREFIX}_automatic_resolutions",
            "Tickets closed by the mail agent's plan, with no agent involved, by category.",
            labels=["category"],
        )
        closed = session.execute(
            select(Ticket.category, func.count(func.distinct(Ticket.id)))
            .join(Action, Action.ticket_id == Ticket.id)
            .where(
                Action.kind == "close",
                Action.status == ActionStatus.SUCCEEDED,
                Action.requested_by == MAIL_AGENT,
            )
            .group_by(Ticket.category)
        )
        for category, count in closed:
            automatic.add_metric([category or "none"], count)
        yield automatic

        refunds = CounterMetricFamily(
            f"{PREFIX}_refunds",
            "Refunds made through Billing Desk, by currency.",
            labels=["currency"],
        )
        amounts = CounterMetricFamily(
            f"{PREFIX}_refunded_minor_units",
            "Money refunded through Billing Desk, in the currency's minor units (cents).",
            labels=["currency"],
        )
        refunded = session.execute(
            select(Action.currency, func.count(Action.id), func.sum(Action.amount))
            .where(Action.kind == "refund", Action.status == ActionStatus.SUCCEEDED)
            .group_by(Action.currency)
        )
        for currency, count, amount in refunded:
            refunds.add_metric([currency or "unknown"], count)
            amounts.add_metric([currency or "unknown"], amount or 0)
        yield refunds
        yield amounts

        escalations = CounterMetricFamily(
            f"{PREFIX}_escalations", "Tickets escalated, by team.", labels=["team"]
        )
        breaches = CounterMetricFamily(
            f"{PREFIX}_sla_breaches", "Escalations found past their SLA, by team.", labels=["team"]
        )
        open_now = GaugeMetricFamily(
            f"{PREFIX}_escalations_open", "Escalations not yet resolved, by team.", labels=["team"]
        )
        by_team = session.execute(
            select(
                Escalation.target,
                func.count(Escalation.id),
                func.count(Escalation.breached_at),
                func.count(Escalation.id).filter(Escalation.resolved_at.is_(None)),
            ).group_by(Escalation.target)
        )
        for team, count, breached, unresolved in by_team:
            escalations.add_metric([team], count)
            breaches.add_metric([team], breached)
            open_now.add_metric([team], unresolved)
        yield escalations
        yield breaches
        yield open_now


class _ProcessMetrics(Collector):
    """This process's own counters and histograms (when not in multiprocess mode)."""

    def collect(self) -> Iterator[Metric]:
        """What ``PROCESS`` holds now."""
        yield from PROCESS.collect()


def scrape_registry(
    session_factory: sessionmaker[Session], failed_jobs: FailedJobCounts | None = None
) -> CollectorRegistry:
    """The registry a scrape reads: every process's samples, then the business totals."""
    registry = CollectorRegistry(auto_describe=False)
    directory = multiprocess_directory()
    if directory is not None:
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_ProcessMetrics())
    registry.register(BusinessCollector(session_factory, failed_jobs))
    return registry
