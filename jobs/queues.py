"""Queue names, retry policy and the one way jobs are enqueued (once per job ID)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError

log = logging.getLogger(__name__)

ACTIONS = "actions"  # what people asked for: their clicks never wait behind automation
AUTOMATION = "automation"  # the mail agent's plan steps and periodic work (the SLA check)
MAIL = "mail"  # inbound email processing
EVENTS = "events"  # Stripe webhook events: the mirror, disputes, the mass-failure watch
# In the order a worker on several of them serves them: people, then work already started.
ALL_QUEUES = (ACTIONS, AUTOMATION, EVENTS, MAIL)

# Transient failures (Stripe, SMTP or IMAP unreachable) are retried with growing pauses.
STANDARD_RETRY = Retry(max=5, interval=[10, 30, 60, 300, 900])


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
        log.debug("job %s already exists; not enqueued again", job_id)
        return False
    return True
