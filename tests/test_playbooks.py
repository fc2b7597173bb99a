"""The playbooks' decisions, pure: facts in, a triage out (no servers needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.customers import match_sender
from core.domain import ActionKind, Category, Charge, Customer, Money, Subscription
from core.playbooks import Next, TicketFacts, dispute_acknowledgement, plan_ticket
from core.policy import Mode, PolicyConfig

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
PAT = Customer("cus_pat", "pat@example.com", "Pat")


def paid(charge_id: str, days_ago: float, amount: int = 4900, invoice: str | None = None):
    at = NOW - timedelta(days=days_ago)
    return Charge(
        charge_id, PAT.id, Money(amount, "usd"), 0, at, "succeeded", True, False, invoice_id=invoice
    )


def subscription(sub_id: str, status: str = "active", **changes) -> Subscription:
    fields = {
        "id": sub_id,
        "customer_id": PAT.id,
        "status": status,
        "plan_name": "Pro",
        "price": Money(4900, "usd"),
        "interval": "month",
        "current_period_start": NOW - timedelta(days=3),
        "current_period_end": NOW + timedelta(days=27),
        **changes,
    }
    return Subscription(**fields)


def facts(category: Category, **changes) -> TicketFacts:
    changes.setdefault("sender_authenticated", True)
    return TicketFacts(category, match_sender(PAT.email or "", [PAT]), NOW, "email-1", **changes)


def kinds(triage) -> tuple[ActionKind, ...]:
    return tuple(step.kind for step in triage.plan.steps) if triage.plan else ()


def test_a_charge_for_another_live_subscription_is_not_one_after_the_cancellation():
    cancelled = subscription("sub_old", "canceled", canceled_at=NOW - timedelta(days=10))
    live = subscription("sub_new", latest_invoice_id="in_new")
    charges = [paid("ch_new", 2, invoice="in_new")]
    triage = plan_ticket(
        facts(Category.CHARGE_AFTER_CANCELLATION, charges=charges, subscriptions=[cancelled, live]),
        PolicyConfig(),
    )
    assert ActionKind.REFUND not in kinds(triage)
    assert kinds(triage) == (ActionKind.REPLY, ActionKind.ESCALATE)
    assert triage.plan.steps[1].params["target"] == "support_lead"


def test_a_charge_after_the_cancellation_is_refunded_prorated():
    cancelled = subscription("sub_old", "canceled", canceled_at=NOW - timedelta(days=10))
    charges = [paid("ch_after", 3), paid("ch_before", 33)]
    triage = plan_ticket(
        facts(Category.CHARGE_AFTER_CANCELLATION, charges=charges, subscriptions=[cancelled]),
        PolicyConfig(),
    )
    assert triage.next is Next.AUTO
    refund = triage.plan.steps[0]
    assert (refund.charge_id, refund.amount) == ("ch_after", Money(4900, "usd"))
    assert "before the period began" in refund.params["prorated"]["explanation"]


def test_a_locked_out_cancellation_is_at_period_end_even_when_asked_for_now():
    triage = plan_ticket(
        facts(
            Category.CANCELLATION_REQUEST,
            subscriptions=[subscription("sub_1")],
            locked_out=True,
            wants_immediate=True,
        ),
        PolicyConfig(),
    )
    cancel = triage.plan.steps[0]
    assert (cancel.kind, cancel.params["at_period_end"]) == (ActionKind.CANCEL_SUBSCRIPTION, True)
    assert "agent's decision" in triage.reason


def test_an_unauthenticated_sender_gets_no_cancellation_and_no_secure_link():
    locked = plan_ticket(
        facts(
            Category.CANCELLATION_REQUEST,
            subscriptions=[subscription("sub_1")],
            locked_out=True,
            sender_authenticated=False,
        ),
        PolicyConfig(),
    )
    assert locked.next is Next.SUGGEST and locked.plan.suggested
    assert [s.kind for s in locked.acknowledgement.steps] == [ActionKind.REPLY]
    pointer = plan_ticket(
        facts(
            Category.CANCELLATION_REQUEST,
            subscriptions=[subscription("sub_1")],
            sender_authenticated=False,
        ),
        PolicyConfig(),
    )
    # The self-service pointer still goes out, without a link into the account.
    assert kinds(pointer) == (ActionKind.REPLY, ActionKind.CLOSE)
    assert not pointer.plan.suggested


def test_suggest_mode_turns_every_step_into_a_suggestion_ack_included():
    config = PolicyConfig(category_modes={Category.UNUSED_MODULE: Mode.SUGGEST})
    triage = plan_ticket(facts(Category.UNUSED_MODULE), config)
    assert triage.plan.suggested and triage.acknowledgement is None
    assert kinds(triage) == (ActionKind.REPLY, ActionKind.ESCALATE)


def test_off_mode_leaves_the_ticket_to_people_with_nothing_sent():
    config = PolicyConfig(category_modes={Category.OTHER: Mode.OFF})
    triage = plan_ticket(facts(Category.OTHER), config)
    assert (triage.next, triage.plans) == (Next.AGENT, ())


def test_a_refund_request_over_the_limit_goes_to_the_support_lead():
    triage = plan_ticket(
        facts(Category.REFUND_REQUEST, charges=[paid("ch_big", 1, amount=90000)]),
        PolicyConfig(),
    )
    assert ActionKind.REFUND not in kinds(triage)
    assert triage.plan.steps[1].params["target"] == "support_lead"
    assert "$500" in triage.reason


def test_a_refund_request_names_the_charge_by_its_amount():
    charges = [paid("ch_pro", 1), paid("ch_addon", 2, amount=1900)]
    triage = plan_ticket(
        facts(Category.REFUND_REQUEST, charges=charges, amounts_mentioned=(Money(1900, "usd"),)),
        PolicyConfig(),
    )
    assert triage.plan.steps[0].charge_id == "ch_addon"


def test_an_email_onto_a_dispute_ticket_is_acknowledged_once_per_ticket_in_auto_mode():
    draft = dispute_acknowledgement(7, "cus_1", PolicyConfig())
    assert draft is not None and draft.key == "dispute-ticket-7:ack"  # one per ticket
    (step,) = draft.steps
    assert step.kind is ActionKind.REPLY and step.params["template"] == "chargeback_acknowledgement"
    assert step.decision is not None and step.decision.allowed and not draft.suggested
    suggest = PolicyConfig(category_modes={Category.CHARGEBACK: Mode.SUGGEST})
    assert dispute_acknowledgement(7, "cus_1", suggest) is None
