"""Finance answers a dispute in Stripe: submit the assembled evidence, or accept (close) it.

Only Finance or an admin may, judged from our own agent records in the sidebar and again just
before the worker runs the step. The evidence submitted is exactly what Finance reviewed: the
step names the stored evidence (jobs.disputes assembled it on the dispute's ticket) and its
digest, and refuses if they no longer match.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core import agents
from core.actions.base import (
    ActionType,
    Ask,
    Effects,
    Outcome,
    Proposal,
    Requested,
    StepRefused,
    idempotency_key,
    params_of,
    stripe_key,
)
from core.billing_context import BillingContext
from core.db.models import Action
from core.domain import ActionKind, Dispute, Role
from core.errors import InvalidInput
from core.evidence import evidence_digest
from core.policy import Decision
from core.policy.disputes import judge_dispute_action

# Statuses a dispute takes once its evidence is in (or once it is accepted): a re-run finds
# the step already done in Stripe.
_SUBMITTED = frozenset(["under_review", "warning_under_review", "appeal_under_review"])
_ACCEPTED = frozenset(["lost", "warning_closed"])


def evidence_step(actions: list[Action], dispute_id: str) -> Action | None:
    """The step that carries the evidence assembled for a dispute (its Finance escalation)."""
    for action in reversed(actions):
        params = action.params or {}
        if params.get("dispute_id") == dispute_id and isinstance(params.get("evidence"), dict):
            return action
    return None


def _dispute_in(context: BillingContext, dispute_id: str) -> Dispute | None:
    return next((d for d in context.disputes if d.id == dispute_id), None)


def _chosen_dispute(context: BillingContext, form: Mapping[str, str]) -> Dispute:
    """The dispute the form names, among this customer's; InvalidInput for any other."""
    value = (form.get("dispute_id") or "").strip()
    found = _dispute_in(context, value) if value.startswith("dp_") and len(value) <= 64 else None
    if found is None:
        raise InvalidInput("Choose one of this customer's disputes.")
    return found


class _DisputeAction(ActionType):
    """What submitting and accepting share: the same judgement, in the sidebar and at the
    worker, on the dispute as Stripe has it then."""

    def judge(self, ask: Ask, requested: Requested) -> Decision:
        """Finance or an admin, on an open dispute of this customer that takes a response."""
        dispute = _dispute_in(ask.context, str(requested.params.get("dispute_id")))
        return judge_dispute_action(self.kind, ask.asking.requester_role, dispute)

    def _target(self, dispute: Dispute) -> str:
        return f"{dispute.amount} dispute {dispute.id} ({dispute.reason.replace('_', ' ')})"

    def _now(
        self, action: Action, fx: Effects, done: frozenset[str], evidence_as_reviewed: bool = True
    ) -> Dispute | None:
        """The dispute now; None when this step's work is already done in Stripe (a re-run).
        StepRefused unless the requester, by our records now, may still do it."""
        dispute_id = str(params_of(action).get("dispute_id"))
        dispute = fx.gateway.get_dispute(dispute_id)
        if dispute.status in done:
            return None
        charge = fx.gateway.get_charge(dispute.charge_id)
        with fx.transaction() as session:
            person = agents.find_by_email(session, action.requested_by)
            role = Role(person.role) if person is not None and person.active else None
        decision = judge_dispute_action(
            self.kind,
            role,
            dispute,
            on_this_customer=charge.customer_id == action.stripe_customer_id,
            evidence_as_reviewed=evidence_as_reviewed,
        )
        if not decision.allowed:
            raise StepRefused(decision)
        return dispute


class SubmitDisputeEvidence(_DisputeAction):
    """Send the assembled evidence to the bank through Stripe (``submit=true``)."""

    kind = ActionKind.SUBMIT_DISPUTE_EVIDENCE

    def propose(self, ask: Ask, form: Mapping[str, str]) -> Proposal:
        """The evidence Finance is about to submit, field by field."""
        dispute = _chosen_dispute(ask.context, form)
        dispute_id = dispute.id
        step = evidence_step(ask.context.ticket_actions, dispute_id)
        if step is None:
            raise InvalidInput(
                f"No evidence was assembled for dispute {dispute_id} on this ticket."
            )
        fields: dict[str, Any] = dict(step.params["evidence"])
        digest = evidence_digest(fields)
        requested = Requested(
            self.kind,
            idempotency_key(self.kind, ask.context.ticket.id, dispute_id, digest),
            params={"dispute_id": dispute_id, "evidence_step": step.id, "digest": digest},
        )
        shown = tuple(
            f"{name}: {value[:300]}{'…' if len(value) > 300 else ''}"
            for name, value in sorted(fields.items())
        )
        return Proposal(
            requested,
            f"Submit the evidence for dispute {dispute_id} to the bank",
            self._target(dispute),
            self.judge(ask, requested),
            details=(
                "Sent as Stripe's evidence fields and submitted at once (submit=true):",
                *shown,
            ),
        )

    def describe(self, action: Action) -> str:
        """``Submit evidence for dispute dp_…``."""
        return f"Submit evidence for dispute {params_of(action).get('dispute_id')}"

    def execute(self, action: Action, fx: Effects) -> Outcome:
        """Submit what Finance reviewed, once; a re-run after success finds it submitted."""
        params = params_of(action)
        with fx.transaction() as session:
            step = session.get(Action, int(params["evidence_step"]))
            fields = dict((step.params or {}).get("evidence") or {}) if step else {}
        reviewed = bool(fields) and evidence_digest(fields) == params.get("digest")
        dispute = self._now(action, fx, _SUBMITTED, evidence_as_reviewed=reviewed)
        if dispute is None:
            return Outcome(
                str(params["dispute_id"]),
                f"Evidence for dispute {params['dispute_id']} is submitted; the bank decides.",
            )
        submitted = fx.gateway.submit_dispute_evidence(
            dispute.id, fields, idempotency_key=stripe_key(action)
        )
        return Outcome(
            submitted.id,
            f"Evidence submitted for dispute {submitted.id} ({', '.join(sorted(fields))}); "
            f"Stripe says {submitted.status.replace('_', ' ')}. The bank decides.",
            detail={"dispute": submitted.id, "fields": sorted(fields), "digest": params["digest"]},
        )


class AcceptDispute(_DisputeAction):
    """Accept a dispute: Stripe closes it as lost. Irreversible."""

    kind = ActionKind.ACCEPT_DISPUTE

    def propose(self, ask: Ask, form: Mapping[str, str]) -> Proposal:
        """Closing the dispute, said plainly: the money stays with the cardholder, for good."""
        dispute = _chosen_dispute(ask.context, form)
        dispute_id = dispute.id
        requested = Requested(
            self.kind,
            idempotency_key(self.kind, ask.context.ticket.id, dispute_id),
            params={"dispute_id": dispute_id},
        )
        return Proposal(
            requested,
            f"Accept dispute {dispute_id} (close it as lost)",
            self._target(dispute),
            self.judge(ask, requested),
            details=(
                "This cannot be undone: Stripe closes the dispute as lost and no evidence can "
                "be sent afterwards.",
            ),
        )

    def describe(self, action: Action) -> str:
        """``Accept dispute dp_… (closed as lost)``."""
        return f"Accept dispute {params_of(action).get('dispute_id')} (closed as lost)"

    def execute(self, action: Action, fx: Effects) -> Outcome:
        """Close the dispute, once; a re-run after success finds it closed."""
        dispute_id = str(params_of(action).get("dispute_id"))
        dispute = self._now(action, fx, _ACCEPTED)
        if dispute is None:
            return Outcome(dispute_id, f"Dispute {dispute_id} is accepted (closed as lost).")
        closed = fx.gateway.close_dispute(dispute.id, idempotency_key=stripe_key(action))
        return Outcome(
            closed.id,
            f"Dispute {closed.id} accepted: Stripe closed it as "
            f"{closed.status.replace('_', ' ')}; {closed.amount} stays with the cardholder.",
            detail={"dispute": closed.id, "status": closed.status},
        )
