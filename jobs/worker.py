"""The worker model production runs, and the tests and benches with it.

`billing-desk worker` is a supervisor with K long-lived worker processes forked from it (K is
the CPU count unless told). Each runs ``BillingDeskWorker``, RQ's ``SimpleWorker``: a job runs
in the worker process itself, so what a process builds once (the classifier, SQLAlchemy's
statement cache, the Stripe client) serves all its jobs. RQ's forking ``Worker`` forked a
work-horse per job instead, which rebuilt all of that for every job: 0.8 tickets/s where this
model does 13 on two cores (``bench/worker_models.py``; figures in ``bench/README.md``).

What the work-horse gave is kept:

- Timeouts: SIGALRM interrupts a job over its ``job_timeout`` (a timer thread off the main
  thread). A job stuck where SIGALRM cannot reach it (inside C code that holds the GIL) is
  killed by the supervisor once ``HARD_TIMEOUT_GRACE_SECONDS`` past its timeout.
- Crash isolation: a worker process that dies (SIGKILL, the OOM killer, a segfault) is
  replaced at once, and the job it was running is put back at the front of its queue at once,
  not after RQ's abandoned-job cleanup many minutes later. A job that has killed its worker
  ``MAX_REQUEUES + 1`` times (counted in ``job.meta``) goes to the FailedJobRegistry saying so.

The supervisor loads the classifier before it forks, so workers share its pages copy-on-write
and start in milliseconds (a replacement too), and it runs RQ's scheduler, which enqueues
delayed retries: one per supervisor, and RQ's per-queue locks make it one across machines.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.results import Result
from rq.scheduler import RQScheduler
from rq.timeouts import BaseDeathPenalty, TimerDeathPenalty, UnixSignalDeathPenalty
from rq.utils import now
from sqlalchemy.exc import SQLAlchemyError

from core import log_context, metrics
from core.errors import BillingDeskError
from jobs import inbound, plans, queues, runtime, schedule, stripe_events
from mail import classifier

log = logging.getLogger(__name__)

MAX_REQUEUES = 2  # a job that killed its worker runs again at most this many times
DEATHS_META_KEY = "worker_deaths"  # job.meta: how many worker processes died running it
HARD_TIMEOUT_GRACE_SECONDS = 60  # past job_timeout, as RQ's forking Worker allows its horse
TICK_SECONDS = 0.1  # how often the supervisor looks for dead workers
REQUEUE_RETRY_SECONDS = 1.0  # how often a dead worker's job is offered again to a Redis away
TIMEOUT_CHECK_SECONDS = 5.0
# How often the supervisor looks for plan steps whose job the queue lost (jobs.plans).
PLANS_RESUME_SECONDS = 60.0
QUICK_DEATH_SECONDS = 10.0  # idle workers dying younger than this, repeatedly: back off
MAX_BACKOFF_SECONDS = 30.0
BURST_START_FAILURES = 5  # in burst mode, give up after this many failed starts in a row
# A worker's exit status when RQ's loop ended unasked (it quits on a Redis timeout or an
# unexpected error): replaced like a crashed worker, with a pause if it keeps happening.
EXIT_QUIT_UNASKED = 3
# A worker's exit status when its connection to Redis failed under it: Redis's doing, not the
# job's, so the job is requeued without counting the death against it.
EXIT_REDIS_LOST = 4
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class BillingDeskWorker(SimpleWorker):
    """RQ's SimpleWorker, safe on any thread: SIGALRM timeouts and signal handlers on the main
    thread, a timer thread's timeouts and no handlers elsewhere (the browser tests' worker)."""

    executed_jobs = 0  # jobs this worker ran, however they ended

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run the job here, in this process (RQ's SimpleWorker), and count it."""
        self.executed_jobs += 1
        super().execute_job(job, queue)

    def perform_job(self, job: Job, queue: Queue) -> bool:
        """RQ's run of one job, every log line in it carrying the job's ID (the job functions
        add the ticket, action or email they work on)."""
        with log_context.bound(job_id=job.id):
            return bool(super().perform_job(job, queue))

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any) -> None:
        """RQ's bookkeeping of a finished job, counted."""
        super().handle_job_success(job, queue, started_job_registry)
        metrics.observe_job(queue.name, job.func_name, "finished")

    def handle_job_retry(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> None:
        """RQ's rescheduling of a job that asked for a retry, counted."""
        super().handle_job_retry(job, queue, *args, **kwargs)
        metrics.observe_job(queue.name, job.func_name, "retried")

    def handle_job_failure(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> None:
        """RQ's handling of a job that raised (retried while it has retries left), counted."""
        retried = job.should_retry and self._stopped_job_id != job.id
        super().handle_job_failure(job, queue, *args, **kwargs)
        metrics.observe_job(queue.name, job.func_name, "retried" if retried else "failed")

    @property
    def stop_requested(self) -> bool:
        """Whether SIGTERM or SIGINT asked this worker to stop."""
        return self._shutdown_requested_date is not None

    def work(self, *args: object, **kwargs: object) -> bool:
        """Work the queues (RQ's ``work``), timing jobs out the way this thread allows."""
        death_penalty: type[BaseDeathPenalty] = (
            UnixSignalDeathPenalty if _on_main_thread() else TimerDeathPenalty
        )
        self.death_penalty_class = death_penalty
        return super().work(*args, **kwargs)  # type: ignore[arg-type]

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """RQ's warm stop, remembered before RQ acts on it. An idle worker's stop is an
        exception raised out of the signal handler; one that lands inside a logging call (the
        worker logging the job it just took) is swallowed by logging's error handler, and
        without the flag that worker would work on until killed."""
        self._stop_requested = True
        super().request_stop(signum, frame)

    def _install_signal_handlers(self) -> None:
        # Only the main thread may set signal handlers; elsewhere the caller stops the loop.
        if _on_main_thread():
            super()._install_signal_handlers()


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def make_worker(
    rt: runtime.Runtime,
    name: str | None = None,
    queue_names: Sequence[str] = queues.ALL_QUEUES,
) -> BillingDeskWorker:
    """Our worker class on our queues (actions first), on the runtime's Redis."""
    return BillingDeskWorker([rt.queue(n) for n in queue_names], name=name, connection=rt.redis)


def drain_queues(rt: runtime.Runtime, logging_level: str = "INFO") -> None:
    """Run every queued job in this process until the queues are empty (tests, benchmarks):
    one worker of the production model, without the fork, as ``worker --burst`` runs it."""
    runtime.install(rt)
    _enqueue_due_jobs(rt.redis)
    make_worker(rt).work(burst=True, logging_level=logging_level)


def run_worker(
    rt: runtime.Runtime,
    *,
    processes: int | None = None,
    burst: bool = False,
    max_jobs: int | None = None,
    queue_names: Sequence[str] = queues.ALL_QUEUES,
    logging_level: str = "INFO",
) -> None:
    """Supervise ``processes`` worker processes (the CPU count by default) on ``queue_names``
    (every queue by default) until SIGTERM or SIGINT, or with ``burst`` until those queues are
    empty and every worker has stopped; with ``max_jobs`` a worker is replaced by a fresh one
    after that many jobs."""
    runtime.install(rt)
    logging.getLogger("rq.worker").setLevel(logging_level)
    if queues.MAIL in queue_names:
        # Load once, before forking: the workers share these pages and never load it
        # themselves. A pool without the mail queue never classifies and starts at once.
        classifier.load()
    # Objects made so far are never collected: a child's collector would otherwise write to
    # every one of them (its gc header) and copy the page it sits on (gc.freeze's docs).
    gc.freeze()
    Supervisor(
        rt,
        processes=processes or cpu_count(),
        burst=burst,
        max_jobs=max_jobs,
        queue_names=tuple(queue_names),
        logging_level=logging_level,
    ).run()


def cpu_count() -> int:
    """The CPUs this process may run on (a container's share, where it has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def requeue_job_of_dead_worker(
    connection: Redis, worker_name: str, *, cause: str, blame_job: bool = True
) -> str | None:
    """Deal with the job a worker that died was running: requeue it at the front of its queue,
    or, once it has killed ``MAX_REQUEUES + 1`` workers, fail it giving ``cause``; and record
    the worker's death. Without ``blame_job`` (the worker lost Redis) the death is not counted
    against the job. Returns the job's ID, or None if the worker was idle.

    Call it only for a worker known to be dead: a live worker's job would run twice.
    """
    dead = find_worker(connection, worker_name)
    if dead is None:
        return None
    job_id = dead.get_current_job_id()
    dead.register_death()
    if job_id is None:
        return None
    try:
        job = Job.fetch(job_id, connection=connection)
    except NoSuchJobError:
        return None
    if job.get_status() != JobStatus.STARTED:
        return None  # it was finished, failed or retried before the worker died
    queue = Queue(job.origin, connection=connection)
    deaths = int(job.meta.get(DEATHS_META_KEY, 0)) + (1 if blame_job else 0)
    job.meta[DEATHS_META_KEY] = deaths
    job.started_at = job.ended_at = None
    with connection.pipeline() as pipeline:
        pipeline.multi()  # one transaction; RQ's enqueue_job expects a caller's in MULTI
        _forget_executions(job, queue, pipeline)
        if deaths <= MAX_REQUEUES:
            log.warning(
                "job %s: its worker %s died (%s); requeued (%d of %d)",
                job.id,
                worker_name,
                cause,
                deaths,
                MAX_REQUEUES,
            )
            queue.enqueue_job(job, pipeline=pipeline, at_front=True)
        else:
            reason = (
                f"The worker process running this job died {deaths} times, the last time "
                f"{cause}; it was requeued {MAX_REQUEUES} times and is not requeued again."
            )
            log.error("job %s: %s", job.id, reason)
            job.ended_at = now()
            job.set_status(JobStatus.FAILED, pipeline=pipeline)
            job.save_meta()
            # What RQ records for a failed job: the registry entry and a failed Result.
            FailedJobRegistry(queue=queue).add(
                job, ttl=job.failure_ttl, exc_string=reason, pipeline=pipeline
            )
            Result.create_failure(
                job, job.failure_ttl, reason, worker_name=worker_name, pipeline=pipeline
            )
        pipeline.execute()
    return job.id


def _forget_executions(job: Job, queue: Queue, pipeline: Pipeline) -> None:
    """Take the job's runs out of the started registry, so RQ's abandoned-job cleanup never
    acts on them later (it would run or fail the job a second time)."""
    registry = queue.started_job_registry
    for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
        if job_id == job.id:
            Execution(execution_id, job_id, connection=job.connection).delete(job, pipeline)


def _enqueue_due_jobs(connection: Redis, queue_names: Sequence[str] = queues.ALL_QUEUES) -> None:
    """What RQ's scheduler does for a burst worker: enqueue the delayed jobs now due, once."""
    scheduler = RQScheduler(list(queue_names), connection=connection)
    if scheduler.acquire_locks():
        try:
            scheduler.enqueue_scheduled_jobs()
        finally:
            scheduler.release_locks()


@dataclass
class _Child:
    """One worker process."""

    name: str
    pid: int
    started: float
    kill_cause: str | None = None  # set when the supervisor killed it, and why


class Supervisor:
    """Forks the worker processes, replaces those that stop or die, requeues their jobs, and
    runs the scheduler; stops them warmly on SIGTERM or SIGINT (a second one hurries them)."""

    def __init__(
        self,
        rt: runtime.Runtime,
        *,
        processes: int,
        burst: bool,
        max_jobs: int | None,
        queue_names: tuple[str, ...] = queues.ALL_QUEUES,
        logging_level: str = "INFO",
    ) -> None:
        self.rt = rt
        self.processes = processes
        self.burst = burst
        self.max_jobs = max_jobs
        self.queue_names = queue_names
        self.logging_level = logging_level
        self.children: dict[int, _Child] = {}
        self.stopping = False
        self.serial = 0
        self.start_failures = 0
        self.next_start = 0.0  # monotonic time before which no worker is started (backoff)
        # Dead workers whose job could not be requeued yet (Redis was away): name -> (cause,
        # whether the death counts against the job).
        self.unrequeued: dict[str, tuple[str, bool]] = {}
        self.next_requeue_try = 0.0
        self.scheduler = RQScheduler(list(queue_names), connection=rt.redis)
        self.prefix = f"{socket.gethostname()}.{os.getpid()}"

    def run(self) -> None:
        """Supervise until stopped (or, in burst mode, until the work is done)."""
        log.info(
            "supervisor %d: %d worker process(es) on %s%s%s",
            os.getpid(),
            self.processes,
            ", ".join(self.queue_names),
            ", burst" if self.burst else "",
            f", each replaced after {self.max_jobs} jobs" if self.max_jobs else "",
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._request_stop)
        if self.burst:
            _enqueue_due_jobs(self.rt.redis, self.queue_names)
        else:
            self.scheduler.register_birth()
        last_schedule = last_timeout_check = 0.0
        self._resume_plans()
        last_resume = time.monotonic()
        try:
            while True:
                self._reap()
                self._requeue_pending()
                if self.stopping and not self.children:
                    break
                if self.burst and not self.children and not self._queued():
                    break
                self._start_missing()
                clock = time.monotonic()
                if not self.burst and not self.stopping and clock - last_schedule >= 1:
                    self._schedule()
                    last_schedule = clock
                if clock - last_timeout_check >= TIMEOUT_CHECK_SECONDS:
                    self._kill_stuck_jobs()
                    last_timeout_check = clock
                if not self.burst and clock - last_resume >= PLANS_RESUME_SECONDS:
                    self._resume_plans()
                    last_resume = clock
                time.sleep(TICK_SECONDS)
        finally:
            if not self.burst:
                with contextlib.suppress(RedisError):
                    self.scheduler.stop()
        log.info("supervisor %d: every worker process has stopped", os.getpid())

    # --- signals ------------------------------------------------------------------------

    def _request_stop(self, signum: int, _frame: FrameType | None) -> None:
        """Warm shutdown: each worker finishes its job and exits. A second signal is passed
        on too, and RQ takes it as a cold shutdown (unless it came within a second)."""
        if not self.stopping:
            log.info("supervisor: %s, stopping the workers", _signal_name(signum))
        self.stopping = True
        for child in list(self.children.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)

    # --- workers ------------------------------------------------------------------------

    def _start_missing(self) -> None:
        if self.stopping or time.monotonic() < self.next_start:
            return
        # In burst mode a worker that stopped is replaced only while there is work left.
        while len(self.children) < self.processes and (not self.burst or self._queued()):
            self._start_child()
            if time.monotonic() < self.next_start:
                return

    def _start_child(self) -> None:
        self.serial += 1
        name = f"{self.prefix}.{self.serial}"
        sys.stdout.flush()
        sys.stderr.flush()
        # Held back across the fork: the child must not run the supervisor's handlers.
        stops = {signal.SIGTERM, signal.SIGINT}
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        try:
            pid = os.fork()
        except OSError as exc:  # out of processes or memory: try again later
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            log.error("supervisor: cannot start a worker process: %s", exc)
            self.next_start = time.monotonic() + MAX_BACKOFF_SECONDS
            return
        if pid == 0:
            for sig in stops:  # until RQ installs its own, a stop ends this idle process
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os._exit(_child_main(self, name))
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.children[pid] = _Child(name, pid, time.monotonic())
        log.info("supervisor: started worker %s (pid %d)", name, pid)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self._on_exit(child, status)

    def _on_exit(self, child: _Child, status: int) -> None:
        lived = time.monotonic() - child.started
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            self.start_failures = 0
            return  # burst done, max_jobs reached or stopped: it left nothing behind
        if os.WIFSIGNALED(status):
            how = f"killed by {_signal_name(os.WTERMSIG(status))}"
        else:
            how = f"exited with status {os.WEXITSTATUS(status)}"
        cause = child.kill_cause or how
        blame = not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_REDIS_LOST)
        try:
            job_id = requeue_job_of_dead_worker(
                self.rt.redis, child.name, cause=cause, blame_job=blame
            )
        except RedisError as exc:
            # Tried again every second until Redis answers (_requeue_pending): RQ's own
            # abandoned-job cleanup would find the job only after its timeout and a minute.
            log.error("supervisor: could not requeue the job of worker %s yet: %s", child.name, exc)
            self.unrequeued[child.name] = (cause, blame)
            job_id = None
        log.warning(
            "supervisor: worker %s (pid %d) %s after %.1f s%s",
            child.name,
            child.pid,
            cause,
            lived,
            f", running job {job_id}" if job_id else "",
        )
        if job_id is None and lived < QUICK_DEATH_SECONDS and not self.stopping:
            # Idle workers dying young, again and again (Redis gone, a broken install): the
            # first is replaced at once, the next ones after growing pauses, not in a spin.
            self.start_failures += 1
            if self.start_failures > 1:
                delay = min(2.0 ** (self.start_failures - 2), MAX_BACKOFF_SECONDS)
                self.next_start = time.monotonic() + delay
            if self.burst and self.start_failures >= BURST_START_FAILURES:
                self.stopping = True
                raise BillingDeskError(
                    f"worker processes failed to start {self.start_failures} times in a row;"
                    " see the log above"
                )
        else:
            self.start_failures = 0

    def _requeue_pending(self) -> None:
        """Requeue, once Redis is back, the jobs of dead workers that it was away for."""
        if not self.unrequeued or time.monotonic() < self.next_requeue_try:
            return
        self.next_requeue_try = time.monotonic() + REQUEUE_RETRY_SECONDS
        for name, (cause, blame) in list(self.unrequeued.items()):
            try:
                job_id = requeue_job_of_dead_worker(
                    self.rt.redis, name, cause=cause, blame_job=blame
                )
            except RedisError:
                return  # still away
            del self.unrequeued[name]
            log.warning(
                "supervisor: Redis is back; worker %s's job %s dealt with", name, job_id or "none"
            )

    def _queued(self) -> bool:
        try:
            return any(self.rt.queue(name).count for name in self.queue_names)
        except RedisError:
            return True  # unknown: keep (or bring back) the workers, which wait for Redis

    # --- scheduler and timeouts -----------------------------------------------------------

    def _schedule(self) -> None:
        """One round of RQ's scheduler loop: hold the locks, enqueue delayed jobs now due."""
        try:
            if self.scheduler.should_reacquire_locks:
                self.scheduler.acquire_locks()
            self.scheduler.heartbeat()
            self.scheduler.enqueue_scheduled_jobs()
        except RedisError as exc:
            log.warning("supervisor: scheduler round failed: %s", exc)

    def _resume_plans(self) -> None:
        """Queue again the due steps of plans, the Stripe events and the stored emails whose job
        is gone (a web process that died between recording and queueing, a Redis that lost its
        data, a job lost on its way to a worker); and, where this supervisor serves the
        automation queue, the minute's SLA check."""
        try:
            plans.resume_plans(self.rt)
            if queues.EVENTS in self.queue_names:
                stripe_events.resume_events(self.rt)
            if queues.MAIL in self.queue_names:
                inbound.resume_inbound(self.rt)
            if queues.AUTOMATION in self.queue_names:
                schedule.enqueue_sla_check(self.rt)
                schedule.enqueue_drift_checks(self.rt)
        except (RedisError, BillingDeskError, SQLAlchemyError) as exc:
            log.warning("supervisor: could not look for plans to resume: %s", exc)

    def _kill_stuck_jobs(self) -> None:
        """SIGKILL a worker whose job outlived its timeout by the grace: SIGALRM did not stop
        it, so nothing in that process can."""
        for child in list(self.children.values()):
            if child.kill_cause:
                continue
            try:
                worker = find_worker(self.rt.redis, child.name)
                job_id = worker.get_current_job_id() if worker else None
                if job_id is None:
                    continue
                running = Job.fetch(job_id, connection=self.rt.redis)
            except (RedisError, NoSuchJobError):
                continue
            timeout = running.timeout or Queue.DEFAULT_TIMEOUT
            if timeout < 0 or running.started_at is None:
                continue
            limit = timedelta(seconds=timeout + HARD_TIMEOUT_GRACE_SECONDS)
            if now() - running.started_at > limit:
                child.kill_cause = (
                    f"killed by the supervisor: its job ran {HARD_TIMEOUT_GRACE_SECONDS} s "
                    f"past its {timeout} s timeout"
                )
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)


def _child_main(supervisor: Supervisor, name: str) -> int:
    """A forked worker process: its own connections, then RQ's loop; the exit status."""
    rt, burst, max_jobs = supervisor.rt, supervisor.burst, supervisor.max_jobs
    try:
        _exit_with_parent(os.getppid())
        random.seed()  # not the sequence every sibling inherited
        rt.after_fork()
        runtime.install(rt)
        worker = make_worker(rt, name=name, queue_names=supervisor.queue_names)
        worker.work(burst=burst, max_jobs=max_jobs, logging_level=supervisor.logging_level)
        finished = burst or (max_jobs is not None and worker.executed_jobs >= max_jobs)
        return 0 if finished or worker.stop_requested else EXIT_QUIT_UNASKED
    except (RedisConnectionError, RedisTimeoutError):
        log.exception("worker %s lost its connection to Redis", name)
        return EXIT_REDIS_LOST
    except BaseException:
        log.exception("worker %s failed", name)
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _exit_with_parent(parent: int) -> None:
    """Ask Linux to send SIGTERM (a warm stop) if the supervisor dies, so no orphaned worker
    goes on beside the supervisor that replaces it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def find_worker(connection: Redis, name: str) -> BillingDeskWorker | None:
    """The registered worker of this name (its ``pid``, ``get_current_job_id()``...), or None
    (a job's ``worker_name`` says which worker ran it)."""
    key = BillingDeskWorker.redis_worker_namespace_prefix + name
    if not connection.exists(key):
        # Not registered (yet, or any more). RQ's find_by_key would also take the name out
        # of the worker registry, and for a worker registering at this moment (the
        # supervisor looks at its children right after forking them) it would undo that
        # registration: the worker then runs unlisted.
        return None
    found = BillingDeskWorker.find_by_key(key, connection=connection)
    return found if isinstance(found, BillingDeskWorker) else None
