"""Errors become responses in one place: our errors show their calm public message."""

from __future__ import annotations

import logging

from flask import Flask, render_template
from werkzeug.exceptions import HTTPException

from core.errors import BillingDeskError

log = logging.getLogger(__name__)


def _billing_desk_error(exc: BillingDeskError) -> tuple[str, int]:
    if exc.http_status >= 500:
        log.warning("request failed: %s", exc)
    return render_template("error.html", message=exc.public_message), exc.http_status


def _http_error(exc: HTTPException) -> tuple[str, int]:
    return render_template("error.html", message=exc.description), exc.code or 500


def _unexpected(exc: Exception) -> tuple[str, int]:
    log.exception("unexpected error")
    return render_template("error.html", message=BillingDeskError.public_message), 500


def init_app(app: Flask) -> None:
    """Register the error handlers."""
    app.register_error_handler(BillingDeskError, _billing_desk_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
