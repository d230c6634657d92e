"""Guarded actions: the approval rules, one-use grants, their state and their audit records.

The rules are proved on a real index (real Chroma, the bundled model) of made-up runbooks
whose approvers come from front matter and from an access-map rule. Each test keeps its
requests and its audit trail in its own files.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import multiprocessing
import shutil
import sqlite3
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from runbook_rag import RunbookIndex
from runbook_rag.actions import GRANT_PREFIX, MAX_GRANT_CHARS, ActionBook, command_digest
from runbook_rag.audit import verify
from runbook_rag.cardholder import luhn_valid
from runbook_rag.commands import normalize
from runbook_rag.errors import ActionRefused, GrantInvalid
from runbook_rag.records import Principal
from runbook_rag.settings import Settings

from .waiting import WAIT

KEY = "guarded-actions-test-key-0123456789"
OTHER_KEY = "another-index-key-9876543210abcdef"
FENCE = "```"


def front(**keys: object) -> str:
    return "---\n" + "".join(f"{k}: {json.dumps(v)}\n" for k, v in keys.items()) + "---\n\n"


def block(command: str, language: str = "bash") -> str:
    return f"{FENCE}{language}\n{command}\n{FENCE}\n\n"


CACHE = "ops/cache.md"
WEB = "ops/web.md"
DB = "ops/db.md"
LEDGER = "team/ledger.md"
ADMIN = "vault/web-admin.md"

GET_PODS = "kubectl get pods -n cache"
RESTART_CACHE = "kubectl rollout restart deployment/cache -n cache"
SCALE_ZERO = "kubectl scale deployment/cache \\\n  --replicas=0 -n cache"
FLUSH = "redis-cli -h cache-primary FLUSHALL"
RM_QUOTED = 'rm -f "/srv/cache/old  dumps/dump.rdb"'
UNKNOWN = "frobnicate --all"
GET_WEB = "kubectl get deploy -n web"
RESTART_WEB = "kubectl rollout restart deployment/web -n web"
DELETE_WEB = "kubectl delete pod web-0 -n web"
COUNT_SESSIONS = "SELECT count(*) FROM sessions;"
DELETE_SESSIONS = "DELETE FROM sessions\n  WHERE expires_at < now();"
DELETE_JOB = "kubectl delete job ledger-reconcile -n ledger"
RESTART_LEDGER = "kubectl rollout restart deployment/ledger -n ledger"

RUNBOOKS = {
    CACHE: front(title="Cache flush", access=["sre"], approvers=["sre-leads"], two_person=True)
    + "# Cache flush\n\n## Check\n\n"
    + block(GET_PODS)
    + "## Restart\n\n"
    + block(RESTART_CACHE)
    + "## Drain\n\nScale the cache to zero, then flush it.\n\n"
    + block(SCALE_ZERO)
    + block(FLUSH)
    + "## Clean up\n\n"
    + block(RM_QUOTED)
    + block(UNKNOWN),
    WEB: front(title="Web restart", access=["web"])
    + "# Web restart\n\n"
    + block(GET_WEB)
    + block(RESTART_WEB)
    + "## Last resort\n\n"
    + block(DELETE_WEB),
    DB: front(title="Session cleanup", access=["dba"], approvers=["dba-leads"])
    + "# Session cleanup\n\n"
    + block(COUNT_SESSIONS, "sql")
    + block(DELETE_SESSIONS, "sql"),
    # No access or approvers of its own: the access map's rule gives both, and two_person.
    LEDGER: front(title="Ledger reconcile")
    + "# Ledger reconcile\n\n"
    + block(DELETE_JOB)
    + block(RESTART_LEDGER),
    ADMIN: front(title="Web admin", access=["admins"], approvers=["admin-leads"])
    + "# Web admin\n\n"
    + block(RESTART_WEB)
    + block(DELETE_WEB),
}

ACCESS_MAP = '- pattern: "team/*.md"\n  groups: [ledger]\n  approvers: [ledger-leads]\n  two_person: true\n'


def person(user: str, *groups: str) -> Principal:
    return Principal(user, frozenset(groups))


ALICE = person("alice", "sre")  # proposes
BOB = person("bob", "sre", "sre-leads")  # approves
CAROL = person("carol", "sre", "sre-leads")  # approves
DAVE = person("dave", "sre-leads")  # an approver group, but may not read the runbook
ERIN = person("erin", "sre")  # reads, outside the approver groups
WENDY = person("wendy", "web")
WALT = person("walt", "web")
DANA = person("dana", "dba")
DORA = person("dora", "dba", "dba-leads")
LENA = person("lena", "ledger")
LEO = person("leo", "ledger", "ledger-leads")
LOU = person("lou", "ledger", "ledger-leads")


def write_runbooks(folder: Path, runbooks: dict[str, str] = RUNBOOKS) -> Path:
    for source, text in runbooks.items():
        (folder / source).parent.mkdir(parents=True, exist_ok=True)
        (folder / source).write_text(text, encoding="utf-8")
    return folder


def build(root: Path, model: Any, runbooks: dict[str, str] = RUNBOOKS) -> Path:
    sources = root / "runbooks"
    if sources.exists():
        shutil.rmtree(sources)
    write_runbooks(sources, runbooks)
    (root / "access-map.yaml").write_text(ACCESS_MAP, encoding="utf-8")
    RunbookIndex.build([sources], path=root / "index", access_map=root / "access-map.yaml", embedder=model)
    return root / "index"


def settings_in(folder: Path, key: str = KEY) -> Settings:
    return Settings(
        actions_db=folder / "actions.sqlite3",
        audit_log=folder / "audit.log",
        audit_head=folder / "audit.head",
        audit_key=key,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, model: Any) -> Path:
    return build(tmp_path_factory.mktemp("guarded"), model)


@pytest.fixture
def index(built: Path, tmp_path: Path, model: Any) -> Iterator[RunbookIndex]:
    with RunbookIndex(built, settings=settings_in(tmp_path), embedder=model) as opened:
        yield opened


def granted(
    index: RunbookIndex, source: str, command: str, requester: Principal, *approvers: Principal
) -> str:
    """The grant of ``command``, approved by as many of ``approvers`` as it needs."""
    request = index.propose(source, command, principal=requester)
    for approver in approvers[: request.approvals_needed]:
        grant = index.approve(request.id, principal=approver).grant
    assert grant is not None
    return grant


def audit_records(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "audit.log").read_text().splitlines()]


def refusal(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ActionRefused) as caught:
        call(*args, **kwargs)
    return caught.value.reason


def luhn_number(prefix: str) -> str:
    """A made-up card number: ``prefix`` and the check digit that makes it pass Luhn."""
    number = next(prefix + d for d in string.digits if luhn_valid(prefix + d))
    assert luhn_valid(number)
    return number


# --- the canonical form ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "same"),
    [
        ("kubectl scale deployment/cache --replicas=0 -n cache", True),
        ("  kubectl   scale\tdeployment/cache  --replicas=0  -n cache \n", True),
        ("kubectl scale \\\n deployment/cache \\\n --replicas=0 \\\n -n cache", True),
        ("kubectl scale deployment/cache --replicas=0 -n cache\r\n", True),
        # a line break between two words makes two commands: -n cache is no longer an argument
        ("kubectl scale deployment/cache --replicas=0\n-n cache", False),
        ("kubectl scale deployment/cache --replicas=1 -n cache", False),
        ("kubectl scale deployment/cache --replicas=0 -n cache2", False),
        ("kubectl scale deployment/cache --replicas=0 -n cache; rm -rf /", False),
        ("kubectl scale deployment/cache --replicas=0 -n cache && kubectl delete ns cache", False),
        ("kubectl scale deployment/cache --replicas=0 -n\u00a0cache", False),
        ("kubectl scale deployment/cache --replicas=0 -n cac\\\nhe", True),  # the shell joins it
    ],
)
def test_the_canonical_form_ignores_only_blanks_that_change_nothing(variant: str, same: bool) -> None:
    assert (normalize(variant) == normalize(SCALE_ZERO)) is same
    assert (command_digest(variant) == command_digest(SCALE_ZERO)) is same


@pytest.mark.parametrize(
    ("a", "b", "language", "same"),
    [
        ('rm -f "/srv/old  dumps/x"', 'rm -f "/srv/old dumps/x"', "shell", False),
        ("echo 'a  b'", "echo 'a b'", "shell", False),
        ("echo a\\  b", "echo a\\ b", "shell", False),
        ("echo $'it\\'s  two'", "echo $'it\\'s two'", "shell", False),
        ("echo 'a  b'   c", "echo 'a  b' c", "shell", True),
        ("SELECT *\n  FROM t\n WHERE a = 'x  y';", "SELECT * FROM t WHERE a = 'x  y';", "sql", True),
        ("SELECT * FROM t WHERE a = 'x  y';", "SELECT * FROM t WHERE a = 'x y';", "sql", False),
        # a heredoc's lines are data (here YAML, where indentation is structure)
        (
            "kubectl  apply -f - <<EOF\nspec:\n  replicas: 0\nEOF\n",
            "kubectl apply -f - <<EOF\nspec:\n  replicas: 0\nEOF  \n\n",
            "shell",
            True,
        ),
        (
            "kubectl apply -f - <<EOF\nspec:\n  replicas: 0\nEOF",
            "kubectl apply -f - <<EOF\nspec:\nreplicas: 0\nEOF",
            "shell",
            False,
        ),
        # a line break ends a SQL comment: what follows it runs
        ("SELECT 1 -- note\nDROP TABLE t;", "SELECT 1 -- note DROP TABLE t;", "sql", False),
    ],
)
def test_quoted_text_and_comments_keep_their_blanks(a: str, b: str, language: str, same: bool) -> None:
    assert (normalize(a, language) == normalize(b, language)) is same


# --- propose --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant",
    [
        "kubectl scale deployment/cache --replicas=0 -n cache",
        "kubectl  scale\tdeployment/cache   --replicas=0 -n cache  ",
        "kubectl scale deployment/cache --replicas=0 \\\n    -n cache",
        "\tkubectl scale \\\r\n deployment/cache \\\n --replicas=0 \\\n -n cache\n",
    ],
)
def test_a_command_is_proposed_in_any_blank_spacing(index: RunbookIndex, variant: str) -> None:
    request = index.propose(CACHE, variant, principal=ALICE, reason="cache stuck")
    assert (request.status, request.risk, request.approvals_needed) == ("pending", "destructive", 2)
    assert request.command == SCALE_ZERO and request.source == CACHE
    assert request.requester == "alice" and request.reason == "cache stuck"


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant",
    [
        "kubectl scale deployment/cache --replicas=1 -n cache",
        "kubectl scale deployment/cache --replicas=0 -n payments",
        "kubectl scale deployment/cache --replicas=0 -n cache --force",
        "kubectl scale deployment/cache --replicas=0 -n cache; rm -rf /",
        "kubectl scale deployment/cache --replicas=0\n-n cache",
        "kubectl scale deployment/cach --replicas=0 -n cache",
        'rm -f "/srv/cache/old dumps/dump.rdb"',
        "kubectl get pods -n cache | sh",
    ],
)
def test_a_command_not_in_the_runbook_is_refused(index: RunbookIndex, variant: str) -> None:
    assert refusal(index.propose, CACHE, variant, principal=ALICE) == (
        f"no runbook {CACHE!r} you may read holds this command"
    )
    assert index.action_requests() == []


@pytest.mark.slow
def test_an_unreadable_runbook_is_refused_as_a_missing_one(index: RunbookIndex) -> None:
    unreadable = refusal(index.propose, WEB, RESTART_WEB, principal=ALICE)
    missing = refusal(index.propose, "ops/no-such.md", RESTART_WEB, principal=ALICE)
    not_there = refusal(index.propose, CACHE, RESTART_WEB, principal=ALICE)
    assert (
        unreadable.replace(WEB, "X")
        == missing.replace("ops/no-such.md", "X")
        == not_there.replace(CACHE, "X")
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "principal",
    [person("nobody"), person("mallory", "no-such-group"), person("", "sre"), person("   ", "sre")],
)
def test_principals_without_groups_known_groups_or_a_user_id_are_refused(
    index: RunbookIndex, principal: Principal
) -> None:
    with pytest.raises(ActionRefused):
        index.propose(CACHE, GET_PODS, principal=principal)
    assert index.action_requests() == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "command", "requester", "risk", "status", "needed"),
    [
        (CACHE, GET_PODS, ALICE, "read", "not_required", 0),
        (CACHE, RESTART_CACHE, ALICE, "change", "pending", 1),
        (CACHE, FLUSH, ALICE, "destructive", "pending", 2),
        (CACHE, UNKNOWN, ALICE, "unknown", "pending", 2),
        (WEB, GET_WEB, WENDY, "read", "not_required", 0),
        (WEB, RESTART_WEB, WENDY, "change", "pending", 1),
        (DB, COUNT_SESSIONS, DANA, "read", "not_required", 0),
        (DB, "DELETE FROM sessions WHERE expires_at < now();", DANA, "destructive", "pending", 1),
        (LEDGER, DELETE_JOB, LENA, "destructive", "pending", 2),  # two_person from the rule
        (LEDGER, RESTART_LEDGER, LENA, "change", "pending", 1),
    ],
)
def test_a_proposal_carries_its_risk_and_the_approvals_it_needs(
    index: RunbookIndex, source: str, command: str, requester: Principal, risk: str, status: str, needed: int
) -> None:
    request = index.propose(source, command, principal=requester)
    assert (request.risk, request.status, request.approvals_needed) == (risk, status, needed)
    assert request.reasons
    assert index.action_requests() == [request]
    assert (request.expires_at is None) is (status == "not_required")


@pytest.mark.slow
def test_a_read_command_cannot_be_approved_into_a_grant(index: RunbookIndex) -> None:
    request = index.propose(CACHE, GET_PODS, principal=ALICE)
    assert (
        refusal(index.approve, request.id, principal=BOB)
        == f"request {request.id} is not_required, not pending"
    )


@pytest.mark.slow
@pytest.mark.parametrize("command", [DELETE_WEB, "kubectl delete pod web-0 -n web  "])
def test_destructive_commands_of_a_runbook_without_approvers_are_refused(
    index: RunbookIndex, command: str
) -> None:
    reason = refusal(index.propose, WEB, command, principal=WENDY)
    assert "names no approvers" in reason and "destructive" in reason
    assert index.action_requests() == []


@pytest.mark.slow
def test_a_command_is_bound_to_the_runbook_named(index: RunbookIndex) -> None:
    # The same text is in a runbook wendy may read and in one she may not: only the first holds it for her.
    assert refusal(index.propose, ADMIN, RESTART_WEB, principal=WENDY) == (
        f"no runbook {ADMIN!r} you may read holds this command"
    )
    assert index.propose(WEB, RESTART_WEB, principal=WENDY).source == WEB
    admin = person("ada", "admins")
    assert index.propose(ADMIN, RESTART_WEB, principal=admin).source == ADMIN


@pytest.mark.slow
def test_inputs_of_the_wrong_type_or_size_are_refused(index: RunbookIndex) -> None:
    for command in ["", "   ", "x" * 9000, None, 42]:
        with pytest.raises(ActionRefused, match="the command must be text"):
            index.propose(CACHE, command, principal=ALICE)  # type: ignore[arg-type]
    for source in ["", None, "x" * 5000]:
        with pytest.raises(ActionRefused, match="source path"):
            index.propose(source, GET_PODS, principal=ALICE)  # type: ignore[arg-type]
    for reason in ["r" * 5000, 7]:
        with pytest.raises(ActionRefused, match="a reason must be text"):
            index.propose(CACHE, GET_PODS, principal=ALICE, reason=reason)  # type: ignore[arg-type]


# --- approve --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("self_id", ["bob", "BOB", "  Bob\t"])
def test_a_requester_cannot_approve_their_own_request(index: RunbookIndex, self_id: str) -> None:
    request = index.propose(CACHE, RESTART_CACHE, principal=BOB)
    me = person(self_id, "sre", "sre-leads")
    assert (
        refusal(index.approve, request.id, principal=me)
        == f"request {request.id}: its requester cannot approve it"
    )
    assert index.action_requests()[0].approved_by == ()


@pytest.mark.slow
def test_an_approver_who_may_not_read_the_runbook_is_refused_as_for_a_missing_request(
    index: RunbookIndex,
) -> None:
    request = index.propose(CACHE, RESTART_CACHE, principal=ALICE)
    absent = "a" + "0" * 16
    unreadable = refusal(index.approve, request.id, principal=DAVE)
    missing = refusal(index.approve, absent, principal=BOB)
    assert unreadable.replace(request.id, "ID") == missing.replace(absent, "ID")
    assert unreadable == f"request {request.id}: no such request you may act on"
    assert refusal(index.deny, request.id, principal=DAVE) == unreadable
    assert index.action_requests()[0].status == "pending"


@pytest.mark.slow
@pytest.mark.parametrize(
    "request_id",
    ["", "a0", "A" + "0" * 16, "a" + "0" * 16 + "\n", "x' OR '1'='1", "\x1b[2Jrequest ok\nline", "a" * 5000],
)
def test_a_malformed_request_id_is_refused_without_echoing_it(index: RunbookIndex, request_id: str) -> None:
    index.propose(CACHE, RESTART_CACHE, principal=ALICE)
    reason = refusal(index.approve, request_id, principal=BOB)
    assert reason.endswith(": no such request you may act on")
    assert "\n" not in reason and "\x1b" not in reason and len(reason) < 120
    assert refusal(index.deny, request_id, principal=BOB) == reason
    assert index.action_requests()[0].status == "pending"


@pytest.mark.slow
def test_an_approver_outside_the_approver_groups_is_refused(index: RunbookIndex) -> None:
    request = index.propose(CACHE, RESTART_CACHE, principal=ALICE)
    assert refusal(index.approve, request.id, principal=ERIN) == (
        f"request {request.id}: an approver must belong to one of: sre-leads"
    )
    ledger = index.propose(LEDGER, DELETE_JOB, principal=LENA)
    assert "ledger-leads" in refusal(index.approve, ledger.id, principal=person("lina", "ledger"))


@pytest.mark.slow
def test_a_change_without_approvers_is_approved_by_any_other_reader(index: RunbookIndex) -> None:
    request = index.propose(WEB, RESTART_WEB, principal=WENDY)
    assert refusal(index.approve, request.id, principal=person("Wendy ", "web")).endswith("cannot approve it")
    assert "no such request" in refusal(index.approve, request.id, principal=BOB)
    decision = index.approve(request.id, principal=WALT)
    assert decision.request.status == "approved" and decision.request.approved_by == ("walt",)
    assert decision.grant is not None and decision.grant.startswith(f"{GRANT_PREFIX}.")
    assert index.redeem(decision.grant, RESTART_WEB).command == RESTART_WEB


@pytest.mark.slow
def test_two_person_needs_two_distinct_approvers(index: RunbookIndex) -> None:
    request = index.propose(CACHE, FLUSH, principal=ALICE)
    first = index.approve(request.id, principal=BOB)
    assert first.grant is None
    assert (first.request.status, first.request.approved_by) == ("pending", ("bob",))
    for again in (BOB, person(" BOB", "sre", "sre-leads")):
        assert refusal(index.approve, request.id, principal=again).endswith(
            "you approved it already; another approver is needed"
        )
    second = index.approve(request.id, principal=CAROL)
    assert second.grant is not None
    assert (second.request.status, second.request.approved_by) == ("approved", ("bob", "carol"))
    assert refusal(index.approve, request.id, principal=person("cy", "sre", "sre-leads")) == (
        f"request {request.id} is approved, not pending"
    )


@pytest.mark.slow
def test_two_person_from_the_access_map_rule(index: RunbookIndex) -> None:
    request = index.propose(LEDGER, DELETE_JOB, principal=LENA)
    assert index.approve(request.id, principal=LEO).grant is None
    grant = index.approve(request.id, principal=LOU).grant
    assert grant is not None and index.redeem(grant, DELETE_JOB).risk == "destructive"


@pytest.mark.slow
def test_approving_a_request_that_is_no_longer_pending_is_refused(index: RunbookIndex) -> None:
    approved = index.propose(DB, DELETE_SESSIONS, principal=DANA)
    assert index.approve(approved.id, principal=DORA).grant is not None
    denied = index.propose(CACHE, RESTART_CACHE, principal=ALICE)
    index.deny(denied.id, principal=ALICE)
    expired = index.propose(CACHE, FLUSH, principal=ALICE)
    index.approve(expired.id, principal=BOB)
    other = person("dora2", "dba", "dba-leads")
    assert (
        refusal(index.approve, approved.id, principal=other)
        == f"request {approved.id} is approved, not pending"
    )
    assert refusal(index.approve, denied.id, principal=BOB) == f"request {denied.id} is denied, not pending"
    book = index.guard.book
    start = book.clock()
    book.clock = lambda: start + book.pending_ttl
    assert (
        refusal(index.approve, expired.id, principal=CAROL) == f"request {expired.id} is expired, not pending"
    )
    assert refusal(index.deny, expired.id, principal=ALICE) == f"request {expired.id} is expired, not pending"
    assert [r.id for r in index.action_requests(status="expired")] == [expired.id, approved.id]


# --- deny -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_requester_or_an_eligible_approver_may_deny(index: RunbookIndex) -> None:
    mine = index.propose(CACHE, RESTART_CACHE, principal=ALICE)
    assert (
        index.deny(mine.id, principal=person("ALICE", "sre"), reason="not needed").request.status == "denied"
    )
    theirs = index.propose(CACHE, FLUSH, principal=ALICE)
    decision = index.deny(theirs.id, principal=BOB, reason="use the runbook's other step")
    assert (decision.request.status, decision.request.denied_by, decision.grant) == ("denied", "bob", None)
    assert refusal(index.deny, theirs.id, principal=CAROL) == f"request {theirs.id} is denied, not pending"


@pytest.mark.slow
def test_a_principal_who_could_not_approve_cannot_deny(index: RunbookIndex) -> None:
    request = index.propose(CACHE, FLUSH, principal=ALICE)
    assert "must belong to one of: sre-leads" in refusal(index.deny, request.id, principal=ERIN)
    assert "no such request" in refusal(index.deny, request.id, principal=WENDY)
    assert index.action_requests()[0].status == "pending"


@pytest.mark.slow
def test_a_revoked_grant_cannot_be_redeemed(index: RunbookIndex) -> None:
    request = index.propose(DB, DELETE_SESSIONS, principal=DANA)
    grant = index.approve(request.id, principal=DORA).grant
    assert grant is not None
    assert index.deny(request.id, principal=DORA, reason="wrong window").request.status == "denied"
    with pytest.raises(GrantInvalid, match="was denied or its grant revoked"):
        index.redeem(grant, DELETE_SESSIONS)


# --- redeem ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_grant_redeems_once(index: RunbookIndex) -> None:
    grant = granted(index, CACHE, FLUSH, ALICE, BOB, CAROL)
    redemption = index.redeem(grant, FLUSH, principal=person("executor-bot"))
    assert (redemption.command, redemption.risk, redemption.source) == (FLUSH, "destructive", CACHE)
    assert redemption.requester == "alice"
    assert index.action_requests()[0].status == "redeemed"
    with pytest.raises(GrantInvalid, match="redeemed already"):
        index.redeem(grant, FLUSH)


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        "kubectl rollout restart deployment/cache -n payments",
        "kubectl rollout restart deployment/cache -n cache --all",
        "kubectl rollout restart deployment/cache -n cache; rm -rf /",
        "kubectl rollout restart deployment/cache -n cache && kubectl delete ns cache",
        "kubectl rollout restart deployment/cache\n-n cache",
        "kubectl rollout restart deployment/cache -n cache | sh",
        FLUSH,
        "",
        "x" * 10_000,
    ],
)
def test_a_grant_is_refused_for_another_command(index: RunbookIndex, command: str) -> None:
    grant = granted(index, CACHE, RESTART_CACHE, ALICE, BOB)
    with pytest.raises(GrantInvalid, match=r"another command|the command must be text"):
        index.redeem(grant, command)
    assert index.redeem(grant, RESTART_CACHE).command == RESTART_CACHE  # not used up by the refusals


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "approved", "redeemed"),
    [
        (CACHE, RESTART_CACHE, "  kubectl rollout  restart\tdeployment/cache -n cache\n"),
        (CACHE, SCALE_ZERO, "kubectl scale deployment/cache --replicas=0 -n cache"),
        (CACHE, "kubectl scale deployment/cache --replicas=0 -n cache", SCALE_ZERO),
        (CACHE, RM_QUOTED, ' rm  -f  "/srv/cache/old  dumps/dump.rdb"'),
        (DB, DELETE_SESSIONS, "DELETE FROM sessions WHERE expires_at < now();"),
        (DB, DELETE_SESSIONS, "DELETE  FROM sessions\n\n WHERE expires_at\t< now();"),
    ],
)
def test_blank_spacing_alone_does_not_change_the_command(
    index: RunbookIndex, source: str, approved: str, redeemed: str
) -> None:
    approvers = (DORA,) if source == DB else (BOB, CAROL)
    grant = granted(index, source, approved, DANA if source == DB else ALICE, *approvers)
    assert index.redeem(grant, redeemed).source == source


@pytest.mark.slow
def test_a_grant_expires(index: RunbookIndex) -> None:
    book = index.guard.book
    grant = granted(index, CACHE, RESTART_CACHE, ALICE, BOB)
    expires_at = index.action_requests()[0].expires_at
    assert expires_at is not None and expires_at == pytest.approx(book.clock() + book.grant_ttl, abs=5)
    book.clock = lambda: expires_at
    with pytest.raises(GrantInvalid, match="the grant expired at"):
        index.redeem(grant, RESTART_CACHE)
    assert index.action_requests()[0].status == "expired"
    book.clock = lambda: expires_at - 0.01
    assert index.redeem(grant, RESTART_CACHE).command == RESTART_CACHE  # the refusal did not use it up


@pytest.mark.slow
def test_a_pending_request_expires(index: RunbookIndex) -> None:
    book = index.guard.book
    request = index.propose(CACHE, RESTART_CACHE, principal=ALICE)
    assert request.expires_at == request.created_at + book.pending_ttl
    book.clock = lambda: request.created_at + book.pending_ttl - 1
    grant = index.approve(request.id, principal=BOB).grant
    assert grant is not None
    late = index.propose(CACHE, RESTART_CACHE, principal=ALICE)
    book.clock = lambda: late.created_at + book.pending_ttl
    assert index.action_requests(status="expired")[0].id == late.id
    assert refusal(index.approve, late.id, principal=BOB) == f"request {late.id} is expired, not pending"
    # A longer wait configured later does not revive it; a shorter one shortens every wait.
    book.pending_ttl *= 10
    assert refusal(index.approve, late.id, principal=BOB) == f"request {late.id} is expired, not pending"
    fresh = index.propose(CACHE, RESTART_CACHE, principal=ALICE)
    book.pending_ttl = 60
    book.clock = lambda: fresh.created_at + 60
    assert refusal(index.approve, fresh.id, principal=BOB) == f"request {fresh.id} is expired, not pending"


def _flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


def _claims(grant: str) -> dict[str, Any]:
    body = grant.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def _encode(claims: dict[str, Any]) -> str:
    raw = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.slow
def test_forged_grants_are_refused(index: RunbookIndex, built: Path, tmp_path: Path, model: Any) -> None:
    grant = granted(index, CACHE, RESTART_CACHE, ALICE, BOB)
    prefix, body, mac = grant.split(".")
    claims = _claims(grant)
    other_cmd = {**claims, "cmd": command_digest(FLUSH)}
    later = {**claims, "exp": claims["exp"] + 86400}
    with RunbookIndex(built, settings=settings_in(tmp_path / "other", OTHER_KEY), embedder=model) as other:
        foreign = granted(other, CACHE, RESTART_CACHE, ALICE, BOB)
    # A grant signed with a key guessed from what is public: the derivation without the secret.
    guessed = hmac.new(b"", f"{prefix}.{_encode(other_cmd)}".encode(), hashlib.sha256).digest()
    forged = [
        f"{prefix}.{body}.{_flip(mac, 5)}",
        f"{prefix}.{_flip(body, 3)}.{mac}",
        grant[:-1],
        grant[: len(grant) // 2],
        f"{prefix}.{body}",
        f"{prefix}.{body}.",
        f"{prefix}.{_encode(other_cmd)}.{mac}",
        f"{prefix}.{_encode(later)}.{mac}",
        f"{prefix}.{_encode(other_cmd)}.{base64.urlsafe_b64encode(guessed).rstrip(b'=').decode()}",
        foreign,
        f"rrg2.{body}.{mac}",
        f"RRG1.{body}.{mac}",
        f".{body}.{mac}",
        f"{grant}.{mac}",
        f"{prefix}.{body}.{mac}é",
        f"{prefix}.{body}.{mac[:-2]}\u00e9\u00e9",
        grant + "A" * MAX_GRANT_CHARS,
        "",
        "rrg1..",
    ]
    for fake in forged:
        with pytest.raises(GrantInvalid, match="malformed, or its signature does not verify"):
            index.redeem(fake, RESTART_CACHE)
        with pytest.raises(GrantInvalid):
            index.redeem(fake, FLUSH)
    for wrong_type in [None, 42, b"rrg1.a.b", ["rrg1"], {"grant": grant}]:
        with pytest.raises(GrantInvalid, match="malformed"):
            index.redeem(wrong_type, RESTART_CACHE)  # type: ignore[arg-type]
    for command in [None, 42, b"kubectl"]:
        with pytest.raises(GrantInvalid, match="the command must be text"):
            index.redeem(grant, command)  # type: ignore[arg-type]
    # Blanks around the token are forgiven; nothing else is, and the real grant still works once.
    assert index.redeem(f"  {grant}\n", RESTART_CACHE).command == RESTART_CACHE


@pytest.fixture(scope="module")
def lone_book(tmp_path_factory: pytest.TempPathFactory) -> ActionBook:
    return ActionBook(tmp_path_factory.mktemp("book") / "actions.sqlite3", key=b"k" * 32)


_TOKEN_PART = st.text(alphabet=string.ascii_letters + string.digits + "-_=+/.é\x00 ", max_size=80)


@hypothesis_settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    grant=st.one_of(
        st.text(max_size=300),
        st.builds(lambda a, b: f"{GRANT_PREFIX}.{a}.{b}", _TOKEN_PART, _TOKEN_PART),
        st.builds(
            lambda claims, mac: f"{GRANT_PREFIX}.{_encode(claims)}.{mac}",
            st.dictionaries(st.sampled_from(["id", "cmd", "lang", "req", "exp", "n"]), st.text(max_size=8)),
            _TOKEN_PART,
        ),
        st.binary(max_size=50),
        st.integers(),
        st.none(),
    ),
    command=st.one_of(st.text(max_size=100), st.none(), st.integers()),
)
def test_no_input_makes_redeem_raise_anything_but_grant_invalid(
    lone_book: ActionBook, grant: Any, command: Any
) -> None:
    with pytest.raises(GrantInvalid):
        lone_book.redeem(grant, command)
    assert lone_book.request_of(grant) is None


# --- concurrency ----------------------------------------------------------------------------


def _redeem_at_once(
    index_path: str, folder: str, grant: str, command: str, barrier: Any, results: Any
) -> None:
    with RunbookIndex(index_path, settings=settings_in(Path(folder))) as index:
        index.guard.book.get("a" + "0" * 16)  # the book is open before the race starts
        barrier.wait(WAIT)
        try:
            results.put(("redeemed", index.redeem(grant, command).request_id))
        except GrantInvalid as exc:
            results.put(("refused", exc.reason))


@pytest.mark.slow
def test_concurrent_redeems_of_one_grant_let_exactly_one_through(
    index: RunbookIndex, built: Path, tmp_path: Path
) -> None:
    grant = granted(index, CACHE, FLUSH, ALICE, BOB, CAROL)
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_redeem_at_once, args=(str(built), str(tmp_path), grant, FLUSH, barrier, results))
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    try:
        outcomes = [results.get(timeout=WAIT) for _ in procs]
        for p in procs:
            p.join(WAIT)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    assert [p.exitcode for p in procs] == [0] * n
    assert sorted(kind for kind, _ in outcomes) == ["redeemed"] + ["refused"] * (n - 1)
    assert all("redeemed already" in why for kind, why in outcomes if kind == "refused")
    redeems = [r for r in audit_records(tmp_path) if r["action"] == "action.redeem"]
    assert sorted(r["outcome"] for r in redeems) == ["redeemed"] + ["refused"] * (n - 1)
    assert verify(tmp_path / "audit.log", key=KEY.encode(), head=tmp_path / "audit.head").ok


# --- state ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_requests_and_grants_survive_a_new_instance_and_a_rebuild(tmp_path: Path, model: Any) -> None:
    path = build(tmp_path / "own", model)
    settings = settings_in(tmp_path)
    with RunbookIndex(path, settings=settings, embedder=model) as first:
        pending = first.propose(CACHE, FLUSH, principal=ALICE)
        first.approve(pending.id, principal=BOB)
        grant = granted(first, CACHE, RESTART_CACHE, ALICE, BOB)
    with RunbookIndex(path, settings=settings, embedder=model) as second:
        assert [r.id for r in second.action_requests(status="pending")] == [pending.id]
        assert second.action_requests(status="pending")[0].approved_by == ("bob",)
    changed = dict(RUNBOOKS)
    changed[CACHE] = RUNBOOKS[CACHE] + "\n## Afterwards\n\nCheck the hit rate again.\n"
    with RunbookIndex(path, settings=settings, embedder=model) as before:
        generation = before.manifest.generation
    build(tmp_path / "own", model, changed)
    with RunbookIndex(path, settings=settings, embedder=model) as third:
        assert third.manifest.generation != generation
        assert third.approve(pending.id, principal=CAROL).grant is not None
        assert third.redeem(grant, RESTART_CACHE).command == RESTART_CACHE


@pytest.mark.slow
def test_a_command_removed_by_a_rebuild_cannot_be_approved_but_can_be_denied(
    tmp_path: Path, model: Any
) -> None:
    path = build(tmp_path / "own", model)
    settings = settings_in(tmp_path)
    with RunbookIndex(path, settings=settings, embedder=model) as index:
        flush = index.propose(CACHE, FLUSH, principal=ALICE)
        restart = index.propose(CACHE, RESTART_CACHE, principal=ALICE)
        grant = index.approve(restart.id, principal=BOB).grant
        assert grant is not None
        changed = dict(RUNBOOKS)
        changed[CACHE] = RUNBOOKS[CACHE].replace(block(FLUSH), "").replace(block(RESTART_CACHE), "")
        build(tmp_path / "own", model, changed)
        assert refusal(index.approve, flush.id, principal=BOB) == (
            f"request {flush.id}: the command is no longer in runbook {CACHE!r}"
        )
        # Taking an approval back never depends on the runbook still holding the command.
        assert index.deny(restart.id, principal=BOB, reason="step removed").request.status == "denied"
        assert index.deny(flush.id, principal=ALICE).request.status == "denied"
        with pytest.raises(GrantInvalid, match="revoked"):
            index.redeem(grant, RESTART_CACHE)


@pytest.mark.slow
def test_an_approval_follows_the_runbooks_policy_now(tmp_path: Path, model: Any) -> None:
    path = build(tmp_path / "own", model)
    settings = settings_in(tmp_path)
    with RunbookIndex(path, settings=settings, embedder=model) as index:
        request = index.propose(WEB, RESTART_WEB, principal=WENDY)
        assert request.approvals_needed == 1
        changed = dict(RUNBOOKS)
        # The runbook now names approvers and asks for two: its old request follows its policy now.
        changed[WEB] = RUNBOOKS[WEB].replace(
            'access: ["web"]\n', 'access: ["web"]\napprovers: ["web-leads"]\n'
        )
        build(tmp_path / "own", model, changed)
        assert "must belong to one of: web-leads" in refusal(index.approve, request.id, principal=WALT)
        decision = index.approve(request.id, principal=person("wes", "web", "web-leads"))
        assert decision.grant is not None


@pytest.mark.slow
def test_an_approval_counts_at_the_commands_risk_now(index: RunbookIndex) -> None:
    # A request recorded as less risky than its command is now (an older classifier, say)
    # is approved at the risk of now: here two approvers, not one.
    request = index.propose(LEDGER, DELETE_JOB, principal=LENA)
    with sqlite3.connect(index.guard.book.path) as db:
        db.execute("UPDATE requests SET risk = 'change', approvals_needed = 1 WHERE id = ?", (request.id,))
    db.close()
    assert "ledger-leads" in refusal(index.approve, request.id, principal=person("lina", "ledger"))
    first = index.approve(request.id, principal=LEO)
    assert first.grant is None and (first.request.risk, first.request.approvals_needed) == ("destructive", 2)
    assert index.approve(request.id, principal=LOU).grant is not None


# --- the audit trail ------------------------------------------------------------------------


@pytest.mark.slow
def test_every_step_is_an_audit_record_and_the_chain_verifies(index: RunbookIndex, tmp_path: Path) -> None:
    request = index.propose(CACHE, FLUSH, principal=ALICE, reason="evictions")
    with pytest.raises(ActionRefused):
        index.propose(WEB, RESTART_WEB, principal=ALICE)
    with pytest.raises(ActionRefused):
        index.approve(request.id, principal=ALICE)
    index.approve(request.id, principal=BOB)
    grant = index.approve(request.id, principal=CAROL).grant
    assert grant is not None
    with pytest.raises(GrantInvalid):
        index.redeem(grant, RESTART_CACHE)
    index.redeem(grant, FLUSH, principal=person("runner"))
    other = index.propose(CACHE, RESTART_CACHE, principal=ALICE)
    with pytest.raises(ActionRefused):
        index.deny(other.id, principal=ERIN)
    index.deny(other.id, principal=ALICE)
    read = index.propose(CACHE, GET_PODS, principal=ALICE)

    records = audit_records(tmp_path)
    steps = [(r["action"], r["outcome"]) for r in records]
    assert steps == [
        ("action.propose", "pending"),
        ("action.propose", "refused"),
        ("action.approve", "refused"),
        ("action.approve", "approved"),
        ("action.approve", "granted"),
        ("action.redeem", "refused"),
        ("action.redeem", "redeemed"),
        ("action.propose", "pending"),
        ("action.deny", "refused"),
        ("action.deny", "denied"),
        ("action.propose", "not_required"),
    ]
    ids = [request.id] + [None] + [request.id] * 5 + [other.id] * 3 + [read.id]
    assert [r.get("action_id") for r in records] == ids
    assert [r["principal"]["id"] if r["principal"] else None for r in records] == [
        "alice", "alice", "alice", "bob", "carol", None, "runner", "alice", "erin", "alice", "alice"
    ]  # fmt: skip
    digests = [r["command_sha256"] for r in records]
    assert digests[0] == digests[2] == digests[4] == digests[6] == command_digest(FLUSH)
    assert digests[1] == command_digest(RESTART_WEB) and digests[5] == command_digest(RESTART_CACHE)
    assert records[0]["risk"] == "destructive" and records[0]["approvals_needed"] == 2
    assert records[6]["command"] == FLUSH and records[6]["requester"] == "alice"
    assert all(r["reason"] for r in records if r["outcome"] == "refused")
    assert verify(tmp_path / "audit.log", key=KEY.encode(), head=tmp_path / "audit.head").ok


@pytest.mark.slow
def test_card_numbers_and_secrets_in_commands_never_reach_the_audit_log_or_the_book(
    index: RunbookIndex, tmp_path: Path
) -> None:
    pan = luhn_number("453914880343646")
    secret = "Zq8vR2kLm9Tx4wPqB7nC"
    token = "AKIAQ3EGT7RZ5KQW4XNB"
    commands = [
        f"curl -X POST https://psp.example/refund -d card={pan}",
        f"{FLUSH}; export PGPASSWORD={secret}",
        f"aws s3 ls --profile ops {token}",
    ]
    for command in commands:
        with pytest.raises(ActionRefused):
            index.propose(CACHE, command, principal=ALICE, reason=f"card {pan} key {token}")
    request = index.propose(CACHE, FLUSH, principal=ALICE, reason=f"customer card {pan}, PGPASSWORD={secret}")
    assert pan not in (request.reason or "") and secret not in (request.reason or "")
    index.approve(request.id, principal=BOB)
    grant = index.approve(request.id, principal=CAROL).grant
    assert grant is not None
    for command in commands:
        with pytest.raises(GrantInvalid):
            index.redeem(grant, command)
    index.deny(request.id, principal=BOB, reason=f"card {pan} is not ours; PGPASSWORD={secret}")
    log = (tmp_path / "audit.log").read_text()
    stored = (tmp_path / "actions.sqlite3").read_bytes()
    spaced = " ".join(pan[i : i + 4] for i in range(0, 16, 4))
    for value in (pan, spaced, secret, token):
        assert value not in log and value.encode() not in stored
    # Nor can they be found by hashing guesses: no record holds the hash of a command that held one.
    for command in commands:
        assert command_digest(command) not in log
    assert (
        "[PAN ****" in log
        and verify(tmp_path / "audit.log", key=KEY.encode(), head=tmp_path / "audit.head").ok
    )


# --- listing --------------------------------------------------------------------------------


@pytest.mark.slow
def test_listing_shows_only_requests_of_runbooks_the_principal_may_read(index: RunbookIndex) -> None:
    cache = index.propose(CACHE, RESTART_CACHE, principal=ALICE)
    web = index.propose(WEB, RESTART_WEB, principal=WENDY)
    ledger = index.propose(LEDGER, DELETE_JOB, principal=LENA)
    read = index.propose(CACHE, GET_PODS, principal=ALICE)
    index.deny(web.id, principal=WENDY)
    everything = {r.id for r in index.action_requests()}
    assert everything == {cache.id, web.id, ledger.id, read.id}
    assert {r.id for r in index.action_requests(principal=ERIN)} == {cache.id, read.id}
    assert {r.id for r in index.action_requests(principal=WALT)} == {web.id}
    assert {r.id for r in index.action_requests(principal=person("sam", "sre", "ledger"))} == {
        cache.id,
        read.id,
        ledger.id,
    }
    assert index.action_requests(principal=DAVE) == []
    assert index.action_requests(principal=person("nobody")) == []
    assert {r.id for r in index.action_requests(status="pending")} == {cache.id, ledger.id}
    assert [r.id for r in index.action_requests(principal=ERIN, status="pending")] == [cache.id]
    assert [r.id for r in index.action_requests(status="denied")] == [web.id]
    assert [r.id for r in index.action_requests(status="not_required")] == [read.id]
