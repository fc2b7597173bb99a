"""Links we email to customers: the update-payment-method link opens Stripe's billing portal."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template
from werkzeug.wrappers import Response

from core.errors import AlreadyUsed, InvalidInput
from core.links import open_update_card_link
from helpdesk_app.services import get_services, get_session

bp = Blueprint("billing_links", __name__, url_prefix="/billing")


@bp.get("/update-card/<token>")
def update_card(token: str) -> Response | tuple[str, int]:
    """Open a fresh Stripe billing portal session for the link's customer, once, at click time."""
    services = get_services()
    services.settings.require_secret_key()
    assert services.settings.secret_key is not None
    db = get_session()
    try:
        url = open_update_card_link(
            db,
            services.gateway,
            secret_key=services.settings.secret_key,
            token=token,
            max_age_seconds=services.settings.update_card_link_ttl_hours * 3600,
            return_url=f"{services.settings.public_url}/billing/card-updated",
        )
    except InvalidInput:
        return render_template("billing_link.html", state="expired"), 410
    except AlreadyUsed:
        db.commit()  # the refused second use stays in the audit trail
        return render_template("billing_link.html", state="used"), 410
    db.commit()
    return redirect(url, code=303)


@bp.get("/card-updated")
def card_updated() -> str:
    """Where Stripe's portal sends the customer back."""
    return render_template("billing_link.html", state="updated")
