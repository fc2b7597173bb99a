"""Security headers on every response."""

from __future__ import annotations

from flask import Flask, Response

# Everything is served from our own origin: no inline script, no third-party content.
# frame-ancestors 'self' lets the built-in helpdesk frame the sidebar and nobody else.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
)


def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def init_app(app: Flask) -> None:
    """Add the headers to every response of the app."""
    app.after_request(_headers)
