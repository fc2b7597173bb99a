"""Request IDs, request latency and ``/metrics``, for the web app and the other processes.

``/metrics`` exposes business figures (refunded amounts, escalations), so it is not open to
the world: it answers a scrape from this machine (a loopback peer with no proxy's forwarding
header, since a reverse proxy on this host would make every visitor look local), or one that
sends ``Authorization: Bearer <METRICS_TOKEN>``, compared in constant time. Workers and
pollers serve the same page on ``--metrics-port`` under the same rule.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from flask import Blueprint, Flask, Response, abort, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis import Redis
from redis.exceptions import RedisError
from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy.orm import Session, sessionmaker

from core import log_context, metrics
from jobs.queues import ALL_QUEUES
from jobs.runtime import connect_redis

log = logging.getLogger(__name__)

bp = Blueprint("observability", __name__)

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's request ID is kept only when it is a plain token: no spaces, quotes or control
# characters that could forge a log line or a header, and short.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
# Headers a reverse proxy adds: a loopback peer that sends one is relaying someone else.
_FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
FAILED_JOBS_NAMED = 1000  # jobs per failed registry read for their function names per scrape
_KEY = "billing_desk_metrics"


def request_id_from(sent: str | None) -> str:
    """The caller's X-Request-ID when it is a sane token, else a fresh one."""
    if sent and _SANE_REQUEST_ID.match(sent):
        return sent
    return uuid.uuid4().hex


def may_read_metrics(
    remote_addr: str | None, headers: Mapping[str, str], token: str | None
) -> bool:
    """Whether this scrape may read /metrics: from this machine, or with the bearer token."""
    if token:
        scheme, _, sent = headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            sent.strip().encode(), token.encode()
        ):
            return True
    if any(headers.get(name) for name in _FORWARDING_HEADERS):
        return False
    try:
        return ipaddress.ip_address(remote_addr or "").is_loopback
    except ValueError:
        return False


def failed_job_counts(redis: Redis) -> Callable[[], Iterable[tuple[str, str, int]]]:
    """A reader of RQ's failed registries: (queue, job function, how many) now."""

    def read() -> list[tuple[str, str, int]]:
        counts: dict[tuple[str, str], int] = {}
        try:
            for name in ALL_QUEUES:
                ids = FailedJobRegistry(name, connection=redis).get_job_ids(cleanup=False)
                named = Job.fetch_many(ids[:FAILED_JOBS_NAMED], connection=redis)
                for job in named:
                    key = (name, job.func_name if job is not None else "unknown")
                    counts[key] = counts.get(key, 0) + 1
                if len(ids) > FAILED_JOBS_NAMED:
                    counts[(name, "other")] = len(ids) - FAILED_JOBS_NAMED
        except RedisError as exc:
            log.warning("metrics: RQ's failed registries unreadable: %s", type(exc).__name__)
            return []
        return [(queue, job, count) for (queue, job), count in sorted(counts.items())]

    return read


def build_registry(
    session_factory: sessionmaker[Session], redis: Redis | None
) -> CollectorRegistry:
    """What a scrape of this process reads: process samples, business totals, failed jobs."""
    return metrics.scrape_registry(
        session_factory, failed_job_counts(redis) if redis is not None else None
    )


# --- the web app ----------------------------------------------------------------------------


def _begin_request() -> None:
    g.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
    g.log_context = log_context.bind(request_id=g.request_id)
    g.request_started = time.perf_counter()


def _end_request(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    started = g.get("request_started")
    if started is not None:
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.HTTP_REQUEST_SECONDS.labels(
            request.method, route, metrics.status_class(response.status_code)
        ).observe(time.perf_counter() - started)
    return response


def _teardown_request(_exc: BaseException | None) -> None:
    token = g.pop("log_context", None)
    if token is not None:
        with contextlib.suppress(ValueError):  # reset in another context: nothing to undo
            log_context.unbind(token)


@bp.get("/metrics")
def scrape() -> Response:
    """Prometheus' scrape: from this machine, or with METRICS_TOKEN."""
    from helpdesk_app.services import get_services

    services = get_services()
    if not may_read_metrics(request.remote_addr, request.headers, services.settings.metrics_token):
        abort(403, "Metrics are readable from this machine, or with the metrics token.")
    from flask import current_app

    registry = current_app.extensions.get(_KEY)
    if registry is None:
        redis = services.redis if services.settings.redis_url else None
        registry = current_app.extensions[_KEY] = build_registry(services.session_factory, redis)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """Request IDs and latency on every request, and the /metrics page."""
    app.before_request(_begin_request)
    app.after_request(_end_request)
    app.teardown_request(_teardown_request)
    app.register_blueprint(bp)


# --- workers and pollers --------------------------------------------------------------------


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


def metrics_wsgi_app(registry: CollectorRegistry, token: str | None) -> Callable[..., Any]:
    """/metrics as a WSGI app, under the same rule as the web app's."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        headers = {
            key[5:].replace("_", "-").title(): value
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        if not may_read_metrics(environ.get("REMOTE_ADDR"), headers, token):
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"metrics are readable from this machine, or with the metrics token\n"]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [generate_latest(registry)]

    return app


def serve_metrics(
    port: int,
    host: str,
    session_factory: sessionmaker[Session],
    redis_url: str | None,
    token: str | None,
) -> WSGIServer:
    """Serve /metrics on ``host:port`` from a daemon thread; returns the server (its
    ``server_address`` has the port, when 0 asked for any free one)."""
    redis = connect_redis(redis_url) if redis_url else None
    app = metrics_wsgi_app(build_registry(session_factory, redis), token)
    server = make_server(host, port, app, _ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("serving /metrics on %s:%d", host, server.server_address[1])
    return server
