"""What a plan step may touch, as a worker provides it: Stripe, the database, the ticket's
helpdesk, and customer email (rendered from templates/, sent once per step)."""

from __future__ import annotations

import email.utils
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit
from core.db import session_scope
from core.db.models import Action, Escalation, OutboundEmail, Ticket, TicketMessage, utcnow
from core.domain import EscalationTarget, MessageKind, OutboundStatus
from core.helpdesks import Helpdesk
from core.policy import PolicyConfig
from core.settings import Settings
from core.stripe_gateway import StripeGateway
from jobs.runtime import Runtime
from mail.conversations import subject_token
from mail.loop_guard import auto_reply_limit_reason
from mail.outgoing import render_email
from mail.smtp import send_message

MAX_REFERENCES = 20
SENT, ALREADY_SENT, HELD_BACK = "sent", "already sent", "held back by the hourly limit"


class WorkerEffects:
    """``core.actions.base.Effects`` on a worker's runtime."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    @property
    def gateway(self) -> StripeGateway:
        """The process's Stripe gateway."""
        return self.rt.gateway

    @property
    def policy(self) -> PolicyConfig:
        """The policy the worker runs under."""
        return self.rt.policy

    @property
    def settings(self) -> Settings:
        """The deployment's settings."""
        return self.rt.settings

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A short transaction: committed on success, rolled back on error, always closed."""
        with session_scope(self.rt.session_factory) as session:
            yield session

    def helpdesk(self, session: Session, ticket_id: int) -> Helpdesk:
        """The adapter of the helpdesk that owns the ticket."""
        return self.rt.helpdesks.for_ticket(session, ticket_id)

    def now(self) -> datetime:
        """The current time (UTC)."""
        return utcnow()

    def notify_team(self, escalation: Escalation, *, template: str, subject: str) -> str:
        """Email the escalation's team, once."""
        return send_team_email(self.rt, escalation, template=template, subject=subject)

    def send_customer_email(
        self,
        action: Action,
        *,
        template: str,
        subject: str,
        context: Mapping[str, Any],
        to: str,
    ) -> str:
        """Send one templated email for a step unless it was sent already; record it first, so
        a retry after a crash resends the same message (same Message-ID) at most."""
        assert action.ticket_id is not None
        key = f"{template}:{action.id}"
        with self.transaction() as session:
            outbound = session.scalar(select(OutboundEmail).where(OutboundEmail.dedupe_key == key))
            if outbound is not None and outbound.status != OutboundStatus.PENDING:
                return ALREADY_SENT if outbound.status == OutboundStatus.SENT else HELD_BACK
            ticket = session.get(Ticket, action.ticket_id)
            assert ticket is not None
            message = self._build(
                session, ticket, template, subject, context, to, outbound, _automatic(action)
            )
            # A first attempt only: a retry after a crash was counted, and may have gone out.
            # A person's reply is no robot's: the loop breaker counts automatic mail only.
            over_limit = (
                outbound is None
                and _automatic(action)
                and auto_reply_limit_reason(
                    session, str(message["To"]), self.settings.auto_reply_limit_per_hour
                )
            )
            if over_limit:
                self._hold_back(session, action, ticket, message, key, template, over_limit)
                return HELD_BACK
            if outbound is None:
                outbound = OutboundEmail(
                    dedupe_key=key,
                    ticket_id=ticket.id,
                    action_id=action.id,
                    to_address=str(message["To"]),
                    subject=str(message["Subject"]),
                    message_id=str(message["Message-ID"]),
                )
                session.add(outbound)
        with self.transaction() as session:
            ticket = session.get(Ticket, action.ticket_id)
            outbound = session.scalar(select(OutboundEmail).where(OutboundEmail.dedupe_key == key))
            assert ticket is not None and outbound is not None
            body = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            helpdesk = self.helpdesk(session, ticket.id)
            if not helpdesk.sends_replies:
                # A crash between this send and the commit below means one resend with the
                # same Message-ID on retry: mail is at-least-once, never silently lost.
                send_message(message, self.rt.smtp)
            # For Zendesk and Help Scout this posts the public reply; locally it records it.
            helpdesk.add_message(
                ticket.id,
                kind=MessageKind.OUTBOUND,
                author=self.settings.mail_from,
                body=body,
                message_id=outbound.message_id,
            )
            outbound.status = OutboundStatus.SENT
            outbound.sent_at = utcnow()
            _audit_email(session, action, "email.sent", template, outbound.to_address)
        return SENT

    def _hold_back(
        self,
        session: Session,
        action: Action,
        ticket: Ticket,
        message: EmailMessage,
        key: str,
        template: str,
        why: str,
    ) -> None:
        """Record an email the hourly cap kept back, so a rerun neither sends nor notes it."""
        session.add(
            OutboundEmail(
                dedupe_key=key,
                ticket_id=ticket.id,
                action_id=action.id,
                to_address=str(message["To"]),
                subject=str(message["Subject"]),
                message_id=str(message["Message-ID"]),
                status=OutboundStatus.RATE_LIMITED,
            )
        )
        self.helpdesk(session, ticket.id).add_internal_note(
            ticket.id,
            f"Not sent: the {template.replace('_', ' ')} email. {why} "
            "Send it by hand if the customer still needs it.",
            author="billing-desk",
        )
        _audit_email(session, action, "email.rate_limited", template, str(message["To"]))

    def _build(
        self,
        session: Session,
        ticket: Ticket,
        template: str,
        subject: str,
        context: Mapping[str, Any],
        to: str,
        outbound: OutboundEmail | None,
        automatic: bool,
    ) -> EmailMessage:
        # Threaded onto the conversation: In-Reply-To names the customer's latest email,
        # References the chain before it (RFC 5322 §3.6.4), its newest part when long.
        thread = session.execute(
            select(TicketMessage.message_id, TicketMessage.kind)
            .where(
                TicketMessage.ticket_id == ticket.id,
                TicketMessage.kind.in_([MessageKind.INBOUND, MessageKind.OUTBOUND]),
                TicketMessage.message_id.is_not(None),
            )
            .order_by(TicketMessage.id)
        ).all()
        chain = [message_id for message_id, _kind in thread if message_id]
        latest_inbound = next(
            (m for m, kind in reversed(thread) if m and kind == MessageKind.INBOUND), None
        )
        references = [m for m in chain if m != latest_inbound][-MAX_REFERENCES:]
        settings = self.settings
        # A hosted helpdesk's email threads by its own means: our subject token is ours only.
        hosted = self.helpdesk(session, ticket.id).sends_replies
        token = "" if hosted else subject_token(ticket.id)
        message = render_email(
            settings.email_templates_dir,
            template,
            {
                "customer_name": ticket.requester_name,
                "ticket_token": token,
                "support_name": email.utils.parseaddr(settings.mail_from)[0] or "Billing Support",
                **context,
            },
            sender=settings.mail_from,
            to=to,
            subject=f"{subject} {token}".strip(),
            in_reply_to=latest_inbound,
            references=references,
            # RFC 3834: a person's reply is not automatic mail.
            auto_submitted="auto-replied" if automatic else "no",
        )
        if outbound is not None:
            # A resend after a crash keeps the first attempt's Message-ID: it threads as one.
            message.replace_header("Message-ID", outbound.message_id)
        return message


def team_email_key(template: str, escalation_id: int, team: EscalationTarget) -> str:
    """The dedupe key of one team's email about one escalation."""
    return f"{template}:{escalation_id}:{team}"


def send_team_email(
    rt: Runtime,
    escalation: Escalation,
    *,
    template: str,
    subject: str,
    team: EscalationTarget | None = None,
) -> str:
    """Tell a team (the escalation's, unless told) at its TEAM_EMAILS address about the
    ticket: recorded before it is sent, so a retry sends it once; a team without an address
    reads its inbox queue."""
    target = team or EscalationTarget(escalation.target)
    to = rt.settings.team_email(str(target))
    if to is None:
        return f"no address for {target.label} (TEAM_EMAILS): their inbox queue shows it"
    key = team_email_key(template, escalation.id, target)
    with session_scope(rt.session_factory) as session:
        outbound = session.scalar(select(OutboundEmail).where(OutboundEmail.dedupe_key == key))
        if outbound is not None and outbound.status == OutboundStatus.SENT:
            return ALREADY_SENT
        ticket = session.get(Ticket, escalation.ticket_id) if escalation.ticket_id else None
        message = render_email(
            rt.settings.email_templates_dir,
            template,
            {
                "team": target.label,
                "escalated_to": EscalationTarget(escalation.target).label,
                "ticket_id": escalation.ticket_id,
                "ticket_subject": ticket.subject if ticket else "",
                "requester": ticket.requester_email if ticket else "",
                "category": (ticket.category or "uncategorised") if ticket else "",
                "reason": escalation.reason,
                "due": f"{escalation.due_at:%d %b %Y %H:%M} UTC",
                "breached": escalation.breached_at is not None,
                "link": f"{rt.settings.public_url}/tickets/{escalation.ticket_id}",
                "support_name": email.utils.parseaddr(rt.settings.mail_from)[0] or "Billing Desk",
            },
            sender=rt.settings.mail_from,
            to=to,
            subject=subject,
            auto_submitted="auto-generated",
        )
        if outbound is None:
            outbound = OutboundEmail(
                dedupe_key=key,
                ticket_id=escalation.ticket_id,
                to_address=to,
                subject=subject[:998],
                message_id=str(message["Message-ID"]),
            )
            session.add(outbound)
        else:
            message.replace_header("Message-ID", outbound.message_id)
    send_message(message, rt.smtp)
    with session_scope(rt.session_factory) as session:
        outbound = session.scalar(select(OutboundEmail).where(OutboundEmail.dedupe_key == key))
        assert outbound is not None
        outbound.status = OutboundStatus.SENT
        outbound.sent_at = utcnow()
        audit.record(
            session,
            actor="billing-desk",
            event="email.team_notified",
            ticket_id=escalation.ticket_id,
            template=template,
            to=to,
            team=str(target),
        )
    return f"{SENT} to {to}"


def _automatic(action: Action) -> bool:
    """Sent because a playbook decided it, not because a person wrote it."""
    return action.requester_role is None


def _audit_email(session: Session, action: Action, event: str, template: str, to: str) -> None:
    audit.record(
        session,
        actor="billing-desk",
        event=event,
        ticket_id=action.ticket_id,
        action_id=action.id,
        stripe_customer_id=action.stripe_customer_id,
        template=template,
        to=to,
    )
