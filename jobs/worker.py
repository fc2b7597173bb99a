"""The worker process: RQ on our queues, with the scheduler that runs delayed retries."""

from __future__ import annotations

import logging

from rq import SimpleWorker, Worker

from jobs import queues, runtime
from mail import classifier


def run_worker(rt: runtime.Runtime, *, burst: bool = False) -> bool:
    """Work the queues (actions first) until stopped, or until empty with ``burst``."""
    runtime.install(rt)
    # Train the classifier once here: RQ forks a work-horse per job, and each inherits it.
    classifier.load()
    logging.getLogger("rq.worker").setLevel(logging.INFO)
    worker = Worker([rt.queue(name) for name in queues.ALL_QUEUES], connection=rt.redis)
    return worker.work(burst=burst, with_scheduler=True)


def drain_queues(rt: runtime.Runtime, logging_level: str = "INFO") -> None:
    """Run every queued job in this process until the queues are empty (tests, benchmarks)."""
    queue_list = [rt.queue(name) for name in queues.ALL_QUEUES]
    SimpleWorker(queue_list, connection=rt.redis).work(burst=True, logging_level=logging_level)
