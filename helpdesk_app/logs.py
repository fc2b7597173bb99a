"""Every process's log: one JSON object a line (or text for a person), never a secret.

``configure_logging`` is called once by the CLI, the composition root of every process. Each
record gets the IDs bound in ``core.log_context`` (request, job, ticket, action, email), and
its message, arguments and traceback are redacted before any handler sees them: card numbers
(``mail.redact`` owns that rule), Stripe secret, restricted and webhook keys, bearer tokens,
signed tokens, and URLs' query strings and link tokens (``access_log`` owns that rule).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import traceback
from collections.abc import Mapping
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from core import log_context
from helpdesk_app.access_log import RedactingLogger, redacted_path, redacted_url
from mail.redact import redact_cards

LOG_FORMATS = ("json", "text")
REDACTED = "[redacted]"

_URL = re.compile(r"\b[a-z][a-z0-9+.\-]*://[^\s\"'<>]+", re.IGNORECASE)
# A bare path that carries a query string or an update-card link token.
# "update-card", also %-encoded ("update%2Dcard", "update%252Dcard"), as the router reads it.
_LINK_TOKEN = re.compile(r"update(?:-|%2d|%252d)card", re.IGNORECASE)
_PATH = re.compile(
    r"(?<![\w/:.])/[^\s\"'<>]*(?:\?[^\s\"'<>]*|update(?:-|%2d|%252d)card/[^\s\"'<>]+)", re.I
)
_STRIPE_KEY = re.compile(r"\b(?:sk|rk)_[A-Za-z0-9_]{6,}|\bwhsec_[A-Za-z0-9+/=_]{6,}")
_AUTHORIZATION = re.compile(r"\b(bearer|basic)(\s+)[A-Za-z0-9\-._~+/=]{6,}", re.IGNORECASE)
# Signed tokens: JWTs and itsdangerous' (our sidebar and update-card tokens), whose JSON
# payload's base64 starts "eyJ", or "." when compressed; then timestamp and signature.
_SIGNED_TOKEN = re.compile(
    r"(?:\beyJ|(?<![\w.])\.)[A-Za-z0-9_\-]{6,}\.[A-Za-z0-9_\-]{4,}(?:\.[A-Za-z0-9_\-]{10,})?"
)
# name=value and name: value, where the value looks like a credential (no plain words).
_SECRET_PAIR = re.compile(
    r"\b(password|passwd|secret|token|api_key|apikey|access_token|signature|sig)"
    r"(\s*=\s*|:\s*)[A-Za-z0-9\-._~+/=%]{6,}",
    re.IGNORECASE,
)
# Noisy loggers: stripe-python's per-request lines and aiosmtpd's session chatter.
_QUIET = ("stripe", "mail.log", "alembic")


def _url(url: str) -> str:
    """A URL as logged: as it is unless it carries a query, fragment or link token."""
    if any(mark in url for mark in "?#") or _LINK_TOKEN.search(url):
        return redacted_url(url)
    return url


def redact(text: str) -> str:
    """The text with card numbers, keys, tokens and URL queries taken out."""
    text = _URL.sub(lambda m: _url(m.group(0)), text)
    text = _PATH.sub(lambda m: redacted_path(m.group(0)), text)
    text = _STRIPE_KEY.sub(REDACTED, text)
    text = _AUTHORIZATION.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    text = _SIGNED_TOKEN.sub(REDACTED, text)
    text = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    without_cards, found = redact_cards(text)
    return without_cards if found else text


class RedactingFilter(logging.Filter):
    """Formats each record's message with its arguments and redacts it, and its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the record in place; never drops one."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what can be kept, without the args
            message = f"{record.msg!s} (unformattable arguments)"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.exc_info = None  # the redacted exc_text is what formatters print
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class ContextFilter(logging.Filter):
    """Copies the IDs bound in ``core.log_context`` onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the context; never drops a record."""
        for key, value in log_context.current().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class TextFormatter(logging.Formatter):
    """The classic one-line format, with the bound IDs at the end."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The line, then ``key=value`` for each bound ID."""
        line = super().format(record)
        ids = " ".join(
            f"{key}={getattr(record, key)}" for key in log_context.FIELDS if hasattr(record, key)
        )
        return f"{line} [{ids}]" if ids else line


def json_formatter() -> logging.Formatter:
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, and the IDs."""
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
        timestamp="time",
    )


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter for LOG_FORMAT."""
    return json_formatter() if log_format == "json" else TextFormatter()


def add_filters(handler: logging.Handler) -> None:
    """Give a handler the context and redaction filters (once each)."""
    for kind in (ContextFilter, RedactingFilter):
        if not any(isinstance(f, kind) for f in handler.filters):
            handler.addFilter(kind())


def configure_logging(log_format: str = "json", level: int = logging.INFO) -> None:
    """One stderr handler on the root logger, in ``log_format``, with context and redaction."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    add_filters(handler)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in _QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def current_format() -> str:
    """The format the root logger writes: json or text."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, JsonFormatter):
            return "json"
    return "text"


class AccessFields(logging.Filter):
    """gunicorn's access line as fields too: method, path (already without query or link
    token, see access_log), status and duration, so a log store can query them."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Copy the fields from the line's atoms; never drops a record."""
        atoms = record.args
        if isinstance(atoms, Mapping):
            record.http_method = atoms.get("m")
            record.http_path = atoms.get("U")
            with contextlib.suppress(TypeError, ValueError):
                record.http_status = int(str(atoms.get("s")))
                record.duration_ms = int(str(atoms.get("M")))
        return True


class GunicornLogger(RedactingLogger):
    """gunicorn's error and access logs in the process's format, with the same filters, each
    access line carrying the request ID the app answered with."""

    def setup(self, cfg: Any) -> None:
        """gunicorn's handlers, given our formatter and filters."""
        super().setup(cfg)
        formatter = make_formatter(current_format())
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                handler.setFormatter(formatter)
                if logger is self.access_log and not any(
                    isinstance(f, AccessFields) for f in handler.filters
                ):
                    handler.addFilter(AccessFields())  # before redaction drops the atoms
                add_filters(handler)

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        """gunicorn's access line, bound to the response's X-Request-ID."""
        headers = resp.headers.items() if hasattr(resp.headers, "items") else resp.headers
        request_id = next((v for k, v in headers if k.lower() == "x-request-id"), None)
        with log_context.bound(request_id=request_id):
            super().access(resp, req, environ, request_time)
