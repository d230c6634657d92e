"""Data stores: redis-cli, the kafka scripts, psql, mysql, the PostgreSQL server tools and ceph."""

from __future__ import annotations

import re

from .args import _flag, _positionals, _table, _value, _verbs
from .risks import Classification, Risk, _c, _combine, _Stdin, _words
from .sql import classify_sql

# redis-cli and kafka ---------------------------------------------------------------------------

_REDIS = _table(
    read="get mget info scan ttl pttl keys type exists strlen llen lrange lindex hget hgetall hkeys hlen "
    "hmget hscan smembers scard sismember sscan zrange zrangebyscore zcard zscore zscan dbsize ping "
    "memory slowlog client config cluster role monitor latency xinfo xlen xrange object sentinel "
    "echo time lastsave command getrange pubsub bitcount pfcount",
    change="set setex psetex setnx mset expire pexpire expireat persist hset hmset lpush rpush "
    "lpop rpop incr decr incrby sadd srem zadd zrem bgsave bgrewriteaof save replicaof slaveof "
    "failover publish rename append xadd xack",
    destructive="flushall flushdb del unlink shutdown hdel",
)
_REDIS_SUB = {
    "config": _table(read="get", change="set rewrite resetstat"),
    "client": _table(read="list info getname id", change="kill pause unpause setname no-evict"),
    "slowlog": _table(read="get len", change="reset"),
    "cluster": _table(
        read="info nodes slots shards myid keyslot countkeysinslot getkeysinslot",
        change="failover meet addslots replicate setslot",
        destructive="reset forget delslots flushslots",
    ),
    "memory": _table(read="usage stats doctor malloc-stats", change="purge"),
    "script": _table(read="exists", change="load kill", destructive="flush"),
    "sentinel": _table(
        read="masters master replicas slaves sentinels get-master-addr-by-name ckquorum info-cache",
        change="failover set monitor reset",
        destructive="remove",
    ),
}
_REDIS_VALUES = _words(
    "-h -p -a -n -u --user --pass -s --tls-cert --tls-key --cacert -i -r --pattern --count"
)


def _redis(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    if _flag(
        args, "--scan", "--bigkeys", "--memkeys", "--latency", "--latency-history", "--stat", "--hotkeys"
    ):
        return _c("read", "redis.scan-mode")
    if _flag(args, "--cluster"):
        sub = _value(args, "--cluster") or ""
        table = _table(
            read="check info",
            change="fix rebalance reshard create add-node import call",
            destructive="del-node",
        )
        return _verbs("redis.cluster", sub, table)
    words = _positionals(args, _REDIS_VALUES)
    if not words:
        return _c("unknown", "redis.interactive" if stdin is None else "redis.stdin")
    verb = words[0].lower()
    if verb in _REDIS_SUB:
        return _verbs(f"redis.{verb}", words[1].lower() if len(words) > 1 else "", _REDIS_SUB[verb])
    return _verbs("redis", verb, _REDIS)


def _kafka(name: str, args: list[str]) -> Classification:
    tool = name.removesuffix(".sh")
    if tool == "kafka-consumer-groups":
        if _flag(args, "--delete", "--delete-offsets"):
            return _c("destructive", "kafka.consumer-groups.delete")
        if _flag(args, "--reset-offsets"):
            if _flag(args, "--execute"):
                return _c("destructive", "kafka.consumer-groups.reset-offsets")
            return _c("read", "kafka.consumer-groups.reset-offsets-dry-run")
        return _c("read", "kafka.consumer-groups.describe")
    modes: dict[str, tuple[tuple[str, Risk], ...]] = {
        "kafka-topics": (
            ("--delete", "destructive"),
            ("--create", "change"),
            ("--alter", "change"),
            ("--list", "read"),
            ("--describe", "read"),
        ),
        "kafka-configs": (("--alter", "change"), ("--describe", "read")),
        "kafka-acls": (("--remove", "destructive"), ("--add", "change"), ("--list", "read")),
        "kafka-reassign-partitions": (
            ("--execute", "change"),
            ("--cancel", "change"),
            ("--verify", "read"),
            ("--generate", "read"),
        ),
        "kafka-log-dirs": (("--describe", "read"),),
        "kafka-leader-election": (("--election-type", "change"),),
        "kafka-preferred-replica-election": (("--bootstrap-server", "change"), ("--zookeeper", "change")),
        "kafka-delete-records": (("--offset-json-file", "destructive"),),
    }
    simple: dict[str, Risk] = {
        "kafka-console-consumer": "read",
        "kafka-broker-api-versions": "read",
        "kafka-get-offsets": "read",
        "kafka-console-producer": "change",
        "kafka-verifiable-producer": "change",
        "kafka-server-stop": "destructive",
        "kafka-server-start": "change",
    }
    if tool in simple:
        return _c(simple[tool], f"kafka.{tool.removeprefix('kafka-')}")
    for flag, risk in modes.get(tool, ()):
        if _flag(args, flag):
            return _c(risk, f"kafka.{tool.removeprefix('kafka-')}.{flag.lstrip('-')}")
    return _c("unknown", f"kafka.{tool.removeprefix('kafka-')}.unknown-mode")


# databases ---------------------------------------------------------------------------------------


def _psql(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    scripts = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-c", "--command")]
    scripts += [a.split("=", 1)[1] for a in args if a.startswith("--command=")]
    scripts += [a[2:] for a in args if a.startswith("-c") and len(a) > 2 and not a.startswith("--")]
    if _flag(args, "-f", "--file"):
        return _c("unknown", "psql.script-file")
    if scripts:
        return _combine([classify_sql(s) for s in scripts])
    if _flag(args, "-l", "--list", "-V", "--version", "--help"):
        return _c("read", "psql.list")
    if stdin is not None:
        return classify_sql(stdin.text) if stdin.text is not None else _c("unknown", "psql.stdin")
    return _c("unknown", "psql.interactive")


def _mysql(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    script = _value(args, "-e", "--execute")
    if script is not None:
        return classify_sql(script, dialect="mysql")
    if stdin is not None and stdin.text is not None:
        return classify_sql(stdin.text, dialect="mysql")
    return _c("unknown", "mysql.interactive")


def _pg_ctl(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, frozenset({"-D", "--pgdata", "-m", "--mode", "-o", "-l", "--log", "-w", "-t"}))
    table = _table(
        read="status", change="start restart reload promote logrotate init initdb", destructive="stop kill"
    )
    return _verbs("pg_ctl", words[0] if words else "", table)


def _pg_dump(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    return _c("change", "pg_dump.file") if _flag(args, "-f", "--file") else _c("read", "pg_dump.stdout")


def _pg_restore(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    if _flag(args, "-l", "--list"):
        return _c("read", "pg_restore.list")
    return (
        _c("destructive", "pg_restore.clean") if _flag(args, "-c", "--clean") else _c("change", "pg_restore")
    )


def _ceph(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, frozenset({"-f", "--format", "-c", "--conf", "--cluster"}))
    text = " ".join(words)
    if re.search(r"\b(purge|destroy|rm|delete|remove|lost|out|down|zap|flatten|reweight)\b", text):
        return _c("destructive", "ceph.remove")
    if re.search(
        r"\b(set|unset|create|enable|disable|repair|scrub|deep-scrub|in|up|restart|config-key|config|tell|pause|unpause)\b",
        text,
    ):
        if words[-1:] in (["get"], ["ls"], ["dump"]) or " get " in f" {text} ":
            return _c("read", "ceph.get")
        return _c("change", "ceph.set")
    return _c("read", "ceph.status")
