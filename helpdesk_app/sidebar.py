"""The ticket sidebar: the requester's Stripe customer and charges."""

from __future__ import annotations

from flask import Blueprint, abort, render_template

from core.db.models import Ticket
from core.errors import BillingDeskError
from helpdesk_app.services import get_services, get_session

bp = Blueprint("sidebar", __name__, url_prefix="/sidebar")


@bp.get("/tickets/<int:ticket_id>")
def ticket_sidebar(ticket_id: int) -> str:
    """Stripe context for a ticket's requester; Stripe trouble is shown, not raised."""
    ticket = get_session().get(Ticket, ticket_id)
    if ticket is None:
        abort(404, "No such ticket.")
    gateway = get_services().gateway
    customers, charges, problem = [], [], None
    try:
        if ticket.stripe_customer_id:
            customers = [gateway.get_customer(ticket.stripe_customer_id)]
        else:
            customers = gateway.find_customers_by_email(ticket.requester_email)
        if len(customers) == 1:
            charges = gateway.list_charges(customers[0].id)
    except BillingDeskError as exc:
        problem = exc.public_message
    return render_template(
        "sidebar.html", ticket=ticket, customers=customers, charges=charges, problem=problem
    )
