"""Reconcile against the fake Stripe: it fills an empty mirror, repairs a broken one, says what
it changed, and the drift check escalates what it had to repair."""

from __future__ import annotations

import dataclasses

import pytest
from fake_stripe_support import fake_post
from sqlalchemy import func, select

from core.db import session_scope
from core.db.models import (
    Escalation,
    StripeCharge,
    StripeCustomer,
    StripeDispute,
    StripeEvent,
    StripeIncident,
    StripeRefund,
    StripeSubscription,
    Ticket,
)
from core.domain import EscalationTarget
from jobs import reconcile as reconcile_module
from jobs import schedule
from jobs.reconcile import reconcile


def _paying_customer(client, name: str):
    cus = client.v1.customers.create(params={"name": name, "email": f"{name}@example.com"})
    pm = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )
    client.v1.payment_methods.attach(pm.id, params={"customer": cus.id})
    client.v1.customers.update(
        cus.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    return cus, pm


@pytest.fixture
def stripe_account(fake_stripe, stripe_client):
    """Two customers, three charges, a refund, a dispute and a subscription in the fake."""
    ann, ann_card = _paying_customer(stripe_client, "ann")
    bob, bob_card = _paying_customer(stripe_client, "bob")
    charges = [
        stripe_client.v1.charges.create(
            params={"amount": amount, "currency": "usd", "customer": cus.id, "source": card.id}
        )
        for cus, card, amount in (
            (ann, ann_card, 1500),
            (ann, ann_card, 900),
            (bob, bob_card, 4000),
        )
    ]
    stripe_client.v1.refunds.create(params={"charge": charges[1].id})
    fake_post(fake_stripe, "/_config/disputes", charge=charges[2].id, reason="fraudulent")
    plan = stripe_client.v1.plans.create(
        params={"amount": 4900, "currency": "usd", "interval": "month", "product": {"name": "P"}}
    )
    stripe_client.v1.subscriptions.create(
        params={"customer": bob.id, "items": [{"price": plan.id}]}
    )
    return {"ann": ann, "bob": bob, "charges": charges}


def _ids(rt, kind: str) -> set[str]:
    return {obj["id"] for obj in rt.gateway.iter_objects(kind)}


def test_reconcile_fills_an_empty_mirror_with_what_stripe_lists(
    rt, stripe_account, session_factory
):
    summary = reconcile(rt)
    for kind, counts in summary.kinds.items():
        assert counts.created == len(_ids(rt, kind)), kind
        assert (counts.updated, counts.unchanged, counts.removed) == (0, 0, 0), kind
    assert summary.kinds["customer"].created == 2
    assert summary.kinds["refund"].created == 1 and summary.kinds["dispute"].created == 1
    with session_scope(session_factory) as session:
        assert set(session.scalars(select(StripeCharge.id))) == _ids(rt, "charge")
        assert set(session.scalars(select(StripeSubscription.id))) == _ids(rt, "subscription")
        refund = session.scalar(select(StripeRefund))
        # A refund names only its charge: its customer comes from the charge's row.
        assert refund.charge_id == stripe_account["charges"][1].id
        assert refund.customer_id == stripe_account["ann"].id
        dispute = session.scalar(select(StripeDispute))
        assert (dispute.reason, dispute.customer_id) == ("fraudulent", stripe_account["bob"].id)
        assert dispute.evidence_due_by is not None
    assert summary.objects == sum(len(_ids(rt, k)) for k in summary.kinds)
    assert "customer: 2 created, 0 updated, 0 unchanged, 0 removed" in summary.lines()

    again = reconcile(rt)
    assert all(c.created == c.updated == c.removed == 0 for c in again.kinds.values())
    assert again.kinds["charge"].unchanged == len(_ids(rt, "charge"))


def _break_the_mirror(session_factory, stripe_account) -> str:
    """A wrong charge status, a lost refund, a customer Stripe never had; returns the charge."""
    charge_id = stripe_account["charges"][0].id
    with session_scope(session_factory) as session:
        session.get(StripeCharge, charge_id).status = "failed"
        session.delete(session.scalar(select(StripeRefund)))
        session.merge(
            StripeCustomer(id="cus_ghost", customer_id="cus_ghost", event_created=1, deleted=False)
        )
    return charge_id


def test_reconcile_repairs_a_deliberately_broken_mirror(rt, stripe_account, session_factory):
    reconcile(rt)
    charge_id = _break_the_mirror(session_factory, stripe_account)
    summary = reconcile(rt)
    assert (summary.kinds["charge"].updated, summary.kinds["charge"].created) == (1, 0)
    assert summary.kinds["refund"].created == 1
    assert summary.kinds["customer"].removed == 1
    assert summary.kinds["subscription"].updated == summary.kinds["subscription"].removed == 0
    with session_scope(session_factory) as session:
        assert session.get(StripeCharge, charge_id).status == "succeeded"
        assert session.scalar(select(func.count()).select_from(StripeRefund)) == 1
        assert session.get(StripeCustomer, "cus_ghost").deleted is True


def test_an_event_newer_than_the_walk_is_kept(rt, stripe_account, session_factory):
    reconcile(rt)
    customer_id = stripe_account["ann"].id
    with session_scope(session_factory) as session:
        row = session.get(StripeCustomer, customer_id)
        row.name, row.event_created = "Renamed a moment ago", 2**40  # a newer event's state
    summary = reconcile(rt, ["customer"])
    assert summary.kinds["customer"].updated == 0
    with session_scope(session_factory) as session:
        assert session.get(StripeCustomer, customer_id).name == "Renamed a moment ago"


def test_the_drift_check_escalates_what_it_repaired_once_then_ends_the_incident(
    rt, stripe_account, session_factory, run_worker, monkeypatch
):
    assert schedule.check_drift() == 0  # an empty mirror: nothing to compare with yet
    reconcile(rt)
    assert schedule.check_drift() == 0
    # The fake's objects are seconds old: count them as settled (a grace in the future).
    monkeypatch.setattr(reconcile_module, "DRIFT_GRACE_SECONDS", -86400)
    _break_the_mirror(session_factory, stripe_account)
    assert schedule.check_drift() == 3
    _break_the_mirror(session_factory, stripe_account)
    assert schedule.check_drift() == 3  # the same incident: a note, not a second ticket
    run_worker()
    with session_scope(session_factory) as session:
        [ticket] = session.scalars(select(Ticket))
        assert ticket.subject == "Stripe sync error: the mirror drifted from Stripe (3 objects)"
        assert len([m for m in ticket.messages if "Another Stripe sync error" in m.body]) == 1
        [escalation] = session.scalars(select(Escalation))
        assert escalation.target == EscalationTarget.ENGINEERING_PLATFORM
        assert "customer cus_ghost removed" in escalation.reason
    assert schedule.check_drift() == 0  # clean: the incident ends
    with session_scope(session_factory) as session:
        assert session.scalar(select(StripeIncident.resolved_at)) is not None


def test_events_that_never_reached_us_are_recovered_from_stripes_list_once(
    rt, stripe_client, session_factory, run_worker, monkeypatch
):
    """No endpoint took the fake's deliveries (as when a secret is wrong or the endpoint was
    down past Stripe's retries): the hourly check finds the events in Stripe's list, handles
    them, and tells Engineering once."""
    monkeypatch.setattr(schedule, "DELIVERY_GRACE_SECONDS", -60)  # the fake's events are new
    made = stripe_client.v1.customers.create(params={"name": "Never Delivered"})
    assert schedule.check_missed_events() == 0  # no endpoint configured: nothing was missed
    monkeypatch.setattr(
        rt, "settings", dataclasses.replace(rt.settings, stripe_webhook_secret="whsec_x")
    )

    missed = schedule.check_missed_events()
    assert missed >= 1
    assert schedule.check_missed_events() == 0  # recorded now: not missed again
    run_worker()

    with session_scope(session_factory) as session:
        assert session.get(StripeCustomer, made.id).name == "Never Delivered"
        kinds = {e.type for e in session.scalars(select(StripeEvent))}
        assert "customer.created" in kinds
        [escalation] = session.scalars(select(Escalation))
        assert escalation.target == EscalationTarget.ENGINEERING_PLATFORM
        assert "our endpoint never recorded" in escalation.reason
