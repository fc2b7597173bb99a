"""The `billing-desk` command: one composition root for every process."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from core.db import check_connection, make_engine, upgrade
from core.domain import HelpdeskName
from core.errors import BillingDeskError, ConfigError
from core.settings import Settings
from jobs.queues import ALL_QUEUES


def _settings() -> Settings:
    return Settings.from_env(os.environ)


def _configure_logging(default: str = "json") -> None:
    """Every process logs one JSON object a line (LOG_FORMAT=text for a person), with the
    bound request, job, ticket, action and email IDs, and no secret (helpdesk_app.logs)."""
    from core.settings import log_format_from
    from helpdesk_app.logs import configure_logging

    environ = os.environ if "LOG_FORMAT" in os.environ else {**os.environ, "LOG_FORMAT": default}
    configure_logging(log_format_from(environ))


def _serve_metrics(settings: Settings, port: int | None, host: str) -> None:
    """With --metrics-port (or METRICS_PORT), serve /metrics from this process."""
    port = port if port is not None else settings.metrics_port
    if port:
        from core.db import make_session_factory
        from helpdesk_app.observability import serve_metrics

        factory = make_session_factory(make_engine(settings.database_url))
        serve_metrics(port, host, factory, settings.redis_url, settings.metrics_token)


_metrics_port = click.option(
    "--metrics-port",
    type=click.IntRange(min=1, max=65535),
    default=None,
    help="Serve Prometheus' /metrics on this port.  [default: METRICS_PORT, else off]",
)
_metrics_host = click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address /metrics listens on (0.0.0.0 for a scraper on another machine, which then "
    "needs METRICS_TOKEN).",
)


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so loops finish their step and stop cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


@click.group()
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Billing Desk: billing support on Stripe, with a sidebar, a mail agent and workers."""
    if ctx.invoked_subcommand == "demo":
        _configure_logging(default="text")  # its own lines are for the person at the terminal
    if ctx.invoked_subcommand in ("web", "worker"):
        # gunicorn's workers and the worker supervisor's are forked: their samples meet in
        # this instance's own scratch directory (removed at exit), added up at each scrape.
        from core.metrics import use_multiprocess_directory

        use_multiprocess_directory()


@cli.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to the latest version."""
    engine = make_engine(_settings().database_url)
    check_connection(engine)
    upgrade(engine)
    click.echo("database is up to date")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int)
def web(host: str, port: int, workers: int) -> None:
    """Serve the helpdesk pages and the sidebar with gunicorn."""
    from gunicorn.app.base import BaseApplication

    from helpdesk_app import create_app
    from helpdesk_app.logs import GunicornLogger
    from helpdesk_app.run_dir import CONTROL_SOCKET, instance_run_dir

    settings = _settings()
    settings.require_stripe()
    settings.require_secret_key()  # sign-in sessions and sidebar tokens are signed with it
    check_connection(make_engine(settings.database_url))
    app = create_app(settings)

    with instance_run_dir(settings.run_dir) as run_dir:

        class _Server(BaseApplication):  # type: ignore[misc]
            def load_config(self) -> None:
                self.cfg.set("bind", f"{host}:{port}")
                self.cfg.set("workers", workers)
                self.cfg.set("accesslog", "-")
                # gunicorn's default line has the whole URL: Help Scout's signed query and
                # the update-card link's token would be in every log that keeps it.
                self.cfg.set("logger_class", GunicornLogger)
                # Not gunicorn's one path per user (~/.gunicorn/gunicorn.ctl): this instance's.
                self.cfg.set("control_socket", str(run_dir / CONTROL_SOCKET))
                self.cfg.set("worker_tmp_dir", str(run_dir))

            def load(self) -> Any:
                return app

        _Server().run()


@cli.command()
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes to run.  [default: the CPU count]",
)
@click.option(
    "--burst", is_flag=True, help="Stop when the queues are empty and every worker is idle."
)
@click.option(
    "--max-jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Replace a worker process with a fresh one after this many jobs (bounds memory).",
)
@click.option(
    "--queue",
    "queue_names",
    multiple=True,
    type=click.Choice(ALL_QUEUES),
    help="Work only this queue (repeat for more): e.g. a pool of its own for agents' actions."
    "  [default: every queue]",
)
@_metrics_port
@_metrics_host
def worker(
    processes: int | None,
    burst: bool,
    max_jobs: int | None,
    queue_names: tuple[str, ...],
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run the workers on Billing Desk's queues: a supervisor and its worker processes,
    with RQ's scheduler for delayed retries."""
    from jobs.runtime import build_runtime
    from jobs.worker import run_worker

    settings = _settings()
    settings.require_stripe()
    settings.require_smtp()
    rt = build_runtime(settings)
    _serve_metrics(settings, metrics_port, metrics_host)
    chosen = tuple(q for q in ALL_QUEUES if q in queue_names) or ALL_QUEUES  # actions first
    run_worker(rt, processes=processes, burst=burst, max_jobs=max_jobs, queue_names=chosen)


@cli.command()
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(("customer", "subscription", "charge", "refund", "invoice", "dispute")),
    help="Reconcile only this kind (repeat for more).  [default: every kind]",
)
def reconcile(kinds: tuple[str, ...]) -> None:
    """Backfill and repair the Stripe mirror from Stripe's list endpoints, with a summary."""
    from tqdm import tqdm

    from core import mirror
    from jobs.reconcile import reconcile as walk
    from jobs.runtime import build_runtime

    settings = _settings()
    settings.require_stripe()
    rt = build_runtime(settings)
    summary = walk(
        rt,
        kinds or mirror.KINDS,
        progress=lambda objects, kind: tqdm(objects, desc=f"{kind}s", unit=" objects"),
    )
    for line in summary.lines():
        click.echo(line)
    click.echo(f"{summary.objects} objects in {summary.seconds:.1f} s")


@cli.command("poll-mail")
@click.option("--once", is_flag=True, help="Poll one time and exit.")
@click.option("--interval", type=int, default=None, help="Seconds between polls.")
@_metrics_port
@_metrics_host
def poll_mail(
    once: bool, interval: int | None, metrics_port: int | None, metrics_host: str
) -> None:
    """Store new mail from the IMAP folders and queue it for processing (IDLE where offered).

    Several may run (on one machine or many): each folder is read by one of them at a time,
    the holder of its lease in Redis; the others wait and take over if it stops.
    """
    from jobs.inbound import enqueue_inbound
    from jobs.mail_lease import redis_leases
    from jobs.runtime import build_runtime
    from mail import poller
    from mail.imap import ImapConfig

    settings = _settings()
    _serve_metrics(settings, metrics_port, metrics_host)
    configs = ImapConfig.all_from_settings(settings)
    rt = build_runtime(settings)
    poller.run(
        configs,
        rt.session_factory,
        lambda email_id: enqueue_inbound(rt, email_id),
        interval=interval or settings.imap_poll_interval,
        idle=settings.imap_idle,
        stop=_stop_on_signals(),
        once=once,
        lease_for=redis_leases(rt.redis, settings.mail_lease_seconds),
    )


@cli.command()
@click.option("--port", default=8000, show_default=True, type=int, help="Port of the web app.")
@click.option("--dir", "directory", default=".demo", show_default=True, help="Scratch directory.")
def demo(port: int, directory: str) -> None:
    """Run the whole product on embedded servers with demo data."""
    from helpdesk_app.demo.run import run_demo

    run_demo(Path(directory), web_port=port)


@cli.command("zendesk-app")
@click.option(
    "--out", default="billing-desk-zendesk.zip", show_default=True, help="Zip file to write."
)
@click.option("--url", default=None, help="Public https URL of Billing Desk [BILLING_DESK_URL].")
def zendesk_app(out: str, url: str | None) -> None:
    """Build the Zendesk private-app zip that puts the sidebar on tickets."""

    from helpdesk_app.zendesk_package import build_zendesk_app

    # Bad URLs raise InvalidInput, which main() turns into one line, like ConfigError.
    click.echo(build_zendesk_app(url or _settings().public_url, Path(out)))


@cli.group("helpdesk")
def helpdesk_group() -> None:
    """The helpdesk the team works in (HELPDESK)."""


@helpdesk_group.command("check")
def helpdesk_check() -> None:
    """Check HELPDESK's credentials, mailbox, team groups and webhook secret against its API."""
    from core.helpdesks import Helpdesks

    for line in Helpdesks(_settings()).check():
        click.echo(line)


@cli.command("classify")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def classify_file(path: Path) -> None:
    """Classify the `text` column of a CSV; CSV of text,category,confidence to stdout."""
    from mail.classifier import classify_many
    from mail.evaluation import read_rows, write_predictions

    rows = read_rows(path, ["text"])
    results = classify_many([("", row["text"] or "") for row in rows])
    write_predictions(
        click.get_text_stream("stdout"),
        (
            (row["text"], str(r.category), r.confidence)
            for row, r in zip(rows, results, strict=True)
        ),
    )


@cli.command("eval-classifier")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def eval_classifier(path: Path) -> None:
    """Score the classifier on a CSV of text,label: accuracy, macro-F1, per category, confusion,
    and precision and coverage per confidence threshold (the policy's threshold marked)."""
    from mail.classifier import classify_many
    from mail.evaluation import evaluate, precision_coverage, read_rows, render_curve

    rows = read_rows(path, ["text", "label"])
    results = classify_many([("", row["text"] or "") for row in rows])
    gold = [row["label"] for row in rows]
    click.echo(evaluate(gold, [str(r.category) for r in results]).render())
    from core.policy.config import load_policy

    threshold = load_policy(_settings().policy_file).min_classifier_confidence
    curve = precision_coverage(gold, [(str(r.category), r.confidence) for r in results])
    click.echo(f"\n{render_curve(curve, marked=threshold)}")


@cli.group()
def plans() -> None:
    """Stored plans and their steps."""


@plans.command("resume")
def plans_resume() -> None:
    """Queue again the due step of every running plan whose job is gone (a lost Redis, a
    process that died between recording a step and queueing the next)."""
    from jobs.plans import resume_plans
    from jobs.runtime import build_runtime

    queued = resume_plans(build_runtime(_settings()))
    click.echo(f"{queued} plan step(s) queued again")


@cli.group()
def agents() -> None:
    """Agent records: who may use the sidebar, with which role (admins only)."""


def _agent_session() -> Any:
    from core.db import make_session_factory, session_scope

    engine = make_engine(_settings().database_url)
    check_connection(engine)
    return session_scope(make_session_factory(engine))


_ROLES = click.Choice(["agent", "support_lead", "finance", "admin", "account_manager", "security"])


@agents.command("add")
@click.argument("email")
@click.option("--name", required=True, help="Full name, as shown on notes and approvals.")
@click.option("--role", type=_ROLES, default="agent", show_default=True)
@click.option(
    "--password",
    is_flag=True,
    help="Prompt for a password for the built-in helpdesk's sign-in.",
)
def agents_add(email: str, name: str, role: str, password: bool) -> None:
    """Create an agent, or update their name and role."""
    from core import agents as records
    from core.domain import Role

    secret = (
        click.prompt("Password", hide_input=True, confirmation_prompt=True) if password else None
    )
    with _agent_session() as session:
        agent = records.save_agent(
            session, email=email, name=name, role=Role(role), password=secret
        )
        click.echo(f"{agent.email}: {agent.role}")


@agents.command("link")
@click.argument("email")
@click.option(
    "--helpdesk",
    # Plain strings: click shows (and matches) an Enum choice by its member name, ZENDESK.
    type=click.Choice([str(HelpdeskName.ZENDESK), str(HelpdeskName.HELPSCOUT)]),
    required=True,
)
@click.option(
    "--account",
    default="",
    help="The Zendesk subdomain (Help Scout needs none: its user IDs span the account).",
)
@click.option("--user-id", required=True, help="The agent's user ID in that helpdesk.")
def agents_link(email: str, helpdesk: str, account: str, user_id: str) -> None:
    """Say which helpdesk user is this agent (the sidebar then knows their role)."""
    from core import agents as records
    from core.errors import NotFound

    if helpdesk == HelpdeskName.ZENDESK and not account:
        raise click.BadParameter(
            "say which Zendesk subdomain the user is in", param_hint="--account"
        )
    if helpdesk == HelpdeskName.HELPSCOUT:
        account = ""

    with _agent_session() as session:
        agent = records.find_by_email(session, email)
        if agent is None:
            raise NotFound(f"no agent {email}; add them first")
        records.link_identity(
            session, agent, helpdesk=helpdesk, account=account, external_user_id=user_id
        )
        where = f" in {account}" if account else ""
        click.echo(f"{helpdesk} user {user_id}{where} is {agent.email} ({agent.role})")


@agents.command("deactivate")
@click.argument("email")
def agents_deactivate(email: str) -> None:
    """Take away an agent's access at once (their sessions and sidebar tokens stop working)."""
    from core import agents as records
    from core.errors import NotFound

    with _agent_session() as session:
        agent = records.find_by_email(session, email)
        if agent is None:
            raise NotFound(f"no agent {email}")
        ended = records.deactivate(session, agent)
        click.echo(f"{agent.email} deactivated ({ended} signed-in session(s) ended)")


@agents.command("list")
def agents_list() -> None:
    """Every agent with their role and helpdesk identities."""
    from sqlalchemy import select

    from core.db.models import Agent

    with _agent_session() as session:
        for agent in session.scalars(select(Agent).order_by(Agent.email)):
            links = ", ".join(
                f"{i.helpdesk}:{i.account}:{i.external_user_id}" for i in agent.identities
            )
            state = "" if agent.active else " (deactivated)"
            click.echo(f"{agent.email}\t{agent.role}{state}\t{agent.name}\t{links}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: configuration problems end in one clear line, not a traceback."""
    try:
        _configure_logging()
        cli.main(args=argv, prog_name="billing-desk", standalone_mode=False)
    except ConfigError as exc:
        click.echo(f"billing-desk: configuration error: {exc}", err=True)
        sys.exit(2)
    except BillingDeskError as exc:
        click.echo(f"billing-desk: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
