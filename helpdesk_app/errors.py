"""Errors become responses in one place: our errors show their calm public message.

Refusals written for agents (bad input, policy) show their own reason: that is the point of
them. Requests from the sidebar's script get a fragment for its sheet instead of a page.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, make_response, render_template, request
from werkzeug.exceptions import HTTPException, TooManyRequests

from core.errors import BillingDeskError, InvalidInput, PolicyDenied
from helpdesk_app import rate_limits
from helpdesk_app.access_log import redacted_path

log = logging.getLogger(__name__)


def _render(message: str, status: int) -> tuple[str, int]:
    template = "sidebar/error.html" if request.headers.get("X-Sidebar") else "error.html"
    return render_template(template, message=message), status


def _billing_desk_error(exc: BillingDeskError) -> tuple[str, int]:
    if exc.http_status >= 500:
        log.warning("request failed: %s", exc)
    elif exc.http_status in (401, 403):
        # A refused update-card link has its token in the path: log it the way access logs do.
        log.info("refused %s %s: %s", request.method, redacted_path(request.path), exc)
    readable = isinstance(exc, (InvalidInput, PolicyDenied))
    return _render(str(exc) if readable else exc.public_message, exc.http_status)


def _http_error(exc: HTTPException) -> tuple[str, int]:
    return _render(exc.description or "Error.", exc.code or 500)


def _too_many_requests(_exc: TooManyRequests) -> Response:
    """A rate limit refused the request: when to come back, as JSON to the API's clients."""
    wait = rate_limits.retry_after_seconds()
    message = f"Too many requests. Please wait {wait} seconds and try again."
    if rate_limits.is_api_request() and not request.headers.get("X-Sidebar"):
        response = jsonify(error="rate_limited", message=message, retry_after=wait)
    else:  # a page, or the sheet of the sidebar's own script
        response = make_response(_render(message, 429))
    response.status_code = 429
    response.headers["Retry-After"] = str(wait)
    return response


def _unexpected(exc: Exception) -> tuple[str, int]:
    log.exception("unexpected error")
    return _render(BillingDeskError.public_message, 500)


def init_app(app: Flask) -> None:
    """Register the error handlers."""
    app.register_error_handler(BillingDeskError, _billing_desk_error)
    app.register_error_handler(TooManyRequests, _too_many_requests)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
