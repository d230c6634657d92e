"""Cluster and control-plane tools: kubectl/oc, helm, patronictl, etcdctl, vault, terraform, argocd,
consul."""

from __future__ import annotations

import re

from .args import _flag, _positionals, _table, _value, _verbs
from .risks import Classification, Risk, _c, _combine, _Stdin, _words

# kubectl and oc ------------------------------------------------------------------------------

_KUBE_VALUES = _words(
    "-n --namespace --context --cluster --kubeconfig --user -s --server --as --as-group --token "
    "--request-timeout -l --selector -o --output -c --container -f --filename --field-selector "
    "--sort-by --since --tail --since-time -L --label-columns --template --type --timeout "
    "--grace-period --replicas --image -v --for --patch-file --subresource --namespace"
)
_KUBE = _table(
    read="get describe logs top explain api-resources api-versions version cluster-info diff events "
    "wait whoami status projects completion options help kustomize",
    change="apply patch annotate label edit set autoscale cordon uncordon cp port-forward create "
    "expose run attach proxy rsync new-app new-project start-build login logout tag import-image "
    "project replace",
    destructive="delete drain",
)
_KUBE_SUB = {
    "rollout": _table(read="status history", change="restart undo pause resume"),
    "auth": _table(read="can-i whoami", change="reconcile"),
    "config": _table(
        read="view get-contexts current-context get-clusters get-users",
        change="use-context set-context set-cluster set-credentials set use unset rename-context",
        destructive="delete-context delete-cluster delete-user",
    ),
    "certificate": _table(change="approve deny"),
    "plugin": _table(read="list"),
    "adm": _table(
        read="top node-logs inspect release who-can must-gather-status",
        change="cordon uncordon policy certificate must-gather upgrade new-project groups "
        "taint create-bootstrap-project-template",
        destructive="drain prune",
    ),
}


def _kubectl(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, _KUBE_VALUES)
    if not words:
        return _c("read", "kubectl.no-verb")
    verb = words[0]
    if verb in ("exec", "rsh", "debug"):
        return _kube_exec(verb, args, words, depth)
    if verb == "scale":
        replicas = _value(args, "--replicas")
        if replicas is None or not replicas.isdigit():
            return _c("unknown", "kubectl.scale.replicas")
        return (
            _c("destructive", "kubectl.scale-to-zero")
            if int(replicas) == 0
            else _c("change", "kubectl.scale")
        )
    if verb == "replace" and _flag(args, "--force"):
        return _c("destructive", "kubectl.replace-force")
    if verb == "taint" or (verb == "adm" and words[1:2] == ["taint"]):
        return (
            _c("destructive", "kubectl.taint-noexecute")
            if "NoExecute" in " ".join(args)
            else _c("change", "kubectl.taint")
        )
    if verb == "adm" and words[1:2] == ["upgrade"] and len(args) == 2:
        return _c("read", "kubectl.adm.upgrade")
    if verb == "project" and len(words) == 1:
        return _c("read", "kubectl.project")
    if verb in _KUBE_SUB:
        sub = words[1] if len(words) > 1 else ""
        return _verbs(f"kubectl.{verb}", sub, _KUBE_SUB[verb])
    return _verbs("kubectl", verb, _KUBE)


def _kube_exec(verb: str, args: list[str], words: list[str], depth: int) -> Classification:
    from .wrappers import _argv  # wrappers imports the tool tables, and so this module

    if "--" in args:
        inner = args[args.index("--") + 1 :]
    elif verb == "exec" and len(words) > 2:
        inner = words[2:]  # the older form: kubectl exec POD COMMAND
    else:
        return _c("unknown", f"kubectl.{verb}.interactive")
    if not inner:
        return _c("unknown", f"kubectl.{verb}.interactive")
    result = _argv(inner, depth + 1, None)
    return _combine([_c("change", f"kubectl.{verb}"), result])


# helm, patronictl, etcdctl, vault, terraform: a verb (and sometimes a subverb) decides ----------

_HELM = _table(
    read="list ls status get history hist template show inspect search version lint diff env verify",
    change="upgrade install rollback test pull fetch package push dependency repo plugin registry",
    destructive="uninstall delete del un",
)
_PATRONI = _table(
    read="list show-config history topology version dsn",
    change="switchover failover restart reload edit-config pause resume flush",
    destructive="reinit remove",
)
_ETCD = {
    "": _table(
        read="get endpoint version watch check",
        change="put move-leader",
        destructive="del defrag compact compaction",
    ),
    "member": _table(read="list", change="add update promote", destructive="remove"),
    "snapshot": _table(read="status", change="save", destructive="restore"),
    "alarm": _table(read="list", change="disarm"),
    "lease": _table(read="list timetolive", change="grant keep-alive", destructive="revoke"),
    "user": _table(read="list get", change="add grant-role passwd", destructive="delete revoke-role"),
    "role": _table(read="list get", change="add grant-permission", destructive="delete revoke-permission"),
}
_VAULT = {
    "": _table(
        read="read list status version print path-help",
        change="write login unwrap patch",
        destructive="delete",
    ),
    "kv": _table(
        read="get list metadata",
        change="put patch rollback undelete enable-versioning",
        destructive="delete destroy",
    ),
    "policy": _table(read="read list fmt", change="write", destructive="delete"),
    "token": _table(read="lookup capabilities", change="create renew", destructive="revoke"),
    "lease": _table(read="lookup", change="renew", destructive="revoke"),
    "auth": _table(read="list help", change="enable tune move", destructive="disable"),
    "secrets": _table(read="list", change="enable tune move", destructive="disable"),
    "audit": _table(read="list", change="enable", destructive="disable"),
    "operator": _table(
        read="members key-status usage diagnose",
        change="unseal step-down rotate init generate-root migrate",
        destructive="seal",
    ),
}
_VAULT_RAFT = _table(read="list-peers autopilot", change="snapshot join", destructive="remove-peer")
_TERRAFORM = _table(
    read="plan show validate output version providers graph fmt-check",
    change="apply import init refresh taint untaint force-unlock get login fmt",
    destructive="destroy",
)
_TF_SUB = {
    "state": _table(read="list show pull", change="mv push replace-provider", destructive="rm"),
    "workspace": _table(read="list show", change="select new", destructive="delete"),
}


def _subverb(
    tool: str, args: list[str], tables: dict[str, dict[str, Risk]], values: frozenset[str]
) -> Classification:
    words = _positionals(args, values)
    if not words:
        return _c("unknown", f"{tool}.no-verb")
    if words[0] in tables and words[0] != "":
        return _verbs(f"{tool}.{words[0]}", words[1] if len(words) > 1 else "", tables[words[0]])
    return _verbs(tool, words[0], tables[""])


def _helm(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, _words("-n --namespace --kube-context -f --values --set --version -o"))
    if words[:2] in (["repo", "list"], ["plugin", "list"], ["dependency", "list"]):
        return _c("read", f"helm.{words[0]}.list")
    return _verbs("helm", words[0] if words else "", _HELM)


def _patronictl(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(
        args,
        _words(
            "-c --config-file -d --dcs-url -k --insecure --member --candidate --leader --master "
            "--role --scheduled --group"
        ),
    )
    return _verbs("patronictl", words[0] if words else "", _PATRONI)


def _etcdctl(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    values = _words(
        "--endpoints --cacert --cert --key --user --password -w --write-out --dial-timeout --command-timeout"
    )
    return _subverb("etcdctl", args, _ETCD, values)


def _vault(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, _words("-address -namespace -format -field -mount -method -path"))
    if words[:2] == ["operator", "raft"]:
        sub = words[2] if len(words) > 2 else ""
        if sub == "snapshot" and words[3:4] == ["restore"]:
            return _c("destructive", "vault.operator.raft.snapshot-restore")
        return _verbs("vault.operator.raft", sub, _VAULT_RAFT)
    if words[:3] == ["kv", "metadata", "delete"]:
        return _c("destructive", "vault.kv.metadata-delete")
    return _subverb("vault", args, _VAULT, _words("-address -namespace -format -field -mount -method -path"))


def _terraform(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, _words("-chdir -var -var-file -target -out -state -lock-timeout"))
    verb = words[0] if words else ""
    if verb == "apply" and _flag(args, "-destroy"):
        return _c("destructive", "terraform.apply-destroy")
    if verb == "fmt" and _flag(args, "-check"):
        return _c("read", "terraform.fmt-check")
    if verb in _TF_SUB:
        return _verbs(f"terraform.{verb}", words[1] if len(words) > 1 else "", _TF_SUB[verb])
    if verb == "console":
        return _c("unknown", "shell.interactive")
    return _verbs("terraform", verb, _TERRAFORM)


def _argocd(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, frozenset({"-o", "--output", "--server", "--grpc-web"}))
    text = " ".join(words[:2])
    if re.search(r"\b(delete|terminate-op)\b", text):
        return _c("destructive", "argocd.delete")
    if re.search(r"\b(sync|set|create|rollback|patch|edit|restart|add|login|actions)\b", text):
        return _c("change", "argocd.change")
    if re.search(r"\b(get|list|diff|history|manifests|logs|version|resources|wait)\b", text):
        return _c("read", "argocd.read")
    return _c("unknown", "argocd.unknown-verb")


def _consul(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args)
    verb = words[0] if words else ""
    if verb == "maint":
        return (
            _c("change", "consul.maint") if _flag(args, "-enable", "-disable") else _c("read", "consul.maint")
        )
    tables = {
        "kv": _table(read="get export", change="put import", destructive="delete"),
        "snapshot": _table(read="inspect", change="save", destructive="restore"),
        "operator": _table(read="raft", change="autopilot"),
        "services": _table(change="register", destructive="deregister"),
        "acl": _table(read="token policy role"),
    }
    if verb in tables:
        sub = words[1] if len(words) > 1 else ""
        if verb == "operator" and words[1:3] == ["raft", "remove-peer"]:
            return _c("destructive", "consul.operator.raft.remove-peer")
        if verb == "acl" and len(words) > 2 and words[2] not in ("list", "read"):
            return _c("change", "consul.acl")
        if not sub or sub.startswith("-") or _flag(args, "-help", "--help"):
            return _c("read", f"consul.{verb}.help")
        return _verbs(f"consul.{verb}", sub, tables[verb])
    table = _table(
        read="members catalog info monitor version watch help members rtt validate",
        change="reload join event exec",
        destructive="leave force-leave",
    )
    return _verbs("consul", verb, table)
