"""No-op jobs per second per worker: our worker model beside plain ``rq worker`` on one Redis.

    .venv/bin/python bench/jobs_per_second.py [--jobs 1000] [--runs 3]

For each model ``--jobs`` no-op jobs (``os.getpid``, nothing to import or build) are queued on
the ``actions`` queue first, then the model runs in burst mode as a child process until the
queue is empty:

- ``ours``: ``billing-desk worker --burst --processes 1 --queue actions`` (the supervisor and
  one long-lived ``BillingDeskWorker``; without the mail queue it does not load the classifier);
- ``rq-fork``: ``rq worker --burst actions``, RQ's default forking ``Worker``;
- ``rq-simple``: ``rq worker --burst --worker-class rq.worker.SimpleWorker actions``.

Steady jobs/s is read from RQ's own records: (jobs - 1) over the span from the first job's
``ended_at`` to the last's; "wall" counts from the process's start to its exit (start-up
included). With ``--runs`` above 1 the models take turns, run after run, and each figure is
the median run's. Uses an embedded Redis unless REDIS_URL is set (that database is flushed).
Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from redis import Redis
from rq import Queue
from rq.job import Job

from core.db import make_engine, upgrade
from core.settings import Settings
from helpdesk_app.demo import servers

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("ours", "rq-fork", "rq-simple")
QUEUE = "actions"


@dataclass(frozen=True)
class JobsFigures:
    """One model's run."""

    model: str
    jobs: int
    finished: int
    steady_per_second: float
    wall_seconds: float


def command(model: str) -> list[str]:
    """The command line that starts a model."""
    if model == "ours":
        return [sys.executable, "-m", "helpdesk_app", "worker", "--burst", "--processes", "1"]
    rq = [sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", "{redis}"]
    if model == "rq-simple":
        rq += ["--worker-class", "rq.worker.SimpleWorker"]
    return rq


def run_model(model: str, jobs: int, settings: Settings, scratch: Path) -> JobsFigures:
    """Queue the no-op jobs, run the model until it exits, read the jobs' end times."""
    redis = Redis.from_url(settings.redis_url or "")
    redis.flushdb()
    queue = Queue(QUEUE, connection=redis)
    with redis.pipeline() as pipe:
        ids = [queue.enqueue("os.getpid", pipeline=pipe).id for _ in range(jobs)]
        pipe.execute()
    argv = [part.replace("{redis}", settings.redis_url or "") for part in command(model)]
    argv += ["--queue", QUEUE] if model == "ours" else [QUEUE]
    env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    with open(scratch / f"{model}.log", "wb") as log:
        subprocess.run(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    wall = time.perf_counter() - started
    ended = sorted(
        job.ended_at.timestamp()
        for job in Job.fetch_many(ids, connection=redis)
        if job is not None and job.ended_at is not None and job.get_status() == "finished"
    )
    steady = (len(ended) - 1) / (ended[-1] - ended[0]) if len(ended) > 1 else 0.0
    return JobsFigures(model, jobs, len(ended), steady, wall)


def measure(
    jobs: int = 1000, models: tuple[str, ...] = MODELS, runs: int = 1
) -> dict[str, JobsFigures]:
    """Every model's figures (its median run by steady jobs/s), on one Redis (embedded
    unless REDIS_URL is set)."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    embedded = None
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        embedded = servers.start_embedded_redis(scratch / "redis")
        redis_url = f"redis://127.0.0.1:{embedded.port}/0"
    try:
        database_url = f"sqlite:///{scratch / 'jobs.sqlite3'}"
        upgrade(make_engine(database_url))
        settings = Settings(
            database_url=database_url,
            redis_url=redis_url,
            secret_key="bench-secret-key-0123456789",
            # The worker refuses to start without them; no-op jobs never call either.
            stripe_api_key="sk_test_bench_jobs",
            smtp_host="127.0.0.1",
        )
        results: dict[str, list[JobsFigures]] = {model: [] for model in models}
        for _ in range(runs):  # in turns, so a busy spell on the machine hits every model
            for model in models:
                results[model].append(run_model(model, jobs, settings, scratch))
        return {
            model: sorted(found, key=lambda f: f.steady_per_second)[len(found) // 2]
            for model, found in results.items()
        }
    finally:
        if embedded is not None:
            embedded.stop()


def main() -> None:
    """Run every model once and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for model, figures in measure(args.jobs, runs=args.runs).items():
        print(
            f"{model:<10} {figures.steady_per_second:8.0f} jobs/s steady "
            f"({figures.finished}/{figures.jobs} finished; wall {figures.wall_seconds:.1f} s, "
            "start-up included)"
        )


if __name__ == "__main__":
    main()
