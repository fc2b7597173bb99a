"""The fake Stripe's events and their webhook delivery, as ``stripe listen --forward-to`` does.

Every change produces a localstripe ``Event`` (kept in its store, so ``GET /v1/events`` lists
it). An event made while an API request runs is published when the request ends, so that
``data.object`` shows the object as the API returned it; its ``request`` names that request.
Published events go, in creation order, to the one configured endpoint: POSTed as JSON with a
``Stripe-Signature`` header signed the way Stripe signs, retried with backoff on non-2xx or a
connection error, from a background task that never delays an API response.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from localstripe import resources as ls
from localstripe import server as ls_server
from localstripe.errors import UserError

# The version stripe-python 16 pins; events carry it like Stripe's do.
API_VERSION = "2026-10-28.endive"
MAX_ATTEMPTS = 5
# Pauses between attempts: Stripe backs off over three days, a test cannot wait that long.
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)
DELIVERY_TIMEOUT_SECONDS = 10

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestInfo:
    """The API request an event came from, as Stripe reports it on the event."""

    id: str | None
    idempotency_key: str | None


_NO_REQUEST = RequestInfo(None, None)
_current_request: contextvars.ContextVar[RequestInfo] = contextvars.ContextVar(
    "fake_stripe_request", default=_NO_REQUEST
)
# Events made during the current request, published when it ends (None: publish at once).
_unpublished: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "fake_stripe_unpublished", default=None
)


def new_request_id() -> str:
    """An id shaped like Stripe's ``req_...``."""
    return "req_" + secrets.token_hex(7)


def sign(secret: str, timestamp: int, payload: bytes) -> str:
    """The ``Stripe-Signature`` header value for a payload sent at ``timestamp``."""
    signed = str(timestamp).encode() + b"." + payload
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Stripe's ``previous_attributes``: the old values of the top-level fields that changed."""
    return {key: before.get(key) for key in after if before.get(key) != after[key]}


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver an event to an endpoint."""

    event: str
    type: str
    url: str
    attempt: int
    status: int | None  # the endpoint's HTTP status; None when it could not be reached
    error: str | None
    delivered: bool
    created: float


class WebhookEndpoint:
    """Delivers events to one URL in order, each retried until a 2xx or MAX_ATTEMPTS."""

    def __init__(self, url: str, secret: str, record: Callable[[Delivery], None]) -> None:
        self.url = url
        self.secret = secret
        self._record = record
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def enqueue(self, event: Any) -> None:
        """Queue an event; the delivery task starts with the first one."""
        self._queue.put_nowait(event)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def drop_pending(self) -> None:
        """Forget events not yet delivered (the one being retried still finishes)."""
        while not self._queue.empty():
            self._queue.get_nowait()

    def close(self) -> None:
        """Stop delivering."""
        self.drop_pending()
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT_SECONDS)
        ) as session:
            while True:
                event = await self._queue.get()
                try:
                    await self._deliver(session, event)
                except Exception:  # one bad event must not stop the others
                    log.exception("delivering %s to %s failed", event.id, self.url)

    async def _deliver(self, session: aiohttp.ClientSession, event: Any) -> None:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            payload = json.dumps(event._export(), indent=2).encode("utf-8")
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": sign(self.secret, int(time.time()), payload),
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            }
            status: int | None = None
            error: str | None = None
            try:
                async with session.post(self.url, data=payload, headers=headers) as response:
                    status = response.status
                    await response.read()
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            delivered = status is not None and 200 <= status < 300
            self._record(
                Delivery(
                    event.id, event.type, self.url, attempt, status, error, delivered, time.time()
                )
            )
            if delivered:
                event.pending_webhooks = max(0, event.pending_webhooks - 1)
                return
            if attempt < MAX_ATTEMPTS:
                await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS)) - 1])


class EventHub:
    """Publishes the fake's events and forwards them to the configured webhook endpoint."""

    def __init__(self) -> None:
        self.endpoint: WebhookEndpoint | None = None
        self.deliveries: list[Delivery] = []
        self._pending_url: tuple[str, str] | None = None

    def configure(self, url: str | None, secret: str | None) -> None:
        """Deliver to ``url`` from now on (None or ``""``: stop delivering)."""
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None
        self._pending_url = (url, secret or "") if url else None

    def _active_endpoint(self) -> WebhookEndpoint | None:
        # Built lazily: its queue and task belong to the running event loop.
        if self.endpoint is None and self._pending_url is not None:
            url, secret = self._pending_url
            self.endpoint = WebhookEndpoint(url, secret, self.deliveries.append)
        return self.endpoint

    def forget(self) -> None:
        """Drop the delivery log and undelivered events (``DELETE /_config/data``)."""
        self.deliveries.clear()
        if self.endpoint is not None:
            self.endpoint.drop_pending()

    def publish(self, event: Any) -> None:
        """Freeze an event's object and send it, or hold it until the current request ends."""
        unpublished = _unpublished.get()
        if unpublished is not None:
            unpublished.append(event)
        else:
            self._send(event)

    def _send(self, event: Any) -> None:
        event._freeze()
        endpoint = self._active_endpoint()
        if endpoint is not None:
            event.pending_webhooks += 1
            endpoint.enqueue(event)

    def resend(self, event: Any) -> bool:
        """Deliver an event again (Stripe's "Resend"); False when no endpoint is configured."""
        endpoint = self._active_endpoint()
        if endpoint is None:
            return False
        event.pending_webhooks += 1
        endpoint.enqueue(event)
        return True

    def middleware(self) -> Middleware:
        """aiohttp middleware: a ``Request-Id`` per request, and its events published at its end."""

        @web.middleware
        async def events(request: web.Request, handler: Handler) -> web.StreamResponse:
            info = RequestInfo(new_request_id(), request.headers.get("Idempotency-Key"))
            request_token = _current_request.set(info)
            unpublished: list[Any] = []
            events_token = _unpublished.set(unpublished)
            try:
                try:
                    response = await handler(request)
                except UserError as error:  # published below, like Stripe's charge.failed
                    response = error.to_response()
            finally:
                _unpublished.reset(events_token)
                _current_request.reset(request_token)
                for event in unpublished:
                    self._send(event)
            if not response.prepared:
                response.headers["Request-Id"] = info.id or ""
            return response

        return events


def install_events(hub: EventHub) -> None:
    """Make localstripe's events Stripe-shaped and route them through ``hub``."""

    def init(self: Any, type: str, data: Any, previous_attributes: Any = None) -> None:
        ls.StripeObject.__init__(self)
        self.type = type
        self.api_version = API_VERSION
        self.pending_webhooks = 0
        info = _current_request.get()
        self.request = {"id": info.id, "idempotency_key": info.idempotency_key}
        self._source = data
        self._previous = previous_attributes
        self._snapshot: dict[str, Any] | None = None

    def freeze(self: Any) -> None:
        try:
            self._snapshot = self._source._export()
        except Exception:  # an object half torn down must not lose the event
            log.exception("exporting the object of %s failed", self.type)
            self._snapshot = {}

    def data(self: Any) -> dict[str, Any]:
        snapshot = self._snapshot if self._snapshot is not None else self._source._export()
        body: dict[str, Any] = {"object": snapshot}
        if self._previous is not None:
            body["previous_attributes"] = self._previous
        return body

    ls.Event.__init__ = init
    ls.Event._freeze = freeze
    ls.Event.data = property(data)
    # localstripe's resources call this module-level name after building each event.
    ls.schedule_webhook = hub.publish


def emit(type: str, obj: Any, previous_attributes: dict[str, Any] | None = None) -> Any:
    """Create and publish an event about ``obj``."""
    event = ls.Event(type, obj, previous_attributes)  # type: ignore[call-arg]
    ls.schedule_webhook(event)
    return event


def deliveries_response(hub: EventHub, event_id: str | None) -> dict[str, Any]:
    """The delivery log (optionally for one event), oldest attempt first."""
    rows: Sequence[Delivery] = [d for d in hub.deliveries if event_id in (None, d.event)]
    endpoint = hub._pending_url
    return {
        "object": "list",
        "endpoint": endpoint[0] if endpoint else None,
        "data": [asdict(d) for d in rows],
    }


def add_event_routes(app: web.Application, hub: EventHub) -> None:
    """The test-support routes that configure and inspect webhook delivery."""

    async def configure(request: web.Request) -> web.Response:
        data = await ls_server.get_post_data(request) or {}
        unknown = set(data) - {"url", "secret"}
        if unknown:
            raise UserError(400, "Unexpected " + ", ".join(sorted(unknown)))
        url = data.get("url") or None
        secret = data.get("secret")
        if url is not None and not (isinstance(secret, str) and secret.startswith("whsec_")):
            raise UserError(400, "secret must be a webhook signing secret (whsec_...)")
        hub.configure(url, secret)
        return ls_server.json_response({"url": url})

    async def deliveries(request: web.Request) -> web.Response:
        return ls_server.json_response(deliveries_response(hub, request.query.get("event")))

    async def resend(request: web.Request) -> web.Response:
        event = ls.Event._api_retrieve(request.match_info["id"])
        if not hub.resend(event):
            raise UserError(400, "No webhook endpoint is configured")
        return ls_server.json_response(event._export())

    app.router.add_post("/_config/webhook_endpoint", configure)
    app.router.add_get("/_config/webhook_deliveries", deliveries)
    app.router.add_post("/_config/events/{id}/resend", resend)
