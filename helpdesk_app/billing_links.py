"""Links we email to customers: the update-payment-method link opens Stripe's billing portal."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template
from werkzeug.wrappers import Response

from core import audit
from core.errors import InvalidInput
from core.links import read_update_card_token
from helpdesk_app.services import get_services, get_session

bp = Blueprint("billing_links", __name__, url_prefix="/billing")


@bp.get("/update-card/<token>")
def update_card(token: str) -> Response | tuple[str, int]:
    """Open a fresh Stripe billing portal session for the link's customer, at click time."""
    services = get_services()
    services.settings.require_secret_key()
    assert services.settings.secret_key is not None
    try:
        customer_id, action_id = read_update_card_token(
            services.settings.secret_key,
            token,
            max_age_seconds=services.settings.update_card_link_ttl_hours * 3600,
        )
    except InvalidInput:
        return render_template("billing_link.html", expired=True), 410
    url = services.gateway.create_portal_session(
        customer_id, return_url=f"{services.settings.public_url}/billing/card-updated"
    )
    db = get_session()
    audit.record(
        db,
        actor="customer",
        event="update_card_link.opened",
        action_id=action_id,
        stripe_customer_id=customer_id,
    )
    db.commit()
    return redirect(url, code=303)


@bp.get("/card-updated")
def card_updated() -> str:
    """Where Stripe's portal sends the customer back."""
    return render_template("billing_link.html", expired=False)
