"""Guarded actions over HTTP: a real uvicorn server, real Chroma, the real model, real tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runbook_rag import RunbookIndex, Settings
from runbook_rag.audit import verify
from runbook_rag.errors import ConfigError
from runbook_rag.service import ACTION_ENDPOINTS, create_app, load_tokens, token_digest

from .test_service import KEY, Server, get, post
from .waiting import WAIT

pytestmark = pytest.mark.slow

CRASHLOOP = "platform/pod-crashloop.md"  # readable by sre, platform, payments-oncall; approvers sre-leads
KAFKA = "platform/kafka-broker-down.md"  # readable by sre and platform; approvers sre-leads, two_person
FAILOVER = "platform/postgres-primary-failover.md"  # readable by dba only
CHANGE = "kubectl -n payments set resources deploy/capture-worker -c capture-worker --limits=memory=3Gi"
DESTRUCTIVE = "kubectl -n payments delete pod <pod>-debug"
READ = "kubectl -n payments rollout history deploy/<deployment>"
KAFKA_DELETE = "kubectl -n kafka delete pod ledger-kafka-broker-3"

# token -> (user, groups, endpoints; None for the default)
TOKENS: dict[str, tuple[str, list[str], list[str] | None]] = {
    "tok-bot": ("sam", ["sre"], ["search", "propose", "deny"]),
    "tok-lead": ("lee", ["sre", "sre-leads"], ["actions"]),
    "tok-lead-2": ("lou", ["platform", "sre-leads"], ["approve"]),
    "tok-runner": ("runner", ["executors"], ["redeem"]),
    "tok-dba": ("dee", ["dba", "sre-leads"], ["actions"]),
    "tok-peer": ("pia", ["sre"], ["actions"]),
    "tok-plain": ("pat", ["sre"], None),
    "tok-ghost": ("ghost", ["no-such-group"], ["actions"]),
    "tok-prom": ("prometheus", ["monitoring"], ["metrics"]),
}


def write_tokens(path: Path) -> Path:
    entries = []
    for token, (user, groups, endpoints) in TOKENS.items():
        entry: dict[str, Any] = {"token_sha256": token_digest(token), "user": user, "groups": groups}
        if endpoints is not None:
            entry["endpoints"] = endpoints
        entries.append(entry)
    path.write_text(json.dumps(entries))
    return path


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, sample_index_path: Path, model
) -> Iterator[tuple[str, RunbookIndex, Path]]:
    tmp = tmp_path_factory.mktemp("actions-svc")
    log = tmp / "audit.log"
    settings = Settings(audit_log=log, audit_key=KEY, actions_db=tmp / "actions.sqlite3")
    index = RunbookIndex(sample_index_path, settings=settings, embedder=model, interface="http")
    server = Server(create_app(index, load_tokens(write_tokens(tmp / "tokens.json"))))
    yield server.url, index, log
    server.stop()


def call(url: str, path: str, token: str, body: Any = None) -> httpx.Response:
    if body is None:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.post(url + path, headers=headers, timeout=WAIT)
    return post(url, path, body, token)


def listed(url: str, token: str, status: str | None = None) -> httpx.Response:
    query = f"?status={status}" if status else ""
    return get(url + "/v1/actions" + query, Authorization=f"Bearer {token}")


def refusal(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    return str(error["message"])


def test_a_chat_bot_proposes_a_lead_approves_and_the_executor_redeems_once(served) -> None:
    url, _, _ = served
    proposed = call(url, "/v1/actions", "tok-bot", {"source": CRASHLOOP, "command": CHANGE, "reason": "OOM"})
    assert proposed.status_code == 201, proposed.text
    request = proposed.json()
    assert request["status"] == "pending" and request["risk"] == "change"
    assert request["approvals_needed"] == 1 and request["requester"] == "sam"
    assert request["command"] == CHANGE and request["source"] == CRASHLOOP

    pending = listed(url, "tok-lead", "pending").json()["requests"]
    assert request["id"] in {r["id"] for r in pending}

    approved = call(url, f"/v1/actions/{request['id']}/approve", "tok-lead")
    assert approved.status_code == 200, approved.text
    decision = approved.json()
    assert decision["status"] == "approved" and decision["approved_by"] == ["lee"]
    assert decision["grant"].startswith("rrg1.") and decision["expires_at"]

    redeemed = call(url, "/v1/actions/redeem", "tok-runner", {"grant": decision["grant"], "command": CHANGE})
    assert redeemed.status_code == 200, redeemed.text
    assert redeemed.json() == {
        "id": request["id"],
        "valid": True,
        "command": CHANGE,
        "risk": "change",
        "source": CRASHLOOP,
        "requester": "sam",
    }
    again = call(url, "/v1/actions/redeem", "tok-runner", {"grant": decision["grant"], "command": CHANGE})
    assert "redeemed already" in refusal(again, 409, "grant_invalid")
    mine = listed(url, "tok-lead", "redeemed").json()["requests"]
    assert [r["status"] for r in mine if r["id"] == request["id"]] == ["redeemed"]


def test_two_person_needs_two_distinct_leads(served) -> None:
    url, _, _ = served
    request = call(url, "/v1/actions", "tok-bot", {"source": KAFKA, "command": KAFKA_DELETE}).json()
    assert request["risk"] == "destructive" and request["approvals_needed"] == 2
    first = call(url, f"/v1/actions/{request['id']}/approve", "tok-lead").json()
    assert first["status"] == "pending" and "grant" not in first
    twice = call(url, f"/v1/actions/{request['id']}/approve", "tok-lead")
    assert "approved it already" in refusal(twice, 403, "action_refused")
    second = call(url, f"/v1/actions/{request['id']}/approve", "tok-lead-2").json()
    assert second["status"] == "approved" and second["approved_by"] == ["lee", "lou"]
    assert second["grant"]


def test_a_read_command_needs_no_approval(served) -> None:
    url, _, _ = served
    proposed = call(url, "/v1/actions", "tok-bot", {"source": CRASHLOOP, "command": READ})
    assert proposed.status_code == 201
    assert proposed.json()["status"] == "not_required" and proposed.json()["approvals_needed"] == 0


def test_self_approval_and_unentitled_approvers_are_refused(served) -> None:
    url, _, _ = served
    own = call(url, "/v1/actions", "tok-lead", {"source": CRASHLOOP, "command": DESTRUCTIVE}).json()
    message = refusal(call(url, f"/v1/actions/{own['id']}/approve", "tok-lead"), 403, "action_refused")
    assert "requester cannot approve" in message
    # A lead of another team, who may not read the runbook: refused exactly as for no request at all.
    unreadable = call(url, f"/v1/actions/{own['id']}/approve", "tok-dba")
    missing = call(url, "/v1/actions/a0000000000000000/approve", "tok-dba")
    assert refusal(unreadable, 403, "action_refused") == refusal(missing, 403, "action_refused").replace(
        "a0000000000000000", own["id"]
    )
    assert "Pod CrashLoopBackOff" not in unreadable.text and CRASHLOOP not in unreadable.text
    # Someone who may read it but is not in its approver groups.
    bot = call(url, "/v1/actions", "tok-bot", {"source": CRASHLOOP, "command": CHANGE}).json()
    peer = call(url, f"/v1/actions/{bot['id']}/approve", "tok-peer")
    assert "must belong to one of: sre-leads" in refusal(peer, 403, "action_refused")
    stranger = call(url, "/v1/actions", "tok-bot", {"source": CRASHLOOP, "command": DESTRUCTIVE}).json()
    assert stranger["status"] == "pending"
    denied = call(url, f"/v1/actions/{stranger['id']}/deny", "tok-bot", {"reason": "not needed"})
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    late = call(url, f"/v1/actions/{stranger['id']}/approve", "tok-lead")
    assert "denied, not pending" in refusal(late, 403, "action_refused")


def test_a_restricted_runbook_cannot_be_proposed_from_and_says_nothing(served) -> None:
    url, _, _ = served
    restricted = call(
        url, "/v1/actions", "tok-lead", {"source": FAILOVER, "command": "patronictl -c x failover"}
    )
    nowhere = call(
        url, "/v1/actions", "tok-lead", {"source": "no/such.md", "command": "patronictl -c x failover"}
    )
    assert refusal(restricted, 403, "action_refused").replace(FAILOVER, "X") == refusal(
        nowhere, 403, "action_refused"
    ).replace("no/such.md", "X")
    made_up = call(
        url, "/v1/actions", "tok-bot", {"source": CRASHLOOP, "command": "kubectl delete ns payments"}
    )
    assert "holds this command" in refusal(made_up, 403, "action_refused")


def test_tokens_without_the_action_endpoints_are_refused(served) -> None:
    url, _, _ = served
    body = {"source": CRASHLOOP, "command": CHANGE}
    for token in ("tok-plain", "tok-runner", "tok-prom"):  # default endpoints, redeem only, metrics only
        assert call(url, "/v1/actions", token, body).json()["error"]["code"] == "forbidden"
    assert listed(url, "tok-plain").status_code == 403
    assert listed(url, "tok-bot").status_code == 403  # propose and deny, but not the list
    request = call(url, "/v1/actions", "tok-bot", body).json()
    assert call(url, f"/v1/actions/{request['id']}/approve", "tok-bot").status_code == 403
    assert call(url, f"/v1/actions/{request['id']}/approve", "tok-runner").status_code == 403
    assert (
        call(url, "/v1/actions/redeem", "tok-bot", {"grant": "rrg1.x.y", "command": CHANGE}).status_code
        == 403
    )
    assert call(url, "/v1/actions", "nope", body).status_code == 401
    assert httpx.get(url + "/v1/actions", timeout=WAIT).status_code == 401


def test_a_principal_of_an_unknown_group_lists_nothing(served) -> None:
    url, _, _ = served
    call(url, "/v1/actions", "tok-bot", {"source": CRASHLOOP, "command": CHANGE})
    assert listed(url, "tok-lead").json()["requests"]
    assert listed(url, "tok-ghost").json() == {"requests": []}
    assert listed(url, "tok-ghost", "pending").json() == {"requests": []}
    # dee leads sre-leads but reads only dba runbooks: no request of pod-crashloop or kafka.
    assert {r["source"] for r in listed(url, "tok-dba").json()["requests"]} <= {FAILOVER}
    bad = listed(url, "tok-lead", "whatever")
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/actions", {"source": CRASHLOOP, "command": CHANGE, "groups": ["sre-leads"]}),
        ("/v1/actions", {"source": CRASHLOOP, "command": CHANGE, "user": "lee"}),
        ("/v1/actions/a0000000000000000/approve", {"user": "lee"}),
        ("/v1/actions/a0000000000000000/approve", {"groups": ["sre-leads"]}),
        ("/v1/actions/a0000000000000000/deny", {"reason": "x", "groups": ["sre-leads"]}),
        ("/v1/actions/redeem", {"grant": "rrg1.x.y", "command": CHANGE, "user": "lee"}),
    ],
)
def test_a_body_naming_a_user_or_groups_is_rejected(served, path: str, body: dict[str, Any]) -> None:
    url, _, _ = served
    got = call(url, path, "tok-lead", body)
    assert got.status_code == 422 and got.json()["error"]["code"] == "invalid_request"
    extra = (set(body) - {"source", "command", "reason", "grant"}).pop()
    assert extra in got.json()["error"]["message"]


def test_forged_truncated_changed_and_expired_grants_are_clean_json_errors(served) -> None:
    url, index, _ = served
    request = call(url, "/v1/actions", "tok-bot", {"source": CRASHLOOP, "command": CHANGE}).json()
    grant = call(url, f"/v1/actions/{request['id']}/approve", "tok-lead").json()["grant"]
    head, claims, mac = grant.split(".")
    forged_claims = claims[:-2] + ("AA" if claims[-2:] != "AA" else "BB")
    for bad in (grant[:-3], f"{head}.{forged_claims}.{mac}", "rrg1", "x" * 5000, "not a grant"):
        got = call(url, "/v1/actions/redeem", "tok-runner", {"grant": bad, "command": CHANGE})
        assert "malformed" in refusal(got, 409, "grant_invalid")
    other = call(url, "/v1/actions/redeem", "tok-runner", {"grant": grant, "command": CHANGE + " --dry-run"})
    assert "another command" in refusal(other, 409, "grant_invalid")
    book = index.guard.book
    real = book.clock
    book.clock = lambda: real() + book.grant_ttl + 1
    try:
        late = call(url, "/v1/actions/redeem", "tok-runner", {"grant": grant, "command": CHANGE})
        assert "expired" in refusal(late, 409, "grant_invalid")
    finally:
        book.clock = real
    # Whitespace is normalised: the same command with its spaces doubled is the command granted.
    spaced = CHANGE.replace(" ", "  ")
    assert (
        call(url, "/v1/actions/redeem", "tok-runner", {"grant": grant, "command": spaced}).status_code == 200
    )


def test_oversized_bodies_are_refused(served) -> None:
    url, _, _ = served
    huge = call(url, "/v1/actions", "tok-bot", {"source": CRASHLOOP, "command": "x" * 40_000})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "too_large"
    grant = call(url, "/v1/actions/redeem", "tok-runner", {"grant": "g" * 20_000, "command": CHANGE})
    assert grant.status_code == 413
    long = call(url, "/v1/actions", "tok-bot", {"source": CRASHLOOP, "command": "y" * 9_000})
    assert long.status_code == 422 and long.json()["error"]["code"] == "invalid_request"
    overlong_id = call(url, "/v1/actions/" + "a" * 200 + "/approve", "tok-lead")
    assert overlong_id.status_code == 422


def test_every_step_is_audited_as_http_and_counted_without_ids(served) -> None:
    url, _, log = served
    request = call(url, "/v1/actions", "tok-bot", {"source": CRASHLOOP, "command": CHANGE}).json()
    grant = call(url, f"/v1/actions/{request['id']}/approve", "tok-lead").json()["grant"]
    call(url, "/v1/actions/redeem", "tok-runner", {"grant": grant, "command": CHANGE})
    call(url, "/v1/actions/redeem", "tok-runner", {"grant": grant, "command": CHANGE})
    records = [json.loads(line) for line in log.read_text().splitlines()]
    steps = [r for r in records if r.get("action_id") == request["id"]]
    assert [(r["action"], r["outcome"]) for r in steps] == [
        ("action.propose", "pending"),
        ("action.approve", "granted"),
        ("action.redeem", "redeemed"),
        ("action.redeem", "refused"),  # the replay
    ]
    assert all(r["interface"] == "http" for r in steps)
    assert [r["principal"]["id"] for r in steps] == ["sam", "lee", "runner", "runner"]
    replay = [r for r in records if r["action"] == "action.redeem" and r["outcome"] == "refused"]
    assert replay and replay[-1]["principal"]["id"] == "runner"
    assert grant not in log.read_text()
    assert verify(log, key=KEY.encode()).ok

    metrics = get(url + "/metrics", Authorization="Bearer tok-prom").text
    assert 'runbook_rag_actions_total{operation="propose",outcome="pending"}' in metrics
    assert 'runbook_rag_actions_total{operation="redeem",outcome="refused"}' in metrics
    assert 'runbook_rag_requests_total{endpoint="/v1/actions/{id}/approve",outcome="200"}' in metrics
    assert 'runbook_rag_requests_total{endpoint="/v1/actions/redeem",outcome="409"}' in metrics
    assert request["id"] not in metrics
    schema = get(url + "/openapi.json").json()
    assert {"/v1/actions", "/v1/actions/redeem", "/v1/actions/{request_id}/approve"} <= set(schema["paths"])


def test_actions_are_granted_by_name_and_never_by_default(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    entries = [
        {"token_sha256": token_digest("a"), "user": "bot", "groups": ["sre"]},
        {"token_sha256": token_digest("b"), "user": "lead", "groups": ["sre"], "endpoints": ["actions"]},
        {"token_sha256": token_digest("c"), "user": "runner", "groups": ["x"], "endpoints": ["redeem"]},
    ]
    path.write_text(json.dumps(entries))
    tokens = load_tokens(path)
    assert not tokens[token_digest("a")].endpoints & ACTION_ENDPOINTS
    assert tokens[token_digest("b")].endpoints == ACTION_ENDPOINTS
    assert tokens[token_digest("c")].endpoints == {"redeem"}
    path.write_text(json.dumps([{**entries[0], "endpoints": ["execute"]}]))
    with pytest.raises(ConfigError, match="entry 1: endpoints must be among"):
        load_tokens(path)
