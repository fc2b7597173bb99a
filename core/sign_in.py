"""Signing in to the built-in helpdesk, throttled per account and per client address.

Every try is a row in ``sign_in_attempts``, so all web processes count the same ones. So many
failures for one email within the window lock that account for the lockout time; so many from
one client address refuse that address. While locked, the password is not even looked at: the
answer is the same whether it was right or wrong, so a lockout tells a guesser nothing. A
success clears the account's count (its owner is back), never the address's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core import agents, audit
from core.db.models import Agent, SignInAttempt, utcnow
from core.errors import TooManyAttempts
from core.settings import Settings

# Longest email we keep as typed (RFC 5321's limit); anything longer is cut, not stored whole.
MAX_EMAIL = 320
MAX_ADDRESS = 64


@dataclass(frozen=True)
class SignInLimits:
    """How many failures lock an account or a client address, within what window, how long."""

    account_failures: int = 5
    address_failures: int = 20
    window: timedelta = timedelta(minutes=15)
    lockout: timedelta = timedelta(minutes=15)

    @classmethod
    def from_settings(cls, settings: Settings) -> SignInLimits:
        """The limits configured by the SIGN_IN_* settings."""
        return cls(
            account_failures=settings.sign_in_account_failures,
            address_failures=settings.sign_in_address_failures,
            window=timedelta(minutes=settings.sign_in_window_minutes),
            lockout=timedelta(minutes=settings.sign_in_lockout_minutes),
        )


def sign_in(
    session: Session,
    *,
    email: str,
    password: str,
    address: str,
    limits: SignInLimits,
    now: datetime | None = None,
) -> Agent | None:
    """The agent with these credentials, or None; TooManyAttempts while locked out.

    The attempt, and for a failure its audit event (never the password), are added to the
    session: the caller commits them whatever the answer.
    """
    now = now or utcnow()
    typed, address = email.strip()[:MAX_EMAIL], (address or "unknown")[:MAX_ADDRESS]
    account = typed.lower()
    if _locked(session, account, address, limits, now):
        raise TooManyAttempts(f"sign-in refused for {account!r} from {address}: locked out")
    agent = agents.authenticate(session, typed, password)
    session.add(SignInAttempt(email=account, client_address=address, succeeded=bool(agent), at=now))
    if agent is None:
        audit.record(
            session, actor="anonymous", event="agent.sign_in_failed", email=typed, address=address
        )
        session.flush()
        _audit_new_lockouts(session, typed, account, address, limits, now)
    return agent


def _locked(
    session: Session, account: str, address: str, limits: SignInLimits, now: datetime
) -> bool:
    """True while the account or the client address serves a lockout."""
    account_until = _locked_until(
        _account_failures(session, account, limits, now), limits.account_failures, limits
    )
    address_until = _locked_until(
        _address_failures(session, address, limits, now), limits.address_failures, limits
    )
    return any(until is not None and now < until for until in (account_until, address_until))


def _audit_new_lockouts(
    session: Session, typed: str, account: str, address: str, limits: SignInLimits, now: datetime
) -> None:
    """Audit each lockout this failure has just started (there was none a moment ago)."""
    scopes = (
        ("account", _account_failures(session, account, limits, now), limits.account_failures),
        ("address", _address_failures(session, address, limits, now), limits.address_failures),
    )
    for scope, failures, limit in scopes:
        until = _locked_until(failures, limit, limits)
        if until is not None and now < until:
            audit.record(
                session,
                actor="anonymous",
                event="agent.sign_in_locked",
                scope=scope,
                email=typed,
                address=address,
                until=until.isoformat(),
            )


def _locked_until(
    failures: Sequence[datetime], limit: int, limits: SignInLimits
) -> datetime | None:
    """When the latest lockout these failures earned ends, or None if they earned none.

    A lockout starts at the failure that makes ``limit`` failures within the window.
    """
    until = None
    for last in range(limit - 1, len(failures)):
        if failures[last] - failures[last - limit + 1] <= limits.window:
            until = failures[last] + limits.lockout
    return until


def _recent(limits: SignInLimits, now: datetime) -> datetime:
    # Older failures can no longer belong to a lockout that is still running.
    return now - limits.window - limits.lockout


def _account_failures(
    session: Session, account: str, limits: SignInLimits, now: datetime
) -> list[datetime]:
    last_success = session.scalar(
        select(func.max(SignInAttempt.at)).where(
            SignInAttempt.email == account, SignInAttempt.succeeded.is_(True)
        )
    )
    since = max(filter(None, [last_success, _recent(limits, now)]))
    return list(
        session.scalars(
            select(SignInAttempt.at)
            .where(
                SignInAttempt.email == account,
                SignInAttempt.succeeded.is_(False),
                SignInAttempt.at > since,
            )
            .order_by(SignInAttempt.at)
        )
    )


def _address_failures(
    session: Session, address: str, limits: SignInLimits, now: datetime
) -> list[datetime]:
    return list(
        session.scalars(
            select(SignInAttempt.at)
            .where(
                SignInAttempt.client_address == address,
                SignInAttempt.succeeded.is_(False),
                SignInAttempt.at > _recent(limits, now),
            )
            .order_by(SignInAttempt.at)
        )
    )
