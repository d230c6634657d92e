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
audit trail, with the command's hash and its (masked) text; the hash is taken of the masked
text, so a card number or secret put in a command cannot be recovered from it by guessing.

The rules read the runbook as it is *now* at each step: an approval needs the approver to
read it, the command to be in it, and counts the approvals its current policy asks for, at
the higher of the risk recorded with the request and the command's risk now. A denial (or
the revocation of a grant) needs neither the command to be in the runbook still: taking
back an approval is always possible. What decides in the end (still pending, who approved,
used once) is re-checked in the book's transaction.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from .access import is_entitled
from .actions import (
    MAX_COMMAND_CHARS,
    REQUEST_ID,
    ActionBook,
    ActionRequest,
    Decision,
    Redemption,
    RunbookView,
    command_digest,
    same_person,
)
from .audit import Auditor
from .commands import RISKS, classify, normalize
from .errors import ActionRefused, GrantInvalid
from .records import Principal, StepCommand
from .redaction import redact

# Only these risks are what they say; anything else is gated like destructive (fail closed).
_OPEN = frozenset({"read", "change"})
MAX_REASON_CHARS = 2000
MAX_SOURCE_CHARS = 1024

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
        fields: dict[str, object] = {
            "source": source if isinstance(source, str) else None,
            "command": command if isinstance(command, str) else None,
            "command_sha256": audit_digest(command),
        }
        try:
            check_person(principal)
            if not isinstance(command, str) or not command.strip() or len(command) > MAX_COMMAND_CHARS:
                raise ActionRefused(f"the command must be text of 1 to {MAX_COMMAND_CHARS} characters")
            if not isinstance(source, str) or not source.strip() or len(source) > MAX_SOURCE_CHARS:
                raise ActionRefused(
                    f"the runbook must be named by a source path of 1 to {MAX_SOURCE_CHARS} characters"
                )
            reason = check_reason(reason)
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
        fields["command_sha256"] = audit_digest(request.command, request.language)
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
            step = find_step(view, request.command, request.language)
            if step is None:
                raise ActionRefused(
                    f"request {request.id}: the command is no longer in runbook {request.source!r}"
                )
            risk = current_risk(request, step)
            check_approver(view, risk, request.id, principal)
            updated, grant = self.book.approve(
                request.id,
                principal.user_id,
                needed=approvals_needed(risk, view),
                risk=risk if risk != request.risk else None,
            )
        except ActionRefused as exc:
            self._refused("approve", principal, request_id, exc)
            raise
        self._auditor.action(
            "approve",
            principal,
            outcome="granted" if grant else "approved",
            action_id=updated.id,
            source=updated.source,
            command_sha256=audit_digest(updated.command, updated.language),
            risk=updated.risk,
            approvals=len(updated.approved_by),
            approvals_needed=updated.approvals_needed,
        )
        return Decision(updated, grant)

    def deny(self, request_id: str, *, principal: Principal, reason: str | None = None) -> Decision:
        """Deny a pending request, or revoke a grant not yet redeemed: by its requester, or by
        someone who could approve it."""
        try:
            reason = check_reason(reason)
            request, view = self._decidable(request_id, principal, pending_only=False)
            if not same_person(request.requester, principal.user_id):
                check_approver(view, request.risk, request.id, principal)
            updated = self.book.deny(request.id, principal.user_id)
        except ActionRefused as exc:
            self._refused("deny", principal, request_id, exc)
            raise
        self._auditor.action(
            "deny",
            principal,
            outcome="denied",
            action_id=updated.id,
            source=updated.source,
            command_sha256=audit_digest(updated.command, updated.language),
            risk=updated.risk,
            reason=reason,
        )
        return Decision(updated)

    def redeem(self, grant: str, command: str, *, principal: Principal | None = None) -> Redemption:
        """Use ``grant`` up for ``command``; :class:`GrantInvalid` says why it cannot be."""
        try:
            request = self.book.redeem(grant, command)
        except GrantInvalid as exc:
            self._auditor.action(
                "redeem",
                principal,
                outcome="refused",
                action_id=self.book.request_of(grant),
                command_sha256=audit_digest(command),
                reason=exc.reason,
            )
            raise
        self._auditor.action(
            "redeem",
            principal,
            outcome="redeemed",
            action_id=request.id,
            source=request.source,
            command=request.command,
            command_sha256=audit_digest(request.command, request.language),
            risk=request.risk,
            requester=request.requester,
        )
        return Redemption(request.id, request.command, request.risk, request.source, request.requester)

    def requests(
        self, *, principal: Principal | None = None, status: str | None = None
    ) -> list[ActionRequest]:
        """The requests whose runbook ``principal`` may read now (all for None: the operator's
        view). The listing is audited (``action.list``) with the number of requests shown."""
        found = self.book.requests(status=status)
        out = found
        if principal is not None:
            readable: dict[str, bool] = {}
            out = []
            for request in found:
                if request.source not in readable:
                    readable[request.source] = self._view_of(request.source, principal) is not None
                if readable[request.source] and is_entitled(principal, request.labels):
                    out.append(request)
        self._auditor.action("list", principal, outcome="ok", status=status, shown=len(out))
        return out

    def _decidable(
        self, request_id: str, principal: Principal, *, pending_only: bool = True
    ) -> tuple[ActionRequest, RunbookView]:
        """The request and what ``principal`` may read of its runbook now; refused alike when
        the request does not exist or its runbook is not theirs to read."""
        check_person(principal)
        nothing = ActionRefused(f"request {shown_id(request_id)}: no such request you may act on")
        request = self.book.get(request_id) if valid_id(request_id) else None
        if request is None or not is_entitled(principal, request.labels):
            raise nothing
        view = self._view_of(request.source, principal)
        if view is None:
            raise nothing
        allowed = ("pending",) if pending_only else ("pending", "approved")
        if request.status not in allowed:
            raise ActionRefused(f"request {request.id} is {request.status}, not pending")
        return request, view

    def _refused(self, step: str, principal: Principal, request_id: object, exc: ActionRefused) -> None:
        """The audit record of a refused approval or denial: the request's command and runbook
        when it exists (for the auditor only; the caller's message names neither)."""
        request = self.book.get(str(request_id)) if valid_id(request_id) else None
        extra: dict[str, object] = {}
        if request is not None:
            extra = {
                "source": request.source,
                "command_sha256": audit_digest(request.command, request.language),
                "risk": request.risk,
            }
        self._auditor.action(
            step,
            principal,
            outcome="refused",
            action_id=request_id if valid_id(request_id) else None,
            reason=exc.reason,
            **extra,
        )


def valid_id(request_id: object) -> bool:
    """Whether ``request_id`` has the form of a request id (anything else names no request)."""
    return isinstance(request_id, str) and REQUEST_ID.fullmatch(request_id) is not None


def shown_id(request_id: object) -> str:
    """``request_id`` as a message may show it: a well-formed id as it is, anything else quoted
    and cut short, so a caller's text cannot forge lines of a message or a terminal's output."""
    if valid_id(request_id):
        return str(request_id)
    text = repr(request_id if isinstance(request_id, str) else type(request_id).__name__)
    return text if len(text) <= 40 else text[:37] + "..."


def audit_digest(command: object, language: str = "shell") -> str | None:
    """The hash of a command as the audit trail keeps it: of its masked text, so a card number
    or secret in it cannot be found by hashing guesses. A runbook's commands are masked when
    the index is built, so for them this is the hash their grant is bound to."""
    if not isinstance(command, str) or len(command) > MAX_COMMAND_CHARS:
        return None
    return command_digest(redact(command).text, language)


def check_person(principal: Principal) -> None:
    """Refuse a principal without a user id: an approval must name who gave it."""
    if not principal.user_id.strip():
        raise ActionRefused("guarded actions need a user id")


def check_reason(reason: object) -> str | None:
    """A reason as the book keeps it: masked, at most :data:`MAX_REASON_CHARS` characters."""
    if reason is None:
        return None
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise ActionRefused(f"a reason must be text of at most {MAX_REASON_CHARS} characters")
    return redact(reason).text.strip() or None


def approvals_needed(risk: str, view: RunbookView) -> int:
    """How many distinct approvals a command of ``risk`` in ``view``'s runbook needs."""
    if risk == "read":
        return 0
    if risk == "change":
        return 1
    return 2 if view.two_person else 1


def check_approver(view: RunbookView, risk: str, request_id: str, approver: Principal) -> None:
    """Refuse an approver outside the approver groups (when the runbook names any, or the
    command is destructive or unknown)."""
    if risk not in _OPEN and not view.approvers:
        raise ActionRefused(
            f"request {request_id}: runbook {view.source!r} names no approvers for this command"
        )
    if view.approvers and not approver.groups.intersection(view.approvers):
        raise ActionRefused(
            f"request {request_id}: an approver must belong to one of: {', '.join(view.approvers)}"
        )


def find_step(view: RunbookView, command: str, language: str | None = None) -> StepCommand | None:
    """The command of ``view``'s runbook that ``command`` is, once whitespace is normalised
    (see :func:`~runbook_rag.actions.normalize`); of ``language`` when given. When the same
    text is there more than once, the riskiest place counts."""
    found = [
        step
        for step in view.commands
        if (language is None or step.language == language)
        and normalize(step.command, step.language) == normalize(command, step.language)
    ]
    return max(found, key=lambda step: _rank(current_risk_of(step)[0]), default=None)


def current_risk_of(step: StepCommand) -> tuple[str, tuple[str, ...]]:
    """The higher of the risk the build stored for ``step`` and today's classifier's."""
    verdict = classify(step.command, step.language)
    if _rank(verdict.risk) > _rank(step.risk):
        return verdict.risk, tuple(verdict.reasons)
    return step.risk, tuple(step.reasons)


def current_risk(request: ActionRequest, step: StepCommand) -> str:
    """The higher of a request's recorded risk and its command's risk now."""
    risk = current_risk_of(step)[0]
    return risk if _rank(risk) > _rank(request.risk) else request.risk


def _rank(risk: str) -> int:
    # A risk this version does not know ranks above all it knows.
    return RISKS.index(risk) if risk in RISKS else len(RISKS)


def new_request(
    view: RunbookView, step: StepCommand, *, requester: Principal, reason: str | None, now: float, ttl: float
) -> ActionRequest:
    """A request for ``step`` of ``view``'s runbook, classified afresh: the higher of the risk
    the build stored and today's classifier's wins."""
    risk, reasons = current_risk_of(step)
    needed = approvals_needed(risk, view)
    return ActionRequest(
        id="a" + secrets.token_hex(8),
        source=view.source,
        command=step.command,
        start_line=step.start_line,
        end_line=step.end_line,
        risk=risk,
        reasons=reasons,
        requester=requester.user_id,
        status="pending" if needed else "not_required",
        approvals_needed=needed,
        approved_by=(),
        created_at=now,
        expires_at=now + ttl if needed else None,
        reason=reason,
        labels=view.labels,
        language=step.language,
    )
