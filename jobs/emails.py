"""send_refund_confirmation: tell the customer the refund amount, its Stripe ID and the timeline."""

from __future__ import annotations

import email.utils
from email.message import EmailMessage

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import actions, audit
from core.db import session_scope
from core.db.models import Action, OutboundEmail, Ticket, TicketMessage, utcnow
from core.domain import ActionStatus, MessageKind
from core.helpdesks import make_helpdesk
from jobs import queues, runtime
from jobs.tickets import close_after_refund
from mail.conversations import subject_token
from mail.outgoing import render_email
from mail.smtp import send_message

TEMPLATE = "refund_confirmation"


def send_refund_confirmation(action_id: int) -> str:
    """Email the refund confirmation once, add it to the thread, then queue the ticket's close."""
    rt = runtime.current()
    key = f"refund-confirmation:{action_id}"
    with session_scope(rt.session_factory) as session:
        action = session.get(Action, action_id)
        if action is None or action.status != ActionStatus.SUCCEEDED or action.ticket_id is None:
            return "nothing to confirm"
        outbound = session.scalar(select(OutboundEmail).where(OutboundEmail.dedupe_key == key))
        if outbound is None or outbound.status != "sent":
            message = _build(session, rt, action, outbound)
            if outbound is None:
                outbound = OutboundEmail(
                    dedupe_key=key,
                    ticket_id=action.ticket_id,
                    action_id=action.id,
                    to_address=str(message["To"]),
                    subject=str(message["Subject"]),
                    message_id=str(message["Message-ID"]),
                )
                session.add(outbound)
            session.commit()
            # A crash between this send and the commit below means one resend with the same
            # Message-ID on retry: mail is at-least-once, never silently lost.
            send_message(message, rt.smtp)
            outbound.status = "sent"
            outbound.sent_at = utcnow()
            make_helpdesk(rt.settings.helpdesk, session).add_message(
                action.ticket_id,
                kind=MessageKind.OUTBOUND,
                author=rt.settings.mail_from,
                body=message.get_body(("plain",)).get_content(),  # type: ignore[union-attr]
                message_id=outbound.message_id,
            )
            audit.record(
                session,
                actor="billing-desk",
                event="email.sent",
                ticket_id=action.ticket_id,
                action_id=action.id,
                template=TEMPLATE,
                to=outbound.to_address,
            )
    queues.enqueue_once(
        rt.queue(queues.ACTIONS), close_after_refund, action_id, job_id=f"close-{action_id}"
    )
    return "sent"


def _build(
    session: Session, rt: runtime.Runtime, action: Action, outbound: OutboundEmail | None
) -> EmailMessage:
    ticket = session.get(Ticket, action.ticket_id)
    assert ticket is not None
    first_inbound = session.scalar(
        select(TicketMessage)
        .where(TicketMessage.ticket_id == ticket.id, TicketMessage.kind == MessageKind.INBOUND)
        .order_by(TicketMessage.id)
        .limit(1)
    )
    thread_id = first_inbound.message_id if first_inbound else None
    context = {
        "customer_name": ticket.requester_name,
        "amount": str(actions.action_amount(action)),
        "refund_id": action.stripe_object_id,
        "ticket_token": subject_token(ticket.id),
        "support_name": email.utils.parseaddr(rt.settings.mail_from)[0] or "Billing Support",
    }
    subject = f"Your refund has been issued {subject_token(ticket.id)}"
    message = render_email(
        rt.settings.email_templates_dir,
        TEMPLATE,
        context,
        sender=rt.settings.mail_from,
        to=ticket.requester_email,
        subject=subject,
        in_reply_to=thread_id,
    )
    if outbound is not None:
        # A resend after a crash keeps the first attempt's Message-ID, so it threads as one.
        message.replace_header("Message-ID", outbound.message_id)
    return message
