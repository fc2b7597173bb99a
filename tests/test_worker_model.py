"""`billing-desk worker` as production runs it: a supervisor and its worker processes.

Real processes on the real Redis: jobs run in the children; a child killed in the middle of a
job is replaced and the job runs again at once; a job that kills its worker every time ends
failed after a bounded number of requeues; a job over its timeout fails and its process goes
on; delayed jobs run through the one scheduler; ``--burst`` exits when the work is done (and
``--max-jobs`` recycles children on the way); SIGTERM stops cleanly, letting jobs finish.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import jobs_for_worker_tests as test_jobs
import pytest
from chaos.proxy import ProxySet
from conftest import settings_for
from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from sqlalchemy import select

from core.db import session_scope
from core.db.models import Ticket
from core.settings import Settings
from jobs import queues
from jobs.worker import DEATHS_META_KEY, MAX_REQUEUES, BillingDeskWorker, find_worker

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 90  # the supervisor imports torch and loads the classifier before forking
TIMEOUT = 30
ACTIONS_POOL = ("--processes", "1", "--queue", queues.ACTIONS)  # starts without the classifier


def wait_until(condition: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    """Poll until ``condition()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.05)


class WorkerProcess:
    """`billing-desk worker ARGS` as a child process, with the test settings in its env."""

    def __init__(self, settings: Settings, log_path: Path, *args: str) -> None:
        self.redis = Redis.from_url(settings.redis_url or "")
        self.log_path = log_path
        path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])  # the test jobs' module
        env = {**os.environ, **settings.to_env(), "PYTHONPATH": path}
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "helpdesk_app", "worker", *args],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # kill() takes the worker processes with it
            )
        self.prefix = f"{socket.gethostname()}.{self.process.pid}."

    def log(self) -> str:
        """What the processes wrote, for failure messages."""
        return self.log_path.read_text(errors="replace")[-6000:]

    def children(self) -> dict[str, int]:
        """Name -> pid of this supervisor's live workers, from RQ's worker registration."""
        workers = BillingDeskWorker.all(connection=self.redis)
        return {w.name: w.pid for w in workers if w.name.startswith(self.prefix) and w.pid}

    def wait_for_children(self, count: int, timeout: float = TIMEOUT) -> dict[str, int]:
        """Wait until ``count`` workers are registered; their pids."""
        deadline = time.monotonic() + timeout
        while len(self.children()) != count:
            assert self.process.poll() is None, f"the worker exited:\n{self.log()}"
            if time.monotonic() > deadline:
                registered = sorted(str(key) for key in self.redis.smembers("rq:workers"))
                keys = {
                    str(key): (self.redis.ttl(key), self.redis.hget(key, "death"))
                    for key in self.redis.keys("rq:worker:*")
                }
                registered.append(f"worker keys (ttl, death): {keys}")
                pytest.fail(
                    f"{count} workers with the prefix {self.prefix!r} not up within {timeout} s"
                    f" (registered: {registered}; ours: {self.children()}):\n{self.log()}"
                )
            time.sleep(0.05)
        return self.children()

    def kill(self) -> None:
        """SIGKILL the supervisor and its worker processes, whatever they are doing."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout: float = TIMEOUT) -> int:
        """SIGTERM, and the exit status once it has stopped."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the worker did not stop within {timeout} s:\n{self.log()}")


def ran_on(jobs: list[Job]) -> set[str | None]:
    """The names of the workers that ran these jobs."""
    for job in jobs:
        job.refresh()
    return {job.worker_name for job in jobs}


def wait_for_job(
    job: Job, status: JobStatus, worker: WorkerProcess, timeout: float = TIMEOUT
) -> None:
    """Wait until the job has this status."""
    wait_until(
        lambda: job.get_status() == status,
        f"job {job.id} {status} (it is {job.get_status()}):\n{worker.log()}",
        timeout,
    )


# --- one worker for the tests that do not stop it -------------------------------------------


@pytest.fixture(scope="class")
def pool_settings(database_url, redis_url, fake_stripe, imap_server, smtp_server) -> Settings:
    """The test settings, for the long-lived worker of TestOneWorkerForManyJobs."""
    return settings_for(database_url, redis_url, fake_stripe, imap_server, smtp_server)


@pytest.fixture(scope="class")
def pool(pool_settings: Settings, tmp_path_factory) -> Iterator[WorkerProcess]:
    """`billing-desk worker --processes 2`, running for a class of tests (stopped before the
    tests that start their own)."""
    Redis.from_url(pool_settings.redis_url or "").flushdb()
    log_path = tmp_path_factory.mktemp("pool") / "worker.log"
    worker = WorkerProcess(pool_settings, log_path, "--processes", "2")
    try:
        worker.wait_for_children(2, START_TIMEOUT)
    except BaseException:
        worker.stop()  # a pool left running would take the later tests' jobs
        raise
    yield worker
    assert worker.stop() == 0, worker.log()


@pytest.fixture
def queue(pool: WorkerProcess) -> Queue:
    """The mail queue on the pool's Redis."""
    return Queue(queues.MAIL, connection=pool.redis)


@pytest.fixture
def marks(tmp_path: Path) -> str:
    """Where the test jobs leave their markers."""
    return str(tmp_path)


class TestOneWorkerForManyJobs:
    """Tests sharing one `billing-desk worker --processes 2`; none of them stops it."""

    def test_jobs_run_to_completion_in_the_child_processes(self, pool, queue, marks):
        children = pool.wait_for_children(2)

        enqueued = [queue.enqueue(test_jobs.record, marks, f"job{n}") for n in range(6)]
        for job in enqueued:
            wait_for_job(job, JobStatus.FINISHED, pool)

        assert ran_on(enqueued) <= set(children)
        ran_in = {pid for n in range(6) for pid in test_jobs.pids(marks, f"job{n}", "done")}
        assert ran_in <= set(children.values())
        assert pool.process.pid not in ran_in  # never in the supervisor itself

    def test_a_pool_on_every_queue_inherits_the_classifier_loaded_before_the_fork(
        self, pool, marks
    ):
        actions = Queue(queues.ACTIONS, connection=pool.redis)
        job = actions.enqueue(test_jobs.record_classifier_state, marks, "any")
        wait_for_job(job, JobStatus.FINISHED, pool)
        assert Path(marks, "any.classifier").read_text() == "loaded"

    def test_a_child_killed_mid_job_is_replaced_and_the_job_runs_again_at_once(
        self, pool, queue, marks
    ):
        pool.wait_for_children(2)
        job = queue.enqueue(test_jobs.sleep_first_time, marks, "long", 120)
        wait_until(lambda: test_jobs.pids(marks, "long", "started"), "the job started")
        job.refresh()
        victim = find_worker(pool.redis, job.worker_name or "")
        assert victim is not None and victim.pid == test_jobs.pids(marks, "long", "started")[0]

        os.kill(victim.pid, signal.SIGKILL)
        wait_for_job(job, JobStatus.FINISHED, pool)  # far sooner than the 120 s sleep

        job.refresh()
        assert job.meta[DEATHS_META_KEY] == 1
        assert job.worker_name != victim.name
        assert test_jobs.pids(marks, "long", "done") != [victim.pid]
        children = pool.wait_for_children(2)  # the killed one was replaced
        assert victim.name not in children and victim.pid not in children.values()
        assert job.id not in queue.started_job_registry.get_job_ids(cleanup=False)

    def test_a_job_that_always_kills_its_worker_fails_after_bounded_requeues(
        self, pool, queue, marks
    ):
        pool.wait_for_children(2)
        killer = queue.enqueue(test_jobs.kill_own_process, marks, "killer")
        others = [queue.enqueue(test_jobs.record, marks, f"other{n}") for n in range(4)]

        wait_for_job(killer, JobStatus.FAILED, pool)
        for job in others:
            wait_for_job(job, JobStatus.FINISHED, pool)

        runs = test_jobs.pids(marks, "killer", "started")
        assert len(runs) == MAX_REQUEUES + 1 and len(set(runs)) == len(runs)  # a new process each
        assert killer.id in FailedJobRegistry(queue=queue).get_job_ids()
        result = killer.latest_result()
        assert result is not None
        assert "died 3 times" in result.exc_string and "SIGKILL" in result.exc_string
        assert "not requeued again" in result.exc_string
        time.sleep(0.5)  # a crash loop would show now
        assert killer.get_status() == JobStatus.FAILED
        assert len(test_jobs.pids(marks, "killer", "started")) == MAX_REQUEUES + 1
        pool.wait_for_children(2)

    def test_a_job_over_its_timeout_fails_and_its_process_goes_on(self, pool, queue, marks):
        pool.wait_for_children(2)
        slow = queue.enqueue(test_jobs.sleep_then_record, marks, "slow", 30, job_timeout=1)

        wait_for_job(slow, JobStatus.FAILED, pool, timeout=15)

        result = slow.latest_result()
        assert result is not None and "JobTimeoutException" in result.exc_string
        assert not test_jobs.pids(marks, "slow", "done")
        slow.refresh()
        assert DEATHS_META_KEY not in slow.meta
        ran_in = test_jobs.pids(marks, "slow", "started")
        assert ran_in and ran_in[0] in pool.children().values()  # same process, still working
        after = queue.enqueue(test_jobs.record, marks, "after")
        wait_for_job(after, JobStatus.FINISHED, pool)

    def test_delayed_jobs_run_through_exactly_one_scheduler(self, pool, queue, marks):
        later = queue.enqueue_in(timedelta(seconds=1), test_jobs.record, marks, "later")

        wait_for_job(later, JobStatus.FINISHED, pool, timeout=15)

        holders = {pool.redis.get(f"rq:scheduler-lock:{name}") for name in queues.ALL_QUEUES}
        assert len(holders) == 1 and None not in holders
        assert len(pool.redis.keys("rq:scheduler:*")) == 1


# --- workers the tests stop ----------------------------------------------------------------


def test_sigterm_lets_the_running_job_finish_and_stops_cleanly(settings, tmp_path):
    redis = Redis.from_url(settings.redis_url or "")
    redis.flushdb()
    worker = WorkerProcess(settings, tmp_path / "worker.log", "--processes", "2")
    try:
        worker.wait_for_children(2, START_TIMEOUT)
        queue = Queue(queues.ACTIONS, connection=redis)
        job = queue.enqueue(test_jobs.sleep_then_record, str(tmp_path), "job", 2)
        wait_until(lambda: test_jobs.pids(str(tmp_path), "job", "started"), "the job started")

        returncode = worker.stop()

        assert returncode == 0, worker.log()
        assert job.get_status() == JobStatus.FINISHED  # a warm shutdown
        assert test_jobs.pids(str(tmp_path), "job", "done")
        assert worker.children() == {}  # every worker registered its death
        assert not redis.keys("rq:scheduler-lock:*")  # and the scheduler let go
    finally:
        worker.stop()


def test_a_pool_for_the_actions_queue_leaves_mail_alone_and_never_loads_the_classifier(
    settings, rt, tmp_path
):
    """`--queue actions`: agents' actions get workers of their own, which no mail backlog
    holds up; they never classify, so they do not load the classifier either."""
    actions = Queue(queues.ACTIONS, connection=rt.redis)
    mail = Queue(queues.MAIL, connection=rt.redis)
    action = actions.enqueue(test_jobs.record_classifier_state, str(tmp_path), "action")
    inbound = mail.enqueue(test_jobs.record, str(tmp_path), "inbound")

    worker = WorkerProcess(settings, tmp_path / "worker.log", "--burst", "--queue", "actions")
    try:
        returncode = worker.process.wait(START_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"--burst did not exit:\n{worker.log()}")

    assert returncode == 0, worker.log()
    assert action.get_status() == JobStatus.FINISHED
    assert (tmp_path / "action.classifier").read_text() == "absent"
    assert inbound.get_status() == JobStatus.QUEUED and mail.count == 1
    assert test_jobs.pids(str(tmp_path), "inbound", "done") == []


def test_a_click_on_the_actions_pool_never_waits_behind_a_mail_job(settings, rt, tmp_path):
    """Agents' actions on a pool of their own: a click runs while the mail pool is in the middle
    of a long job (one worker on both queues would make it wait until that job ends)."""
    mail = WorkerProcess(settings, tmp_path / "mail.log", "--queue", "mail", "--processes", "1")
    actions = WorkerProcess(
        settings, tmp_path / "actions.log", "--queue", "actions", "--processes", "1"
    )
    try:
        Queue(queues.MAIL, connection=rt.redis).enqueue(
            test_jobs.sleep_then_record, str(tmp_path), "triage", 60
        )
        wait_until(
            lambda: test_jobs.pids(str(tmp_path), "triage", "started"),
            f"the mail job started:\n{mail.log()}",
            START_TIMEOUT,
        )
        click = Queue(queues.ACTIONS, connection=rt.redis).enqueue(
            test_jobs.record, str(tmp_path), "click"
        )
        wait_for_job(click, JobStatus.FINISHED, actions, START_TIMEOUT)

        assert test_jobs.pids(str(tmp_path), "triage", "done") == []  # still running
        assert test_jobs.pids(str(tmp_path), "click", "done")[0] in actions.children().values()
    finally:
        mail.kill()  # its job would sleep on; nothing of it is looked at
        assert actions.stop() == 0, actions.log()


def test_burst_exits_when_the_work_is_done_and_max_jobs_recycles_children(
    settings, rt, mailbox_client, poll_mail, tmp_path
):
    mailbox_client.append(
        "INBOX",
        b"From: Pat <pat@example.com>\r\nTo: billing@example.com\r\n"
        b"Subject: Card update\r\nMessage-ID: <burst-1@example.com>\r\n\r\n"
        b"Hello, how do I update the card on file? It expires next month.\r\n",
    )
    assert poll_mail().stored == 1  # queues the inbound job: the classifier runs in a child
    queue = Queue(queues.MAIL, connection=rt.redis)
    enqueued = [queue.enqueue(test_jobs.record, str(tmp_path), f"job{n}") for n in range(6)]

    worker = WorkerProcess(
        settings, tmp_path / "worker.log", "--burst", "--processes", "2", "--max-jobs", "2"
    )
    try:
        returncode = worker.process.wait(START_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"--burst did not exit:\n{worker.log()}")

    assert returncode == 0, worker.log()
    assert all(job.get_status() == JobStatus.FINISHED for job in enqueued)
    # Six of them, two per child at most: at least three children ran them.
    assert len(ran_on(enqueued)) >= 3
    assert queue.count == 0 and worker.children() == {}
    with session_scope(rt.session_factory) as session:
        ticket = session.scalars(select(Ticket)).one()
        assert ticket.category is not None and ticket.category_confidence is not None


@contextlib.contextmanager
def redis_behind_a_proxy(settings: Settings) -> Iterator[tuple[ProxySet, Redis, Settings]]:
    """The test Redis (flushed) behind the chaos fault proxy: the proxies, a client through
    them, and settings through them."""
    proxies = ProxySet()
    direct = Redis.from_url(settings.redis_url or "")
    direct.flushdb()
    upstream = direct.connection_pool.connection_kwargs
    db = int(upstream.get("db", 0))
    port = proxies.add("redis", int(upstream.get("port", 6379)), str(upstream.get("host")))
    proxied = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{port}/{db}")
    try:
        yield proxies, Redis(host="127.0.0.1", port=port, db=db), proxied
    finally:
        proxies.clear()
        proxies.stop()


def test_a_dead_workers_job_is_requeued_once_redis_is_back(settings, tmp_path):
    """A worker died while Redis was away (RQ's loop quits on a lost connection, so the two
    come together): the supervisor could not requeue its job then, and tries again until
    Redis answers. RQ's own cleanup would find the job only after its timeout (an hour here)
    and a minute. Found by `make chaos` (seed 424242)."""
    with redis_behind_a_proxy(settings) as (proxies, through, proxied):
        worker = WorkerProcess(proxied, tmp_path / "worker.log", *ACTIONS_POOL)
        try:
            worker.wait_for_children(1, START_TIMEOUT)
            job = Queue(queues.ACTIONS, connection=through).enqueue(
                test_jobs.sleep_first_time, str(tmp_path), "job", 3600, job_timeout=3600
            )
            wait_until(lambda: test_jobs.pids(str(tmp_path), "job", "started"), "job started")
            proxies.on_loop(lambda: proxies.proxies["redis"].cut(3600))  # Redis goes away
            (worker_pid,) = test_jobs.pids(str(tmp_path), "job", "started")
            os.kill(worker_pid, signal.SIGKILL)
            wait_until(lambda: "could not requeue the job" in worker.log(), "requeue failed")
            proxies.clear()  # Redis is back

            wait_for_job(job, JobStatus.FINISHED, worker, START_TIMEOUT)
            assert len(test_jobs.pids(str(tmp_path), "job", "started")) == 2
            assert len(test_jobs.pids(str(tmp_path), "job", "done")) == 1
            job.refresh()
            assert job.meta.get(DEATHS_META_KEY) == 1
        finally:
            proxies.clear()
            worker.stop()


def test_a_worker_that_lost_redis_is_not_a_death_the_job_is_blamed_for(settings, tmp_path):
    """Redis went away under a worker running a job that two dead workers had run before
    (killed from outside): the worker gives up, the job is requeued and finishes, instead of
    failing for good as a job that kills its workers. Found by `make chaos` (seed 202: an
    email killed twice by the monkey, then once by a Redis reset, was never triaged)."""
    with redis_behind_a_proxy(settings) as (proxies, through, proxied):
        worker = WorkerProcess(proxied, tmp_path / "worker.log", *ACTIONS_POOL)
        try:
            worker.wait_for_children(1, START_TIMEOUT)
            job = Queue(queues.ACTIONS, connection=through).enqueue(
                test_jobs.sleep_first_time,
                str(tmp_path),
                "job",
                3,
                meta={DEATHS_META_KEY: MAX_REQUEUES},
            )
            wait_until(lambda: test_jobs.pids(str(tmp_path), "job", "started"), "job started")
            proxies.on_loop(lambda: proxies.proxies["redis"].cut(3600))  # Redis goes away
            wait_until(lambda: "could not requeue the job" in worker.log(), "the worker gave up")
            proxies.clear()  # Redis is back

            wait_for_job(job, JobStatus.FINISHED, worker, START_TIMEOUT)
            assert len(test_jobs.pids(str(tmp_path), "job", "started")) == 2
            job.refresh()
            assert job.meta.get(DEATHS_META_KEY) == MAX_REQUEUES  # not blamed
        finally:
            proxies.clear()
            worker.stop()


def test_looking_a_worker_up_never_changes_the_worker_registry(redis_url):
    """The supervisor looks its children up right after forking them. RQ's find_by_key takes
    a name whose key it does not find out of the registry, which for a child registering at
    that moment undid its registration (it then ran unlisted); find_worker only reads."""
    redis = Redis.from_url(redis_url)
    redis.flushdb()
    redis.sadd("rq:workers", "rq:worker:registering")  # listed, its hash not visible yet

    assert find_worker(redis, "registering") is None

    assert redis.smembers("rq:workers") == {b"rq:worker:registering"}


def test_a_stop_whose_exception_was_swallowed_still_stops_the_worker(redis_url, tmp_path):
    """SIGTERM on an idle worker raises StopRequested out of the signal handler; landing in a
    logging call, logging's error handler swallows it (seen when the stop met the worker
    logging the job it had just taken: it worked on until killed). The stop is remembered,
    so the loop ends at its next turn and takes no further job."""
    from rq.exceptions import StopRequested

    redis = Redis.from_url(redis_url)
    redis.flushdb()
    queue = Queue(queues.ACTIONS, connection=redis)
    job = queue.enqueue(test_jobs.record, str(tmp_path), "after-stop")
    worker = BillingDeskWorker([queue], connection=redis)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:  # RQ installs its handlers in this (pytest's) process: put pytest's back after
        with contextlib.suppress(StopRequested):  # what logging.Handler.handleError does
            worker.request_stop(signal.SIGTERM, None)
        worker.work(burst=True)
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)

    assert worker.executed_jobs == 0
    assert job.get_status(refresh=True) == JobStatus.QUEUED
    assert not test_jobs.pids(str(tmp_path), "after-stop", "done")
