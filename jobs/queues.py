"""Queue names, retry policy and the one way jobs are enqueued (once per job ID)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus

log = logging.getLogger(__name__)

ACTIONS = "actions"  # what people asked for: their clicks never wait behind automation
AUTOMATION = "automation"  # the mail agent's plan steps and periodic work (the SLA check)
MAIL = "mail"  # inbound email processing
EVENTS = "events"  # Stripe webhook events: the mirror, disputes, the mass-failure watch
# In the order a worker on several of them serves them: people, then work already started.
ALL_QUEUES = (ACTIONS, AUTOMATION, EVENTS, MAIL)

# Transient failures (Stripe, SMTP or IMAP unreachable) are retried with growing pauses.
STANDARD_RETRY = Retry(max=5, interval=[10, 30, 60, 300, 900])

# A worker that has just taken a job from its queue marks it started within milliseconds; a job
# still "queued" and in no queue this long after a first look was lost on the way to a worker.
LOST_RECHECK_SECONDS = 1.0
# Recorded work (an event, a stored email) still waiting this long after it came is looked for
# in the queue by the supervisor's minute sweep: with it, a lost job runs within two minutes.
RESUME_AFTER = timedelta(minutes=1)
_REQUEUE_LOCK_SECONDS = 30  # one process pushes a lost job back, not every sweep that finds it


def get_queue(name: str, connection: Redis) -> Queue:
    """The named queue on this Redis connection."""
    return Queue(name, connection=connection)


def enqueue_once(queue: Queue, func: Callable[..., Any], *args: Any, job_id: str) -> bool:
    """Enqueue ``func(*args)`` unless a job with this ID is already queued, running or kept;
    True when this call enqueued it.

    The job itself is idempotent too: this only saves a worker the trouble.
    """
    try:
        queue.enqueue(func, *args, job_id=job_id, unique=True, retry=STANDARD_RETRY)
    except DuplicateJobError:
        if requeue_if_lost(queue.connection, job_id):
            return True
        log.debug("job %s already exists; not enqueued again", job_id)
        return False
    return True


def _waiting(connection: Redis, queue: Queue, job_id: str) -> bool:
    """Whether the job's ID is in its queue, or in the list RQ moves it through to a worker."""
    intermediate = IntermediateQueue.get_intermediate_queue_key(queue.key)
    return any(connection.lpos(key, job_id) is not None for key in (queue.key, intermediate))


def requeue_if_lost(connection: Redis, job_id: str) -> bool:
    """Push a job back on its queue when it says it is queued but no queue holds it; True
    when this call did.

    A worker listening on several queues takes a job with BLPOP: when its connection drops
    after Redis popped the ID and before the worker read the answer, no worker has the job,
    it never runs, and its unique ID keeps every later enqueue of it out. (RQ's own safety
    net, the intermediate queue, is only used by a worker on a single queue.)
    """
    try:
        job = Job.fetch(job_id, connection=connection)
    except NoSuchJobError:
        return False
    queue = Queue(job.origin, connection=connection)
    for look in range(2):
        if job.get_status(refresh=True) != JobStatus.QUEUED or _waiting(connection, queue, job_id):
            return False
        if look == 0:
            time.sleep(LOST_RECHECK_SECONDS)
    if not connection.set(
        f"billing-desk:requeue-lost:{job_id}", 1, nx=True, ex=_REQUEUE_LOCK_SECONDS
    ):
        return False
    queue.push_job_id(job_id)
    log.warning(
        "job %s was queued but in no queue (lost on its way to a worker): queued again", job_id
    )
    return True
