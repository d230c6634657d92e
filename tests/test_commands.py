"""Commands found in runbook Markdown, and the risk each one is given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runbook_rag.commands import RISKS, Classification, Command, classify, extract_commands, normalize

EVALS = Path(__file__).resolve().parent.parent / "evals"
GATED = ("destructive", "unknown")


def risk(text: str, language: str = "shell") -> str:
    return classify(text, language).risk


# --- extraction ---------------------------------------------------------------------------------

DOC = """# Failover

Check the cluster with `patronictl -c /etc/patroni.yml list` first, and note `kubectl`.

```bash
kubectl get pods -n db
# a comment
kubectl logs deploy/api \\
  --since=10m
psql <<EOF
SELECT 1;
EOF
```

```console
$ systemctl status patroni
● patroni.service - Runners to orchestrate a high-availability PostgreSQL
   Active: active (running)
$ sudo journalctl -u patroni \\
>   --since today
```

```sql
app=# SELECT count(*) FROM t;
DELETE FROM t
WHERE id = 1;
\\dt
```

```yaml
kind: Deployment
```

```
kubectl rollout restart deploy/api
```
"""


def test_extraction_finds_every_command_with_its_language_and_lines() -> None:
    found = extract_commands(DOC, start_line=10)
    assert [(c.text, c.language, c.start_line, c.end_line) for c in found] == [
        ("patronictl -c /etc/patroni.yml list", "shell", 12, 12),
        ("kubectl get pods -n db", "shell", 15, 15),
        ("kubectl logs deploy/api \\\n  --since=10m", "shell", 17, 18),
        ("psql <<EOF\nSELECT 1;\nEOF", "shell", 19, 21),
        ("systemctl status patroni", "shell", 25, 25),
        ("sudo journalctl -u patroni \\\n  --since today", "shell", 28, 29),
        ("SELECT count(*) FROM t;", "sql", 33, 33),
        ("DELETE FROM t\nWHERE id = 1;", "sql", 34, 35),
        ("\\dt", "sql", 36, 36),
        ("kubectl rollout restart deploy/api", "shell", 44, 44),
    ]
    assert all(isinstance(c, Command) for c in found)


_MARKDOWNISH = st.text(alphabet=" \t\n>-*+1.)`~#abk", max_size=60)


@given(_MARKDOWNISH)
def test_text_that_extraction_does_not_parse_holds_no_code(text: str) -> None:
    """Extraction skips text without a fence, a code span or an indented block; the parser
    must agree that such text holds no code, whatever its lists, quotes and tabs."""
    from runbook_rag.commands.extract import _MAY_HOLD_CODE
    from runbook_rag.parsing import passage_parser

    code = {"fence", "code_block", "code_inline"}
    tokens = passage_parser().parse(text)
    kinds = {t.type for t in tokens} | {c.type for t in tokens for c in t.children or []}
    if kinds & code:
        assert _MAY_HOLD_CODE.search(text), f"code in {text!r} would be skipped"


def test_indented_code_in_lists_and_quotes_is_still_extracted() -> None:
    doc = (
        "1. Restart:\n\n       kubectl rollout restart deploy/api\n\n"
        ">     kubectl delete pod x\n\n-\t\tkubectl drain node-1\n"
    )
    assert [c.text for c in extract_commands(doc)] == [
        "kubectl rollout restart deploy/api",
        "kubectl delete pod x",
        "kubectl drain node-1",
    ]


def test_a_function_or_if_over_several_lines_is_one_command() -> None:
    doc = (
        "```bash\nrestart() {\n  kubectl rollout restart deploy/$1\n}\n"
        "if kubectl get ns db; then\n  kubectl get pods -n db\nfi\nkubectl get nodes\n```\n"
    )
    found = extract_commands(doc)
    assert [(c.start_line, c.end_line) for c in found] == [(2, 4), (5, 7), (8, 8)]
    assert [classify(c.text).risk for c in found] == ["change", "read", "read"]


def test_a_loop_over_several_lines_is_one_command() -> None:
    doc = "```sh\nfor p in a b; do\n  kubectl delete pod $p\ndone\nkubectl get pods\n```\n"
    found = extract_commands(doc)
    assert [(c.start_line, c.end_line) for c in found] == [(2, 4), (5, 5)]
    assert risk(found[0].text) == "destructive"


def test_inline_code_counts_only_when_it_is_a_whole_command() -> None:
    doc = "Run `kubectl delete pod x`, not `kubectl`, `true` or `some_function()`.\n"
    assert [c.text for c in extract_commands(doc)] == ["kubectl delete pod x"]


def test_unlabelled_blocks_that_are_not_shell_are_skipped() -> None:
    doc = "```\nNAME   READY   STATUS\napi-1  1/1     Running\n```\n"
    assert extract_commands(doc) == []


SESSIONS = """```console
alice@bastion-1:~$ kubectl get pods -n db
NAME    READY
db-0    1/1
[root@db-1 data]# systemctl status patroni
sh-5.1# chroot /host
```

```bash
kubectl -n vault exec -it vault-0 -- sh
$ vault status
$> vault operator raft list-peers
```
"""


def test_prompts_of_every_common_shape_are_removed_and_what_follows_them_is_output() -> None:
    assert [(c.text, c.start_line) for c in extract_commands(SESSIONS)] == [
        ("kubectl get pods -n db", 2),
        ("systemctl status patroni", 5),
        ("chroot /host", 6),
        ("kubectl -n vault exec -it vault-0 -- sh", 10),
        ("vault status", 11),
        ("vault operator raft list-peers", 12),
    ]


OUTPUT = """```shell
ls -l /etc/app
total 8K
-rw-r--r-- 1 root root 1.2K Jan  3 10:00 app.yaml
drwxr-xr-x 2 root root 4.0K Jan  3 10:00 conf.d

kubectl get deploy -n shop
NAMESPACE   NAME     READY   UP-TO-DATE
shop        cart     2/2     2
shop        orders   0/1     1
./bin/drain-queue --now

redis-cli INFO replication
role:master
connected_slaves:2
redis-cli SLOWLOG GET 2
1) 1) (integer) 14
   2) (integer) 1700000000
kubectl get lease -n shop leader -o yaml
holderIdentity: orders-7c9
leaseDurationSeconds: 15
curl -s localhost:8080/status
{"status": "ok", "uptime": 123}
journalctl -u cart --since today
Jan 03 10:00:01 node-1 cart[812]: ERROR: upstream timed out
E0103 10:00:02.123456       1 reflector.go:138] watch failed
[WARN] slow response
cat /etc/app/runtime.toml
default_runtime = "crun"
frobctl status
Note: this is printed by frobctl, not typed.
...

frobctl restart cart
```
"""


def test_output_after_a_command_is_not_taken_for_commands() -> None:
    found = [c.text for c in extract_commands(OUTPUT)]
    assert found == [
        "ls -l /etc/app",
        "kubectl get deploy -n shop",
        "./bin/drain-queue --now",  # a program's path ends the output before it
        "redis-cli INFO replication",
        "redis-cli SLOWLOG GET 2",
        "kubectl get lease -n shop leader -o yaml",
        "curl -s localhost:8080/status",
        "journalctl -u cart --since today",
        "cat /etc/app/runtime.toml",
        "frobctl status",  # an unknown tool is still a command
        "frobctl restart cart",  # and so is one after a blank line, even after output
    ]


def test_text_of_other_languages_in_a_shell_block_is_skipped() -> None:
    doc = (
        '```sh\n// error ratio of the last five minutes\nsum(rate(http_requests_total{code=~"5.."}[5m]))\n'
        "/\nsum(rate(http_requests_total[5m]))\n```\n\n"
        "```sh\nsum by (job) (rate(errors_total[5m]))\n/\nkubectl top pods\n```\n"
    )
    assert [c.text for c in extract_commands(doc)] == ["kubectl top pods"]


def test_unlabelled_blocks_open_after_comments_but_a_table_is_not_a_script() -> None:
    doc = (
        "```\n# on the primary\ncd /var/lib/app\nfind . -size 0 -mtime +1\n```\n\n"
        "```\n# TYPE  DATABASE  USER   ADDRESS      METHOD\nhost    appdb     app    10.0.0.0/8   md5\n```\n"
    )
    assert [c.text for c in extract_commands(doc)] == ["cd /var/lib/app", "find . -size 0 -mtime +1"]


def test_psql_output_in_a_sql_block_is_skipped() -> None:
    doc = (
        "```sql\napp=# SELECT id, state FROM jobs WHERE state = 0;\n id | state\n----+-------\n"
        "  1 |     0\n(1 row)\n\nDELETE FROM jobs WHERE id = 1;\n```\n"
    )
    found = extract_commands(doc)
    assert [(c.text, c.language) for c in found] == [
        ("SELECT id, state FROM jobs WHERE state = 0;", "sql"),
        ("DELETE FROM jobs WHERE id = 1;", "sql"),
    ]


# --- normalisation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kubectl logs deploy/api \\\n  --since=10m", "kubectl logs deploy/api --since=10m"),
        ("helm  rollback\tapi \t 3", "helm rollback api 3"),
        ("  psql <<EOF\n  SELECT 1;\nEOF\n", "psql <<EOF\n  SELECT 1;\nEOF"),  # a heredoc's lines are data
        ("kubectl get\\\npods", "kubectl getpods"),  # bash joins the words: no space is added
        ("kubectl get \\\r\n  pods", "kubectl get pods"),
        ("echo a\\\\\nls", "echo a\\\\\nls"),  # an escaped backslash does not continue the line
        ("$ kubectl get pods", "$ kubectl get pods"),
        ("#  systemctl   status x", "#  systemctl   status x"),  # a comment is kept as it is
        ("", ""),
    ],
)
def test_normalize_joins_continuations_and_collapses_blanks(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_extracted_commands_normalise_to_what_was_written_on_one_line() -> None:
    doc = "```bash\nkubectl   -n db \\\n    delete pod x\n```\n\nThen `kubectl -n db delete pod x`.\n"
    block, inline = extract_commands(doc)
    assert normalize(block.text) == normalize(inline.text) == "kubectl -n db delete pod x"


@given(st.text(alphabet=st.sampled_from(list("ab $#'\"\\\t\r\n\u00a0\u2003;|")), max_size=40))
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


# --- classification: tools by verb and flag ------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("kubectl get pods -A", "read"),
        ("kubectl -n prod describe deploy api", "read"),
        ("oc adm top nodes", "read"),
        ("kubectl rollout status deploy/api", "read"),
        ("kubectl rollout restart deploy/api", "change"),
        ("kubectl scale deploy api --replicas=3", "change"),
        ("kubectl scale deploy api --replicas=0", "destructive"),
        ("kubectl scale deploy api --replicas 0", "destructive"),
        ("kubectl delete ns payments", "destructive"),
        ("oc adm drain node-1", "destructive"),
        ("kubectl taint nodes n1 key=v:NoExecute", "destructive"),
        ("kubectl replace --force -f x.yaml", "destructive"),
        ("kubectl exec pod -- cat /etc/hosts", "change"),
        ("helm history api", "read"),
        ("helm rollback api 3", "change"),
        ("helm uninstall api", "destructive"),
        ("patronictl list", "read"),
        ("patronictl switchover --candidate b", "change"),
        ("patronictl remove pg", "destructive"),
        ("etcdctl endpoint health", "read"),
        ("etcdctl member remove 8e9e", "destructive"),
        ("redis-cli -h r INFO replication", "read"),
        ("redis-cli CONFIG SET maxmemory 2gb", "change"),
        ("redis-cli DEL key", "destructive"),
        ("kafka-topics.sh --bootstrap-server b:9092 --list", "read"),
        ("kafka-topics --bootstrap-server b:9092 --delete --topic t", "destructive"),
        ("kafka-consumer-groups --group g --reset-offsets --to-latest --topic t", "read"),
        ("vault kv get secret/x", "read"),
        ("vault kv destroy -versions=1 secret/x", "destructive"),
        ("vault token revoke abc", "destructive"),
        ("aws ec2 describe-instances", "read"),
        ("aws rds reboot-db-instance --db-instance-identifier x", "change"),
        ("aws s3 cp x s3://b/x", "change"),
        ("aws s3 rm s3://b/x", "destructive"),
        ("gcloud container clusters list", "read"),
        ("gcloud sql instances delete x", "destructive"),
        ("terraform plan -out p", "read"),
        ("terraform state rm aws_instance.x", "destructive"),
        ("systemctl restart patroni", "change"),
        ("systemctl mask patroni", "destructive"),
        ("journalctl -u kubelet --since -1h", "read"),
        ("curl -I https://x", "read"),
        ("curl -X PATCH https://x -d '{}'", "change"),
        ("curl -o /etc/x https://x", "change"),
        ("git diff HEAD~1", "read"),
        ("git branch -D old", "destructive"),
        ("git push --force-with-lease", "destructive"),
        ("find / -name core -exec ls -l {} ;", "read"),
        ("sed -n 1,10p x", "read"),
        ("sed -ri 's/x/y/' f", "change"),
        ("dd if=a of=b", "destructive"),
        ("kill -0 123", "read"),
        ("kill -HUP 123", "change"),
        ("pkill -9 postgres", "destructive"),
        ("chmod 600 key", "change"),
    ],
)
def test_tools_by_verb_and_flag(command: str, expected: str) -> None:
    assert risk(command) == expected


def test_reasons_are_rule_ids() -> None:
    assert classify("kubectl delete pod x") == Classification("destructive", ("kubectl.delete",))
    assert classify("frobnicate").reasons == ("unknown-tool:frobnicate",)
    assert classify("SELECT 1; DROP TABLE t", "sql").reasons == ("sql.drop",)
    assert set(RISKS) == {"read", "change", "destructive", "unknown"}


# --- traps --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        "cat x; rm -rf /srv",
        "ls && kubectl delete pod x",
        "grep a b || systemctl stop nginx",
        "(cd /tmp && rm -rf data)",
        "{ echo; rm x; }",
        "if true; then git reset --hard; fi",
        "kubectl get pods | xargs -n1 kubectl delete pod",
        "echo | tee /x; dd if=/dev/zero of=/dev/sda",
    ],
)
def test_the_highest_risk_of_a_compound_wins(command: str) -> None:
    assert risk(command) in GATED


@pytest.mark.parametrize(
    "command",
    [
        "bash -c 'rm -rf /x'",
        'sh -c "kubectl delete ns x"',
        "bash -lc 'redis-cli flushall'",
        "sudo -u postgres bash -c 'dropdb app'",
        "env A=1 B=2 rm x",
        "timeout --signal=KILL 10 rm x",
        "nice -n 19 ionice -c3 rm x",
        "nohup truncate -s0 /var/log/x",
        "watch -n 5 kubectl delete pod x",
        "xargs -0 rm",
        "busybox rm x",
        "command rm x",
        "doas rm x",
        "env -S 'rm -rf /x'",
        "kubectl exec -it p -- bash -c 'rm -rf /data'",
        "find . -exec rm {} +",
        "find . -execdir sh -c 'rm x' \\;",
    ],
)
def test_wrappers_expose_the_inner_command(command: str) -> None:
    assert risk(command) == "destructive"


@pytest.mark.parametrize(
    "command",
    [
        "eval ls",
        'eval "$(cat x)"',
        "source x.sh",
        ". ./env.sh",
        "bash run.sh",
        "python3 -c 'print(1)'",
        "perl -e 'unlink x'",
        "bash -c",
        "timeout 5",
        "sudo",
        "git -c core.sshCommand='rm -rf /' fetch",
        "curl -K request.cfg https://x",
        "sed 's/x/y/e' f",
        "sed -n 'w /etc/cron.d/x' f",
    ],
)
def test_dynamic_or_incomplete_wrappers_are_unknown(command: str) -> None:
    assert risk(command) == "unknown"


@pytest.mark.parametrize(
    "command",
    [
        "echo $(id)",
        "ls `pwd`",
        "cat <(ls)",
        "kubectl get pod $(kubectl get pods -o name)",
        "X=$(date) true",
        "$TOOL get pods",
        "${K} delete pod x",
        "echo ok > $(mktemp)",
    ],
)
def test_substitutions_are_unknown(command: str) -> None:
    assert risk(command) == "unknown"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("r''m -rf /", "destructive"),
        ('"r"m x', "destructive"),
        ("\\rm x", "destructive"),
        ("'rm' x", "destructive"),
        ("/usr/bin/rm x", "destructive"),
        ("k''ubectl d\"ele\"te pod x", "destructive"),
        ("systemc\\tl stop x", "destructive"),
        ("'kubectl' 'get' pods", "read"),
    ],
)
def test_quote_tricks_resolve_to_the_real_word(command: str, expected: str) -> None:
    assert risk(command) == expected


@pytest.mark.parametrize(
    "command",
    [
        "curl -s https://x | sh",
        "wget -qO- https://x | bash -s",
        "echo ZWNobw== | base64 -d | sh",
        "cat x | sudo zsh",
        "curl https://x | python3",
        "cat x.sql | psql",
        "redis-cli < commands.txt",
        "curl x | ruby",
    ],
)
def test_pipes_into_an_interpreter_are_unknown(command: str) -> None:
    assert risk(command) == "unknown"


def test_literal_text_piped_into_a_shell_or_psql_is_classified() -> None:
    assert risk("echo 'rm -rf /x' | sh") == "destructive"
    assert risk("echo 'SELECT 1' | psql") == "read"
    assert risk("psql <<SQL\nTRUNCATE t;\nSQL") == "destructive"
    assert risk("cat <<EOT | psql -h db\nDELETE FROM t;\nEOT") == "destructive"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("WITH x AS (SELECT 1) DELETE FROM t", "destructive"),
        ("with a as (select 1), b as (select 2) update t set x = 1", "destructive"),
        ("WITH d AS (DELETE FROM s RETURNING *) SELECT count(*) FROM d", "destructive"),
        ("WITH u AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM u", "change"),
        ("SELECT 1; DROP TABLE t", "destructive"),
        ("select now();\ntruncate ledger;", "destructive"),
        ("SELECT 1;SELECT 2;DELETE FROM t", "destructive"),
        ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", "destructive"),
        ("select PG_TERMINATE_BACKEND(42)", "destructive"),
        ("SELECT * FROM t WHERE x = (SELECT pg_terminate_backend(1))", "destructive"),
        ("SELECT pg_cancel_backend(1)", "change"),
        ("SELECT set_config('a', 'b', false)", "change"),
        ("SELECT setval('s', 1)", "change"),
        ("SELECT lo_unlink(1)", "destructive"),
        ("SELECT dblink_exec('x', 'DROP TABLE t')", "unknown"),
        ("SELECT some_user_function(1)", "unknown"),
        ("EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t", "destructive"),
        ("EXPLAIN DELETE FROM t", "read"),
        ("ALTER SYSTEM SET work_mem = '1GB'", "change"),
        ("VACUUM (VERBOSE) t", "change"),
        ("DELETE FROM t WHERE id = 1", "destructive"),
        ("UPDATE t SET a = 1", "destructive"),
        ("UPDATE t SET a = 1 WHERE id = 2", "change"),
        ("CREATE TABLE x (id int)", "change"),
        ("GRANT SELECT ON t TO u", "change"),
        ("\\d+ t", "read"),
        ("\\! rm -rf /", "unknown"),
        ("\\o /tmp/out", "unknown"),
        ("SELECT count(*) FROM pg_stat_activity; -- expect a few", "read"),
    ],
)
def test_sql_reads_every_statement_and_function(sql: str, expected: str) -> None:
    assert risk(sql, "sql") == expected


@pytest.mark.parametrize(
    "command",
    [
        "psql -c 'SELECT 1; DROP TABLE t'",
        "psql --command='WITH x AS (SELECT 1) DELETE FROM t'",
        "psql -d app -c 'select 1' -c 'truncate t'",
        "kubectl exec pg-0 -- psql -c 'DROP DATABASE x'",
        "mysql -e 'DELETE FROM t'",
    ],
)
def test_sql_inside_shell_commands_is_classified(command: str) -> None:
    assert risk(command) == "destructive"


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("rm -rf 'x", "shell"),
        ('kubectl get pods -o "wide', "shell"),
        ("if true; then kubectl get pods", "shell"),
        ("ls && (rm x", "shell"),
        ("case $x in a) ls", "shell"),
        ("echo $(ls", "shell"),
        ("cat <<EOF | sh\nrm -rf /x", "shell"),
        ("kubectl get pods ) ; rm x", "shell"),
        ("ls; fi", "shell"),
        ("kubectl get pods |", "shell"),
        ("for x in; do", "shell"),
        ("SELEC * FRM", "sql"),
        ("DELETE FROM WHERE", "sql"),
        ("SELECT 'unterminated", "sql"),
    ],
)
def test_parse_errors_fail_closed(text: str, language: str) -> None:
    assert classify(text, language).risk == "unknown"


@pytest.mark.parametrize(
    "command",
    [
        'kubectl get pods -o "wide',  # a missing closing quote
        "ls && (rm x",  # a missing parenthesis
        "echo $(ls",
        "kubectl get pods |",  # a missing word after the pipe
        "[[ -f x ",
        "for x in; do",  # an error and a missing done
        "rm -rf 'x",  # an error: an unterminated quote
        "case $x in a) ls",
        "kubectl get pods ) ; rm x",
        "echo ${x",
        "echo $((1 + ",
        "if true; then kubectl get pods",
        "cat <<EOF | sh\nrm -rf /x",
    ],
)
def test_text_tree_sitter_recovers_from_is_a_parse_error(command: str) -> None:
    assert classify(command) == Classification("unknown", ("parse-error",))


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("[[ -f /etc/patroni.yml ]]", "read"),
        ("if [[ $ROLE =~ ^(master|leader)$ ]]; then patronictl list; fi", "read"),
        ("declare -a PODS=(web-0 web-1)", "read"),
        ('[ -n "$NS" ] && kubectl get pods -n "$NS"', "read"),
        ("[[ $(kubectl get pods -o name) == x ]]", "unknown"),
        ("[[ -f /x ]] && rm /x", "destructive"),
        ("test -d /data || kubectl delete pod db-0", "destructive"),
        ("echo $((60 * 60))", "read"),
        ("((n > 3)) && kubectl get nodes", "read"),
        ("for ((i = 0; i < 3; i++)); do kubectl get pods; done", "read"),
        ("for ((i = 0; i < 3; i++)); do kubectl delete pod web-$i; done", "destructive"),
        ("echo $(( $(wc -l < /x) + 1 ))", "unknown"),
        ("((x = $(rm -rf /x)))", "unknown"),
    ],
)
def test_tests_and_arithmetic_are_read_unless_they_run_something(command: str, expected: str) -> None:
    assert risk(command) == expected


@pytest.mark.parametrize(
    "command",
    [
        "for p in $(kubectl get pods -o name); do kubectl describe $p; done",
        "case $(hostname) in db*) ls;; esac",
        'while [ -n "$(pgrep x)" ]; do sleep 1; done',
        "cat <<EOF\n$(rm -rf /x)\nEOF",
        "psql <<EOF\nSELECT `id`;\nEOF",
        "cat <<EOF\n`kubectl delete ns prod`\nEOF",
        "cat <<-EOF | sh\n\tkubectl get pods `hostname`\n\tEOF",
        "export NODE=$(kubectl get nodes -o name)",
        "kubectl get pods > >(tee /tmp/x)",
        "ls < <(kubectl get pods)",
        'echo "${x:-$(id)}"',
    ],
)
def test_a_substitution_anywhere_in_the_tree_is_unknown(command: str) -> None:
    assert classify(command).reasons[0] == "shell.substitution"
    assert risk(command) == "unknown"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("\"k\"'ube'ctl delete ns prod", "destructive"),
        ("kube\\ctl delete ns prod", "destructive"),
        ("$'\\x72\\x6d' -rf /data", "destructive"),
        ("$'\\162\\155' -rf /data", "destructive"),
        ("r$'m' -rf /data", "destructive"),
        ("\"$'rm'\" -rf /data", "unknown"),
        ("'r'\"m\" -rf /data", "destructive"),
        ('"r\\m" -rf /data', "unknown"),
        ("kubectl \"d\"e'l'ete pod x", "destructive"),
        ('kubectl scale deploy/web --replicas="0"', "destructive"),
        ("kubectl scale deploy/web --replicas='0'", "destructive"),
        ("kubectl get pods -l 'app in (web)' -o \"jsonpath={.items[*].metadata.name}\"", "read"),
        ('bash -c "kubectl delete \\"pod\\" x"', "destructive"),
        ('bash -c \'bash -c "r""m -rf /x"\'', "destructive"),
        ('$"rm" -rf /data', "destructive"),
        ("echo $'kubectl delete ns prod' | sh", "destructive"),
        ("\"ec\"ho 'kubectl delete ns prod' | sh", "destructive"),
        ("printf '%s' \"kubectl get pods\" | bash", "unknown"),
    ],
)
def test_quotes_are_removed_and_parts_joined_before_the_word_is_read(command: str, expected: str) -> None:
    assert risk(command) == expected


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("cat <<EOF | sh\nkubectl delete ns prod\nEOF", "destructive"),
        ("cat <<'EOF' | bash -s\nkubectl get pods\nEOF", "read"),
        ("cat <<EOF | grep x | sh\nkubectl get pods\nEOF", "unknown"),
        ("cat <<EOF | sh && kubectl get pods\nrm -rf /x\nEOF", "destructive"),
        ("cat <<EOF > /etc/x.conf\nkey=1\nEOF", "change"),
        ("cat <<'EOF'\n`kubectl delete ns prod` $(rm -rf /x)\nEOF", "read"),
        ("cat <<\\EOF\n`kubectl delete ns prod`\nEOF", "read"),
        ("cat <<EOF && kubectl delete pod x\nhello\nEOF", "destructive"),
        ("echo ok | psql <<SQL\nDROP TABLE t;\nSQL", "destructive"),
        ("kubectl get pods && psql <<SQL\nDELETE FROM t;\nSQL", "destructive"),
        ("psql -At <<'SQL'\nSELECT 1;\nSQL", "read"),
        ("sh <<< 'kubectl delete ns x'", "destructive"),
        ("while read p; do kubectl get pod $p; done < pods.txt", "read"),
        ("{ kubectl get pods; kubectl get nodes; } > /tmp/state.txt", "change"),
        ("kubectl get pods 2>&1 >/dev/null | tee /dev/stderr", "read"),
        (">/tmp/out kubectl get pods", "change"),
        ("kubectl get pods &> /tmp/out", "change"),
        ("kubectl get pods >| /tmp/out", "change"),
        ("kubectl get pods > /tmp/pods-", "change"),
        ("kubectl get pods > 1", "change"),
        ("kubectl get pods &> 2", "change"),
        ("kubectl get pods 3>&1 1>&2 2>&3 3>&-", "read"),
        ("kubectl get pods >&2- 2<&-", "read"),
        ("kubectl get pods >& /tmp/out", "change"),
    ],
)
def test_heredocs_and_redirections_go_where_bash_sends_them(command: str, expected: str) -> None:
    assert risk(command) == expected


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("NS=prod", "read"),
        ("NS=prod POD=web-0", "read"),
        ("export KUBECONFIG=/etc/k.yml; kubectl get pods", "read"),
        ("f() { kubectl delete pod x; }", "destructive"),
        ("function f { kubectl get pods; }; f", "unknown"),
        ("! kubectl get pod x", "read"),
        ("if kubectl get ns x; then :; else kubectl delete ns y; fi", "destructive"),
        ("case $1 in start) systemctl start x;; *) systemctl status x;; esac", "change"),
        ("until kubectl get pod x; do sleep 2; done", "read"),
        ("(cd /tmp && ls) | wc -l", "read"),
        ("kubectl get pods & kubectl delete pod x &", "destructive"),
        ("kubectl get pods |& grep x", "read"),
        ("ls # rm -rf /", "read"),
        ("select p in a b; do kubectl delete pod $p; done", "destructive"),
        ("time kubectl delete pod x", "destructive"),
        ("cat <<'X' | sh\nkubectl scale deploy/a --replicas=0\nX", "destructive"),
    ],
)
def test_every_statement_shape_is_walked(command: str, expected: str) -> None:
    assert risk(command) == expected


def test_unknown_tools_and_verbs_are_unknown() -> None:
    assert risk("frobnicate --all") == "unknown"
    assert risk("kubectl frob pods") == "unknown"
    assert risk("helm frob") == "unknown"
    assert risk("aws ec2 frob-instances") == "unknown"


def test_write_redirections_are_changes() -> None:
    assert risk("kubectl get pods > pods.txt") == "change"
    assert risk("echo x >> /etc/hosts") == "change"
    assert risk("kubectl get pods > /dev/null 2>&1") == "read"
    assert risk("grep x < input.txt") == "read"


def test_placeholders_are_words_not_redirections() -> None:
    assert risk("kubectl logs <pod-name> -n <namespace>") == "read"
    assert risk("kubectl delete pod <pod> -n <ns>") == "destructive"


# --- the labelled sets ----------------------------------------------------------------------------


def labelled(name: str) -> list[dict[str, str]]:
    lines = (EVALS / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.parametrize("name", ["commands.jsonl", "commands_adversarial.jsonl"])
def test_labelled_sets_gate_every_destructive_command_and_no_change_reads(name: str) -> None:
    rows = labelled(name)
    assert len(rows) >= (300 if name == "commands.jsonl" else 100)
    missed = []
    for row in rows:
        predicted = classify(row["command"], row["language"]).risk
        if row["risk"] in GATED and predicted not in GATED:
            missed.append((row["command"], row["risk"], predicted))
        if row["risk"] == "change" and predicted == "read":
            missed.append((row["command"], row["risk"], predicted))
    assert missed == []


def test_the_labelled_set_keeps_most_reads_usable() -> None:
    reads = [row for row in labelled("commands.jsonl") if row["risk"] == "read"]
    kept = sum(classify(row["command"], row["language"]).risk == "read" for row in reads)
    assert kept / len(reads) >= 0.8


def test_labels_are_known_risks_and_commands_come_from_the_runbooks() -> None:
    for row in labelled("commands.jsonl"):
        assert row["risk"] in RISKS and row["language"] in ("shell", "sql")
        assert row["source"].startswith(("corpus/", "sample_runbooks/"))
