"""Security headers on every response (a strict CSP whose frame-ancestors are the helpdesks),
and one cap on the size of every request's body."""

from __future__ import annotations

from flask import Flask, Response, g

from core.settings import Settings

# No form of ours comes near this (a reply is at most 20,000 characters); without a cap,
# werkzeug spools any multipart file part to disk, however large, before a view can refuse it.
MAX_REQUEST_BYTES = 1024 * 1024


def content_security_policy(settings: Settings, extra_script: str | None = None) -> str:
    """Our CSP: only our own scripts (plus Zendesk's SDK on its page), framed by our helpdesks."""
    scripts = " ".join(filter(None, ["'self'", extra_script]))
    ancestors = " ".join(settings.allowed_frame_ancestors)
    return (
        f"default-src 'self'; script-src {scripts}; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        f"frame-ancestors {ancestors}"
    )


def init_app(app: Flask, settings: Settings) -> None:
    """Add the headers to every response of the app, and cap every request's body."""
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES

    def headers(response: Response) -> Response:
        response.headers.setdefault(
            "Content-Security-Policy",
            content_security_policy(settings, g.get("csp_script_src")),
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if "Cache-Control" not in response.headers and response.mimetype == "text/html":
            # Pages carry tokens and customer data: never keep them in a shared cache.
            response.headers["Cache-Control"] = "no-store"
        return response

    app.after_request(headers)
