"""Customer emails with a Stripe result: refund confirmations and update-payment-method links.

Each is sent once per action (an OutboundEmail row keyed by purpose and action). For a ticket
mirrored from Zendesk or Help Scout the message goes out as that helpdesk's public reply, so it
threads there; built-in tickets get it over SMTP.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import actions, audit
from core.db import session_scope
from core.db.models import Action, OutboundEmail, Ticket, TicketMessage, utcnow
from core.domain import ActionStatus, HelpdeskName, MessageKind, OutboundStatus
from core.helpdesks import helpdesk_for_ticket
from core.links import update_card_token
from jobs import queues, runtime
from jobs.tickets import close_after_refund
from mail.conversations import subject_token
from mail.loop_guard import auto_reply_limit_reason
from mail.outgoing import render_email
from mail.smtp import send_message

REFUND_TEMPLATE = "refund_confirmation"
UPDATE_CARD_TEMPLATE = "update_payment_method"


def send_refund_confirmation(action_id: int) -> str:
    """Email the refund confirmation once, add it to the thread, then queue the ticket's close."""
    rt = runtime.current()
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        if action is None or action.status != ActionStatus.SUCCEEDED or action.ticket_id is None:
            return "nothing to confirm"
        context = {
            "amount": str(actions.action_amount(action)),
            "refund_id": action.stripe_object_id,
        }
        _send_once(
            session,
            rt,
            action,
            template=REFUND_TEMPLATE,
            subject="Your refund has been issued",
            context=context,
        )
    queues.enqueue_once(
        rt.queue(queues.ACTIONS), close_after_refund, action_id, job_id=f"close-{action_id}"
    )
    return "sent"


def send_update_card_link(action_id: int) -> str:
    """Email the customer a link that opens Stripe's payment-method update when clicked."""
    rt = runtime.current()
    rt.settings.require_secret_key()
    assert rt.settings.secret_key is not None
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        if action is None or action.status != ActionStatus.SUCCEEDED or action.ticket_id is None:
            return "nothing to send"
        assert action.stripe_customer_id is not None
        token = update_card_token(rt.settings.secret_key, action.stripe_customer_id, action.id)
        context = {
            "link": f"{rt.settings.public_url}/billing/update-card/{token}",
            "valid_hours": rt.settings.update_card_link_ttl_hours,
        }
        _send_once(
            session,
            rt,
            action,
            template=UPDATE_CARD_TEMPLATE,
            subject="Update your payment method",
            context=context,
            to=(action.params or {}).get("email"),
        )
    return "sent"


def _send_once(
    session: Session,
    rt: runtime.Runtime,
    action: Action,
    *,
    template: str,
    subject: str,
    context: Mapping[str, Any],
    to: str | None = None,
) -> None:
    """Send one templated email for an action unless it was sent already; record it."""
    assert action.ticket_id is not None
    key = f"{template}:{action.id}"
    outbound = session.scalar(select(OutboundEmail).where(OutboundEmail.dedupe_key == key))
    if outbound is not None and outbound.status in (
        OutboundStatus.SENT,
        OutboundStatus.RATE_LIMITED,
    ):
        return
    ticket = session.get(Ticket, action.ticket_id)
    assert ticket is not None
    message = _build(session, rt, ticket, template, subject, context, to, outbound)
    # A first attempt only: a retry after a crash was counted, and may have gone out already.
    over_limit = outbound is None and auto_reply_limit_reason(
        session, str(message["To"]), rt.settings.auto_reply_limit_per_hour
    )
    if over_limit:
        # Recorded as held back, so a rerun of the job does not try (or note) it again.
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
        helpdesk_for_ticket(session, ticket.id, rt.settings).add_internal_note(
            ticket.id,
            f"Not sent: the {template.replace('_', ' ')} email. {over_limit} "
            "Send it by hand if the customer still needs it.",
            author="billing-desk",
        )
        _audit_email(session, action, "email.rate_limited", template, str(message["To"]))
        return
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
    session.commit()
    body = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    helpdesk = helpdesk_for_ticket(session, ticket.id, rt.settings)
    if ticket.helpdesk == HelpdeskName.LOCAL:
        # A crash between this send and the commit below means one resend with the same
        # Message-ID on retry: mail is at-least-once, never silently lost.
        send_message(message, rt.smtp)
    # For Zendesk and Help Scout this posts the public reply; locally it records the thread.
    helpdesk.add_message(
        ticket.id,
        kind=MessageKind.OUTBOUND,
        author=rt.settings.mail_from,
        body=body,
        message_id=outbound.message_id,
    )
    outbound.status = OutboundStatus.SENT
    outbound.sent_at = utcnow()
    _audit_email(session, action, "email.sent", template, outbound.to_address)


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


def _build(
    session: Session,
    rt: runtime.Runtime,
    ticket: Ticket,
    template: str,
    subject: str,
    context: Mapping[str, Any],
    to: str | None,
    outbound: OutboundEmail | None,
) -> EmailMessage:
    first_inbound = session.scalar(
        select(TicketMessage)
        .where(TicketMessage.ticket_id == ticket.id, TicketMessage.kind == MessageKind.INBOUND)
        .order_by(TicketMessage.id)
        .limit(1)
    )
    thread_id = first_inbound.message_id if first_inbound else None
    full_context = {
        "customer_name": ticket.requester_name,
        "ticket_token": subject_token(ticket.id),
        "support_name": email.utils.parseaddr(rt.settings.mail_from)[0] or "Billing Support",
        **context,
    }
    message = render_email(
        rt.settings.email_templates_dir,
        template,
        full_context,
        sender=rt.settings.mail_from,
        to=to or ticket.requester_email,
        subject=f"{subject} {subject_token(ticket.id)}",
        in_reply_to=thread_id,
    )
    if outbound is not None:
        # A resend after a crash keeps the first attempt's Message-ID, so it threads as one.
        message.replace_header("Message-ID", outbound.message_id)
    return message
