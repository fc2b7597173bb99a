"""`make bench`: every benchmark in bench/, each figure beside a reference measured in the same
run, as one table in bench/RESULTS.md (also printed).

    .venv/bin/python -m bench [--quick] [--only ingest,webhooks,...] [--output FILE]

The full run takes about 10 minutes on two cores; ``--quick`` is a short run (small counts,
about 3 minutes) written to bench/RESULTS-quick.md unless ``--output`` says otherwise. Each
bench's own output goes to a log file in a scratch directory (named at the start). Benches
only measure: nothing here asserts a time. A bench that fails leaves a row saying so and the
others still run.
"""

from __future__ import annotations

import os

# The classifier's speed is measured on one core (bench/classifier.py): the BLAS libraries
# read these when they load. Only this process gets them: the product's processes the
# benches start are left with the machine's defaults (they are taken off again below).
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_SET_HERE = [name for name in _ONE_THREAD if name not in os.environ]
for _name in _SET_HERE:
    os.environ[_name] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import psutil  # noqa: E402

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))  # the scripts import each other by module name, as when run alone
sys.path.insert(0, str(ROOT))

import action_latency  # noqa: E402
import classifier as classifier_bench  # noqa: E402
import ingest  # noqa: E402
import jobs_per_second  # noqa: E402
import mail_to_refund  # noqa: E402
import resolutions  # noqa: E402
import sidebar_render  # noqa: E402
import webhooks  # noqa: E402
from figures import Row, median, nearest_rank, render  # noqa: E402

for _name in _SET_HERE:
    os.environ.pop(_name, None)


@dataclass(frozen=True)
class Sizes:
    """How much each bench does: the full run's or --quick's."""

    classifier_repeat: int
    sidebar_runs: int
    webhook_events: int
    reconcile_objects: int
    noop_jobs: int
    job_runs: int
    ingest_emails: int
    latency_emails: int
    backlog: int
    click_emails: int
    clicks: int
    idle_clicks: int
    refunds: int
    refund_backlog: int


FULL = Sizes(3, 30, 2000, 300, 500, 3, 300, 100, 200, 200, 10, 5, 20, 200)
QUICK = Sizes(1, 8, 400, 40, 200, 1, 60, 12, 24, 40, 3, 3, 5, 40)
STRIPE_DELAY = 0.1  # seconds: about one real Stripe API round trip


def ms(seconds: float) -> float:
    """Seconds as milliseconds."""
    return seconds * 1000


# --- each bench's rows ----------------------------------------------------------------------


def classifier_rows(sizes: Sizes) -> list[Row]:
    """Quality on bitext (and our held-out split) and speed, beside keyword rules."""
    eval_dir = ROOT.parent / "shared" / "eval"
    f = classifier_bench.measure(eval_dir, sizes.classifier_repeat)
    rows = []
    for name in f.ours:
        ours, keywords, majority = f.ours[name], f.keywords[name], f.majority[name]
        label = f.majority_label[name]
        what = f"{name} ({f.texts[name]} texts)"
        if name == "held-out":
            what = f"our corpus's held-out split ({f.texts[name]} emails, train-split model)"
        constant = f"majority class ({label}): macro-F1 {majority.macro_f1:.3f}"
        rows.append(
            Row(
                "classifier",
                f"macro-F1, {what}",
                ours.macro_f1,
                keywords.macro_f1,
                "keyword rules (bench/keyword_baseline.py)",
                "macro-F1",
                "higher",
                constant,
            )
        )
        rows.append(
            Row(
                "classifier",
                f"accuracy, {what}",
                ours.accuracy,
                keywords.accuracy,
                "keyword rules",
                "share right",
                "higher",
                f"majority class: accuracy {majority.accuracy:.3f}",
            )
        )
    rows.append(
        Row(
            "classifier",
            "speed, one by one, one core (held-out emails)",
            f.single_per_second,
            f.keywords_per_second,
            "keyword rules, one by one",
            "emails/s",
            "higher",
            f"ours batched: {f.batched_per_second:.0f} emails/s",
        )
    )
    return rows


def sidebar_rows(sizes: Sizes) -> list[Row]:
    """The sidebar page's render, overlapped Stripe requests beside serial ones."""
    variants = tuple(
        sidebar_render.Variant(delay, serial)
        for delay in (0.0, STRIPE_DELAY)
        for serial in (False, True)
    )
    run = sidebar_render.run(sizes.sidebar_runs, variants=variants, endpoints=("page",))
    rows = []
    for delay in (0.0, STRIPE_DELAY):
        ours = run.measured[sidebar_render.Variant(delay, False)]["page"]
        serial = run.measured[sidebar_render.Variant(delay, True)]["page"]
        where = (
            f"fake Stripe + {ms(delay):.0f} ms per request (delaying proxy)"
            if delay
            else "fake Stripe on loopback, no added delay"
        )
        for name, fraction in (("median", 0.5), ("p95", 0.95)):
            rows.append(
                Row(
                    "sidebar",
                    f"`GET /sidebar/tickets/<id>` render {name}, {where}",
                    ms(nearest_rank(ours.seconds, fraction)),
                    ms(nearest_rank(serial.seconds, fraction)),
                    "the same requests one after another (bench-only serial executor)",
                    "ms",
                    "lower",
                    f"{run.charges} charges, {sizes.sidebar_runs} renders",
                )
            )
        rows.append(
            Row(
                "sidebar",
                f"Stripe requests per render, {where}",
                median([float(n) for n in ours.requests_per_render]),
                median([float(n) for n in serial.requests_per_render]),
                "serial calls",
                "requests",
                "lower",
                "same requests; only their overlap differs",
            )
        )
    return rows


def webhook_rows(sizes: Sizes) -> list[Row]:
    """Acknowledgements beside a minimal verifying endpoint; reconcile beside listing."""
    f = webhooks.measure(sizes.webhook_events, 4, sizes.reconcile_objects)
    reference = "minimal Flask app: stripe-python `construct_event`, 200 (same werkzeug server)"
    refused = f"non-200: ours {f.ours.refused}, reference {f.reference.refused}"
    return [
        Row(
            "webhooks",
            f"Stripe webhook acknowledgements, {f.ours.deliveries} signed, 4 senders",
            f.ours.per_second,
            f.reference.per_second,
            reference,
            "events/s",
            "higher",
            f"{refused}; one worker then handled {f.handled_per_second:.0f} events/s",
        ),
        Row(
            "webhooks",
            "acknowledgement p99",
            f.ours.p99_ms,
            f.reference.p99_ms,
            reference,
            "ms",
            "lower",
            f"p50 ours {f.ours.p50_ms:.1f}, reference {f.reference.p50_ms:.1f} ms",
        ),
        Row(
            "webhooks",
            f"reconcile into an empty mirror ({f.reconcile_objects} objects)",
            f.reconcile_per_second,
            f.listing_per_second,
            "the same objects only listed from the fake Stripe (stored nowhere)",
            "objects/s",
            "higher",
            "",
        ),
    ]


def jobs_rows(sizes: Sizes) -> list[Row]:
    """No-op jobs per second per worker process."""
    f = jobs_per_second.measure(sizes.noop_jobs, runs=sizes.job_runs)
    ours = f["ours"]
    rows = []
    for model, name in (
        ("rq-fork", "`rq worker` (RQ's forking Worker)"),
        ("rq-simple", "`rq worker --worker-class rq.worker.SimpleWorker`"),
    ):
        other = f[model]
        rows.append(
            Row(
                "jobs",
                f"no-op jobs per second, one worker ({sizes.noop_jobs} jobs, steady, median of "
                f"{sizes.job_runs} runs)",
                ours.steady_per_second,
                other.steady_per_second,
                name,
                "jobs/s",
                "higher",
                f"wall with start-up: ours {ours.wall_seconds:.1f} s, "
                f"{model} {other.wall_seconds:.1f} s",
            )
        )
    return rows


def ingest_rows(sizes: Sizes) -> list[Row]:
    """IMAP to stored and to classified ticket beside the loops and django-helpdesk."""
    f = ingest.measure(sizes.ingest_emails)
    stored = f"IMAP → stored mail ({f.emails} emails)"
    classified = f"IMAP → classified ticket ({f.emails} emails)"
    django_note = f"{f.django_helpdesk_tickets} tickets; {f.django_helpdesk_note}"
    not_run = "" if f.django_helpdesk is not None else f.django_helpdesk_note
    return [
        Row(
            "ingest",
            stored + ", our poller",
            f.ours_stored,
            f.naive_stored,
            "(a) one FETCH per message, INSERT+COMMIT each",
            "emails/s",
            "higher",
        ),
        Row(
            "ingest",
            stored + ", our poller",
            f.ours_stored,
            f.batched_stored,
            "(b) one FETCH of 100 UIDs, one bulk INSERT",
            "emails/s",
            "higher",
        ),
        Row(
            "ingest",
            stored + ", our poller",
            f.ours_stored,
            f.django_helpdesk,
            "(c) django-helpdesk `process_email` (→ its ticket, unclassified)",
            "emails/s",
            "higher",
            django_note,
            not_run,
        ),
        Row(
            "ingest",
            classified + ", `poll-mail --once` + `worker --processes 2`, steady",
            f.ours_classified,
            f.naive_classified,
            "(a) + parse + `mail.classifier` per message",
            "emails/s",
            "higher",
            f"ours with the workers' start-up: {f.ours_classified_wall:.1f}/s; ours also looks "
            f"the sender up in Stripe, plans and runs the plans: CPU per email "
            f"{f.ours_cpu_ms:.0f} ms in our workers, {f.stripe_cpu_ms:.0f} ms in the fake Stripe",
        ),
        Row(
            "ingest",
            classified + ", steady",
            f.ours_classified,
            f.django_helpdesk,
            "(c) django-helpdesk `process_email`",
            "emails/s",
            "higher",
            django_note,
            not_run,
        ),
    ]


def resolution_rows(sizes: Sizes) -> list[Row]:
    """Arrival to closed through the production processes, beside a bare store+classify."""
    database_url = os.environ.get("DATABASE_URL")  # PostgreSQL: a scratch database per phase
    f = resolutions.measure(sizes.latency_emails, 1.0, sizes.backlog, database_url=database_url)
    bare = f.bare_store_classify
    reference = "the same email's bare APPEND → FETCH, INSERT, classify (no IDLE wait)"
    stored = (
        f"stored → closed median {median(f.stored_to_closed):.2f} s, p95 "
        f"{nearest_rank(f.stored_to_closed, 0.95):.2f} s; {f.late_stores} stored > 0.5 s late"
        if f.stored_to_closed
        else ""
    )
    closed = f"{f.closed}/{f.emails} closed"
    return [
        Row(
            "resolutions",
            f"arrival → closed median, automatic resolutions, one a second ({closed})",
            median(f.arrival_to_closed) if f.arrival_to_closed else None,
            median(bare) if bare else None,
            reference,
            "s",
            "lower",
            stored,
        ),
        Row(
            "resolutions",
            "arrival → closed p95",
            nearest_rank(f.arrival_to_closed, 0.95) if f.arrival_to_closed else None,
            nearest_rank(bare, 0.95) if bare else None,
            reference,
            "s",
            "lower",
            "polling without IDLE (IMAP_POLL_INTERVAL 60 s) would wait 30 s at the median",
        ),
        Row(
            "resolutions",
            f"resolutions per minute, one worker process, backlog of {f.backlog} "
            f"({f.backlog_closed} closed)",
            f.per_minute,
            60 / (sum(bare) / len(bare)) if bare else None,
            "the bare store+classify loop's rate, one process",
            "per minute",
            "higher",
            f"first APPEND → last close: {f.per_minute_whole or 0:.0f}/min",
        ),
    ]


def click_rows(sizes: Sizes) -> list[Row]:
    """An agent's click during a triage backlog beside the same click after it."""
    f = action_latency.measure(sizes.click_emails, sizes.clicks, ("procfile",), sizes.idle_clicks)[
        "procfile"
    ]
    reference = "the same click once the backlog is done (same processes)"
    return [
        Row(
            "clicks",
            f"agent's note: confirm → step done, median, during a {sizes.click_emails}-email "
            "backlog (Procfile workers)",
            ms(f["median"]),
            ms(f["idle_median"]),
            reference,
            "ms",
            "lower",
            f"{f['backlog']:.0f} emails still queued at the median click; backlog "
            f"{f['tickets_per_second']:.1f} tickets/s",
        ),
        Row(
            "clicks",
            "the same, max",
            ms(f["max"]),
            ms(f["idle_max"]),
            reference,
            "ms",
            "lower",
        ),
    ]


def refund_rows(sizes: Sizes) -> list[Row]:
    """The in-process poll + drain loop of bench/mail_to_refund.py."""
    f = mail_to_refund.measure(sizes.refunds, sizes.refund_backlog)
    return [
        Row(
            "mail→refund",
            f"double charge → refund, email, closed; one poll + in-process drain "
            f"({f.resolved}/{f.refunds} resolved), median",
            ms(median(f.latencies)),
            ms(median(f.empty_cycles)),
            "the same poll + drain with nothing to do",
            "ms",
            "lower",
            f"p95 {ms(nearest_rank(f.latencies, 0.95)):.0f} ms",
        ),
        Row(
            "mail→refund",
            f"triage, one in-process worker, backlog of {f.backlog} (no Stripe customer)",
            f.triage_per_second,
            f.classify_per_second,
            "the same emails through `mail.classifier` alone",
            "emails/s",
            "higher",
            f"poll + store {f.poll_per_second:.0f} emails/s",
        ),
    ]


BENCHES: dict[str, Callable[[Sizes], list[Row]]] = {
    "classifier": classifier_rows,
    "sidebar": sidebar_rows,
    "webhooks": webhook_rows,
    "jobs": jobs_rows,
    "ingest": ingest_rows,
    "resolutions": resolution_rows,
    "clicks": click_rows,
    "refund": refund_rows,
}


# --- the run --------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (Linux), else the platform's word for it."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def git(*args: str) -> str:
    """One git command's output in the checkout, or '' when git is not there."""
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return done.stdout.strip()


def others() -> tuple[float, int]:
    """The 1-minute load average and how many Python processes that are not ours run."""
    mine = {os.getpid(), *(c.pid for c in psutil.Process().children(recursive=True))}
    count = 0
    for process in psutil.process_iter(["pid", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["pid"] not in mine and any("python" in part for part in cmdline[:1]):
            count += 1
    return os.getloadavg()[0], count


def header(started: datetime.datetime, quick: bool, loads: list[tuple[float, int]]) -> str:
    """What the figures were measured on."""
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = [
        line[3:]
        for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
        if not line[3:].startswith("bench/")
    ]
    tree = (
        f" plus uncommitted changes to {len(changed)} tracked files outside bench/"
        if changed
        else ""
    )
    database = (
        "PostgreSQL at DATABASE_URL for webhooks and resolutions, SQLite for the others"
        if "postgres" in os.environ.get("DATABASE_URL", "")
        else "SQLite"
    )
    redis = "the Redis at REDIS_URL" if os.environ.get("REDIS_URL") else "embedded Redis"
    peak_load = max(load for load, _ in loads)
    peak_others = max(count for _, count in loads)
    shared = (
        f" **The machine was shared while this ran** (load average up to {peak_load:.1f} on "
        f"{os.cpu_count()} CPUs, up to {peak_others} other Python processes): figures are noisy."
        if peak_others or peak_load > (os.cpu_count() or 1)
        else ""
    )
    return (
        f"# Benchmark results{' (quick run)' if quick else ''}\n\n"
        f"{started:%Y-%m-%d %H:%M} UTC; {os.cpu_count()} CPUs ({cpu_model()}); Python "
        f"{platform.python_version()}; commit {commit}{tree}; {database}, {redis}; "
        f"`python -m bench{' --quick' if quick else ''}`.{shared}\n\n"
        "Every figure stands beside a reference measured in the same run. **ours/ref.** is "
        "ours divided by the reference; **better** says which direction is better for that "
        "unit, and **verdict** applies it (level: within 5 %). Why we are slower where we "
        'are: bench/README.md, "Where we are slower than the reference".\n'
    )


def main() -> None:
    """Run the benches, write the table, print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a short run")
    parser.add_argument("--only", default="", help=f"comma-separated, of: {', '.join(BENCHES)}")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    output = args.output or BENCH / ("RESULTS-quick.md" if args.quick else "RESULTS.md")
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHES)
    unknown = set(chosen) - set(BENCHES)
    if unknown:
        raise SystemExit(f"unknown bench: {', '.join(sorted(unknown))}")
    log_path = Path(tempfile.mkdtemp(prefix="bench-run-")) / "bench.log"
    started = datetime.datetime.now(datetime.UTC)
    print(f"benches: {', '.join(chosen)}; their own output in {log_path}", flush=True)
    rows: list[Row] = []
    loads = [others()]
    console = sys.stdout
    # One log for the whole run, open to the end: loggers the benches set up keep writing to
    # the stream they were given.
    with (
        open(log_path, "w", buffering=1) as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        for name in chosen:
            began = time.perf_counter()
            print(f"\n===== {name} =====", flush=True)
            console.write(f"  {name} ...")
            console.flush()
            try:
                rows.extend(BENCHES[name](sizes))
                outcome = "done"
            except (Exception, SystemExit) as exc:  # a failed bench leaves a row; the rest run
                traceback.print_exc()
                reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
                rows.append(Row(name, "failed", None, None, "", "", "", f"failed: {reason}"))
                outcome = f"FAILED ({reason})"
            loads.append(others())
            console.write(f" {outcome} in {time.perf_counter() - began:.0f} s\n")
            console.flush()
    table = header(started, args.quick, loads) + "\n" + render(rows) + "\n"
    output.write_text(table)
    print()
    print(table)
    print(f"written to {output}")


if __name__ == "__main__":
    main()
