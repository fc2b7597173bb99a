"""Send an EmailMessage over SMTP: STARTTLS or implicit TLS, authentication, timeouts."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage

from core.errors import MailDeliveryError
from core.settings import Settings


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to hand over outgoing mail."""

    host: str
    port: int
    starttls: bool = True
    implicit_tls: bool = False
    user: str | None = None
    password: str | None = None
    timeout: int = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpConfig:
        """The SMTP part of the settings."""
        settings.require_smtp()
        assert settings.smtp_host is not None
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            starttls=settings.smtp_starttls,
            implicit_tls=settings.smtp_ssl,
            user=settings.smtp_user,
            password=settings.smtp_password,
            timeout=settings.smtp_timeout,
        )


def send_message(message: EmailMessage, config: SmtpConfig) -> None:
    """Deliver one message to the SMTP server, or raise MailDeliveryError (retryable)."""
    context = ssl.create_default_context()
    try:
        if config.implicit_tls:
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                config.host, config.port, timeout=config.timeout, context=context
            )
        else:
            client = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
        with client:
            if config.starttls and not config.implicit_tls:
                client.starttls(context=context)
            if config.user:
                client.login(config.user, config.password or "")
            client.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise MailDeliveryError(f"SMTP {config.host}:{config.port}: {exc}") from exc
