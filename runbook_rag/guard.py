"""The approval rules of guarded actions, and the audit record of every step.

A principal *proposes* one command of one runbook it may read; the command must be in that
runbook (the same text once whitespace is normalised), so a command a model made up can never
be proposed. ``read`` commands need no approval (status ``not_required``). Every other command
waits (``pending``) for approvals:

- ``change``: one approval, by a member of the runbook's approver groups, or by anyone else
  who may read the runbook when it names none;
- ``destructive`` and ``unknown``: one approval by a member of the approver groups, two
  distinct ones when the runbook or its access-map rule says ``two_person``. A runbook that
  names no approvers cannot have these approved, so their proposal is refused.

An approval is refused when the approver proposed the request (user ids compared without
regard to case), cannot read the runbook now, is outside the approver groups, or when the
command is no longer in the runbook. A denial comes from the requester (withdrawing it) or
from someone who could approve it. Whoever may not read the runbook gets the same refusal
as for a request that does not exist. Every step, refusals included, is a record of the
audit trail, with the command's hash and its (masked) text.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from .access import is_entitled
from .actions import (
    ActionBook,
    ActionRequest,
    Decision,
    Redemption,
    RunbookView,
    command_digest,
    normalize,
    same_person,
)
from .audit import Auditor
from .commands import RISKS, classify
from .errors import ActionRefused, GrantInvalid
from .records import Principal, StepCommand

# Only these risks are what they say; anything else is gated like destructive (fail closed).
_OPEN = frozenset({"read", "change"})

ViewOf = Callable[[str, Principal], RunbookView | None]


class Guard:
    """Proposals, approvals, denials and redemptions over an :class:`ActionBook`.

    ``view_of(source, principal)`` is what ``principal`` may read of the runbook ``source`` in
    the served generation (None when nothing): every rule reads the runbook through it.
    """

    def __init__(self, book: ActionBook, *, view_of: ViewOf, auditor: Auditor) -> None:
        self.book = book
        self._view_of = view_of
        self._auditor = auditor

    def propose(
        self, source: str, command: str, *, principal: Principal, reason: str | None = None
    ) -> ActionRequest:
        """Record a request for ``command`` of the runbook ``source`` (see the module rules)."""
        fields = {"source": source, "command": command, "command_sha256": command_digest(command)}
        try:
            if not isinstance(command, str) or not command.strip() or len(command) > 8192:
                raise ActionRefused("the command must be between 1 and 8192 characters")
            view = self._view_of(source, principal)
            step = find_step(view, command) if view is not None else None
            if view is None or step is None:
                raise ActionRefused(f"no runbook {source!r} you may read holds this command")
            request = new_request(
                view,
                step,
                requester=principal,
                reason=reason,
                now=self.book.clock(),
                ttl=self.book.pending_ttl,
            )
            if request.risk not in _OPEN and not view.approvers:
                raise ActionRefused(
                    f"runbook {source!r} names no approvers, and its {request.risk} commands need one: "
                    "set approvers in its front matter or in its access-map rule"
                )
        except ActionRefused as exc:
            self._auditor.action("propose", principal, outcome="refused", reason=exc.reason, **fields)
            raise
        self.book.add(request)
        self._auditor.action(
            "propose",
            principal,
            outcome=request.status,
            action_id=request.id,
            risk=request.risk,
            reasons=list(request.reasons),
            approvals_needed=request.approvals_needed,
            **fields,
        )
        return request

    def approve(self, request_id: str, *, principal: Principal) -> Decision:
        """Add ``principal``'s approval; the last one needed returns the grant."""
        try:
            request, view = self._decidable(request_id, principal)
            check_approver(view, request, principal)
            updated, grant = self.book.approve(
                request_id, principal.user_id, needed=approvals_needed(request.risk, view)
            )
        except ActionRefused as exc:
            self._auditor.action(
                "approve", principal, outcome="refused", action_id=request_id, reason=exc.reason
            )
            raise
        self._auditor.action(
            "approve",
            principal,
            outcome="granted" if grant else "approved",
            action_id=request_id,
            source=updated.source,
            command_sha256=command_digest(updated.command),
            risk=updated.risk,
            approvals=len(updated.approved_by),
            approvals_needed=updated.approvals_needed,
        )
        return Decision(updated, grant)

    def deny(self, request_id: str, *, principal: Principal, reason: str | None = None) -> Decision:
        """Deny a pending request, or revoke a grant not yet redeemed: by its requester, or by
        someone who could approve it."""
        try:
            request, view = self._decidable(request_id, principal, pending_only=False)
            if not same_person(request.requester, principal.user_id):
                check_approver(view, request, principal)
            updated = self.book.deny(request_id, principal.user_id)
        except ActionRefused as exc:
            self._auditor.action(
                "deny", principal, outcome="refused", action_id=request_id, reason=exc.reason
            )
            raise
        self._auditor.action(
            "deny",
            principal,
            outcome="denied",
            action_id=request_id,
            source=updated.source,
            command_sha256=command_digest(updated.command),
            risk=updated.risk,
            reason=reason,
        )
        return Decision(updated)

    def redeem(self, grant: str, command: str, *, principal: Principal | None = None) -> Redemption:
        """Use ``grant`` up for ``command``; :class:`GrantInvalid` says why it cannot be."""
        digest = command_digest(command) if isinstance(command, str) else ""
        try:
            request = self.book.redeem(grant, command)
        except GrantInvalid as exc:
            self._auditor.action(
                "redeem", principal, outcome="refused", command_sha256=digest, reason=exc.reason
            )
            raise
        self._auditor.action(
            "redeem",
            principal,
            outcome="redeemed",
            action_id=request.id,
            source=request.source,
            command=request.command,
            command_sha256=digest,
            risk=request.risk,
            requester=request.requester,
        )
        return Redemption(request.id, request.command, request.risk, request.source, request.requester)

    def requests(
        self, *, principal: Principal | None = None, status: str | None = None
    ) -> list[ActionRequest]:
        """The requests whose runbook ``principal`` may read (all for None: the operator's view)."""
        found = self.book.requests(status=status)
        if principal is None:
            return found
        return [r for r in found if is_entitled(principal, r.labels)]

    def _decidable(
        self, request_id: str, principal: Principal, *, pending_only: bool = True
    ) -> tuple[ActionRequest, RunbookView]:
        """The request and what ``principal`` may read of its runbook now; refused alike when
        the request does not exist or its runbook is not theirs to read."""
        nothing = ActionRefused(f"request {request_id}: no such request you may act on")
        request = self.book.get(request_id) if isinstance(request_id, str) else None
        if request is None or not is_entitled(principal, request.labels):
            raise nothing
        view = self._view_of(request.source, principal)
        if view is None:
            raise nothing
        allowed = ("pending",) if pending_only else ("pending", "approved")
        if request.status not in allowed:
            raise ActionRefused(f"request {request_id} is {request.status}, not pending")
        if find_step(view, request.command) is None:
            raise ActionRefused(
                f"request {request_id}: the command is no longer in runbook {request.source!r}"
            )
        return request, view


def approvals_needed(risk: str, view: RunbookView) -> int:
    """How many distinct approvals a command of ``risk`` in ``view``'s runbook needs."""
    if risk == "read":
        return 0
    if risk == "change":
        return 1
    return 2 if view.two_person else 1


def check_approver(view: RunbookView, request: ActionRequest, approver: Principal) -> None:
    """Refuse an approver outside the approver groups (when the runbook names any, or the
    command is destructive or unknown)."""
    if request.risk not in _OPEN and not view.approvers:
        raise ActionRefused(
            f"request {request.id}: runbook {view.source!r} names no approvers for this command"
        )
    if view.approvers and not approver.groups.intersection(view.approvers):
        raise ActionRefused(
            f"request {request.id}: an approver must belong to one of: {', '.join(view.approvers)}"
        )


def find_step(view: RunbookView, command: str) -> StepCommand | None:
    """The command of ``view``'s runbook that ``command`` is, once whitespace is normalised."""
    wanted = normalize(command)
    return next((step for step in view.commands if normalize(step.command) == wanted), None)


def new_request(
    view: RunbookView, step: StepCommand, *, requester: Principal, reason: str | None, now: float, ttl: float
) -> ActionRequest:
    """A request for ``step`` of ``view``'s runbook, classified afresh: the higher of the risk
    the build stored and today's classifier's wins."""
    verdict = classify(step.command, step.language)
    risk, reasons = step.risk, step.reasons
    if risk not in RISKS or RISKS.index(verdict.risk) > RISKS.index(risk):
        risk, reasons = verdict.risk, verdict.reasons
    needed = approvals_needed(risk, view)
    return ActionRequest(
        id="a" + secrets.token_hex(8),
        source=view.source,
        command=step.command,
        start_line=step.start_line,
        end_line=step.end_line,
        risk=risk,
        reasons=tuple(reasons),
        requester=requester.user_id,
        status="pending" if needed else "not_required",
        approvals_needed=needed,
        approved_by=(),
        created_at=now,
        expires_at=now + ttl if needed else None,
        reason=reason,
        labels=view.labels,
    )
