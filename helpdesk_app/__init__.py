"""The Billing Desk web app: built-in helpdesk pages and the ticket sidebar."""

from __future__ import annotations

import os

from flask import Flask

from core.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app from settings (read from the environment when not given)."""
    from helpdesk_app import errors, helpdesk, security, services, sidebar

    settings = settings or Settings.from_env(os.environ)
    app = Flask(__name__)
    if settings.secret_key:
        app.secret_key = settings.secret_key
    services.init_app(app, settings)
    app.register_blueprint(helpdesk.bp)
    app.register_blueprint(sidebar.bp)
    errors.init_app(app)
    security.init_app(app)
    return app
