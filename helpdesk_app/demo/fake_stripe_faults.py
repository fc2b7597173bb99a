"""Test-support fault injection for the fake Stripe: make chosen requests answer 500/429/503.

A fault matches a method and a path prefix and fires ``count`` times. Before execution the
request never reaches the API (nothing changes); after execution the API did its work (an
object may have been created) but the client still sees the error, as when Stripe fails on its
way back. A ``hold`` fault instead keeps the request waiting, as a slow Stripe would, until
``POST /_config/faults/release``: tests use it to overlap two requests without timing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from localstripe.errors import UserError

FAULT_STATUSES = frozenset({429, 500, 503})
# Marks a response the API never executed, which Stripe does not save for an idempotency key.
NOT_EXECUTED = web.ResponseKey("fake_stripe_not_executed", bool)

_MESSAGES = {
    429: ("invalid_request_error", "rate_limit", "Too many requests hit the API too quickly."),
    500: ("api_error", None, "An unknown error occurred (injected by the fake)."),
    503: ("api_error", None, "Stripe is temporarily unavailable (injected by the fake)."),
}


@dataclass
class Fault:
    """Answer ``status`` to the next ``count`` requests matching ``method`` and ``path``."""

    method: str
    path: str  # a prefix of the request path
    status: int
    count: int
    after_execution: bool
    hold: bool = False

    def matches(self, request: web.Request) -> bool:
        """Whether the fault applies to a request."""
        return (
            self.count > 0 and request.method == self.method and request.path.startswith(self.path)
        )


def fault_response(status: int) -> web.Response:
    """The body Stripe sends with such a status."""
    error_type, code, message = _MESSAGES[status]
    error: dict[str, str] = {"type": error_type, "message": message}
    if code is not None:
        error["code"] = code
    return web.Response(
        status=status, text=json.dumps({"error": error}), content_type="application/json"
    )


class FaultInjector:
    """The faults waiting to fire."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.held = 0  # requests waiting in a hold fault
        self._release: asyncio.Event | None = None

    async def hold(self) -> None:
        """Wait until ``release`` is called."""
        if self._release is None:
            self._release = asyncio.Event()
        release = self._release
        self.held += 1
        try:
            await release.wait()
        finally:
            self.held -= 1

    def release(self) -> None:
        """Let every held request go on."""
        if self._release is not None:
            self._release.set()
            self._release = None

    def add(self, fault: Fault) -> None:
        """Arm a fault."""
        self.faults.append(fault)

    def clear(self) -> None:
        """Disarm every fault and let held requests go."""
        self.faults.clear()
        self.release()

    def take(self, request: web.Request) -> Fault | None:
        """The first armed fault for a request, using up one of its firings."""
        for fault in self.faults:
            if fault.matches(request):
                fault.count -= 1
                return fault
        return None


def make_fault_middleware(faults: FaultInjector) -> Middleware:
    """aiohttp middleware firing armed faults around the API handler."""

    @web.middleware
    async def inject(request: web.Request, handler: Handler) -> web.StreamResponse:
        fault = faults.take(request) if request.path.startswith("/v1/") else None
        if fault is None:
            return await handler(request)
        if fault.hold:
            await faults.hold()
            return await handler(request)
        if fault.after_execution:
            with contextlib.suppress(UserError):
                await handler(request)  # its changes stay; its answer is lost
            return fault_response(fault.status)
        response = fault_response(fault.status)
        response[NOT_EXECUTED] = True
        return response

    return inject
