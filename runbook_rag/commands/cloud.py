"""Cloud and HTTP clients: aws, gcloud, gh, curl and wget."""

from __future__ import annotations

import re

from .args import _flag, _positionals, _table, _value, _verbs
from .risks import Classification, _c, _Stdin, _words

# cloud CLIs ----------------------------------------------------------------------------------

_AWS_READ = re.compile(
    r"^(describe|list|get|head|lookup|search|batch-get|filter|scan|query|select|test|validate|"
    r"estimate|simulate|wait|preview|check|detect|generate-presigned)(-|$)"
)
_AWS_DESTRUCTIVE = re.compile(
    r"^(delete|terminate|remove|purge|deregister|revoke|destroy|release|stop|disable|"
    r"deactivate|batch-delete|empty|abort)(-|$)"
)
_AWS_CHANGE = re.compile(
    r"^(create|update|put|modify|start|attach|associate|disassociate|detach|tag|untag|register|enable|set|"
    r"run|send|invoke|copy|import|restore|authorize|reset|reboot|promote|failover|apply|change|"
    r"publish|add|upload|execute|rotate|cancel|accept|reject|replace|import|export|sync|"
    r"switchover|resume|increase|decrease|allocate|assume|login)(-|$)"
)
_AWS_VALUES = _words("--region --profile --output --query --endpoint-url --cli-read-timeout --color")


def _aws(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, _AWS_VALUES)
    if len(words) < 2:
        return _c("read" if words in ([], ["help"]) else "unknown", "aws.no-operation")
    service, operation = words[0], words[1]
    if service == "s3":
        if operation == "sync" and _flag(args, "--delete"):
            return _c("destructive", "aws.s3.sync-delete")
        table = _table(read="ls presign", change="cp mv sync mb website", destructive="rm rb")
        return _verbs("aws.s3", operation, table)
    if service == "sts" and operation.startswith("get-"):
        return _c("read", "aws.sts.get")
    for risk, pattern in (("destructive", _AWS_DESTRUCTIVE), ("change", _AWS_CHANGE), ("read", _AWS_READ)):
        if pattern.match(operation):
            verb = operation.split("-", 1)[0]
            return _c(risk, f"aws.{verb}")  # type: ignore[arg-type]
    return _c("unknown", "aws.unknown-operation")


_GCLOUD = _table(
    read="list describe info version get-iam-policy get-value read tail list-grants ssh-keys-list",
    change="create update deploy patch import enable restart reset start set-iam-policy "
    "add-iam-policy-binding get-credentials rolling-action resize set set-value activate "
    "failover promote-replica export connect login add-tags add-labels remove-labels",
    destructive="delete remove-iam-policy-binding stop disable purge cancel unset abandon-instances",
)


def _gcloud(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, _words("--project --zone --region --format --filter --limit --account"))
    if "ssh" in words or "interactive" in words:
        return _c("unknown", "gcloud.ssh" if "ssh" in words else "shell.interactive")
    if "resize" in words and (_value(args, "--size", "--num-nodes") == "0"):
        return _c("destructive", "gcloud.resize-to-zero")
    risks = [(word, _GCLOUD[word]) for word in words if word in _GCLOUD]
    risks += [(word, "read") for word in words if word.startswith("get-") and word not in _GCLOUD]
    if not risks:
        return _c("unknown", "gcloud.unknown-verb")
    word, risk = risks[0]
    return _c(risk, f"gcloud.{word}")


def _gh(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, _words("-R --repo -q --jq -t --template -H --header -X --method"))
    if words[:1] == ["api"]:
        method = (_value(args, "-X", "--method") or "GET").upper()
        if method == "DELETE":
            return _c("destructive", "gh.api.delete")
        if method != "GET" or _flag(args, "-f", "-F", "--field", "--raw-field", "--input"):
            return _c("change", "gh.api.write")
        return _c("read", "gh.api.get")
    if len(words) > 1 and words[1] in ("list", "view", "status", "diff", "checks", "watch"):
        return _c("read", f"gh.{words[1]}")
    return _c("unknown", "gh.unknown-verb")


# HTTP clients ----------------------------------------------------------------------------------


def _curl(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    if _flag(args, "-K", "--config"):
        return _c("unknown", "curl.config-file")
    method = (_value(args, "-X", "--request") or "").upper()
    if method == "DELETE":
        return _c("destructive", "curl.delete")
    if method in ("POST", "PUT", "PATCH") or _flag(
        args,
        "-d",
        "--data",
        "--data-raw",
        "--data-binary",
        "--data-urlencode",
        "--data-ascii",
        "-F",
        "--form",
        "--form-string",
        "-T",
        "--upload-file",
        "--json",
    ):
        return _c("change", "curl.write-method")
    if method not in ("", "GET", "HEAD", "OPTIONS"):
        return _c("unknown", "curl.method")
    output = _value(args, "-o", "--output")
    if (output is not None and output not in ("/dev/null", "-")) or _flag(
        args, "-O", "--remote-name", "--remote-name-all"
    ):
        return _c("change", "curl.output-file")
    return _c("read", "curl.get")


def _wget(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    method = (_value(args, "--method") or "").upper()
    if method == "DELETE":
        return _c("destructive", "wget.delete")
    if method in ("POST", "PUT", "PATCH") or _flag(args, "--post-data", "--post-file", "--body-data"):
        return _c("change", "wget.write-method")
    output = _value(args, "-O", "--output-document")
    if _flag(args, "--spider") or output in ("-", "/dev/null"):
        return _c("read", "wget.stdout")
    return _c("change", "wget.download")
