"""The Billing Desk web app: built-in helpdesk pages and the ticket sidebar."""

from __future__ import annotations

import os

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from core.domain import Role
from core.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app from settings (read from the environment when not given)."""
    from helpdesk_app import (
        auth,
        billing_links,
        embedded,
        errors,
        health,
        helpdesk,
        observability,
        rate_limits,
        rq_admin,
        security,
        services,
        sidebar,
        webhooks,
    )

    settings = settings or Settings.from_env(os.environ)
    app = Flask(__name__)
    # Block tags leave no blank lines behind: the sidebar is re-sent after every action.
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
    app.jinja_env.filters["role"] = lambda name: Role(name).label
    if settings.secret_key:
        app.secret_key = settings.secret_key
    services.init_app(app, settings)
    observability.init_app(app)  # request IDs, latency and /metrics: first in, last out
    rate_limits.init_app(app, settings)  # before any view: a refused request does nothing
    with app.app_context():
        auth.init_app(app)
    for blueprint in (auth.bp, helpdesk.bp, sidebar.bp, embedded.bp, billing_links.bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(webhooks.bp)  # Stripe's deliveries: signed, no session or CSRF
    health.init_app(app)  # probes: no session, no CSRF
    errors.init_app(app)
    security.init_app(app, settings)
    rq_admin.init_app(app, settings)  # after security: its pages' CSP is set first
    if settings.trusted_proxies:
        # The client is who our own proxies say, and only as many hops as we have proxies:
        # anything further left in X-Forwarded-For was written by the client.
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    return app
