"""Where proof of use comes from when a customer disputes a charge: the product's own records.

The PenguinMails guide asks "Did the user log in? (Check Audit Trail). Did they use the
service? (Check Email Volume)" and submits "Logs, ToS acceptance". Those live in the product,
not in Stripe, so a ``UsageSource`` reads them: an SQL query against the team's product
database (``SqlUsageSource``), an HTTP JSON endpoint (``HttpUsageSource``), or deterministic
demo data (``DemoUsageSource``). ``USAGE_SOURCE`` picks one (``make_usage_source``).

Everything read here is bounded (rows, bytes, seconds) and checked before it is believed.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlencode

import requests
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from core.errors import BillingDeskError, ConfigError
from core.settings import Settings

MAX_LOGINS = 500  # sign-ins kept per dispute; a count beyond says "at least"
MAX_RESPONSE_BYTES = 256 * 1024
MAX_TEXT = 200  # one IP address or version string
TIMEOUT_SECONDS = 10


class UsageSourceError(BillingDeskError):
    """The usage source could not be read, or answered with something that is not usage."""

    retryable = True


@dataclass(frozen=True)
class Login:
    """One sign-in to the product."""

    at: datetime
    ip: str | None = None


@dataclass(frozen=True)
class TermsAcceptance:
    """When the customer accepted the terms of service, which version, from where."""

    at: datetime
    version: str | None = None
    ip: str | None = None


@dataclass(frozen=True)
class Usage:
    """What the product knows of a customer's use in a period."""

    source: str
    logins: tuple[Login, ...] = ()  # newest first, at most MAX_LOGINS
    login_count: int = 0  # may exceed len(logins)
    emails_sent: int | None = None  # PenguinMails' usage measure; None: not known
    terms: TermsAcceptance | None = None

    @property
    def last_login(self) -> datetime | None:
        """The latest sign-in, if any."""
        return max((login.at for login in self.logins), default=None)

    def logins_after(self, moment: datetime) -> tuple[Login, ...]:
        """The sign-ins after ``moment`` (e.g. the disputed charge)."""
        return tuple(login for login in self.logins if login.at > moment)


class UsageSource(Protocol):
    """Reads a customer's logins, usage and terms acceptance for a period."""

    name: str

    def usage(self, customer_id: str, email: str | None, since: datetime, until: datetime) -> Usage:
        """The customer's usage between ``since`` and ``until``; UsageSourceError if unreadable."""
        ...


# --- reading values we did not write ---------------------------------------------------------


def _time(value: Any, what: str) -> datetime:
    """A timestamp from a row or a JSON document: ISO 8601 text, a datetime or unix seconds."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise UsageSourceError(f"{what} is not a time: {value[:40]!r}") from None
    else:
        raise UsageSourceError(f"{what} is not a time")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _short(value: Any) -> str | None:
    """An IP address or version as text, bounded; None for nothing."""
    if value is None or value == "":
        return None
    if not isinstance(value, str | int | float):
        raise UsageSourceError("an IP address or version is not text")
    return str(value).strip()[:MAX_TEXT] or None


def _count(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageSourceError(f"{what} is not a count")
    return value


def _logins(rows: Sequence[Any], what: str) -> tuple[Login, ...]:
    logins = []
    for row in rows[:MAX_LOGINS]:
        if isinstance(row, Mapping):
            at, ip = row.get("at"), row.get("ip")
        elif isinstance(row, Sequence) and not isinstance(row, str) and row:
            at, ip = row[0], row[1] if len(row) > 1 else None
        else:
            raise UsageSourceError(f"{what}: a sign-in is neither a row nor an object")
        logins.append(Login(_time(at, f"{what}: a sign-in's time"), _short(ip)))
    return tuple(sorted(logins, key=lambda login: login.at, reverse=True))


# --- the demo --------------------------------------------------------------------------------


class DemoUsageSource:
    """Deterministic demo data: the same customer and period always give the same usage."""

    name = "demo"

    def usage(self, customer_id: str, email: str | None, since: datetime, until: datetime) -> Usage:
        """A few sign-ins spread over the period, some email volume, terms accepted before."""
        seed = int.from_bytes(hashlib.sha256(customer_id.encode()).digest()[:8], "big")
        span = max((until - since).total_seconds(), 3600.0)
        count = 4 + seed % 9
        logins = tuple(
            Login(
                since + timedelta(seconds=span * (i + 1) / (count + 1)),
                f"203.0.113.{(seed >> (i % 8)) % 250 + 1}",  # TEST-NET-3: documentation only
            )
            for i in range(count)
        )
        terms = TermsAcceptance(since - timedelta(days=30 + seed % 60), "2025-01", "203.0.113.7")
        return Usage(
            source=self.name,
            logins=tuple(sorted(logins, key=lambda login: login.at, reverse=True)),
            login_count=count,
            emails_sent=200 + seed % 5000,
            terms=terms,
        )


# --- SQL -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageQueries:
    """The team's own SQL, each with bound parameters only: ``:customer_id``, ``:email``,
    ``:since``, ``:until``. Logins return rows (time, IP); emails one count; terms one row
    (time, version, IP)."""

    logins: str | None = None
    emails_sent: str | None = None
    terms: str | None = None


def _read_only_sql(query: str, setting: str) -> str:
    """A query that can only read: one SELECT (or WITH) statement."""
    stripped = query.strip().rstrip(";").strip()
    if ";" in stripped or stripped.split(None, 1)[0].lower() not in ("select", "with"):
        raise ConfigError(setting, "must be one SELECT statement with bound parameters")
    return stripped


class SqlUsageSource:
    """Usage from the product's database: the configured queries, read-only and time-limited."""

    name = "sql"

    def __init__(self, url: str, queries: UsageQueries, timeout: float = TIMEOUT_SECONDS) -> None:
        try:
            self.engine: Engine = sqlalchemy.create_engine(url, pool_pre_ping=True)
        except (SQLAlchemyError, ValueError) as exc:
            raise ConfigError("USAGE_SOURCE_URL", f"is not a database URL ({exc})") from None
        self.queries = UsageQueries(
            *(
                _read_only_sql(q, f"USAGE_SQL_{name.upper()}") if q else None
                for name, q in (
                    ("logins", queries.logins),
                    ("emails_sent", queries.emails_sent),
                    ("terms", queries.terms),
                )
            )
        )
        self.timeout = timeout

    @contextmanager
    def _read_only(self) -> Iterator[Connection]:
        """A connection whose transaction can neither write nor run past the time limit, and
        is rolled back whatever happens."""
        with self.engine.connect() as connection:
            dialect = connection.dialect.name
            raw: sqlite3.Connection | None = None
            if dialect == "postgresql":
                connection.execute(text("SET TRANSACTION READ ONLY"))
                ms = int(self.timeout * 1000)
                connection.execute(text(f"SET LOCAL statement_timeout = {ms}"))
            elif dialect == "sqlite":
                driver = connection.connection.driver_connection
                assert isinstance(driver, sqlite3.Connection)
                raw = driver
                deadline = time.monotonic() + self.timeout
                raw.execute("PRAGMA query_only = ON")
                # Called every thousand VM steps; a true return aborts the query.
                raw.set_progress_handler(lambda: time.monotonic() > deadline, 1000)
            try:
                yield connection
            finally:
                connection.rollback()
                if raw is not None:
                    raw.set_progress_handler(None, 0)
                    raw.execute("PRAGMA query_only = OFF")

    def usage(self, customer_id: str, email: str | None, since: datetime, until: datetime) -> Usage:
        """Run each configured query for the customer and period."""
        params = {"customer_id": customer_id, "email": email, "since": since, "until": until}
        logins: tuple[Login, ...] = ()
        count = 0
        emails = None
        terms = None
        try:
            with self._read_only() as connection:
                if self.queries.logins:
                    result = connection.execute(text(self.queries.logins), params)
                    rows = [tuple(r) for r in result.fetchmany(MAX_LOGINS + 1)]
                    logins = _logins(rows, "the logins query")
                    count = len(rows)
                if self.queries.emails_sent:
                    value = connection.execute(text(self.queries.emails_sent), params).scalar()
                    emails = _count(value, "the emails_sent query's answer")
                if self.queries.terms:
                    row = connection.execute(text(self.queries.terms), params).first()
                    if row is not None and row[0] is not None:
                        version = row[1] if len(row) > 1 else None
                        ip = row[2] if len(row) > 2 else None
                        terms = TermsAcceptance(
                            _time(row[0], "the terms query's time"), _short(version), _short(ip)
                        )
        except SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc
            raise UsageSourceError(
                f"the product database did not answer ({type(cause).__name__})"
            ) from exc
        return Usage(self.name, logins, count, emails, terms)


# --- HTTP ------------------------------------------------------------------------------------


class HttpUsageSource:
    """Usage from a JSON endpoint: ``GET url?customer_id=&email=&since=&until=`` answering
    ``{"logins": [{"at", "ip"}], "login_count", "emails_sent", "terms": {"accepted_at",
    "version", "ip"}}`` (every key optional), within the timeout and size limit."""

    name = "http"

    def __init__(
        self, url: str, token: str | None = None, timeout: float = TIMEOUT_SECONDS
    ) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout

    def _get(self, query: Mapping[str, str]) -> bytes:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        separator = "&" if "?" in self.url else "?"
        try:
            with requests.get(
                f"{self.url}{separator}{urlencode(query)}",
                headers=headers,
                timeout=self.timeout,
                stream=True,
                allow_redirects=False,
            ) as response:
                if response.status_code != 200:
                    raise UsageSourceError(f"the usage endpoint answered {response.status_code}")
                body = b""
                for chunk in response.iter_content(16384):
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise UsageSourceError(
                            f"the usage endpoint's answer is over {MAX_RESPONSE_BYTES} bytes"
                        )
                return body
        except requests.RequestException as exc:
            raise UsageSourceError(
                f"the usage endpoint did not answer ({type(exc).__name__})"
            ) from exc

    def usage(self, customer_id: str, email: str | None, since: datetime, until: datetime) -> Usage:
        """Ask the endpoint, and believe only an answer of the documented shape."""
        query = {"customer_id": customer_id, "since": since.isoformat(), "until": until.isoformat()}
        if email:
            query["email"] = email
        try:
            document = json.loads(self._get(query))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UsageSourceError("the usage endpoint's answer is not JSON") from None
        return parse_usage_document(document, self.name)


def parse_usage_document(document: Any, source: str) -> Usage:
    """A usage endpoint's JSON answer, checked key by key."""
    if not isinstance(document, Mapping):
        raise UsageSourceError("the usage endpoint's answer is not an object")
    rows = document.get("logins") or []
    if not isinstance(rows, list):
        raise UsageSourceError("logins is not a list")
    logins = _logins(rows, "logins")
    count = _count(document.get("login_count"), "login_count")
    terms_doc = document.get("terms")
    terms = None
    if terms_doc is not None:
        if not isinstance(terms_doc, Mapping):
            raise UsageSourceError("terms is not an object")
        if terms_doc.get("accepted_at") is not None:
            terms = TermsAcceptance(
                _time(terms_doc["accepted_at"], "terms.accepted_at"),
                _short(terms_doc.get("version")),
                _short(terms_doc.get("ip")),
            )
    return Usage(
        source=source,
        logins=logins,
        login_count=max(count or 0, len(logins)),
        emails_sent=_count(document.get("emails_sent"), "emails_sent"),
        terms=terms,
    )


# --- choosing one ----------------------------------------------------------------------------


def make_usage_source(settings: Settings) -> UsageSource | None:
    """The configured usage source; None when there is none (``USAGE_SOURCE=none``)."""
    kind = settings.usage_source
    if kind == "demo":
        return DemoUsageSource()
    if kind == "http":
        assert settings.usage_source_url is not None  # Settings checked it
        return HttpUsageSource(
            settings.usage_source_url,
            settings.usage_source_token,
            settings.usage_source_timeout_seconds,
        )
    if kind == "sql":
        assert settings.usage_source_url is not None
        return SqlUsageSource(
            settings.usage_source_url,
            UsageQueries(
                settings.usage_sql_logins, settings.usage_sql_emails_sent, settings.usage_sql_terms
            ),
            settings.usage_source_timeout_seconds,
        )
    return None
